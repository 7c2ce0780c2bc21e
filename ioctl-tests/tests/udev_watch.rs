//! `NodeMode::UdevWatch` (the default beside udev: no cookie, udevd's
//! netlink monitor) against the cookie mode (`NodeMode::Udev`) on the real
//! dm rules. Meaningful in the pass with systemd-udevd (`run --udev`);
//! without udev it checks that the default stays `NodeMode::Direct`.

mod common;
use common::*;
use dmthin_ioctl_tests::{udev_mode, LoopDevice, TempDir};

use dmthin::dm::{
    Control, ControlOptions, CreateOptions, Dev, DevId, DmError, NodeMode, RemoveOptions,
    SuspendOptions, UdevFlags,
};
use dmthin::target::TableLine;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(30);
const WATCH: NodeMode = NodeMode::UdevWatch { timeout: TIMEOUT };
const COOKIE: NodeMode = NodeMode::Udev { timeout: TIMEOUT };

fn ctl(mode: NodeMode) -> Control {
    let mut c = Control::open_with(ControlOptions::default()).expect("open control");
    c.set_node_mode(mode);
    c
}

/// Properties that differ between any two events or device instances by
/// nature: timing, and the kernel's disk sequence number (new per device).
const INSTANCE: [&str; 2] = ["USEC_INITIALIZED", "DISKSEQ"];

/// What udev made of the device: every symlink to it under /dev and its
/// database properties (`udevadm info`), read the moment the call returned.
#[derive(Debug, PartialEq, Eq)]
struct UdevView {
    links: Vec<String>,
    props: BTreeMap<String, String>,
}

/// Every symlink under /dev that resolves to `/dev/dm-<minor>`.
fn links_to(minor: u32) -> Vec<String> {
    fn walk(dir: &Path, target: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                walk(&path, target, out);
            } else if ft.is_symlink() && std::fs::canonicalize(&path).is_ok_and(|t| t == target) {
                out.push(path.display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(
        Path::new("/dev"),
        Path::new(&format!("/dev/dm-{minor}")),
        &mut out,
    );
    out.sort();
    out
}

fn view(dev: Dev) -> UdevView {
    let props = sh_ok(&format!(
        "udevadm info -q property -n /dev/dm-{}",
        dev.minor
    ))
    .lines()
    .filter_map(|l| l.split_once('='))
    .filter(|(k, _)| !INSTANCE.contains(k))
    .map(|(k, v)| {
        let mut v = v.to_string();
        if k == "DEVLINKS" {
            let mut links: Vec<&str> = v.split(' ').collect();
            links.sort();
            v = links.join(" ");
        }
        (k.to_string(), v)
    })
    .collect();
    UdevView {
        links: links_to(dev.minor),
        props,
    }
}

/// A device with an ext4 filesystem (blkid finds its uuid and label) over a
/// loop device: create, rename, suspend+resume, remove, with the udev view
/// after each step.
fn steps(mode: NodeMode, lo: &str, tag: &str) -> Vec<(String, UdevView)> {
    let name = format!("dmthin-test-w-{tag}");
    let renamed = format!("{name}-r");
    let mut c = ctl(mode);
    let table = [TableLine::new(0, 16384, "linear", format!("{lo} 0")).unwrap()];
    let opts = CreateOptions {
        uuid: Some("DMTHIN-TEST-watch-uuid"),
        minor: Some(200),
        ..Default::default()
    };
    let info = c
        .create_with_table(&name, &opts, &table, UdevFlags::empty())
        .unwrap();
    let dev = info.dev;
    let mut out = vec![("create".to_string(), view(dev))];
    c.rename(DevId::Name(&name), &renamed).unwrap();
    out.push(("rename".into(), view(dev)));
    c.suspend(DevId::Name(&renamed), &SuspendOptions::default())
        .unwrap();
    c.resume(DevId::Name(&renamed), UdevFlags::empty()).unwrap();
    out.push(("resume".into(), view(dev)));
    c.remove(DevId::Name(&renamed), &RemoveOptions::default())
        .unwrap();
    let db = Path::new(&format!("/run/udev/data/b{}:{}", dev.major, dev.minor)).exists();
    out.push((
        "remove".into(),
        UdevView {
            links: links_to(dev.minor),
            props: BTreeMap::from([("db entry".to_string(), db.to_string())]),
        },
    ));
    out
}

/// The one property where the modes differ, and why: 55-dm.rules sets
/// `DM_ACTIVATION=1` only for an event whose cookie carries
/// `DM_UDEV_PRIMARY_SOURCE_FLAG`; the watch mode's rename and later resumes
/// carry no flags (the rules take them from udev's database, where
/// `DM_ACTIVATION` is not imported from), so it is absent after them. (udev
/// keeps no `DM_COOKIE` property in either mode.)
const MODE_SPECIFIC: &str = "DM_ACTIVATION";

#[test]
fn watch_mode_leaves_what_the_cookie_mode_leaves() {
    if !udev_mode() {
        assert_eq!(
            Control::open().unwrap().node_mode(),
            NodeMode::Direct,
            "without udev the default makes its own nodes"
        );
        return;
    }
    assert_eq!(Control::open().unwrap().node_mode(), WATCH, "the default");
    let dir = TempDir::new("watch");
    let lo = LoopDevice::with_sparse_file(dir.path(), "fs", 8 << 20);
    sh_ok(&format!(
        "mkfs.ext4 -q -F -L watchfs -U 3b0c4a3e-5d1c-4e2a-9a57-2f1d1d7c0a11 {}",
        lo.path().display()
    ));
    let lo = lo.majmin(); // the device stays attached until the test ends
    let cookie = steps(COOKIE, &lo, "same");
    let log = dir.path().join("uevents");
    let mut monitor = std::process::Command::new("udevadm")
        .args([
            "monitor",
            "--kernel",
            "--property",
            "--subsystem-match=block",
        ])
        .stdout(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let watch = steps(WATCH, &lo, "same");
    std::thread::sleep(Duration::from_millis(200));
    // SIGTERM: udevadm ends cleanly and flushes what it printed.
    sh_ok(&format!("kill -TERM {}", monitor.id()));
    let _ = monitor.wait();
    let strip = |v: &UdevView| {
        let mut props = v.props.clone();
        props.remove(MODE_SPECIFIC);
        (v.links.clone(), props)
    };
    for ((step, c), (_, w)) in cookie.iter().zip(&watch) {
        eprintln!("{step}: cookie mode {c:#?}\n{step}: watch mode {w:#?}");
        assert_eq!(strip(c), strip(w), "{step}: the modes differ");
        let activation = |v: &UdevView| v.props.get(MODE_SPECIFIC).cloned();
        let expected = match step.as_str() {
            "create" => activation(c),
            _ => None,
        };
        assert_eq!(activation(w), expected, "{step}: {MODE_SPECIFIC}");
        if step != "remove" {
            assert_eq!(activation(c).as_deref(), Some("1"), "{step}: cookie mode");
        }
    }
    // What the kernel sent in the watch mode: only the first activation's
    // change carries the rule flags (a cookie value without a semaphore);
    // rename, resume and remove carry no DM_COOKIE, so no rule runs dmsetup.
    let events = std::fs::read_to_string(&log).unwrap();
    let cookies: Vec<(String, Option<u32>)> = events
        .split("\n\n")
        .filter(|e| e.contains("DEVNAME=dm-200") || e.contains("DEVNAME=/dev/dm-200"))
        .filter_map(|e| {
            let prop = |k: &str| {
                e.lines()
                    .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
                    .map(str::to_string)
            };
            Some((
                prop("ACTION")?,
                prop("DM_COOKIE").map(|v| v.parse().unwrap()),
            ))
        })
        .collect();
    eprintln!("kernel uevents of the watch mode: {cookies:?}");
    let flags_only = 0x60 << 16; // PRIMARY_SOURCE | DISABLE_LIBRARY_FALLBACK, cookie 0
    assert_eq!(
        cookies,
        [
            ("add".to_string(), None),
            ("change".to_string(), Some(flags_only)),
            ("change".to_string(), None),
            ("change".to_string(), None),
            // dm's own remove event (waited for), then the disk's
            // (del_gendisk), both sent inside the ioctl.
            ("remove".to_string(), None),
            ("remove".to_string(), None),
        ],
        "{events}"
    );
    // Full processing: blkid ran and every link is there after create.
    let created = &watch[0].1;
    for link in [
        "/dev/mapper/dmthin-test-w-same",
        "/dev/disk/by-id/dm-name-dmthin-test-w-same",
        "/dev/disk/by-id/dm-uuid-DMTHIN-TEST-watch-uuid",
        "/dev/disk/by-uuid/3b0c4a3e-5d1c-4e2a-9a57-2f1d1d7c0a11",
        "/dev/disk/by-label/watchfs",
    ] {
        assert!(
            created.links.iter().any(|l| l == link),
            "{link}: {created:#?}"
        );
    }
    assert_eq!(
        created.props.get("ID_FS_TYPE").map(String::as_str),
        Some("ext4")
    );
    let renamed = &watch[1].1;
    assert!(renamed
        .links
        .iter()
        .any(|l| l == "/dev/mapper/dmthin-test-w-same-r"));
    assert!(!renamed
        .links
        .iter()
        .any(|l| l == "/dev/mapper/dmthin-test-w-same"));
    assert_eq!(
        watch[3].1.links,
        Vec::<String>::new(),
        "links left after remove"
    );
    assert_eq!(watch[3].1.props["db entry"], "false");
}

#[test]
fn remove_right_after_a_write_and_close_gets_no_ebusy() {
    if !udev_mode() {
        return;
    }
    let name = "dmthin-test-w-busy";
    let mut c = ctl(WATCH);
    let node = format!("/dev/mapper/{name}");
    for i in 0..20 {
        activate_zero(&mut c, name).unwrap();
        let mut f = std::fs::OpenOptions::new().write(true).open(&node).unwrap();
        f.write_all(&[0u8; 4096]).unwrap();
        drop(f);
        c.remove(DevId::Name(name), &RemoveOptions::default())
            .unwrap_or_else(|e| panic!("cycle {i}: remove right after a write: {e}"));
        assert!(
            std::fs::symlink_metadata(&node).is_err(),
            "cycle {i}: {node} left"
        );
    }
}

/// A 1 MiB zero device, activated.
fn activate_zero(c: &mut Control, name: &str) -> Result<dmthin::dm::DeviceInfo, DmError> {
    let table = [TableLine::new(0, 2048, "zero", "").unwrap()];
    c.create_with_table(name, &CreateOptions::default(), &table, UdevFlags::empty())
}

fn dm_db_entries() -> Vec<String> {
    let mut live: Vec<String> = Control::open()
        .unwrap()
        .list_devices()
        .unwrap()
        .iter()
        .map(|e| format!("b{}:{}", e.dev.major, e.dev.minor))
        .collect();
    live.sort();
    let major = sh_ok("awk '$2==\"device-mapper\"{print $1}' /proc/devices");
    let mut stray: Vec<String> = std::fs::read_dir("/run/udev/data")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&format!("b{}:", major.trim())))
        .filter(|n| !live.contains(n))
        .collect();
    stray.sort();
    stray
}

#[test]
fn hundred_cycles_leave_no_semaphores_and_no_database_entries() {
    if !udev_mode() {
        return;
    }
    let name = "dmthin-test-w-cycle";
    let mut c = ctl(WATCH);
    let start = Instant::now();
    for _ in 0..100 {
        activate_zero(&mut c, name).unwrap();
        c.remove(DevId::Name(name), &RemoveOptions::default())
            .unwrap();
    }
    eprintln!("100 cycles: {:?}", start.elapsed());
    let ipcs = sh_ok("ipcs -s");
    assert!(!ipcs.contains("0x0d4d"), "cookie semaphores: {ipcs}");
    assert_eq!(
        dm_db_entries(),
        Vec::<String>::new(),
        "stray udev database entries"
    );
    assert!(std::fs::symlink_metadata(format!("/dev/mapper/{name}")).is_err());
}

#[test]
fn zz_a_dead_udevd_costs_an_error_within_the_timeout() {
    if !udev_mode() {
        return;
    }
    let name = "dmthin-test-w-dead";
    let mut c = ctl(NodeMode::UdevWatch {
        timeout: Duration::from_secs(2),
    });
    sh("pkill -9 systemd-udevd; killall -9 systemd-udevd; sleep 0.5");
    let start = Instant::now();
    let err = activate_zero(&mut c, name).unwrap_err();
    let took = start.elapsed();
    let (ok, out) =
        sh("/lib/systemd/systemd-udevd --daemon && udevadm settle -t 10 && udevadm control --ping");
    assert!(ok, "restarting udevd failed: {out}");
    let _ = c.remove(DevId::Name(name), &RemoveOptions::default());
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(matches!(err, DmError::Udev(_)), "{err}");
    let ipcs = sh_ok("ipcs -s");
    assert!(!ipcs.contains("0x0d4d"), "semaphores: {ipcs}");
}
