//! The `flakey` test target: a device that works, then misbehaves, in turns.

use std::fmt;

use super::args::{parse_u64, Args};
use super::device::DeviceRef;
use super::error::{Result, TargetError};
use super::TargetTable;

const FLAKEY: &str = "flakey table";

/// What a flakey device does to writes while down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteFault {
    /// `drop_writes`: writes are silently ignored.
    Drop,
    /// `error_writes`: writes fail.
    Error,
}

/// Which I/O direction `corrupt_bio_byte` applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `r`: reads.
    Read,
    /// `w`: writes.
    Write,
}

/// `corrupt_bio_byte <nth_byte> <r|w> <value> <flags>`: while down, overwrite
/// byte `nth_byte` (counting from 1) of matching bios with `value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CorruptBioByte {
    /// The byte to replace, counting from 1 (must not be 0).
    pub nth_byte: u32,
    /// Reads or writes.
    pub direction: Direction,
    /// The value written.
    pub value: u8,
    /// Only bios with all these `bi_opf` flags set are corrupted (0: all bios).
    pub flags: u32,
}

/// Optional `flakey` features. All off means every I/O fails while down.
///
/// `error_reads` and the `random_*` features need Linux 6.6 or newer. Newer
/// kernels report a table given no features as `error_reads error_writes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlakeyFeatures {
    /// `error_reads`: reads fail while down.
    pub error_reads: bool,
    /// `drop_writes` or `error_writes`.
    pub writes: Option<WriteFault>,
    /// `corrupt_bio_byte ...`.
    pub corrupt_bio_byte: Option<CorruptBioByte>,
    /// `random_read_corrupt <p>`: corrupt a random byte of reads with
    /// probability p / 1e9 (p at most 1000000000).
    pub random_read_corrupt: Option<u32>,
    /// `random_write_corrupt <p>`: the same for writes.
    pub random_write_corrupt: Option<u32>,
}

impl FlakeyFeatures {
    /// Largest `random_*_corrupt` value (100 %).
    pub const PROBABILITY_MAX: u32 = 1_000_000_000;

    /// Number of feature arguments, counting each feature's own parameters.
    pub fn arg_count(&self) -> u32 {
        u32::from(self.error_reads)
            + u32::from(self.writes.is_some())
            + 5 * u32::from(self.corrupt_bio_byte.is_some())
            + 2 * u32::from(self.random_read_corrupt.is_some())
            + 2 * u32::from(self.random_write_corrupt.is_some())
    }

    /// Checks the values and combinations the kernel refuses.
    pub fn validate(&self) -> Result<()> {
        if let Some(c) = &self.corrupt_bio_byte {
            if c.nth_byte == 0 {
                return Err(TargetError::OutOfRange {
                    field: "flakey corrupt_bio_byte <Nth_byte>",
                    value: 0,
                    rule: "counts from 1, so it must not be 0",
                });
            }
        }
        for (field, p) in [
            (
                "flakey random_read_corrupt probability",
                self.random_read_corrupt,
            ),
            (
                "flakey random_write_corrupt probability",
                self.random_write_corrupt,
            ),
        ] {
            if let Some(p) = p {
                if p > Self::PROBABILITY_MAX {
                    return Err(TargetError::OutOfRange {
                        field,
                        value: u64::from(p),
                        rule: "must be at most 1000000000 (100 %)",
                    });
                }
            }
        }
        let corrupt_dir = self.corrupt_bio_byte.map(|c| c.direction);
        if let Some(w) = self.writes {
            let name = match w {
                WriteFault::Drop => "drop_writes",
                WriteFault::Error => "error_writes",
            };
            if corrupt_dir == Some(Direction::Write) {
                return Err(TargetError::ConflictingFeatures {
                    context: FLAKEY,
                    first: name,
                    second: "corrupt_bio_byte with direction w",
                });
            }
            if self.random_write_corrupt.is_some() {
                return Err(TargetError::ConflictingFeatures {
                    context: FLAKEY,
                    first: name,
                    second: "random_write_corrupt",
                });
            }
        }
        if self.error_reads {
            if corrupt_dir == Some(Direction::Read) {
                return Err(TargetError::ConflictingFeatures {
                    context: FLAKEY,
                    first: "error_reads",
                    second: "corrupt_bio_byte with direction r",
                });
            }
            if self.random_read_corrupt.is_some() {
                return Err(TargetError::ConflictingFeatures {
                    context: FLAKEY,
                    first: "error_reads",
                    second: "random_read_corrupt",
                });
            }
        }
        Ok(())
    }

    fn parse(a: &mut Args<'_>) -> Result<Self> {
        let mut f = FlakeyFeatures::default();
        let Some(n_tok) = a.next_token() else {
            return Ok(f);
        };
        let n = parse_u64("flakey feature count", n_tok)?;
        if n > 11 {
            return Err(TargetError::TooManyFeatureArgs {
                context: FLAKEY,
                count: n,
                max: 11,
            });
        }
        let available = a.remaining();
        if n > available {
            return Err(TargetError::FeatureArgsShort {
                context: FLAKEY,
                declared: n,
                available,
            });
        }
        let mut left = n;
        while left > 0 {
            left -= 1;
            let name = a.required("flakey feature")?;
            let dup = |feature| TargetError::DuplicateFeature {
                context: FLAKEY,
                feature,
            };
            if name.eq_ignore_ascii_case("error_reads") {
                if f.error_reads {
                    return Err(dup("error_reads"));
                }
                f.error_reads = true;
            } else if name.eq_ignore_ascii_case("drop_writes")
                || name.eq_ignore_ascii_case("error_writes")
            {
                let (this, canon) = if name.eq_ignore_ascii_case("drop_writes") {
                    (WriteFault::Drop, "drop_writes")
                } else {
                    (WriteFault::Error, "error_writes")
                };
                match f.writes {
                    Some(prev) if prev == this => return Err(dup(canon)),
                    Some(_) => {
                        return Err(TargetError::ConflictingFeatures {
                            context: FLAKEY,
                            first: "drop_writes",
                            second: "error_writes",
                        })
                    }
                    None => f.writes = Some(this),
                }
            } else if name.eq_ignore_ascii_case("corrupt_bio_byte") {
                if f.corrupt_bio_byte.is_some() {
                    return Err(dup("corrupt_bio_byte"));
                }
                consume(&mut left, 4, "corrupt_bio_byte")?;
                let nth_byte = a.u32("flakey corrupt_bio_byte <Nth_byte>")?;
                let dir = a.required("flakey corrupt_bio_byte <direction>")?;
                let direction = if dir.eq_ignore_ascii_case("r") {
                    Direction::Read
                } else if dir.eq_ignore_ascii_case("w") {
                    Direction::Write
                } else {
                    return Err(TargetError::unknown(
                        "flakey corrupt_bio_byte <direction>",
                        dir,
                        "r or w",
                    ));
                };
                let v_tok = a.required("flakey corrupt_bio_byte <value>")?;
                let v = parse_u64("flakey corrupt_bio_byte <value>", v_tok)?;
                let value = u8::try_from(v).map_err(|_| TargetError::OutOfRange {
                    field: "flakey corrupt_bio_byte <value>",
                    value: v,
                    rule: "must be a byte value, 0 to 255",
                })?;
                let flags = a.u32("flakey corrupt_bio_byte <flags>")?;
                f.corrupt_bio_byte = Some(CorruptBioByte {
                    nth_byte,
                    direction,
                    value,
                    flags,
                });
            } else if name.eq_ignore_ascii_case("random_read_corrupt")
                || name.eq_ignore_ascii_case("random_write_corrupt")
            {
                let read = name.eq_ignore_ascii_case("random_read_corrupt");
                let (slot, canon, field) = if read {
                    (
                        &mut f.random_read_corrupt,
                        "random_read_corrupt",
                        "flakey random_read_corrupt probability",
                    )
                } else {
                    (
                        &mut f.random_write_corrupt,
                        "random_write_corrupt",
                        "flakey random_write_corrupt probability",
                    )
                };
                if slot.is_some() {
                    return Err(dup(canon));
                }
                consume(&mut left, 1, canon)?;
                *slot = Some(a.u32(field)?);
            } else {
                return Err(TargetError::unknown(
                    "flakey feature",
                    name,
                    "error_reads, drop_writes, error_writes, corrupt_bio_byte, \
                     random_read_corrupt or random_write_corrupt",
                ));
            }
        }
        f.validate()?;
        Ok(f)
    }
}

/// Takes `k` arguments from what the feature count has left for `feature`.
fn consume(left: &mut u64, k: u64, feature: &'static str) -> Result<()> {
    match left.checked_sub(k) {
        Some(l) => {
            *left = l;
            Ok(())
        }
        None => Err(TargetError::FeatureCountTooSmall {
            context: FLAKEY,
            feature,
            needed: k,
            left: *left,
        }),
    }
}

impl fmt::Display for FlakeyFeatures {
    /// The feature group, `<n> <args>...`, empty when no feature is on.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.arg_count();
        if n == 0 {
            return Ok(());
        }
        write!(f, "{n}")?;
        if self.error_reads {
            f.write_str(" error_reads")?;
        }
        match self.writes {
            Some(WriteFault::Drop) => f.write_str(" drop_writes")?,
            Some(WriteFault::Error) => f.write_str(" error_writes")?,
            None => {}
        }
        if let Some(c) = &self.corrupt_bio_byte {
            let d = match c.direction {
                Direction::Read => 'r',
                Direction::Write => 'w',
            };
            write!(
                f,
                " corrupt_bio_byte {} {d} {} {}",
                c.nth_byte, c.value, c.flags
            )?;
        }
        if let Some(p) = self.random_read_corrupt {
            write!(f, " random_read_corrupt {p}")?;
        }
        if let Some(p) = self.random_write_corrupt {
            write!(f, " random_write_corrupt {p}")?;
        }
        Ok(())
    }
}

/// A `flakey` table:
/// `<device> <offset> <up_interval> <down_interval> [<n> <feature args>...]`.
///
/// The device works for `up_interval` seconds, then misbehaves for
/// `down_interval` seconds, over and over.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlakeyTable {
    device: DeviceRef,
    offset: u64,
    up_interval: u32,
    down_interval: u32,
    features: FlakeyFeatures,
}

impl FlakeyTable {
    /// A flakey mapping onto `device` from sector `offset`; the two intervals
    /// are in seconds and must not both be 0 nor add up past `u32::MAX`.
    pub fn new(
        device: DeviceRef,
        offset: u64,
        up_interval: u32,
        down_interval: u32,
    ) -> Result<Self> {
        device.validate_field("flakey device")?;
        match up_interval.checked_add(down_interval) {
            Some(0) => Err(TargetError::OutOfRange {
                field: "flakey up + down interval",
                value: 0,
                rule: "must not be 0",
            }),
            None => Err(TargetError::OutOfRange {
                field: "flakey up + down interval",
                value: u64::from(up_interval) + u64::from(down_interval),
                rule: "must fit in 32 bits",
            }),
            Some(_) => Ok(FlakeyTable {
                device,
                offset,
                up_interval,
                down_interval,
                features: FlakeyFeatures::default(),
            }),
        }
    }

    /// The same table with `features`, if the kernel would accept them.
    pub fn with_features(mut self, features: FlakeyFeatures) -> Result<Self> {
        features.validate()?;
        self.features = features;
        Ok(self)
    }

    /// The underlying device.
    pub fn device(&self) -> &DeviceRef {
        &self.device
    }

    /// The first sector used on the device.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Seconds the device works.
    pub fn up_interval(&self) -> u32 {
        self.up_interval
    }

    /// Seconds the device misbehaves.
    pub fn down_interval(&self) -> u32 {
        self.down_interval
    }

    /// The features.
    pub fn features(&self) -> FlakeyFeatures {
        self.features
    }
}

impl fmt::Display for FlakeyTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.device, self.offset, self.up_interval, self.down_interval
        )?;
        if self.features.arg_count() > 0 {
            write!(f, " {}", self.features)?;
        }
        Ok(())
    }
}

impl TargetTable for FlakeyTable {
    const TARGET_TYPE: &'static str = "flakey";

    /// Parses the parameters, as given to or reported by the kernel.
    fn parse_params(params: &str) -> Result<Self> {
        let mut a = Args::non_empty(params, FLAKEY)?;
        let dev = a.device("flakey device")?;
        let offset = a.u64("flakey offset")?;
        let up = a.u32("flakey up interval")?;
        let down = a.u32("flakey down interval")?;
        let features = FlakeyFeatures::parse(&mut a)?;
        a.finish()?;
        FlakeyTable::new(dev, offset, up, down)?.with_features(features)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::device::tests::device_strategy;
    use super::super::test_support::assert_parse_errors;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn flakey_parses_kernel_output() {
        // Older kernels: "%s %llu %u %u " then "%u " and the features.
        let t: FlakeyTable = "7:0 0 5 1 0 ".parse().unwrap();
        assert_eq!(t.features(), FlakeyFeatures::default());
        assert_eq!((t.up_interval(), t.down_interval()), (5, 1));
        let t: FlakeyTable = "7:0 0 3 2 5 corrupt_bio_byte 1 w 255 0 ".parse().unwrap();
        assert_eq!(
            t.features().corrupt_bio_byte,
            Some(CorruptBioByte {
                nth_byte: 1,
                direction: Direction::Write,
                value: 255,
                flags: 0
            })
        );
        // Newer kernels report no features as error_reads + error_writes.
        let t: FlakeyTable = "7:0 0 1 1 2 error_reads error_writes".parse().unwrap();
        assert!(t.features().error_reads);
        assert_eq!(t.features().writes, Some(WriteFault::Error));
        let t =
            "8:16 100 0 4 5 drop_writes random_read_corrupt 100000000 corrupt_bio_byte 32 r 1 0"
                .parse::<FlakeyTable>();
        // 1 + 2 + 5 = 8 args, but 5 declared: refused.
        assert!(t.is_err());
        let t: FlakeyTable =
            "8:16 100 0 4 8 drop_writes random_read_corrupt 100000000 corrupt_bio_byte 32 r 1 0"
                .parse()
                .unwrap();
        assert_eq!(t.features().random_read_corrupt, Some(100_000_000));
        assert_eq!(
            t.to_string(),
            "8:16 100 0 4 8 drop_writes corrupt_bio_byte 32 r 1 0 random_read_corrupt 100000000"
        );
    }

    #[test]
    fn flakey_every_invalid_input_says_why() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("7:0 0 1", "down interval is missing"),
            ("7:0 0 0 0", "must not be 0"),
            ("7:0 0 4294967295 1", "must fit in 32 bits"),
            ("7:0 0 4294967296 1", "does not fit in 32 bits"),
            ("7:0 0 1 1 12", "at most 11"),
            ("7:0 0 1 1 2 drop_writes", "only 1 follow"),
            ("7:0 0 1 1 1 bogus", "unknown value \"bogus\""),
            (
                "7:0 0 1 1 2 drop_writes drop_writes",
                "drop_writes is given more than once",
            ),
            (
                "7:0 0 1 1 2 drop_writes error_writes",
                "drop_writes cannot be combined with error_writes",
            ),
            (
                "7:0 0 1 1 2 error_reads error_reads",
                "error_reads is given more than once",
            ),
            ("7:0 0 1 1 5 corrupt_bio_byte 0 r 1 0", "must not be 0"),
            ("7:0 0 1 1 5 corrupt_bio_byte 1 x 1 0", "expected r or w"),
            ("7:0 0 1 1 5 corrupt_bio_byte 1 r 256 0", "0 to 255"),
            (
                "7:0 0 1 1 5 corrupt_bio_byte 1 r 1 4294967296",
                "does not fit in 32 bits",
            ),
            (
                "7:0 0 1 1 4 corrupt_bio_byte 1 r 1 0",
                "corrupt_bio_byte needs 4 more arguments, but the feature count leaves 3",
            ),
            (
                "7:0 0 1 1 6 drop_writes corrupt_bio_byte 1 w 1 0",
                "drop_writes cannot be combined with corrupt_bio_byte",
            ),
            (
                "7:0 0 1 1 3 error_writes random_write_corrupt 5",
                "error_writes cannot be combined with random_write_corrupt",
            ),
            (
                "7:0 0 1 1 3 error_reads random_read_corrupt 5",
                "error_reads cannot be combined with random_read_corrupt",
            ),
            (
                "7:0 0 1 1 6 error_reads corrupt_bio_byte 1 r 1 0",
                "error_reads cannot be combined",
            ),
            (
                "7:0 0 1 1 2 random_read_corrupt 1000000001",
                "at most 1000000000",
            ),
            (
                "7:0 0 1 1 1 random_read_corrupt",
                "random_read_corrupt needs 1 more arguments, but the feature count leaves 0",
            ),
            (
                "7:0 0 1 1 1 random_read_corrupt 5",
                "random_read_corrupt needs 1 more",
            ),
            (
                "7:0 0 1 1 4 random_read_corrupt 1 random_read_corrupt 2",
                "random_read_corrupt is given more than once",
            ),
            ("7:0 0 1 1 0 extra", "unexpected extra argument"),
        ];
        assert_parse_errors::<FlakeyTable>(cases);
    }

    pub(crate) fn flakey_features_strategy() -> impl Strategy<Value = FlakeyFeatures> {
        (
            any::<bool>(),
            proptest::option::of(prop_oneof![Just(WriteFault::Drop), Just(WriteFault::Error)]),
            proptest::option::of((
                1u32..,
                prop_oneof![Just(Direction::Read), Just(Direction::Write)],
                any::<u8>(),
                any::<u32>(),
            )),
            proptest::option::of(0u32..=FlakeyFeatures::PROBABILITY_MAX),
            proptest::option::of(0u32..=FlakeyFeatures::PROBABILITY_MAX),
        )
            .prop_map(|(error_reads, writes, c, rr, rw)| FlakeyFeatures {
                error_reads,
                writes,
                corrupt_bio_byte: c.map(|(nth_byte, direction, value, flags)| CorruptBioByte {
                    nth_byte,
                    direction,
                    value,
                    flags,
                }),
                random_read_corrupt: rr,
                random_write_corrupt: rw,
            })
            .prop_filter("kernel-valid combination", |f| f.validate().is_ok())
    }

    pub(crate) fn flakey_strategy() -> impl Strategy<Value = FlakeyTable> {
        (
            device_strategy(),
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            flakey_features_strategy(),
        )
            .prop_filter_map("valid intervals", |(d, o, up, down, f)| {
                FlakeyTable::new(d, o, up, down).ok()?.with_features(f).ok()
            })
    }

    parse_proptests!(table: FlakeyTable, flakey_strategy());
}
