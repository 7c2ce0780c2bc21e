//! Crash safety: for every fail point, a child process runs the operation and
//! aborts there; a fresh open must repair the set so that the pool holds exactly
//! the thin ids the records name, the operation is wholly done or wholly undone,
//! it can be retried, and thin_check passes on the metadata afterwards.

mod common;
use common::*;

use dmthin::deviceset::failpoint::FAIL_POINTS;
use dmthin::deviceset::{DeviceSet, FsKind, Options};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

const CHILD_OP: &str = "DMTHIN_CRASH_OP";
const CHILD_ROOT: &str = "DMTHIN_CRASH_ROOT";

fn opts(base_mib: u64) -> Options {
    let mut o = options(FsKind::Ext4);
    o.base_size = base_mib * MIB;
    o
}

/// The operation a fail point belongs to, as run by the child.
fn run_op(op: &str, root: &Path) {
    match op {
        "init" => {
            DeviceSet::open(root, opts(64)).unwrap();
        }
        "grow_base" => {
            DeviceSet::open(root, opts(96)).unwrap();
        }
        _ => {
            let set = DeviceSet::open(root, opts(64)).unwrap();
            let mnt = root.join("mnt/v");
            match op {
                "add" => set.add_device("new", Some("p")).unwrap(),
                "remove" => set.remove_device("v").unwrap(),
                "activate" => drop(set.activate_device("v").unwrap()),
                "deactivate" => set.deactivate_device("v").unwrap(),
                "mount" => set.mount_device("v", &mnt, false).unwrap(),
                "unmount" => set.unmount_device("v", &mnt, true).unwrap(),
                "grow_pool" => set.grow_pool(1536 * MIB).unwrap(),
                other => panic!("no operation for {other}"),
            }
        }
    }
}

/// Entry point of the child process (does nothing in a normal test run).
#[test]
fn crash_child() {
    let (Ok(op), Ok(root)) = (std::env::var(CHILD_OP), std::env::var(CHILD_ROOT)) else {
        return;
    };
    run_op(&op, Path::new(&root));
    // Reaching here means the fail point was never hit.
    std::process::exit(42);
}

/// State the operation starts from, made by this (parent) process.
fn prepare(op: &str, root: &Path) {
    if op == "init" {
        return;
    }
    let set = DeviceSet::open(root, opts(64)).unwrap();
    match op {
        "add" => {
            set.add_device("p", None).unwrap();
            set.activate_device("p").unwrap();
        }
        "remove" | "activate" | "mount" => set.add_device("v", None).unwrap(),
        "deactivate" => {
            set.add_device("v", None).unwrap();
            set.activate_device("v").unwrap();
        }
        "unmount" => {
            set.add_device("v", None).unwrap();
            set.mount_device("v", root.join("mnt/v"), false).unwrap();
            std::fs::write(root.join("mnt/v/file"), "kept").unwrap();
        }
        _ => {}
    }
    // Dropped without shutdown, as a process exit would leave it.
}

/// After recovery: the operation is wholly done or undone, and a retry works.
fn verify_and_retry(op: &str, root: &Path, fp: &str) {
    let base = if op == "grow_base" { 96 } else { 64 };
    let set =
        DeviceSet::open(root, opts(base)).unwrap_or_else(|e| panic!("{fp}: reopen failed: {e}"));
    check_invariants(&set);
    let mnt = root.join("mnt/v");
    match op {
        "init" => {
            set.add_device("after-init", None).unwrap();
        }
        "add" => {
            if !set.has_device("new") {
                set.add_device("new", Some("p")).unwrap();
            }
            assert!(set.has_device("new"));
        }
        "remove" => {
            if set.has_device("v") {
                set.remove_device("v").unwrap();
            }
            assert!(!set.has_device("v"));
        }
        "activate" => {
            set.activate_device("v").unwrap();
            assert!(set.has_activated_device("v"));
        }
        "deactivate" => {
            set.deactivate_device("v").unwrap();
            assert!(!set.has_activated_device("v"));
        }
        "mount" => {
            set.mount_device("v", &mnt, false).unwrap();
            assert!(mnt.join("lost+found").exists());
            set.unmount_device("v", &mnt, true).unwrap();
        }
        "unmount" => {
            // Either still mounted (adopted) or not; a remount shows the data.
            let mounted = set
                .list()
                .unwrap()
                .iter()
                .any(|d| d.id == "v" && !d.mount_points.is_empty());
            if mounted {
                set.unmount_device("v", &mnt, true).unwrap();
            }
            set.mount_device("v", &mnt, false).unwrap();
            assert_eq!(std::fs::read_to_string(mnt.join("file")).unwrap(), "kept");
            set.unmount_device("v", &mnt, true).unwrap();
        }
        "grow_pool" => {
            set.grow_pool(1536 * MIB).unwrap();
            assert_eq!(set.status().unwrap().data_total, 1536 * MIB);
        }
        "grow_base" => {
            assert_eq!(set.status().unwrap().base_size, 96 * MIB);
            set.add_device("grown", None).unwrap();
            set.mount_device("grown", &mnt, false).unwrap();
            let out = sh_ok(&format!("stat -f -c '%b %S' {}", mnt.display()));
            let bytes: u64 = out
                .split_whitespace()
                .map(|x| x.parse::<u64>().unwrap())
                .product();
            assert!(
                bytes > 80 * MIB,
                "{fp}: base filesystem not grown after recovery ({bytes} bytes)"
            );
            set.unmount_device("grown", &mnt, true).unwrap();
        }
        _ => unreachable!(),
    }
    check_invariants(&set);
    set.shutdown().unwrap();
    drop(set);
    let meta = root.join("devicemapper/metadata");
    let (ok, out) = sh(&format!("thin_check {}", meta.display()));
    assert!(ok, "{fp}: thin_check failed after recovery: {out}");
}

#[test]
fn crash_at_every_fail_point() {
    let me = std::env::current_exe().unwrap();
    let mut covered = Vec::new();
    for fp in FAIL_POINTS {
        let op = fp.split('.').next().unwrap();
        let root = Root::new(&format!("crash-{}", fp.replace('.', "-")));
        prepare(op, &root.0);
        let status = Command::new(&me)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_OP, op)
            .env(CHILD_ROOT, &root.0)
            .env("DMTHIN_FAILPOINT", fp)
            .status()
            .unwrap();
        assert_eq!(
            status.signal(),
            Some(nix::libc::SIGABRT),
            "{fp}: the child must abort at the fail point (status {status:?})"
        );
        verify_and_retry(op, &root.0, fp);
        covered.push(*fp);
        eprintln!("fail point {fp}: crashed, recovered, retried, thin_check clean");
    }
    assert_eq!(covered.len(), FAIL_POINTS.len());
    eprintln!(
        "covered {} of {} fail points",
        covered.len(),
        FAIL_POINTS.len()
    );
}
