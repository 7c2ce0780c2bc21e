//! Open repairs or degrades, never bricks (issue #17): a suspended pool, a
//! failed first init, a pool that cannot take changes, and rollbacks that
//! must not delete thins the set cannot prove it made.

mod common;
use common::*;

use dmthin::deviceset::{DeviceSet, DeviceSetError, FsKind, RemoveOutcome, StorageOptions};
use std::path::Path;
use std::time::{Duration, Instant};

/// `dmsetup info`'s state line of `name`: ACTIVE or SUSPENDED.
fn dm_state(name: &str) -> String {
    let info = sh_ok(&format!("dmsetup info {name}"));
    info.lines()
        .find_map(|l| l.strip_prefix("State:"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn suspended_pool_and_device_are_resumed_at_open() {
    let root = Root::new("suspended");
    let set = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap();
    set.add_device("a", None).unwrap();
    set.activate_device("a").unwrap();
    let (pool, thin) = (set.pool_name().to_string(), set.device_name("a"));
    drop(set);
    // A process killed inside a reload of the pool's table: the new table
    // loaded, the pool (and a thin on it) suspended, never resumed.
    sh_ok(&format!(
        "dmsetup table {pool} | dmsetup reload {pool} && dmsetup suspend {thin} && dmsetup suspend {pool}"
    ));
    assert_eq!(dm_state(&pool), "SUSPENDED");
    assert_eq!(dm_state(&thin), "SUSPENDED");
    let set = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap();
    assert_eq!(dm_state(&pool), "ACTIVE", "the pool is resumed at open");
    assert_eq!(
        dm_state(&thin),
        "ACTIVE",
        "a thin of the set is resumed at open"
    );
    let list = set.list().unwrap();
    assert!(list.iter().any(|d| d.id == "a" && d.active), "{list:?}");
    // I/O to the device completes, and new devices can be made.
    let node = set.activate_device("a").unwrap();
    sh_ok(&format!(
        "dd if=/dev/urandom of={} bs=4k count=4 oflag=direct conv=fsync 2>&1",
        node.display()
    ));
    set.add_device("b", Some("a")).unwrap();
    check_invariants(&set);
    set.shutdown().unwrap();
    drop(set);
    // The CLI's list works on a set whose pool was left suspended too.
    let set = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap();
    let pool = set.pool_name().to_string();
    drop(set);
    sh_ok(&format!("dmsetup suspend {pool}"));
    let out = dmthin_ok(&root.0, &["list"]);
    assert!(out.contains('b'), "{out}");
    assert_eq!(dm_state(&pool), "ACTIVE");
    dmthin_ok(&root.0, &["shutdown"]);
}

#[test]
fn failed_first_init_can_be_rerun() {
    let r = Root::new("init-rerun");
    let sizes = SMALL_INIT;
    let mut bad = sizes.to_vec();
    bad.extend_from_slice(&["--mkfs-options", "-O no_such_feature"]);
    let out = dmthin_cli(&r.0, &bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "init with a bad mkfs option succeeded"
    );
    assert!(err.contains("no_such_feature"), "mkfs's message: {err}");
    // Every later command works: a new init, then the set's usual life.
    dmthin_ok(&r.0, &sizes);
    dmthin_ok(&r.0, &["create", "a"]);
    let out = dmthin_ok(&r.0, &["list"]);
    assert!(out.contains('a'), "{out}");
    let o = DeviceSet::recorded_options(&r.0).unwrap().unwrap();
    let set = DeviceSet::open(&r.0, o).unwrap();
    check_invariants(&set);
    set.shutdown().unwrap();
}

/// Writes `transaction.json` as a create interrupted right after it recorded
/// its start: thin id `thin_id` claimed for `device_id`, transaction
/// `committed + 1` open.
fn interrupted_create(root: &Path, device_id: &str, thin_id: u32, committed: u64) {
    let txn = format!(
        r#"{{"committed_transaction_id": {committed}, "open": {{"open_transaction_id": {}, "op": {{"kind": "create", "device_id": "{device_id}", "thin_id": {thin_id}}}}}}}"#,
        committed + 1
    );
    std::fs::write(root.join("metadata/transaction.json"), txn).unwrap();
}

#[test]
fn rollback_keeps_the_thin_of_a_damaged_record() {
    let root = Root::new("damaged-owner");
    let set = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap();
    set.add_device("victim", None).unwrap();
    // Folded into victim.json (the file damaged below), then read back.
    set.shutdown().unwrap();
    drop(set);
    let set = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap();
    let thin = set.list().unwrap()[0].thin_id;
    let txn = set.status().unwrap().transaction_id;
    drop(set);
    // The record is damaged: the set no longer knows which thin id it owns,
    // so a create can claim it, and be interrupted before the pool answers.
    std::fs::write(
        root.0.join("metadata/devices/victim.json"),
        "{\"id\": \"victim\", \"thin_",
    )
    .unwrap();
    interrupted_create(&root.0, "newcomer", thin, txn);
    let set = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap();
    assert_eq!(set.problems().len(), 1, "{:?}", set.problems());
    assert!(!set.has_device("newcomer"));
    assert!(
        pool_thin_ids(&set).contains(&thin),
        "the rollback deleted thin {thin}, which the damaged record owns"
    );
    // A record still readable as JSON names its thin id: new devices skip it.
    std::fs::write(
        root.0.join("metadata/devices/victim.json"),
        format!("{{\"id\": \"victim\", \"thin_id\": {thin}, \"size\": \"bad\"}}"),
    )
    .unwrap();
    drop(set);
    let set = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap();
    set.add_device("later", None).unwrap();
    let later = set
        .list()
        .unwrap()
        .iter()
        .find(|d| d.id == "later")
        .unwrap()
        .thin_id;
    assert_ne!(
        later, thin,
        "a new device took the damaged record's thin id"
    );
    set.shutdown().unwrap();
}

#[test]
fn rollback_keeps_an_adopted_pools_own_thins() {
    let root = Root::new("adopt-own");
    let pool = ForeignPool::new(&root.0, "adopt-own");
    // The pool's owner made thin 0 before the set adopted the pool.
    sh_ok(&format!("dmsetup message {} 0 create_thin 0", pool.name));
    let set_root = root.0.join("set");
    let o = pool.options();
    let set = DeviceSet::open(&set_root, o.clone()).unwrap();
    let st = set.status().unwrap();
    assert_ne!(st.base_thin_id, 0, "the base took the owner's thin");
    drop(set);
    // A create that claimed thin 0 (the set cannot know the owner's ids) is
    // interrupted before the pool refused it.
    interrupted_create(&set_root, "newcomer", 0, st.transaction_id);
    let set = DeviceSet::open(&set_root, o).unwrap();
    assert!(!set.has_device("newcomer"));
    let ids = pool.thin_ids();
    assert!(
        ids.contains(&0),
        "the rollback deleted the owner's thin 0: {ids:?}"
    );
    set.shutdown().unwrap();
}

/// Snapshots of `src` (each written in 8 far-apart blocks, so each unshares
/// ~10 metadata blocks) until the pool's metadata is full.
fn fill_metadata(set: &DeviceSet) -> usize {
    let offsets: Vec<u64> = (0..8).map(|i| i * 8 + 3).collect();
    for n in 0..400 {
        let id = format!("s{n}");
        set.add_device(&id, Some("src")).unwrap();
        let node = set.activate_device(&id).unwrap();
        let (ok, out) = write_blocks(&node, &offsets);
        set.deactivate_device(&id).unwrap();
        if !ok {
            assert!(out.contains("error"), "{out}");
            return n + 1;
        }
    }
    panic!("metadata never ran out");
}

#[test]
fn out_of_metadata_opens_degraded_and_grow_pool_metadata_heals_a_deferred_removal() {
    let root = Root::new("meta-degraded");
    let mut o = options(FsKind::Ext4);
    o.storage = StorageOptions::LoopFiles {
        data_size: 2048 * MIB,
        metadata_size: 2 * MIB,
    };
    o.base_size = 64 * MIB;
    o.min_free_space_percent = 0;
    let set = DeviceSet::open(&root.0, o.clone()).unwrap();
    set.add_device("src", None).unwrap();
    let node = set.activate_device("src").unwrap();
    sh_ok(&format!(
        "dd if=/dev/urandom of={} bs=1M count=64 oflag=direct conv=fsync 2>&1",
        node.display()
    ));
    set.deactivate_device("src").unwrap();
    // A device held open is removed deferred: its deletion waits for the holder.
    set.add_device("held", None).unwrap();
    let held_thin = set
        .list()
        .unwrap()
        .iter()
        .find(|d| d.id == "held")
        .unwrap()
        .thin_id;
    let holder = std::fs::File::open(set.activate_device("held").unwrap()).unwrap();
    assert_eq!(
        set.remove_device_deferred("held").unwrap(),
        RemoveOutcome::Deferred
    );
    // Metadata runs out while the removal is pending.
    let snaps = fill_metadata(&set);
    let st = set.status().unwrap();
    assert_eq!(
        st.mode, "out_of_metadata_space",
        "{st:?} after {snaps} snapshots"
    );
    drop(holder);
    let held = set.device_name("held");
    let start = Instant::now();
    while sh_ok("dmsetup ls").contains(&held) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "deferred removal never ran"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(set);
    // Open succeeds, degraded: reads work, changes are refused naming the mode.
    let set = DeviceSet::open(&root.0, o.clone()).unwrap();
    let st = set.status().unwrap();
    assert_eq!(st.mode, "out_of_metadata_space", "{st:?}");
    assert!(set.list().unwrap().iter().any(|d| d.id == "src"));
    let e = set.add_device("refused", Some("src")).unwrap_err();
    assert!(
        matches!(e, DeviceSetError::PoolUnusable { .. })
            && e.to_string().contains("out_of_metadata_space"),
        "{e}"
    );
    let e = set.remove_device("s0").unwrap_err();
    assert!(e.to_string().contains("out_of_metadata_space"), "{e}");
    assert!(set.has_device("s0"), "a refused remove keeps the device");
    set.activate_device("src").unwrap();
    set.deactivate_device("src").unwrap();
    drop(set);
    // The CLI works on the degraded set too, and grow-pool --metadata heals it.
    let out = dmthin_ok(&root.0, &["status"]);
    assert!(out.contains("out_of_metadata_space"), "{out}");
    dmthin_ok(&root.0, &["list"]);
    let out = dmthin_cli(&root.0, &["create", "refused", "--from", "src"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("out_of_metadata_space"),
        "{err}"
    );
    dmthin_ok(&root.0, &["grow-pool", "--metadata", "16M"]);
    let set = DeviceSet::open(&root.0, o).unwrap();
    let st = set.status().unwrap();
    assert_eq!(st.mode, "rw", "{st:?}");
    // The pending deferred delete completed: its thin is gone from the pool.
    assert!(
        !pool_thin_ids(&set).contains(&held_thin),
        "the deferred delete of thin {held_thin} did not complete"
    );
    set.add_device("after-heal", Some("src")).unwrap();
    check_invariants(&set);
    set.shutdown().unwrap();
}

#[test]
fn needs_check_pool_opens_degraded() {
    let root = Root::new("needs-check");
    let disks = FlakeyDisks::new(&root.0, "nc");
    let set_root = root.0.join("set");
    let o = disks.options();
    let set = DeviceSet::open(&set_root, o.clone()).unwrap();
    set.add_device("before", None).unwrap();
    set.activate_device("before").unwrap();
    let mnt = root.0.join("mnt-before");
    std::fs::create_dir_all(&mnt).unwrap();
    set.mount_device("before", &mnt, true).unwrap();
    let txn = set.status().unwrap().transaction_id;
    // Metadata writes fail: the next change fails and the pool wants a check.
    disks.fail_meta_writes(true);
    set.add_device("during", None).unwrap_err();
    drop(set);
    // And a process creating a device was killed after recording its start:
    // its roll back needs the pool, so it waits for the repair.
    interrupted_create(&set_root, "crashed", 4242, txn);
    // Open succeeds, degraded, and says the pool needs a check.
    let set = DeviceSet::open(&set_root, o.clone()).unwrap();
    let st = set.status().unwrap();
    assert!(st.needs_check, "{st:?}");
    assert!(set.list().unwrap().iter().any(|d| d.id == "before"));
    let e = set.add_device("after", None).unwrap_err();
    assert!(
        matches!(e, DeviceSetError::PoolUnusable { .. })
            && (e.to_string().contains("needs_check") || e.to_string().contains("fail")),
        "{e}"
    );
    // A read-write mount is refused up front, naming the mode; read-only works.
    let mnt_rw = root.0.join("mnt-rw");
    let e = set.mount_device("before", &mnt_rw, false).unwrap_err();
    assert!(
        matches!(e, DeviceSetError::PoolUnusable { .. })
            && e.to_string().contains("only read-only mounts"),
        "{e}"
    );
    set.mount_device("before", &mnt_rw, true).unwrap();
    assert!(std::fs::read_dir(&mnt_rw).is_ok());
    set.unmount_device("before", &mnt_rw, false).unwrap();
    // Unmounting (a mount the earlier process left) works degraded too.
    set.unmount_device("before", &mnt, false).unwrap();
    assert!(!std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .contains(mnt.to_str().unwrap()));
    set.deactivate_device("before").unwrap();
    set.grow_pool(512 * MIB).unwrap();
    set.grow_pool_metadata(16 * MIB).unwrap();
    set.shutdown().unwrap();
    drop(set);
    // Repaired as an operator would (healthy device, thin_check), the next
    // open finishes the interrupted create's roll back.
    disks.fail_meta_writes(false);
    let (ok, _) = clear_needs_check(&disks.meta_node());
    if ok {
        let set = DeviceSet::open(&set_root, o).unwrap();
        assert_eq!(set.status().unwrap().mode, "rw");
        assert!(set.has_device("before") && !set.has_device("crashed"));
        check_invariants_on(&set, &disks.meta_node());
        set.shutdown().unwrap();
    }
}
