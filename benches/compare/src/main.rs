//! dmthin-compare: dmthin side by side with the tools people use today.
//!
//! Runs inside the test VM (it needs /dev/mapper/control). Subcommands:
//!
//! - `run [OPTIONS]`: sets up one thin-pool and, round after round, has every
//!   peer run every workload in a child process; then counts each peer's
//!   ioctls per operation under strace and prints markdown tables.
//! - `peer PEER WORKLOAD ITERS POOL POOL_DEV FIRST_ID SIZE ORIGIN ORIGIN_ID`:
//!   one peer's timed loop (peers: dmthin, devicemapper, dmsetup, floor; the
//!   libdevmapper peer is the C program c/libdm_peer.c with the same arguments).
//! - `scaling --root DIR [OPTIONS]`: add_device+remove_device against a
//!   growing DeviceSet, next to the seed's whole-JSON-rewrite strategy, then
//!   the peak RSS of the dmthin CLI on that set.
//! - `rss CMD [ARGS...]`: peak resident memory (VmHWM at exit) of CMD.

mod peers;
mod raw;
mod report;
mod scaling;
mod sys;

use peers::Job;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const WORKLOADS: [&str; 5] = ["cycle", "snapshot", "list", "status", "nodes"];
const PEERS: [&str; 8] = [
    "dmthin",
    "floor",
    "libdm",
    "devicemapper",
    "dmsetup",
    "dmthin-private",
    "dmthin-nosync",
    "dmthin-cookie",
];

fn usage() -> ! {
    eprintln!(
        "usage: dmthin-compare run [--rounds N] [--iters W=N,...] [--paired W=N,...] [--peers P,...] [--workloads W,...]
                          [--libdm PATH] [--strace-iters N] [--list-devices N] [--workdir DIR]
       dmthin-compare peer PEER|paired WORKLOAD ITERS POOL POOL_DEV FIRST_ID SIZE ORIGIN ORIGIN_ID
       dmthin-compare scaling --root DIR [--sizes 10,100,1000,10000] [--probes N]
                          [--budget SECS] [--cli PATH,...]
       dmthin-compare probe set|seed ROOT K   (used by scaling, under strace)
       dmthin-compare rss CMD [ARGS...]"
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("peer") => peer_main(&args[2..]),
        Some("run") => driver_main(&args[2..]),
        Some("scaling") => scaling::main(&args[2..]),
        Some("probe") if args.len() == 5 => scaling::probe_main(&args[2..]),
        Some("rss") => {
            if args.len() < 3 {
                usage();
            }
            let (kib, wall, ok) = sys::peak_rss(&args[2], &args[3..]);
            println!(
                "maxrss_kib={kib} wall_ms={:.1} ok={ok}",
                wall.as_secs_f64() * 1e3
            );
        }
        _ => usage(),
    }
}

fn peer_main(a: &[String]) {
    if a.len() != 9 {
        usage();
    }
    let job = Job::from_args(&a[1..]);
    if a[0] == "paired" {
        for (peer, mut t) in peers::run_paired(&job) {
            t.sort();
            let q = |f: f64| t[((t.len() - 1) as f64 * f).round() as usize].as_nanos();
            let mean = t.iter().map(|d| d.as_nanos()).sum::<u128>() / t.len() as u128;
            println!(
                "PAIRED peer={peer} n={} median_ns={} p10_ns={} p90_ns={} mean_ns={mean}",
                t.len(),
                q(0.5),
                q(0.1),
                q(0.9)
            );
        }
        return;
    }
    let out = match a[0].as_str() {
        "dmthin" => peers::run_dmthin(&job, peers::DmthinMode::Default),
        "dmthin-private" => peers::run_dmthin(&job, peers::DmthinMode::Private),
        "dmthin-nosync" => peers::run_dmthin(&job, peers::DmthinMode::NoSync),
        "dmthin-cookie" => peers::run_dmthin(&job, peers::DmthinMode::Cookie),
        "devicemapper" => peers::run_devmapper(&job),
        "dmsetup" => peers::run_dmsetup(&job),
        "floor" => peers::run_floor(&job, false),
        "floor-nodewait" => peers::run_floor(&job, true),
        p => panic!("unknown peer {p}"),
    };
    print!(
        "RESULT peer={} workload={} iters={} ns={}",
        a[0],
        job.workload,
        job.iters,
        out.elapsed.as_nanos()
    );
    if let Some(n) = out.ioctls {
        print!(" ioctls={n}");
    }
    if job.workload == "nodes" && a[0] != "floor" {
        use std::sync::atomic::Ordering::Relaxed;
        print!(
            " missing={} stale={}",
            peers::MISSING.load(Relaxed),
            peers::STALE.load(Relaxed)
        );
    }
    println!();
}

// ------------------------------------------------------------------ driver

struct Opts {
    rounds: u32,
    iters: BTreeMap<String, u32>,
    peers: Vec<String>,
    workloads: Vec<String>,
    libdm: PathBuf,
    strace_iters: u32,
    paired: BTreeMap<String, u32>,
    list_devices: u32,
    workdir: PathBuf,
}

fn parse_opts(a: &[String]) -> Opts {
    let exe = std::env::current_exe().expect("current_exe");
    let mut o = Opts {
        rounds: 5,
        iters: [
            ("cycle", 20),
            ("snapshot", 20),
            ("list", 200),
            ("status", 100),
            ("nodes", 10),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect(),
        peers: PEERS.iter().map(|s| s.to_string()).collect(),
        workloads: WORKLOADS.iter().map(|s| s.to_string()).collect(),
        libdm: exe.with_file_name("dmthin-compare-libdm"),
        strace_iters: 3,
        paired: [
            ("cycle", 30),
            ("snapshot", 30),
            ("list", 300),
            ("status", 300),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect(),
        list_devices: 1000,
        workdir: PathBuf::from("/tmp/dmthin-compare"),
    };
    let mut i = 0;
    while i < a.len() {
        let v = a.get(i + 1).cloned().unwrap_or_else(|| usage());
        match a[i].as_str() {
            "--rounds" => o.rounds = v.parse().expect("--rounds"),
            "--iters" => {
                for kv in v.split(',') {
                    let (k, n) = kv.split_once('=').expect("--iters W=N");
                    o.iters.insert(k.to_string(), n.parse().expect("--iters N"));
                }
            }
            "--paired" => {
                for kv in v.split(',') {
                    let (k, n) = kv.split_once('=').expect("--paired W=N");
                    o.paired
                        .insert(k.to_string(), n.parse().expect("--paired N"));
                }
            }
            "--peers" => o.peers = v.split(',').map(String::from).collect(),
            "--workloads" => o.workloads = v.split(',').map(String::from).collect(),
            "--libdm" => o.libdm = PathBuf::from(v),
            "--strace-iters" => o.strace_iters = v.parse().expect("--strace-iters"),
            "--list-devices" => o.list_devices = v.parse().expect("--list-devices"),
            "--workdir" => o.workdir = PathBuf::from(v),
            _ => usage(),
        }
        i += 2;
    }
    o
}

fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn maj_min(path: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    let rdev = std::fs::metadata(path).expect("stat").rdev();
    format!("{}:{}", libc::major(rdev), libc::minor(rdev))
}

pub fn udev_running() -> bool {
    Path::new("/run/udev/control").exists()
}

pub fn in_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// The pool, its backing loop devices, the active origin and the devices to list.
struct Bench {
    ctl: dmthin::dm::Control,
    loops: Vec<String>,
    pool: String,
    pool_dev: String,
    origin: String,
    origin_id: u32,
    size: u64,
    listed: Vec<String>,
}

const POOL: &str = "cmp-pool";
const ORIGIN: &str = "cmp-origin";

impl Bench {
    fn setup(o: &Opts) -> Bench {
        use dmthin::dm::{Control, CreateOptions, UdevFlags};
        use dmthin::target::TableLine;
        std::fs::create_dir_all(&o.workdir).expect("workdir");
        let data = o.workdir.join("data");
        let meta = o.workdir.join("metadata");
        let data_size: u64 = 4 << 30;
        for (p, size) in [(&data, data_size), (&meta, 64u64 << 20)] {
            let f = std::fs::File::create(p).expect("create backing file");
            f.set_len(size).expect("truncate");
        }
        let meta_loop = sh("losetup", &["--find", "--show", meta.to_str().unwrap()]);
        let data_loop = sh("losetup", &["--find", "--show", data.to_str().unwrap()]);
        let mut ctl = Control::open().expect("open /dev/mapper/control");
        let params = format!(
            "{} {} 128 1024 1 skip_block_zeroing",
            maj_min(&meta_loop),
            maj_min(&data_loop)
        );
        let line = TableLine::new(0, data_size / 512, "thin-pool", params).expect("pool line");
        let info = ctl
            .create_with_table(POOL, &CreateOptions::default(), &[line], UdevFlags::PRIVATE)
            .expect("create pool");
        let pool_dev = format!("{}:{}", info.dev.major, info.dev.minor);
        let size = 1u64 << 21; // 1 GiB thin devices
        let origin_id = 1;
        ctl.target_message(dmthin::dm::DevId::Name(POOL), 0, "create_thin 1")
            .expect("create_thin 1");
        let line =
            TableLine::new(0, size, "thin", format!("{pool_dev} {origin_id}")).expect("thin line");
        ctl.create_with_table(
            ORIGIN,
            &CreateOptions::default(),
            &[line],
            UdevFlags::empty(),
        )
        .expect("create origin");
        Bench {
            ctl,
            loops: vec![data_loop, meta_loop],
            pool: POOL.into(),
            pool_dev,
            origin: ORIGIN.into(),
            origin_id,
            size,
            listed: Vec::new(),
        }
    }

    /// Devices for the list workload: created without a table (DEV_CREATE
    /// only), which the kernel lists exactly like any other device but which
    /// has no gendisk yet, so no uevent, no udev work and no node.
    fn add_listed(&mut self, n: u32) {
        let mut raw = raw::Raw::open().expect("control");
        let t0 = Instant::now();
        for k in 0..n {
            let name = format!("cmp-list-{k:05}");
            raw.must(&mut raw::Req::create(&name), "create listed device");
            self.listed.push(name);
        }
        eprintln!(
            "dmthin-compare: created {n} listed devices in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
    }

    fn remove_listed(&mut self) {
        let mut raw = raw::Raw::open().expect("control");
        for name in self.listed.drain(..) {
            let _ = raw.issue(&mut raw::Req::remove(&name));
        }
    }

    fn job(&self, workload: &str, iters: u32, first: u32) -> Job {
        Job {
            workload: workload.into(),
            iters,
            pool: self.pool.clone(),
            pool_dev: self.pool_dev.clone(),
            first,
            size: self.size,
            origin: self.origin.clone(),
            origin_id: self.origin_id,
        }
    }

    /// Puts the pool back as it was after a peer run (ids first..=first+iters,
    /// the last one the warm-up's).
    fn clean_after(&mut self, job: &Job, failed: bool) {
        self.clean_ids(job, job.first..=job.first + job.iters, failed)
    }

    fn clean_ids(&mut self, job: &Job, ids: std::ops::RangeInclusive<u32>, failed: bool) {
        use dmthin::dm::{DevId, RemoveOptions};
        if job.workload == "snapshot" || failed {
            if failed {
                // A failed run may have left the origin suspended.
                let _ = self.ctl.resume(DevId::Name(ORIGIN), Default::default());
            }
            for id in ids {
                if failed {
                    let name = format!("cmp-{id}");
                    let _ = self
                        .ctl
                        .remove(DevId::Name(&name), &RemoveOptions::default());
                }
                let _ = self
                    .ctl
                    .target_message(DevId::Name(POOL), 0, &format!("delete {id}"));
            }
        }
    }

    fn teardown(&mut self) {
        use dmthin::dm::{DevId, RemoveOptions};
        self.remove_listed();
        let _ = self
            .ctl
            .remove(DevId::Name(ORIGIN), &RemoveOptions::default());
        let _ = self
            .ctl
            .remove(DevId::Name(POOL), &RemoveOptions::default());
        for l in &self.loops {
            let _ = Command::new("losetup").args(["-d", l]).status();
        }
    }
}

fn peer_command(o: &Opts, peer: &str, job: &Job) -> (String, Vec<String>) {
    if peer == "libdm" {
        (o.libdm.to_string_lossy().into_owned(), job.to_args())
    } else {
        let exe = std::env::current_exe().expect("current_exe");
        let mut a = vec!["peer".to_string(), peer.to_string()];
        a.extend(job.to_args());
        (exe.to_string_lossy().into_owned(), a)
    }
}

struct RunResult {
    ns: u128,
    ioctls: Option<u64>,
    /// "nodes" workload: /dev/mapper/<name> missing after activation, still there after removal.
    nodes: Option<(u64, u64)>,
}

fn parse_result(stdout: &str) -> Option<RunResult> {
    let line = stdout.lines().find(|l| l.starts_with("RESULT "))?;
    let mut ns = None;
    let mut ioctls = None;
    let (mut missing, mut stale) = (None, None);
    for kv in line.split_whitespace() {
        if let Some(v) = kv.strip_prefix("ns=") {
            ns = v.parse().ok();
        } else if let Some(v) = kv.strip_prefix("ioctls=") {
            ioctls = v.parse().ok();
        } else if let Some(v) = kv.strip_prefix("missing=") {
            missing = v.parse().ok();
        } else if let Some(v) = kv.strip_prefix("stale=") {
            stale = v.parse().ok();
        }
    }
    let nodes = missing.zip(stale);
    Some(RunResult {
        ns: ns?,
        ioctls,
        nodes,
    })
}

fn run_peer(
    o: &Opts,
    peer: &str,
    job: &Job,
    strace_out: Option<&Path>,
) -> Result<RunResult, String> {
    let (cmd, args) = peer_command(o, peer, job);
    let mut c = match strace_out {
        Some(f) => {
            let mut c = Command::new("strace");
            c.args(["-f", "-qq", "-o"]).arg(f).arg(&cmd).args(&args);
            c
        }
        None => {
            let mut c = Command::new(&cmd);
            c.args(&args);
            c
        }
    };
    let out = c
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("spawn {cmd}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{peer} {} failed ({}): {}",
            job.workload,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    parse_result(&stdout).ok_or_else(|| format!("{peer}: no RESULT line in {stdout:?}"))
}

/// Device-mapper ioctls and all system calls between the two getppid()
/// markers of an strace -f log (children included).
fn count_dm_ioctls(log: &str) -> Option<(u64, u64)> {
    let lines: Vec<&str> = log.lines().collect();
    let marks: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("getppid()"))
        .map(|(i, _)| i)
        .collect();
    if marks.len() < 2 {
        return None;
    }
    let (a, b) = (marks[0], marks[marks.len() - 1]);
    let calls: Vec<&str> = lines[a + 1..b]
        .iter()
        .map(|l| {
            l.trim_start_matches(|c: char| c.is_ascii_digit())
                .trim_start()
        })
        .filter(|l| !l.starts_with("<...") && !l.starts_with("+++") && !l.starts_with("---"))
        .collect();
    let dm = calls
        .iter()
        .filter(|l| l.starts_with("ioctl(") && (l.contains("DM_") || l.contains("0xc138fd")))
        .count() as u64;
    Some((dm, calls.len() as u64))
}

#[derive(Default)]
struct Cell {
    nodes: Option<(u64, u64, u64)>,
    ms_per_op: Vec<f64>,
    ioctls_code: Option<f64>,
    ioctls_strace: Option<f64>,
    syscalls_strace: Option<f64>,
    errors: Vec<String>,
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

/// dmsetup costs a process per step: a quarter of the iterations (at least
/// 5) for the cheap workloads keeps a run bounded.
fn peer_iters(peer: &str, workload: &str, iters: u32) -> u32 {
    if peer == "dmsetup" && matches!(workload, "list" | "status") {
        (iters / 4).max(5).min(iters)
    } else {
        iters
    }
}

fn driver_main(a: &[String]) {
    let o = parse_opts(a);
    let udev = udev_running();
    if o.peers.iter().any(|p| p == "libdm") && !o.libdm.is_file() {
        panic!(
            "libdevmapper peer not found at {} (use --libdm)",
            o.libdm.display()
        );
    }
    let kernel = sh("uname", &["-r"]);
    let t_start = Instant::now();
    let mut b = Bench::setup(&o);
    let dm_version = b.ctl.version();
    eprintln!(
        "dmthin-compare: pool {} ({}) ready; udev {}",
        b.pool,
        b.pool_dev,
        if udev { "running" } else { "not running" }
    );
    let mut cells: BTreeMap<(String, String), Cell> = BTreeMap::new();
    let mut next_id: u32 = 1000;
    let needs_list = o.workloads.iter().any(|w| w == "list");
    if needs_list {
        b.add_listed(o.list_devices);
    }
    for round in 0..o.rounds {
        for w in &o.workloads {
            let iters = o.iters[w.as_str()];
            // Rotate the order each round, so no peer always runs first.
            let n = o.peers.len();
            for k in 0..n {
                let p = &o.peers[(k + round as usize) % n];
                let iters = peer_iters(p, w, iters);
                let job = b.job(w, iters, next_id);
                next_id += iters + 1;
                let r = run_peer(&o, p, &job, None);
                let cell = cells.entry((w.clone(), p.clone())).or_default();
                match r {
                    Ok(r) => {
                        let ms = r.ns as f64 / 1e6 / iters as f64;
                        eprintln!(
                            "dmthin-compare: round {} {w:<8} {p:<12} {ms:9.3} ms/op",
                            round + 1
                        );
                        cell.ms_per_op.push(ms);
                        if let Some(n) = r.ioctls {
                            cell.ioctls_code = Some(n as f64 / iters as f64);
                        }
                        if let Some((m, st)) = r.nodes {
                            let (a, b, c) = cell.nodes.unwrap_or((0, 0, 0));
                            // the counters include the warm-up operation
                            cell.nodes = Some((a + u64::from(iters) + 1, b + m, c + st));
                        }
                        b.clean_after(&job, false);
                    }
                    Err(e) => {
                        eprintln!("dmthin-compare: {e}");
                        cell.errors.push(e);
                        b.clean_after(&job, true);
                    }
                }
            }
        }
    }
    // Paired: dmthin, floor and the devicemapper crate in one process, their
    // operations alternated, so host load hits them alike.
    let mut paired: BTreeMap<String, Vec<report::PairedRow>> = BTreeMap::new();
    for w in &o.workloads {
        let n = o.paired.get(w.as_str()).copied().unwrap_or(0);
        // With udev running the floor does not wait for its uevents, and in one
        // process their processing would be charged to the next peer's op.
        if n == 0 || (udev && matches!(w.as_str(), "cycle" | "snapshot" | "nodes")) {
            continue;
        }
        let job = b.job(w, n, next_id);
        let ids = next_id..=next_id + 3 * n + 2;
        next_id += 3 * n + 3;
        let exe = std::env::current_exe().expect("current_exe");
        let out = Command::new(exe)
            .arg("peer")
            .arg("paired")
            .args(job.to_args())
            .stdin(Stdio::null())
            .output()
            .expect("spawn paired");
        b.clean_ids(&job, ids, !out.status.success());
        if !out.status.success() {
            let e = format!(
                "paired {w} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            eprintln!("dmthin-compare: {e}");
            cells
                .entry((w.clone(), "dmthin".into()))
                .or_default()
                .errors
                .push(e);
            continue;
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(rest) = line.strip_prefix("PAIRED ") else {
                continue;
            };
            let kv: BTreeMap<&str, &str> = rest
                .split_whitespace()
                .filter_map(|x| x.split_once('='))
                .collect();
            let ms = |k: &str| {
                kv.get(k)
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(f64::NAN)
                    / 1e6
            };
            let peer = kv.get("peer").copied().unwrap_or("?").to_string();
            eprintln!(
                "dmthin-compare: paired {w:<8} {peer:<12} median {:9.3} ms/op",
                ms("median_ns")
            );
            paired.entry(w.clone()).or_default().push((
                peer,
                ms("median_ns"),
                ms("p10_ns"),
                ms("p90_ns"),
            ));
        }
    }

    let have_strace = o.strace_iters > 0 && in_path("strace");
    if have_strace {
        let log = o.workdir.join("strace.log");
        for w in o.workloads.iter().filter(|w| *w != "nodes") {
            for p in &o.peers {
                let job = b.job(w, o.strace_iters, next_id);
                next_id += o.strace_iters + 1;
                let _ = std::fs::remove_file(&log);
                let r = run_peer(&o, p, &job, Some(&log));
                b.clean_after(&job, r.is_err());
                let count = std::fs::read_to_string(&log)
                    .ok()
                    .and_then(|s| count_dm_ioctls(&s));
                let cell = cells.entry((w.clone(), p.clone())).or_default();
                match (r, count) {
                    (Ok(_), Some((dm, all))) => {
                        cell.ioctls_strace = Some(dm as f64 / o.strace_iters as f64);
                        cell.syscalls_strace = Some(all as f64 / o.strace_iters as f64);
                    }
                    (Err(e), _) => cell.errors.push(format!("under strace: {e}")),
                    (Ok(_), None) => cell.errors.push("strace log without markers".into()),
                }
            }
        }
    }
    b.teardown();
    let total = t_start.elapsed();

    // ------------------------------------------------------------ report
    println!(
        "=== BEGIN dmthin-compare run (udev {}) ===",
        if udev { "running" } else { "not running" }
    );
    println!();
    println!(
        "Kernel {kernel}, device-mapper ioctl interface {}.{}.{}; udev {}; {} rounds, peers interleaved \
         within each round; peer order rotated each round; each run does one untimed warm-up operation; figure = median over rounds of (loop wall time / iterations); {:.0} s in all.",
        dm_version.major,
        dm_version.minor,
        dm_version.patch,
        if udev { "running (systemd-udevd)" } else { "not running" },
        o.rounds,
        total.as_secs_f64()
    );
    println!();
    for w in &o.workloads {
        let iters = o.iters[w.as_str()];
        let title = match w.as_str() {
            "cycle" => "create_thin + activate + deactivate + delete",
            "snapshot" => "snapshot of an active origin (suspend + create_snap + resume)",
            "list" => "list devices",
            "status" => "thin-pool status (TABLE_STATUS, no noflush)",
            "nodes" => {
                "the cycle again, checking /dev/mapper/<name> after activate and after deactivate"
            }
            _ => w,
        };
        let list_note = if w == "list" {
            format!(" ({} devices present)", o.list_devices + 2)
        } else {
            String::new()
        };
        let fewer = if peer_iters("dmsetup", w, iters) != iters {
            format!(" ({} for dmsetup)", peer_iters("dmsetup", w, iters))
        } else {
            String::new()
        };
        println!("#### {w}: {title}{list_note}, {iters} ops per run{fewer}");
        println!();
        println!("| peer | ms/op | ops/s | time vs dmthin | time vs floor | range ms/op | dm ioctls/op (strace) | dm ioctls/op (counted in code) | all syscalls/op (strace) |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        let base = cells
            .get(&(w.clone(), "dmthin".into()))
            .and_then(|c| median(&c.ms_per_op));
        let floor = cells
            .get(&(w.clone(), "floor".into()))
            .and_then(|c| median(&c.ms_per_op));
        for p in &o.peers {
            let c = match cells.get(&(w.clone(), p.clone())) {
                Some(c) => c,
                None => continue,
            };
            let fmt_opt =
                |v: Option<f64>, d: usize| v.map_or("-".to_string(), |v| format!("{v:.d$}"));
            let m = median(&c.ms_per_op);
            let range = if c.ms_per_op.is_empty() {
                "-".into()
            } else {
                let lo = c.ms_per_op.iter().cloned().fold(f64::INFINITY, f64::min);
                let hi = c.ms_per_op.iter().cloned().fold(0.0, f64::max);
                format!("{lo:.2}–{hi:.2}")
            };
            let ratio = |r: Option<f64>| match (m, r) {
                (Some(m), Some(r)) if r > 0.0 => format!("{:.2}x", m / r),
                _ => "-".into(),
            };
            let name = match p.as_str() {
                "dmthin" => "dmthin (library; beside udev NodeMode::UdevWatch: udevd's monitor, no cookie)",
                "dmthin-cookie" => "dmthin, NodeMode::Udev (libdm's cookies, the former default)",
                "dmthin-private" => "dmthin, UdevFlags::PRIVATE (no blkid/disk rules)",
                "dmthin-nosync" => "dmthin, NodeMode::Bypass (no udev sync: rules skip the device, dmthin makes the node)",
                "floor-nodewait" => "floor + poll for /dev/mapper/<name> (no cookie)",
                "floor" => "floor (raw ioctls, buffers prepared)",
                "libdm" => "libdevmapper in-process (C)",
                "devicemapper" => "devicemapper crate 0.34",
                "dmsetup" => "dmsetup per step",
                p => p,
            };
            let mut err = String::new();
            if !c.errors.is_empty() {
                err = format!(" ⚠ {} failed run(s)", c.errors.len());
            }
            println!(
                "| {name}{err} | {} | {} | {} | {} | {range} | {} | {} | {} |",
                fmt_opt(m, 2),
                fmt_opt(m.map(|m| 1000.0 / m), 1),
                ratio(base),
                ratio(floor),
                fmt_opt(c.ioctls_strace, 1),
                fmt_opt(c.ioctls_code, 1),
                fmt_opt(c.syscalls_strace, 1),
            );
        }
        println!();
    }
    let node_rows: Vec<(&String, (u64, u64, u64))> = o
        .peers
        .iter()
        .filter_map(|p| {
            cells
                .get(&("nodes".to_string(), p.clone()))
                .and_then(|c| c.nodes)
                .map(|n| (p, n))
        })
        .collect();
    if !node_rows.is_empty() {
        println!("#### Nodes: /dev/mapper/<name> when the call returns (cycle, all rounds)");
        println!();
        println!("| peer | activations | missing right after activate | still there right after deactivate |");
        println!("|---|---:|---:|---:|");
        for (p, (n, m, st)) in node_rows {
            println!("| {p} | {n} | {m} | {st} |");
        }
        println!();
    }
    report::print_paired(&paired, &o.paired);
    if !have_strace {
        println!("(strace not available in the guest: ioctl counts come from the code only)");
        println!();
    }
    report::print_errors(cells.values().flat_map(|c| c.errors.iter()));
    println!("=== END dmthin-compare run ===");
}
