//! dmthin-snapshotter beside the `dmthin` CLI and under its own fail points,
//! on a small loop-file pool:
//!
//! - while the daemon runs, `dmthin status`, `list` and `usage` on its root
//!   read the set read-only and agree with the daemon's records; `create`
//!   and `remove` are refused naming the daemon, which carries on;
//! - every snapshotter fail point, in abort and error mode: after a restart
//!   the records and the devices agree (read with `dmthin list` while the
//!   daemon runs), Cleanup succeeds and leaves no thin the set does not
//!   know, the interrupted call retried succeeds, thin_check is clean.
//!
//! Calls go through containerd's proxy client: the Go test binary the
//! runner ships (`TestDmthinClient` in `snapshotter/conformance/`).

mod common;
use common::{thin_check_file, Root};

use serde_json::Value;
use std::collections::BTreeSet;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

fn on_path(name: &str) -> PathBuf {
    dmthin_ioctl_tests::find_on_path(name).unwrap_or_else(|| {
        panic!("{name} is not on PATH: run with `ioctl-tests/run --test snapshotter_cli_and_failpoints`")
    })
}

/// One dmthin-snapshotter process.
struct Daemon {
    child: Option<Child>,
    socket: PathBuf,
}

impl Daemon {
    /// Starts the daemon on `root`, with `DMTHIN_FAILPOINT=failpoint` if
    /// given; waits until it serves, or until it exits (then `serving` is
    /// false).
    fn start(root: &Path, socket: &Path, failpoint: Option<&str>) -> (Daemon, bool) {
        let mut cmd = Command::new(on_path("dmthin-snapshotter"));
        cmd.arg("--root")
            .arg(root)
            .arg("--socket")
            .arg(socket)
            .args(["--data-size", "512M", "--metadata-size", "16M"])
            .args(["--base-size", "64M", "--log-level", "info"])
            .env_remove("DMTHIN_FAILPOINT")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if dmthin_ioctl_tests::udev_expected() {
            cmd.arg("--udev-sync");
        }
        if let Some(fp) = failpoint {
            cmd.env("DMTHIN_FAILPOINT", fp);
        }
        let _ = std::fs::remove_file(socket);
        let mut child = cmd.spawn().unwrap();
        let t = Instant::now();
        loop {
            if UnixStream::connect(socket).is_ok() {
                break;
            }
            if child.try_wait().unwrap().is_some() {
                let d = Daemon {
                    child: Some(child),
                    socket: socket.into(),
                };
                return (d, false);
            }
            assert!(
                t.elapsed() < Duration::from_secs(180),
                "daemon did not serve"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let d = Daemon {
            child: Some(child),
            socket: socket.into(),
        };
        (d, true)
    }

    fn serving(root: &Path, socket: &Path) -> Daemon {
        let (d, serving) = Daemon::start(root, socket, None);
        assert!(serving, "the daemon exited: {:?}", d.exit());
        d
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// How it ended (waits for it).
    fn exit(mut self) -> ExitStatus {
        self.child.take().unwrap().wait().unwrap()
    }

    fn alive(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// SIGTERM; asserts a clean exit.
    fn stop(self) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = self.exit();
        assert!(status.success(), "daemon exit after SIGTERM: {status:?}");
    }

    /// The snapshot calls `ops` (see `TestDmthinClient`): a line per call.
    fn client(&self, ops: &str) -> Vec<String> {
        let out = Command::new(on_path("dmthin-conformance.test"))
            .args(["-test.run", "^TestDmthinClient$"])
            .env("DMTHIN_CLIENT_SOCKET", &self.socket)
            .env("DMTHIN_CLIENT_OPS", ops)
            .current_dir("/tmp")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "client failed: {text}");
        text.lines()
            .filter_map(|l| l.strip_prefix("CLIENT "))
            .map(str::to_string)
            .collect()
    }

    /// Runs one call, which must succeed.
    fn ok(&self, op: &str) {
        let got = self.client(op);
        assert_eq!(got, [format!("ok {op}")], "{op}");
    }

    /// Every snapshot key the daemon reports.
    fn keys(&self) -> BTreeSet<String> {
        self.client("walk")
            .iter()
            .filter_map(|l| l.strip_prefix("snapshot "))
            .map(|l| l.split(' ').next().unwrap().to_string())
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `dmthin --root ROOT ARGS`: (success, stdout, stderr).
fn dmthin(root: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(on_path("dmthin"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn dmthin_json(root: &Path, args: &[&str]) -> Value {
    let (ok, out, err) = dmthin(root, args);
    assert!(ok, "dmthin {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("dmthin {args:?}: {e}: {out}"))
}

/// The devices of snapshots (`snap-<n>`) `dmthin list` shows.
fn snapshot_devices(root: &Path) -> BTreeSet<String> {
    let list = dmthin_json(root, &["list", "--json"]);
    list.as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .filter(|id| {
            id.strip_prefix("snap-")
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect()
}

/// The devices the snapshotter's records name.
fn record_devices(root: &Path) -> BTreeSet<String> {
    std::fs::read_dir(root.join("snapshotter/snapshots"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".json").map(str::to_string)
        })
        .collect()
}

fn socket_for(tag: &str) -> PathBuf {
    let dir = PathBuf::from(format!("/run/dmthin-test-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir.join("snap.sock")
}

#[test]
fn cli_reads_a_set_the_daemon_owns_and_mutations_are_refused() {
    dmthin_ioctl_tests::require_device_mapper();
    let root = Root::new("snapd-shared");
    let r = root.0.as_path();
    let sock = socket_for("shared");
    let t = Instant::now();
    let d = Daemon::serving(r, &sock);
    println!("daemon serving on a new set in {:?}", t.elapsed());
    for op in ["prepare a -", "commit A a", "prepare b A", "view v A"] {
        d.ok(op);
    }

    let t = Instant::now();
    let status = dmthin_json(r, &["status", "--json"]);
    let list_took = Instant::now();
    let devices = snapshot_devices(r);
    let list_took = list_took.elapsed();
    let usage = dmthin_json(r, &["usage", "--json"]);
    println!(
        "status+list+usage beside the daemon: {:?} (list {list_took:?})",
        t.elapsed()
    );
    // The same devices as the daemon's records, and the template.
    let records = record_devices(r);
    assert_eq!(records.len(), 3, "{records:?}");
    assert_eq!(devices, records);
    assert_eq!(status["devices"].as_u64(), Some(records.len() as u64 + 1));
    assert_eq!(status["mode"], "rw");
    let list = dmthin_json(r, &["list", "--json"]);
    let active: BTreeSet<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["active"] == true)
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    // The active snapshot and the view are active; the committed parent
    // was deactivated at commit, and the template is inactive.
    assert_eq!(active.len(), 2, "{list}");
    for d in list.as_array().unwrap() {
        assert_eq!(d["active"] == true, !d["mapped_bytes"].is_null(), "{d}");
    }
    // Usage read live (no metadata snapshot), every pool thin known.
    assert_eq!(usage["from_snapshot"], false, "{usage}");
    assert_eq!(
        usage["untracked"].as_array().map(Vec::len),
        Some(0),
        "{usage}"
    );
    let usage_ids: BTreeSet<&str> = usage["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(usage_ids.len(), records.len() + 1);
    assert!(usage["mapped_bytes"].as_u64().unwrap() > 0);

    // Reads while the daemon is busy: every one succeeds (a space read that
    // a commit raced is read again), and stays within what the pool holds.
    let t = Instant::now();
    std::thread::scope(|sc| {
        let busy = sc.spawn(|| {
            let ops: Vec<String> = (0..16)
                .flat_map(|n| [format!("prepare busy{n} A"), format!("commit B{n} busy{n}")])
                .chain((0..16).map(|n| format!("remove B{n}")))
                .collect();
            let got = d.client(&ops.join(";"));
            assert!(got.iter().all(|l| l.starts_with("ok ")), "{got:?}");
        });
        let mut reads = 0;
        let mut retried = 0;
        while !busy.is_finished() || reads < 3 {
            let out = Command::new(on_path("dmthin"))
                .arg("--root")
                .arg(r)
                .args(["usage", "--json"])
                .env("DMTHIN_LOG", "debug")
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            retried += err.matches("committed during a live read").count();
            let u: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert!(
                u["allocated_bytes"].as_u64() <= u["data_total_bytes"].as_u64(),
                "{u}"
            );
            dmthin_json(r, &["list", "--json"]);
            dmthin_json(r, &["status", "--json"]);
            reads += 1;
        }
        busy.join().unwrap();
        println!(
            "{reads} status+list+usage rounds beside 48 calls \
             ({retried} space reads raced a commit and were read again): {:?}",
            t.elapsed()
        );
    });
    assert_eq!(snapshot_devices(r), record_devices(r));

    // Changes are refused, naming the daemon, and change nothing.
    let holder = format!("dmthin-snapshotter (pid {})", d.pid());
    for args in [&["create", "x"][..], &["remove", "snap-1"], &["shutdown"]] {
        let (ok, _, err) = dmthin(r, args);
        assert!(!ok, "dmthin {args:?} succeeded beside the daemon");
        assert!(err.contains(&holder), "dmthin {args:?}: {err}");
    }
    assert_eq!(snapshot_devices(r), records);
    d.ok("prepare c A");
    d.ok("remove c");
    assert_eq!(d.keys(), ["A", "b", "v"].map(String::from).into());
    assert!(!dmthin_json(r, &["list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["id"] == "x"));

    // With the daemon gone the CLI owns the set again.
    d.stop();
    let after = dmthin_json(r, &["status", "--json"]);
    assert_eq!(after["devices"], status["devices"]);
    let (ok, out, err) = dmthin(r, &["create", "x"]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = dmthin(r, &["remove", "x"]);
    assert!(ok, "{out}{err}");
    let (ok, _, err) = dmthin(r, &["shutdown"]);
    assert!(ok, "{err}");
}

/// What a fail point interrupts, and how the test drives and retries it.
fn scenario(point: &str, i: usize) -> (Vec<String>, String) {
    let (setup, op): (Vec<String>, String) = match point {
        p if p.starts_with("snap.create.") => (vec![], format!("prepare a{i} L")),
        "snap.commit.after_write" => (vec![format!("prepare c{i} L")], format!("commit C{i} c{i}")),
        p if p.starts_with("snap.remove.") => {
            (vec![format!("prepare r{i} L")], format!("remove r{i}"))
        }
        "snap.template.after_device" => (vec![], format!("prepare t{i} -")),
        other => panic!("no scenario for fail point {other}"),
    };
    (setup, op)
}

/// The snapshotter's fail points, read from its source (one list: a new
/// point fails [`scenario`] until the test knows how to drive it).
fn fail_points() -> Vec<&'static str> {
    let src = include_str!("../../snapshotter/src/failpoint.rs");
    let list = src
        .split_once("pub const FAIL_POINTS: &[&str] = &[")
        .and_then(|(_, rest)| rest.split_once("];"))
        .expect("FAIL_POINTS in snapshotter/src/failpoint.rs")
        .0;
    list.split('"').skip(1).step_by(2).collect()
}

#[test]
fn every_snapshotter_fail_point_in_abort_and_error_mode() {
    dmthin_ioctl_tests::require_device_mapper();
    let version = Command::new(on_path("dmthin-snapshotter"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&version.stdout).contains("fail points"),
        "the VM's dmthin-snapshotter must be built with its fail points (ioctl-tests/vm/build.sh)"
    );
    let root = Root::new("snapd-fp");
    let r = root.0.as_path();
    let sock = socket_for("fp");
    let meta = r.join("devicemapper/metadata");
    {
        let d = Daemon::serving(r, &sock);
        d.ok("prepare l -");
        d.ok("commit L l");
        d.stop();
    }
    let t_all = Instant::now();
    let mut i = 0;
    let points = fail_points();
    assert!(
        !points.is_empty() && points.iter().all(|p| p.starts_with("snap.")),
        "{points:?}"
    );
    for &point in &points {
        for mode in ["abort", "error"] {
            i += 1;
            let t = Instant::now();
            let what = format!("{point}:{mode}");
            let (setup, op) = scenario(point, i);
            let template = point.starts_with("snap.template.");
            if template {
                // The template is remade at start when its marker is missing.
                std::fs::remove_file(r.join("snapshotter/template.json")).unwrap();
            }
            let (mut d, serving) = Daemon::start(r, &sock, Some(&what));
            if template {
                assert!(!serving, "{what}: the start must fail");
            } else {
                assert!(serving, "{what}: the daemon did not serve");
                for s in &setup {
                    d.ok(s);
                }
                let got = d.client(&op);
                let failed = got.first().is_some_and(|l| l.starts_with("err "));
                if mode == "error" {
                    // Past the device's removal the call completes.
                    let completes = point == "snap.remove.after_device";
                    assert_eq!(!failed, completes, "{what}: {got:?}");
                    assert!(
                        d.alive(),
                        "{what}: an injected error must not end the daemon"
                    );
                    // Records and devices agree while it runs (a `removing`
                    // record waits for the next start).
                    if !completes {
                        assert_eq!(snapshot_devices(r), record_devices(r), "{what}");
                    }
                    d.stop();
                    continue_checks(r, &sock, &meta, &what, &op, point, i);
                    println!("{what}: {:?}", t.elapsed());
                    continue;
                }
                assert!(
                    failed,
                    "{what}: the call must fail when the daemon aborts: {got:?}"
                );
            }
            let status = d.exit();
            if mode == "abort" {
                assert_eq!(
                    status.signal(),
                    Some(nix::libc::SIGABRT),
                    "{what}: {status:?}"
                );
            } else {
                assert!(!status.success(), "{what}: {status:?}");
            }
            continue_checks(r, &sock, &meta, &what, &op, point, i);
            println!("{what}: {:?}", t.elapsed());
        }
    }
    println!(
        "{} fail point rounds in {:?}",
        points.len() * 2,
        t_all.elapsed()
    );
}

/// After a fail point: restart, records == devices, Cleanup, no unknown
/// thin, the call retried, thin_check.
fn continue_checks(
    r: &Path,
    sock: &Path,
    meta: &Path,
    what: &str,
    op: &str,
    point: &str,
    i: usize,
) {
    let d = Daemon::serving(r, sock);
    assert_eq!(
        snapshot_devices(r),
        record_devices(r),
        "{what}: after restart"
    );
    d.ok("cleanup");
    assert_eq!(
        snapshot_devices(r),
        record_devices(r),
        "{what}: after cleanup"
    );
    let usage = dmthin_json(r, &["usage", "--json"]);
    assert_eq!(
        usage["untracked"].as_array().map(Vec::len),
        Some(0),
        "{what}: {usage}"
    );
    let keys = d.keys();
    match point {
        p if p.starts_with("snap.create.") || p.starts_with("snap.template.") => {
            // A snapshot made durably before the crash is containerd's
            // garbage (its call failed): removed as its GC would.
            let key = op.split(' ').nth(1).unwrap();
            if keys.contains(key) {
                d.ok(&format!("remove {key}"));
            }
            d.ok(op);
            d.ok(&format!("remove {key}"));
        }
        "snap.commit.after_write" => {
            // Durable before the abort: the commit stands; else retried.
            if !keys.contains(&format!("C{i}")) {
                d.ok(op);
            }
            let keys = d.keys();
            assert!(keys.contains(&format!("C{i}")) && !keys.contains(&format!("c{i}")));
            d.ok(&format!("remove C{i}"));
        }
        _ => {
            // A removal is finished by the restart or retried.
            let key = format!("r{i}");
            if keys.contains(&key) {
                d.ok(op);
            }
            assert!(!d.keys().contains(&key), "{what}: {key} still there");
        }
    }
    assert_eq!(
        snapshot_devices(r),
        record_devices(r),
        "{what}: after the retry"
    );
    d.stop();
    let (ok, out) = thin_check_file(meta);
    assert!(ok, "{what}: thin_check: {out}");
}
