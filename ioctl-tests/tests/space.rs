//! Sizes per device and space that comes back (issue #15): a device bigger
//! than its parent gets a filesystem grown to fill it (ext4 and xfs), a
//! smaller size is refused; removing a layer and trimming a mounted one give
//! the loop data file's blocks back to the host. The ignored
//! `bench_remove_discard` times removal with and without the discard
//! (benches/space.sh runs it).

mod common;

use common::*;
use dmthin::deviceset::{DeviceSet, DeviceSetError, FsKind, Options, StorageOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::Instant;

const GIB: u64 = 1 << 30;

/// Bytes the space tests write: `SPACE_WRITE_MIB`, else 512 MiB on a
/// scratch disk and 128 MiB in the guest's small /tmp.
fn written_bytes() -> u64 {
    let default = if scratch_dir().is_some() { 512 } else { 128 };
    std::env::var("SPACE_WRITE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        * MIB
}

/// Allocated bytes of the set's data file on the host.
fn allocated(root: &Path) -> u64 {
    std::fs::metadata(root.join("devicemapper/data"))
        .unwrap()
        .blocks()
        * 512
}

/// Small loop-file pool options with a `base` byte base device.
fn sized_options(fs: FsKind, base: u64, data: u64) -> Options {
    let mut o = options(fs);
    o.base_size = base;
    o.storage = StorageOptions::LoopFiles {
        data_size: data,
        metadata_size: 16 * MIB,
    };
    o
}

/// Writes `bytes` of 0x5a to `path` (a device or file) in 1 MiB writes, synced.
fn fill(path: &Path, bytes: u64) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap();
    let buf = vec![0x5a; 1 << 20];
    for i in 0..bytes >> 20 {
        f.write_all_at(&buf, i << 20).unwrap();
    }
    f.sync_all().unwrap();
}

fn grown_device(fs: FsKind) {
    let root = big_root(&format!("space-grow-{}", fs.as_str()));
    let set = DeviceSet::open(&root.0, sized_options(fs, 512 * MIB, GIB)).unwrap();
    let t0 = Instant::now();
    set.add_device_sized("big", None, Some(2 * GIB)).unwrap();
    eprintln!(
        "{}: 2 GiB device from a 512 MiB base in {:.1} s",
        fs.as_str(),
        t0.elapsed().as_secs_f64()
    );
    let big = set.list().unwrap().into_iter().find(|d| d.id == "big");
    assert_eq!(big.map(|d| d.size), Some(2 * GIB));
    let mnt = root.mnt("big");
    set.mount_device("big", &mnt, false).unwrap();
    let bytes = fs_bytes(&mnt);
    assert!(
        bytes > 2 * GIB * 9 / 10 && bytes <= 2 * GIB,
        "{}: the filesystem spans {bytes} bytes of a 2 GiB device",
        fs.as_str()
    );
    std::fs::write(mnt.join("kept"), "data").unwrap();
    set.unmount_device("big", &mnt, true).unwrap();

    // A child of the 2 GiB device: 1 GiB is refused, naming the sizes;
    // no size gives the parent's.
    match set.add_device_sized("small", Some("big"), Some(GIB)) {
        Err(e @ DeviceSetError::InvalidOption { option: "size", .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("smaller than its parent") && msg.contains(&(2 * GIB).to_string()),
                "{msg}"
            );
        }
        other => panic!("1 GiB child of a 2 GiB device: {other:?}"),
    }
    assert!(!set.has_device("small"));
    set.add_device("child", Some("big")).unwrap();
    let child = set.list().unwrap().into_iter().find(|d| d.id == "child");
    assert_eq!(child.map(|d| d.size), Some(2 * GIB));
    set.mount_device("child", &mnt, true).unwrap();
    assert_eq!(std::fs::read_to_string(mnt.join("kept")).unwrap(), "data");
    set.unmount_device("child", &mnt, true).unwrap();
    check_invariants(&set);
    set.shutdown().unwrap();
    // A reopen finds nothing pending.
    drop(set);
    let set = DeviceSet::open(&root.0, sized_options(fs, 512 * MIB, GIB)).unwrap();
    assert_eq!(set.list().unwrap().len(), 2);
    set.shutdown().unwrap();
}

#[test]
fn sized_device_gets_a_grown_ext4() {
    dmthin_ioctl_tests::require_device_mapper();
    grown_device(FsKind::Ext4);
}

#[test]
fn sized_device_gets_a_grown_xfs() {
    dmthin_ioctl_tests::require_device_mapper();
    grown_device(FsKind::Xfs);
}

/// The CLI: `create --size`, the refusal's message, `list` and `status`.
#[test]
fn cli_create_size_list_and_status() {
    dmthin_ioctl_tests::require_device_mapper();
    let root = big_root("space-cli");
    dmthin_ok(&root.0, &SMALL_INIT);
    dmthin_ok(&root.0, &["create", "big", "--size", "128M"]);
    let list = dmthin_ok(&root.0, &["list"]);
    let row = list.lines().find(|l| l.starts_with("big ")).unwrap();
    assert!(row.contains("128.0 MiB"), "{list}");
    let out = dmthin_cli(&root.0, &["create", "c", "--from", "big", "--size", "64M"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("smaller than its parent"), "{err}");
    let out = dmthin_cli(&root.0, &["create", "c", "--size", "lots"]);
    assert_eq!(out.status.code(), Some(2));
    let status = dmthin_ok(&root.0, &["status"]);
    assert!(status.contains("allocated on the host"), "{status}");
    let json = dmthin_ok(&root.0, &["status", "--json"]);
    assert!(json.contains("\"data_allocated\": "), "{json}");
    let mnt = root.mnt("big");
    dmthin_ok(&root.0, &["mount", "big", mnt.to_str().unwrap()]);
    let bytes = fs_bytes(&mnt);
    assert!(bytes > 110 * MIB, "{bytes}");
    let trim = dmthin_ok(&root.0, &["trim"]);
    assert!(
        trim.contains("big ") && trim.contains("host got back"),
        "{trim}"
    );
    dmthin_ok(&root.0, &["umount", "big", mnt.to_str().unwrap()]);
    dmthin_ok(&root.0, &["shutdown"]);
}

/// The pool's status line says whether discards pass down to the data device.
fn passes_discards_down(set: &DeviceSet) -> bool {
    let status = sh_ok(&format!("dmsetup status {}", set.pool_name()));
    !status.contains("no_discard_passdown") && status.contains("discard_passdown")
}

/// Write 512 MiB into a layer, remove it: the data file's allocation drops by
/// at least 95% of it, and so do the pool's used blocks.
#[test]
fn remove_gives_the_space_back() {
    dmthin_ioctl_tests::require_device_mapper();
    let root = big_root("space-remove");
    let written = written_bytes();
    let set = DeviceSet::open(&root.0, sized_options(FsKind::Ext4, 64 * MIB, GIB)).unwrap();
    assert!(
        passes_discards_down(&set),
        "loop-file pools pass discards down"
    );
    // Room for what is written: a sized device.
    set.add_device_sized("layer", None, Some(written + 64 * MIB))
        .unwrap();
    let dev = set.activate_device("layer").unwrap();
    let t0 = Instant::now();
    fill(&dev, written);
    let write_secs = t0.elapsed().as_secs_f64();
    set.deactivate_device("layer").unwrap();
    let (alloc_before, used_before) = (allocated(&root.0), set.status().unwrap().data_used);
    assert_eq!(set.status().unwrap().data_allocated, Some(alloc_before));
    let t0 = Instant::now();
    set.remove_device("layer").unwrap();
    let remove_secs = t0.elapsed().as_secs_f64();
    let (alloc_after, used_after) = (allocated(&root.0), set.status().unwrap().data_used);
    eprintln!(
        "remove: {} MiB written in {write_secs:.1} s, removed in {remove_secs:.1} s; \
         data file {} -> {} MiB, pool used {} -> {} MiB",
        written >> 20,
        alloc_before >> 20,
        alloc_after >> 20,
        used_before >> 20,
        used_after >> 20
    );
    let back = alloc_before.saturating_sub(alloc_after);
    assert!(
        back >= written / 100 * 95,
        "the host got {back} bytes back of {written} written"
    );
    assert!(
        used_before - used_after >= written / 100 * 95,
        "pool used {used_before} -> {used_after}"
    );
    assert!(!set.has_device("layer"));
    check_invariants(&set);
    set.shutdown().unwrap();
    drop(set);
    let (ok, out) = thin_check_file(&root.0.join("devicemapper/metadata"));
    assert!(ok, "{out}");
}

/// Without the discard (the option off), the pool frees the blocks but the
/// data file keeps them; `trim` on a mounted layer after deleting files
/// gives them back.
#[test]
fn trim_gives_deleted_files_back() {
    dmthin_ioctl_tests::require_device_mapper();
    let root = big_root("space-trim");
    let written = written_bytes();
    let mut o = sized_options(FsKind::Ext4, 768 * MIB, GIB);
    // Trim, not the mount option, is what is tested here.
    o.mount_discard = false;
    let set = DeviceSet::open(&root.0, o).unwrap();
    set.add_device("layer", None).unwrap();
    let mnt = root.mnt("layer");
    set.mount_device("layer", &mnt, false).unwrap();
    fill(&mnt.join("big"), written);
    sh_ok("sync");
    std::fs::remove_file(mnt.join("big")).unwrap();
    sh_ok("sync");
    let (alloc_before, used_before) = (allocated(&root.0), set.status().unwrap().data_used);
    let t0 = Instant::now();
    let report = set.trim().unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let (alloc_after, used_after) = (allocated(&root.0), set.status().unwrap().data_used);
    eprintln!(
        "trim: {report:?} in {secs:.1} s; data file {} -> {} MiB, pool used {} -> {} MiB",
        alloc_before >> 20,
        alloc_after >> 20,
        used_before >> 20,
        used_after >> 20
    );
    assert_eq!(report.mounts.len(), 1, "{report:?}");
    let m = &report.mounts[0];
    assert_eq!((m.id.as_str(), m.error.as_deref()), ("layer", None));
    assert!(m.trimmed.unwrap() >= written, "{report:?}");
    let back = report.host_reclaimed.unwrap();
    assert!(
        back >= written / 100 * 95,
        "the host got {back} bytes back of {written} deleted"
    );
    assert!(
        alloc_before - alloc_after >= written / 100 * 95,
        "data file {alloc_before} -> {alloc_after}"
    );
    assert!(
        used_before - used_after >= written / 100 * 95,
        "pool used {used_before} -> {used_after}"
    );
    set.unmount_device("layer", &mnt, true).unwrap();
    set.shutdown().unwrap();
}

/// With the discard off, removing a layer leaves its blocks in the data file.
#[test]
fn remove_without_discard_keeps_the_file_allocated() {
    dmthin_ioctl_tests::require_device_mapper();
    let root = big_root("space-nodiscard");
    let mut o = sized_options(FsKind::Ext4, 64 * MIB, GIB);
    o.remove_discard = Some(false);
    let set = DeviceSet::open(&root.0, o).unwrap();
    set.add_device("layer", None).unwrap();
    let dev = set.activate_device("layer").unwrap();
    fill(&dev, 64 * MIB);
    set.deactivate_device("layer").unwrap();
    let before = allocated(&root.0);
    set.remove_device("layer").unwrap();
    assert!(allocated(&root.0) + MIB > before, "the option is off");
    set.shutdown().unwrap();
    drop(set);
    // Remembered: the recorded options keep it off.
    let recorded = DeviceSet::recorded_options(&root.0).unwrap().unwrap();
    assert_eq!(recorded.remove_discard, Some(false));
}

/// The benchmark: removal time of a layer with 1 GiB and 8 GiB mapped, with
/// and without the discard. Each 64 KiB block gets one 4 KiB write (zeroing
/// off), so the pool maps the full size while the guest writes 1/16 of it;
/// `SPACE_BENCH_FULL=1` writes every byte. `SPACE_BENCH_GIB` lists the
/// sizes (1,8). Wants a scratch disk (benches/space.sh).
#[test]
#[ignore]
fn bench_remove_discard() {
    dmthin_ioctl_tests::require_device_mapper();
    let mnt = scratch_dir().expect("a --scratch disk");
    let sizes: Vec<u64> = std::env::var("SPACE_BENCH_GIB")
        .unwrap_or_else(|_| "1,8".into())
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    // SPACE_BENCH_FULL=1: every byte written, not one page per block.
    let full = std::env::var("SPACE_BENCH_FULL").is_ok_and(|v| v == "1");
    let page = vec![0x5a; 4096];
    for gib in sizes {
        for discard in [false, true] {
            let root = mnt.join(format!("set-{gib}-{discard}"));
            let mut o = sized_options(FsKind::Ext4, gib * GIB, (2 * gib + 1) * GIB);
            o.storage = StorageOptions::LoopFiles {
                data_size: (2 * gib + 1) * GIB,
                metadata_size: 64 * MIB,
            };
            // Only the layer's blocks matter: no inode tables written ahead.
            o.mkfs_options = vec!["-E".into(), "lazy_itable_init=1,lazy_journal_init=1".into()];
            o.block_zeroing = false;
            o.remove_discard = Some(discard);
            o.min_free_space_percent = 0;
            let set = DeviceSet::open(&root, o).unwrap();
            set.add_device("layer", None).unwrap();
            let dev = set.activate_device("layer").unwrap();
            let t0 = Instant::now();
            if full {
                fill(&dev, gib * GIB);
            } else {
                let f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
                for b in 0..(gib * GIB) / (64 << 10) {
                    f.write_all_at(&page, b * (64 << 10)).unwrap();
                }
                f.sync_all().unwrap();
            }
            let fill_secs = t0.elapsed().as_secs_f64();
            set.deactivate_device("layer").unwrap();
            let before = allocated(&root);
            let t0 = Instant::now();
            set.remove_device("layer").unwrap();
            let secs = t0.elapsed().as_secs_f64();
            let after = allocated(&root);
            eprintln!(
                "BENCH space: remove {gib} GiB mapped ({}), discard {}: {secs:.2} s \
                 (data file {} -> {} MiB; writing took {fill_secs:.1} s)",
                if full {
                    "all written"
                } else {
                    "a page per block"
                },
                if discard { "on" } else { "off" },
                before >> 20,
                after >> 20
            );
            set.shutdown().unwrap();
            drop(set);
            std::fs::remove_dir_all(&root).unwrap();
        }
    }
}
