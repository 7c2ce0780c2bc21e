//! Proves the real-kernel harness itself: device-mapper is there, the targets
//! dmthin needs are loaded, the real tools are on PATH, loop devices work and
//! a thin pool built with the reference tools carries a filesystem.
//!
//! These tests drive the kernel only through the reference command-line tools
//! (dmsetup, util-linux, e2fsprogs, thin-provisioning-tools), never through
//! dmthin, so a failure here is a harness or environment problem.
//!
//! Run: `ioctl-tests/run --test vm_smoke`.

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use dmthin_ioctl_tests::{
    majmin, node_major_minor, output, require_device_mapper, run, udev_expected, unique_name,
    DmsetupDevice, LoopDevice, Mount, TempDir, DM_CONTROL,
};

const MIB: u64 = 1024 * 1024;

#[test]
fn control_node_is_misc_char_10_236() {
    require_device_mapper();
    let md = fs::metadata(DM_CONTROL).unwrap();
    assert!(
        md.file_type().is_char_device(),
        "{DM_CONTROL} is not a char device"
    );
    assert_eq!(node_major_minor(DM_CONTROL).unwrap(), (10, 236));
}

#[test]
fn proc_misc_lists_device_mapper() {
    let misc = fs::read_to_string("/proc/misc").unwrap();
    assert!(
        misc.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["236", "device-mapper"]),
        "/proc/misc has no '236 device-mapper':\n{misc}"
    );
}

#[test]
fn dmsetup_version_reports_driver_4() {
    require_device_mapper();
    let out = run("dmsetup", ["version"]);
    let driver = out
        .lines()
        .find_map(|l| l.strip_prefix("Driver version:"))
        .unwrap_or_else(|| panic!("no driver version in:\n{out}"))
        .trim();
    assert!(driver.starts_with("4."), "driver version {driver}");
}

#[test]
fn targets_include_thin_and_fault_injection() {
    require_device_mapper();
    let out = run("dmsetup", ["targets"]);
    let names: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for want in [
        "thin-pool",
        "thin",
        "linear",
        "striped",
        "error",
        "zero",
        "flakey",
        "delay",
        "log-writes",
    ] {
        assert!(
            names.contains(&want),
            "target {want} missing; have {names:?}"
        );
    }
}

#[test]
fn real_tools_are_on_path() {
    // util-linux, not the busybox applets (busybox losetup has no --show)
    for tool in ["losetup", "mount", "umount", "blkid", "ipcs"] {
        let out = run(tool, ["--version"]);
        assert!(out.contains("util-linux"), "{tool} --version: {out}");
    }
    for (tool, arg) in [
        ("dmsetup", "--version"),
        ("mkfs.ext4", "-V"),
        ("mkfs.xfs", "-V"),
        ("thin_check", "-V"),
        ("thin_dump", "-V"),
        ("thin_ls", "-V"),
        ("dmthin", "--version"),
    ] {
        let out = output(tool, [arg]);
        assert!(
            out.status.success(),
            "{tool} {arg}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn udev_runs_exactly_when_requested() {
    let control = Path::new("/run/udev/control").exists();
    if udev_expected() {
        assert!(
            control,
            "DMTHIN_TEST_UDEV=1 but /run/udev/control is missing"
        );
    } else if dmthin_ioctl_tests::in_vm() {
        assert!(
            !control,
            "udev runs in the VM although --udev was not given"
        );
    }
}

#[test]
fn loop_device_attach_size_detach() {
    let dir = TempDir::new("loop");
    let lo = LoopDevice::with_sparse_file(dir.path(), "backing", 64 * MIB);
    let name = lo.kernel_name();
    assert_eq!(lo.size_sectors(), 64 * MIB / 512);
    let got = run("blockdev", ["--getsize64", lo.path().to_str().unwrap()]);
    assert_eq!(got.trim(), (64 * MIB).to_string());
    let backing = fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).unwrap();
    assert_eq!(Path::new(backing.trim()), lo.backing_file());
    drop(lo);
    assert!(
        !Path::new(&format!("/sys/block/{name}/loop/backing_file")).exists(),
        "{name} still has a backing file after losetup -d"
    );
}

#[test]
fn zero_target_create_and_remove() {
    require_device_mapper();
    let name = unique_name("zero");
    let dev = DmsetupDevice::create(&name, "0 2048 zero");
    let (major, minor) = dev.major_minor();
    assert_eq!(node_major_minor(dev.dm_node()).unwrap(), (major, minor));
    assert_eq!(
        run("blockdev", ["--getsz", dev.dm_node().to_str().unwrap()]).trim(),
        "2048"
    );
    // /dev/mapper/NAME: udev makes it a symlink to ../dm-N. Without udev
    // dmsetup leaves it out here; `dmsetup mknodes` makes a node.
    let mapper = Path::new("/dev/mapper").join(&name);
    if udev_expected() {
        let lmd = fs::symlink_metadata(&mapper).unwrap();
        assert!(
            lmd.file_type().is_symlink(),
            "{mapper:?} is not a udev symlink"
        );
    } else if !mapper.exists() {
        run("dmsetup", ["mknodes", &name]);
    }
    assert_eq!(node_major_minor(&mapper).unwrap(), (major, minor));
    assert_eq!(dev.status().trim(), "0 2048 zero");
    drop(dev);
    if !udev_expected() {
        // ... and does not remove it either: `dmsetup mknodes` drops stale nodes.
        run("dmsetup", ["mknodes"]);
    }
    assert!(!mapper.exists(), "{mapper:?} still exists after remove");
    let ls = run("dmsetup", ["ls"]);
    assert!(!ls.contains(&name), "{name} still listed:\n{ls}");
}

#[test]
fn thin_pool_with_ext4_round_trip() {
    require_device_mapper();
    let dir = TempDir::new("pool");
    let meta = LoopDevice::with_sparse_file(dir.path(), "meta", 16 * MIB);
    let data = LoopDevice::with_sparse_file(dir.path(), "data", 256 * MIB);
    let data_sectors = data.size_sectors();
    {
        let pool = DmsetupDevice::create(
            &unique_name("pool"),
            &format!(
                "0 {data_sectors} thin-pool {} {} 128 32768 1 skip_block_zeroing",
                meta.majmin(),
                data.majmin()
            ),
        );
        pool.message("create_thin 0");
        let thin_sectors = 200 * MIB / 512;
        let thin = DmsetupDevice::create(
            &unique_name("thin"),
            &format!("0 {thin_sectors} thin {} 0", majmin(pool.dm_node())),
        );
        let node = thin.dm_node();
        run("mkfs.ext4", ["-q", "-F", node.to_str().unwrap()]);
        let probed = run(
            "blkid",
            ["-o", "value", "-s", "TYPE", node.to_str().unwrap()],
        );
        assert_eq!(probed.trim(), "ext4");
        {
            let mnt = Mount::new(&node, dir.path().join("mnt"));
            let payload: Vec<u8> = (0..MIB as usize).map(|i| (i % 251) as u8).collect();
            fs::write(mnt.path().join("payload"), &payload).unwrap();
            run("sync", [] as [&str; 0]);
            assert_eq!(fs::read(mnt.path().join("payload")).unwrap(), payload);
        }
        // <transaction id> <used meta>/<total meta> <used data>/<total data> ...
        let status = pool.status();
        let used_data: u64 = status
            .split_whitespace()
            .nth(5)
            .and_then(|f| f.split('/').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("cannot parse pool status {status:?}"));
        assert!(used_data > 0, "pool reports no data used: {status}");
        let thin_status = thin.status();
        assert!(
            thin_status.starts_with(&format!("0 {thin_sectors} thin ")),
            "{thin_status}"
        );
        drop(thin);
        pool.message("delete 0");
    }
    // The pool is gone: its metadata must pass the reference checker.
    run("thin_check", [meta.path().to_str().unwrap()]);
}
