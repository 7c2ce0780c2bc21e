//! Kernel suite for `dmthin::dm`, events: geometry, ARM_POLL and
//! DEV_WAIT against the real kernel.

mod dm_common;
use dm_common::*;

use dmthin::dm::{CreateOptions, DevId, ErrorKind, RemoveOptions, StatusOptions, UdevFlags};
use dmthin_ioctl_tests::{sh_ok, LoopDevice};
use std::time::{Duration, Instant};

#[test]
fn versions_geometry_and_poll() {
    let mut c = ctl();
    let tv = c.get_target_version("thin-pool").unwrap();
    assert_eq!(tv.name, "thin-pool");
    assert!(tv.version.major >= 1);
    let all = c.list_versions().unwrap();
    let targets = sh_ok("dmsetup targets");
    for name in ["linear", "zero", "error", "thin-pool", "thin"] {
        let v = all
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("{name} not listed"));
        let expect = format!(
            "{name:<16} v{}.{}.{}",
            v.version.major, v.version.minor, v.version.patch
        );
        assert!(
            targets.contains(&expect),
            "dmsetup targets lacks {expect:?}: {targets}"
        );
    }
    let err = c.get_target_version("no-such-target").unwrap_err();
    assert!(
        err.is_not_found() || err.kind() == Some(ErrorKind::Invalid),
        "{err}"
    );
    let name = format!("{PREFIX}geo");
    let _g = Cleanup::new(&[&name]);
    c.create_with_table(
        &name,
        &CreateOptions::default(),
        &zero(&name, 2048),
        UdevFlags::empty(),
    )
    .unwrap();
    c.set_geometry(DevId::Name(&name), 1, 64, 32, 0).unwrap();
    c.arm_poll().unwrap();
}

#[test]
fn set_geometry_is_read_back_with_hdio_getgeo() {
    use dmthin_ioctl_tests::{block_device_geometry, Geometry};
    let name = format!("{PREFIX}geo-read");
    let _g = Cleanup::new(&[&name]);
    let mut c = ctl();
    let info = c
        .create_with_table(
            &name,
            &CreateOptions::default(),
            &zero(&name, 4096),
            UdevFlags::empty(),
        )
        .unwrap();
    let node = format!("/dev/dm-{}", info.dev.minor);
    // A fresh device reports no geometry.
    let none = block_device_geometry(&node).unwrap();
    assert_eq!((none.cylinders, none.heads, none.sectors), (0, 0, 0));
    for (cyl, heads, sectors, start) in [(2u16, 64u8, 32u8, 0u64), (1000, 255, 63, 8)] {
        c.set_geometry(
            DevId::Name(&name),
            cyl.into(),
            heads.into(),
            sectors.into(),
            start,
        )
        .unwrap();
        assert_eq!(
            block_device_geometry(&node).unwrap(),
            Geometry {
                cylinders: cyl,
                heads,
                sectors,
                start
            }
        );
    }
    // Out of range for struct hd_geometry: refused, the last one kept.
    let e = c
        .set_geometry(DevId::Name(&name), 1, 256, 63, 0)
        .unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Invalid), "{e}");
    let e = c
        .set_geometry(DevId::Name(&name), 70000, 16, 63, 0)
        .unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Invalid), "{e}");
    assert_eq!(block_device_geometry(&node).unwrap().cylinders, 1000);
}

#[test]
fn arm_poll_wakes_poll_on_an_event_and_only_then() {
    use dmthin_ioctl_tests::poll_readable;
    let a = format!("{PREFIX}poll-a");
    let b = format!("{PREFIX}poll-b");
    let _g = Cleanup::new(&[&a, &b]);
    let mut other = ctl();
    other
        .create_with_table(
            &a,
            &CreateOptions::default(),
            &zero(&a, 8),
            UdevFlags::empty(),
        )
        .unwrap();
    let mut c = ctl();
    c.arm_poll().unwrap();
    let fd = c.as_raw_fd();
    // Armed, no event: poll() times out.
    assert!(!poll_readable(fd, Duration::from_millis(300)).unwrap());
    // An event on a device (a rename of a device with a live table), made
    // through another control fd: poll() on this one wakes.
    let ev = other.info(DevId::Name(&a)).unwrap().event_nr;
    let poller = std::thread::spawn(move || {
        let start = Instant::now();
        let woke = poll_readable(fd, Duration::from_secs(30)).unwrap();
        (woke, start.elapsed())
    });
    std::thread::sleep(Duration::from_millis(200));
    other.rename(DevId::Name(&a), &b).unwrap();
    let (woke, took) = poller.join().unwrap();
    assert!(woke, "poll() did not wake within 30 s of the event");
    assert!(took < Duration::from_secs(10), "woke after {took:?}");
    assert!(other.info(DevId::Name(&b)).unwrap().event_nr > ev);
    // Still readable until re-armed; re-arming consumes the event.
    assert!(poll_readable(fd, Duration::ZERO).unwrap());
    c.arm_poll().unwrap();
    assert!(!poll_readable(fd, Duration::from_millis(300)).unwrap());
    // The next event wakes it again.
    other.rename(DevId::Name(&b), &a).unwrap();
    assert!(poll_readable(fd, Duration::from_secs(10)).unwrap());
}

#[test]
fn wait_event_returns_after_a_thin_pool_low_water_event() {
    let meta = LoopDevice::new("dm-wait-meta", 8 << 20);
    let data = LoopDevice::new("dm-wait-data", 64 << 20);
    let pool = format!("{PREFIX}wait-pool");
    let thin = format!("{PREFIX}wait-thin");
    let _g = Cleanup::new(&[&pool, &thin]);
    let mut c = ctl();
    // 64 MiB / 64 KiB = 1024 blocks; low water 1023: the first allocation fires an event.
    let params = format!(
        "{} {} 128 1023 1 skip_block_zeroing",
        meta.majmin(),
        data.majmin()
    );
    let info = c
        .create_with_table(
            &pool,
            &CreateOptions::default(),
            &[line(0, 131072, "thin-pool", &params)],
            UdevFlags::PRIVATE,
        )
        .unwrap();
    c.target_message(DevId::Name(&pool), 0, "create_thin 0")
        .unwrap();
    let pool_dev = info.dev.to_string();
    let thin_info = c
        .create_with_table(
            &thin,
            &CreateOptions::default(),
            &[line(0, 8192, "thin", &format!("{pool_dev} 0"))],
            UdevFlags::empty(),
        )
        .unwrap();
    let ev = c.info(DevId::Name(&pool)).unwrap().event_nr;
    let node = format!("/dev/dm-{}", thin_info.dev.minor);
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        sh_ok(&format!(
            "dd if=/dev/urandom of={node} bs=64k count=4 oflag=direct 2>/dev/null"
        ));
    });
    // DEV_WAIT blocks in the kernel: run it on its own thread so a missing
    // event fails the test instead of hanging the suite.
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter_pool = pool.clone();
    std::thread::spawn(move || {
        let mut c = ctl();
        let _ = tx.send(c.wait_event(DevId::Name(&waiter_pool), ev));
    });
    let start = Instant::now();
    let (info, status) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("no event within 60 s")
        .unwrap();
    writer.join().unwrap();
    assert!(
        info.event_nr > ev,
        "event counter moved ({ev} -> {})",
        info.event_nr
    );
    assert!(start.elapsed() < Duration::from_secs(30));
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].target_type(), "thin-pool");
    let (_, st) = c
        .table_status(DevId::Name(&pool), &StatusOptions::default())
        .unwrap();
    let dm = sh_ok(&format!("dmsetup status {pool}"));
    assert_eq!(
        dm.trim(),
        format!("0 131072 thin-pool {}", st[0].params()).trim()
    );
    c.remove(DevId::Name(&thin), &RemoveOptions::default())
        .unwrap();
    c.target_message(DevId::Name(&pool), 0, "delete 0").unwrap();
}
