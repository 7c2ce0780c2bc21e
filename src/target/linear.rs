//! The `linear` target: a range of another device.

use std::fmt;

use super::args::Args;
use super::device::DeviceRef;
use super::error::{Result, TargetError};
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

    /// Parses the parameters.
    pub fn parse_params(params: &str) -> Result<Self> {
        const CONTEXT: &str = "linear table";
        let mut a = Args::new(params, CONTEXT);
        if a.is_empty() {
            return Err(TargetError::Empty { context: CONTEXT });
        }
        let dev = DeviceRef::parse_field("linear device", a.required("linear device")?)?;
        let offset = a.u64("linear offset")?;
        a.finish()?;
        LinearTable::new(dev, offset)
    }
}

impl fmt::Display for LinearTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.device, self.offset)
    }
}

impl TargetTable for LinearTable {
    const TARGET_TYPE: &'static str = "linear";
    fn parse_params(params: &str) -> Result<Self> {
        LinearTable::parse_params(params)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::device::tests::{device_strategy, mm};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn linear() {
        let t: LinearTable = "7:0 2048".parse().unwrap();
        assert_eq!((t.device(), t.offset()), (&mm(7, 0), 2048));
        assert_eq!(t.to_string(), "7:0 2048");
        assert_eq!(t.to_line(0, 10).to_string(), "0 10 linear 7:0 2048");
        for (input, want) in [
            ("", "empty"),
            ("7:0", "linear offset is missing"),
            ("7:0 x", "linear offset: expected a decimal integer"),
            ("7:0 1 2", "unexpected extra argument \"2\""),
        ] {
            let e = input.parse::<LinearTable>().unwrap_err();
            assert!(e.to_string().contains(want), "{input:?}: {e}");
        }
        assert!(LinearTable::new(DeviceRef::Path("/dev/a b".into()), 0).is_err());
    }

    pub(crate) fn linear_strategy() -> impl Strategy<Value = LinearTable> {
        (device_strategy(), any::<u64>()).prop_map(|(d, o)| LinearTable::new(d, o).unwrap())
    }

    proptest! {
        #[test]
        fn linear_round_trip(t in linear_strategy()) {
            prop_assert_eq!(t.to_string().parse::<LinearTable>(), Ok(t.clone()));
            prop_assert_eq!(LinearTable::try_from(&t.to_line(0, 1)), Ok(t));
        }

        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = s.parse::<LinearTable>();
        }
    }
}
