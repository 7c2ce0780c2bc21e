//! Crash safety: for every fail point, a child process runs the operation and
//! aborts there; a fresh open must repair the set so that the pool holds exactly
//! the thin ids the records name, the operation is wholly done or wholly undone,
//! it can be retried, and thin_check passes on the metadata afterwards.
//!
//! The `init.*` points each start from an empty root; all other points share
//! one set (each with its own device ids), which keeps the run short under TCG.

mod common;
use common::*;

use dmthin::deviceset::failpoint::FAIL_POINTS;
use dmthin::deviceset::{DeviceSet, FsKind, Options};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

const CHILD_OP: &str = "DMTHIN_CRASH_OP";
const CHILD_ROOT: &str = "DMTHIN_CRASH_ROOT";
const CHILD_TAG: &str = "DMTHIN_CRASH_TAG";
const CHILD_SIZE: &str = "DMTHIN_CRASH_SIZE";

/// Options of the set at `root`: as recorded, or fresh small ones.
fn opts(root: &Path) -> Options {
    match DeviceSet::recorded_options(root).unwrap() {
        Some(mut o) => {
            o.busy_retries = 3;
            o
        }
        None => {
            let mut o = options(FsKind::Ext4);
            o.base_size = 32 * MIB;
            o
        }
    }
}

fn current_pool_size(root: &Path) -> u64 {
    std::fs::metadata(root.join("devicemapper/data"))
        .unwrap()
        .len()
}

/// The size argument of a growing operation (pool or base), decided by the parent.
fn grow_target(op: &str, root: &Path) -> u64 {
    match op {
        "grow_pool" => current_pool_size(root) + 256 * MIB,
        "grow_base" => opts(root).base_size + 16 * MIB,
        _ => 0,
    }
}

/// The operation a fail point belongs to, as run by the child.
fn run_op(op: &str, root: &Path, tag: &str, size: u64) {
    let mut o = opts(root);
    if op == "grow_base" {
        o.base_size = size;
    }
    let set = DeviceSet::open(root, o).unwrap();
    let mnt = root.join(format!("mnt/v{tag}"));
    let (p, v, new) = (format!("p{tag}"), format!("v{tag}"), format!("new{tag}"));
    match op {
        "init" | "grow_base" => {}
        "add" => set.add_device(&new, Some(&p)).unwrap(),
        "remove" => set.remove_device(&v).unwrap(),
        "activate" => drop(set.activate_device(&v).unwrap()),
        "deactivate" => set.deactivate_device(&v).unwrap(),
        "mount" => set.mount_device(&v, &mnt, false).unwrap(),
        "unmount" => set.unmount_device(&v, &mnt, true).unwrap(),
        "grow_pool" => set.grow_pool(size).unwrap(),
        other => panic!("no operation for {other}"),
    }
}

/// Entry point of the child process (does nothing in a normal test run).
#[test]
fn crash_child() {
    let (Ok(op), Ok(root)) = (std::env::var(CHILD_OP), std::env::var(CHILD_ROOT)) else {
        return;
    };
    let tag = std::env::var(CHILD_TAG).unwrap_or_default();
    let size = std::env::var(CHILD_SIZE)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    run_op(&op, Path::new(&root), &tag, size);
    // Reaching here means the fail point was never hit.
    std::process::exit(42);
}

/// State the operation starts from, made by this (parent) process.
fn prepare(op: &str, root: &Path, tag: &str) {
    if op == "init" {
        return;
    }
    let set = DeviceSet::open(root, opts(root)).unwrap();
    let (p, v) = (format!("p{tag}"), format!("v{tag}"));
    match op {
        "add" => {
            set.add_device(&p, None).unwrap();
            set.activate_device(&p).unwrap();
        }
        "remove" | "activate" | "mount" => set.add_device(&v, None).unwrap(),
        "deactivate" => {
            set.add_device(&v, None).unwrap();
            set.activate_device(&v).unwrap();
        }
        "unmount" => {
            set.add_device(&v, None).unwrap();
            let mnt = root.join(format!("mnt/v{tag}"));
            set.mount_device(&v, &mnt, false).unwrap();
            std::fs::write(mnt.join("file"), "kept").unwrap();
            sh_ok("sync");
        }
        _ => {}
    }
    // Dropped without shutdown, as a process exit would leave it.
}

/// After recovery: the operation is wholly done or undone, and a retry works.
fn verify_and_retry(op: &str, root: &Path, fp: &str, tag: &str, size: u64) {
    let mut o = opts(root);
    if op == "grow_base" {
        // The retry: open again with the size the interrupted open asked for.
        o.base_size = size;
    }
    let set = DeviceSet::open(root, o).unwrap_or_else(|e| panic!("{fp}: reopen failed: {e}"));
    check_invariants(&set);
    let mnt = root.join(format!("mnt/v{tag}"));
    let (p, v, new) = (format!("p{tag}"), format!("v{tag}"), format!("new{tag}"));
    match op {
        "init" => set.add_device("after-init", None).unwrap(),
        "add" => {
            if !set.has_device(&new) {
                set.add_device(&new, Some(&p)).unwrap();
            }
            assert!(set.has_device(&new));
            assert!(!set.list().unwrap().is_empty());
            set.deactivate_device(&p).unwrap();
        }
        "remove" => {
            if set.has_device(&v) {
                set.remove_device(&v).unwrap();
            }
            assert!(!set.has_device(&v));
        }
        "activate" => {
            set.activate_device(&v).unwrap();
            assert!(set.has_activated_device(&v));
            set.deactivate_device(&v).unwrap();
        }
        "deactivate" => {
            set.deactivate_device(&v).unwrap();
            assert!(!set.has_activated_device(&v));
        }
        "mount" | "unmount" => {
            // Either still mounted (and adopted) or not; a fresh mount shows the data.
            let mounted = set
                .list()
                .unwrap()
                .iter()
                .any(|d| d.id == v && !d.mount_points.is_empty());
            if mounted {
                set.unmount_device(&v, &mnt, true).unwrap();
            }
            set.mount_device(&v, &mnt, false).unwrap();
            assert!(mnt.join("lost+found").exists(), "{fp}: filesystem missing");
            if op == "unmount" {
                assert_eq!(std::fs::read_to_string(mnt.join("file")).unwrap(), "kept");
            }
            set.unmount_device(&v, &mnt, true).unwrap();
        }
        "grow_pool" => {
            set.grow_pool(size).unwrap();
            assert_eq!(set.status().unwrap().data_total, size);
        }
        "grow_base" => {
            assert_eq!(set.status().unwrap().base_size, size);
            let g = format!("grown{tag}");
            set.add_device(&g, None).unwrap();
            set.mount_device(&g, &mnt, false).unwrap();
            let out = sh_ok(&format!("stat -f -c '%b %S' {}", mnt.display()));
            let bytes: u64 = out
                .split_whitespace()
                .map(|x| x.parse::<u64>().unwrap())
                .product();
            assert!(
                bytes > size - 16 * MIB,
                "{fp}: base filesystem not grown ({bytes} of {size} bytes)"
            );
            set.unmount_device(&g, &mnt, true).unwrap();
        }
        _ => unreachable!(),
    }
    check_invariants(&set);
    set.shutdown().unwrap();
    drop(set);
    let (ok, out) = thin_check_file(&root.join("devicemapper/metadata"));
    assert!(ok, "{fp}: thin_check failed after recovery: {out}");
}

#[test]
fn crash_at_every_fail_point() {
    let me = std::env::current_exe().unwrap();
    let shared = Root::new("crash-shared");
    let mut covered = Vec::new();
    for (i, fp) in FAIL_POINTS.iter().enumerate() {
        let op = fp.split('.').next().unwrap();
        let own;
        let root = if op == "init" {
            own = Root::new(&format!("crash-{}", fp.replace('.', "-")));
            &own.0
        } else {
            &shared.0
        };
        let tag = i.to_string();
        let t0 = std::time::Instant::now();
        prepare(op, root, &tag);
        let t_prepare = t0.elapsed();
        let size = grow_target(op, root);
        let status = Command::new(&me)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_OP, op)
            .env(CHILD_ROOT, root)
            .env(CHILD_TAG, &tag)
            .env(CHILD_SIZE, size.to_string())
            .env("DMTHIN_FAILPOINT", fp)
            .status()
            .unwrap();
        assert_eq!(
            status.signal(),
            Some(nix::libc::SIGABRT),
            "{fp}: the child must abort at the fail point (status {status:?})"
        );
        let t_child = t0.elapsed();
        verify_and_retry(op, root, fp, &tag, size);
        covered.push(*fp);
        println!(
            "fail point {fp}: crashed, recovered, retried, thin_check clean \
             (prepare {:.1} s, child {:.1} s, verify {:.1} s)",
            t_prepare.as_secs_f64(),
            (t_child - t_prepare).as_secs_f64(),
            (t0.elapsed() - t_child).as_secs_f64()
        );
    }
    assert_eq!(covered.len(), FAIL_POINTS.len());
    println!(
        "covered {} of {} fail points",
        covered.len(),
        FAIL_POINTS.len()
    );
}
