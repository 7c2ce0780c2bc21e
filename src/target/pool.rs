//! The `thin-pool` target table.

use std::fmt;

use super::args::Args;
use super::device::DeviceRef;
use super::error::{snippet, Result, TargetError};
use super::TargetTable;

const CONTEXT: &str = "thin-pool table";

/// A thin-pool data block size, in 512-byte sectors.
///
/// Valid sizes are 128..=2097152 sectors (64 KiB to 1 GiB) and a multiple of 128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockSize(u32);

impl BlockSize {
    /// Smallest block size, in sectors (64 KiB).
    pub const MIN_SECTORS: u32 = 128;
    /// Largest block size, in sectors (1 GiB).
    pub const MAX_SECTORS: u32 = 2_097_152;
    /// The smallest block size.
    pub const MIN: BlockSize = BlockSize(Self::MIN_SECTORS);

    /// A block size of `sectors` 512-byte sectors, if the kernel accepts it.
    pub fn new(sectors: u32) -> Result<Self> {
        Self::check("thin-pool block size", u64::from(sectors))
    }

    /// A block size of `bytes` bytes, if it is a whole, valid number of sectors.
    pub fn from_bytes(bytes: u64) -> Result<Self> {
        if bytes % 512 != 0 {
            return Err(TargetError::OutOfRange {
                field: "thin-pool block size in bytes",
                value: bytes,
                rule: "must be a multiple of 512",
            });
        }
        Self::check("thin-pool block size", bytes / 512)
    }

    fn check(field: &'static str, sectors: u64) -> Result<Self> {
        let rule = if sectors < u64::from(Self::MIN_SECTORS) {
            "must be at least 128 sectors (64 KiB)"
        } else if sectors > u64::from(Self::MAX_SECTORS) {
            "must be at most 2097152 sectors (1 GiB)"
        } else if sectors % u64::from(Self::MIN_SECTORS) != 0 {
            "must be a multiple of 128 sectors (64 KiB)"
        } else {
            // In range, so it fits u32.
            return u32::try_from(sectors)
                .map(BlockSize)
                .map_err(|_| TargetError::OutOfRange {
                    field,
                    value: sectors,
                    rule: "must fit in 32 bits",
                });
        };
        Err(TargetError::OutOfRange {
            field,
            value: sectors,
            rule,
        })
    }

    /// The size in 512-byte sectors.
    pub const fn sectors(self) -> u32 {
        self.0
    }

    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        // At most 2^21 * 2^9 = 2^30: cannot overflow.
        (self.0 as u64) * 512
    }
}

impl Default for BlockSize {
    fn default() -> Self {
        Self::MIN
    }
}

impl fmt::Display for BlockSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The optional thin-pool features. All off is the kernel's default: zero new
/// blocks, pass discards down, queue I/O when out of space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PoolFeatures {
    /// `skip_block_zeroing`: do not zero newly provisioned blocks.
    pub skip_block_zeroing: bool,
    /// `ignore_discard`: disable discard support.
    pub ignore_discard: bool,
    /// `no_discard_passdown`: process discards but do not pass them to the data device.
    pub no_discard_passdown: bool,
    /// `read_only`: refuse metadata changes (not allowed on a pool's first load).
    pub read_only: bool,
    /// `error_if_no_space`: fail I/O at once when out of data space instead of queueing.
    pub error_if_no_space: bool,
}

impl PoolFeatures {
    /// At most this many feature arguments are accepted by the kernel.
    pub const MAX_ARGS: usize = 4;

    /// The feature names in the order the kernel emits them.
    const NAMES: [&'static str; 5] = [
        "skip_block_zeroing",
        "ignore_discard",
        "no_discard_passdown",
        "read_only",
        "error_if_no_space",
    ];

    fn flags(&self) -> [bool; 5] {
        [
            self.skip_block_zeroing,
            self.ignore_discard,
            self.no_discard_passdown,
            self.read_only,
            self.error_if_no_space,
        ]
    }

    /// Number of feature arguments these features take.
    pub fn count(&self) -> usize {
        self.flags().iter().filter(|f| **f).count()
    }

    /// The feature names that are on, in kernel order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> {
        let flags = self.flags();
        Self::NAMES
            .into_iter()
            .zip(flags)
            .filter_map(|(n, on)| on.then_some(n))
    }

    /// Fails if the kernel would refuse this many features.
    pub fn validate(&self) -> Result<()> {
        let count = self.count();
        if count > Self::MAX_ARGS {
            return Err(TargetError::TooManyFeatureArgs {
                context: CONTEXT,
                count: count as u64,
                max: Self::MAX_ARGS as u64,
            });
        }
        Ok(())
    }

    fn set(&mut self, name: &str) -> Result<()> {
        let (slot, canonical) = if name.eq_ignore_ascii_case("skip_block_zeroing") {
            (&mut self.skip_block_zeroing, "skip_block_zeroing")
        } else if name.eq_ignore_ascii_case("ignore_discard") {
            (&mut self.ignore_discard, "ignore_discard")
        } else if name.eq_ignore_ascii_case("no_discard_passdown") {
            (&mut self.no_discard_passdown, "no_discard_passdown")
        } else if name.eq_ignore_ascii_case("read_only") {
            (&mut self.read_only, "read_only")
        } else if name.eq_ignore_ascii_case("error_if_no_space") {
            (&mut self.error_if_no_space, "error_if_no_space")
        } else {
            return Err(TargetError::unknown(
                "thin-pool feature",
                name,
                "skip_block_zeroing, ignore_discard, no_discard_passdown, \
                 read_only or error_if_no_space",
            ));
        };
        if *slot {
            return Err(TargetError::DuplicateFeature {
                context: CONTEXT,
                feature: canonical,
            });
        }
        *slot = true;
        Ok(())
    }
}

/// A `thin-pool` table:
/// `<metadata_dev> <data_dev> <block_size> <low_water_mark> [<n> <feature>...]`.
///
/// Built only through validated constructors, so every value formats to a
/// line the kernel's constructor accepts (device existence aside).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ThinPoolTable {
    metadata_dev: DeviceRef,
    data_dev: DeviceRef,
    block_size: BlockSize,
    low_water_mark: u64,
    features: PoolFeatures,
}

impl ThinPoolTable {
    /// A pool table with default features.
    ///
    /// `low_water_mark` is in data blocks: when free space drops below it the
    /// kernel raises a dm event. Fails if a device is invalid or both name the
    /// same device.
    pub fn new(
        metadata_dev: DeviceRef,
        data_dev: DeviceRef,
        block_size: BlockSize,
        low_water_mark: u64,
    ) -> Result<Self> {
        metadata_dev.validate_field("thin-pool metadata device")?;
        data_dev.validate_field("thin-pool data device")?;
        if metadata_dev == data_dev {
            return Err(TargetError::SameDevice {
                context: CONTEXT,
                first: "metadata device",
                second: "data device",
                device: snippet(&metadata_dev.to_string()),
            });
        }
        Ok(ThinPoolTable {
            metadata_dev,
            data_dev,
            block_size,
            low_water_mark,
            features: PoolFeatures::default(),
        })
    }

    /// The same table with `features`; fails if more than four are on.
    pub fn with_features(mut self, features: PoolFeatures) -> Result<Self> {
        features.validate()?;
        self.features = features;
        Ok(self)
    }

    /// The metadata device.
    pub fn metadata_dev(&self) -> &DeviceRef {
        &self.metadata_dev
    }

    /// The data device.
    pub fn data_dev(&self) -> &DeviceRef {
        &self.data_dev
    }

    /// The data block size.
    pub fn block_size(&self) -> BlockSize {
        self.block_size
    }

    /// The low water mark, in data blocks.
    pub fn low_water_mark(&self) -> u64 {
        self.low_water_mark
    }

    /// The features.
    pub fn features(&self) -> PoolFeatures {
        self.features
    }

    /// Number of data blocks a pool of `length` sectors holds (the remainder is unused).
    pub fn data_blocks(&self, length: u64) -> u64 {
        length / u64::from(self.block_size.sectors())
    }
}

impl fmt::Display for ThinPoolTable {
    /// Formats the parameters the way the kernel reports them, without the
    /// trailing space.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {}",
            self.metadata_dev,
            self.data_dev,
            self.block_size.0,
            self.low_water_mark,
            self.features.count()
        )?;
        for name in self.features.names() {
            f.write_str(" ")?;
            f.write_str(name)?;
        }
        Ok(())
    }
}

impl TargetTable for ThinPoolTable {
    const TARGET_TYPE: &'static str = "thin-pool";

    /// Parses the parameters (not the whole line), as given to or reported by
    /// the kernel; a trailing space is fine.
    fn parse_params(params: &str) -> Result<Self> {
        let mut a = Args::non_empty(params, CONTEXT)?;
        let meta = a.device("thin-pool metadata device")?;
        let data = a.device("thin-pool data device")?;
        let bs_tok = a.required("thin-pool block size")?;
        let bs = super::args::parse_u64("thin-pool block size", bs_tok)?;
        let block_size = BlockSize::check("thin-pool block size", bs)?;
        let low_water_mark = a.u64("thin-pool low water mark")?;
        let mut features = PoolFeatures::default();
        if let Some(n_tok) = a.next_token() {
            let n = super::args::parse_u64("thin-pool feature count", n_tok)?;
            if n > PoolFeatures::MAX_ARGS as u64 {
                return Err(TargetError::TooManyFeatureArgs {
                    context: a.context(),
                    count: n,
                    max: PoolFeatures::MAX_ARGS as u64,
                });
            }
            let available = a.remaining();
            if n > available {
                return Err(TargetError::FeatureArgsShort {
                    context: a.context(),
                    declared: n,
                    available,
                });
            }
            for _ in 0..n {
                features.set(a.required("thin-pool feature")?)?;
            }
        }
        a.finish()?;
        ThinPoolTable::new(meta, data, block_size, low_water_mark)?.with_features(features)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::device::tests::{device_strategy, mm};
    use super::super::test_support::assert_parse_errors;
    use super::super::TableLine;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn block_size_rules() {
        assert_eq!(BlockSize::new(128).map(BlockSize::sectors), Ok(128));
        assert_eq!(BlockSize::new(2_097_152).map(BlockSize::bytes), Ok(1 << 30));
        assert_eq!(BlockSize::from_bytes(65536), BlockSize::new(128));
        for (bad, why) in [
            (0, "at least 128"),
            (64, "at least 128"),
            (192 + 1, "multiple of 128"),
            (200, "multiple of 128"),
            (2_097_152 + 128, "at most 2097152"),
            (u32::MAX, "at most 2097152"),
        ] {
            let e = BlockSize::new(bad).unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
        assert!(BlockSize::from_bytes(65537).is_err());
        assert!(BlockSize::from_bytes(u64::MAX).is_err());
    }

    #[test]
    fn formats_like_the_kernel() {
        let t =
            ThinPoolTable::new(mm(7, 1), mm(7, 0), BlockSize::new(128).unwrap(), 32768).unwrap();
        assert_eq!(t.to_string(), "7:1 7:0 128 32768 0");
        let t = t
            .with_features(PoolFeatures {
                skip_block_zeroing: true,
                error_if_no_space: true,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            t.to_string(),
            "7:1 7:0 128 32768 2 skip_block_zeroing error_if_no_space"
        );
        let line = t.to_line(0, 2_097_152);
        assert_eq!(line.target_type(), "thin-pool");
        assert_eq!(
            line.to_string(),
            "0 2097152 thin-pool 7:1 7:0 128 32768 2 skip_block_zeroing error_if_no_space"
        );
        assert_eq!(ThinPoolTable::try_from(&line), Ok(t));
    }

    #[test]
    fn parses_kernel_output_with_trailing_space() {
        // STATUSTYPE_TABLE output of pool_status(): "%s %s %lu %llu " then emit_flags().
        let t: ThinPoolTable = "253:0 253:1 128 16384 0 ".parse().unwrap();
        assert_eq!(t.metadata_dev(), &mm(253, 0));
        assert_eq!(t.data_dev(), &mm(253, 1));
        assert_eq!(t.block_size().sectors(), 128);
        assert_eq!(t.low_water_mark(), 16384);
        assert_eq!(t.features(), PoolFeatures::default());

        let t: ThinPoolTable =
            "7:2 7:3 1024 0 4 skip_block_zeroing ignore_discard no_discard_passdown read_only "
                .parse()
                .unwrap();
        assert_eq!(t.features().count(), 4);
        assert!(!t.features().error_if_no_space);
        assert_eq!(t.data_blocks(1024 * 10 + 5), 10);
    }

    #[test]
    fn parses_user_forms() {
        let t: ThinPoolTable = "/dev/loop1 /dev/loop0 256 100".parse().unwrap();
        assert_eq!(t.metadata_dev(), &DeviceRef::Path("/dev/loop1".into()));
        assert_eq!(t.features().count(), 0);
        // Feature names are case-insensitive, as in the kernel.
        let t: ThinPoolTable = "/dev/a /dev/b 128 1 1 Skip_Block_Zeroing".parse().unwrap();
        assert!(t.features().skip_block_zeroing);
    }

    #[test]
    fn every_invalid_input_says_why() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("   ", "empty"),
            ("7:0", "data device is missing"),
            ("7:0 7:1", "block size is missing"),
            ("7:0 7:1 128", "low water mark is missing"),
            ("7:0 7:0 128 0", "must be different devices"),
            ("/dev/a /dev/a 128 0", "must be different devices"),
            ("7:0 7:1 200 0", "multiple of 128"),
            ("7:0 7:1 64 0", "at least 128"),
            ("7:0 7:1 4194304 0", "at most 2097152"),
            ("7:0 7:1 99999999999999999999 0", "does not fit in 64 bits"),
            ("7:0 7:1 abc 0", "block size: expected a decimal integer"),
            (
                "7:0 7:1 128 -1",
                "low water mark: expected a decimal integer",
            ),
            (
                "7:0 7:1 128 0 x",
                "feature count: expected a decimal integer",
            ),
            ("7:0 7:1 128 0 5 a b c d e", "at most 4"),
            ("7:0 7:1 128 0 2 skip_block_zeroing", "only 1 follow"),
            (
                "7:0 7:1 128 0 1 zero_blocks",
                "unknown value \"zero_blocks\"",
            ),
            (
                "7:0 7:1 128 0 2 read_only read_only",
                "read_only is given more than once",
            ),
            ("7:0 7:1 128 0 0 junk", "unexpected extra argument \"junk\""),
            (
                "7:0 7:1 128 0 1 read_only junk",
                "unexpected extra argument",
            ),
            ("5000:0 7:1 128 0", "out of range"),
            ("+7:0 7:1 128 0", "major:minor"),
        ];
        assert_parse_errors::<ThinPoolTable>(cases);
    }

    #[test]
    fn five_features_are_refused() {
        let all = PoolFeatures {
            skip_block_zeroing: true,
            ignore_discard: true,
            no_discard_passdown: true,
            read_only: true,
            error_if_no_space: true,
        };
        let t = ThinPoolTable::new(mm(1, 1), mm(1, 2), BlockSize::MIN, 0).unwrap();
        let e = t.with_features(all).unwrap_err();
        assert_eq!(
            e,
            TargetError::TooManyFeatureArgs {
                context: CONTEXT,
                count: 5,
                max: 4
            }
        );
    }

    #[test]
    fn injection_through_a_path_is_refused() {
        let e = ThinPoolTable::new(
            DeviceRef::Path("/dev/meta 7:1 128 0 1 read_only".into()),
            mm(7, 0),
            BlockSize::MIN,
            0,
        )
        .unwrap_err();
        assert!(e.to_string().contains("metadata device"), "{e}");
        assert!(e.to_string().contains("whitespace"), "{e}");
    }

    #[test]
    fn wrong_target_type_is_refused() {
        let line = TableLine::new(0, 8, "thin", "7:0 7:1 128 0").unwrap();
        let e = ThinPoolTable::try_from(&line).unwrap_err();
        assert_eq!(
            e,
            TargetError::WrongTargetType {
                expected: "thin-pool",
                found: "thin".into()
            }
        );
    }

    pub(crate) fn block_size_strategy() -> impl Strategy<Value = BlockSize> {
        (1u32..=16384).prop_map(|k| BlockSize::new(k * 128).unwrap())
    }

    pub(crate) fn features_strategy() -> impl Strategy<Value = PoolFeatures> {
        any::<[bool; 5]>()
            .prop_filter("at most four", |f| f.iter().filter(|x| **x).count() <= 4)
            .prop_map(|f| PoolFeatures {
                skip_block_zeroing: f[0],
                ignore_discard: f[1],
                no_discard_passdown: f[2],
                read_only: f[3],
                error_if_no_space: f[4],
            })
    }

    pub(crate) fn pool_strategy() -> impl Strategy<Value = ThinPoolTable> {
        (
            device_strategy(),
            device_strategy(),
            block_size_strategy(),
            any::<u64>(),
            features_strategy(),
        )
            .prop_filter_map("distinct devices", |(m, d, bs, lwm, f)| {
                ThinPoolTable::new(m, d, bs, lwm)
                    .ok()?
                    .with_features(f)
                    .ok()
            })
    }

    parse_proptests!(table: ThinPoolTable, pool_strategy());

    proptest! {
        #[test]
        fn never_panics_on_near_valid(
            n in 0u32..8,
            words in proptest::collection::vec(
                prop_oneof![
                    Just("skip_block_zeroing".to_string()),
                    Just("read_only".to_string()),
                    Just("ignore_discard".to_string()),
                    "[a-z_]{0,12}",
                    "[0-9]{1,22}",
                ],
                0..7,
            ),
        ) {
            let s = format!("7:0 7:1 128 0 {n} {}", words.join(" "));
            let _ = s.parse::<ThinPoolTable>();
        }
    }
}
