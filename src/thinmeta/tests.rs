//! Pools built by `thin_restore` from generated XML, read back and compared
//! with `thin_ls`, `thin_dump` and the generating model.

use std::path::Path;

use super::tests_gen::{restore, thin_dump_ids, thin_ls, Pool, Rng, Scratch};
use super::*;

#[test]
fn crc32c_check_value() {
    assert_eq!(crc::crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(crc::crc32c(b""), 0);
    let long: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
    // Slicing-by-8 against a bitwise reference.
    let mut c = !0u32;
    for &b in &long {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
        }
    }
    assert_eq!(crc::crc32c(&long), !c);
}

/// Usage in `thin_ls`'s columns: thin id, mapped, exclusive, shared blocks.
fn rows(u: &PoolUsage) -> Vec<(u32, u64, u64, u64)> {
    u.devices
        .iter()
        .map(|d| {
            let shared = d.mapped_blocks - d.exclusive_blocks;
            (d.thin_id, d.mapped_blocks, d.exclusive_blocks, shared)
        })
        .collect()
}

/// Opens `meta` and checks it against `thin_ls`, `thin_dump` and the model.
fn check(pool: &Pool, meta: &Path) -> PoolUsage {
    let md = Metadata::open(std::fs::File::open(meta).unwrap(), Source::Live).unwrap();
    assert!(!md.from_snapshot());
    assert_eq!(md.thin_ids(), thin_dump_ids(meta));
    assert_eq!(
        md.thin_ids(),
        pool.devices.keys().copied().collect::<Vec<_>>()
    );
    let u = md.usage().unwrap();
    let ls = rows(&u);
    assert_eq!(ls, thin_ls(meta, false));
    let model: Vec<_> = pool.expected();
    let ours: Vec<_> = ls.iter().map(|&(id, m, e, _)| (id, m, e)).collect();
    assert_eq!(ours, model);
    let bytes = u64::from(pool.data_block_sectors) * 512;
    for d in &u.devices {
        assert_eq!(d.mapped_bytes, d.mapped_blocks * bytes);
        assert_eq!(d.exclusive_bytes, d.exclusive_blocks * bytes);
        assert_eq!(d.shared_bytes, d.mapped_bytes - d.exclusive_bytes);
    }
    let distinct: std::collections::BTreeSet<u64> = pool
        .devices
        .values()
        .flat_map(|m| m.values().copied())
        .collect();
    assert_eq!(u.allocated_blocks, distinct.len() as u64);
    assert_eq!(u.unmapped_allocated_blocks, 0);
    assert_eq!(u.data_blocks, pool.nr_data_blocks);
    assert_eq!(u.data_block_bytes, bytes);
    assert_eq!(u.mapped_bytes(), pool.total_mappings() * bytes);
    u
}

/// Random devices: new volumes, snapshots of any existing device, writes to
/// snapshots and to their origins (breaking sharing), deletions.
pub(super) fn random_pool(seed: u64, n_devices: u32, virt: u64, nr_data: u64) -> Pool {
    let mut rng = Rng::new(seed);
    let mut pool = Pool::new(nr_data);
    let mut ids: Vec<u32> = Vec::new();
    for i in 0..n_devices {
        let id = 1 + i * 3 + (rng.below(3) as u32);
        if ids.is_empty() || rng.below(5) == 0 {
            let n = 20 + rng.below(virt / 2);
            pool.write(id, &mut rng, n, virt);
        } else {
            let origin = ids[rng.below(ids.len() as u64) as usize];
            pool.snapshot(origin, id);
            let n = rng.below(virt / 16 + 1);
            pool.write(id, &mut rng, n, virt);
            if rng.below(2) == 0 {
                let n = rng.below(virt / 32 + 1);
                pool.write(origin, &mut rng, n, virt);
            }
        }
        ids.push(id);
        if ids.len() > 3 && rng.below(8) == 0 {
            let victim = ids.swap_remove(rng.below(ids.len() as u64) as usize);
            pool.delete(victim);
        }
    }
    pool
}

#[test]
fn small_pool_matches_thin_ls() {
    let dir = Scratch::new();
    let mut pool = Pool::new(1000);
    let mut rng = Rng::new(1);
    pool.write(1, &mut rng, 40, 100);
    pool.snapshot(1, 3);
    pool.write(3, &mut rng, 5, 100);
    pool.write(1, &mut rng, 5, 100);
    let meta = restore(&pool, &dir.0);
    check(&pool, &meta);
}

#[test]
fn random_pools_match_thin_ls() {
    for seed in 0..6 {
        let dir = Scratch::new();
        let pool = random_pool(seed, 10 + seed as u32 * 12, 600, 1 << 16);
        let meta = restore(&pool, &dir.0);
        check(&pool, &meta);
    }
}

#[test]
fn snapshot_chain_twenty_deep() {
    let dir = Scratch::new();
    let mut rng = Rng::new(20);
    let mut pool = Pool::new(1 << 16);
    pool.write(1, &mut rng, 800, 2000);
    for id in 2..=21 {
        pool.snapshot(id - 1, id);
        pool.write(id, &mut rng, 30, 2000);
        // A sibling of the chain overwriting shared blocks.
        pool.snapshot(id - 1, 100 + id);
        pool.write(100 + id, &mut rng, 15, 2000);
    }
    let meta = restore(&pool, &dir.0);
    let u = check(&pool, &meta);
    assert_eq!(u.devices.len(), 41);
}

#[test]
fn deep_trees_and_several_bitmaps() {
    // 60,000 consecutive blocks: a three-level mapping tree; 100,000 data
    // blocks: seven space-map bitmap blocks.
    let dir = Scratch::new();
    let mut rng = Rng::new(7);
    let mut pool = Pool::new(100_000);
    pool.write_range(1, 0, 60_000);
    pool.snapshot(1, 2);
    pool.write(2, &mut rng, 3000, 60_000);
    pool.write_range(5, 1 << 30, 20_000);
    let meta = restore(&pool, &dir.0);
    check(&pool, &meta);
}

#[test]
fn empty_pool() {
    let dir = Scratch::new();
    let pool = Pool::new(5000);
    let meta = restore(&pool, &dir.0);
    let u = check(&pool, &meta);
    assert!(u.devices.is_empty());
    assert_eq!(u.allocated_blocks, 0);
}

#[test]
fn no_snapshot_held() {
    let dir = Scratch::new();
    let pool = random_pool(3, 5, 100, 1000);
    let meta = restore(&pool, &dir.0);
    let f = || std::fs::File::open(&meta).unwrap();
    assert!(matches!(
        Metadata::open(f(), Source::Snapshot),
        Err(Error::NoSnapshot)
    ));
    let md = Metadata::open(f(), Source::SnapshotIfHeld).unwrap();
    assert!(!md.from_snapshot());
    assert_eq!(md.devices().len(), pool.devices.len());
}

/// Marks data blocks `extra` allocated (count 1) in the data space map.
fn allocate_in_bitmaps(bytes: &mut [u8], extra: &[u64]) {
    let mut blocks = Blocks::new(&*bytes);
    blocks.nr_blocks = (bytes.len() / BLOCK_SIZE) as u64;
    let sb = Superblock::read(&blocks, 0).unwrap();
    let bitmaps = usage::bitmap_blocks(&blocks, sb.data_sm).unwrap();
    for &d in extra {
        let bm = bitmaps[(d / 16320) as usize] as usize;
        let e = (d % 16320) as usize;
        let byte = bm * BLOCK_SIZE + 16 + e / 4;
        // Entry value 1: the low bit of the pair is the second bit.
        bytes[byte] |= 2 << (2 * (e % 4));
        seal_block_as(
            &mut bytes[bm * BLOCK_SIZE..(bm + 1) * BLOCK_SIZE],
            bm as u64,
            block::BITMAP_XOR,
        );
    }
}

#[test]
fn allocated_but_unmapped_blocks() {
    // Blocks of deleted devices that the space map still holds.
    let dir = Scratch::new();
    let pool = random_pool(11, 30, 400, 40_000);
    let meta = restore(&pool, &dir.0);
    let mut bytes = std::fs::read(&meta).unwrap();
    let extra = [39_999, 20_000, 16_320, 16_319, 30_001];
    allocate_in_bitmaps(&mut bytes, &extra);
    let u = Metadata::open(&bytes, Source::Live)
        .unwrap()
        .usage()
        .unwrap();
    assert_eq!(u.unmapped_allocated_blocks, extra.len() as u64);
    assert_eq!(u.unmapped_allocated_bytes(), extra.len() as u64 * 65536);
    let std_u = Metadata::open(std::fs::File::open(&meta).unwrap(), Source::Live)
        .unwrap()
        .usage()
        .unwrap();
    assert_eq!(
        u.allocated_blocks,
        std_u.allocated_blocks + extra.len() as u64
    );
    assert_eq!(u.devices, std_u.devices);
}

#[test]
fn metadata_snapshot_is_read_when_asked() {
    // The snapshot (held_root) keeps every device; the live superblock is
    // rewritten to trees holding only the first device.
    let dir = Scratch::new();
    let pool = random_pool(5, 12, 300, 20_000);
    let meta = restore(&pool, &dir.0);
    let before = thin_ls(&meta, false);
    let mut bytes = std::fs::read(&meta).unwrap();
    let nr = bytes.len() / BLOCK_SIZE;
    let (snap, details, top) = (nr - 3, nr - 2, nr - 1);
    let blk = |b: &[u8], i: usize| b[i * BLOCK_SIZE..(i + 1) * BLOCK_SIZE].to_vec();
    let mut copy = blk(&bytes, 0);
    seal_block_as(&mut copy, snap as u64, block::SUPERBLOCK_XOR);
    bytes[snap * BLOCK_SIZE..(snap + 1) * BLOCK_SIZE].copy_from_slice(&copy);
    // One-entry copies of the (single leaf) details and top-level trees.
    for (at, off) in [(details, 328), (top, 320)] {
        let root = le64(&bytes, off) as usize;
        let mut node = blk(&bytes, root);
        assert_eq!(le32(&node, 4), 2, "root is a leaf");
        node[16..20].copy_from_slice(&1u32.to_le_bytes());
        seal_block_as(&mut node, at as u64, block::BTREE_XOR);
        bytes[at * BLOCK_SIZE..(at + 1) * BLOCK_SIZE].copy_from_slice(&node);
        bytes[off..off + 8].copy_from_slice(&(at as u64).to_le_bytes());
    }
    bytes[56..64].copy_from_slice(&(snap as u64).to_le_bytes());
    seal_block_as(&mut bytes[..BLOCK_SIZE], 0, block::SUPERBLOCK_XOR);
    std::fs::write(&meta, &bytes).unwrap();
    let snap_md = Metadata::open(&bytes, Source::Snapshot).unwrap();
    assert!(snap_md.from_snapshot());
    let snap_u = snap_md.usage().unwrap();
    assert_eq!(rows(&snap_u), before);
    assert_eq!(rows(&snap_u), thin_ls(&meta, true));
    assert_eq!(snap_u.unmapped_allocated_blocks, 0);
    let if_held = Metadata::open(&bytes, Source::SnapshotIfHeld).unwrap();
    assert!(if_held.from_snapshot());

    let live = Metadata::open(&bytes, Source::Live).unwrap();
    assert_eq!(live.thin_ids(), vec![before[0].0]);
    let live_u = live.usage().unwrap();
    assert_eq!(rows(&live_u), thin_ls(&meta, false));
    assert_eq!(live_u.devices[0].mapped_blocks, before[0].1);
    assert_eq!(
        live_u.unmapped_allocated_blocks,
        live_u.allocated_blocks - live_u.devices[0].mapped_blocks
    );
}

/// 1,000 devices over ~160k data blocks: our time against `thin_ls`'s.
/// `cargo test --release --lib thinmeta::tests::timing -- --ignored --nocapture`
#[test]
#[ignore = "timing run; prints numbers"]
fn timing_thousand_devices() {
    let dir = Scratch::new();
    let mut rng = Rng::new(1000);
    let mut pool = Pool::new(1 << 18);
    for id in 0..100 {
        pool.write_range(id, 0, 800);
    }
    for id in 100..1000 {
        pool.snapshot(rng.below(u64::from(id)) as u32, id);
        pool.write(id, &mut rng, 90, 800);
    }
    let t = std::time::Instant::now();
    let meta = restore(&pool, &dir.0);
    eprintln!("thin_restore: {:?}", t.elapsed());
    // Best of three each, alternating, page cache warm for both.
    let (mut ours, mut theirs) = (std::time::Duration::MAX, std::time::Duration::MAX);
    let (mut u, mut ls) = (None, Vec::new());
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let md = Metadata::open(std::fs::File::open(&meta).unwrap(), Source::Live).unwrap();
        u = Some(md.usage().unwrap());
        ours = ours.min(t.elapsed());
        let t = std::time::Instant::now();
        ls = thin_ls(&meta, false);
        theirs = theirs.min(t.elapsed());
    }
    let u = u.unwrap();
    assert_eq!(rows(&u), ls);
    eprintln!(
        "1000 devices, {} mappings, {} allocated data blocks, metadata {} MiB: \
         thinmeta {ours:?}, thin_ls {theirs:?} (best of 3)",
        pool.total_mappings(),
        u.allocated_blocks,
        std::fs::metadata(&meta).unwrap().len() >> 20
    );
}
