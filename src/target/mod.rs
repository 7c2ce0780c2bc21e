//! Device-mapper target tables, messages and status lines.
//!
//! Everything here is pure: it builds and parses strings and never touches the kernel.
//!
//! - Tables: [`ThinPoolTable`], [`ThinTable`], [`LinearTable`], [`ZeroTable`],
//!   [`ErrorTable`], [`FlakeyTable`], [`DelayTable`], or any of them as a
//!   [`Target`]. Each is built through validated constructors, formats its
//!   parameters with `Display`, parses them with `FromStr`, and converts to
//!   and from a [`TableLine`] ([`TargetTable::to_line`], `TryFrom<&TableLine>`).
//! - Devices: [`DeviceRef`], `major:minor` or a path that cannot split a line.
//! - Status: [`PoolStatus`] / [`ThinPoolStatus`] and [`ThinStatus`].
//! - Messages: [`PoolMessage`].
//!
//! Every parser accepts the kernel's own output (devices as `major:minor`,
//! trailing spaces) and returns a [`TargetError`] naming the field and the
//! problem for anything else; none panics.

#[cfg(test)]
#[macro_use]
mod test_support;

mod args;
mod delay;
mod device;
mod error;
mod flakey;
mod linear;
mod message;
mod pool;
mod status;
mod thin;
mod zero_error;

use std::fmt;
use std::str::FromStr;

pub use delay::{DelayClass, DelayTable};
pub use device::{DeviceRef, MAX_MAJOR, MAX_MINOR, MAX_PATH_LEN};
pub use error::{Result, TargetError, SNIPPET_MAX};
pub use flakey::{CorruptBioByte, Direction, FlakeyFeatures, FlakeyTable, WriteFault};
pub use linear::LinearTable;
pub use message::PoolMessage;
pub use pool::{BlockSize, PoolFeatures, ThinPoolTable};
pub use status::{
    DiscardMode, NoSpacePolicy, PoolMode, PoolStatus, PoolUsageBytes, ThinPoolStatus, ThinStatus,
    ThinUsage, METADATA_BLOCK_BYTES,
};
pub use thin::{ThinId, ThinTable};
pub use zero_error::{ErrorTable, ZeroTable};

use crate::dm::TableLineError;
use error::snippet;

/// One line of a device-mapper table: the dm layer's raw line
/// ([`crate::dm::TableLine`]), which the typed tables here convert to and
/// from. Its one validation lives there; parsing `dmsetup table` text is here.
pub use crate::dm::TableLine;

/// Longest target type name the kernel takes, in bytes (`DM_MAX_TYPE_NAME` less the NUL).
pub use crate::dm::MAX_TARGET_TYPE_LEN;

impl From<TableLineError> for TargetError {
    fn from(e: TableLineError) -> Self {
        match e {
            TableLineError::ZeroLength => TargetError::OutOfRange {
                field: "table line length",
                value: 0,
                rule: "the kernel refuses zero-length targets",
            },
            TableLineError::RangeOverflow { start, length } => {
                TargetError::RangeOverflow { start, length }
            }
            TableLineError::TargetType { found, reason } => TargetError::InvalidTargetType {
                found: snippet(&found),
                reason,
            },
            TableLineError::Params { what } => TargetError::InvalidParams {
                context: "table line",
                what,
            },
        }
    }
}

impl TableLine {
    /// Parses `<start> <length> <target_type> [<params>]`, the form `dmsetup
    /// table` prints. The parameters are kept verbatim, less surrounding
    /// whitespace.
    pub fn parse(s: &str) -> Result<Self> {
        const CTX: &str = "table line";
        let rest = s.trim_start_matches(args::is_kernel_space);
        if rest.is_empty() {
            return Err(TargetError::Empty { context: CTX });
        }
        let (start, rest) = split_word(rest);
        let start = args::parse_u64("table line start sector", start)?;
        let (length, rest) = split_word(rest);
        if length.is_empty() {
            return Err(TargetError::Missing {
                field: "table line length",
            });
        }
        let length = args::parse_u64("table line length", length)?;
        let (target_type, rest) = split_word(rest);
        if target_type.is_empty() {
            return Err(TargetError::Missing {
                field: "table line target type",
            });
        }
        let params = rest.trim_matches(args::is_kernel_space);
        Ok(TableLine::new(start, length, target_type, params)?)
    }

    /// Parses a whole table: one line per non-blank line of `s`.
    pub fn parse_table(s: &str) -> Result<Vec<Self>> {
        s.lines()
            .filter(|l| !l.trim_matches(args::is_kernel_space).is_empty())
            .map(TableLine::parse)
            .collect()
    }
}

/// Splits off the first word of `s` (which starts with a non-space) and the
/// rest after the separating whitespace.
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start_matches(args::is_kernel_space);
    match s.find(args::is_kernel_space) {
        Some(i) => {
            let (w, r) = s.split_at(i);
            (w, r.trim_start_matches(args::is_kernel_space))
        }
        None => (s, ""),
    }
}

/// `FromStr` for the types whose `parse` reads their whole text.
macro_rules! from_str_via_parse {
    ($($t:ty),*) => {$(
        impl FromStr for $t {
            type Err = TargetError;
            fn from_str(s: &str) -> Result<Self> {
                <$t>::parse(s)
            }
        }
    )*};
}
from_str_via_parse!(
    TableLine,
    PoolMessage,
    ThinPoolStatus,
    PoolStatus,
    ThinStatus
);

/// A typed target table: its parameters format with `Display` and parse with
/// [`TargetTable::parse_params`].
pub trait TargetTable: fmt::Display + Sized {
    /// The kernel's target type name.
    const TARGET_TYPE: &'static str;

    /// Parses the parameters string (not the whole line).
    fn parse_params(params: &str) -> Result<Self>;

    /// The parameters string.
    fn params(&self) -> String {
        self.to_string()
    }

    /// A table line covering `length` sectors from `start`.
    fn to_line(&self, start: u64, length: u64) -> TableLine {
        TableLine::new_unchecked(start, length, Self::TARGET_TYPE, self.params())
    }

    /// Parses a line, which must be of this target type.
    fn from_line(line: &TableLine) -> Result<Self> {
        if line.target_type() != Self::TARGET_TYPE {
            return Err(TargetError::WrongTargetType {
                expected: Self::TARGET_TYPE,
                found: snippet(line.target_type()),
            });
        }
        Self::parse_params(line.params())
    }
}

/// Declares [`Target`] with one variant per typed table, each table named
/// once: the enum, its dispatch on the target type, and for each table
/// `From<table> for Target`, `FromStr` and `TryFrom<&TableLine>`.
macro_rules! targets {
    ($($(#[$doc:meta])* $variant:ident($table:ident),)*) => {
        /// Any target this module knows.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum Target {
            $($(#[$doc])* $variant($table),)*
        }

        impl Target {
            /// The kernel's target type name.
            pub fn target_type(&self) -> &'static str {
                match self {
                    $(Target::$variant(_) => $table::TARGET_TYPE,)*
                }
            }

            /// Parses `params` as the table of type `target_type`, `None` for
            /// a type not listed here.
            fn parse_known(target_type: &str, params: &str) -> Option<Result<Self>> {
                match target_type {
                    $($table::TARGET_TYPE => Some($table::parse_params(params).map(Target::$variant)),)*
                    _ => None,
                }
            }
        }

        impl fmt::Display for Target {
            /// The parameters string.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $(Target::$variant(t) => t.fmt(f),)*
                }
            }
        }

        $(
            impl From<$table> for Target {
                fn from(t: $table) -> Target {
                    Target::$variant(t)
                }
            }

            impl FromStr for $table {
                type Err = TargetError;
                /// Parses the parameters string, as [`TargetTable::parse_params`].
                fn from_str(s: &str) -> Result<Self> {
                    $table::parse_params(s)
                }
            }

            impl TryFrom<&TableLine> for $table {
                type Error = TargetError;
                fn try_from(line: &TableLine) -> Result<Self> {
                    $table::from_line(line)
                }
            }
        )*
    };
}

targets! {
    /// `thin-pool`.
    ThinPool(ThinPoolTable),
    /// `thin`.
    Thin(ThinTable),
    /// `linear`.
    Linear(LinearTable),
    /// `zero`.
    Zero(ZeroTable),
    /// `error`.
    Error(ErrorTable),
    /// `flakey`.
    Flakey(FlakeyTable),
    /// `delay`.
    Delay(DelayTable),
}

/// The target type names [`Target`] handles.
const KNOWN_TYPES: &str = "thin-pool, thin, linear, zero, error, flakey or delay";

impl Target {
    /// The parameters string.
    pub fn params(&self) -> String {
        self.to_string()
    }

    /// A table line covering `length` sectors from `start`.
    pub fn to_line(&self, start: u64, length: u64) -> TableLine {
        TableLine::new_unchecked(start, length, self.target_type(), self.params())
    }

    /// Parses `params` for the target type `target_type`.
    pub fn parse(target_type: &str, params: &str) -> Result<Self> {
        Target::parse_known(target_type, params).unwrap_or_else(|| {
            Err(TargetError::unknown(
                "target type",
                target_type,
                KNOWN_TYPES,
            ))
        })
    }

    /// Parses a table line of any known type.
    pub fn from_line(line: &TableLine) -> Result<Self> {
        Target::parse(line.target_type(), line.params())
    }
}

impl TryFrom<&TableLine> for Target {
    type Error = TargetError;
    fn try_from(line: &TableLine) -> Result<Self> {
        Target::from_line(line)
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::assert_parse_errors;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table_line_parse_and_format() {
        let l: TableLine = "0 2097152 thin-pool 253:0 253:1 128 16384 0 "
            .parse()
            .unwrap();
        assert_eq!(
            l,
            TableLine::new(0, 2_097_152, "thin-pool", "253:0 253:1 128 16384 0").unwrap()
        );
        assert_eq!(l.to_string(), "0 2097152 thin-pool 253:0 253:1 128 16384 0");
        let z: TableLine = "  8 8 zero  ".parse().unwrap();
        assert_eq!(z.params(), "");
        assert_eq!(z.to_string(), "8 8 zero");
        assert_eq!(z.end(), Some(16));
        let t = TableLine::parse_table("0 8 zero\n\n8 8 error\n").unwrap();
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn table_line_errors_say_why() {
        assert_parse_errors::<TableLine>(&[
            ("", "table line: input is empty"),
            ("0", "table line length is missing"),
            ("0 8", "table line target type is missing"),
            ("x 8 zero", "start sector: expected a decimal integer"),
            ("0 0 zero", "zero-length"),
            ("1 18446744073709551615 zero", "overflows 64 bits"),
            ("0 8 a-very-long-target-type", "longer than 15 bytes"),
            ("0 8 zero\u{a0}x", "whitespace"),
        ]);
        assert!(TableLine::new(0, 1, "linear", "7:0 0\0").is_err());
        assert!(TableLine::new(0, 1, "linear", "7:0 0\n0 1 zero").is_err());
        assert!(TableLine::new(0, 1, "", "").is_err());
    }

    #[test]
    fn target_dispatches_on_type() {
        let l: TableLine = "0 2048 thin 253:3 1".parse().unwrap();
        let t = Target::try_from(&l).unwrap();
        assert!(matches!(t, Target::Thin(_)));
        assert_eq!(t.to_line(0, 2048), l);
        let e = Target::parse("striped", "2 64 7:0 0 7:1 0").unwrap_err();
        assert!(
            e.to_string()
                .contains("target type: unknown value \"striped\""),
            "{e}"
        );
        assert_eq!(Target::from(ZeroTable).target_type(), "zero");
    }

    fn target_strategy() -> impl Strategy<Value = Target> {
        prop_oneof![
            pool::tests::pool_strategy().prop_map(Target::ThinPool),
            thin::tests::thin_strategy().prop_map(Target::Thin),
            linear::tests::linear_strategy().prop_map(Target::Linear),
            Just(Target::Zero(ZeroTable)),
            Just(Target::Error(ErrorTable)),
            flakey::tests::flakey_strategy().prop_map(Target::Flakey),
            delay::tests::delay_strategy().prop_map(Target::Delay),
        ]
    }

    proptest! {
        #[test]
        fn target_round_trip(t in target_strategy(), start in 0u64..1 << 40, len in 1u64..1 << 40) {
            let line = t.to_line(start, len);
            prop_assert_eq!(line.validate(), Ok(()));
            let text = line.to_string();
            let back: TableLine = text.parse().unwrap();
            prop_assert_eq!(&back, &line);
            prop_assert_eq!(Target::from_line(&back), Ok(t));
        }

        #[test]
        fn table_line_never_panics(s in "\\PC*") {
            if let Ok(l) = s.parse::<TableLine>() {
                let _ = Target::from_line(&l);
                prop_assert_eq!(l.to_string().parse::<TableLine>(), Ok(l));
            }
        }
    }
}
