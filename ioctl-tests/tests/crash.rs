//! Failure safety at every fail point, in both modes:
//!
//! - crash: a child process runs the operation and aborts there; a fresh
//!   open must repair the set;
//! - error: this process runs the operation with the point armed to return
//!   an injected EIO; the call must fail naming the point and leave no
//!   device suspended or half-created, and the set must reopen.
//!
//! After either, the pool holds exactly the thin ids the records name, no
//! device of the set is suspended or without a table, the operation is
//! wholly done or wholly undone, it can be retried, and thin_check passes on
//! the metadata afterwards.
//!
//! The `init.*` points each start from an empty root; all other points share
//! one set (each with its own device ids), which keeps the run short under TCG.

mod common;
use common::*;

use dmthin::deviceset::failpoint::{self, Mode, FAIL_POINTS};
use dmthin::deviceset::{
    AutoextendOptions, DeviceSet, DeviceSetError, FsKind, Options, RemoveOutcome,
};
use dmthin::dm::{Control, DevId, UdevFlags};
use std::os::unix::process::ExitStatusExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const CHILD_OP: &str = "DMTHIN_CRASH_OP";
const CHILD_ROOT: &str = "DMTHIN_CRASH_ROOT";
const CHILD_TAG: &str = "DMTHIN_CRASH_TAG";
const CHILD_SIZE: &str = "DMTHIN_CRASH_SIZE";

/// Crash cases known to fail until open makes a repair: (point, the repair).
/// They still run; one that passes fails the test, to be taken off the list.
const CRASH_KNOWN: &[(&str, &str)] = &[];

/// Error cases known to fail until open makes a repair (see [`CRASH_KNOWN`]).
const ERROR_KNOWN: &[(&str, &str)] = &[];

/// Autoextend at any use (threshold 0), by 1% (a small growth on the VM's tmpfs).
const AUTOEXTEND_NOW: AutoextendOptions = AutoextendOptions {
    threshold_percent: 0,
    extend_percent: 1,
    max_data_size: None,
    max_metadata_size: None,
};

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

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// The size argument of a growing operation (pool or base), decided by the parent.
fn grow_target(op: &str, root: &Path) -> u64 {
    match op {
        "grow_pool" => file_size(&root.join("devicemapper/data")) + 256 * MIB,
        "grow_pool_metadata" => file_size(&root.join("devicemapper/metadata")) + 4 * MIB,
        "grow_base" => opts(root).base_size + 16 * MIB,
        "add_sized" => opts(root).base_size + 32 * MIB,
        _ => 0,
    }
}

/// Operations whose fail points are met while the set opens.
fn runs_at_open(op: &str) -> bool {
    matches!(op, "init" | "grow_base" | "cleanup_deferred" | "resolve")
}

/// Waits until the kernel has removed device `id` (a deferred removal runs
/// from a work queue once the device is closed).
fn wait_gone(set: &DeviceSet, id: &str) {
    let name = set.device_name(id);
    let mut ctl = Control::open().unwrap();
    let t0 = Instant::now();
    while ctl.exists(&name).unwrap() {
        assert!(t0.elapsed() < Duration::from_secs(10), "{name} not removed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes `id` with deferred removal while it is held open: it must be deferred.
fn remove_while_open(set: &DeviceSet, id: &str) -> dmthin::deviceset::Result<()> {
    let path = set.activate_device(id)?;
    let held = std::fs::File::open(&path).unwrap();
    let outcome = set.remove_device_deferred(id)?;
    assert!(matches!(outcome, RemoveOutcome::Deferred), "{outcome:?}");
    drop(held);
    Ok(())
}

/// The operation a fail point belongs to. `arm` is called just before the
/// set opens for the operations met at open, else just after.
fn run_op(
    op: &str,
    root: &Path,
    tag: &str,
    size: u64,
    arm: &dyn Fn(),
) -> dmthin::deviceset::Result<()> {
    let mut o = opts(root);
    if op == "grow_base" {
        o.base_size = size;
    }
    if runs_at_open(op) {
        arm();
    }
    let set = DeviceSet::open(root, o)?;
    if !runs_at_open(op) {
        arm();
    }
    let mnt = root.join(format!("mnt/v{tag}"));
    let (p, v, new) = (format!("p{tag}"), format!("v{tag}"), format!("new{tag}"));
    match op {
        "init" | "grow_base" | "resolve" => Ok(()),
        "fold" => set.shutdown(),
        "cleanup_deferred" => set.cleanup_deferred(),
        "add" => set.add_device(&new, Some(&p)),
        "add_sized" => set.add_device_sized(&new, Some(&p), Some(size)),
        "remove" => set.remove_device(&v),
        "remove_deferred" => remove_while_open(&set, &v),
        "activate" => set.activate_device(&v).map(drop),
        "deactivate" => set.deactivate_device(&v),
        "mount" => set.mount_device(&v, &mnt, false),
        "unmount" => set.unmount_device(&v, &mnt, true),
        "set_initialized" => set.set_initialized(&v, true),
        "grow_pool" => set.grow_pool(size),
        "grow_pool_metadata" => set.grow_pool_metadata(size),
        "autoextend" => set.autoextend(&AUTOEXTEND_NOW).map(drop),
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
    run_op(&op, Path::new(&root), &tag, size, &|| {}).unwrap();
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
        "remove" | "remove_deferred" | "activate" | "mount" | "set_initialized" | "fold" => {
            set.add_device(&v, None).unwrap()
        }
        "add_sized" => set.add_device(&p, None).unwrap(),
        "resolve" => {
            // An add killed after create_snap, before its done marker: the
            // next open finds the thin in the pool and finishes the add.
            set.add_device(&p, None).unwrap();
            drop(set);
            let me = std::env::current_exe().unwrap();
            crash_at(&me, "add", root, "add.after_create_snap", tag, 0);
        }
        "cleanup_deferred" => {
            // Pending deletion, its device gone: the next open finishes it.
            set.add_device(&v, None).unwrap();
            remove_while_open(&set, &v).unwrap();
            wait_gone(&set, &v);
        }
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

/// No device of the set at `root` is suspended, half-made or left with an
/// inactive table.
fn check_devices(root: &Path, fp: &str) {
    let prefix = dmthin::deviceset::name_prefix(root).unwrap();
    let mut ctl = Control::open().unwrap();
    for e in ctl.list_devices().unwrap() {
        if !e.name.starts_with(&prefix) {
            continue;
        }
        let info = ctl.info(DevId::Name(&e.name)).unwrap();
        assert!(!info.suspended(), "{fp}: {} left suspended", e.name);
        assert!(info.active_table(), "{fp}: {} has no table", e.name);
        assert!(
            !info.inactive_table(),
            "{fp}: {} has an inactive table loaded",
            e.name
        );
    }
}

/// Resumes whatever a failed case left suspended, so teardown cannot hang.
fn unstick(root: &Path) {
    let prefix = dmthin::deviceset::name_prefix(root).unwrap_or_default();
    let Ok(mut ctl) = Control::open() else { return };
    for e in ctl.list_devices().unwrap_or_default() {
        if e.name.starts_with(&prefix) {
            if let Ok(info) = ctl.info(DevId::Name(&e.name)) {
                if info.suspended() {
                    let _ = ctl.resume(DevId::Name(&e.name), UdevFlags::empty());
                }
            }
        }
    }
}

/// Device `id`, mounted at `mnt`, has a filesystem of about `size` bytes.
fn check_grown(set: &DeviceSet, id: &str, mnt: &Path, size: u64, fp: &str) {
    set.mount_device(id, mnt, false).unwrap();
    let bytes = fs_bytes(mnt);
    assert!(
        bytes > size - 16 * MIB,
        "{fp}: filesystem of {id} not grown ({bytes} of {size} bytes)"
    );
    set.unmount_device(id, mnt, true).unwrap();
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
    check_devices(root, fp);
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
        "add_sized" => {
            if !set.has_device(&new) {
                set.add_device_sized(&new, Some(&p), Some(size)).unwrap();
            }
            let listed = set.list().unwrap().into_iter().find(|d| d.id == new);
            assert_eq!(listed.map(|d| d.size), Some(size), "{fp}");
            check_grown(&set, &new, &mnt, size, fp);
        }
        "remove" => {
            if set.has_device(&v) {
                set.remove_device(&v).unwrap();
            }
            assert!(!set.has_device(&v));
        }
        "remove_deferred" | "cleanup_deferred" => {
            if set.has_device(&v) {
                remove_while_open(&set, &v).unwrap();
                wait_gone(&set, &v);
            }
            set.cleanup_deferred().unwrap();
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
        "set_initialized" => {
            set.set_initialized(&v, true).unwrap();
            assert!(set.has_initialized_device(&v));
        }
        "fold" => assert!(set.has_device(&v), "{fp}: a device added before the fold"),
        "resolve" => {
            assert!(
                set.has_device(&new),
                "{fp}: the add whose thin exists is finished"
            );
            set.remove_device(&new).unwrap();
        }
        "grow_pool" => {
            set.grow_pool(size).unwrap();
            assert_eq!(set.status().unwrap().data_total, size);
        }
        "grow_pool_metadata" => {
            set.grow_pool_metadata(size).unwrap();
            assert_eq!(file_size(&root.join("devicemapper/metadata")), size);
            assert!(set.status().unwrap().metadata_total > 16 * MIB - MIB);
        }
        "autoextend" => {
            // Wholly done or undone: the pool spans the data file.
            let bs = set.status().unwrap().data_block_size;
            let file = file_size(&root.join("devicemapper/data"));
            assert_eq!(set.status().unwrap().data_total, file / bs * bs, "{fp}");
            let grown = set.autoextend(&AUTOEXTEND_NOW).unwrap();
            assert!(!grown.is_empty(), "{fp}: the retry grew nothing");
            assert!(set.status().unwrap().data_total > file / bs * bs, "{fp}");
            let history = set.growth_history().unwrap();
            assert!(history.ends_with(&grown), "{fp}: {history:?}");
        }
        "grow_base" => {
            assert_eq!(set.status().unwrap().base_size, size);
            let g = format!("grown{tag}");
            set.add_device(&g, None).unwrap();
            check_grown(&set, &g, &mnt, size, fp);
        }
        _ => unreachable!(),
    }
    check_invariants(&set);
    check_devices(root, fp);
    set.shutdown().unwrap();
    drop(set);
    let (ok, out) = thin_check_file(&root.join("devicemapper/metadata"));
    assert!(ok, "{fp}: thin_check failed after recovery: {out}");
}

/// Makes the operation fail at `fp` in this mode (the set at `root` prepared).
type Fail = fn(me: &Path, op: &str, root: &Path, fp: &str, tag: &str, size: u64);

/// Crash mode: a child aborts at `fp`.
fn crash_at(me: &Path, op: &str, root: &Path, fp: &str, tag: &str, size: u64) {
    let status = Command::new(me)
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_OP, op)
        .env(CHILD_ROOT, root)
        .env(CHILD_TAG, tag)
        .env(CHILD_SIZE, size.to_string())
        .env("DMTHIN_FAILPOINT", fp)
        .status()
        .unwrap();
    assert_eq!(
        status.signal(),
        Some(nix::libc::SIGABRT),
        "{fp}: the child must abort at the fail point (status {status:?})"
    );
}

/// Error mode: the operation, run here, returns the injected error naming `fp`.
fn error_at(_: &Path, op: &str, root: &Path, fp: &str, tag: &str, size: u64) {
    let result = run_op(op, root, tag, size, &|| {
        failpoint::set(Some((fp, Mode::Error)))
    });
    failpoint::set(None);
    match result {
        Err(e @ DeviceSetError::Injected { point, .. }) => {
            assert_eq!(point, fp);
            assert!(e.to_string().contains(fp), "{fp}: {e}");
        }
        Err(e) => panic!("{fp}: failed with another error than the injected one: {e}"),
        Ok(()) => panic!("{fp}: the operation succeeded: the point was not reached"),
    }
    // What the failed call left, before any repair at open.
    check_devices(root, fp);
}

/// Prints past libtest's capture (straight to stderr), so the VM log shows
/// every case of a passing run.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Every fail point in one mode; failures are collected, not fatal at once.
/// Whether this run covers `mode`: `DMTHIN_CRASH_MODES` (e.g. `crash` or
/// `error`) picks one, so test-all can split the modes across kernels; unset,
/// both run.
fn mode_selected(mode: &str) -> bool {
    match std::env::var("DMTHIN_CRASH_MODES") {
        Ok(modes) => modes.split(',').any(|m| m.trim() == mode),
        Err(_) => true,
    }
}

fn every_fail_point(mode: &str, fail: Fail, known: &[(&str, &str)]) {
    if !mode_selected(mode) {
        println!("{mode} mode not selected by DMTHIN_CRASH_MODES; not run in this pass");
        return;
    }
    let me = std::env::current_exe().unwrap();
    let mut shared = Root::new(&format!("{mode}-shared"));
    let (mut passed, mut failed, mut known_failed, mut now_pass) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, fp) in FAIL_POINTS.iter().enumerate() {
        let repair = known.iter().find(|(p, _)| p == fp).map(|(_, r)| *r);
        let op = fp.split('.').next().unwrap();
        let own;
        let root = if op == "init" {
            own = Root::new(&format!("{mode}-{}", fp.replace('.', "-")));
            &own.0
        } else {
            &shared.0
        };
        let tag = i.to_string();
        let t0 = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            prepare(op, root, &tag);
            let size = grow_target(op, root);
            fail(&me, op, root, fp, &tag, size);
            verify_and_retry(op, root, fp, &tag, size);
        }));
        failpoint::set(None);
        let secs = t0.elapsed().as_secs_f64();
        match (outcome, repair) {
            (Ok(()), None) => {
                say!("{mode} at {fp}: recovered, retried, thin_check clean ({secs:.1} s)");
                passed.push(*fp);
            }
            (Ok(()), Some(repair)) => {
                say!("{mode} at {fp}: PASSES NOW, take it off the known list ({repair})");
                now_pass.push(*fp);
            }
            (Err(_), known) => {
                match known {
                    Some(repair) => {
                        say!("{mode} at {fp}: KNOWN FAILURE (above), needs: {repair}");
                        known_failed.push(*fp);
                    }
                    None => {
                        say!("{mode} at {fp}: FAILED (see the panic above)");
                        failed.push(*fp);
                    }
                }
                unstick(root);
                if op != "init" {
                    // Later points start from a clean set.
                    shared = Root::new(&format!("{mode}-shared-{i}"));
                }
            }
        }
    }
    say!(
        "{mode}: {} of {} fail points passed; known failures {known_failed:?}; \
         failed {failed:?}; known but passing {now_pass:?}",
        passed.len(),
        FAIL_POINTS.len(),
    );
    assert!(failed.is_empty(), "{mode}: failed at {failed:?}");
    assert!(
        now_pass.is_empty(),
        "{mode}: {now_pass:?} pass now: take them off the known list"
    );
}

#[test]
fn crash_at_every_fail_point() {
    every_fail_point("crash", crash_at, CRASH_KNOWN);
}

#[test]
fn error_at_every_fail_point() {
    every_fail_point("error", error_at, ERROR_KNOWN);
}
