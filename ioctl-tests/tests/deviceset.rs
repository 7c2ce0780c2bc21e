//! Kernel suite for `dmthin::deviceset`: the device set against the real
//! kernel, cross-checked with dmsetup, losetup and thin_dump.

use dmthin::deviceset::{DeviceSet, DeviceSetError, FsKind, RemoveOutcome, StorageOptions};
use dmthin::dm::{Control, CreateOptions, DevId, RemoveOptions, UdevFlags};
use dmthin::target::TableLine;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::*;

fn write_file(dir: &Path, name: &str, content: &str) {
    std::fs::write(dir.join(name), content).unwrap();
    sh_ok("sync");
}

#[test]
fn walkthrough_ext4_snapshots_are_isolated() {
    let root = Root::new("walk");
    let set = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap();
    set.add_device("a", None).unwrap();
    set.add_device("b", None).unwrap();
    let (ma, mb) = (root.mnt("a"), root.mnt("b"));
    set.mount_device("a", &ma, false).unwrap();
    write_file(&ma, "hello", "from a");
    set.mount_device("b", &mb, false).unwrap();
    assert!(!mb.join("hello").exists(), "sibling must not see a's file");
    assert!(
        mb.join("lost+found").exists(),
        "b carries the base filesystem"
    );
    // Snapshot of an active, mounted device: the origin is suspended around create_snap.
    set.add_device("a2", Some("a")).unwrap();
    let ma2 = root.mnt("a2");
    set.mount_device("a2", &ma2, false).unwrap();
    assert_eq!(
        std::fs::read_to_string(ma2.join("hello")).unwrap(),
        "from a"
    );
    write_file(&ma2, "only-in-a2", "x");
    assert!(
        !ma.join("only-in-a2").exists(),
        "parent must not see the child's writes"
    );
    // Cross-check with dmsetup.
    let ls = sh_ok("dmsetup ls");
    for id in ["a", "b", "a2"] {
        assert!(
            ls.contains(&set.device_name(id)),
            "{id} missing from dmsetup ls: {ls}"
        );
    }
    let list = set.list().unwrap();
    let a = list.iter().find(|d| d.id == "a").unwrap();
    assert!(a.active && a.mount_points == vec![ma.clone()]);
    assert!(a.mapped_bytes.unwrap() > 0);
    let table = sh_ok(&format!("dmsetup table {}", set.device_name("a")));
    assert!(
        table.trim().ends_with(&format!(" {}", a.thin_id)),
        "{table}"
    );
    assert_eq!(a.size, 64 * MIB);
    let a2 = list.iter().find(|d| d.id == "a2").unwrap();
    assert_eq!(a2.parent.as_deref(), Some("a"));
    let st = set.status().unwrap();
    assert_eq!(st.mode, "rw");
    assert_eq!(st.data_total, 1024 * MIB);
    assert!(st.data_used > 0 && st.metadata_used > 0 && st.metadata_total == 16 * MIB);
    assert_eq!(st.devices, 3);
    check_invariants(&set);
    // Mounted devices cannot be removed.
    assert!(matches!(
        set.remove_device("a"),
        Err(DeviceSetError::Mounted { .. })
    ));
    for (id, m) in [("a", &ma), ("b", &mb), ("a2", &ma2)] {
        set.unmount_device(id, m, true).unwrap();
        assert!(!set.has_activated_device(id));
    }
    set.remove_device("b").unwrap();
    assert!(!set.has_device("b"));
    check_invariants(&set);
    set.shutdown().unwrap();
    let prefix = dmthin::deviceset::name_prefix(&root.0).unwrap();
    assert!(
        !sh_ok("dmsetup ls").contains(&prefix),
        "shutdown left devices"
    );
    let (_, loops) = sh(&format!(
        "losetup -j {}",
        root.0.join("devicemapper/data").display()
    ));
    assert!(loops.trim().is_empty(), "loop device still bound: {loops}");
    assert!(matches!(
        set.add_device("z", None),
        Err(DeviceSetError::Closed)
    ));
}

#[test]
fn xfs_snapshots_mount_side_by_side() {
    let root = Root::new("xfs");
    let set = DeviceSet::open(&root.0, options(FsKind::Xfs)).unwrap();
    set.add_device("x1", None).unwrap();
    set.add_device("x2", None).unwrap();
    set.mount_device("x1", root.mnt("x1"), false).unwrap();
    set.mount_device("x2", root.mnt("x2"), false).unwrap();
    write_file(&root.mnt("x1"), "f", "1");
    assert!(!root.mnt("x2").join("f").exists());
    let fstype = sh_ok(&format!("stat -f -c %T {}", root.mnt("x2").display()));
    assert_eq!(fstype.trim(), "xfs");
    set.unmount_device("x1", root.mnt("x1"), true).unwrap();
    set.unmount_device("x2", root.mnt("x2"), true).unwrap();
    check_invariants(&set);
    set.shutdown().unwrap();
}

#[test]
fn reopen_after_shutdown_and_after_exit_without_shutdown() {
    let root = Root::new("reopen");
    {
        let set = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap();
        set.add_device("keep", None).unwrap();
        set.mount_device("keep", root.mnt("keep"), false).unwrap();
        write_file(&root.mnt("keep"), "data", "persisted");
        set.set_initialized("keep", true).unwrap();
        set.unmount_device("keep", root.mnt("keep"), true).unwrap();
        set.shutdown().unwrap();
    }
    {
        let set = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap();
        assert!(set.has_device("keep") && set.has_initialized_device("keep"));
        set.mount_device("keep", root.mnt("keep"), false).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.mnt("keep").join("data")).unwrap(),
            "persisted"
        );
        check_invariants(&set);
        // Dropped without shutdown: devices stay active and mounted.
    }
    let set = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap();
    assert!(set.has_activated_device("keep"));
    let d = set
        .list()
        .unwrap()
        .into_iter()
        .find(|d| d.id == "keep")
        .unwrap();
    assert_eq!(
        d.mount_points,
        vec![root.mnt("keep")],
        "existing mount adopted"
    );
    set.unmount_device("keep", root.mnt("keep"), true).unwrap();
    set.remove_device("keep").unwrap();
    check_invariants(&set);
    set.shutdown().unwrap();
}

#[test]
fn eight_threads_add_mount_unmount_remove() {
    let root = Root::new("threads");
    let set = Arc::new(DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let set = Arc::clone(&set);
            let base = root.0.join("mnt");
            std::thread::spawn(move || {
                for k in 0..3 {
                    let id = format!("t{t}-{k}");
                    let mp = base.join(&id);
                    set.add_device(&id, None).unwrap();
                    set.mount_device(&id, &mp, false).unwrap();
                    std::fs::write(mp.join("id"), &id).unwrap();
                    set.unmount_device(&id, &mp, true).unwrap();
                    if k < 2 {
                        set.remove_device(&id).unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("worker thread");
    }
    let ids: BTreeSet<String> = set.list().unwrap().into_iter().map(|d| d.id).collect();
    let expected: BTreeSet<String> = (0..8).map(|t| format!("t{t}-2")).collect();
    assert_eq!(ids, expected);
    check_invariants(&set);
    set.shutdown().unwrap();
}

#[test]
fn refusals_have_clear_errors() {
    let root = Root::new("refuse");
    let set = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap();
    set.add_device("one", None).unwrap();
    let e = set.add_device("one", None).unwrap_err();
    assert!(matches!(e, DeviceSetError::DeviceExists(_)), "{e}");
    let e = set.add_device("two", Some("nope")).unwrap_err();
    assert!(matches!(e, DeviceSetError::UnknownParent { .. }), "{e}");
    assert!(e.to_string().contains("nope"));
    for reserved in ["pool", "base"] {
        assert!(matches!(
            set.add_device(reserved, None),
            Err(DeviceSetError::ReservedId(_))
        ));
    }
    for bad in ["", "../x", "a/b", ".", "..", "a b", "x\n", "é"] {
        let e = set.add_device(bad, None).unwrap_err();
        assert!(matches!(e, DeviceSetError::Id(_)), "{bad:?}: {e}");
    }
    let sha = "a".repeat(64);
    set.add_device(&sha, None).unwrap();
    let too_long = "b".repeat(set.max_id_len() + 1);
    let e = set.add_device(&too_long, None).unwrap_err().to_string();
    assert!(
        e.contains(&set.max_id_len().to_string()),
        "error must state the limit: {e}"
    );
    assert!(matches!(
        set.remove_device("nope"),
        Err(DeviceSetError::UnknownDevice(_))
    ));
    // A second opener of the same root.
    let e = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap_err();
    assert!(matches!(e, DeviceSetError::Lock(_)), "{e}");
    check_invariants(&set);
    set.shutdown().unwrap();
    drop(set);
    // Shrinking the base is refused, and so is changing the filesystem.
    let mut small = options(FsKind::Ext4);
    small.base_size = 32 * MIB;
    let e = DeviceSet::open(&root.0, small).unwrap_err();
    assert!(matches!(e, DeviceSetError::OptionMismatch { .. }), "{e}");
    let e = DeviceSet::open(&root.0, options(FsKind::Xfs)).unwrap_err();
    assert!(matches!(e, DeviceSetError::OptionMismatch { .. }), "{e}");
}

#[test]
fn low_free_space_refuses_add_and_grow_pool_fixes_it() {
    let root = Root::new("space");
    let mut o = options(FsKind::Ext4);
    o.storage = StorageOptions::LoopFiles {
        data_size: 128 * MIB,
        metadata_size: 8 * MIB,
    };
    o.base_size = 128 * MIB;
    o.min_free_space_percent = 50;
    let set = DeviceSet::open(&root.0, o).unwrap();
    set.add_device("fill", None).unwrap();
    set.mount_device("fill", root.mnt("fill"), false).unwrap();
    sh_ok(&format!(
        "dd if=/dev/urandom of={}/big bs=1M count=72 conv=fsync 2>&1",
        root.mnt("fill").display()
    ));
    let st = set.status().unwrap();
    assert!(
        st.data_used * 2 > st.data_total,
        "pool should be over half full: {st:?}"
    );
    let e = set.add_device("more", None).unwrap_err();
    assert!(
        matches!(e, DeviceSetError::LowSpace { what: "data", .. }),
        "{e}"
    );
    assert!(e.to_string().contains("50%"), "{e}");
    set.grow_pool(512 * MIB).unwrap();
    let st = set.status().unwrap();
    assert_eq!(st.data_total, 512 * MIB);
    let table = sh_ok(&format!("dmsetup table {}", set.pool_name()));
    assert!(
        table.starts_with(&format!("0 {} thin-pool", 512 * MIB / 512)),
        "{table}"
    );
    set.add_device("more", None).unwrap();
    assert_eq!(
        std::fs::metadata(root.mnt("fill").join("big"))
            .unwrap()
            .len(),
        72 * MIB
    );
    set.unmount_device("fill", root.mnt("fill"), true).unwrap();
    check_invariants(&set);
    set.shutdown().unwrap();
}

#[test]
fn corrupt_record_is_named_and_the_rest_of_the_set_works() {
    let root = Root::new("corrupt");
    {
        let set = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap();
        set.add_device("good", None).unwrap();
        set.add_device("bad", None).unwrap();
        set.add_device("short", None).unwrap();
        set.shutdown().unwrap();
    }
    let devices = root.0.join("metadata/devices");
    std::fs::write(devices.join("bad.json"), b"\x00garbage{{").unwrap();
    let full = std::fs::read(devices.join("short.json")).unwrap();
    std::fs::write(devices.join("short.json"), &full[..full.len() / 2]).unwrap();
    let set = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap();
    let named: Vec<String> = set
        .problems()
        .iter()
        .map(|p| p.path.display().to_string())
        .collect();
    assert!(named.iter().any(|p| p.ends_with("bad.json")), "{named:?}");
    assert!(named.iter().any(|p| p.ends_with("short.json")), "{named:?}");
    assert!(set.has_device("good"));
    assert!(!set.has_device("bad"));
    set.mount_device("good", root.mnt("good"), false).unwrap();
    set.unmount_device("good", root.mnt("good"), true).unwrap();
    // New devices skip thin ids the damaged records still hold in the pool.
    set.add_device("new", None).unwrap();
    assert_eq!(
        std::fs::read(devices.join("bad.json")).unwrap(),
        b"\x00garbage{{",
        "damaged record left untouched"
    );
    set.shutdown().unwrap();
}

#[test]
fn base_growth_reaches_new_snapshots() {
    let root = Root::new("grow-base");
    {
        let set = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap();
        set.add_device("old", None).unwrap();
        set.shutdown().unwrap();
    }
    let mut o = options(FsKind::Ext4);
    o.base_size = 128 * MIB;
    let set = DeviceSet::open(&root.0, o).unwrap();
    assert_eq!(set.status().unwrap().base_size, 128 * MIB);
    set.add_device("new", None).unwrap();
    let list = set.list().unwrap();
    assert_eq!(list.iter().find(|d| d.id == "old").unwrap().size, 64 * MIB);
    assert_eq!(list.iter().find(|d| d.id == "new").unwrap().size, 128 * MIB);
    set.mount_device("new", root.mnt("new"), false).unwrap();
    let blocks: u64 = sh_ok(&format!("stat -f -c '%b %S' {}", root.mnt("new").display()))
        .split_whitespace()
        .map(|x| x.parse::<u64>().unwrap())
        .product();
    assert!(
        blocks > 100 * MIB,
        "filesystem was not grown: {blocks} bytes"
    );
    set.unmount_device("new", root.mnt("new"), true).unwrap();
    check_invariants(&set);
    set.shutdown().unwrap();
}

#[test]
fn busy_device_deferred_removal_and_id_reuse() {
    let root = Root::new("deferred");
    let set = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap();
    set.add_device("held", None).unwrap();
    let path = set.activate_device("held").unwrap();
    let thin = set.list().unwrap()[0].thin_id;
    let holder = std::fs::File::open(&path).unwrap();
    let e = set.remove_device("held").unwrap_err();
    assert!(matches!(e, DeviceSetError::Busy { .. }), "{e}");
    assert_eq!(
        set.remove_device_deferred("held").unwrap(),
        RemoveOutcome::Deferred
    );
    assert!(!set.has_device("held"));
    assert!(matches!(
        set.add_device("held", None),
        Err(DeviceSetError::PendingDeletion(_))
    ));
    drop(holder);
    std::thread::sleep(Duration::from_millis(200));
    set.cleanup_deferred().unwrap();
    assert!(!sh_ok("dmsetup ls").contains(&set.device_name("held")));
    check_invariants(&set);
    // The freed thin id is handed out again.
    set.add_device("again", None).unwrap();
    assert_eq!(set.list().unwrap()[0].thin_id, thin);
    set.shutdown().unwrap();
}

#[test]
fn block_devices_and_adopted_pools() {
    let root = Root::new("blockdev");
    let data = LoopDevice::with_sparse_file(&root.0, "d", 512 * MIB);
    let meta = LoopDevice::with_sparse_file(&root.0, "m", 16 * MIB);
    let set_root = root.0.join("set");
    let mut o = options(FsKind::Ext4);
    o.storage = StorageOptions::BlockDevices {
        data: data.path().into(),
        metadata: meta.path().into(),
    };
    let set = DeviceSet::open(&set_root, o).unwrap();
    set.add_device("on-block", None).unwrap();
    assert_eq!(set.status().unwrap().data_total, 512 * MIB);
    check_invariants_by_status(&set);
    set.shutdown().unwrap();
    drop(set);

    // Adopt a pool created by someone else (here: the dm layer directly).
    sh_ok(&format!(
        "dd if=/dev/zero of={} bs=4096 count=1 conv=fsync 2>&1",
        meta.path_str()
    ));
    let name = "dmthin-test-adopted-pool";
    let mut c = Control::open().unwrap();
    let params = format!("{} {} 128 32", meta.majmin(), data.majmin());
    let line = TableLine::new(0, 512 * MIB / 512, "thin-pool", params).unwrap();
    c.create_with_table(name, &CreateOptions::default(), &[line], UdevFlags::PRIVATE)
        .unwrap();
    let adopt_root = root.0.join("adopt");
    let mut o = options(FsKind::Ext4);
    o.storage = StorageOptions::AdoptPool { name: name.into() };
    let set = DeviceSet::open(&adopt_root, o.clone()).unwrap();
    set.add_device("in-adopted", None).unwrap();
    set.shutdown().unwrap();
    assert!(
        c.exists(name).unwrap(),
        "an adopted pool is not removed by shutdown"
    );
    // A pool that is not empty cannot be adopted by a new set.
    let e = DeviceSet::open(root.0.join("adopt2"), o).unwrap_err();
    assert!(matches!(e, DeviceSetError::Inconsistent { .. }), "{e}");
    c.remove(DevId::Name(name), &RemoveOptions::default())
        .unwrap();
}

fn check_invariants_by_status(set: &DeviceSet) {
    let st = set.status().unwrap();
    let dm = sh_ok(&format!("dmsetup status {}", set.pool_name()));
    let txn: u64 = dm.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert_eq!(txn, st.transaction_id);
}

/// How many times `path` is a mount point in /proc/self/mounts.
fn mount_count(path: &Path) -> usize {
    let path = path.to_str().unwrap();
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(1) == Some(path))
        .count()
}

#[test]
fn mount_reference_count_per_path_and_across_paths() {
    let root = Root::new("mount-refs");
    let set = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap();
    set.add_device("m", None).unwrap();
    let (a, b) = (root.mnt("a"), root.mnt("b"));
    // Two references at a (one real mount), one at b.
    set.mount_device("m", &a, false).unwrap();
    set.mount_device("m", &a, false).unwrap();
    set.mount_device("m", &b, false).unwrap();
    assert_eq!((mount_count(&a), mount_count(&b)), (1, 1));
    write_file(&a, "f", "shared");
    assert_eq!(std::fs::read_to_string(b.join("f")).unwrap(), "shared");
    let m = set
        .list()
        .unwrap()
        .into_iter()
        .find(|d| d.id == "m")
        .unwrap();
    assert_eq!(m.mount_points, vec![a.clone(), b.clone()]);
    // Dropping one of a's two references unmounts nothing.
    set.unmount_device("m", &a, true).unwrap();
    assert_eq!((mount_count(&a), mount_count(&b)), (1, 1));
    // The last one at a unmounts a; b keeps the device mounted and active,
    // though deactivation was asked for.
    set.unmount_device("m", &a, true).unwrap();
    assert_eq!((mount_count(&a), mount_count(&b)), (0, 1));
    assert!(set.has_activated_device("m"));
    let e = set.unmount_device("m", &a, true).unwrap_err();
    assert!(matches!(e, DeviceSetError::NotMounted { .. }), "{e}");
    for e in [
        set.deactivate_device("m").unwrap_err(),
        set.remove_device("m").unwrap_err(),
    ] {
        assert!(
            matches!(&e, DeviceSetError::Mounted { paths, .. } if *paths == vec![b.clone()]),
            "{e}"
        );
    }
    // The last mount, without deactivation: unmounted, still active.
    set.unmount_device("m", &b, false).unwrap();
    assert_eq!(mount_count(&b), 0);
    assert!(set.has_activated_device("m"));
    // Mounted again and unmounted with deactivation: gone from the kernel.
    set.mount_device("m", &b, false).unwrap();
    assert_eq!(std::fs::read_to_string(b.join("f")).unwrap(), "shared");
    set.unmount_device("m", &b, true).unwrap();
    assert_eq!(mount_count(&b), 0);
    assert!(!set.has_activated_device("m"));
    assert!(!sh_ok("dmsetup ls").contains(&set.device_name("m")));
    set.remove_device("m").unwrap();
    check_invariants(&set);
    set.shutdown().unwrap();
}

#[test]
fn xfs_base_growth_reaches_new_snapshots() {
    let root = Root::new("grow-xfs");
    {
        let set = DeviceSet::open(&root.0, options(FsKind::Xfs)).unwrap();
        set.add_device("old", None).unwrap();
        set.shutdown().unwrap();
    }
    let mut o = options(FsKind::Xfs);
    o.base_size = 640 * MIB;
    let set = DeviceSet::open(&root.0, o.clone()).unwrap();
    assert_eq!(set.status().unwrap().base_size, 640 * MIB);
    set.add_device("new", None).unwrap();
    let list = set.list().unwrap();
    assert_eq!(list.iter().find(|d| d.id == "old").unwrap().size, 320 * MIB);
    assert_eq!(list.iter().find(|d| d.id == "new").unwrap().size, 640 * MIB);
    let fs_bytes = |p: &Path| -> u64 {
        sh_ok(&format!("stat -f -c '%b %S' {}", p.display()))
            .split_whitespace()
            .map(|x| x.parse::<u64>().unwrap())
            .product()
    };
    for id in ["old", "new"] {
        set.mount_device(id, root.mnt(id), false).unwrap();
        let fstype = sh_ok(&format!("stat -f -c %T {}", root.mnt(id).display()));
        assert_eq!(fstype.trim(), "xfs");
    }
    let (old, new) = (fs_bytes(&root.mnt("old")), fs_bytes(&root.mnt("new")));
    // statfs leaves out xfs's internal log: compare the two, not the sizes.
    assert!(old < 320 * MIB, "{old} bytes");
    assert!(
        new > old + 280 * MIB,
        "xfs was not grown: {new} bytes, the old snapshot's {old}"
    );
    write_file(&root.mnt("new"), "f", "grown");
    for id in ["old", "new"] {
        set.unmount_device(id, root.mnt(id), true).unwrap();
    }
    check_invariants(&set);
    set.shutdown().unwrap();
    drop(set);
    // Reopened at the same size: nothing to grow, everything kept.
    let set = DeviceSet::open(&root.0, o).unwrap();
    assert_eq!(set.status().unwrap().base_size, 640 * MIB);
    set.mount_device("new", root.mnt("new"), false).unwrap();
    assert_eq!(
        std::fs::read_to_string(root.mnt("new").join("f")).unwrap(),
        "grown"
    );
    set.unmount_device("new", root.mnt("new"), true).unwrap();
    set.shutdown().unwrap();
}

#[test]
fn the_lock_is_released_between_ebusy_retries() {
    use std::time::Instant;
    let root = Root::new("busy-lock");
    let mut o = options(FsKind::Ext4);
    // ~60 s of retries (20 ms, 40 ms, ... then 200 ms apart).
    o.busy_retries = 300;
    let set = DeviceSet::open(&root.0, o).unwrap();
    set.add_device("held", None).unwrap();
    let path = set.activate_device("held").unwrap();
    let holder = std::fs::File::open(&path).unwrap();
    std::thread::scope(|s| {
        let remover = s.spawn(|| {
            let start = Instant::now();
            (set.remove_device("held"), start.elapsed())
        });
        // Let the remove meet EBUSY and start retrying.
        std::thread::sleep(Duration::from_millis(600));
        assert!(!remover.is_finished(), "remove did not wait for the holder");
        // Other operations on the same set go through meanwhile.
        let start = Instant::now();
        let list = set.list().unwrap();
        assert!(list.iter().any(|d| d.id == "held"));
        set.status().unwrap();
        set.add_device("meanwhile", None).unwrap();
        let took = start.elapsed();
        assert!(
            took < Duration::from_secs(20),
            "list, status and add took {took:?}: the lock was held while retrying"
        );
        assert!(
            !remover.is_finished(),
            "the remove ended before the holder let go"
        );
        // The holder lets go: the next retry succeeds.
        drop(holder);
        let (result, elapsed) = remover.join().unwrap();
        result.unwrap();
        assert!(elapsed > Duration::from_millis(600), "{elapsed:?}");
    });
    assert!(!set.has_device("held"));
    assert!(!sh_ok("dmsetup ls").contains(&set.device_name("held")));
    assert!(set.has_device("meanwhile"));
    check_invariants(&set);
    set.shutdown().unwrap();
}

#[test]
fn a_set_written_before_the_journal_opens_and_converts() {
    let root = Root::new("legacy");
    let meta = root.0.join("metadata");
    let thin = {
        let set = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap();
        set.add_device("old", None).unwrap();
        let thin = set.list().unwrap()[0].thin_id;
        set.shutdown().unwrap(); // folds: old.json written
        thin
    };
    // What the transaction-id protocol left after an add: the record files,
    // and transaction.json naming the add as the last transaction, which
    // the pool's id reached. No journal.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(meta.join("transaction.json")).unwrap())
            .unwrap();
    let pool_txn = state["open"]["open_transaction_id"].as_u64().unwrap();
    std::fs::remove_file(meta.join("journal")).unwrap();
    std::fs::write(
        meta.join("transaction.json"),
        format!(
            r#"{{"committed_transaction_id": {}, "open": {{"open_transaction_id": {pool_txn}, "op": {{"kind": "create", "device_id": "old", "thin_id": {thin}}}}}}}"#,
            pool_txn - 1
        ),
    )
    .unwrap();
    let set = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap();
    assert!(set.has_device("old"));
    assert_eq!(set.status().unwrap().transaction_id, pool_txn);
    set.add_device("new", None).unwrap();
    set.remove_device("old").unwrap();
    check_invariants(&set);
    assert!(
        meta.join("journal").exists(),
        "converted: changes go to the journal"
    );
    drop(set); // no fold: the next open replays the journal
    let set = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap();
    assert!(set.has_device("new") && !set.has_device("old"));
    check_invariants(&set);
    set.shutdown().unwrap();
    assert!(durable_record(&root.0, "new").is_some());
    assert!(durable_record(&root.0, "old").is_none());
    assert!(
        !meta.join("devices/old.json").exists(),
        "folded at shutdown"
    );
}
