//! The `delay` test target: I/O to other devices, held back.

use std::fmt;

use super::args::{write_opt, Args};
use super::device::DeviceRef;
use super::error::{Result, TargetError};
use super::TargetTable;

const DELAY: &str = "delay table";

/// One `<device> <offset> <delay_ms>` group of a `delay` table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DelayClass {
    /// Device the I/O goes to (validated when given to a [`DelayTable`]).
    pub device: DeviceRef,
    /// First sector used on the device.
    pub offset: u64,
    /// Delay in milliseconds.
    pub delay_ms: u32,
}

/// The field names of the read, write and flush classes in errors.
const FIELDS: [[&str; 3]; 3] = [
    ["delay read device", "delay read offset", "delay read delay"],
    [
        "delay write device",
        "delay write offset",
        "delay write delay",
    ],
    [
        "delay flush device",
        "delay flush offset",
        "delay flush delay",
    ],
];

impl DelayClass {
    fn parse(a: &mut Args<'_>, which: [&'static str; 3]) -> Result<Self> {
        let [f_dev, f_off, f_delay] = which;
        Ok(DelayClass {
            device: a.device(f_dev)?,
            offset: a.u64(f_off)?,
            delay_ms: a.u32(f_delay)?,
        })
    }
}

impl fmt::Display for DelayClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.device, self.offset, self.delay_ms)
    }
}

/// A `delay` table: `<read class> [<write class> [<flush class>]]`, each
/// class `<device> <offset> <delay_ms>` (3, 6 or 9 arguments).
///
/// With one class it applies to all I/O; with two, the second applies to
/// writes and flushes; with three, the third applies to flushes (Linux 6.7+).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DelayTable {
    read: DelayClass,
    write: Option<DelayClass>,
    flush: Option<DelayClass>,
}

impl DelayTable {
    /// A delay table with one class for all I/O.
    pub fn new(read: DelayClass) -> Result<Self> {
        read.device.validate_field("delay read device")?;
        Ok(DelayTable {
            read,
            write: None,
            flush: None,
        })
    }

    /// The same table with a separate class for writes.
    pub fn with_write(mut self, write: DelayClass) -> Result<Self> {
        write.device.validate_field("delay write device")?;
        self.write = Some(write);
        Ok(self)
    }

    /// The same table with a separate class for flushes; needs a write class.
    pub fn with_flush(mut self, flush: DelayClass) -> Result<Self> {
        flush.device.validate_field("delay flush device")?;
        if self.write.is_none() {
            return Err(TargetError::Missing {
                field: "delay write class (a flush class needs one before it)",
            });
        }
        self.flush = Some(flush);
        Ok(self)
    }

    /// The class for reads (and for everything when alone).
    pub fn read(&self) -> &DelayClass {
        &self.read
    }

    /// The class for writes, if separate.
    pub fn write(&self) -> Option<&DelayClass> {
        self.write.as_ref()
    }

    /// The class for flushes, if separate.
    pub fn flush(&self) -> Option<&DelayClass> {
        self.flush.as_ref()
    }
}

impl fmt::Display for DelayTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.read)?;
        write_opt(f, self.write.as_ref())?;
        write_opt(f, self.flush.as_ref())
    }
}

impl TargetTable for DelayTable {
    const TARGET_TYPE: &'static str = "delay";

    /// Parses the parameters.
    fn parse_params(params: &str) -> Result<Self> {
        let mut a = Args::new(params, DELAY);
        let n = a.remaining();
        if n == 0 {
            return Err(TargetError::Empty { context: DELAY });
        }
        if n != 3 && n != 6 && n != 9 {
            return Err(TargetError::OutOfRange {
                field: "delay argument count",
                value: n,
                rule: "must be 3, 6 or 9",
            });
        }
        let [read, write, flush] = FIELDS;
        let mut t = DelayTable::new(DelayClass::parse(&mut a, read)?)?;
        if n >= 6 {
            t = t.with_write(DelayClass::parse(&mut a, write)?)?;
        }
        if n >= 9 {
            t = t.with_flush(DelayClass::parse(&mut a, flush)?)?;
        }
        a.finish()?;
        Ok(t)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::device::tests::{device_strategy, mm};
    use super::super::test_support::assert_parse_errors;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn delay() {
        let t: DelayTable = "7:0 0 500".parse().unwrap();
        assert_eq!(t.read().delay_ms, 500);
        assert_eq!(t.write(), None);
        let t: DelayTable = "7:0 0 0 7:1 0 400 7:2 8 333".parse().unwrap();
        assert_eq!(t.flush().map(|c| c.delay_ms), Some(333));
        assert_eq!(t.to_string(), "7:0 0 0 7:1 0 400 7:2 8 333");
        assert_parse_errors::<DelayTable>(&[
            ("", "empty"),
            ("7:0 0", "must be 3, 6 or 9"),
            ("7:0 0 1 2", "must be 3, 6 or 9"),
            ("7:0 0 1 7:1 0 1 7:2 0 1 7:3", "must be 3, 6 or 9"),
            ("7:0 x 1", "delay read offset: expected a decimal integer"),
            (
                "7:0 0 1 7:1 0 4294967296",
                "delay write delay: 4294967296 does not fit in 32 bits",
            ),
            ("7:0 0 1 /dev/a\\b 0 1", "backslash"),
        ]);
        let c = |d: DeviceRef| DelayClass {
            device: d,
            offset: 0,
            delay_ms: 1,
        };
        let e = DelayTable::new(c(mm(1, 1)))
            .unwrap()
            .with_flush(c(mm(1, 2)))
            .unwrap_err();
        assert!(e.to_string().contains("flush class needs"), "{e}");
        assert!(DelayTable::new(c(DeviceRef::Path(" ".into()))).is_err());
    }

    fn delay_class_strategy() -> impl Strategy<Value = DelayClass> {
        (device_strategy(), any::<u64>(), any::<u32>()).prop_map(|(device, offset, delay_ms)| {
            DelayClass {
                device,
                offset,
                delay_ms,
            }
        })
    }

    pub(crate) fn delay_strategy() -> impl Strategy<Value = DelayTable> {
        (
            delay_class_strategy(),
            proptest::option::of((
                delay_class_strategy(),
                proptest::option::of(delay_class_strategy()),
            )),
        )
            .prop_map(|(r, w)| {
                let t = DelayTable::new(r).unwrap();
                match w {
                    None => t,
                    Some((w, fl)) => {
                        let t = t.with_write(w).unwrap();
                        match fl {
                            None => t,
                            Some(fl) => t.with_flush(fl).unwrap(),
                        }
                    }
                }
            })
    }

    parse_proptests!(table: DelayTable, delay_strategy());
}
