//! Kernel suite for `dmthin::dm`: every command against the real kernel,
//! cross-checked with dmsetup. Run by `ioctl-tests/run` (one thread).

use dmthin::dm::{
    Control, ControlOptions, CreateOptions, DevId, DmError, ErrorKind, NodeMode, RemoveOptions,
    StatusKind, StatusOptions, SuspendOptions, UdevFlags,
};
use dmthin::target::TableLine;
use dmthin_ioctl_tests::{sh, sh_ok};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const PREFIX: &str = "dmthin-test-";

fn udev_mode() -> bool {
    std::env::var_os("DMTHIN_TEST_UDEV").is_some()
}

fn ctl() -> Control {
    Control::open().expect("open /dev/mapper/control")
}

fn line(start: u64, length: u64, tt: &str, params: &str) -> TableLine {
    TableLine::new(start, length, tt, params).expect("valid table line")
}

/// Removes the named devices when dropped, whatever the test did.
struct Cleanup(Vec<String>);

impl Cleanup {
    fn new(names: &[&str]) -> Self {
        Cleanup(names.iter().map(|s| s.to_string()).collect())
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(mut c) = Control::open() {
            for n in self.0.iter().rev() {
                let _ = c.remove(DevId::Name(n), &RemoveOptions::default());
            }
        }
    }
}

/// A loop device over a sparse file, detached on drop.
struct Loop {
    dev: String,
    file: PathBuf,
}

impl Loop {
    fn new(tag: &str, mib: u64) -> Loop {
        let file = PathBuf::from(format!("/tmp/{tag}.img"));
        let f = std::fs::File::create(&file).unwrap();
        f.set_len(mib << 20).unwrap();
        let dev = sh_ok(&format!("losetup -f --show {}", file.display()))
            .trim()
            .to_string();
        Loop { dev, file }
    }

    fn majmin(&self) -> String {
        use std::os::unix::fs::MetadataExt;
        let rdev = std::fs::metadata(&self.dev).unwrap().rdev();
        format!(
            "{}:{}",
            nix::sys::stat::major(rdev),
            nix::sys::stat::minor(rdev)
        )
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
        let _ = std::fs::remove_file(&self.file);
    }
}

fn zero(name: &str, sectors: u64) -> Vec<TableLine> {
    let _ = name;
    vec![line(0, sectors, "zero", "")]
}

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
    let lo = Loop::new("dm-linear", 8);
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
    let meta = Loop::new("dm-wait-meta", 8);
    let data = Loop::new("dm-wait-data", 64);
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
