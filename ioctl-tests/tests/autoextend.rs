//! Autoextend in the kernel: the pool monitor grows a small loop-file pool
//! while writers fill it through several thin devices at full speed with
//! `error_if_no_space` on (on a `--scratch` disk the 256 MiB pool
//! and 1 GiB of data; without one 128 MiB and 256 MiB, as the guest's /tmp
//! is a tmpfs in its 1 GiB of memory); a snapshot storm grows the metadata;
//! a cap makes writes fail cleanly; a crash in the middle of a growth is
//! repaired by the next open. `bench_event_vs_timer` measures the reaction
//! time.
mod common;
use common::*;

use dmthin::deviceset::{
    AutoextendOptions, DeviceSet, FsKind, Growth, GrowthTarget, Monitor, Options, StorageOptions,
};
use dmthin::dm::{Control, DevId, StatusKind, StatusOptions};
use dmthin::target::{PoolStatus, TargetTable, ThinPoolTable};
use dmthin_ioctl_tests::{poll_readable, set_thread_nice};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const CHUNK: usize = 1 << 20;

/// Prints past libtest's capture, so the VM log shows the figures.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

// After `say!`, which its tests use.
#[path = "autoextend/side_effects.rs"]
mod side_effects;

fn small(data: u64, meta: u64) -> Options {
    let mut o = options(FsKind::Ext4);
    o.storage = StorageOptions::LoopFiles {
        data_size: data,
        metadata_size: meta,
    };
    o.base_size = 64 * MIB;
    o
}

fn recorded(root: &Path) -> Options {
    let mut o = DeviceSet::recorded_options(root).unwrap().unwrap();
    o.busy_retries = 3;
    o
}

/// Device `dev`'s pattern for chunk `i`: a per-device random chunk with the
/// chunk's number stamped on every 4 KiB page (cheap to make, so the
/// writers are not slowed by making it).
fn pattern(buf: &mut [u8], dev: u64, i: u64) {
    if buf[8..16] != (dev + 1).to_le_bytes() {
        let mut x = (dev + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for word in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
    }
    for page in buf.chunks_exact_mut(4096) {
        page[..8].copy_from_slice(&i.to_le_bytes());
        page[8..16].copy_from_slice(&(dev + 1).to_le_bytes());
    }
}

/// A 4 KiB-aligned chunk inside `v` (O_DIRECT wants aligned buffers).
fn aligned(v: &mut [u8]) -> &mut [u8] {
    let off = v.as_ptr().align_offset(4096);
    &mut v[off..off + CHUNK]
}

fn open_direct(path: &Path, write: bool) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(nix::libc::O_DIRECT)
        .open(path)
        .unwrap()
}

/// Writes `chunks` MiB of `dev`'s pattern with O_DIRECT, as fast as it
/// goes; every failed write is returned (chunk, error) and writing goes on.
fn write_pattern(path: &Path, dev: u64, chunks: u64) -> Vec<(u64, String)> {
    let f = open_direct(path, true);
    let mut v = vec![0u8; CHUNK + 4096];
    let mut errors = Vec::new();
    for i in 0..chunks {
        let buf = aligned(&mut v);
        pattern(buf, dev, i);
        if let Err(e) = f.write_all_at(buf, i * CHUNK as u64) {
            errors.push((i, e.to_string()));
        }
    }
    errors
}

/// Chunks of `path` that do not hold `dev`'s pattern.
fn bad_chunks(path: &Path, dev: u64, chunks: u64) -> Vec<u64> {
    let f = open_direct(path, false);
    let (mut v, mut w) = (vec![0u8; CHUNK + 4096], vec![0u8; CHUNK + 4096]);
    let mut bad = Vec::new();
    for i in 0..chunks {
        let got = aligned(&mut v);
        f.read_exact_at(got, i * CHUNK as u64).unwrap();
        let want = aligned(&mut w);
        pattern(want, dev, i);
        if got != want {
            bad.push(i);
        }
    }
    bad
}

/// Runs writers on `paths` (device i gets pattern i, `chunks` MiB each);
/// returns every write error and the time taken. Panics after `limit`: a
/// hung writer is a failure.
fn write_all(paths: &[PathBuf], chunks: u64, limit: Duration) -> (Vec<(u64, String)>, Duration) {
    let t0 = Instant::now();
    let (tx, rx) = mpsc::channel();
    for (i, p) in paths.iter().enumerate() {
        let (p, tx) = (p.clone(), tx.clone());
        thread::spawn(move || tx.send(write_pattern(&p, i as u64, chunks)).unwrap());
    }
    let mut errors = Vec::new();
    for _ in paths {
        let e = rx
            .recv_timeout(limit.saturating_sub(t0.elapsed()))
            .expect("a writer hung");
        errors.extend(e);
    }
    (errors, t0.elapsed())
}

/// Makes `n` thin devices (64 MiB each) and activates them.
fn devices(set: &DeviceSet, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let id = format!("w{i}");
            set.add_device(&id, None).unwrap();
            set.activate_device(&id).unwrap()
        })
        .collect()
}

fn pool_status(ctl: &mut Control, pool: &str) -> dmthin::target::ThinPoolStatus {
    let (_, lines) = ctl
        .table_status(DevId::Name(pool), &StatusOptions::default())
        .unwrap();
    match PoolStatus::parse(lines[0].params()).unwrap() {
        PoolStatus::Active(s) => s,
        other => panic!("pool {pool}: {other}"),
    }
}

/// Pool `pool`'s live table.
fn pool_table(ctl: &mut Control, pool: &str) -> ThinPoolTable {
    let (_, lines) = ctl
        .table_status(
            DevId::Name(pool),
            &StatusOptions {
                kind: StatusKind::Table,
                ..Default::default()
            },
        )
        .unwrap();
    ThinPoolTable::from_line(&lines[0]).unwrap()
}

fn low_water(ctl: &mut Control, pool: &str) -> u64 {
    pool_table(ctl, pool).low_water_mark()
}

/// Spawns `cmd` with its stderr gathered into the returned log; the bool
/// says whether a line containing `ready` came within `wait`.
fn spawn_logged(
    mut cmd: Command,
    ready: &'static str,
    wait: Duration,
) -> (Child, Arc<Mutex<String>>, bool) {
    let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    let (stderr, l) = (child.stderr.take().unwrap(), log.clone());
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            if line.contains(ready) {
                let _ = tx.send(());
            }
            l.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    let started = rx.recv_timeout(wait).is_ok();
    (child, log, started)
}

/// `dmthin monitor` on `root` with `args`, its stderr gathered; returns
/// once it logged that it is monitoring.
fn spawn_cli(root: &Path, args: &[&str]) -> (Child, Arc<Mutex<String>>) {
    let mut cmd = Command::new("dmthin");
    cmd.arg("--root")
        .arg(root)
        .arg("monitor")
        .args(args)
        .env("DMTHIN_LOG", "info");
    let (mut child, log, started) = spawn_logged(cmd, "monitoring", Duration::from_secs(60));
    if !started {
        let _ = child.kill();
        panic!("monitor did not start: {}", log.lock().unwrap());
    }
    (child, log)
}

/// SIGTERM, then the monitor must exit 0 within 10 s.
fn stop_cli(mut child: Child, log: &Mutex<String>) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}: {}", log.lock().unwrap());
            return;
        }
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("monitor ignored SIGTERM: {}", log.lock().unwrap());
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A monitor in a thread until the returned pipe end is written or dropped.
fn spawn_thread(mut m: Monitor) -> (OwnedFd, thread::JoinHandle<Monitor>) {
    let (rd, wr) = nix::unistd::pipe().unwrap();
    let h = thread::spawn(move || {
        m.run(rd.as_fd()).unwrap();
        m
    });
    (wr, h)
}

fn stop_thread(wr: OwnedFd, h: thread::JoinHandle<Monitor>) -> Monitor {
    nix::unistd::write(&wr, b"x").unwrap();
    h.join().unwrap()
}

/// The data growths follow each other and end at the pool's size.
fn check_history(history: &[Growth], data_total: u64) -> Vec<Growth> {
    let data: Vec<Growth> = history
        .iter()
        .filter(|g| g.target == GrowthTarget::Data)
        .cloned()
        .collect();
    for w in data.windows(2) {
        assert_eq!(w[0].to, w[1].from, "{history:?}");
    }
    if let Some(last) = data.last() {
        assert_eq!(last.to, data_total, "{history:?}");
    }
    data
}

/// The set's invariants hold; it shuts down; thin_check passes.
fn finish(set: &DeviceSet, root: &Path) {
    check_invariants(set);
    set.shutdown().unwrap();
    let (ok, out) = thin_check_file(&root.join("devicemapper/metadata"));
    assert!(ok, "{out}");
}

fn median_ms(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

#[test]
fn monitor_grows_the_pool_ahead_of_full_speed_writers() {
    // MiB: the pool at first, and what each of the 4 writers writes.
    let (pool, each) = if scratch_dir().is_some() {
        (256, 256)
    } else {
        (128, 64)
    };
    let root = big_root("ae-data");
    let r = root.0.as_path();
    let mut o = small(pool * MIB, 8 * MIB);
    o.base_size = each * MIB; // each thin holds what its writer writes
    let set = DeviceSet::open(r, o).unwrap();
    let paths = devices(&set, 4);
    let before = set.status().unwrap();
    // The monitor (another process) takes the lock only to grow.
    drop(set);
    let (child, log) = spawn_cli(r, &[]);
    let (errors, took) = write_all(&paths, each, Duration::from_secs(900));
    stop_cli(child, &log);
    let log = log.lock().unwrap().clone();
    assert!(errors.is_empty(), "write errors {errors:?}\n{log}");
    for (i, p) in paths.iter().enumerate() {
        assert_eq!(bad_chunks(p, i as u64, each), Vec::<u64>::new(), "{p:?}");
    }
    let set = DeviceSet::open(r, recorded(r)).unwrap();
    let st = set.status().unwrap();
    let data = check_history(&set.growth_history().unwrap(), st.data_total);
    assert!(data.len() >= 3, "{data:?}\n{log}");
    assert_eq!(data[0].from, before.data_total);
    assert!(st.data_total >= 4 * each * MIB, "{st:?}");
    let dm = sh_ok(&format!("dmsetup status {}", set.pool_name()));
    let blocks: u64 = dm
        .split_whitespace()
        .nth(5)
        .unwrap()
        .split('/')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(blocks * st.data_block_size, st.data_total, "{dm}");
    let ms: Vec<f64> = data.iter().map(|g| g.micros as f64 / 1000.0).collect();
    say!(
        "autoextend data: {} MiB in {:.1} s through 4 thins, {} growths {pool} MiB -> {} MiB, growth median {:.1} ms, no write error",
        4 * each,
        took.as_secs_f64(),
        data.len(),
        st.data_total / MIB,
        median_ms(ms)
    );
    assert!(log.contains("grown from"), "{log}");
    for line in log.lines().filter(|l| l.contains("grown from")) {
        say!("  {line}");
    }
    finish(&set, r);
}

#[test]
fn snapshot_storm_grows_the_metadata() {
    let root = Root::new("ae-meta");
    let r = root.0.as_path();
    let set = Arc::new(DeviceSet::open(r, small(256 * MIB, 2 * MIB)).unwrap());
    let st = set.status().unwrap();
    let start_pct = st.metadata_used * 100 / st.metadata_total;
    let o = AutoextendOptions {
        threshold_percent: (start_pct + 4) as u32,
        extend_percent: 50,
        ..AutoextendOptions::default()
    };
    let mut m = Monitor::for_set(set.clone(), Some(o)).unwrap();
    m.set_fallback_interval(Duration::from_millis(300));
    let (stop, h) = spawn_thread(m);
    let mut v = vec![0u8; CHUNK + 4096];
    let t0 = Instant::now();
    let mut parent: Option<String> = None;
    for i in 0..40u64 {
        let id = format!("s{i}");
        set.add_device(&id, parent.as_deref())
            .unwrap_or_else(|e| panic!("snapshot {i}: {e}"));
        let path = set.activate_device(&id).unwrap();
        let f = open_direct(&path, true);
        let buf = aligned(&mut v);
        pattern(buf, i, 0);
        // Scattered writes: each touches another mapping leaf.
        for k in 0..4 {
            f.write_all_at(&buf[..64 << 10], (k * 8 + i % 8) * MIB)
                .unwrap();
        }
        drop(f);
        set.deactivate_device(&id).unwrap();
        parent = Some(id);
    }
    let storm = t0.elapsed();
    thread::sleep(Duration::from_millis(700));
    stop_thread(stop, h);
    let history = set.growth_history().unwrap();
    let meta: Vec<&Growth> = history
        .iter()
        .filter(|g| g.target == GrowthTarget::Metadata)
        .collect();
    assert!(!meta.is_empty(), "no metadata growth: {history:?}");
    let file = std::fs::metadata(r.join("devicemapper/metadata"))
        .unwrap()
        .len();
    assert_eq!(meta.last().unwrap().to, file);
    let after = set.status().unwrap();
    assert!(after.metadata_total > st.metadata_total, "{after:?}");
    say!(
        "autoextend metadata: 40 snapshots in {:.1} s, {} metadata growths 2 MiB -> {} MiB (threshold {}%)",
        storm.as_secs_f64(),
        meta.len(),
        file / MIB,
        o.threshold_percent
    );
    finish(&set, r);
}

#[test]
fn the_cap_is_respected_and_writes_then_fail_cleanly() {
    let root = Root::new("ae-cap");
    let r = root.0.as_path();
    let set = Arc::new(DeviceSet::open(r, small(64 * MIB, 8 * MIB)).unwrap());
    let paths = devices(&set, 3);
    let cap = 80 * MIB;
    let o = AutoextendOptions {
        max_data_size: Some(cap),
        ..AutoextendOptions::default()
    };
    let (stop, h) = spawn_thread(Monitor::for_set(set.clone(), Some(o)).unwrap());
    // 96 MiB into a pool capped at 80 MiB: writes must fail, none may hang.
    let (errors, took) = write_all(&paths, 32, Duration::from_secs(180));
    assert!(!errors.is_empty(), "96 MiB fit in a pool capped at 80 MiB");
    let t0 = Instant::now();
    stop_thread(stop, h);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "monitor slow to stop"
    );
    let st = set.status().unwrap();
    assert_eq!(st.data_total, cap, "{st:?}");
    assert_eq!(st.mode, "out_of_data_space", "{st:?}");
    let file = std::fs::metadata(r.join("devicemapper/data"))
        .unwrap()
        .len();
    assert_eq!(file, cap);
    say!(
        "autoextend cap: pool stopped at {} MiB, {} failed 1 MiB writes, writers done in {:.1} s",
        cap / MIB,
        errors.len(),
        took.as_secs_f64()
    );
}

const CHILD_ROOT: &str = "DMTHIN_AE_CHILD_ROOT";

/// Entry point of the crash child: a monitor whose first check grows the
/// pool at once (threshold 0) and aborts at the armed fail point.
#[test]
fn crash_child() {
    let Ok(root) = std::env::var(CHILD_ROOT) else {
        return;
    };
    let o = AutoextendOptions {
        threshold_percent: 0,
        ..AutoextendOptions::default()
    };
    let _m = Monitor::open(&root, recorded(Path::new(&root)), Some(o)).unwrap();
    std::process::exit(42);
}

#[test]
fn a_crash_mid_growth_is_repaired_by_the_next_open() {
    let me = std::env::current_exe().unwrap();
    for fp in [
        "autoextend.after_intent",
        "autoextend.after_grow_file",
        "autoextend.after_suspend",
        "autoextend.after_reload",
    ] {
        let root = Root::new(&format!("ae-crash-{}", fp.replace('.', "-")));
        let r = root.0.as_path();
        let set = DeviceSet::open(r, small(64 * MIB, 8 * MIB)).unwrap();
        let before = set.status().unwrap().data_total;
        let pool = set.pool_name().to_string();
        drop(set);
        let status = Command::new(&me)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ROOT, r)
            .env("DMTHIN_FAILPOINT", fp)
            .status()
            .unwrap();
        assert_eq!(
            status.signal(),
            Some(nix::libc::SIGABRT),
            "{fp}: {status:?}"
        );
        let info = sh_ok(&format!("dmsetup info -c --noheadings -o attr {pool}"));
        assert_eq!(
            info.contains('s'),
            fp == "autoextend.after_suspend",
            "{fp}: attr {info}"
        );
        let set = DeviceSet::open(r, recorded(r)).unwrap();
        let st = set.status().unwrap();
        let file = std::fs::metadata(r.join("devicemapper/data"))
            .unwrap()
            .len();
        let history = set.growth_history().unwrap();
        if fp == "autoextend.after_intent" {
            // The file never grew: the intent is dropped.
            assert_eq!((st.data_total, file), (before, before), "{fp}");
            assert!(history.is_empty(), "{fp}: {history:?}");
        } else {
            // Finished by the open: pool, file and log agree.
            assert_eq!(st.data_total, file, "{fp}");
            assert!(file > before, "{fp}");
            assert_eq!(history.len(), 1, "{fp}: {history:?}");
            assert_eq!((history[0].from, history[0].to), (before, file), "{fp}");
        }
        assert!(
            !sh_ok(&format!("dmsetup info -c --noheadings -o attr {pool}"))
                .trim()
                .starts_with('s')
        );
        // And the monitor grows it again.
        let grown = set
            .autoextend(&AutoextendOptions {
                threshold_percent: 0,
                ..AutoextendOptions::default()
            })
            .unwrap();
        assert_eq!(grown[0].from, st.data_total, "{fp}");
        finish(&set, r);
        say!("autoextend crash at {fp}: repaired by the next open");
    }
}

/// Watches the pool's dm events: for each low-water event (free data at
/// or below the mark), the time until the pool's data size grew.
fn observe(pool: String, done: Arc<AtomicBool>) -> thread::JoinHandle<Vec<f64>> {
    thread::spawn(move || {
        // As prompt as the monitor (nice -10), or its wake would be late.
        set_thread_nice(-10).unwrap();
        let mut ctl = Control::open().unwrap();
        let mut latencies = Vec::new();
        let mut total = pool_status(&mut ctl, &pool).total_data_blocks;
        let mut event: Option<Instant> = None;
        while !done.load(Ordering::Relaxed) {
            ctl.arm_poll().unwrap();
            let s = pool_status(&mut ctl, &pool);
            let now = Instant::now();
            if s.total_data_blocks != total {
                if let Some(t) = event.take() {
                    latencies.push((now - t).as_secs_f64() * 1000.0);
                }
                total = s.total_data_blocks;
            }
            if event.is_none()
                && s.total_data_blocks - s.used_data_blocks <= low_water(&mut ctl, &pool)
            {
                event = Some(now);
            }
            poll_readable(ctl.as_raw_fd(), Duration::from_millis(50)).unwrap();
        }
        latencies
    })
}

/// One benchmark run: 4 writers, 64 MiB each, into a 128 MiB pool with the
/// monitor woken by events or only by a 10 s timer.
fn bench_run(events: bool) -> (Vec<f64>, usize, Duration, u64, f64) {
    let root = Root::new(if events { "ae-bench-ev" } else { "ae-bench-tm" });
    let r = root.0.as_path();
    let set = DeviceSet::open(r, small(128 * MIB, 8 * MIB)).unwrap();
    let paths = devices(&set, 4);
    let pool = set.pool_name().to_string();
    drop(set);
    let mut m = Monitor::open(r, recorded(r), Some(AutoextendOptions::default())).unwrap();
    m.set_events(events);
    m.set_fallback_interval(Duration::from_secs(10));
    let (stop, h) = spawn_thread(m);
    let done = Arc::new(AtomicBool::new(false));
    let obs = observe(pool.clone(), done.clone());
    let (errors, took) = write_all(&paths, 64, Duration::from_secs(300));
    if !events {
        // Let the timer fire once after the writers, to time its reaction.
        thread::sleep(Duration::from_secs(11));
    }
    done.store(true, Ordering::Relaxed);
    let latencies = obs.join().unwrap();
    stop_thread(stop, h);
    let set = DeviceSet::open(r, recorded(r)).unwrap();
    let total = set.status().unwrap().data_total;
    let growth_ms: Vec<f64> = set
        .growth_history()
        .unwrap()
        .iter()
        .map(|g| g.micros as f64 / 1000.0)
        .collect();
    (latencies, errors.len(), took, total, median_ms(growth_ms))
}

/// With `--env DMTHIN_BENCH=1`: the event-driven monitor against a timer
/// alone at the same write rate, for the README (a measurement, so not
/// part of the test run; the event path's correctness is
/// `monitor_grows_the_pool_ahead_of_full_speed_writers`).
#[test]
fn bench_event_vs_timer() {
    if std::env::var("DMTHIN_BENCH").as_deref() != Ok("1") {
        println!("skipped: run with --env DMTHIN_BENCH=1 to compare the monitor with a timer");
        return;
    }
    let (ev, ev_err, ev_took, ev_total, ev_growth) = bench_run(true);
    let (tm, tm_err, tm_took, tm_total, _) = bench_run(false);
    let rate = |t: Duration| 256.0 / t.as_secs_f64();
    say!(
        "autoextend bench, events: {} reactions (low-water event to resized pool), median {:.1} ms, max {:.1} ms (the growth itself: median {ev_growth:.1} ms); {ev_err} failed writes; {:.1} MiB/s; pool {} MiB",
        ev.len(),
        median_ms(ev.clone()),
        ev.iter().cloned().fold(0.0, f64::max),
        rate(ev_took),
        ev_total / MIB
    );
    say!(
        "autoextend bench, 10 s timer only: {} reactions, median {:.1} ms; {tm_err} failed writes; {:.1} MiB/s; pool {} MiB",
        tm.len(),
        median_ms(tm.clone()),
        rate(tm_took),
        tm_total / MIB
    );
    assert_eq!(ev_err, 0, "event-driven growth let writes fail");
    assert!(!ev.is_empty(), "no low-water event was timed");
    assert!(
        tm_err > 0,
        "the timer-only check kept up: the write rate is too low to compare"
    );
}

/// `dmthin monitor` once on `root` with `args`: its log.
fn cli_once(root: &Path, args: &[&str]) -> String {
    let (child, log) = spawn_cli(root, args);
    stop_cli(child, &log);
    let log = log.lock().unwrap().clone();
    log
}

#[test]
fn block_device_pools_warn_then_err_and_never_grow() {
    let root = Root::new("ae-block");
    let data = LoopDevice::with_sparse_file(&root.0, "d", 64 * MIB);
    let meta = LoopDevice::with_sparse_file(&root.0, "m", 8 * MIB);
    let set_root = root.0.join("set");
    let mut o = small(64 * MIB, 8 * MIB);
    o.storage = StorageOptions::BlockDevices {
        data: data.path().into(),
        metadata: meta.path().into(),
    };
    let set = DeviceSet::open(&set_root, o).unwrap();
    let paths = devices(&set, 2);
    let pool = set.pool_name().to_string();
    drop(set);
    let log = cli_once(&set_root, &["--threshold", "1"]);
    assert!(
        log.contains("dmthin: warning: ") && log.contains("cannot be grown"),
        "{log}"
    );
    assert!(!log.contains("dmthin: error: "), "{log}");
    // Fill the pool to 95% or more (below 100%: writes still work).
    let mut ctl = Control::open().unwrap();
    let mut v = vec![0u8; CHUNK + 4096];
    'fill: for (d, p) in paths.iter().enumerate() {
        let f = open_direct(p, true);
        for i in 0..32u64 {
            let s = pool_status(&mut ctl, &pool);
            if s.used_data_blocks * 100 >= s.total_data_blocks * 96 {
                break 'fill;
            }
            let buf = aligned(&mut v);
            pattern(buf, d as u64, i);
            f.write_all_at(buf, i * CHUNK as u64).unwrap();
        }
    }
    let log = cli_once(&set_root, &["--threshold", "1"]);
    assert!(
        log.contains("dmthin: error: ") && log.contains("cannot be grown"),
        "{log}"
    );
    let set = DeviceSet::open(&set_root, recorded(&set_root)).unwrap();
    assert_eq!(set.status().unwrap().data_total, 64 * MIB);
    assert!(set.growth_history().unwrap().is_empty());
    set.shutdown().unwrap();
}

#[test]
fn no_room_on_the_host_leaves_the_pool_as_it_is() {
    let root = Root::new("ae-room");
    let set_root = root.0.join("set");
    std::fs::create_dir_all(&set_root).unwrap();
    // 72 MiB: the 8 MiB metadata file and what the pool writes leave less
    // than the 12.8 MiB a 20% growth of the 64 MiB data file needs.
    sh_ok(&format!(
        "mount -t tmpfs -o size=72M,mode=0700 tmpfs {}",
        set_root.display()
    ));
    let set = DeviceSet::open(&set_root, small(64 * MIB, 8 * MIB)).unwrap();
    let paths = devices(&set, 2);
    let (errors, _) = write_all(&paths, 26, Duration::from_secs(120));
    assert!(errors.is_empty(), "{errors:?}");
    let st = set.status().unwrap();
    assert!(st.data_used * 100 >= st.data_total * 80, "{st:?}");
    let grown = set.autoextend(&AutoextendOptions::default()).unwrap();
    assert!(grown.is_empty(), "{grown:?}");
    let file = set_root.join("devicemapper/data");
    assert_eq!(set.status().unwrap().data_total, 64 * MIB);
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 64 * MIB);
    // A growth that fits in what the host has left is made.
    let vfs = nix::sys::statvfs::statvfs(&set_root).unwrap();
    let avail = vfs.blocks_available() as u64 * vfs.fragment_size() as u64;
    let fits = (avail * 100 / (64 * MIB)).saturating_sub(1);
    assert!(fits >= 1, "the test leaves no room at all: {avail} bytes");
    let small_step = AutoextendOptions {
        extend_percent: u32::try_from(fits).unwrap(),
        ..AutoextendOptions::default()
    };
    let grown = set.autoextend(&small_step).unwrap();
    assert_eq!(grown.len(), 1, "{grown:?}");
    assert!(set.status().unwrap().data_total > 64 * MIB);
    finish(&set, &set_root);
    drop(set);
    sh(&format!("umount {}", set_root.display()));
}

#[test]
fn the_snapshotter_grows_its_pool_in_process() {
    let root = Root::new("ae-snap");
    let r = root.0.as_path();
    let set = DeviceSet::open(r, small(64 * MIB, 8 * MIB)).unwrap();
    let st = set.status().unwrap();
    // At the pool's present use: the first check grows it once.
    let o = AutoextendOptions {
        threshold_percent: (st.data_used * 100 / st.data_total) as u32,
        ..AutoextendOptions::default()
    };
    assert!(o.threshold_percent >= 1, "{st:?}");
    set.remember_autoextend_options(&o).unwrap();
    drop(set);
    let socket = r.join("snap.sock");
    let mut cmd = Command::new("dmthin-snapshotter");
    cmd.arg("--root").arg(r).arg("--socket").arg(&socket).args([
        "--autoextend",
        "--log-level",
        "info",
    ]);
    let (mut child, log, started) = spawn_logged(cmd, "serving on", Duration::from_secs(120));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("snapshotter ignored SIGTERM: {}", log.lock().unwrap());
        }
        thread::sleep(Duration::from_millis(20));
    };
    let log = log.lock().unwrap().clone();
    assert!(started, "snapshotter did not start: {log}");
    assert!(status.success(), "{status:?}: {log}");
    assert!(log.contains("pool monitor: grow by 20%"), "{log}");
    let set = DeviceSet::open(r, recorded(r)).unwrap();
    let history = set.growth_history().unwrap();
    let st = set.status().unwrap();
    let data = check_history(&history, st.data_total);
    assert_eq!(data.len(), 1, "{history:?}\n{log}");
    assert_eq!(data[0].from, 64 * MIB);
    say!(
        "autoextend in the snapshotter: pool grown 64 MiB -> {} MiB in {:.1} ms",
        st.data_total / MIB,
        data[0].micros as f64 / 1000.0
    );
    set.shutdown().unwrap();
}
