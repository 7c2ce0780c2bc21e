//! What [`DeviceSet::usage`](super::DeviceSet::usage) and
//! [`DeviceSet::usage_all`](super::DeviceSet::usage_all) report: space per
//! device, read from the pool's metadata.

use serde::Serialize;

use crate::thinmeta::ThinUsage;

/// Space one thin device of the set uses: its id in the set and its
/// figures from the pool's metadata. As JSON, the id followed by the
/// figures' fields (`thin_id`, `mapped_bytes`, `exclusive_bytes`,
/// `shared_bytes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceUsage {
    /// The caller's id; `base` for the set's base device, `#<thin id>` for
    /// a thin device of the pool that no record of the set names.
    pub id: String,
    /// Its thin id and the space it maps, exclusively and shared.
    #[serde(flatten)]
    pub space: ThinUsage,
}

/// Space every device of the set uses, and the pool's totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetUsage {
    /// The base device (all zero before it exists).
    pub base: DeviceUsage,
    /// The set's devices, by id (the base and devices being removed left out).
    pub devices: Vec<DeviceUsage>,
    /// Thin devices in the pool that no record of the set names (devices
    /// being removed, or made by someone else in an adopted pool).
    pub untracked: Vec<DeviceUsage>,
    /// Data block size in bytes.
    pub data_block_size: u64,
    /// Size of the pool's data device in bytes.
    pub data_total_bytes: u64,
    /// Data bytes the pool has allocated (its live space map).
    pub allocated_bytes: u64,
    /// Sum of every thin device's mapped bytes (a shared block counts once
    /// per mapping, so this can exceed the allocated bytes).
    pub mapped_bytes: u64,
    /// Sum of every thin device's exclusive bytes.
    pub exclusive_bytes: u64,
    /// Sum of every thin device's shared bytes.
    pub shared_bytes: u64,
    /// Allocated data bytes no device maps: held by a device being deleted,
    /// leaked, or allocated after the metadata snapshot was taken.
    pub unmapped_allocated_bytes: u64,
    /// Whether the figures come from a metadata snapshot (false: a
    /// read-only pool, read live).
    pub from_snapshot: bool,
    /// Transaction id of the metadata read.
    pub transaction_id: u64,
}
