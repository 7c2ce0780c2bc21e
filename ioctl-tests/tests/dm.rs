//! Kernel suite for `dmthin::dm`: every command against the real kernel,
//! cross-checked with dmsetup. Run by `ioctl-tests/run` (one thread).

mod dm_common;
use dm_common::*;

use dmthin::dm::{
    Control, ControlOptions, CreateOptions, DevId, DmError, ErrorKind, NodeMode, RemoveOptions,
    StatusKind, StatusOptions, SuspendOptions, UdevFlags,
};
use dmthin::target::TableLine;
use dmthin_ioctl_tests::{sh, sh_ok, udev_mode, LoopDevice};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[test]
fn version_matches_dmsetup() {
    let c = ctl();
    let v = c.version();
    assert_eq!(v.major, 4);
    let text = sh_ok("dmsetup version");
    let expected = format!("Driver version:    {}.{}.{}", v.major, v.minor, v.patch);
    assert!(
        text.contains(&expected),
        "dmsetup says {text:?}, we say {v}"
    );
    assert_eq!(c.ioctl_count(), 1, "open costs exactly one DM_VERSION");
}

#[test]
fn linear_over_loop_device_matches_dmsetup_table() {
    let lo = LoopDevice::new("dm-linear", 8 << 20);
    let name = format!("{PREFIX}linear");
    let _g = Cleanup::new(&[&name]);
    let mut c = ctl();
    let table = vec![line(0, 16384, "linear", &format!("{} 0", lo.majmin()))];
    let info = c
        .create_with_table(&name, &CreateOptions::default(), &table, UdevFlags::empty())
        .unwrap();
    assert_eq!(info.name.as_str(), name);
    assert!(info.active_table());
    let t = sh_ok(&format!("dmsetup table {name}"));
    assert_eq!(t.trim(), format!("0 16384 linear {} 0", lo.majmin()));
    let (_, lines) = c
        .table_status(
            DevId::Name(&name),
            &StatusOptions {
                kind: StatusKind::Table,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(lines, table);
    let deps = c.table_deps(DevId::Name(&name), false).unwrap();
    assert_eq!(deps.len(), 1);
    assert_eq!(deps[0].to_string(), lo.majmin());
    let dmdeps = sh_ok(&format!("dmsetup deps {name}"));
    assert!(
        dmdeps.contains(&format!("({}, {})", deps[0].major, deps[0].minor)),
        "{dmdeps}"
    );
    // The device node works: /dev/dm-N always, /dev/mapper/<name> from us or udev.
    assert!(Path::new(&format!("/dev/dm-{}", info.dev.minor)).exists());
    let mapper = format!("/dev/mapper/{name}");
    let meta = std::fs::symlink_metadata(&mapper).expect("mapper node exists");
    if udev_mode() {
        assert!(
            meta.file_type().is_symlink(),
            "udev makes /dev/mapper/<name> a symlink"
        );
    }
    sh_ok(&format!(
        "dd if=/dev/zero of={mapper} bs=4096 count=4 oflag=direct 2>/dev/null"
    ));
    c.remove(DevId::Name(&name), &RemoveOptions::default())
        .unwrap();
    assert!(
        !sh(&format!("dmsetup info {name}")).0,
        "dmsetup must no longer see it"
    );
    // udev removes its symlink while processing the event our cookie waited for;
    // allow it a moment in case the link removal trails the notification.
    let start = Instant::now();
    while Path::new(&mapper).exists() && start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!Path::new(&mapper).exists(), "mapper node removed");
    let dm_node = format!("/dev/dm-{}", info.dev.minor);
    let start = Instant::now();
    while Path::new(&dm_node).exists() && start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !Path::new(&dm_node).exists(),
        "{dm_node} left behind after remove"
    );
}

#[test]
fn active_device_costs_exactly_three_ioctls() {
    let name = format!("{PREFIX}three");
    let _g = Cleanup::new(&[&name]);
    let mut c = ctl();
    let before = c.ioctl_count();
    c.create_with_table(
        &name,
        &CreateOptions::default(),
        &zero(&name, 8),
        UdevFlags::empty(),
    )
    .unwrap();
    assert_eq!(c.ioctl_count() - before, 3);
    let buf = c.buffer_size();
    for _ in 0..10 {
        c.info(DevId::Name(&name)).unwrap();
    }
    assert_eq!(c.buffer_size(), buf, "steady state reuses the buffer");
}

#[test]
fn create_with_uuid_and_minor_info_and_list() {
    let name = format!("{PREFIX}uuid");
    let uuid = "DMTHIN-TEST-UUID-0001";
    let _g = Cleanup::new(&[&name]);
    let mut c = ctl();
    let info = c
        .create_with_table(
            &name,
            &CreateOptions {
                uuid: Some(uuid),
                minor: Some(200),
                read_only: true,
            },
            &zero(&name, 8),
            UdevFlags::empty(),
        )
        .unwrap();
    assert_eq!(info.dev.minor, 200);
    let info = c.info(DevId::Uuid(uuid)).unwrap();
    assert_eq!(info.name.as_str(), name);
    assert_eq!(info.uuid.as_str(), uuid);
    assert!(info.read_only());
    let text = sh_ok(&format!("dmsetup info {name}"));
    assert!(text.contains(uuid), "{text}");
    assert!(
        text.contains(&format!("Major, minor:      {}, 200", info.dev.major)),
        "{text}"
    );
    assert!(text.contains("READ-ONLY"), "{text}");
    let list = c.list_devices().unwrap();
    let e = list.iter().find(|e| e.name == name).expect("listed");
    assert_eq!(e.dev, info.dev);
    // Uuids come in the list from interface 4.45 (Linux 5.13) on (issue #17).
    let listed_uuid = c.version().supports(dmthin::dm::Version::new(4, 45, 0));
    assert_eq!(e.uuid.as_deref(), listed_uuid.then_some(uuid));
    assert!(e.event_nr.is_some());
    let ls = sh_ok("dmsetup ls");
    assert!(
        ls.contains(&format!("{name}\t({}:200)", info.dev.major))
            || ls.contains(&format!("{name}\t({}, 200)", info.dev.major)),
        "{ls}"
    );
    // by dev too
    let by_dev = c.info(DevId::Dev(info.dev)).unwrap();
    assert_eq!(by_dev.name.as_str(), name);
}

#[test]
fn list_devices_grows_the_buffer_for_500_devices() {
    let mut c = ctl();
    let names: Vec<String> = (0..500)
        .map(|i| format!("{PREFIX}many-{i:03}-{}", "x".repeat(40)))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let _g = Cleanup::new(&refs);
    for n in &names {
        c.create(n, &CreateOptions::default()).unwrap();
    }
    let before = c.buffer_size();
    let list = c.list_devices().unwrap();
    assert!(
        c.buffer_size() > before,
        "BUFFER_FULL must have grown the buffer ({before})"
    );
    for n in &names {
        assert!(list.iter().any(|e| &e.name == n), "{n} missing");
    }
    let count = sh_ok("dmsetup ls")
        .lines()
        .filter(|l| l.starts_with(&format!("{PREFIX}many-")))
        .count();
    assert_eq!(count, 500);
    for n in &names {
        c.remove(DevId::Name(n), &RemoveOptions::default()).unwrap();
    }
}

#[test]
fn table_status_with_many_targets_grows_the_buffer() {
    let name = format!("{PREFIX}wide");
    let _g = Cleanup::new(&[&name]);
    let mut c = ctl();
    let table: Vec<TableLine> = (0..2000).map(|i| line(i * 8, 8, "zero", "")).collect();
    c.create_with_table(&name, &CreateOptions::default(), &table, UdevFlags::empty())
        .unwrap();
    let (info, lines) = c
        .table_status(
            DevId::Name(&name),
            &StatusOptions {
                kind: StatusKind::Table,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(info.target_count, 2000);
    assert_eq!(lines, table);
    let n = sh_ok(&format!("dmsetup table {name}")).lines().count();
    assert_eq!(n, 2000);
    // The same Control lists devices after that long reply. Before 4.45
    // (5.10's 4.43) the kernel writes no flags word or uuid after each name,
    // so the stale reply bytes left there must not be read as one: this
    // failed 300 times in 300 on 5.10 before the decoder was gated.
    for _ in 0..50 {
        let list = c.list_devices().unwrap();
        let e = list.iter().find(|e| e.name == name).expect("listed");
        assert_eq!(e.dev, info.dev);
        assert_eq!(e.uuid, None, "no uuid was set");
    }
}

#[test]
fn rename_and_set_uuid() {
    let a = format!("{PREFIX}ren-a");
    let b = format!("{PREFIX}ren-b");
    let _g = Cleanup::new(&[&a, &b]);
    let mut c = ctl();
    c.create_with_table(
        &a,
        &CreateOptions::default(),
        &zero(&a, 8),
        UdevFlags::empty(),
    )
    .unwrap();
    c.rename(DevId::Name(&a), &b).unwrap();
    assert!(!c.exists(&a).unwrap());
    assert!(sh(&format!("dmsetup info {b}")).0);
    assert!(Path::new(&format!("/dev/mapper/{b}")).exists());
    assert!(!Path::new(&format!("/dev/mapper/{a}")).exists());
    c.set_uuid(DevId::Name(&b), "DMTHIN-TEST-SET-UUID").unwrap();
    assert!(sh_ok(&format!("dmsetup info {b}")).contains("DMTHIN-TEST-SET-UUID"));
    assert_eq!(
        c.info(DevId::Name(&b)).unwrap().uuid.as_str(),
        "DMTHIN-TEST-SET-UUID"
    );
}

#[test]
fn suspend_and_resume_with_flags() {
    let name = format!("{PREFIX}susp");
    let _g = Cleanup::new(&[&name]);
    let mut c = ctl();
    c.create_with_table(
        &name,
        &CreateOptions::default(),
        &zero(&name, 8),
        UdevFlags::empty(),
    )
    .unwrap();
    for opts in [
        SuspendOptions::default(),
        SuspendOptions {
            noflush: true,
            skip_lockfs: true,
        },
    ] {
        let info = c.suspend(DevId::Name(&name), &opts).unwrap();
        assert!(info.suspended());
        assert!(sh_ok(&format!("dmsetup info {name}")).contains("SUSPENDED"));
        let info = c.resume(DevId::Name(&name), UdevFlags::empty()).unwrap();
        assert!(!info.suspended());
        assert!(sh_ok(&format!("dmsetup info {name}")).contains("ACTIVE"));
    }
}

#[test]
fn inactive_table_query_clear_and_reload() {
    let name = format!("{PREFIX}inactive");
    let _g = Cleanup::new(&[&name]);
    let mut c = ctl();
    c.create_with_table(
        &name,
        &CreateOptions::default(),
        &zero(&name, 8),
        UdevFlags::empty(),
    )
    .unwrap();
    let info = c
        .table_load(DevId::Name(&name), &[line(0, 16, "error", "")], false)
        .unwrap();
    assert!(info.inactive_table());
    let (_, inactive) = c
        .table_status(
            DevId::Name(&name),
            &StatusOptions {
                kind: StatusKind::Table,
                inactive: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(inactive, vec![line(0, 16, "error", "")]);
    assert!(sh_ok(&format!("dmsetup table --inactive {name}")).contains("0 16 error"));
    let info = c.table_clear(DevId::Name(&name)).unwrap();
    assert!(!info.inactive_table());
    c.reload_table(
        DevId::Name(&name),
        &[line(0, 24, "error", "")],
        UdevFlags::empty(),
    )
    .unwrap();
    assert_eq!(sh_ok(&format!("dmsetup table {name}")).trim(), "0 24 error");
    let info = c.info(DevId::Name(&name)).unwrap();
    assert!(!info.suspended() && !info.inactive_table());
    // A refused reload leaves the old table live and the device running.
    let err = c.reload_table(
        DevId::Name(&name),
        &[line(0, 8, "linear", "999:999 0")],
        UdevFlags::empty(),
    );
    assert!(err.is_err());
    assert_eq!(sh_ok(&format!("dmsetup table {name}")).trim(), "0 24 error");
    assert!(!c.info(DevId::Name(&name)).unwrap().suspended());
}

#[test]
fn target_message_returns_the_reply() {
    let name = format!("{PREFIX}msg");
    let _g = Cleanup::new(&[&name]);
    let mut c = ctl();
    c.create_with_table(
        &name,
        &CreateOptions::default(),
        &zero(&name, 64),
        UdevFlags::empty(),
    )
    .unwrap();
    let reply = c
        .target_message(DevId::Name(&name), 0, "@stats_create - /1")
        .unwrap();
    assert_eq!(reply.as_deref(), Some("0"), "first stats region id");
    let list = c
        .target_message(DevId::Name(&name), 0, "@stats_list")
        .unwrap()
        .unwrap_or_default();
    let dm_list = sh_ok(&format!("dmsetup message {name} 0 @stats_list"));
    assert_eq!(list.trim(), dm_list.trim());
    assert!(list.starts_with("0: 0+64"), "{list}");
    let err = c
        .target_message(DevId::Name(&name), 0, "no_such_message")
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::Invalid), "{err}");
    assert!(err.to_string().contains("no_such_message"), "{err}");
    // send_message offers no reply space: the message takes effect (a second
    // region appears) and its reply ("1") is dropped, not an error.
    let before = c.ioctl_count();
    c.send_message(DevId::Name(&name), 0, "@stats_create - /1")
        .unwrap();
    assert_eq!(c.ioctl_count() - before, 1);
    let list = sh_ok(&format!("dmsetup message {name} 0 @stats_list"));
    assert!(list.contains("1: 0+64"), "{list}");
    let err = c
        .send_message(DevId::Name(&name), 0, "no_such_message")
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::Invalid), "{err}");
}

#[test]
fn udev_cookies_are_released_and_a_dead_udev_does_not_hang() {
    if !udev_mode() {
        // Without udev the direct node path is what runs; assert it.
        assert_eq!(ctl().node_mode(), NodeMode::Direct);
        return;
    }
    let name = format!("{PREFIX}udev");
    let _g = Cleanup::new(&[&name]);
    let mut c = Control::open_with(ControlOptions::default()).unwrap();
    assert!(matches!(c.node_mode(), NodeMode::UdevWatch { .. }));
    // The cookie mode, libdm's protocol, on request.
    c.set_node_mode(NodeMode::Udev {
        timeout: Duration::from_secs(30),
    });
    c.create_with_table(
        &name,
        &CreateOptions::default(),
        &zero(&name, 8),
        UdevFlags::empty(),
    )
    .unwrap();
    assert!(std::fs::symlink_metadata(format!("/dev/mapper/{name}"))
        .unwrap()
        .file_type()
        .is_symlink());
    c.remove(DevId::Name(&name), &RemoveOptions::default())
        .unwrap();
    let ipcs = sh_ok("ipcs -s");
    assert!(!ipcs.contains("0x0d4d"), "cookie semaphores left: {ipcs}");
    // Kill udevd: the next call must fail within the timeout, not hang.
    sh("pkill -9 systemd-udevd; killall -9 systemd-udevd; sleep 0.5");
    c.set_node_mode(NodeMode::Udev {
        timeout: Duration::from_secs(2),
    });
    let start = Instant::now();
    let err = c
        .create_with_table(
            &name,
            &CreateOptions::default(),
            &zero(&name, 8),
            UdevFlags::empty(),
        )
        .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    assert!(matches!(err, DmError::Udev(_)), "{err}");
    let _ = c.remove(DevId::Name(&name), &RemoveOptions::default());
    let ipcs = sh_ok("ipcs -s");
    assert!(
        !ipcs.contains("0x0d4d"),
        "cookie semaphores left after udev died: {ipcs}"
    );
    let (ok, out) =
        sh("/lib/systemd/systemd-udevd --daemon && udevadm settle -t 10 && udevadm control --ping");
    assert!(ok, "restarting udevd failed: {out}");
}

#[test]
fn private_devices_are_removed_right_after_creation_without_ebusy() {
    // With udev running, its probes (blkid) could hold a fresh device open
    // and make an immediate remove fail with EBUSY; private devices skip them.
    let name = format!("{PREFIX}private");
    let _g = Cleanup::new(&[&name]);
    let mut c = ctl();
    for i in 0..20 {
        c.create_with_table(
            &name,
            &CreateOptions::default(),
            &zero(&name, 2048),
            UdevFlags::PRIVATE,
        )
        .unwrap();
        if let Err(e) = c.remove(
            DevId::Name(&name),
            &RemoveOptions {
                udev_flags: UdevFlags::PRIVATE,
                ..Default::default()
            },
        ) {
            panic!("cycle {i}: remove right after create failed: {e}");
        }
    }
    assert!(!c.exists(&name).unwrap());
}

#[test]
fn bypass_mode_makes_its_own_nodes_and_udev_leaves_the_device_alone() {
    use std::io::Write;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let name = format!("{PREFIX}bypass");
    let _g = Cleanup::new(&[&name]);
    let mut c = ctl();
    c.set_node_mode(NodeMode::Bypass);
    let node = PathBuf::from(format!("/dev/mapper/{name}"));
    for i in 0..10 {
        let info = c
            .create_with_table(
                &name,
                &CreateOptions::default(),
                &zero(&name, 2048),
                UdevFlags::empty(),
            )
            .unwrap();
        // Present when the call returns: our own block node, not udev's symlink.
        let meta = std::fs::symlink_metadata(&node).unwrap();
        assert!(meta.file_type().is_block_device(), "cycle {i}: {meta:?}");
        assert_eq!(
            (
                nix::sys::stat::major(meta.rdev()),
                nix::sys::stat::minor(meta.rdev())
            ),
            (u64::from(info.dev.major), u64::from(info.dev.minor))
        );
        if udev_mode() && i == 0 {
            // udev saw the flags and skipped its dm rules: still our node,
            // and its database says so.
            sh_ok("udevadm settle -t 10");
            let meta = std::fs::symlink_metadata(&node).unwrap();
            assert!(meta.file_type().is_block_device(), "{meta:?}");
            let props = sh_ok(&format!(
                "udevadm info -q property -n /dev/dm-{}",
                info.dev.minor
            ));
            assert!(
                props.contains("DM_UDEV_DISABLE_DM_RULES_FLAG=1")
                    && props.contains("DM_UDEV_DISABLE_OTHER_RULES_FLAG=1"),
                "{props}"
            );
        }
        // Written and closed (udev's inotify watch would probe it now), then
        // removed at once: no retry is made in this mode, so EBUSY would fail.
        let mut f = std::fs::OpenOptions::new().write(true).open(&node).unwrap();
        f.write_all(&[0u8; 4096]).unwrap();
        drop(f);
        c.remove(DevId::Name(&name), &RemoveOptions::default())
            .unwrap_or_else(|e| panic!("cycle {i}: remove right after a write: {e}"));
        assert!(
            std::fs::symlink_metadata(&node).is_err(),
            "cycle {i}: node left"
        );
    }
    let ipcs = sh_ok("ipcs -s");
    assert!(!ipcs.contains("0x0d4d"), "cookie semaphores: {ipcs}");
}

#[test]
fn zz_nothing_left_behind() {
    let list = ctl().list_devices().unwrap();
    let left: Vec<_> = list.iter().filter(|e| e.name.starts_with(PREFIX)).collect();
    assert!(left.is_empty(), "devices left behind: {left:?}");
}
