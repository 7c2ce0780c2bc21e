//! The one error type of the `target` module.

use thiserror::Error;

/// What was wrong with a table, status line or message.
///
/// Every variant names the field (or the context) it is about and carries the
/// offending value, so the message alone says what to fix. Offending text is
/// cut to [`SNIPPET_MAX`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TargetError {
    /// The input held nothing but whitespace.
    #[error("{context}: input is empty")]
    Empty {
        /// What was being parsed.
        context: &'static str,
    },

    /// A required argument is absent.
    #[error("{field} is missing")]
    Missing {
        /// The argument that should have been there.
        field: &'static str,
    },

    /// A token that should be a decimal integer is not one.
    #[error("{field}: expected a decimal integer, found {found:?}")]
    NotANumber {
        /// The argument being read.
        field: &'static str,
        /// The offending token.
        found: String,
    },

    /// A decimal integer does not fit the field's type.
    #[error("{field}: {found} does not fit in {bits} bits")]
    NumberTooLarge {
        /// The argument being read.
        field: &'static str,
        /// The offending token.
        found: String,
        /// Width of the field.
        bits: u32,
    },

    /// A number is outside the range the kernel accepts.
    #[error("{field} is {value}, but {rule}")]
    OutOfRange {
        /// The argument being checked.
        field: &'static str,
        /// The value given.
        value: u64,
        /// The rule it breaks, e.g. "must be a multiple of 128".
        rule: &'static str,
    },

    /// A keyword is not one of the accepted ones.
    #[error("{field}: unknown value {found:?}, expected {expected}")]
    UnknownKeyword {
        /// The argument being read.
        field: &'static str,
        /// The offending token.
        found: String,
        /// The accepted values.
        expected: &'static str,
    },

    /// More arguments than the target takes.
    #[error("{context}: unexpected extra argument {found:?}")]
    UnexpectedArgument {
        /// What was being parsed.
        context: &'static str,
        /// The first surplus token.
        found: String,
    },

    /// A feature argument group declares more arguments than follow it.
    #[error("{context}: the feature count says {declared} arguments, but only {available} follow")]
    FeatureArgsShort {
        /// What was being parsed.
        context: &'static str,
        /// The declared count.
        declared: u64,
        /// Arguments actually present.
        available: u64,
    },

    /// A feature needs more parameters than the declared feature count leaves.
    #[error(
        "{context}: {feature} needs {needed} more arguments, but the feature count leaves {left}"
    )]
    FeatureCountTooSmall {
        /// What was being parsed.
        context: &'static str,
        /// The feature whose parameters fall outside the count.
        feature: &'static str,
        /// Parameters it needs.
        needed: u64,
        /// Arguments the count still covers.
        left: u64,
    },

    /// The feature arguments are more than the kernel accepts.
    #[error("{context}: {count} feature arguments, but the kernel accepts at most {max}")]
    TooManyFeatureArgs {
        /// What was being parsed or built.
        context: &'static str,
        /// The number of feature arguments.
        count: u64,
        /// The kernel's limit.
        max: u64,
    },

    /// The same feature appears twice.
    #[error("{context}: feature {feature} is given more than once")]
    DuplicateFeature {
        /// What was being parsed.
        context: &'static str,
        /// The repeated feature.
        feature: &'static str,
    },

    /// Two features that the kernel refuses together.
    #[error("{context}: {first} cannot be combined with {second}")]
    ConflictingFeatures {
        /// What was being parsed or built.
        context: &'static str,
        /// One feature.
        first: &'static str,
        /// The feature it conflicts with.
        second: &'static str,
    },

    /// A device path that cannot go into a table line safely.
    #[error("{field}: {path:?} is not a usable device path: {reason}")]
    InvalidPath {
        /// The argument being checked.
        field: &'static str,
        /// The offending path.
        path: String,
        /// Why it is refused.
        reason: &'static str,
    },

    /// A `major:minor` pair that the kernel's `dev_t` cannot hold.
    #[error(
        "{field}: device number {major}:{minor} is out of range \
         (major at most 4095, minor at most 1048575)"
    )]
    DeviceNumberOutOfRange {
        /// The argument being checked.
        field: &'static str,
        /// The major number given.
        major: u64,
        /// The minor number given.
        minor: u64,
    },

    /// Two device arguments that must differ are the same.
    #[error("{context}: {first} and {second} must be different devices, but both are {device}")]
    SameDevice {
        /// What was being parsed or built.
        context: &'static str,
        /// One argument.
        first: &'static str,
        /// The other argument.
        second: &'static str,
        /// The device both name.
        device: String,
    },

    /// A table line is for another target type.
    #[error("expected target type {expected:?}, found {found:?}")]
    WrongTargetType {
        /// The type the parser handles.
        expected: &'static str,
        /// The type on the line.
        found: String,
    },

    /// A target type name the kernel cannot take.
    #[error("target type {found:?} is invalid: {reason}")]
    InvalidTargetType {
        /// The offending name.
        found: String,
        /// Why it is refused.
        reason: &'static str,
    },

    /// Table parameters holding a byte the ioctl cannot carry.
    #[error("{context}: parameters contain {what}")]
    InvalidParams {
        /// What was being parsed or built.
        context: &'static str,
        /// The offending content.
        what: &'static str,
    },

    /// A `<used>/<total>` pair that is not of that form.
    #[error("{field}: expected <used>/<total>, found {found:?}")]
    NotARatio {
        /// The field being read.
        field: &'static str,
        /// The offending token.
        found: String,
    },

    /// A usage pair whose used part exceeds its total.
    #[error("{field}: {used} used exceeds the total of {total}")]
    UsedExceedsTotal {
        /// The field being read.
        field: &'static str,
        /// Used count.
        used: u64,
        /// Total count.
        total: u64,
    },

    /// Sector range whose end does not fit in 64 bits.
    #[error("table line: start {start} + length {length} overflows 64 bits")]
    RangeOverflow {
        /// First sector.
        start: u64,
        /// Sector count.
        length: u64,
    },
}

impl TargetError {
    /// [`TargetError::UnknownKeyword`]: `found` read as `field` is none of `expected`.
    #[cold]
    pub(crate) fn unknown(field: &'static str, found: &str, expected: &'static str) -> Self {
        TargetError::UnknownKeyword {
            field,
            found: snippet(found),
            expected,
        }
    }
}

/// The longest piece of offending input kept in an error, in bytes.
pub const SNIPPET_MAX: usize = 64;

/// A copy of `s` cut to at most [`SNIPPET_MAX`] bytes on a character boundary,
/// with `…` appended when cut.
pub(crate) fn snippet(s: &str) -> String {
    if s.len() <= SNIPPET_MAX {
        return s.to_owned();
    }
    let mut end = SNIPPET_MAX;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end + 3);
    out.push_str(s.get(..end).unwrap_or_default());
    out.push('…');
    out
}

/// Result alias for this module.
pub type Result<T, E = TargetError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippet_cuts_on_char_boundary() {
        let s = "é".repeat(40); // 80 bytes
        let cut = snippet(&s);
        assert!(cut.ends_with('…'));
        assert!(cut.len() <= SNIPPET_MAX + '…'.len_utf8());
        assert_eq!(snippet("short"), "short");
    }
}
