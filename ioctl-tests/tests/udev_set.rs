//! The device set beside udev, with its sync (udevd's monitor,
//! NodeMode::UdevWatch, the default) and without it (`udev_sync: false`,
//! NodeMode::Bypass). CI runs this file in
//! the udev pass too; without udev both modes take the direct node path.

mod common;
use common::*;

use dmthin::deviceset::{DeviceSet, FsKind};
use dmthin::dm::{Control, NodeMode};
use dmthin_ioctl_tests::udev_mode;
use std::os::unix::fs::FileTypeExt;

fn lifecycle(tag: &str, udev_sync: bool) {
    let root = Root::new(tag);
    let mut o = options(FsKind::Ext4);
    o.udev_sync = udev_sync;
    let set = DeviceSet::open(&root.0, o.clone()).unwrap();
    for round in 0..3 {
        let id = format!("layer{round}");
        set.add_device(&id, None).unwrap();
        let node = set.activate_device(&id).unwrap();
        let meta = std::fs::symlink_metadata(&node).unwrap();
        if udev_mode() && udev_sync {
            // udev's node: a symlink to ../dm-N, present when the call returned.
            assert!(meta.file_type().is_symlink(), "{node:?}: {meta:?}");
        } else {
            assert!(meta.file_type().is_block_device(), "{node:?}: {meta:?}");
        }
        let m = root.mnt(&id);
        set.mount_device(&id, &m, false).unwrap();
        std::fs::write(m.join("f"), format!("round {round}")).unwrap();
        // Unmount, deactivate and remove at once: no udev probe may hold it.
        set.unmount_device(&id, &m, true).unwrap();
        assert!(std::fs::symlink_metadata(&node).is_err(), "{node:?} left");
        set.remove_device(&id).unwrap();
    }
    // A snapshot of an active, mounted device (suspend + create_snap + resume).
    set.add_device("origin", None).unwrap();
    let m = root.mnt("origin");
    set.mount_device("origin", &m, false).unwrap();
    std::fs::write(m.join("f"), "origin").unwrap();
    set.add_device("snap", Some("origin")).unwrap();
    let s = root.mnt("snap");
    set.mount_device("snap", &s, true).unwrap();
    assert_eq!(std::fs::read_to_string(s.join("f")).unwrap(), "origin");
    set.unmount_device("snap", &s, true).unwrap();
    set.unmount_device("origin", &m, true).unwrap();
    check_invariants(&set);
    set.shutdown().unwrap();
    let ipcs = sh_ok("ipcs -s");
    assert!(!ipcs.contains("0x0d4d"), "cookie semaphores left: {ipcs}");
    let left = sh_ok("ls /dev/mapper");
    let prefix = dmthin::deviceset::name_prefix(&root.0).unwrap();
    assert!(!left.contains(&prefix), "nodes left: {left}");
}

#[test]
fn device_set_with_udev_sync() {
    if udev_mode() {
        assert!(matches!(
            Control::open().unwrap().node_mode(),
            NodeMode::UdevWatch { .. }
        ));
    }
    lifecycle("udev-sync", true);
}

#[test]
fn device_set_bypassing_udev() {
    lifecycle("udev-bypass", false);
}
