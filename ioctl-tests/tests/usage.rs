//! `DeviceSet::usage_all` / `usage` (issue #14) on a real pool: figures equal
//! `thin_ls --metadata-snap`'s on random snapshot trees, the metadata snapshot
//! is always released, writers are not disturbed, damaged metadata copies
//! give errors naming the block. The ignored `bench_usage_1000_devices` is
//! the benchmark (benches/usage.sh runs it).

mod common;

use common::*;
use dmthin::deviceset::{DeviceSet, FsKind, Options, SetUsage, StorageOptions};
use dmthin::thinmeta::{Metadata, Source};
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BLOCK: u64 = 64 << 10;

use dmthin_ioctl_tests::SplitMix64 as Rng;

/// (mapped, exclusive, shared) bytes per thin id.
type Figures = BTreeMap<u32, (u64, u64, u64)>;

fn ours(u: &SetUsage) -> Figures {
    std::iter::once(&u.base)
        .chain(&u.devices)
        .chain(&u.untracked)
        .map(|d| &d.space)
        .map(|d| {
            (
                d.thin_id,
                (d.mapped_bytes, d.exclusive_bytes, d.shared_bytes),
            )
        })
        .collect()
}

/// The loop device under the set's metadata file.
fn metadata_loop(set: &DeviceSet) -> String {
    let meta = set.root().join("devicemapper/metadata");
    sh_ok(&format!("losetup -j {} | cut -d: -f1", meta.display()))
        .lines()
        .next()
        .expect("metadata loop device")
        .trim()
        .to_string()
}

/// Runs `f` while this test holds a metadata snapshot of the pool.
fn holding<T>(set: &DeviceSet, f: impl FnOnce() -> T) -> T {
    let pool = set.pool_name();
    sh_ok(&format!("dmsetup message {pool} 0 reserve_metadata_snap"));
    let r = f();
    sh_ok(&format!("dmsetup message {pool} 0 release_metadata_snap"));
    r
}

/// `thin_ls --metadata-snap`'s figures, under a snapshot of our own.
fn thin_ls(set: &DeviceSet) -> Figures {
    thin_ls_timed(set).0
}

/// [`thin_ls`] and the seconds thin_ls itself took.
fn thin_ls_timed(set: &DeviceSet) -> (Figures, f64) {
    let dev = metadata_loop(set);
    let (text, secs) = holding(set, || {
        let t = Instant::now();
        let text = sh_ok(&format!(
            "thin_ls --metadata-snap --no-headers -o DEV,MAPPED_BYTES,EXCLUSIVE_BYTES,SHARED_BYTES {dev} 2>/dev/null"
        ));
        (text, t.elapsed().as_secs_f64())
    });
    let figures = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .map(|w| w.parse().unwrap_or_else(|_| panic!("thin_ls row {l:?}")))
                .collect();
            assert_eq!(f.len(), 4, "thin_ls row {l:?}");
            (f[0] as u32, (f[1], f[2], f[3]))
        })
        .collect();
    (figures, secs)
}

/// usage_all equals thin_ls, device by device, and the totals add up.
fn assert_matches_thin_ls(set: &DeviceSet) -> SetUsage {
    let u = set.usage_all().unwrap();
    assert!(u.from_snapshot);
    let ls = thin_ls(set);
    assert_eq!(ours(&u), ls, "usage_all vs thin_ls");
    let sum = |f: fn(&(u64, u64, u64)) -> u64| ls.values().map(f).sum::<u64>();
    assert_eq!(u.mapped_bytes, sum(|v| v.0));
    assert_eq!(u.exclusive_bytes, sum(|v| v.1));
    assert_eq!(u.shared_bytes, sum(|v| v.2));
    assert!(u.allocated_bytes >= u.exclusive_bytes);
    u
}

fn set_options() -> Options {
    let mut o = options(FsKind::Ext4);
    o.block_zeroing = false;
    o
}

/// Writes `len` bytes of a pattern at `offset` of device `id` (activated
/// for it), flushed.
fn write(set: &DeviceSet, id: &str, offset: u64, len: u64, tag: u8) {
    let path = set.activate_device(id).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&vec![tag; len as usize], offset).unwrap();
    f.sync_all().unwrap();
}

/// Random snapshots, writes (whole and partial blocks, often over shared
/// ones) and deletes; every device deactivated at the end.
fn random_tree(set: &DeviceSet, seed: u64, steps: usize) {
    let mut rng = Rng(seed);
    let mut live: Vec<String> = Vec::new();
    let blocks = 64 * MIB / BLOCK;
    for step in 0..steps {
        match rng.below(100) {
            0..=44 => {
                let id = format!("r{step}");
                let parent = match rng.below(live.len() as u64 + 1) as usize {
                    0 => None,
                    i => Some(live[i - 1].clone()),
                };
                set.add_device(&id, parent.as_deref()).unwrap();
                live.push(id);
            }
            45..=84 if !live.is_empty() => {
                let id = live[rng.below(live.len() as u64) as usize].clone();
                for _ in 0..1 + rng.below(6) {
                    let block = rng.below(blocks);
                    // A whole block, or 4 KiB of one (the rest copied from the shared block).
                    let len = if rng.below(2) == 0 { BLOCK } else { 4096 };
                    write(set, &id, block * BLOCK, len, step as u8);
                }
                set.deactivate_device(&id).unwrap();
            }
            85..=99 if !live.is_empty() => {
                let id = live.swap_remove(rng.below(live.len() as u64) as usize);
                set.remove_device(&id).unwrap();
            }
            _ => {}
        }
    }
}

#[test]
fn random_trees_match_thin_ls() {
    dmthin_ioctl_tests::require_device_mapper();
    for seed in [1, 2] {
        let root = Root::new(&format!("usage-rand{seed}"));
        let set = DeviceSet::open(&root.0, set_options()).unwrap();
        assert_matches_thin_ls(&set);
        random_tree(&set, seed, 40);
        let u = assert_matches_thin_ls(&set);
        assert!(u.devices.len() > 3, "{u:?}");
        assert!(u.shared_bytes > 0 && u.exclusive_bytes > 0, "{u:?}");
        set.shutdown().unwrap();
    }
}

#[test]
fn chain_20_deep_and_overwriting_siblings_match_thin_ls() {
    dmthin_ioctl_tests::require_device_mapper();
    let root = Root::new("usage-chain");
    let set = DeviceSet::open(&root.0, set_options()).unwrap();
    let mut rng = Rng(20);
    let mut parent: Option<String> = None;
    for i in 0..20 {
        let id = format!("c{i}");
        set.add_device(&id, parent.as_deref()).unwrap();
        for _ in 0..2 {
            write(&set, &id, rng.below(64) * BLOCK, BLOCK, i as u8);
        }
        set.deactivate_device(&id).unwrap();
        parent = Some(id);
    }
    // Siblings of one parent, each overwriting part of the parent's blocks
    // (and of each other's shares).
    set.add_device("p", None).unwrap();
    write(&set, "p", 0, 32 * BLOCK, 0xaa);
    set.deactivate_device("p").unwrap();
    for s in 0..4u64 {
        let id = format!("s{s}");
        set.add_device(&id, Some("p")).unwrap();
        write(&set, &id, s * 4 * BLOCK, 12 * BLOCK, s as u8);
        write(&set, &id, (s * 4 + 1) * BLOCK + 4096, 4096, 0x55);
        set.deactivate_device(&id).unwrap();
    }
    let u = assert_matches_thin_ls(&set);
    let by_id = |id: &str| u.devices.iter().find(|d| d.id == id).unwrap().clone();
    // s3 overwrote blocks 12..24 of p's 32: the other 20 it shares.
    assert_eq!(by_id("s3").space.exclusive_bytes, 12 * BLOCK);
    // The deepest link maps all the first one does, and owns at most its
    // own two writes.
    assert!(by_id("c19").space.mapped_bytes >= by_id("c0").space.mapped_bytes);
    assert!(by_id("c19").space.exclusive_bytes <= 2 * BLOCK);
    // Delete links in the middle of the chain: their blocks pass to the rest.
    set.remove_device("c10").unwrap();
    set.remove_device("c5").unwrap();
    set.remove_device("p").unwrap();
    let after = assert_matches_thin_ls(&set);
    assert_eq!(after.devices.len(), u.devices.len() - 3);
    assert_eq!(
        set.usage("s3").unwrap().space.thin_id,
        by_id("s3").space.thin_id
    );
    assert_eq!(set.usage("base").unwrap(), after.base);
    set.shutdown().unwrap();
}

#[test]
fn snapshot_is_released_and_the_pool_keeps_working() {
    dmthin_ioctl_tests::require_device_mapper();
    let root = Root::new("usage-release");
    let set = DeviceSet::open(&root.0, set_options()).unwrap();
    set.add_device("a", None).unwrap();
    write(&set, "a", 0, 4 * BLOCK, 1);
    let first = set.usage("a").unwrap();
    assert_eq!(first.space.exclusive_bytes, 4 * BLOCK);
    // Released: another reserve succeeds, and so does a second read.
    holding(&set, || ());
    assert_eq!(set.usage("a").unwrap(), first);
    // Writes and snapshots go on after the read.
    write(&set, "a", 8 * BLOCK, BLOCK, 2);
    set.add_device("b", Some("a")).unwrap();
    // a and b now share all of a's blocks (a maps the base's, too).
    let (a, b) = (set.usage("a").unwrap(), set.usage("b").unwrap());
    assert!(
        a.space.mapped_bytes >= first.space.mapped_bytes,
        "{a:?} {first:?}"
    );
    assert_eq!((a.space.exclusive_bytes, b.space.exclusive_bytes), (0, 0));
    assert_eq!(a.space.mapped_bytes, b.space.mapped_bytes);
    // A snapshot someone else holds: a clear error, and it is left alone.
    let e = holding(&set, || set.usage_all().unwrap_err()).to_string();
    assert!(e.contains("held already"), "{e}");
    holding(&set, || ());
    // Unknown ids are refused.
    assert!(set.usage("nope").is_err());
    assert_matches_thin_ls(&set);
    set.shutdown().unwrap();
}

#[test]
fn reads_while_writers_write_do_not_disturb_them() {
    dmthin_ioctl_tests::require_device_mapper();
    let root = Root::new("usage-writers");
    let set = Arc::new(DeviceSet::open(&root.0, set_options()).unwrap());
    set.add_device("w", None).unwrap();
    let path = set.activate_device("w").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) || n < 32 {
                let off = (n % 512) * BLOCK;
                let data = vec![(n % 251) as u8; BLOCK as usize];
                f.write_all_at(&data, off).unwrap();
                f.sync_data().unwrap();
                let mut back = vec![0u8; BLOCK as usize];
                f.read_exact_at(&mut back, off).unwrap();
                assert_eq!(back, data, "write {n} read back");
                n += 1;
            }
            n
        })
    };
    let mut reads = 0;
    let start = Instant::now();
    while reads < 8 || start.elapsed() < Duration::from_secs(3) {
        let u = set.usage_all().unwrap();
        for d in std::iter::once(&u.base).chain(&u.devices) {
            assert_eq!(
                d.space.mapped_bytes,
                d.space.exclusive_bytes + d.space.shared_bytes
            );
        }
        reads += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().expect("the writer saw no error");
    eprintln!("{reads} usage reads during {writes} writes");
    set.deactivate_device("w").unwrap();
    let u = assert_matches_thin_ls(&set);
    let w = u.devices.iter().find(|d| d.id == "w").unwrap();
    assert_eq!(w.space.exclusive_bytes, writes.min(512) * BLOCK);
    set.shutdown().unwrap();
}

#[test]
fn damaged_metadata_copies_give_errors_naming_the_block() {
    dmthin_ioctl_tests::require_device_mapper();
    let root = Root::new("usage-corrupt");
    let set = DeviceSet::open(&root.0, set_options()).unwrap();
    random_tree(&set, 7, 20);
    let u = set.usage_all().unwrap();
    let dev = metadata_loop(&set);
    let copy = root.0.join("meta.copy");
    holding(&set, || {
        sh_ok(&format!(
            "dd if={dev} of={} bs=1M iflag=direct status=none",
            copy.display()
        ))
    });
    let bytes = std::fs::read(&copy).unwrap();
    let le64 = |b: &[u8], off: usize| u64::from_le_bytes(b[off..off + 8].try_into().unwrap());
    // The copy holds the snapshot it was taken under: the same figures.
    let md = Metadata::open(bytes.as_slice(), Source::Snapshot).unwrap();
    let pool = md.usage().unwrap();
    let theirs: Figures = pool
        .devices
        .iter()
        .map(|d| {
            (
                d.thin_id,
                (d.mapped_bytes, d.exclusive_bytes, d.shared_bytes),
            )
        })
        .collect();
    assert_eq!(theirs, ours(&u));
    // A flipped byte in the mapping tree's root node.
    let held = le64(&bytes, 56) as usize;
    let mapping_root = le64(&bytes[held * 4096..], 320);
    let mut flipped = bytes.clone();
    flipped[mapping_root as usize * 4096 + 100] ^= 0x40;
    let e = Metadata::open(flipped.as_slice(), Source::Snapshot)
        .and_then(|m| m.usage())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("block {mapping_root}")) && e.contains("checksum"),
        "{e}"
    );
    // Truncated before the held superblock.
    let e = Metadata::open(&bytes[..held * 4096], Source::Snapshot)
        .err()
        .expect("a truncated copy fails")
        .to_string();
    assert!(
        e.contains(&format!("block {held}")) && e.contains("truncated"),
        "{e}"
    );
    set.shutdown().unwrap();
}

#[test]
fn read_only_pool_is_read_live() {
    dmthin_ioctl_tests::require_device_mapper();
    let root = Root::new("usage-ro");
    let set = DeviceSet::open(&root.0, set_options()).unwrap();
    set.add_device("a", None).unwrap();
    write(&set, "a", 0, 3 * BLOCK, 1);
    set.deactivate_device("a").unwrap();
    let rw = set.usage_all().unwrap();
    let pool = set.pool_name().to_string();
    let table = sh_ok(&format!("dmsetup table {pool}"));
    let mut f: Vec<&str> = table.split_whitespace().collect();
    let n: usize = f[7].parse().unwrap();
    let ro_count = (n + 1).to_string();
    f[7] = &ro_count;
    f.push("read_only");
    sh_ok(&format!(
        "dmsetup suspend {pool} && dmsetup reload {pool} --table '{}' && dmsetup resume {pool}",
        f.join(" ")
    ));
    let ro = set.usage_all().unwrap();
    sh_ok(&format!(
        "dmsetup suspend {pool} && dmsetup reload {pool} --table '{}' && dmsetup resume {pool}",
        table.trim()
    ));
    assert!(!ro.from_snapshot);
    assert_eq!(ours(&ro), ours(&rw));
    // Writable again: a write and a snapshot read work.
    write(&set, "a", 4 * BLOCK, BLOCK, 2);
    assert_eq!(set.usage("a").unwrap().space.exclusive_bytes, 4 * BLOCK);
    set.shutdown().unwrap();
}

#[test]
fn cli_usage_prints_a_sorted_table_and_json() {
    dmthin_ioctl_tests::require_device_mapper();
    let root = Root::new("usage-cli");
    {
        let set = DeviceSet::open(&root.0, set_options()).unwrap();
        set.add_device("small", None).unwrap();
        write(&set, "small", 0, BLOCK, 1);
        set.add_device("big", None).unwrap();
        write(&set, "big", 0, 8 * BLOCK, 2);
        // Dropped without shutdown: the CLI takes the set's lock.
    }
    let r = root.0.display();
    let help = sh_ok("dmthin usage --help");
    assert!(
        help.starts_with("Usage: dmthin") && help.contains("EXCLUSIVE"),
        "{help}"
    );
    let table = sh_ok(&format!("dmthin --root {r} usage"));
    let rows: Vec<&str> = table.lines().collect();
    assert!(rows[0].starts_with("ID "), "{table}");
    assert!(
        rows[1].starts_with("big ") && rows[1].contains("512.0 KiB"),
        "{table}"
    );
    assert!(rows.last().unwrap().starts_with("Pool: "), "{table}");
    let json = sh_ok(&format!("dmthin --root {r} usage small --json 2>/dev/null"));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v[0]["id"], "small");
    assert_eq!(v[0]["exclusive_bytes"], BLOCK);
    let (ok, out) = sh(&format!("dmthin --root {r} usage nope"));
    assert!(!ok && out.contains("nope"), "{out}");
    let all: serde_json::Value = serde_json::from_str(&sh_ok(&format!(
        "dmthin --root {r} usage --json 2>/dev/null"
    )))
    .unwrap();
    assert_eq!(all["devices"].as_array().unwrap().len(), 2);
    assert_eq!(all["from_snapshot"], true);
    let set = DeviceSet::open(&root.0, set_options()).unwrap();
    set.shutdown().unwrap();
}

/// Seconds `f` takes, best of `n`.
fn best_of<T>(n: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::MAX;
    let mut last = None;
    for _ in 0..n {
        let t = Instant::now();
        last = Some(f());
        best = best.min(t.elapsed().as_secs_f64());
    }
    (best, last.unwrap())
}

/// The benchmark: 1,000 devices, 10 GiB mapped on a seed device (one 4 KiB
/// write per 64 KiB block, zeroing off: every block provisioned), each device
/// a snapshot of it, every tenth with a few blocks of its own. usage_all
/// against `thin_ls --metadata-snap`. Wants a scratch disk of 16 GiB
/// (benches/usage.sh).
#[test]
#[ignore]
fn bench_usage_1000_devices() {
    dmthin_ioctl_tests::require_device_mapper();
    let devices: usize = std::env::var("USAGE_BENCH_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let gib: u64 = std::env::var("USAGE_BENCH_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mnt = Path::new("/mnt/usage-bench");
    let scratch = dmthin_ioctl_tests::scratch_device().expect("a --scratch disk");
    std::fs::create_dir_all(mnt).unwrap();
    sh_ok(&format!(
        "mkfs.ext4 -q -F {} && mount {} {}",
        scratch.display(),
        scratch.display(),
        mnt.display()
    ));
    let root = mnt.join("set");
    let mut o = set_options();
    o.storage = StorageOptions::LoopFiles {
        data_size: (gib + 2) << 30,
        metadata_size: 512 * MIB,
    };
    o.base_size = gib << 30;
    let t = Instant::now();
    let set = DeviceSet::open(&root, o).unwrap();
    eprintln!("bench: set made in {:.1} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    set.add_device("seed", None).unwrap();
    {
        let path = set.activate_device("seed").unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        let page = vec![0x5a; 4096];
        for b in 0..(gib << 30) / BLOCK {
            f.write_all_at(&page, b * BLOCK).unwrap();
        }
        f.sync_all().unwrap();
    }
    set.deactivate_device("seed").unwrap();
    eprintln!(
        "bench: {gib} GiB mapped on a seed device in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let mut rng = Rng(1000);
    for i in 0..devices {
        let id = format!("s{i}");
        set.add_device(&id, Some("seed")).unwrap();
        if i % 10 == 0 {
            for _ in 0..4 {
                let b = rng.below((gib << 30) / BLOCK);
                write(&set, &id, b * BLOCK, 4096, i as u8);
            }
            set.deactivate_device(&id).unwrap();
        }
    }
    eprintln!(
        "bench: {devices} devices made in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let (ours_s, u) = best_of(3, || set.usage_all().unwrap());
    eprintln!("bench: usage_all {ours_s:.3} s");
    // thin_ls walks every device's whole tree: slow here, so its first
    // (timed) run also gives the figures compared, and it is repeated only
    // when that is cheap.
    let (ls, mut ls_s) = thin_ls_timed(&set);
    eprintln!("bench: thin_ls {ls_s:.3} s");
    assert_eq!(ours(&u), ls, "usage_all vs thin_ls");
    if ls_s < 20.0 {
        for _ in 0..2 {
            ls_s = ls_s.min(thin_ls_timed(&set).1);
        }
    }
    // Dropped without shutdown: the pool stays for the CLI, which takes the set's lock.
    drop(set);
    let r = root.display();
    let (cli_s, _) = best_of(3, || sh_ok(&format!("dmthin --root {r} usage >/dev/null")));
    eprintln!(
        "BENCH usage: {} devices, {:.1} GiB mapped, {:.1} GiB allocated: \
         usage_all {ours_s:.3} s, thin_ls --metadata-snap {ls_s:.3} s (usage_all includes its reserve and release, thin_ls not), \
         `dmthin usage` (CLI, set open included) {cli_s:.3} s",
        u.devices.len(),
        u.mapped_bytes as f64 / (1u64 << 30) as f64,
        u.allocated_bytes as f64 / (1u64 << 30) as f64,
    );
    let recorded = DeviceSet::recorded_options(&root).unwrap().unwrap();
    let set = DeviceSet::open(&root, recorded).unwrap();
    set.shutdown().unwrap();
    drop(set);
    sh(&format!("umount {}", mnt.display()));
}
