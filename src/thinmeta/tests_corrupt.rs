//! Damaged metadata: every failure is an error naming the block, never a
//! panic or an endless walk.

use super::tests::random_pool;
use super::tests_gen::{restore, Rng, Scratch};
use super::*;
use std::path::Path;

/// Metadata bytes of a small restored pool.
fn pool_bytes(seed: u64) -> Vec<u8> {
    let dir = Scratch::new();
    let pool = random_pool(seed, 12, 300, 20_000);
    std::fs::read(restore(&pool, &dir.0)).unwrap()
}

fn open_usage(bytes: &[u8]) -> Result<PoolUsage> {
    Metadata::open(bytes, Source::Live)?.usage()
}

fn block_mut(bytes: &mut [u8], nr: u64) -> &mut [u8] {
    let at = nr as usize * BLOCK_SIZE;
    &mut bytes[at..at + BLOCK_SIZE]
}

/// The mapping subtree root of the first device.
fn first_subtree_root(bytes: &[u8]) -> u64 {
    let top = le64(bytes, 320);
    let node = &bytes[top as usize * BLOCK_SIZE..][..BLOCK_SIZE];
    assert_eq!(le32(node, 4), 2, "top level is one leaf");
    let max = le32(node, 20) as usize;
    le64(node, 32 + 8 * max)
}

fn corrupt_at<T>(r: Result<T>) -> (u64, Problem) {
    match r {
        Err(Error::Corrupt { block, problem }) => (block, problem),
        Err(e) => panic!("expected a corruption error, got {e}"),
        Ok(_) => panic!("expected a corruption error, got success"),
    }
}

#[test]
fn flipped_byte_in_btree_node() {
    let mut bytes = pool_bytes(1);
    let details = le64(&bytes, 328);
    block_mut(&mut bytes, details)[100] ^= 0x40;
    let (block, problem) = corrupt_at(Metadata::open(&bytes[..], Source::Live));
    assert_eq!(block, details);
    assert!(matches!(problem, Problem::Checksum { .. }), "{problem}");

    let mut bytes = pool_bytes(1);
    let leaf = first_subtree_root(&bytes);
    block_mut(&mut bytes, leaf)[2000] ^= 1;
    let err = open_usage(&bytes).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("thin metadata block {leaf}: checksum")),
        "{err}"
    );
}

#[test]
fn truncated_device() {
    let bytes = pool_bytes(2);
    let details = le64(&bytes, 328) as usize;
    let (block, problem) = corrupt_at(Metadata::open(&bytes[..details * BLOCK_SIZE], Source::Live));
    assert_eq!((block, problem), (details as u64, Problem::PastEnd));
    // Cut inside a block, too.
    let cut = &bytes[..details * BLOCK_SIZE + 100];
    assert_eq!(
        corrupt_at(Metadata::open(cut, Source::Live)).1,
        Problem::PastEnd
    );
    assert_eq!(corrupt_at(Metadata::open(&bytes[..10], Source::Live)).0, 0);
    // Everything used present, the rest cut: the reader only needs those.
    assert!(open_usage(&bytes[..64 * BLOCK_SIZE]).is_ok());
}

#[test]
fn node_pointing_at_itself() {
    let mut bytes = pool_bytes(3);
    let leaf = first_subtree_root(&bytes);
    let b = block_mut(&mut bytes, leaf);
    // An internal node whose only child is itself.
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    b[16..20].copy_from_slice(&1u32.to_le_bytes());
    let max = le32(b, 20) as usize;
    b[32..40].copy_from_slice(&0u64.to_le_bytes());
    b[32 + 8 * max..40 + 8 * max].copy_from_slice(&leaf.to_le_bytes());
    seal_block(b, leaf);
    assert_eq!(corrupt_at(open_usage(&bytes)), (leaf, Problem::Cycle));

    // The same in the device-details tree (walked without sharing).
    let mut bytes = pool_bytes(3);
    let details = le64(&bytes, 328);
    let b = block_mut(&mut bytes, details);
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    b[16..20].copy_from_slice(&1u32.to_le_bytes());
    b[24..28].copy_from_slice(&8u32.to_le_bytes());
    b[20..24].copy_from_slice(&3u32.to_le_bytes());
    b[32..40].copy_from_slice(&0u64.to_le_bytes());
    b[56..64].copy_from_slice(&details.to_le_bytes());
    seal_block(b, details);
    let (block, problem) = corrupt_at(Metadata::open(&bytes[..], Source::Live));
    assert_eq!((block, problem), (details, Problem::Revisited));
}

#[test]
fn bad_superblock() {
    let mut bytes = pool_bytes(4);
    bytes[32] ^= 1;
    let (block, problem) = corrupt_at(Metadata::open(&bytes[..], Source::Live));
    assert_eq!(block, 0);
    assert!(matches!(problem, Problem::Checksum { .. }), "{problem}");
    seal_block(&mut bytes[..BLOCK_SIZE], 0);
    let (block, problem) = corrupt_at(Metadata::open(&bytes[..], Source::Live));
    assert_eq!(block, 0);
    assert!(matches!(problem, Problem::Magic(_)), "{problem}");
    let err = Metadata::open(&bytes[..], Source::Live).err().unwrap();
    assert!(err.to_string().contains("bad superblock magic"), "{err}");
}

#[test]
fn wrong_self_block_number_and_pointer_outside() {
    let mut bytes = pool_bytes(5);
    let details = le64(&bytes, 328);
    let b = block_mut(&mut bytes, details);
    seal_block_as(b, 999, block::BTREE_XOR);
    let r = corrupt_at(Metadata::open(&bytes[..], Source::Live));
    assert_eq!(r, (details, Problem::WrongBlocknr(999)));

    let mut bytes = pool_bytes(5);
    bytes[328..336].copy_from_slice(&(1u64 << 40).to_le_bytes());
    seal_block(&mut bytes[..BLOCK_SIZE], 0);
    let (block, problem) = corrupt_at(Metadata::open(&bytes[..], Source::Live));
    assert_eq!(block, 1 << 40);
    assert!(
        matches!(problem, Problem::OutsideDevice { .. }),
        "{problem}"
    );
}

#[test]
fn data_block_past_the_data_device() {
    let mut bytes = pool_bytes(6);
    let leaf = first_subtree_root(&bytes);
    let b = block_mut(&mut bytes, leaf);
    assert_eq!(le32(b, 4), 2, "small device: a leaf");
    let max = le32(b, 20) as usize;
    let v = 32 + 8 * max;
    b[v..v + 8].copy_from_slice(&(20_000u64 << 24).to_le_bytes());
    seal_block(b, leaf);
    let (block, problem) = corrupt_at(open_usage(&bytes));
    assert_eq!(block, leaf);
    assert!(
        matches!(
            problem,
            Problem::DataBlockOutOfRange {
                data_block: 20_000,
                ..
            }
        ),
        "{problem}"
    );
}

#[test]
fn random_damage_never_panics() {
    let clean = pool_bytes(7);
    let used = 40 * BLOCK_SIZE;
    let mut rng = Rng::new(77);
    for _ in 0..400 {
        let mut bytes = clean[..used].to_vec();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(used as u64) as usize;
            bytes[at] = rng.next() as u8;
        }
        // Resealed, so the damage reaches the checks past the checksum.
        seal_blocks(&mut bytes);
        if let Ok(md) = Metadata::open(&bytes[..], Source::SnapshotIfHeld) {
            let _ = md.thin_ids();
            let _ = md.usage();
        }
    }
}

/// The fuzz target's seed of a space map claiming more data blocks than its
/// device can count (mode byte 0: resealed, live superblock).
const CLAIM_SEED: &str = "regression-space-map-claim";

#[test]
fn fuzz_seeds_read_cleanly() {
    // The fuzz target's seeds (mode byte, then the device) are valid pools,
    // so mutations start from metadata that reaches every check; the
    // regression seeds are inputs once mishandled.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/thin_metadata");
    let claim = std::fs::read(dir.join(CLAIM_SEED)).unwrap();
    let mut want = vec![0u8];
    want.extend(crafted_space_map(1, 169));
    assert!(
        claim == want,
        "{CLAIM_SEED} is not crafted_space_map(1, 169)"
    );
    assert!(matches!(
        corrupt_at(open_usage(&claim[1..])).1,
        Problem::DataBlocksPastMetadata { .. }
    ));
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("regression-")
        {
            continue;
        }
        let data = std::fs::read(path).unwrap();
        let (&mode, rest) = data.split_first().unwrap();
        let mut bytes = rest.to_vec();
        if mode & 1 == 0 {
            seal_blocks(&mut bytes);
        }
        let source =
            [Source::Live, Source::Snapshot, Source::SnapshotIfHeld][(mode >> 1) as usize % 3];
        let md = Metadata::open(&bytes[..], source).unwrap();
        assert_eq!(md.thin_ids(), vec![1, 3]);
        let u = md.usage().unwrap();
        assert_eq!(u.allocated_blocks, 4);
        n += 1;
    }
    assert_eq!(n, 3);
}

/// A btree node holding `entries` (key, value) with `value_size`-byte
/// values, as many slots as fit the block; unsealed.
fn node(leaf: bool, value_size: usize, entries: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let max = (BLOCK_SIZE - 32) / (8 + value_size);
    let mut b = vec![0u8; BLOCK_SIZE];
    b[4..8].copy_from_slice(&(if leaf { 2u32 } else { 1 }).to_le_bytes());
    b[16..20].copy_from_slice(&(entries.len() as u32).to_le_bytes());
    b[20..24].copy_from_slice(&(max as u32).to_le_bytes());
    b[24..28].copy_from_slice(&(value_size as u32).to_le_bytes());
    for (i, (key, value)) in entries.iter().enumerate() {
        b[32 + 8 * i..][..8].copy_from_slice(&key.to_le_bytes());
        b[32 + 8 * max + value_size * i..][..value_size].copy_from_slice(value);
    }
    b
}

/// Metadata with no devices whose data space map index lists `per_leaf`
/// bitmaps in each of `leaves` leaves (all naming the one, empty, bitmap
/// block), and whose superblock claims the data blocks those bitmaps
/// cover: `leaves + 5` blocks, sealed. Blocks: 0 superblock, 1 device
/// details, 2 mapping top level, 3 index root, the leaves, the bitmap.
pub(super) fn crafted_space_map(leaves: usize, per_leaf: usize) -> Vec<u8> {
    let bitmap = leaves as u64 + 4;
    let nr_blocks = (leaves * per_leaf) as u64 * usage::ENTRIES_PER_BITMAP;
    let mut sb = vec![0u8; BLOCK_SIZE];
    sb[32..40].copy_from_slice(&block::MAGIC.to_le_bytes());
    sb[40..44].copy_from_slice(&2u32.to_le_bytes());
    sb[64..72].copy_from_slice(&nr_blocks.to_le_bytes());
    sb[80..88].copy_from_slice(&3u64.to_le_bytes());
    sb[320..328].copy_from_slice(&2u64.to_le_bytes());
    sb[328..336].copy_from_slice(&1u64.to_le_bytes());
    sb[336..340].copy_from_slice(&128u32.to_le_bytes());
    sb[340..344].copy_from_slice(&8u32.to_le_bytes());
    sb[344..352].copy_from_slice(&(bitmap + 1).to_le_bytes());
    let index_entry = |_| {
        let mut v = bitmap.to_le_bytes().to_vec();
        v.extend_from_slice(&(usage::ENTRIES_PER_BITMAP as u32).to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v
    };
    let mut bytes = sb;
    bytes.extend(node(true, 24, &[]));
    bytes.extend(node(true, 8, &[]));
    let children: Vec<(u64, Vec<u8>)> = (0..leaves)
        .map(|l| ((l * per_leaf) as u64, (4 + l as u64).to_le_bytes().to_vec()))
        .collect();
    bytes.extend(node(false, 8, &children));
    for l in 0..leaves {
        let first = (l * per_leaf) as u64;
        let entries: Vec<(u64, Vec<u8>)> = (first..first + per_leaf as u64)
            .map(|k| (k, index_entry(k)))
            .collect();
        bytes.extend(node(true, 16, &entries));
    }
    bytes.extend(vec![0u8; BLOCK_SIZE]);
    seal_blocks(&mut bytes);
    bytes
}

#[test]
fn a_space_map_claiming_more_than_the_device_can_count_is_refused() {
    // The crafted layout is valid: one bitmap for its 16,320 data blocks.
    let fine = crafted_space_map(1, 1);
    let u = open_usage(&fine).unwrap();
    assert_eq!((u.data_blocks, u.allocated_blocks), (16_320, 0));
    assert!(u.devices.is_empty());
    // 254 leaves of 169 bitmaps: 700 million data blocks, 175 MB of
    // counters, from a device of 259 blocks (1 MiB) that can count at most
    // 259 × 16,320. Refused, naming the field, before anything is sized by it.
    let hostile = crafted_space_map(254, 169);
    assert_eq!(hostile.len(), 259 * BLOCK_SIZE);
    let claimed = 254 * 169 * 16_320;
    let refused = Problem::DataBlocksPastMetadata {
        nr_blocks: claimed,
        device_blocks: 259,
        max: 259 * 16_320,
    };
    assert_eq!(corrupt_at(open_usage(&hostile)), (0, refused.clone()));
    let msg = open_usage(&hostile).unwrap_err().to_string();
    assert!(
        msg.starts_with("thin metadata block 0: data space map nr_blocks 700552320 is more"),
        "{msg}"
    );
    // The same through a file: its size is the device's.
    let dir = Scratch::new();
    let path = dir.0.join("hostile");
    std::fs::write(&path, &hostile).unwrap();
    let md = Metadata::open(std::fs::File::open(&path).unwrap(), Source::Live).unwrap();
    assert_eq!(corrupt_at(md.usage()), (0, refused));
    // One leaf of 169 bitmaps on 6 blocks: as much past the bound.
    let small = crafted_space_map(1, 169);
    assert!(matches!(
        corrupt_at(open_usage(&small)),
        (
            0,
            Problem::DataBlocksPastMetadata {
                device_blocks: 6,
                ..
            }
        )
    ));
}

/// After the metadata device grows, the kernel updates the metadata space
/// map's block count (superblock offset 192) but never `metadata_nr_blocks`
/// (offset 344, written at format): blocks past the formatted size are
/// read, and blocks past both counts are still refused.
#[test]
fn a_grown_metadata_device_is_read_past_its_formatted_size() {
    let bytes = pool_bytes(5);
    let expected = open_usage(&bytes).unwrap();
    let details = le64(&bytes, 328);
    let mut grown = bytes.clone();
    block_mut(&mut grown, 0)[344..352].copy_from_slice(&details.to_le_bytes());
    super::seal::seal_block(block_mut(&mut grown, 0), 0);
    assert_eq!(open_usage(&grown).unwrap(), expected);
    block_mut(&mut grown, 0)[192..200].copy_from_slice(&details.to_le_bytes());
    super::seal::seal_block(block_mut(&mut grown, 0), 0);
    assert!(
        Metadata::open(&grown[..], Source::Live)
            .and_then(|m| m.usage())
            .is_err(),
        "a block past both counts must be refused"
    );
}
