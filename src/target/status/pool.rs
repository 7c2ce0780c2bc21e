//! The `thin-pool` status line.

use std::fmt;

use super::super::args::{parse_ratio, parse_u64, write_opt, Args};
use super::super::error::{Result, TargetError};
use super::super::pool::BlockSize;

/// Bytes in a thin-pool metadata block.
pub const METADATA_BLOCK_BYTES: u64 = 4096;

/// Declares a status keyword enum from one table: the enum, `as_str` (the
/// kernel's keyword) and the private `parse` back from it.
macro_rules! keyword_enum {
    (
        $(#[$doc:meta])*
        pub enum $name:ident (expected $expected:literal) {
            $($(#[$vdoc:meta])* $variant:ident = $kw:literal,)*
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// The kernel's keyword.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $kw,)*
                }
            }

            /// The value whose keyword is `tok`, read as `field`.
            fn parse(field: &'static str, tok: &str) -> Result<Self> {
                match tok {
                    $($kw => Ok($name::$variant),)*
                    _ => Err(TargetError::unknown(field, tok, $expected)),
                }
            }
        }
    };
}

keyword_enum! {
    /// The pool's operating mode.
    pub enum PoolMode (expected "rw, ro or out_of_data_space") {
        /// `rw`: normal operation.
        ReadWrite = "rw",
        /// `ro`: read-only (requested, after a metadata error, or out of metadata space).
        ReadOnly = "ro",
        /// `out_of_data_space`: writes to unprovisioned blocks queue or fail.
        OutOfDataSpace = "out_of_data_space",
    }
}

keyword_enum! {
    /// How the pool handles discards.
    pub enum DiscardMode (expected "discard_passdown, no_discard_passdown or ignore_discard") {
        /// `discard_passdown`: processed and passed to the data device.
        Passdown = "discard_passdown",
        /// `no_discard_passdown`: processed, not passed down.
        NoPassdown = "no_discard_passdown",
        /// `ignore_discard`: ignored.
        Ignore = "ignore_discard",
    }
}

keyword_enum! {
    /// What happens to writes when the pool is out of data space.
    pub enum NoSpacePolicy (expected "queue_if_no_space or error_if_no_space") {
        /// `queue_if_no_space`: queue them (until a timeout).
        Queue = "queue_if_no_space",
        /// `error_if_no_space`: fail them at once.
        Error = "error_if_no_space",
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

pub(super) const POOL: &str = "thin-pool status";

/// The next `<used>/<total>` token: through the byte-level fast path unless
/// `FAST` is off (the tests compare both), and [`parse_ratio`] where the fast
/// path declines, which also reports the error precisely.
#[inline]
fn ratio<const FAST: bool>(it: &mut Args<'_>, field: &'static str) -> Result<(u64, u64)> {
    if FAST {
        if let Some(r) = it.fast_ratio() {
            return Ok(r);
        }
    }
    parse_ratio(field, it.required(field)?)
}

impl ThinPoolStatus {
    /// Parses a healthy pool's status; `Fail` and `Error` are errors here (use
    /// [`PoolStatus::parse`] to accept them).
    pub fn parse(s: &str) -> Result<Self> {
        let mut it = Args::new(s, POOL);
        let first = it.first()?;
        Self::parse_rest::<true>(first, it)
    }

    /// Parses the fields after the first token. With `FAST` off, it skips
    /// the byte-level fast paths (tests compare the two).
    pub(super) fn parse_rest<const FAST: bool>(first: &str, mut it: Args<'_>) -> Result<Self> {
        let transaction_id = parse_u64("thin-pool status transaction id", first)?;
        const F_META: &str = "thin-pool status metadata usage";
        let (used_metadata_blocks, total_metadata_blocks) = ratio::<FAST>(&mut it, F_META)?;
        const F_DATA: &str = "thin-pool status data usage";
        let (used_data_blocks, total_data_blocks) = ratio::<FAST>(&mut it, F_DATA)?;
        let held = it.required("thin-pool status held metadata root")?;
        let held_metadata_root = if held == "-" {
            None
        } else {
            Some(parse_u64("thin-pool status held metadata root", held)?)
        };
        const F_MODE: &str = "thin-pool status mode";
        let mode = PoolMode::parse(F_MODE, it.required(F_MODE)?)?;
        const F_DISCARD: &str = "thin-pool status discard mode";
        let discard = DiscardMode::parse(F_DISCARD, it.required(F_DISCARD)?)?;
        const F_NO_SPACE: &str = "thin-pool status no-space policy";
        let no_space = NoSpacePolicy::parse(F_NO_SPACE, it.required(F_NO_SPACE)?)?;
        const F_CHECK: &str = "thin-pool status needs_check";
        let needs_check = match it.required(F_CHECK)? {
            "needs_check" => true,
            "-" => false,
            t => return Err(TargetError::unknown(F_CHECK, t, "needs_check or -")),
        };
        let metadata_low_watermark = it
            .next_token()
            .map(|t| parse_u64("thin-pool status metadata low watermark", t))
            .transpose()?;
        it.finish()?;
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
        write_opt(f, self.metadata_low_watermark)
    }
}

impl PoolStatus {
    /// Parses a `thin-pool` status line, including `Fail` and `Error`.
    pub fn parse(s: &str) -> Result<Self> {
        let mut it = Args::new(s, POOL);
        let first = it.first()?;
        match first {
            "Fail" => it.finish().map(|()| PoolStatus::Fail),
            "Error" => it.finish().map(|()| PoolStatus::Error),
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
