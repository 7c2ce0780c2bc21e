//! Kernel suite for `dmthin::dm`, errors: what each refusal of the real
//! kernel becomes, and names refused before any ioctl.

mod dm_common;
use dm_common::*;

use dmthin::dm::{
    CreateOptions, DevId, DmError, ErrorKind, RemoveOptions, StatusOptions, UdevFlags,
};
use dmthin_ioctl_tests::sh_ok;
use std::fs::OpenOptions;
use std::path::Path;
use std::time::{Duration, Instant};

#[test]
fn error_missing_device_is_not_found() {
    let mut c = ctl();
    for err in [
        c.info(DevId::Name("dmthin-test-does-not-exist"))
            .unwrap_err(),
        c.remove(
            DevId::Name("dmthin-test-does-not-exist"),
            &RemoveOptions::default(),
        )
        .unwrap_err(),
        c.table_status(DevId::Uuid("NO-SUCH-UUID"), &StatusOptions::default())
            .unwrap_err(),
    ] {
        assert!(err.is_not_found(), "{err}");
        assert_eq!(err.errno(), Some(nix::errno::Errno::ENXIO), "{err}");
        assert!(err.to_string().contains("not found"), "{err}");
    }
}

#[test]
fn error_duplicate_name_is_busy() {
    let name = format!("{PREFIX}dup");
    let _g = Cleanup::new(&[&name]);
    let mut c = ctl();
    let info = c.create(&name, &CreateOptions::default()).unwrap();
    let err = c.create(&name, &CreateOptions::default()).unwrap_err();
    assert!(err.is_busy(), "{err}");
    assert!(err.to_string().contains(&name), "{err}");
    // 6.x registers the disk (and devtmpfs its /dev/dm-<minor>) at the first
    // table load, 5.10 already at create; either way we make no node of our
    // own that would outlive the device.
    c.remove(DevId::Name(&name), &RemoveOptions::default())
        .unwrap();
    assert!(!Path::new(&format!("/dev/dm-{}", info.dev.minor)).exists());
}

#[test]
fn error_refused_table_names_the_line() {
    let name = format!("{PREFIX}refused");
    let _g = Cleanup::new(&[&name]);
    let mut c = ctl();
    c.create(&name, &CreateOptions::default()).unwrap();
    let bad = line(0, 8, "thin-pool", "7:0 7:0 100 10");
    let err = c.table_load(DevId::Name(&name), &[bad], false).unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::Invalid), "{err}");
    let text = err.to_string();
    assert!(text.contains("0 8 thin-pool 7:0 7:0 100 10"), "{text}");
    // create_with_table undoes the create when the load fails.
    let other = format!("{PREFIX}refused2");
    let err = c
        .create_with_table(
            &other,
            &CreateOptions::default(),
            &[line(0, 8, "no-such-target", "")],
            UdevFlags::empty(),
        )
        .unwrap_err();
    assert!(matches!(err, DmError::Ioctl { .. }), "{err}");
    assert!(
        !c.exists(&other).unwrap(),
        "failed create_with_table left the device behind"
    );
}

#[test]
fn error_remove_of_open_device_is_busy_and_deferred_remove_completes_on_close() {
    let name = format!("{PREFIX}open");
    let _g = Cleanup::new(&[&name]);
    let mut c = ctl();
    let info = c
        .create_with_table(
            &name,
            &CreateOptions::default(),
            &zero(&name, 8),
            UdevFlags::empty(),
        )
        .unwrap();
    let holder = OpenOptions::new()
        .read(true)
        .open(format!("/dev/dm-{}", info.dev.minor))
        .unwrap();
    let err = c
        .remove(DevId::Name(&name), &RemoveOptions::default())
        .unwrap_err();
    assert!(err.is_busy(), "{err}");
    c.remove(
        DevId::Name(&name),
        &RemoveOptions {
            deferred: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(c.exists(&name).unwrap(), "still there while open");
    assert!(sh_ok(&format!("dmsetup info {name}"))
        .to_lowercase()
        .contains("deferred"));
    drop(holder);
    let start = Instant::now();
    while c.exists(&name).unwrap() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "deferred removal never happened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn invalid_names_are_refused_before_any_ioctl() {
    let mut c = ctl();
    let before = c.ioctl_count();
    for bad in ["", "a/b", "a b", "x\n", &"n".repeat(128)] {
        let err = c.create(bad, &CreateOptions::default()).unwrap_err();
        assert!(
            matches!(err, DmError::InvalidArgument { .. }),
            "{bad:?}: {err}"
        );
    }
    assert_eq!(c.ioctl_count(), before);
}

#[test]
fn remove_all_removes_unused_devices() {
    let a = format!("{PREFIX}all-a");
    let b = format!("{PREFIX}all-b");
    let _g = Cleanup::new(&[&a, &b]);
    let mut c = ctl();
    c.create(&a, &CreateOptions::default()).unwrap();
    c.create_with_table(
        &b,
        &CreateOptions::default(),
        &zero(&b, 8),
        UdevFlags::empty(),
    )
    .unwrap();
    c.remove_all(false).unwrap();
    assert!(!c.exists(&a).unwrap() && !c.exists(&b).unwrap());
    assert_eq!(sh_ok("dmsetup ls").trim(), "No devices found");
    // Nodes we made ourselves are not removed by the kernel; clean them.
    for n in [&a, &b] {
        let _ = std::fs::remove_file(format!("/dev/mapper/{n}"));
    }
}
