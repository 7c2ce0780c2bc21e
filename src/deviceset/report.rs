//! What a set reports: [`DeviceSummary`], [`Presence`], [`SetStatus`], [`RemoveOutcome`], [`TrimReport`].

use serde::Serialize;
use std::path::PathBuf;

/// One device of the set, as [`DeviceSet::list`](super::DeviceSet::list) reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceSummary {
    /// The caller's id.
    pub id: String,
    /// The device it was snapshotted from (`None`: the base).
    pub parent: Option<String>,
    /// Its thin id in the pool.
    pub thin_id: u32,
    /// Its size in bytes.
    pub size: u64,
    /// Whether the caller marked it initialized.
    pub initialized: bool,
    /// Whether it is active (has a device-mapper device).
    pub active: bool,
    /// Where this set has it mounted.
    pub mount_points: Vec<PathBuf>,
    /// Bytes the pool has provisioned for it (only while active).
    pub mapped_bytes: Option<u64>,
}

/// Whether a device exists, as [`DeviceSet::presence`](super::DeviceSet::presence)
/// can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// It exists and can be used.
    Present,
    /// It does not exist (or its removal has begun and is certain).
    Absent,
    /// An add or a remove of it was interrupted with its outcome unknown
    /// (the pool could not confirm its commit, or the set is open degraded
    /// with the journal not yet settled). It is neither listed nor usable
    /// until the pool is writable again and the set settles it; a caller
    /// must keep whatever refers to it meanwhile.
    Uncertain,
}

/// Pool usage as [`DeviceSet::status`](super::DeviceSet::status) reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetStatus {
    /// The pool's device-mapper name.
    pub pool_name: String,
    /// Data file or device.
    pub data_source: Option<PathBuf>,
    /// Metadata file or device.
    pub metadata_source: Option<PathBuf>,
    /// Data block size in bytes.
    pub data_block_size: u64,
    /// Data space used, bytes.
    pub data_used: u64,
    /// Bytes the host has allocated to the data file (`st_blocks` × 512): a
    /// sparse file above `data_used` holds blocks the pool freed but never
    /// discarded. `None` unless the pool is on loop files.
    pub data_allocated: Option<u64>,
    /// Data space total, bytes.
    pub data_total: u64,
    /// Metadata space used, bytes.
    pub metadata_used: u64,
    /// Metadata space total, bytes.
    pub metadata_total: u64,
    /// Pool mode: `rw`, `ro`, `out_of_data_space`, `out_of_metadata_space`
    /// (the kernel's `ro` with every metadata block used) or `fail`.
    pub mode: String,
    /// Whether the pool wants `thin_check`.
    pub needs_check: bool,
    /// The pool's transaction id.
    pub transaction_id: u64,
    /// Number of devices in the set (the base not counted).
    pub devices: usize,
    /// Base filesystem.
    pub filesystem: String,
    /// Base device size in bytes.
    pub base_size: u64,
    /// The base device's thin id in the pool.
    pub base_thin_id: u32,
}

/// What [`DeviceSet::remove_device_deferred`](super::DeviceSet::remove_device_deferred) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveOutcome {
    /// The device is gone from the pool.
    Removed,
    /// The device is still held open; it goes once the holder closes it.
    Deferred,
}

/// One mount [`DeviceSet::trim`](super::DeviceSet::trim) trimmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrimmedMount {
    /// The device.
    pub id: String,
    /// Where it is mounted.
    pub path: PathBuf,
    /// Bytes the filesystem reports it discarded (`None` when it failed).
    pub trimmed: Option<u64>,
    /// Why the trim failed, if it did.
    pub error: Option<String>,
}

/// What [`DeviceSet::trim`](super::DeviceSet::trim) did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrimReport {
    /// Every mount of the set's devices, trimmed or not.
    pub mounts: Vec<TrimmedMount>,
    /// Bytes the data file's allocation shrank by (`None` unless the pool
    /// is on loop files).
    pub host_reclaimed: Option<u64>,
    /// The data file's allocated bytes afterwards.
    pub data_allocated: Option<u64>,
}

/// Which backing device of the pool a [`Growth`] grew.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GrowthTarget {
    /// The data file.
    Data,
    /// The metadata file.
    Metadata,
}

/// One automatic growth of a loop-file pool, as the set's autoextend log
/// (`metadata/autoextend.json`) records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Growth {
    /// What was grown.
    pub target: GrowthTarget,
    /// Its size before, in bytes.
    pub from: u64,
    /// Its size after, in bytes.
    pub to: u64,
    /// When it started (seconds since the Unix epoch).
    pub at: u64,
    /// How long the growth took (file, loop capacity, table reload), in
    /// microseconds; 0 for one finished by recovery after a crash.
    pub micros: u64,
}
