//! Reading arbitrary bytes as a thin-pool metadata device with `thinmeta`.
//!
//! The first byte picks the superblock to read (live, snapshot, snapshot if
//! held) and whether to reseal every block's checksum and self block number
//! first, so that mutations reach the checks past the checksum. The rest is
//! the device: its first whole 4 KiB blocks, anything past them "truncated".
//! Nothing may panic, loop or run away with memory, whatever the bytes: a
//! count the metadata claims is bounded by the device's size (the seed
//! `regression-space-map-claim` claims 169 bitmaps on 6 blocks).
#![no_main]

use dmthin::internals::seal_blocks;
use dmthin::thinmeta::{Metadata, Source};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if mode & 1 == 0 {
        seal_blocks(&mut bytes);
    }
    let source = match (mode >> 1) % 3 {
        0 => Source::Live,
        1 => Source::Snapshot,
        _ => Source::SnapshotIfHeld,
    };
    let Ok(md) = Metadata::open(&bytes[..], source) else {
        return;
    };
    let ids = md.thin_ids();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "thin ids ascending");
    if let Ok(u) = md.usage() {
        // Counted data blocks are bounded by the device's size: each has
        // its 2 bits in one of its 4 KiB bitmap blocks (16,320 a block).
        let device_blocks = bytes.len() as u64 / 4096;
        assert!(
            u.data_blocks <= device_blocks * 16_320,
            "{} data blocks counted on a device of {device_blocks} blocks",
            u.data_blocks
        );
        assert_eq!(u.devices.len(), ids.len());
        assert!(u.unmapped_allocated_blocks <= u.allocated_blocks);
        for d in &u.devices {
            assert!(d.exclusive_blocks <= d.mapped_blocks);
            assert_eq!(d.shared_bytes, d.mapped_bytes - d.exclusive_bytes);
        }
    }
});
