//! A read-only reader of the dm thin-pool on-disk metadata (issue #14).
//!
//! The metadata device is a sequence of 4 KiB blocks. Block 0 is the
//! superblock; it holds the roots of the device-details btree (thin id ->
//! mapped blocks, transaction, times), of the two-level data-mapping btree
//! (thin id -> subtree root; virtual block -> data block and time), and of
//! the data space map (per data block reference counts, two bits each in
//! bitmap blocks found through an index btree). When a metadata snapshot is
//! held, `held_root` points at a copy of the superblock whose device and
//! mapping roots describe the pool as it was when the snapshot was taken.
//!
//! Every block read is checked: crc32c with the block type's salt, the block
//! number the block names itself with, the metadata device's bounds, node
//! layouts and entry counts, key order and ranges. Damaged metadata gives an
//! [`Error`] naming the block; walks refuse cycles, revisits and depths past
//! a fixed bound, so nothing panics or loops whatever the bytes; and what is
//! allocated for a count the metadata claims is first bounded by the device's
//! real size ([`ReadAt::size`]), so a small device cannot ask for gigabytes.

mod block;
mod btree;
mod crc;
#[cfg(any(test, fuzzing, feature = "internals"))]
pub(crate) mod seal;
mod usage;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_corrupt;
#[cfg(test)]
mod tests_gen;

use std::collections::BTreeMap;

pub use block::ReadAt;
use block::{le32, le64, Blocks, Superblock};
use usage::Mappings;
#[cfg(test)]
use {
    block::BLOCK_SIZE,
    seal::{seal_block, seal_block_as, seal_blocks},
};

/// Result of reading thin metadata.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which superblock's trees to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Source {
    /// The live superblock (block 0). On an active pool the kernel may be
    /// rewriting the trees meanwhile; use a metadata snapshot there.
    #[default]
    Live,
    /// The held metadata snapshot; [`Error::NoSnapshot`] if none is held.
    Snapshot,
    /// The held metadata snapshot when there is one, the live superblock
    /// otherwise.
    SnapshotIfHeld,
}

/// Why metadata could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A block failed a check.
    #[error("thin metadata block {block}: {problem}")]
    Corrupt {
        /// The block's number on the metadata device.
        block: u64,
        /// What was wrong with it.
        problem: Problem,
    },
    /// Reading a block failed.
    #[error("thin metadata block {block}: read failed: {source}")]
    Read {
        /// The block's number on the metadata device.
        block: u64,
        /// The error the read returned.
        #[source]
        source: std::io::Error,
    },
    /// [`Source::Snapshot`] was asked for but no metadata snapshot is held.
    #[error("thin metadata: no metadata snapshot is held")]
    NoSnapshot,
    /// The metadata device's size could not be had.
    #[error("thin metadata: cannot size the metadata device: {source}")]
    Size {
        /// The error sizing it returned.
        #[source]
        source: std::io::Error,
    },
    /// The data device is too large to count in memory.
    #[error("thin metadata: counting needs {bytes} bytes of memory, which could not be had")]
    TooLarge {
        /// The memory the count would have needed.
        bytes: u64,
    },
}

/// What was wrong with a block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The block lies past the end of the metadata device (a truncated
    /// device or file).
    #[error("past the end of the metadata device (truncated)")]
    PastEnd,
    /// A block number outside the device the superblock describes.
    #[error("outside the metadata device's {nr_blocks} blocks")]
    OutsideDevice {
        /// The device's size in blocks.
        nr_blocks: u64,
    },
    /// The block's CRC32C does not match its contents.
    #[error("checksum {found:#010x}, expected {expected:#010x}")]
    Checksum {
        /// The checksum the block carries.
        found: u32,
        /// The checksum of its contents.
        expected: u32,
    },
    /// The block's header names another block number than where it was read.
    #[error("block names itself block {0}")]
    WrongBlocknr(u64),
    /// The superblock's magic number is not the thin pool's.
    #[error("bad superblock magic {0}")]
    Magic(u64),
    /// A metadata format version this reader does not know.
    #[error("unsupported metadata version {0}")]
    Version(u32),
    /// A metadata block size other than 8 sectors (4 KiB).
    #[error("metadata block size of {0} sectors (only 8, 4 KiB, is supported)")]
    MetadataBlockSize(u32),
    /// The superblock gives a data block size of 0.
    #[error("data block size of 0 sectors")]
    DataBlockSize,
    /// A btree node whose flags say neither internal node nor leaf.
    #[error("btree node flags {0:#x} are neither internal nor leaf")]
    NodeFlags(u32),
    /// A btree node whose value size is not that of the tree's values.
    #[error("btree node value size {found}, expected {expected}")]
    ValueSize {
        /// The node's value size.
        found: u32,
        /// The size of the tree's values.
        expected: usize,
    },
    /// A btree node whose entries, at their size, would not fit in a block.
    #[error(
        "btree node max_entries {max_entries} with value size {value_size} overflows the block"
    )]
    NodeLayout {
        /// The node's room for entries.
        max_entries: u32,
        /// The node's value size.
        value_size: u32,
    },
    /// A btree node holding more entries than it has room for.
    #[error("btree node holds {nr_entries} entries but has room for {max_entries}")]
    TooManyEntries {
        /// Entries the node says it holds.
        nr_entries: u32,
        /// Entries it has room for.
        max_entries: u32,
    },
    /// A btree node whose keys are not in ascending order.
    #[error("btree node keys out of order")]
    KeyOrder,
    /// A key outside the range the parent node gives the child.
    #[error("btree key {0} lies outside its parent's range for this node")]
    KeyRange(u64),
    /// A btree node with no entries that is not the root.
    #[error("empty btree node below a root")]
    EmptyNode,
    /// Leaves of one tree at different depths.
    #[error("btree leaves at different depths")]
    UnevenDepth,
    /// A tree deeper than any valid one can be.
    #[error("btree deeper than the bound (damaged or cyclic)")]
    TooDeep,
    /// A node reached again from inside its own subtree.
    #[error("btree node reached again from inside its own subtree (cycle)")]
    Cycle,
    /// A node reached twice in one tree.
    #[error("btree node reached twice in one tree")]
    Revisited,
    /// A mapping to a data block past the end of the data device.
    #[error("maps data block {data_block}, past the data device's {nr_data_blocks} blocks")]
    DataBlockOutOfRange {
        /// The data block mapped.
        data_block: u64,
        /// The data device's size in blocks.
        nr_data_blocks: u64,
    },
    /// A thin id above the kernel's 24-bit limit.
    #[error("thin id {0} out of range")]
    ThinId(u64),
    /// A thin device with details but no mapping tree.
    #[error("thin {0} is in the device-details tree but not in the mapping tree")]
    MissingMappings(u32),
    /// A thin device with a mapping tree but no details.
    #[error("thin {0} is in the mapping tree but not in the device-details tree")]
    MissingDetails(u32),
    /// The data space map's index entries are not numbered in sequence.
    #[error("data space map index key {0} out of sequence")]
    SpaceMapIndex(u64),
    /// A data space map whose bitmap count does not fit its block count.
    #[error("data space map of {nr_blocks} blocks has {bitmaps} bitmap blocks")]
    SpaceMapSize {
        /// Blocks the space map covers.
        nr_blocks: u64,
        /// Bitmap blocks in its index.
        bitmaps: u64,
    },
    /// A data space map claiming more blocks than the metadata device could
    /// count (sizing counters by it would ask for memory the device never
    /// described).
    #[error(
        "data space map nr_blocks {nr_blocks} is more data blocks than the metadata device's {device_blocks} blocks can count (at most {max})"
    )]
    DataBlocksPastMetadata {
        /// Data blocks the space map claims.
        nr_blocks: u64,
        /// Blocks of the metadata device.
        device_blocks: u64,
        /// The most data blocks that many metadata blocks can count.
        max: u64,
    },
}

/// Largest thin id the kernel accepts (24 bits).
const MAX_THIN_ID: u64 = (1 << 24) - 1;

/// One device's entry in the device-details tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceDetails {
    /// The device's thin id in the pool.
    pub thin_id: u32,
    /// Mapped blocks as the kernel counted them.
    pub mapped_blocks: u64,
    /// The pool's transaction id when the device was last changed.
    pub transaction_id: u64,
    /// The pool's time counter when the device was created.
    pub creation_time: u32,
    /// The pool's time counter when the device was last snapshotted.
    pub snapshotted_time: u32,
}

/// Space use of one thin device of the pool, by its thin id.
///
/// A data block is *exclusive* to a device when no other mapping in the
/// pool (of this device or any other) refers to it: deleting the device
/// frees its exclusive bytes. *Shared* bytes are the rest of its mapped
/// bytes (blocks it shares with its parent, its snapshots or siblings).
/// As JSON (in a set's [`DeviceUsage`](crate::deviceset::DeviceUsage)):
/// the thin id and the bytes; the block counts are left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ThinUsage {
    /// Its thin id in the pool.
    pub thin_id: u32,
    /// Data blocks the device maps.
    #[serde(skip)]
    pub mapped_blocks: u64,
    /// Mapped blocks that no other mapping (of any device) refers to.
    #[serde(skip)]
    pub exclusive_blocks: u64,
    /// Bytes it maps (shared or not).
    pub mapped_bytes: u64,
    /// Mapped bytes no other mapping refers to.
    pub exclusive_bytes: u64,
    /// `mapped_bytes - exclusive_bytes`.
    pub shared_bytes: u64,
}

/// Space use of the whole pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolUsage {
    /// Bytes per data block.
    pub data_block_bytes: u64,
    /// Blocks in the data device.
    pub data_blocks: u64,
    /// Data blocks allocated in the (live) data space map.
    pub allocated_blocks: u64,
    /// Allocated data blocks that no device maps (e.g. still held by a
    /// deleted device, or allocated after the snapshot that was read).
    pub unmapped_allocated_blocks: u64,
    /// Per device, by thin id.
    pub devices: Vec<ThinUsage>,
}

impl PoolUsage {
    /// Sum of the devices' mapped bytes (shared blocks count once per mapping).
    pub fn mapped_bytes(&self) -> u64 {
        self.devices.iter().map(|d| d.mapped_bytes).sum()
    }

    /// Sum of the devices' exclusive bytes.
    pub fn exclusive_bytes(&self) -> u64 {
        self.devices.iter().map(|d| d.exclusive_bytes).sum()
    }

    /// Sum of the devices' shared bytes.
    pub fn shared_bytes(&self) -> u64 {
        self.devices.iter().map(|d| d.shared_bytes).sum()
    }

    /// Bytes of allocated data blocks that no device maps.
    pub fn unmapped_allocated_bytes(&self) -> u64 {
        self.unmapped_allocated_blocks
            .saturating_mul(self.data_block_bytes)
    }
}

/// An opened metadata device: the chosen superblock, checked, and its
/// device-details tree, read.
///
/// ```no_run
/// use dmthin::thinmeta::{Metadata, Source};
///
/// let meta = std::fs::File::open("/dev/vg/pool_tmeta")?;
/// let md = Metadata::open(meta, Source::SnapshotIfHeld)?;
/// for d in md.usage()?.devices {
///     println!("{}: {} bytes, {} exclusive", d.thin_id, d.mapped_bytes, d.exclusive_bytes);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Metadata<R> {
    blocks: Blocks<R>,
    live: Superblock,
    roots: Superblock,
    from_snapshot: bool,
    devices: Vec<DeviceDetails>,
}

impl<R: ReadAt> Metadata<R> {
    /// Reads the superblock (and, per `source`, the held snapshot's copy)
    /// and the device-details tree.
    pub fn open(reader: R, source: Source) -> Result<Self> {
        let mut blocks = Blocks::new(reader);
        let live = Superblock::read(&blocks, 0)?;
        blocks.nr_blocks = live.metadata_nr_blocks;
        let held = live.held_root != 0;
        let (roots, from_snapshot) = match (source, held) {
            (Source::Snapshot, false) => return Err(Error::NoSnapshot),
            (Source::Snapshot | Source::SnapshotIfHeld, true) => {
                (Superblock::read(&blocks, live.held_root)?, true)
            }
            (Source::Live | Source::SnapshotIfHeld, _) => (live, false),
        };
        let mut devices = Vec::new();
        btree::walk(&blocks, roots.device_details_root, 24, &mut |n, key, v| {
            devices.push(DeviceDetails {
                thin_id: thin_id(n.block, key)?,
                mapped_blocks: le64(v, 0),
                transaction_id: le64(v, 8),
                creation_time: le32(v, 16),
                snapshotted_time: le32(v, 20),
            });
            Ok(())
        })?;
        Ok(Metadata {
            blocks,
            live,
            roots,
            from_snapshot,
            devices,
        })
    }

    /// Whether the trees read are a held metadata snapshot's.
    pub fn from_snapshot(&self) -> bool {
        self.from_snapshot
    }

    /// Transaction id of the superblock read.
    pub fn transaction_id(&self) -> u64 {
        self.roots.transaction_id
    }

    /// Bytes per data block.
    pub fn data_block_bytes(&self) -> u64 {
        u64::from(self.live.data_block_sectors) * 512
    }

    /// Thin ids present, ascending.
    pub fn thin_ids(&self) -> Vec<u32> {
        self.devices.iter().map(|d| d.thin_id).collect()
    }

    /// The device-details entries, by thin id.
    pub fn devices(&self) -> &[DeviceDetails] {
        &self.devices
    }

    /// Walks every device's mappings and the data space map: mapped,
    /// exclusive and shared space per device, and the pool's allocated but
    /// unmapped blocks.
    pub fn usage(&self) -> Result<PoolUsage> {
        let sm = self.live.data_sm;
        // The index bounds the data device size by the metadata present,
        // before anything is allocated by that size.
        let bitmaps = usage::bitmap_blocks(&self.blocks, sm)?;
        let top_root = self.roots.data_mapping_root;
        let mut tops = BTreeMap::new();
        btree::walk(&self.blocks, top_root, 8, &mut |n, key, v| {
            tops.insert(thin_id(n.block, key)?, le64(v, 0));
            Ok(())
        })?;
        let missing = |problem| Error::Corrupt {
            block: top_root,
            problem,
        };
        if let Some(&id) = tops.keys().find(|&&id| {
            self.devices
                .binary_search_by_key(&id, |d| d.thin_id)
                .is_err()
        }) {
            return Err(missing(Problem::MissingDetails(id)));
        }
        let mut mappings = Mappings::new(&self.blocks, sm.nr_blocks);
        let mut roots = Vec::with_capacity(self.devices.len());
        for d in &self.devices {
            let root = tops
                .get(&d.thin_id)
                .ok_or(missing(Problem::MissingMappings(d.thin_id)))?;
            roots.push(mappings.add_root(*root)?);
        }
        let refs = mappings.count(&roots)?;
        let counts = usage::count_allocated(&self.blocks, &bitmaps, sm.nr_blocks, &refs)?;
        let bytes = self.data_block_bytes();
        let devices = self
            .devices
            .iter()
            .zip(&roots)
            .map(|(d, &r)| {
                let (mapped, exclusive) = mappings.totals(r);
                ThinUsage {
                    thin_id: d.thin_id,
                    mapped_blocks: mapped,
                    exclusive_blocks: exclusive,
                    mapped_bytes: mapped.saturating_mul(bytes),
                    exclusive_bytes: exclusive.saturating_mul(bytes),
                    shared_bytes: mapped.saturating_sub(exclusive).saturating_mul(bytes),
                }
            })
            .collect();
        Ok(PoolUsage {
            data_block_bytes: bytes,
            data_blocks: sm.nr_blocks,
            allocated_blocks: counts.allocated,
            unmapped_allocated_blocks: counts.unmapped,
            devices,
        })
    }
}

/// A btree key as a thin id, checked against the kernel's 24-bit limit.
fn thin_id(block: u64, key: u64) -> Result<u32> {
    if key > MAX_THIN_ID {
        return Err(Error::Corrupt {
            block,
            problem: Problem::ThinId(key),
        });
    }
    Ok(key as u32)
}
