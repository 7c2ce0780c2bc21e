//! The `zero` and `error` targets, which take no parameters.

use std::fmt;

use super::args::Args;
use super::error::Result;
use super::TargetTable;

/// A `zero` table: reads return zeroes, writes are discarded. No parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ZeroTable;

/// An `error` table: every I/O fails. No parameters.
///
/// (Kernels from 6.10 accept an optional backing device for zoned use; that
/// form is not supported here and is refused.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ErrorTable;

fn no_params(context: &'static str, params: &str) -> Result<()> {
    Args::new(params, context).finish()
}

impl fmt::Display for ZeroTable {
    fn fmt(&self, _f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Ok(())
    }
}

impl fmt::Display for ErrorTable {
    fn fmt(&self, _f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Ok(())
    }
}

impl TargetTable for ZeroTable {
    const TARGET_TYPE: &'static str = "zero";
    fn parse_params(params: &str) -> Result<Self> {
        no_params("zero table (takes no parameters)", params).map(|()| ZeroTable)
    }
}

impl TargetTable for ErrorTable {
    const TARGET_TYPE: &'static str = "error";
    fn parse_params(params: &str) -> Result<Self> {
        no_params("error table (takes no parameters)", params).map(|()| ErrorTable)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn zero_and_error() {
        assert_eq!("".parse(), Ok(ZeroTable));
        assert_eq!(" ".parse(), Ok(ErrorTable));
        assert_eq!(ZeroTable.to_line(0, 8).to_string(), "0 8 zero");
        let e = "7:0".parse::<ErrorTable>().unwrap_err();
        assert!(e.to_string().contains("takes no parameters"), "{e}");
        assert!("1".parse::<ZeroTable>().is_err());
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = s.parse::<ZeroTable>();
            let _ = s.parse::<ErrorTable>();
        }
    }
}
