//! What the seeded schedule found, each as a short deterministic test (the
//! seeds that found them are named; replay one with
//! `DMTHIN_SCHEDULE_SEED=N ioctl-tests/run --test schedule`).

use crate::common::*;
use crate::world::World;
use dmthin::deviceset::failpoint::{self, Mode};
use dmthin::deviceset::{DeviceSet, DeviceSetError, Presence, RemoveOutcome};
use std::path::Path;

/// Runs `f` with `point` armed in error mode; the call must fail there.
fn failing_at<T: std::fmt::Debug>(
    point: &'static str,
    f: impl FnOnce() -> Result<T, DeviceSetError>,
) {
    failpoint::set(Some((point, Mode::Error)));
    let r = f();
    failpoint::set(None);
    assert!(
        matches!(&r, Err(DeviceSetError::Injected { point: p, .. }) if *p == point),
        "expected the injected error of {point}: {r:?}"
    );
}

/// Seeds 25 (after 23), 35, 42, ...: the pool's metadata grown, the
/// crate's metadata reader must still read it (the superblock's
/// `metadata_nr_blocks` keeps the size the metadata was formatted with),
/// and an add of unknown outcome must still be settled.
#[test]
fn found_metadata_growth_keeps_the_pool_readable_and_intents_settled() {
    let w = World::main("found-meta");
    let set = w.set();
    set.grow_pool_metadata(crate::world::META_START + MIB)
        .unwrap();
    for id in ["a", "b", "c"] {
        set.add_device(id, None).unwrap();
    }
    if let Err(e) = set.usage_all() {
        panic!("usage after a metadata growth: {e}");
    }
    failing_at("add.commit_check", || set.add_device("d", None));
    assert_eq!(set.presence("d").unwrap(), Presence::Uncertain);
    // The next add settles it first (the pool is writable).
    let r = set.add_device("e", None);
    assert!(r.is_ok(), "an add after a metadata growth: {r:?}");
    assert_eq!(set.presence("d").unwrap(), Presence::Present);
}

/// Seed 5274: an id removed since the last fold (its record file is
/// still there, the delete only in the journal) can be added again.
#[test]
fn found_an_id_removed_since_the_last_fold_can_be_added_again() {
    let mut w = World::main("found-reuse");
    w.set().add_device("a", None).unwrap();
    w.set.take().unwrap().shutdown().unwrap();
    w.open().unwrap();
    w.set().remove_device("a").unwrap();
    let r = w.set().add_device("a", None);
    assert!(r.is_ok(), "adding a removed id again: {r:?}");
}

/// The set's word on `id` (presence, initialized) before and after a
/// crash and reopen must be the same: a failed call is wholly done or
/// wholly undone, in memory and on disk alike.
fn same_after_reopen(w: &mut World, id: &str) {
    let before = (
        w.set().presence(id).unwrap(),
        w.set().has_initialized_device(id),
    );
    w.crash();
    w.open().unwrap();
    let after = (
        w.set().presence(id).unwrap(),
        w.set().has_initialized_device(id),
    );
    assert_eq!(
        before, after,
        "{id}: (presence, initialized) before a reopen vs after"
    );
}

/// Seeds 55, 1066, 1094: a deferred remove that failed after writing its
/// record (the device still present) is not done by the next open.
#[test]
fn found_a_failed_deferred_remove_stays_undone_after_a_reopen() {
    let mut w = World::main("found-deferred");
    w.set().add_device("a", None).unwrap();
    let held = std::fs::File::open(w.set().activate_device("a").unwrap()).unwrap();
    failing_at("remove_deferred.after_write_record", || {
        w.set()
            .remove_device_deferred("a")
            .map(|o| assert_eq!(o, RemoveOutcome::Deferred))
    });
    drop(held);
    same_after_reopen(&mut w, "a");
}

/// Seeds 133, 1093, 1223: a set_initialized that failed after writing
/// its record reads the same before and after a reopen.
#[test]
fn found_a_failed_set_initialized_reads_the_same_after_a_reopen() {
    let mut w = World::main("found-initialized");
    w.set().add_device("a", None).unwrap();
    failing_at("set_initialized.after_write", || {
        w.set().set_initialized("a", true)
    });
    same_after_reopen(&mut w, "a");
}

/// Seeds 33, 52, 74, ...: a mount that failed after mounting is either
/// undone or counted (else the device cannot be unmounted, deactivated
/// or removed through the set until the next open).
#[test]
fn found_a_failed_mount_leaves_no_mount_the_set_does_not_count() {
    let w = World::main("found-mount");
    let set: &DeviceSet = w.set();
    set.add_device("a", None).unwrap();
    let mnt = w.mnt("a");
    failing_at("mount.after_mount", || set.mount_device("a", &mnt, false));
    let counted = set
        .list()
        .unwrap()
        .iter()
        .any(|d| d.id == "a" && !d.mount_points.is_empty());
    let mounted = w.kernel_mounts().contains(Path::new(&mnt));
    assert!(
        counted || !mounted,
        "{} is mounted but the set does not count it",
        mnt.display()
    );
}
