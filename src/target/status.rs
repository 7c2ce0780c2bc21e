//! Status lines of the `thin-pool` and `thin` targets.
//!
//! The parsers take the kernel's own output (trailing space included) and do
//! not allocate unless they fail.

use std::fmt;
use std::str::FromStr;

use super::args::parse_u64;
use super::error::{snippet, Result, TargetError};
use super::pool::BlockSize;

/// Bytes in a thin-pool metadata block.
pub const METADATA_BLOCK_BYTES: u64 = 4096;

/// The pool's operating mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolMode {
    /// `rw`: normal operation.
    ReadWrite,
    /// `ro`: read-only (requested, after a metadata error, or out of metadata space).
    ReadOnly,
    /// `out_of_data_space`: writes to unprovisioned blocks queue or fail.
    OutOfDataSpace,
}

impl PoolMode {
    /// The kernel's keyword.
    pub const fn as_str(self) -> &'static str {
        match self {
            PoolMode::ReadWrite => "rw",
            PoolMode::ReadOnly => "ro",
            PoolMode::OutOfDataSpace => "out_of_data_space",
        }
    }
}

/// How the pool handles discards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiscardMode {
    /// `discard_passdown`: processed and passed to the data device.
    Passdown,
    /// `no_discard_passdown`: processed, not passed down.
    NoPassdown,
    /// `ignore_discard`: ignored.
    Ignore,
}

impl DiscardMode {
    /// The kernel's keyword.
    pub const fn as_str(self) -> &'static str {
        match self {
            DiscardMode::Passdown => "discard_passdown",
            DiscardMode::NoPassdown => "no_discard_passdown",
            DiscardMode::Ignore => "ignore_discard",
        }
    }
}

/// What happens to writes when the pool is out of data space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoSpacePolicy {
    /// `queue_if_no_space`: queue them (until a timeout).
    Queue,
    /// `error_if_no_space`: fail them at once.
    Error,
}

impl NoSpacePolicy {
    /// The kernel's keyword.
    pub const fn as_str(self) -> &'static str {
        match self {
            NoSpacePolicy::Queue => "queue_if_no_space",
            NoSpacePolicy::Error => "error_if_no_space",
        }
    }
}

/// A healthy thin-pool's status: `<transaction_id> <used_meta>/<total_meta>
/// <used_data>/<total_data> <held_root|-> <mode> <discard> <no_space>
/// <needs_check|-> [<metadata_low_watermark>]`.
///
/// Metadata counts are 4 KiB blocks; data counts are pool data blocks.
/// `used <= total` holds for both pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ThinPoolStatus {
    /// The pool's transaction id (set with `set_transaction_id`).
    pub transaction_id: u64,
    /// Metadata blocks in use.
    pub used_metadata_blocks: u64,
    /// Metadata blocks in all.
    pub total_metadata_blocks: u64,
    /// Data blocks in use.
    pub used_data_blocks: u64,
    /// Data blocks in all.
    pub total_data_blocks: u64,
    /// Root block of the reserved metadata snapshot, if one is held.
    pub held_metadata_root: Option<u64>,
    /// Operating mode.
    pub mode: PoolMode,
    /// Discard handling.
    pub discard: DiscardMode,
    /// Out-of-space policy.
    pub no_space: NoSpacePolicy,
    /// True if the metadata must be checked (`thin_check`) before reuse.
    pub needs_check: bool,
    /// Free metadata blocks below which the kernel raises an event; absent on
    /// older kernels.
    pub metadata_low_watermark: Option<u64>,
}

/// A `thin-pool` status line: healthy, or one of the whole-line failure forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolStatus {
    /// The pool is working; its counters.
    Active(ThinPoolStatus),
    /// `Fail`: the pool is in fail mode.
    Fail,
    /// `Error`: the kernel could not read the pool's metadata for the status.
    Error,
}

/// A thin device's usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ThinUsage {
    /// Sectors mapped (provisioned) in the thin device.
    pub mapped_sectors: u64,
    /// Last sector of the highest mapped block; `None` when nothing is mapped.
    pub highest_mapped_sector: Option<u64>,
}

/// A `thin` status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThinStatus {
    /// `<mapped_sectors> <highest_mapped_sector|->`.
    Active(ThinUsage),
    /// `-`: the thin device is not open in the pool.
    Unavailable,
    /// `Fail`: the pool is in fail mode.
    Fail,
    /// `Error`: the kernel could not read the thin device's metadata.
    Error,
}

const POOL: &str = "thin-pool status";
const THIN: &str = "thin status";

/// Iterates over the tokens of `s` separated by ASCII whitespace, without
/// allocating (a byte scanner; faster than `split_ascii_whitespace`).
#[derive(Clone)]
struct Tokens<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Iterator for Tokens<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        let b = self.s.as_bytes();
        let mut i = self.pos;
        while let Some(c) = b.get(i) {
            if !c.is_ascii_whitespace() {
                break;
            }
            i += 1;
        }
        let start = i;
        while let Some(c) = b.get(i) {
            if c.is_ascii_whitespace() {
                break;
            }
            i += 1;
        }
        self.pos = i;
        // Both ends sit next to ASCII bytes or at the ends, so on char boundaries.
        if start == i {
            None
        } else {
            self.s.get(start..i)
        }
    }
}

impl Tokens<'_> {
    /// Fast path for a number of at most 19 digits ending at whitespace or
    /// the end. On anything else the position is left unchanged and `None`
    /// returned, so the caller can take the token and report precisely.
    #[inline]
    fn fast_u64(&mut self, before_slash: bool) -> Option<u64> {
        let b = self.s.as_bytes();
        let mut i = self.pos;
        while let Some(c) = b.get(i) {
            if !c.is_ascii_whitespace() {
                break;
            }
            i += 1;
        }
        let start = i;
        let mut v: u64 = 0;
        while let Some(&c) = b.get(i) {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                // The used half of a ratio ends at `/`; a number ends at whitespace.
                if (before_slash && c == b'/') || (!before_slash && c.is_ascii_whitespace()) {
                    break;
                }
                return None;
            }
            // At most 19 digits (checked below), which cannot wrap.
            v = v.wrapping_mul(10).wrapping_add(u64::from(d));
            i += 1;
        }
        let n = i - start;
        if n == 0 || n > 19 || (before_slash && b.get(i) != Some(&b'/')) {
            return None;
        }
        self.pos = i;
        Some(v)
    }

    #[inline]
    fn fast_ratio_if(&mut self, fast: bool) -> Option<(u64, u64)> {
        if fast {
            self.fast_ratio()
        } else {
            None
        }
    }

    /// Fast path for `<used>/<total>` with `used <= total`; see [`Self::fast_u64`].
    #[inline]
    fn fast_ratio(&mut self) -> Option<(u64, u64)> {
        let save = self.pos;
        let r = (|| {
            let used = self.fast_u64(true)?;
            // fast_u64(true) stopped on a `/`.
            self.pos += 1;
            // No whitespace may follow the slash.
            if self
                .s
                .as_bytes()
                .get(self.pos)
                .is_none_or(u8::is_ascii_whitespace)
            {
                return None;
            }
            let total = self.fast_u64(false)?;
            (used <= total).then_some((used, total))
        })();
        if r.is_none() {
            self.pos = save;
        }
        r
    }
}

#[inline]
fn tokens(s: &str) -> Tokens<'_> {
    Tokens { s, pos: 0 }
}

#[inline]
fn need<'a>(it: &mut impl Iterator<Item = &'a str>, field: &'static str) -> Result<&'a str> {
    match it.next() {
        Some(t) => Ok(t),
        None => Err(missing(field)),
    }
}

#[cold]
fn missing(field: &'static str) -> TargetError {
    TargetError::Missing { field }
}

#[inline]
fn ratio(field: &'static str, tok: &str) -> Result<(u64, u64)> {
    let Some(slash) = tok.bytes().position(|b| b == b'/') else {
        return Err(not_a_ratio(field, tok));
    };
    // `/` is ASCII, so both sides are on char boundaries.
    let (Some(u), Some(t)) = (tok.get(..slash), tok.get(slash + 1..)) else {
        return Err(not_a_ratio(field, tok));
    };
    let used = parse_u64(field, u)?;
    let total = parse_u64(field, t)?;
    if used > total {
        return Err(TargetError::UsedExceedsTotal { field, used, total });
    }
    Ok((used, total))
}

#[cold]
fn not_a_ratio(field: &'static str, tok: &str) -> TargetError {
    TargetError::NotARatio {
        field,
        found: snippet(tok),
    }
}

#[cold]
fn unknown(field: &'static str, tok: &str, expected: &'static str) -> TargetError {
    TargetError::UnknownKeyword {
        field,
        found: snippet(tok),
        expected,
    }
}

fn finish<'a>(mut it: impl Iterator<Item = &'a str>, context: &'static str) -> Result<()> {
    match it.next() {
        None => Ok(()),
        Some(t) => Err(TargetError::UnexpectedArgument {
            context,
            found: snippet(t),
        }),
    }
}

impl ThinPoolStatus {
    /// Parses a healthy pool's status; `Fail` and `Error` are errors here (use
    /// [`PoolStatus::parse`] to accept them).
    pub fn parse(s: &str) -> Result<Self> {
        let mut it = tokens(s);
        let first = it.next().ok_or(TargetError::Empty { context: POOL })?;
        Self::parse_rest::<true>(first, it)
    }

    /// Parses the fields after the first token. With `FAST` off, it skips
    /// the byte-level fast paths (tests compare the two).
    fn parse_rest<const FAST: bool>(first: &str, mut it: Tokens<'_>) -> Result<Self> {
        let transaction_id = parse_u64("thin-pool status transaction id", first)?;
        const F_META: &str = "thin-pool status metadata usage";
        let (used_metadata_blocks, total_metadata_blocks) = match it.fast_ratio_if(FAST) {
            Some(r) => r,
            None => ratio(F_META, need(&mut it, F_META)?)?,
        };
        const F_DATA: &str = "thin-pool status data usage";
        let (used_data_blocks, total_data_blocks) = match it.fast_ratio_if(FAST) {
            Some(r) => r,
            None => ratio(F_DATA, need(&mut it, F_DATA)?)?,
        };
        let held = need(&mut it, "thin-pool status held metadata root")?;
        let held_metadata_root = if held == "-" {
            None
        } else {
            Some(parse_u64("thin-pool status held metadata root", held)?)
        };
        const F_MODE: &str = "thin-pool status mode";
        let mode = match need(&mut it, F_MODE)? {
            "rw" => PoolMode::ReadWrite,
            "ro" => PoolMode::ReadOnly,
            "out_of_data_space" => PoolMode::OutOfDataSpace,
            t => return Err(unknown(F_MODE, t, "rw, ro or out_of_data_space")),
        };
        const F_DISCARD: &str = "thin-pool status discard mode";
        let discard = match need(&mut it, F_DISCARD)? {
            "discard_passdown" => DiscardMode::Passdown,
            "no_discard_passdown" => DiscardMode::NoPassdown,
            "ignore_discard" => DiscardMode::Ignore,
            t => {
                return Err(unknown(
                    F_DISCARD,
                    t,
                    "discard_passdown, no_discard_passdown or ignore_discard",
                ))
            }
        };
        const F_NO_SPACE: &str = "thin-pool status no-space policy";
        let no_space = match need(&mut it, F_NO_SPACE)? {
            "queue_if_no_space" => NoSpacePolicy::Queue,
            "error_if_no_space" => NoSpacePolicy::Error,
            t => {
                return Err(unknown(
                    F_NO_SPACE,
                    t,
                    "queue_if_no_space or error_if_no_space",
                ))
            }
        };
        const F_CHECK: &str = "thin-pool status needs_check";
        let needs_check = match need(&mut it, F_CHECK)? {
            "needs_check" => true,
            "-" => false,
            t => return Err(unknown(F_CHECK, t, "needs_check or -")),
        };
        let metadata_low_watermark = it
            .next()
            .map(|t| parse_u64("thin-pool status metadata low watermark", t))
            .transpose()?;
        finish(it, POOL)?;
        Ok(ThinPoolStatus {
            transaction_id,
            used_metadata_blocks,
            total_metadata_blocks,
            used_data_blocks,
            total_data_blocks,
            held_metadata_root,
            mode,
            discard,
            no_space,
            needs_check,
            metadata_low_watermark,
        })
    }

    /// Free metadata blocks.
    pub fn free_metadata_blocks(&self) -> u64 {
        self.total_metadata_blocks
            .saturating_sub(self.used_metadata_blocks)
    }

    /// Free data blocks.
    pub fn free_data_blocks(&self) -> u64 {
        self.total_data_blocks.saturating_sub(self.used_data_blocks)
    }

    /// Metadata in use, in bytes (`None` on overflow).
    pub fn used_metadata_bytes(&self) -> Option<u64> {
        self.used_metadata_blocks.checked_mul(METADATA_BLOCK_BYTES)
    }

    /// Metadata space in all, in bytes (`None` on overflow).
    pub fn total_metadata_bytes(&self) -> Option<u64> {
        self.total_metadata_blocks.checked_mul(METADATA_BLOCK_BYTES)
    }

    /// Data in use, in bytes, for a pool of `block_size` (`None` on overflow).
    pub fn used_data_bytes(&self, block_size: BlockSize) -> Option<u64> {
        self.used_data_blocks.checked_mul(block_size.bytes())
    }

    /// Data space in all, in bytes, for a pool of `block_size` (`None` on overflow).
    pub fn total_data_bytes(&self, block_size: BlockSize) -> Option<u64> {
        self.total_data_blocks.checked_mul(block_size.bytes())
    }

    /// All four byte counts at once.
    pub fn usage_bytes(&self, block_size: BlockSize) -> PoolUsageBytes {
        PoolUsageBytes {
            used_metadata: self.used_metadata_bytes(),
            total_metadata: self.total_metadata_bytes(),
            used_data: self.used_data_bytes(block_size),
            total_data: self.total_data_bytes(block_size),
        }
    }
}

/// A pool's usage in bytes; a field is `None` if it overflowed `u64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolUsageBytes {
    /// Metadata in use.
    pub used_metadata: Option<u64>,
    /// Metadata space in all.
    pub total_metadata: Option<u64>,
    /// Data in use.
    pub used_data: Option<u64>,
    /// Data space in all.
    pub total_data: Option<u64>,
}

impl fmt::Display for ThinPoolStatus {
    /// Formats as the kernel does, without the trailing space.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{} {}/{} ",
            self.transaction_id,
            self.used_metadata_blocks,
            self.total_metadata_blocks,
            self.used_data_blocks,
            self.total_data_blocks
        )?;
        match self.held_metadata_root {
            Some(r) => write!(f, "{r} ")?,
            None => f.write_str("- ")?,
        }
        write!(
            f,
            "{} {} {} {}",
            self.mode.as_str(),
            self.discard.as_str(),
            self.no_space.as_str(),
            if self.needs_check { "needs_check" } else { "-" }
        )?;
        if let Some(w) = self.metadata_low_watermark {
            write!(f, " {w}")?;
        }
        Ok(())
    }
}

impl FromStr for ThinPoolStatus {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl PoolStatus {
    /// Parses a `thin-pool` status line, including `Fail` and `Error`.
    pub fn parse(s: &str) -> Result<Self> {
        let mut it = tokens(s);
        let first = it.next().ok_or(TargetError::Empty { context: POOL })?;
        match first {
            "Fail" => finish(it, POOL).map(|()| PoolStatus::Fail),
            "Error" => finish(it, POOL).map(|()| PoolStatus::Error),
            _ => ThinPoolStatus::parse_rest::<true>(first, it).map(PoolStatus::Active),
        }
    }

    /// The counters, if the pool is active.
    pub fn active(&self) -> Option<&ThinPoolStatus> {
        match self {
            PoolStatus::Active(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for PoolStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolStatus::Active(s) => s.fmt(f),
            PoolStatus::Fail => f.write_str("Fail"),
            PoolStatus::Error => f.write_str("Error"),
        }
    }
}

impl FromStr for PoolStatus {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl ThinStatus {
    /// Parses a `thin` status line.
    pub fn parse(s: &str) -> Result<Self> {
        let mut it = tokens(s);
        let first = it.next().ok_or(TargetError::Empty { context: THIN })?;
        let status = match first {
            "Fail" => ThinStatus::Fail,
            "Error" => ThinStatus::Error,
            "-" => ThinStatus::Unavailable,
            _ => {
                let mapped_sectors = parse_u64("thin status mapped sectors", first)?;
                let h = need(&mut it, "thin status highest mapped sector")?;
                let highest_mapped_sector = if h == "-" {
                    None
                } else {
                    Some(parse_u64("thin status highest mapped sector", h)?)
                };
                ThinStatus::Active(ThinUsage {
                    mapped_sectors,
                    highest_mapped_sector,
                })
            }
        };
        finish(it, THIN)?;
        Ok(status)
    }

    /// The usage, if the device is active.
    pub fn usage(&self) -> Option<&ThinUsage> {
        match self {
            ThinStatus::Active(u) => Some(u),
            _ => None,
        }
    }
}

impl ThinUsage {
    /// Bytes mapped (`None` on overflow).
    pub fn mapped_bytes(&self) -> Option<u64> {
        self.mapped_sectors.checked_mul(512)
    }
}

impl fmt::Display for ThinStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ThinStatus::Active(u) => match u.highest_mapped_sector {
                Some(h) => write!(f, "{} {h}", u.mapped_sectors),
                None => write!(f, "{} -", u.mapped_sectors),
            },
            ThinStatus::Unavailable => f.write_str("-"),
            ThinStatus::Fail => f.write_str("Fail"),
            ThinStatus::Error => f.write_str("Error"),
        }
    }
}

impl FromStr for ThinStatus {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_kernel_pool_status() {
        // A fresh pool on a 6.x kernel, with the kernel's trailing space.
        let s =
            PoolStatus::parse("0 10/4096 0/1600 - rw discard_passdown queue_if_no_space - 1024 ")
                .unwrap();
        let a = *s.active().unwrap();
        assert_eq!(
            a,
            ThinPoolStatus {
                transaction_id: 0,
                used_metadata_blocks: 10,
                total_metadata_blocks: 4096,
                used_data_blocks: 0,
                total_data_blocks: 1600,
                held_metadata_root: None,
                mode: PoolMode::ReadWrite,
                discard: DiscardMode::Passdown,
                no_space: NoSpacePolicy::Queue,
                needs_check: false,
                metadata_low_watermark: Some(1024),
            }
        );
        assert_eq!(a.free_data_blocks(), 1600);
        assert_eq!(a.used_metadata_bytes(), Some(40960));
        assert_eq!(a.total_metadata_bytes(), Some(16 << 20));
        let bs = BlockSize::new(128).unwrap();
        assert_eq!(a.total_data_bytes(bs), Some(1600 * 65536));
        assert_eq!(a.usage_bytes(bs).used_data, Some(0));

        let s: ThinPoolStatus =
            "7 100/200 5/10 42 out_of_data_space ignore_discard error_if_no_space needs_check "
                .parse()
                .unwrap();
        assert_eq!(s.held_metadata_root, Some(42));
        assert_eq!(s.mode, PoolMode::OutOfDataSpace);
        assert_eq!(s.discard, DiscardMode::Ignore);
        assert_eq!(s.no_space, NoSpacePolicy::Error);
        assert!(s.needs_check);
        // Older kernels have no low watermark.
        assert_eq!(s.metadata_low_watermark, None);
        let s: ThinPoolStatus = "1 1/2 3/4 - ro no_discard_passdown queue_if_no_space - 5"
            .parse()
            .unwrap();
        assert_eq!(
            (s.mode, s.discard),
            (PoolMode::ReadOnly, DiscardMode::NoPassdown)
        );

        assert_eq!(PoolStatus::parse("Fail "), Ok(PoolStatus::Fail));
        assert_eq!(PoolStatus::parse("Error"), Ok(PoolStatus::Error));
        assert_eq!(PoolStatus::Fail.to_string(), "Fail");
        assert!(ThinPoolStatus::parse("Fail").is_err());
    }

    #[test]
    fn pool_status_every_invalid_input_says_why() {
        let cases: &[(&str, &str)] = &[
            ("", "thin-pool status: input is empty"),
            (" \n", "empty"),
            (
                "x",
                "transaction id: expected a decimal integer, found \"x\"",
            ),
            ("0", "metadata usage is missing"),
            (
                "0 10",
                "metadata usage: expected <used>/<total>, found \"10\"",
            ),
            ("0 10/x", "metadata usage: expected a decimal integer"),
            (
                "0 11/10 0/1",
                "metadata usage: 11 used exceeds the total of 10",
            ),
            ("0 1/10 2/1", "data usage: 2 used exceeds the total of 1"),
            ("0 1/10 0/1", "held metadata root is missing"),
            (
                "0 1/10 0/1 x",
                "held metadata root: expected a decimal integer",
            ),
            (
                "0 1/10 0/1 - rx",
                "mode: unknown value \"rx\", expected rw, ro or out_of_data_space",
            ),
            ("0 1/10 0/1 - rw passdown", "discard mode: unknown value"),
            (
                "0 1/10 0/1 - rw ignore_discard queue",
                "no-space policy: unknown value",
            ),
            (
                "0 1/10 0/1 - rw ignore_discard queue_if_no_space",
                "needs_check is missing",
            ),
            (
                "0 1/10 0/1 - rw ignore_discard queue_if_no_space ok",
                "needs_check: unknown value",
            ),
            (
                "0 1/10 0/1 - rw ignore_discard queue_if_no_space - -",
                "metadata low watermark: expected a decimal",
            ),
            (
                "0 1/10 0/1 - rw ignore_discard queue_if_no_space - 1 2",
                "unexpected extra argument \"2\"",
            ),
            ("Fail now", "unexpected extra argument \"now\""),
            ("18446744073709551616 1/1 1/1", "does not fit in 64 bits"),
            ("0 1/1/1 1/1", "expected a decimal integer, found \"1/1\""),
            ("0 /1 1/1", "expected a decimal integer, found \"\""),
        ];
        for (input, want) in cases {
            let e = PoolStatus::parse(input).unwrap_err();
            assert!(
                e.to_string().contains(want),
                "{input:?}: got {e}, want {want:?}"
            );
        }
    }

    #[test]
    fn parses_thin_status() {
        assert_eq!(
            ThinStatus::parse("2048 4095"),
            Ok(ThinStatus::Active(ThinUsage {
                mapped_sectors: 2048,
                highest_mapped_sector: Some(4095)
            }))
        );
        let empty = ThinStatus::parse("0 -").unwrap();
        assert_eq!(empty.usage().unwrap().highest_mapped_sector, None);
        assert_eq!(empty.usage().unwrap().mapped_bytes(), Some(0));
        assert_eq!(ThinStatus::parse("- "), Ok(ThinStatus::Unavailable));
        assert_eq!(ThinStatus::parse("Fail"), Ok(ThinStatus::Fail));
        assert_eq!(ThinStatus::parse("Error "), Ok(ThinStatus::Error));
        for (input, want) in [
            ("", "thin status: input is empty"),
            ("12", "highest mapped sector is missing"),
            ("x 1", "mapped sectors: expected a decimal integer"),
            ("1 x", "highest mapped sector: expected a decimal integer"),
            ("1 2 3", "unexpected extra argument \"3\""),
            ("- 1", "unexpected extra argument"),
            (
                "fail",
                "mapped sectors: expected a decimal integer, found \"fail\"",
            ),
        ] {
            let e = ThinStatus::parse(input).unwrap_err();
            assert!(e.to_string().contains(want), "{input:?}: {e}");
        }
    }

    pub(crate) fn pool_status_strategy() -> impl Strategy<Value = ThinPoolStatus> {
        (
            any::<u64>(),
            (any::<u64>(), any::<u64>()),
            (any::<u64>(), any::<u64>()),
            proptest::option::of(any::<u64>()),
            prop_oneof![
                Just(PoolMode::ReadWrite),
                Just(PoolMode::ReadOnly),
                Just(PoolMode::OutOfDataSpace)
            ],
            prop_oneof![
                Just(DiscardMode::Passdown),
                Just(DiscardMode::NoPassdown),
                Just(DiscardMode::Ignore)
            ],
            prop_oneof![Just(NoSpacePolicy::Queue), Just(NoSpacePolicy::Error)],
            any::<bool>(),
            proptest::option::of(any::<u64>()),
        )
            .prop_map(
                |(tid, (m1, m2), (d1, d2), held, mode, discard, no_space, nc, lwm)| {
                    ThinPoolStatus {
                        transaction_id: tid,
                        used_metadata_blocks: m1.min(m2),
                        total_metadata_blocks: m1.max(m2),
                        used_data_blocks: d1.min(d2),
                        total_data_blocks: d1.max(d2),
                        held_metadata_root: held,
                        mode,
                        discard,
                        no_space,
                        needs_check: nc,
                        metadata_low_watermark: lwm,
                    }
                },
            )
    }

    pub(crate) fn thin_status_strategy() -> impl Strategy<Value = ThinStatus> {
        prop_oneof![
            (any::<u64>(), proptest::option::of(any::<u64>())).prop_map(|(m, h)| {
                ThinStatus::Active(ThinUsage {
                    mapped_sectors: m,
                    highest_mapped_sector: h,
                })
            }),
            Just(ThinStatus::Unavailable),
            Just(ThinStatus::Fail),
            Just(ThinStatus::Error),
        ]
    }

    fn parse_with<const FAST: bool>(s: &str) -> Result<ThinPoolStatus> {
        let mut it = tokens(s);
        let first = it.next().ok_or(TargetError::Empty { context: POOL })?;
        ThinPoolStatus::parse_rest::<FAST>(first, it)
    }

    #[test]
    fn fast_path_edge_cases_match_slow_path() {
        for s in [
            "0 1/2 3/4 - rw discard_passdown queue_if_no_space -",
            "0 1/2 3/4\0 - rw discard_passdown queue_if_no_space -",
            "0 1 /2 3/4 - rw discard_passdown queue_if_no_space -",
            "0 1/ 2 3/4 - rw discard_passdown queue_if_no_space -",
            "0 1//2 3/4 - rw discard_passdown queue_if_no_space -",
            "0 /2 3/4 - rw discard_passdown queue_if_no_space -",
            "0 2/ 3/4 - rw discard_passdown queue_if_no_space -",
            "0 3/2 3/4 - rw discard_passdown queue_if_no_space -",
            "0 1/2/3 3/4 - rw discard_passdown queue_if_no_space -",
            "0 12345678901234567890/99999999999999999999 3/4 - rw discard_passdown queue_if_no_space -",
            "0 1/18446744073709551615 3/4 - rw discard_passdown queue_if_no_space -",
            "0 1/18446744073709551616 3/4 - rw discard_passdown queue_if_no_space -",
            "0 1/2\t3/4\n- rw discard_passdown queue_if_no_space -",
            "0 1/2é 3/4 - rw discard_passdown queue_if_no_space -",
            "0 1/2",
            "0 1/2 ",
            "0 1",
        ] {
            assert_eq!(parse_with::<true>(s), parse_with::<false>(s), "{s:?}");
        }
    }

    proptest! {
        #[test]
        fn fast_path_matches_slow_path(
            parts in proptest::collection::vec(
                prop_oneof![
                    "[0-9]{1,21}/[0-9]{1,21}",
                    "[0-9/ ]{0,8}",
                    "[0-9]{1,3}",
                    Just("-".to_string()),
                    Just("rw".to_string()),
                    Just("discard_passdown".to_string()),
                    Just("queue_if_no_space".to_string()),
                    "[\\PC]{0,3}",
                ],
                1..12,
            ),
            seps in proptest::collection::vec(prop_oneof![Just(" "), Just("  "), Just("\t"), Just(""), Just("/")], 12),
        ) {
            let mut s = String::new();
            for (p, sep) in parts.iter().zip(seps.iter()) {
                s.push_str(p);
                s.push_str(sep);
            }
            prop_assert_eq!(parse_with::<true>(&s), parse_with::<false>(&s), "{:?}", s);
        }

        #[test]
        fn pool_round_trip(s in pool_status_strategy()) {
            prop_assert_eq!(ThinPoolStatus::parse(&s.to_string()), Ok(s));
            prop_assert_eq!(PoolStatus::parse(&format!("{s} ")), Ok(PoolStatus::Active(s)));
            prop_assert!(s.used_metadata_blocks <= s.total_metadata_blocks);
            let bs = BlockSize::new(2_097_152).unwrap();
            let u = s.usage_bytes(bs);
            if let (Some(a), Some(b)) = (u.used_data, u.total_data) {
                prop_assert!(a <= b);
            }
        }

        #[test]
        fn thin_round_trip(s in thin_status_strategy()) {
            prop_assert_eq!(ThinStatus::parse(&s.to_string()), Ok(s));
            prop_assert_eq!(ThinStatus::parse(&format!("{s} ")), Ok(s));
        }

        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = PoolStatus::parse(&s);
            let _ = ThinStatus::parse(&s);
        }
    }
}
