//! The `linear` target: a range of another device.

use std::fmt;

use super::args::Args;
use super::device::DeviceRef;
use super::error::Result;
use super::TargetTable;

/// A `linear` table: `<device> <offset>`, mapping onto `device` from sector `offset`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LinearTable {
    device: DeviceRef,
    offset: u64,
}

impl LinearTable {
    /// Maps onto `device` starting at sector `offset`.
    pub fn new(device: DeviceRef, offset: u64) -> Result<Self> {
        device.validate_field("linear device")?;
        Ok(LinearTable { device, offset })
    }

    /// The underlying device.
    pub fn device(&self) -> &DeviceRef {
        &self.device
    }

    /// The first sector used on the device.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl fmt::Display for LinearTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.device, self.offset)
    }
}

impl TargetTable for LinearTable {
    const TARGET_TYPE: &'static str = "linear";

    /// Parses the parameters.
    fn parse_params(params: &str) -> Result<Self> {
        const CONTEXT: &str = "linear table";
        let mut a = Args::non_empty(params, CONTEXT)?;
        let dev = a.device("linear device")?;
        let offset = a.u64("linear offset")?;
        a.finish()?;
        LinearTable::new(dev, offset)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::device::tests::{device_strategy, mm};
    use super::super::test_support::assert_parse_errors;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn linear() {
        let t: LinearTable = "7:0 2048".parse().unwrap();
        assert_eq!((t.device(), t.offset()), (&mm(7, 0), 2048));
        assert_eq!(t.to_string(), "7:0 2048");
        assert_eq!(t.to_line(0, 10).to_string(), "0 10 linear 7:0 2048");
        assert_parse_errors::<LinearTable>(&[
            ("", "empty"),
            ("7:0", "linear offset is missing"),
            ("7:0 x", "linear offset: expected a decimal integer"),
            ("7:0 1 2", "unexpected extra argument \"2\""),
        ]);
        assert!(LinearTable::new(DeviceRef::Path("/dev/a b".into()), 0).is_err());
    }

    pub(crate) fn linear_strategy() -> impl Strategy<Value = LinearTable> {
        (device_strategy(), any::<u64>()).prop_map(|(d, o)| LinearTable::new(d, o).unwrap())
    }

    parse_proptests!(table: LinearTable, linear_strategy());
}
