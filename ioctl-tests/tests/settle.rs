//! Intents of unknown outcome (issue #25): an add or a remove whose commit
//! the pool could not confirm leaves a journal intent that the set settles
//! later. These tests combine that with what single fail points never do:
//! a retried add of the same id, a reused thin id and a crash, a degraded
//! open. Nothing acknowledged may be lost, and no stale intent may act on a
//! newer device.
//!
//! The commit checks are failed with the `*.commit_check` fail points (in
//! error mode: the check cannot tell, while the pool is in fact fine).

mod common;
use common::*;

use dmthin::deviceset::failpoint::{self, Mode};
use dmthin::deviceset::{DeviceSet, DeviceSetError, FsKind, Presence};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

const CHILD_ROOT: &str = "DMTHIN_SETTLE_CHILD_ROOT";

/// The call failed with the injected error of `point`.
fn assert_injected(r: dmthin::deviceset::Result<()>, point: &str) {
    match r {
        Err(DeviceSetError::Injected { point: p, .. }) if p == point => {}
        other => panic!("expected the injected error of {point}, got {other:?}"),
    }
}

fn thin_of(set: &DeviceSet, id: &str) -> u32 {
    set.list()
        .unwrap()
        .into_iter()
        .find(|d| d.id == id)
        .unwrap_or_else(|| panic!("{id} is not listed"))
        .thin_id
}

/// Mounts `id`, writes `text` to a file, unmounts and deactivates it.
fn write_file(set: &DeviceSet, id: &str, mnt: &Path, text: &str) {
    set.mount_device(id, mnt, false).unwrap();
    std::fs::write(mnt.join("file"), text).unwrap();
    set.unmount_device(id, mnt, true).unwrap();
}

fn read_file(set: &DeviceSet, id: &str, mnt: &Path) -> Option<String> {
    set.mount_device(id, mnt, false).unwrap();
    let text = std::fs::read_to_string(mnt.join("file")).ok();
    set.unmount_device(id, mnt, true).unwrap();
    text
}

#[test]
fn a_retried_add_is_never_replaced_by_the_add_whose_outcome_was_unknown() {
    let root = Root::new("stale-create");
    let o = options(FsKind::Ext4);
    let set = DeviceSet::open(&root.0, o.clone()).unwrap();
    failpoint::set(Some(("add.commit_check", Mode::Error)));
    let first = set.add_device("a", None);
    failpoint::set(None);
    assert_injected(first, "add.commit_check");
    assert_eq!(set.presence("a").unwrap(), Presence::Uncertain);
    assert_eq!(set.unsettled_ids().unwrap(), ["a"]);
    assert!(!set.has_device("a"));
    // The caller retries. The first add did reach the pool: the retry
    // settles it first and finds the device made (checked last, so that a
    // retry that made a second thin shows what it costs below).
    let retried = set.add_device("a", None);
    println!("the retried add: {retried:?}");
    let mnt = root.0.join("mnt-a");
    write_file(&set, "a", &mnt, "written after the retry");
    // Growing the pool heals (settles whatever is left) and a reopen
    // replays the journal: the device keeps its thin and its data.
    let thin = thin_of(&set, "a");
    let data = std::fs::metadata(root.0.join("devicemapper/data"))
        .unwrap()
        .len();
    set.grow_pool(data + 64 * MIB).unwrap();
    assert_eq!(thin_of(&set, "a"), thin);
    assert_eq!(
        read_file(&set, "a", &mnt).as_deref(),
        Some("written after the retry")
    );
    check_invariants(&set);
    drop(set);
    let set = DeviceSet::open(&root.0, o).unwrap();
    assert_eq!(thin_of(&set, "a"), thin);
    assert_eq!(
        read_file(&set, "a", &mnt).as_deref(),
        Some("written after the retry")
    );
    check_invariants(&set);
    set.shutdown().unwrap();
    assert!(
        matches!(retried, Err(DeviceSetError::DeviceExists(_))),
        "the retried add: {retried:?}"
    );
}

/// Child of [`a_settled_delete_never_acts_on_a_reused_thin_id`]: a remove
/// whose outcome is unknown, the deferred-delete sweep, then an add killed
/// before its (unsynced) done marker, as a power cut would lose it.
#[test]
fn settle_child() {
    let Ok(root) = std::env::var(CHILD_ROOT) else {
        return;
    };
    let set = DeviceSet::open(&root, DeviceSet::recorded_options(&root).unwrap().unwrap()).unwrap();
    failpoint::set(Some(("remove.commit_check", Mode::Error)));
    let removed = set.remove_device("a");
    failpoint::set(None);
    assert_injected(removed, "remove.commit_check");
    assert_eq!(set.presence("a").unwrap(), Presence::Uncertain);
    set.cleanup_deferred().unwrap();
    // Settled (the parent checks what matters: b's thin survives).
    println!("after the sweep, a is {:?}", set.presence("a"));
    failpoint::set(Some(("add.after_create_snap", Mode::Abort)));
    let _ = set.add_device("b", None);
    // Reaching here means the fail point was never hit.
    std::process::exit(42);
}

#[test]
fn a_settled_delete_never_acts_on_a_reused_thin_id() {
    let root = Root::new("reuse");
    let o = options(FsKind::Ext4);
    let set = DeviceSet::open(&root.0, o.clone()).unwrap();
    set.add_device("a", None).unwrap();
    let a_thin = thin_of(&set, "a");
    drop(set);
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "settle_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ROOT, &root.0)
        .status()
        .unwrap();
    assert_eq!(
        status.signal(),
        Some(nix::libc::SIGABRT),
        "the child did not abort at add.after_create_snap: {status:?}"
    );
    let set = DeviceSet::open(&root.0, o).unwrap();
    // b's create is finished on its own thin, which still exists; a is gone.
    let b_thin = thin_of(&set, "b");
    println!("a had thin {a_thin}; b has thin {b_thin}");
    assert!(
        pool_thin_ids(&set).contains(&b_thin),
        "b's thin {b_thin} was deleted by a's stale delete"
    );
    assert_eq!(set.presence("b").unwrap(), Presence::Present);
    assert_eq!(set.presence("a").unwrap(), Presence::Absent);
    check_invariants(&set);
    let mnt = root.0.join("mnt-b");
    set.mount_device("b", &mnt, false).unwrap();
    assert!(mnt.join("lost+found").exists(), "b's filesystem is missing");
    set.unmount_device("b", &mnt, true).unwrap();
    set.shutdown().unwrap();
}

#[test]
fn a_degraded_open_reports_an_unsettled_add_as_uncertain_and_keeps_it() {
    let root = Root::new("degraded-unsettled");
    let disks = FlakeyDisks::new(&root.0, "unsettled");
    let set_root = root.0.join("set");
    let o = disks.options();
    let set = DeviceSet::open(&set_root, o.clone()).unwrap();
    set.add_device("kept", None).unwrap();
    failpoint::set(Some(("add.commit_check", Mode::Error)));
    let added = set.add_device("c", None);
    failpoint::set(None);
    assert_injected(added, "add.commit_check");
    let kept = set.activate_device("kept").unwrap();
    drop(set);
    // Metadata writes fail before any open settled it: the next commit (a
    // write's flush) fails and the pool wants a check.
    disks.fail_meta_writes(true);
    let (written, out) = write_blocks(&kept, &[1, 9, 17]);
    println!("writes while the metadata fails: ok={written} {out}");
    let set = DeviceSet::open(&set_root, o.clone()).unwrap();
    assert!(set.status().unwrap().needs_check);
    assert_eq!(set.presence("c").unwrap(), Presence::Uncertain);
    assert_eq!(set.unsettled_ids().unwrap(), ["c"]);
    assert_eq!(set.presence("kept").unwrap(), Presence::Present);
    assert!(!set.list().unwrap().iter().any(|d| d.id == "c"));
    set.deactivate_device("kept").unwrap();
    set.shutdown().unwrap();
    drop(set);
    // Repaired as an operator would, the next open settles it: the create
    // had been committed, so the device is there.
    disks.fail_meta_writes(false);
    let (ok, _) = clear_needs_check(&disks.meta_node());
    if ok {
        let set = DeviceSet::open(&set_root, o).unwrap();
        assert_eq!(set.status().unwrap().mode, "rw");
        assert_eq!(set.presence("c").unwrap(), Presence::Present);
        assert!(set.unsettled_ids().unwrap().is_empty());
        check_invariants_on(&set, &disks.meta_node());
        set.shutdown().unwrap();
    }
}

#[test]
fn a_redone_delete_on_an_adopted_pool_spares_the_owners_new_thin_of_that_id() {
    let root = Root::new("adopt-reuse");
    let pool = ForeignPool::new(&root.0, "adopt-reuse");
    let name = pool.name.as_str();
    let set_root = root.0.join("set");
    let o = pool.options();
    let set = DeviceSet::open(&set_root, o.clone()).unwrap();
    set.add_device("a", None).unwrap();
    let thin = thin_of(&set, "a");
    // The delete reaches the pool, but its commit check cannot tell.
    failpoint::set(Some(("remove.commit_check", Mode::Error)));
    let removed = set.remove_device("a");
    failpoint::set(None);
    assert_injected(removed, "remove.commit_check");
    assert_eq!(set.presence("a").unwrap(), Presence::Uncertain);
    drop(set);
    assert!(!pool.thin_ids().contains(&thin), "a was deleted");
    // Before the set opens again, the pool's owner makes a thin of its own
    // with the freed id.
    sh_ok(&format!("dmsetup message {name} 0 create_thin {thin}"));
    let set = DeviceSet::open(&set_root, o).unwrap();
    assert_eq!(set.presence("a").unwrap(), Presence::Absent);
    assert!(set.unsettled_ids().unwrap().is_empty());
    let ids = pool.thin_ids();
    assert!(
        ids.contains(&thin),
        "the redone delete destroyed the owner's new thin {thin}: {ids:?}"
    );
    // The set goes on working beside it.
    set.add_device("b", None).unwrap();
    assert_ne!(thin_of(&set, "b"), thin);
    set.shutdown().unwrap();
    drop(set);
    sh_ok(&format!("dmsetup message {name} 0 delete {thin}"));
}

/// An id removed since the journal was last folded (its record file still
/// on disk, the removal in the journal) can be added again at once, and the
/// new device is the one that survives a reopen.
#[test]
fn a_removed_id_can_be_added_again_before_the_journal_is_folded() {
    let root = Root::new("reuse-id");
    let o = options(FsKind::Ext4);
    let set = DeviceSet::open(&root.0, o.clone()).unwrap();
    set.add_device("x", None).unwrap();
    set.add_device("p", None).unwrap();
    // Shutdown folds: x.json is written.
    set.shutdown().unwrap();
    drop(set);
    assert!(root.0.join("metadata/devices/x.json").exists());
    let set = DeviceSet::open(&root.0, o.clone()).unwrap();
    set.remove_device("x").unwrap();
    set.add_device("x", Some("p")).unwrap();
    assert_eq!(set.presence("x").unwrap(), Presence::Present);
    let listed = set.list().unwrap();
    let x = listed.iter().find(|d| d.id == "x").unwrap();
    assert_eq!(x.parent.as_deref(), Some("p"));
    check_invariants(&set);
    drop(set);
    let set = DeviceSet::open(&root.0, o).unwrap();
    let listed = set.list().unwrap();
    let again = listed.iter().find(|d| d.id == "x").unwrap();
    assert_eq!(
        (again.parent.as_deref(), again.thin_id),
        (Some("p"), x.thin_id)
    );
    check_invariants(&set);
    set.shutdown().unwrap();
}
