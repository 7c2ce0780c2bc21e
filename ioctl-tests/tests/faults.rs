//! Faults: a full pool, I/O errors under the pool, and bad state on disk.
//! Each case has a defined outcome: an error that says what is wrong, a repair,
//! or a clear refusal, never a hang, a panic or silent loss.

mod common;
use common::*;

use dmthin::deviceset::{DeviceSet, DeviceSetError, FsKind, StorageOptions};
use dmthin::dm::{Control, CreateOptions, DevId, RemoveOptions, UdevFlags};
use dmthin::target::TableLine;
use std::path::Path;
use std::time::{Duration, Instant};

fn md5(path: &Path) -> String {
    sh_ok(&format!("md5sum {}", path.display()))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn full_pool_fails_writes_without_hanging_and_grow_pool_recovers() {
    let root = Root::new("full");
    let mut o = options(FsKind::Ext4);
    o.storage = StorageOptions::LoopFiles {
        data_size: 64 * MIB,
        metadata_size: 8 * MIB,
    };
    o.base_size = 256 * MIB;
    let set = DeviceSet::open(&root.0, o).unwrap();
    set.add_device("w", None).unwrap();
    let m = root.mnt("w");
    set.mount_device("w", &m, false).unwrap();
    sh_ok(&format!(
        "dd if=/dev/urandom of={}/keep bs=1M count=8 conv=fsync 2>&1",
        m.display()
    ));
    let sum = md5(&m.join("keep"));
    // Fill the pool: the write must fail (error_if_no_space), not hang.
    let start = Instant::now();
    let (ok, out) = sh(&format!(
        "dd if=/dev/urandom of={}/fill bs=1M count=128 oflag=direct 2>&1",
        m.display()
    ));
    assert!(!ok, "writing past the pool's end must fail: {out}");
    assert!(
        start.elapsed() < Duration::from_secs(120),
        "took {:?}",
        start.elapsed()
    );
    let st = set.status().unwrap();
    assert_eq!(st.mode, "out_of_data_space", "{st:?}");
    let dm = sh_ok(&format!("dmsetup status {}", set.pool_name()));
    assert!(
        dm.contains("out_of_data_space") && dm.contains("error_if_no_space"),
        "{dm}"
    );
    let e = set.add_device("refused", None).unwrap_err();
    assert!(
        matches!(
            e,
            DeviceSetError::PoolUnusable { .. } | DeviceSetError::LowSpace { .. }
        ),
        "{e}"
    );
    // Grow: the pool goes back to rw and the data written before is intact.
    set.grow_pool(512 * MIB).unwrap();
    let st = set.status().unwrap();
    assert_eq!(st.mode, "rw", "{st:?}");
    let _ = std::fs::remove_file(m.join("fill"));
    set.unmount_device("w", &m, false).unwrap();
    set.mount_device("w", &m, false).unwrap();
    assert_eq!(
        md5(&m.join("keep")),
        sum,
        "data written before the pool filled is intact"
    );
    set.add_device("after-grow", None).unwrap();
    set.unmount_device("w", &m, true).unwrap();
    check_invariants(&set);
    set.shutdown().unwrap();
}

#[test]
fn low_metadata_space_refuses_add_device() {
    let root = Root::new("meta-low");
    let mut o = options(FsKind::Ext4);
    o.storage = StorageOptions::LoopFiles {
        data_size: 4096 * MIB,
        metadata_size: 2 * MIB,
    };
    o.min_free_space_percent = 97;
    let set = DeviceSet::open(&root.0, o).unwrap();
    let st = set.status().unwrap();
    let meta_free = 100.0 - st.metadata_used as f64 * 100.0 / st.metadata_total as f64;
    let data_free = 100.0 - st.data_used as f64 * 100.0 / st.data_total as f64;
    assert!(
        data_free > 97.0 && meta_free < 97.0,
        "setup: data {data_free}% meta {meta_free}% free"
    );
    let e = set.add_device("x", None).unwrap_err();
    assert!(
        matches!(
            e,
            DeviceSetError::LowSpace {
                what: "metadata",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("metadata"), "{e}");
    set.shutdown().unwrap();
}

#[test]
fn metadata_space_runs_out_refuses_and_grow_pool_metadata_recovers() {
    let root = Root::new("meta-full");
    let mut o = options(FsKind::Ext4);
    o.storage = StorageOptions::LoopFiles {
        data_size: 2048 * MIB,
        metadata_size: 2 * MIB,
    };
    o.base_size = 64 * MIB;
    let set = DeviceSet::open(&root.0, o.clone()).unwrap();
    // A device whose mapping tree spans several leaves: every block mapped.
    set.add_device("src", None).unwrap();
    let node = set.activate_device("src").unwrap();
    sh_ok(&format!(
        "dd if=/dev/urandom of={} bs=1M count=64 oflag=direct conv=fsync 2>&1",
        node.display()
    ));
    let src_sum = md5(&node);
    set.deactivate_device("src").unwrap();
    // Snapshots of it, each written in 8 far-apart blocks: every write
    // unshares a different leaf, so metadata fills ~10 blocks per snapshot.
    let offsets: Vec<u64> = (0..8).map(|i| i * 8 + 3).collect();
    let mut snaps: Vec<String> = Vec::new();
    let fill = |set: &DeviceSet, snaps: &mut Vec<String>| -> Option<DeviceSetError> {
        for _ in 0..400 {
            let id = format!("s{}", snaps.len());
            if let Err(e) = set.add_device(&id, Some("src")) {
                return Some(e);
            }
            snaps.push(id.clone());
            let node = set.activate_device(&id).unwrap();
            let start = Instant::now();
            let (ok, out) = write_blocks(&node, &offsets);
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "a write took {:?}: {out}",
                start.elapsed()
            );
            set.deactivate_device(&id).unwrap();
            if !ok {
                // Out of metadata: the write failed (EIO), it did not hang.
                assert!(out.contains("error"), "{out}");
                return None;
            }
        }
        panic!("metadata never ran out after {} snapshots", snaps.len());
    };
    // 1. The default 10% minimum: add_device refuses before the kernel runs out.
    let e = fill(&set, &mut snaps).expect("add_device refused at the minimum");
    assert!(
        matches!(
            e,
            DeviceSetError::LowSpace {
                what: "metadata",
                ..
            }
        ),
        "{e}"
    );
    let st = set.status().unwrap();
    assert_eq!(st.mode, "rw", "{st:?}");
    let refused_at = snaps.len();
    drop(set);
    // 2. With no minimum, snapshots go on until the kernel's metadata is full:
    //    the pool turns read-only and writes fail at once.
    let mut no_min = o.clone();
    no_min.min_free_space_percent = 0;
    let set = DeviceSet::open(&root.0, no_min.clone()).unwrap();
    let refused = fill(&set, &mut snaps);
    let st = set.status().unwrap();
    assert_eq!(st.mode, "out_of_metadata_space", "{st:?} after {refused:?}");
    assert!(!st.needs_check, "{st:?}");
    assert_eq!(st.metadata_used, st.metadata_total, "{st:?}");
    let dm = sh_ok(&format!("dmsetup status {}", set.pool_name()));
    assert!(dm.contains(" ro "), "{dm}");
    let e = set.add_device("refused", Some("src")).unwrap_err();
    assert!(
        matches!(e, DeviceSetError::PoolUnusable { .. }) && e.to_string().contains("metadata"),
        "{e}"
    );
    eprintln!(
        "metadata full after {} snapshots (add_device refused at {refused_at} with 10% minimum)",
        snaps.len()
    );
    // 3. Growing the metadata: rw again, everything written before intact.
    let e = set.grow_pool_metadata(MIB).unwrap_err();
    assert!(e.to_string().contains("never shrinks"), "{e}");
    set.grow_pool_metadata(16 * MIB).unwrap();
    let st = set.status().unwrap();
    assert_eq!(st.mode, "rw", "{st:?}");
    assert_eq!(st.metadata_total, 16 * MIB, "{st:?}");
    let node = set.activate_device("src").unwrap();
    assert_eq!(md5(&node), src_sum, "the origin's data is intact");
    set.deactivate_device("src").unwrap();
    set.add_device("after-grow", Some("src")).unwrap();
    let node = set.activate_device("after-grow").unwrap();
    let (ok, out) = write_blocks(&node, &offsets);
    assert!(ok, "{out}");
    set.deactivate_device("after-grow").unwrap();
    check_invariants(&set);
    // The new size survives a restart, and thin_check is clean.
    set.shutdown().unwrap();
    drop(set);
    let meta = root.0.join("devicemapper/metadata");
    assert_eq!(std::fs::metadata(&meta).unwrap().len(), 16 * MIB);
    let (ok, out) = thin_check_file(&meta);
    assert!(ok, "thin_check: {out}");
    let set = DeviceSet::open(&root.0, no_min).unwrap();
    assert_eq!(set.status().unwrap().metadata_total, 16 * MIB);
    assert!(set.has_device("after-grow"));
    set.shutdown().unwrap();
}

/// A metadata device whose writes fail everywhere but in its first 4 KiB
/// block, the thin-pool superblock: a commit fails, and the pool can still
/// record `needs_check` in the superblock when it aborts.
fn flakey_meta_sparing_superblock(dev: &LoopDevice, sectors: u64) -> Vec<TableLine> {
    vec![
        TableLine::new(0, 8, "linear", format!("{} 0", dev.majmin())).unwrap(),
        TableLine::new(
            8,
            sectors - 8,
            "flakey",
            format!("{} 8 0 1 1 error_writes", dev.majmin()),
        )
        .unwrap(),
    ]
}

/// The `needs_check` bit of a thin-pool metadata superblock (flags word at
/// byte 4, bit 0), read straight from the device.
fn superblock_needs_check(meta: &str) -> bool {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(meta).unwrap();
    let mut flags = [0u8; 4];
    f.read_exact_at(&mut flags, 4).unwrap();
    u32::from_le_bytes(flags) & 1 != 0
}

#[test]
fn io_errors_under_the_pool_give_clear_errors_and_needs_check() {
    let root = Root::new("ioerr");
    let disks = FlakeyDisks::new(&root.0, "flakey");
    let set_root = root.0.join("set");
    let o = disks.options();
    let set = DeviceSet::open(&set_root, o.clone()).unwrap();
    set.add_device("before", None).unwrap();
    assert!(!set.status().unwrap().needs_check);
    // Metadata writes now fail, all but the superblock's.
    disks.set_meta_table(&flakey_meta_sparing_superblock(
        &disks.meta_loop,
        FlakeyDisks::META_MIB * MIB / 512,
    ));
    let start = Instant::now();
    let e = set.add_device("during", None).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(60));
    // create_snap itself succeeds; its commit fails, which the message's
    // reply shows only as a moved event number: the set then reads the
    // pool's status and says the create's outcome is unknown.
    let text = e.to_string();
    assert!(
        matches!(e, DeviceSetError::PoolUnusable { .. })
            && text.contains("create_snap may not be committed"),
        "{text}"
    );
    assert!(
        !set.has_device("during"),
        "an add of unknown outcome is not listed"
    );
    // The failed commit was aborted: the pool is read-only and flags
    // needs_check, in its own status line and in the set's status.
    let dm = sh_ok(&format!("dmsetup status {}", set.pool_name()));
    assert!(
        dm.split_whitespace().any(|w| w == "needs_check"),
        "pool status lacks needs_check: {dm}"
    );
    let st = set.status().unwrap();
    assert!(st.needs_check, "DeviceSet::status: {st:?} (pool: {dm})");
    assert_ne!(st.mode, "rw", "{st:?}");
    // Heal the device: the set refuses changes and says the pool needs a check.
    disks.fail_meta_writes(false);
    let e = set.add_device("after", None).unwrap_err();
    assert!(
        matches!(
            e,
            DeviceSetError::PoolUnusable { .. } | DeviceSetError::Dm(_)
        ),
        "{e}"
    );
    let st = set.status().unwrap();
    assert!(st.needs_check, "needs_check stays until a check: {st:?}");
    set.shutdown().unwrap();
    drop(set);
    // The flag reached the superblock: it survives the pool's removal.
    let meta_node = disks.meta_node();
    assert!(
        superblock_needs_check(&meta_node),
        "needs_check not in the superblock"
    );
    // Repair as an operator would: thin_check (and clear the flag), then reopen.
    let (ok, out) = clear_needs_check(&meta_node);
    assert!(ok, "thin_check: {out}");
    assert!(!superblock_needs_check(&meta_node), "flag not cleared");
    match DeviceSet::open(&set_root, o) {
        Ok(set) => {
            assert!(
                set.has_device("before"),
                "a device created before the fault is kept"
            );
            check_invariants_on(&set, &meta_node);
            set.shutdown().unwrap();
        }
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains("needs_check") || text.contains("inconsistent"),
                "unclear refusal: {text}"
            );
        }
    }
}

/// Child mode: take the set's lock the way a set does, an exclusive flock on
/// `<root>/lock` with the holder's pid in the file, and hold it until killed.
#[test]
fn lock_holder_child() {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let Ok(root) = std::env::var("DMTHIN_LOCK_HOLDER_ROOT") else {
        return;
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(Path::new(&root).join("lock"))
        .unwrap();
    let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, errno)| errno)
        .unwrap();
    lock.set_len(0).unwrap();
    lock.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0)
        .unwrap();
    println!("LOCKED");
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn stale_lock_of_a_dead_process_is_taken_over() {
    let root = Root::new("stale-lock");
    DeviceSet::open(&root.0, options(FsKind::Ext4))
        .unwrap()
        .shutdown()
        .unwrap();
    // Another process holds the lock, then dies without releasing it.
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "lock_holder_child", "--nocapture"])
        .env("DMTHIN_LOCK_HOLDER_ROOT", &root.0)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 256];
    let mut seen = String::new();
    while !seen.contains("LOCKED") {
        let n = std::io::Read::read(&mut out, &mut buf).unwrap();
        assert!(n > 0, "lock holder exited: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let e = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap_err();
    assert!(matches!(e, DeviceSetError::Lock(_)), "{e}");
    assert!(
        e.to_string().contains(&child.id().to_string()),
        "names the holder: {e}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // The lock file is still there, but nobody holds it: the set opens.
    assert!(root.0.join("lock").exists());
    let set = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap();
    set.shutdown().unwrap();
}

#[test]
fn records_left_by_a_rolled_back_operation_and_foreign_pool_state() {
    let root = Root::new("badstate");
    {
        let set = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap();
        set.add_device("real", None).unwrap();
        set.shutdown().unwrap();
    }
    // A record whose thin id the pool does not have (a create rolled back in the
    // pool, its record left behind): it loads, but activating it fails clearly.
    let devices = root.0.join("metadata/devices");
    let real = std::fs::read_to_string(devices.join("real.json")).unwrap();
    let ghost = real
        .replace("\"real\"", "\"ghost\"")
        .replace("\"thin_id\": 1", "\"thin_id\": 4242");
    std::fs::write(devices.join("ghost.json"), ghost).unwrap();
    let set = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap();
    assert!(set.has_device("ghost"));
    let e = set.activate_device("ghost").unwrap_err();
    assert!(
        e.to_string().contains("ghost") || matches!(e, DeviceSetError::Dm(_)),
        "{e}"
    );
    assert!(
        !sh_ok("dmsetup ls").contains(&set.device_name("ghost")),
        "no half-made device left"
    );
    set.activate_device("real").unwrap();
    set.shutdown().unwrap();
    drop(set);
    // A pool whose transaction id moved without us (someone else sent messages).
    {
        let set = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap();
        let pool = set.pool_name().to_string();
        let txn = set.status().unwrap().transaction_id;
        sh_ok(&format!(
            "dmsetup message {pool} 0 set_transaction_id {txn} {}",
            txn + 5
        ));
        drop(set);
        let e = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap_err();
        assert!(matches!(e, DeviceSetError::Inconsistent { .. }), "{e}");
        assert!(e.to_string().contains(&format!("{}", txn + 5)), "{e}");
        sh_ok(&format!(
            "dmsetup message {pool} 0 set_transaction_id {} {txn}",
            txn + 5
        ));
    }
    let set = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap();
    set.shutdown().unwrap();
}

/// The base thin device of the set whose `set.json` is `set_record`,
/// activated by hand under `name` (the set keeps it inactive), for changes
/// behind the set's back. Returns its `/dev/dm-N`.
fn base_by_hand(c: &mut Control, set_record: &serde_json::Value, name: &str) -> String {
    let pool = set_record["pool_name"].as_str().unwrap();
    let pool = c.info(DevId::Name(pool)).unwrap().dev;
    let info = c
        .create_with_table(
            name,
            &CreateOptions::default(),
            &[TableLine::new(
                0,
                set_record["base_size"].as_u64().unwrap() / 512,
                "thin",
                format!("{pool} {}", set_record["base_thin_id"]),
            )
            .unwrap()],
            UdevFlags::PRIVATE,
        )
        .unwrap();
    format!("/dev/dm-{}", info.dev.minor)
}

fn set_ext4_uuid(node: &str, uuid: &str) {
    sh_ok(&format!(
        "e2fsck -fy {node} >/dev/null 2>&1; tune2fs -U {uuid} {node} 2>&1"
    ));
}

#[test]
fn base_filesystem_uuid_changed_behind_the_sets_back_is_refused() {
    let root = Root::new("uuid-mismatch");
    let set = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap();
    set.add_device("keep", None).unwrap();
    let set_json = root.0.join("metadata/set.json");
    let recorded_json = std::fs::read_to_string(&set_json).unwrap();
    let record: serde_json::Value = serde_json::from_str(&recorded_json).unwrap();
    let recorded = record["base_fs_uuid"].as_str().unwrap().to_string();
    let foreign = "0b5e55ed-1111-4222-8333-444455556666";
    assert_ne!(recorded, foreign);
    let mut c = Control::open().unwrap();
    let by_hand = "dmthin-test-base-by-hand";
    let node = base_by_hand(&mut c, &record, by_hand);
    set_ext4_uuid(&node, foreign);
    c.remove(DevId::Name(by_hand), &RemoveOptions::default())
        .unwrap();
    drop(set); // the pool stays, as after an exit without shutdown
    let journal = root.0.join("metadata/journal");
    let journal_before = std::fs::read(&journal).unwrap();
    let e = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap_err();
    assert!(
        matches!(&e, DeviceSetError::BaseUuidMismatch { expected, found }
            if *expected == recorded && found == foreign),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains(&recorded) && text.contains(foreign),
        "names both uuids: {text}"
    );
    // Refused without touching anything: the records are as they were.
    assert_eq!(std::fs::read_to_string(&set_json).unwrap(), recorded_json);
    // keep was added after the last fold: its record is in the journal.
    assert_eq!(std::fs::read(&journal).unwrap(), journal_before);
    // The uuid put back, the set opens with everything in it.
    let pool = record["pool_name"].as_str().unwrap();
    assert!(c.exists(pool).unwrap(), "the refused open removed the pool");
    let node = base_by_hand(&mut c, &record, by_hand);
    set_ext4_uuid(&node, &recorded);
    c.remove(DevId::Name(by_hand), &RemoveOptions::default())
        .unwrap();
    let set = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap();
    assert!(set.has_device("keep"));
    check_invariants(&set);
    set.shutdown().unwrap();
}

#[test]
fn duplicate_thin_ids_and_reserved_names_are_refused_at_open() {
    let root = Root::new("dup-thin");
    {
        let set = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap();
        set.add_device("a", None).unwrap();
        set.add_device("ok", None).unwrap();
        set.shutdown().unwrap();
    }
    let devices = root.0.join("metadata/devices");
    let a = std::fs::read_to_string(devices.join("a.json")).unwrap();
    // A second record claiming a's thin id, and records named like the
    // set's own pool and base devices.
    let dup = a.replace("\"a\"", "\"b\"");
    std::fs::write(devices.join("b.json"), &dup).unwrap();
    for reserved in ["pool", "base"] {
        let r = a
            .replace("\"a\"", &format!("\"{reserved}\""))
            .replace("\"thin_id\": 1", "\"thin_id\": 4000");
        std::fs::write(devices.join(format!("{reserved}.json")), r).unwrap();
    }
    let set = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap();
    // Neither duplicate is used; each problem names the other file.
    assert!(!set.has_device("a") && !set.has_device("b"));
    assert!(!set.has_device("pool") && !set.has_device("base"));
    assert!(set.has_device("ok"));
    let problems: Vec<String> = set.problems().iter().map(|p| p.to_string()).collect();
    assert_eq!(problems.len(), 4, "{problems:?}");
    for (file, other) in [("a.json", "b.json"), ("b.json", "a.json")] {
        assert!(
            problems
                .iter()
                .any(|p| p.contains(file) && p.contains(other) && p.contains("thin id")),
            "{file} not reported with {other}: {problems:?}"
        );
    }
    for reserved in ["pool.json", "base.json"] {
        assert!(
            problems
                .iter()
                .any(|p| p.contains(reserved) && p.contains("reserved")),
            "{reserved}: {problems:?}"
        );
    }
    // The pool is untouched and the set works.
    assert!(set.activate_device("pool").is_err());
    let st = set.status().unwrap();
    assert_eq!(st.mode, "rw");
    assert!(pool_thin_ids(&set).contains(&1), "a's thin id kept");
    set.add_device("new", None).unwrap();
    assert_ne!(
        set.list()
            .unwrap()
            .iter()
            .find(|d| d.id == "new")
            .unwrap()
            .thin_id,
        1
    );
    set.shutdown().unwrap();
    drop(set);
    // Nothing stored was lost.
    for f in ["a.json", "b.json", "pool.json", "base.json"] {
        assert!(devices.join(f).exists(), "{f} deleted");
    }
    assert_eq!(std::fs::read_to_string(devices.join("a.json")).unwrap(), a);
}

#[test]
fn adding_a_device_over_a_refused_record_keeps_the_record() {
    let root = Root::new("over-refused");
    {
        let set = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap();
        set.add_device("a", None).unwrap();
        set.shutdown().unwrap();
    }
    let devices = root.0.join("metadata/devices");
    std::fs::write(devices.join("a.json"), b"{ damaged").unwrap();
    let set = DeviceSet::open(&root.0, options(FsKind::Ext4)).unwrap();
    assert!(!set.has_device("a"));
    let e = set.add_device("a", None).unwrap_err();
    assert!(e.to_string().contains("a.json"), "{e}");
    assert_eq!(std::fs::read(devices.join("a.json")).unwrap(), b"{ damaged");
    set.shutdown().unwrap();
}

/// The pool's event number and whether its status says it takes writes
/// (read without a commit).
fn pool_event_and_writable(c: &mut Control, pool: &str) -> (u32, bool) {
    use dmthin::dm::StatusOptions;
    use dmthin::target::{PoolMode, PoolStatus};
    let (info, lines) = c
        .table_status(
            DevId::Name(pool),
            &StatusOptions {
                noflush: true,
                ..Default::default()
            },
        )
        .unwrap();
    let writable = match PoolStatus::parse(lines[0].params()).unwrap() {
        PoolStatus::Active(s) => s.mode == PoolMode::ReadWrite && !s.needs_check,
        _ => false,
    };
    (info.event_nr, writable)
}

/// What the device set's commit check after each pool message relies on:
/// the message's reply carries the pool's event number as of after the
/// commit the pool makes for it; a commit that held leaves it unchanged,
/// and a failed one, which the message still reports as a success, has
/// moved it (the pool's switch to read-only raises an event).
#[test]
fn a_failed_commit_after_a_message_moves_the_pools_event_number() {
    let root = Root::new("evcommit");
    let disks = FlakeyDisks::new(&root.0, "flakey");
    let o = disks.options();
    let set = DeviceSet::open(root.0.join("set"), o).unwrap();
    set.add_device("kept", None).unwrap();
    let pool = set.pool_name().to_string();
    let mut c = Control::open().unwrap();
    let (before, writable) = pool_event_and_writable(&mut c, &pool);
    assert!(writable);
    // A message whose commit holds: no event.
    let after = c
        .send_message(DevId::Name(&pool), 0, "create_thin 4000")
        .unwrap();
    assert_eq!(after, before, "a committed message raised an event");
    assert_eq!(pool_event_and_writable(&mut c, &pool), (before, true));
    // Metadata writes fail: the message succeeds, its commit does not.
    disks.set_meta_table(&flakey_meta_sparing_superblock(
        &disks.meta_loop,
        FlakeyDisks::META_MIB * MIB / 512,
    ));
    let after = c
        .send_message(DevId::Name(&pool), 0, "create_thin 4001")
        .expect("the kernel reports the message itself as done");
    let (now, writable) = pool_event_and_writable(&mut c, &pool);
    assert!(!writable, "the failed commit left the pool writable");
    assert_ne!(after, before, "the failed commit raised no event");
    assert_eq!(now, after, "an event after the message's reply");
    // The device set sees the same: its next add is refused, clearly; so
    // is a remove, which on block devices (no discard first) reads no
    // status before its delete message: the refused message's error names
    // the pool's mode, and the device stays.
    let e = set.add_device("during", None).unwrap_err();
    assert!(matches!(e, DeviceSetError::PoolUnusable { .. }), "{e}");
    let e = set.remove_device("kept").unwrap_err();
    assert!(
        matches!(e, DeviceSetError::PoolUnusable { .. }) && e.to_string().contains("needs_check"),
        "{e}"
    );
    assert!(set.has_device("kept"), "a refused remove keeps the device");
    assert!(set.list().unwrap().iter().any(|d| d.id == "kept"));
    disks.fail_meta_writes(false);
    let _ = set.shutdown();
}
