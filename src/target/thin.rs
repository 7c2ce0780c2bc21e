//! The `thin` target table and thin device ids.

use std::fmt;
use std::str::FromStr;

use super::args::{parse_u64, write_opt, Args};
use super::device::DeviceRef;
use super::error::{snippet, Result, TargetError};
use super::TargetTable;

const CONTEXT: &str = "thin table";

/// A thin device id inside a pool: 24 bits, `0..=0xFFFFFF`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ThinId(u32);

impl ThinId {
    /// The largest id the kernel accepts (`MAX_DEV_ID` in dm-thin.c,
    /// 2^24 - 1). This is the crate's one thin id limit; as a number,
    /// `ThinId::MAX.get()` (usable in a `const`).
    pub const MAX: ThinId = ThinId(0xFF_FFFF);

    /// The id `id`, if it fits 24 bits.
    pub fn new(id: u32) -> Result<Self> {
        Self::checked("thin device id", u64::from(id))
    }

    pub(crate) fn checked(field: &'static str, id: u64) -> Result<Self> {
        match u32::try_from(id) {
            Ok(v) if v <= Self::MAX.0 => Ok(ThinId(v)),
            _ => Err(TargetError::OutOfRange {
                field,
                value: id,
                rule: "a thin device id must be at most 16777215 (0xFFFFFF, 24 bits)",
            }),
        }
    }

    pub(crate) fn parse_field(field: &'static str, s: &str) -> Result<Self> {
        Self::checked(field, parse_u64(field, s)?)
    }

    /// The id as a number.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for ThinId {
    type Error = TargetError;
    fn try_from(v: u32) -> Result<Self> {
        ThinId::new(v)
    }
}

impl TryFrom<u64> for ThinId {
    type Error = TargetError;
    fn try_from(v: u64) -> Result<Self> {
        ThinId::checked("thin device id", v)
    }
}

impl From<ThinId> for u32 {
    fn from(id: ThinId) -> u32 {
        id.0
    }
}

impl fmt::Display for ThinId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for ThinId {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Self> {
        ThinId::parse_field("thin device id", s)
    }
}

/// A `thin` table: `<pool_dev> <dev_id> [<external_origin_dev>]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ThinTable {
    pool: DeviceRef,
    dev_id: ThinId,
    external_origin: Option<DeviceRef>,
}

impl ThinTable {
    /// A thin device `dev_id` in the pool device `pool`.
    pub fn new(pool: DeviceRef, dev_id: ThinId) -> Result<Self> {
        pool.validate_field("thin pool device")?;
        Ok(ThinTable {
            pool,
            dev_id,
            external_origin: None,
        })
    }

    /// The same table reading unprovisioned blocks from the read-only
    /// `origin`; fails if it is invalid or is the pool device itself.
    pub fn with_external_origin(mut self, origin: DeviceRef) -> Result<Self> {
        origin.validate_field("thin external origin device")?;
        if origin == self.pool {
            return Err(TargetError::SameDevice {
                context: CONTEXT,
                first: "pool device",
                second: "external origin",
                device: snippet(&origin.to_string()),
            });
        }
        self.external_origin = Some(origin);
        Ok(self)
    }

    /// The pool device.
    pub fn pool(&self) -> &DeviceRef {
        &self.pool
    }

    /// The thin device id.
    pub fn dev_id(&self) -> ThinId {
        self.dev_id
    }

    /// The external origin, if any.
    pub fn external_origin(&self) -> Option<&DeviceRef> {
        self.external_origin.as_ref()
    }
}

impl fmt::Display for ThinTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.pool, self.dev_id)?;
        write_opt(f, self.external_origin.as_ref())
    }
}

impl TargetTable for ThinTable {
    const TARGET_TYPE: &'static str = "thin";

    /// Parses the parameters, as given to or reported by the kernel.
    fn parse_params(params: &str) -> Result<Self> {
        let mut a = Args::non_empty(params, CONTEXT)?;
        let pool = a.device("thin pool device")?;
        let id = ThinId::parse_field("thin device id", a.required("thin device id")?)?;
        let origin = a
            .next_token()
            .map(|t| DeviceRef::parse_field("thin external origin device", t))
            .transpose()?;
        a.finish()?;
        let t = ThinTable::new(pool, id)?;
        match origin {
            Some(o) => t.with_external_origin(o),
            None => Ok(t),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::device::tests::device_strategy;
    use super::super::test_support::assert_parse_errors;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_are_24_bit() {
        assert_eq!(ThinId::new(0).map(ThinId::get), Ok(0));
        assert_eq!(ThinId::new(0xFF_FFFF), Ok(ThinId::MAX));
        let e = ThinId::new(0x100_0000).unwrap_err();
        assert!(e.to_string().contains("at most 16777215"), "{e}");
        assert!(ThinId::try_from(u64::MAX).is_err());
        assert!("16777216".parse::<ThinId>().is_err());
        assert!("-1".parse::<ThinId>().is_err());
        assert_eq!("16777215".parse(), Ok(ThinId::MAX));
    }

    #[test]
    fn parses_kernel_output() {
        // thin_status() STATUSTYPE_TABLE: "%s %lu" then optional " %s".
        let t: ThinTable = "253:2 7".parse().unwrap();
        assert_eq!(t.pool(), &DeviceRef::MajorMinor(253, 2));
        assert_eq!(t.dev_id().get(), 7);
        assert_eq!(t.external_origin(), None);
        let t: ThinTable = "253:2 16777215 8:16 ".parse().unwrap();
        assert_eq!(t.external_origin(), Some(&DeviceRef::MajorMinor(8, 16)));
        assert_eq!(t.to_string(), "253:2 16777215 8:16");
    }

    #[test]
    fn every_invalid_input_says_why() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("253:2", "thin device id is missing"),
            ("253:2 x", "thin device id: expected a decimal integer"),
            ("253:2 16777216", "at most 16777215"),
            ("253:2 1 253:2", "must be different devices"),
            ("253:2 1 8:16 extra", "unexpected extra argument \"extra\""),
            ("253:2 1 9999:1", "out of range"),
        ];
        assert_parse_errors::<ThinTable>(cases);
        let e =
            ThinTable::new(DeviceRef::Path("/dev/mapper/pool x".into()), ThinId::MAX).unwrap_err();
        assert!(e.to_string().contains("whitespace"), "{e}");
    }

    pub(crate) fn thin_id_strategy() -> impl Strategy<Value = ThinId> {
        (0u32..=0xFF_FFFF).prop_map(|v| ThinId::new(v).unwrap())
    }

    pub(crate) fn thin_strategy() -> impl Strategy<Value = ThinTable> {
        (
            device_strategy(),
            thin_id_strategy(),
            proptest::option::of(device_strategy()),
        )
            .prop_filter_map("origin differs from pool", |(p, id, o)| {
                let t = ThinTable::new(p, id).ok()?;
                match o {
                    Some(o) => t.with_external_origin(o).ok(),
                    None => Some(t),
                }
            })
    }

    parse_proptests!(table: ThinTable, thin_strategy());
}
