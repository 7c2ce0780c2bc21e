//! Test and fuzz support: rewriting blocks' checksums and self block
//! numbers so that altered metadata reaches the checks past the checksum.

use super::block::{self, le32, le64, BLOCK_SIZE};

/// Rewrites the checksum and self block number of every whole 4 KiB block
/// in `bytes` (see `seal_block`), so that tests and the fuzz target can reach
/// the checks past the checksum.
pub fn seal_blocks(bytes: &mut [u8]) {
    for (nr, b) in bytes.chunks_exact_mut(BLOCK_SIZE).enumerate() {
        seal_block(b, nr as u64);
    }
}

/// Rewrites one block's self block number and checksum: block 0 and any
/// block carrying the superblock magic as a superblock, btree nodes by their
/// flags, anything else as a bitmap.
pub fn seal_block(b: &mut [u8], nr: u64) {
    let xor = match le32(b, 4) {
        _ if nr == 0 || le64(b, 32) == block::MAGIC => block::SUPERBLOCK_XOR,
        1 | 2 => block::BTREE_XOR,
        _ => block::BITMAP_XOR,
    };
    seal_block_as(b, nr, xor);
}

/// Rewrites one block's self block number and its checksum with salt `xor`.
pub fn seal_block_as(b: &mut [u8], nr: u64, xor: u32) {
    if let Some(n) = b.get_mut(8..16) {
        n.copy_from_slice(&nr.to_le_bytes());
    }
    let sum = block::expected_checksum(b, xor);
    if let Some(c) = b.get_mut(0..4) {
        c.copy_from_slice(&sum.to_le_bytes());
    }
}
