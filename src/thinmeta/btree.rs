//! Persistent-data btree nodes: parsing with every layout check, and an
//! in-order walk of a whole tree that refuses cycles, revisits, keys out of
//! order or range, uneven depth and trees deeper than [`MAX_DEPTH`].

use std::collections::HashSet;

use super::block::{le32, le64, Blocks, ReadAt, BLOCK_SIZE, BTREE_XOR};
use super::{Error, Problem, Result};

const INTERNAL_NODE: u32 = 1;
const LEAF_NODE: u32 = 2;
/// Node header: csum, flags, blocknr, nr_entries, max_entries, value_size, padding.
const HEADER: usize = 32;
/// Deepest tree accepted. A node holds at least a few dozen entries, so a
/// real tree of 2^64 keys stays well under this.
pub(crate) const MAX_DEPTH: usize = 16;

/// One checked btree node.
pub(crate) struct Node {
    pub(crate) block: u64,
    data: Vec<u8>,
    pub(crate) leaf: bool,
    nr: usize,
    max: usize,
    value_size: usize,
}

impl Node {
    /// Reads block `nr` as a btree node whose leaves hold values of
    /// `leaf_value_size` bytes (internal nodes hold 8-byte block numbers).
    pub(crate) fn read<R: ReadAt>(
        blocks: &Blocks<R>,
        nr: u64,
        leaf_value_size: usize,
    ) -> Result<Node> {
        let data = blocks.read(nr, BTREE_XOR)?;
        let corrupt = |problem| Error::Corrupt { block: nr, problem };
        let leaf = match le32(&data, 4) {
            INTERNAL_NODE => false,
            LEAF_NODE => true,
            other => return Err(corrupt(Problem::NodeFlags(other))),
        };
        let nr_entries = le32(&data, 16);
        let max_entries = le32(&data, 20);
        let value_size = le32(&data, 24);
        let expected = if leaf { leaf_value_size } else { 8 };
        if value_size as usize != expected {
            return Err(corrupt(Problem::ValueSize {
                found: value_size,
                expected,
            }));
        }
        let fits = (max_entries as usize)
            .checked_mul(8 + expected)
            .and_then(|n| n.checked_add(HEADER))
            .is_some_and(|n| n <= BLOCK_SIZE);
        if !fits {
            return Err(corrupt(Problem::NodeLayout {
                max_entries,
                value_size,
            }));
        }
        if nr_entries > max_entries {
            return Err(corrupt(Problem::TooManyEntries {
                nr_entries,
                max_entries,
            }));
        }
        let node = Node {
            block: nr,
            data,
            leaf,
            nr: nr_entries as usize,
            max: max_entries as usize,
            value_size: expected,
        };
        for i in 1..node.len() {
            if node.key(i - 1) >= node.key(i) {
                return Err(corrupt(Problem::KeyOrder));
            }
        }
        Ok(node)
    }

    pub(crate) fn len(&self) -> usize {
        self.nr
    }

    pub(crate) fn key(&self, i: usize) -> u64 {
        le64(&self.data, HEADER + 8 * i)
    }

    /// The raw value of entry `i` (`value_size` bytes).
    pub(crate) fn value(&self, i: usize) -> &[u8] {
        let start = HEADER + 8 * self.max + self.value_size * i;
        self.data
            .get(start..)
            .and_then(|s| s.get(..self.value_size))
            .unwrap_or(&[])
    }

    /// Entry `i`'s value read as a little-endian u64.
    pub(crate) fn value64(&self, i: usize) -> u64 {
        le64(self.value(i), 0)
    }

    fn corrupt(&self, problem: Problem) -> Error {
        Error::Corrupt {
            block: self.block,
            problem,
        }
    }
}

/// Keys a subtree may hold: `lo..hi` (`hi` of `None` is unbounded).
#[derive(Clone, Copy)]
pub(crate) struct KeyRange {
    pub(crate) lo: u64,
    pub(crate) hi: Option<u64>,
}

impl KeyRange {
    pub(crate) const ALL: KeyRange = KeyRange { lo: 0, hi: None };

    pub(crate) fn contains(&self, key: u64) -> bool {
        key >= self.lo && self.hi.is_none_or(|hi| key < hi)
    }

    /// The range of child `i` of internal node `n` within `self`: child 0
    /// keeps the parent's lower bound (its separator key may be stale).
    pub(crate) fn child(&self, n: &Node, i: usize) -> KeyRange {
        KeyRange {
            lo: if i == 0 { self.lo } else { n.key(i) },
            hi: if i + 1 < n.len() {
                Some(n.key(i + 1))
            } else {
                self.hi
            },
        }
    }
}

/// Checks every key of `n` against `range`.
pub(crate) fn check_range(n: &Node, range: KeyRange) -> Result<()> {
    match (0..n.len()).map(|i| n.key(i)).find(|&k| !range.contains(k)) {
        Some(key) => Err(n.corrupt(Problem::KeyRange(key))),
        None => Ok(()),
    }
}

/// Called for every leaf entry: the leaf, the key, the value.
pub(crate) type LeafFn<'a> = dyn FnMut(&Node, u64, &[u8]) -> Result<()> + 'a;

/// Walks the tree at `root` in key order, calling `f(leaf, key, value)` for
/// every leaf entry. For trees whose nodes are never shared within the tree
/// (device details, the top level of the mapping tree, the space map index).
pub(crate) fn walk<R: ReadAt>(
    blocks: &Blocks<R>,
    root: u64,
    value_size: usize,
    f: &mut LeafFn<'_>,
) -> Result<()> {
    let mut w = Walk {
        blocks,
        value_size,
        visited: HashSet::new(),
        leaf_depth: None,
        f,
    };
    w.node(root, 0, KeyRange::ALL)
}

struct Walk<'a, R> {
    blocks: &'a Blocks<R>,
    value_size: usize,
    visited: HashSet<u64>,
    leaf_depth: Option<usize>,
    f: &'a mut LeafFn<'a>,
}

impl<R: ReadAt> Walk<'_, R> {
    fn node(&mut self, nr: u64, depth: usize, range: KeyRange) -> Result<()> {
        let corrupt = |problem| Error::Corrupt { block: nr, problem };
        if depth >= MAX_DEPTH {
            return Err(corrupt(Problem::TooDeep));
        }
        if !self.visited.insert(nr) {
            return Err(corrupt(Problem::Revisited));
        }
        let n = Node::read(self.blocks, nr, self.value_size)?;
        if depth > 0 && n.len() == 0 {
            return Err(corrupt(Problem::EmptyNode));
        }
        check_range(&n, range)?;
        if n.leaf {
            if *self.leaf_depth.get_or_insert(depth) != depth {
                return Err(corrupt(Problem::UnevenDepth));
            }
            for i in 0..n.len() {
                (self.f)(&n, n.key(i), n.value(i))?;
            }
            return Ok(());
        }
        for i in 0..n.len() {
            self.node(n.value64(i), depth + 1, range.child(&n, i))?;
        }
        Ok(())
    }
}
