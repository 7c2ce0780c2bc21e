//! One raw table line as `DM_TABLE_LOAD` sends it and `DM_TABLE_STATUS`
//! reports it, with the one validation every line goes through.

use super::abi::MAX_TYPE_NAME;
use std::fmt;

/// Longest target type name the kernel takes, in bytes (`DM_MAX_TYPE_NAME` less the NUL).
pub const MAX_TARGET_TYPE_LEN: usize = MAX_TYPE_NAME - 1;

/// One line of a device-mapper table: `<start> <length> <target_type> <params>`.
///
/// Built with [`TableLine::new`], which checks what the kernel checks of any
/// line; the typed tables of [`crate::target`] convert to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableLine {
    start: u64,
    length: u64,
    target_type: String,
    params: String,
}

/// Why a [`TableLine`] is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TableLineError {
    /// A line of length 0.
    #[error("table line length is 0, but the kernel refuses zero-length targets")]
    ZeroLength,
    /// A line whose end does not fit 64 bits.
    #[error("table line: start {start} + length {length} overflows 64 bits")]
    RangeOverflow {
        /// First sector.
        start: u64,
        /// Sector count.
        length: u64,
    },
    /// A target type the kernel cannot take.
    #[error("target type {found:?} is invalid: {reason}")]
    TargetType {
        /// The type given.
        found: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Parameters holding a byte the ioctl cannot carry.
    #[error("table line: parameters contain {what}")]
    Params {
        /// The offending content.
        what: &'static str,
    },
}

impl TableLine {
    /// A validated line (see [`TableLine::validate`]).
    pub fn new(
        start: u64,
        length: u64,
        target_type: impl Into<String>,
        params: impl Into<String>,
    ) -> Result<Self, TableLineError> {
        let line = TableLine::new_unchecked(start, length, target_type, params);
        line.validate()?;
        Ok(line)
    }

    /// A line as given, not validated: for lines the kernel reported and
    /// for the typed tables' conversions. [`super::encode`] validates every
    /// line before it is sent.
    pub(crate) fn new_unchecked(
        start: u64,
        length: u64,
        target_type: impl Into<String>,
        params: impl Into<String>,
    ) -> Self {
        TableLine {
            start,
            length,
            target_type: target_type.into(),
            params: params.into(),
        }
    }

    /// Checks what the kernel checks of any line: a non-zero length, an end
    /// that fits 64 bits, a target type of 1 to 15 bytes with no whitespace
    /// or control characters (so no NUL), and parameters with no NUL or line
    /// break.
    pub fn validate(&self) -> Result<(), TableLineError> {
        if self.length == 0 {
            return Err(TableLineError::ZeroLength);
        }
        if self.end().is_none() {
            return Err(TableLineError::RangeOverflow {
                start: self.start,
                length: self.length,
            });
        }
        let t = &self.target_type;
        let reason = if t.is_empty() {
            Some("it is empty")
        } else if t.len() > MAX_TARGET_TYPE_LEN {
            Some("it is longer than 15 bytes")
        } else if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Some("it contains whitespace or a control character")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(TableLineError::TargetType {
                found: t.clone(),
                reason,
            });
        }
        if self.params.contains('\0') {
            return Err(TableLineError::Params {
                what: "a NUL byte, which would cut them short",
            });
        }
        if self.params.contains(['\n', '\r']) {
            return Err(TableLineError::Params {
                what: "a line break",
            });
        }
        Ok(())
    }

    /// First sector covered by this line.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Number of sectors covered.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// Target type name, such as `thin-pool`.
    pub fn target_type(&self) -> &str {
        &self.target_type
    }

    /// Target parameters (in a status reply: the target's status line).
    pub fn params(&self) -> &str {
        &self.params
    }

    /// The end sector (exclusive), if it fits 64 bits.
    pub fn end(&self) -> Option<u64> {
        self.start.checked_add(self.length)
    }
}

impl fmt::Display for TableLine {
    /// `<start> <length> <target_type>` and, if not empty, ` <params>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.start, self.length, self.target_type)?;
        if !self.params.is_empty() {
            write!(f, " {}", self.params)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_validation_for_every_line() {
        let ok = TableLine::new(0, 8, "linear", "7:0 0").unwrap();
        assert_eq!(
            (ok.start(), ok.length(), ok.target_type(), ok.params()),
            (0, 8, "linear", "7:0 0")
        );
        assert_eq!(ok.end(), Some(8));
        assert_eq!(ok.to_string(), "0 8 linear 7:0 0");
        assert_eq!(
            TableLine::new(8, 8, "zero", "").unwrap().to_string(),
            "8 8 zero"
        );
        for (line, want) in [
            (TableLine::new(0, 0, "zero", ""), TableLineError::ZeroLength),
            (
                TableLine::new(u64::MAX, 1, "zero", ""),
                TableLineError::RangeOverflow {
                    start: u64::MAX,
                    length: 1,
                },
            ),
            (
                TableLine::new(0, 1, "a-very-long-target-type", ""),
                TableLineError::TargetType {
                    found: "a-very-long-target-type".into(),
                    reason: "it is longer than 15 bytes",
                },
            ),
            (
                TableLine::new(0, 1, "", ""),
                TableLineError::TargetType {
                    found: String::new(),
                    reason: "it is empty",
                },
            ),
            (
                TableLine::new(0, 1, "li\0near", ""),
                TableLineError::TargetType {
                    found: "li\0near".into(),
                    reason: "it contains whitespace or a control character",
                },
            ),
            (
                TableLine::new(0, 1, "linear", "7:0\u{0}0"),
                TableLineError::Params {
                    what: "a NUL byte, which would cut them short",
                },
            ),
            (
                TableLine::new(0, 1, "linear", "7:0 0\n0 1 zero"),
                TableLineError::Params {
                    what: "a line break",
                },
            ),
        ] {
            assert_eq!(line, Err(want));
        }
        // Unchecked lines are still validated on demand.
        assert!(TableLine::new_unchecked(0, 0, "zero", "")
            .validate()
            .is_err());
    }
}
