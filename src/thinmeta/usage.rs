//! Usage counting: walks every device's mapping subtree once per distinct
//! node (snapshots share nodes), counts references to each data block in a
//! dense array of saturating 2-bit counters sized by the data device (a
//! quarter byte per data block: 64 MiB for 16 TiB of 64 KiB blocks), then
//! sums mapped and
//! exclusive blocks per node bottom-up; the data space map's bitmaps give the
//! allocated blocks that no device maps.

use std::collections::HashMap;
use std::ops::Range;

use super::block::{le64, Blocks, ReadAt, SmRoot, BITMAP_XOR};
use super::btree::{self, KeyRange, Node, MAX_DEPTH};
use super::{Error, Problem, Result};

/// Data blocks one bitmap block covers: 2 bits each after a 16-byte header.
pub(crate) const ENTRIES_PER_BITMAP: u64 = (4096 - 16) * 4;
/// A mapping value: data block in the high 40 bits, time in the low 24.
const TIME_BITS: u32 = 24;

/// One distinct mapping-tree node, as reached from any device.
struct NodeInfo {
    block: u64,
    height: usize,
    /// Lowest and highest key in the subtree (None when empty).
    keys: Option<(u64, u64)>,
    /// Children (indexes into the arena) or, for a leaf, its data blocks.
    children: Range<usize>,
    leaf: bool,
    mapped: u64,
    exclusive: u64,
    /// References to this node from device roots, through all paths.
    paths: u64,
}

/// All distinct nodes of the devices' mapping subtrees. Nodes are pushed
/// after their children, so the arena is in topological order.
pub(crate) struct Mappings<'a, R> {
    blocks: &'a Blocks<R>,
    nr_data_blocks: u64,
    nodes: Vec<NodeInfo>,
    index: HashMap<u64, usize>,
    /// Child arena indexes of internal nodes, flat.
    child_ids: Vec<usize>,
    /// Data blocks of leaves, flat.
    data: Vec<u64>,
}

impl<'a, R: ReadAt> Mappings<'a, R> {
    pub(crate) fn new(blocks: &'a Blocks<R>, nr_data_blocks: u64) -> Self {
        Mappings {
            blocks,
            nr_data_blocks,
            nodes: Vec::new(),
            index: HashMap::new(),
            child_ids: Vec::new(),
            data: Vec::new(),
        }
    }

    /// Adds the subtree at `root` (a device's mapping root); returns its
    /// arena index.
    pub(crate) fn add_root(&mut self, root: u64) -> Result<usize> {
        let mut path = Vec::with_capacity(MAX_DEPTH);
        self.visit(root, &mut path)
    }

    fn visit(&mut self, nr: u64, path: &mut Vec<u64>) -> Result<usize> {
        let corrupt = |problem| Error::Corrupt { block: nr, problem };
        if path.contains(&nr) {
            return Err(corrupt(Problem::Cycle));
        }
        if let Some(&i) = self.index.get(&nr) {
            return Ok(i);
        }
        if path.len() >= MAX_DEPTH {
            return Err(corrupt(Problem::TooDeep));
        }
        let n = Node::read(self.blocks, nr, 8)?;
        let info = if n.leaf {
            self.leaf(&n)?
        } else {
            path.push(nr);
            let r = self.internal(&n, path);
            path.pop();
            r?
        };
        let i = self.nodes.len();
        self.nodes.push(info);
        self.index.insert(nr, i);
        Ok(i)
    }

    fn leaf(&mut self, n: &Node) -> Result<NodeInfo> {
        let start = self.data.len();
        for i in 0..n.len() {
            let data_block = n.value64(i) >> TIME_BITS;
            if data_block >= self.nr_data_blocks {
                return Err(Error::Corrupt {
                    block: n.block,
                    problem: Problem::DataBlockOutOfRange {
                        data_block,
                        nr_data_blocks: self.nr_data_blocks,
                    },
                });
            }
            self.data.push(data_block);
        }
        Ok(NodeInfo {
            block: n.block,
            height: 0,
            keys: (n.len() > 0).then(|| (n.key(0), n.key(n.len() - 1))),
            children: start..self.data.len(),
            leaf: true,
            mapped: n.len() as u64,
            exclusive: 0,
            paths: 0,
        })
    }

    fn internal(&mut self, n: &Node, path: &mut Vec<u64>) -> Result<NodeInfo> {
        let corrupt = |problem| Error::Corrupt {
            block: n.block,
            problem,
        };
        if n.len() == 0 {
            return Err(corrupt(Problem::EmptyNode));
        }
        let mut kids = Vec::with_capacity(n.len());
        let mut height = None;
        let mut mapped = 0u64;
        for i in 0..n.len() {
            let c = self.visit(n.value64(i), path)?;
            let child = self.nodes.get(c).ok_or(corrupt(Problem::Cycle))?;
            let Some((lo, hi)) = child.keys else {
                return Err(Error::Corrupt {
                    block: child.block,
                    problem: Problem::EmptyNode,
                });
            };
            // The child's keys must lie within this slot; a shared node is
            // checked again at every slot that references it.
            let slot = KeyRange::ALL.child(n, i);
            if !slot.contains(lo) || !slot.contains(hi) {
                return Err(corrupt(Problem::KeyRange(if slot.contains(lo) {
                    hi
                } else {
                    lo
                })));
            }
            if *height.get_or_insert(child.height) != child.height {
                return Err(corrupt(Problem::UnevenDepth));
            }
            mapped = mapped.saturating_add(child.mapped);
            kids.push(c);
        }
        let first = self.nodes.get(kids.first().copied().unwrap_or(0));
        let last = self.nodes.get(kids.last().copied().unwrap_or(0));
        let keys = match (first.and_then(|f| f.keys), last.and_then(|l| l.keys)) {
            (Some((lo, _)), Some((_, hi))) => Some((lo, hi)),
            _ => None,
        };
        let start = self.child_ids.len();
        self.child_ids.extend_from_slice(&kids);
        Ok(NodeInfo {
            block: n.block,
            height: height.map_or(0, |h| h + 1),
            keys,
            children: start..self.child_ids.len(),
            leaf: false,
            mapped,
            exclusive: 0,
            paths: 0,
        })
    }

    /// Counts exclusive blocks for every node, given the device roots (one
    /// entry per device, repeated roots allowed); returns the per-data-block
    /// reference counts for the space map pass.
    pub(crate) fn count(&mut self, roots: &[usize]) -> Result<Refs> {
        for &r in roots {
            if let Some(n) = self.nodes.get_mut(r) {
                n.paths = n.paths.saturating_add(1);
            }
        }
        // Parents come after their children: walk backwards to push path
        // counts down.
        for i in (0..self.nodes.len()).rev() {
            let Some(n) = self.nodes.get(i) else { continue };
            if n.leaf {
                continue;
            }
            let (paths, kids) = (n.paths, n.children.clone());
            for &c in self.child_ids.get(kids).unwrap_or(&[]) {
                if let Some(child) = self.nodes.get_mut(c) {
                    child.paths = child.paths.saturating_add(paths);
                }
            }
        }
        let mut refs = Refs::new(self.nr_data_blocks)?;
        for n in self.nodes.iter().filter(|n| n.leaf) {
            for &d in self.data.get(n.children.clone()).unwrap_or(&[]) {
                refs.add(d, n.paths);
            }
        }
        // Children first: sum exclusive counts upwards.
        for i in 0..self.nodes.len() {
            let Some(n) = self.nodes.get(i) else { continue };
            let exclusive = if n.leaf {
                let data = self.data.get(n.children.clone()).unwrap_or(&[]);
                data.iter().filter(|&&d| refs.get(d) == 1).count() as u64
            } else {
                let kids = self.child_ids.get(n.children.clone()).unwrap_or(&[]);
                kids.iter()
                    .filter_map(|&c| self.nodes.get(c))
                    .fold(0u64, |s, c| s.saturating_add(c.exclusive))
            };
            if let Some(n) = self.nodes.get_mut(i) {
                n.exclusive = exclusive;
            }
        }
        Ok(refs)
    }

    /// (mapped, exclusive) blocks of the subtree at arena index `i`.
    pub(crate) fn totals(&self, i: usize) -> (u64, u64) {
        self.nodes
            .get(i)
            .map_or((0, 0), |n| (n.mapped, n.exclusive))
    }
}

/// References to each data block, as 2-bit counters saturating at 2
/// ("shared"): all that exclusive/shared counting needs.
pub(crate) struct Refs {
    bits: Vec<u8>,
}

impl Refs {
    /// Counters for `n` data blocks, all 0; an error if the memory cannot
    /// be had. `n` was bounded by the metadata device's size first
    /// ([`bitmap_blocks`]).
    fn new(n: u64) -> Result<Self> {
        let bytes = n.div_ceil(4);
        let len = usize::try_from(bytes).map_err(|_| Error::TooLarge { bytes })?;
        let mut bits = Vec::new();
        bits.try_reserve_exact(len)
            .map_err(|_| Error::TooLarge { bytes })?;
        bits.resize(len, 0);
        Ok(Refs { bits })
    }

    fn slot(&self, d: u64) -> Option<(usize, u32)> {
        let byte = usize::try_from(d / 4).ok()?;
        (byte < self.bits.len()).then_some((byte, 2 * (d % 4) as u32))
    }

    /// The count for data block `d`: 0, 1, or 2 for "two or more".
    pub(crate) fn get(&self, d: u64) -> u8 {
        self.slot(d)
            .and_then(|(b, shift)| Some((self.bits.get(b)? >> shift) & 3))
            .unwrap_or(0)
    }

    fn add(&mut self, d: u64, n: u64) {
        let Some((b, shift)) = self.slot(d) else {
            return;
        };
        let v = (u64::from(self.get(d)) + n.min(2)).min(2) as u8;
        if let Some(byte) = self.bits.get_mut(b) {
            *byte = (*byte & !(3 << shift)) | (v << shift);
        }
    }
}

/// Allocation counts from the data space map.
pub(crate) struct SpaceMapCounts {
    pub(crate) allocated: u64,
    /// Allocated blocks whose `refs` entry is 0.
    pub(crate) unmapped: u64,
}

/// The bitmap blocks of the data space map (whose root `sm` the superblock
/// at block 0 holds), in order, after checking that the index covers
/// exactly `sm.nr_blocks`. Called before any allocation sized by
/// `nr_blocks`, which this bounds by the metadata device's real size: every
/// data block has its 2 bits in a bitmap block of that device, so a device
/// of `n` blocks counts at most `n` × [`ENTRIES_PER_BITMAP`] data blocks,
/// and the counters ([`Refs`], a quarter byte each) take at most about as
/// many bytes as the device holds. (The index alone does not bound it: its
/// leaves name up to 169 bitmaps each, and nothing reads those before the
/// counters are made.)
pub(crate) fn bitmap_blocks<R: ReadAt>(blocks: &Blocks<R>, sm: SmRoot) -> Result<Vec<u64>> {
    let device_blocks = blocks.device_blocks()?;
    let max = device_blocks.saturating_mul(ENTRIES_PER_BITMAP);
    if sm.nr_blocks > max {
        return Err(Error::Corrupt {
            block: 0,
            problem: Problem::DataBlocksPastMetadata {
                nr_blocks: sm.nr_blocks,
                device_blocks,
                max,
            },
        });
    }
    let mut bitmaps = Vec::new();
    btree::walk(blocks, sm.bitmap_root, 16, &mut |n, key, value| {
        if key != bitmaps.len() as u64 {
            return Err(Error::Corrupt {
                block: n.block,
                problem: Problem::SpaceMapIndex(key),
            });
        }
        bitmaps.push(le64(value, 0));
        Ok(())
    })?;
    if sm.nr_blocks.div_ceil(ENTRIES_PER_BITMAP) != bitmaps.len() as u64 {
        return Err(Error::Corrupt {
            block: sm.bitmap_root,
            problem: Problem::SpaceMapSize {
                nr_blocks: sm.nr_blocks,
                bitmaps: bitmaps.len() as u64,
            },
        });
    }
    Ok(bitmaps)
}

/// Counts allocated data blocks and those of them that `refs` says no
/// device maps.
pub(crate) fn count_allocated<R: ReadAt>(
    blocks: &Blocks<R>,
    bitmaps: &[u64],
    nr_blocks: u64,
    refs: &Refs,
) -> Result<SpaceMapCounts> {
    let mut counts = SpaceMapCounts {
        allocated: 0,
        unmapped: 0,
    };
    let mut base = 0u64;
    for &bm in bitmaps {
        let b = blocks.read(bm, BITMAP_XOR)?;
        let entries = nr_blocks.saturating_sub(base).min(ENTRIES_PER_BITMAP);
        for (byte_i, &byte) in b.get(16..).unwrap_or(&[]).iter().enumerate() {
            if byte == 0 {
                continue;
            }
            for k in 0..4u64 {
                let e = byte_i as u64 * 4 + k;
                if e >= entries {
                    break;
                }
                if (byte >> (2 * k)) & 3 != 0 {
                    counts.allocated += 1;
                    let d = base + e;
                    if refs.get(d) == 0 {
                        counts.unmapped += 1;
                    }
                }
            }
        }
        base = base.saturating_add(ENTRIES_PER_BITMAP);
    }
    Ok(counts)
}
