//! Scaling: the cost of add_device + remove_device as a DeviceSet grows,
//! next to the seed's strategy (the whole set's JSON rewritten and fsynced on
//! every change), on the same pool and the same filesystem. Then the peak
//! resident memory of the dmthin CLI against that set.

use dmthin::deviceset::{DeviceSet, Options, StorageOptions};
use dmthin::dm::{Control, DevId, SuspendOptions, UdevFlags};
use dmthin::internals::DeviceRecord;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// First thin id of directly populated devices: add_device takes the lowest
/// free id, so the probes use ids below this and never collide.
const DIRECT_THIN_BASE: u32 = 1000;

struct Opts {
    root: PathBuf,
    sizes: Vec<u32>,
    probes: u32,
    budget: Duration,
    clis: Vec<String>,
    /// Populate with pool messages and record files written directly
    /// (`--populate direct`) instead of `add_device` (`api`, the default).
    direct: bool,
}

fn parse(a: &[String]) -> Opts {
    let mut o = Opts {
        root: PathBuf::new(),
        sizes: vec![10, 100, 1000, 10000],
        probes: 10,
        budget: Duration::from_secs(1800),
        clis: Vec::new(),
        direct: false,
    };
    let mut i = 0;
    while i < a.len() {
        let v = a.get(i + 1).cloned().unwrap_or_default();
        match a[i].as_str() {
            "--root" => o.root = PathBuf::from(v),
            "--sizes" => o.sizes = v.split(',').map(|s| s.parse().expect("--sizes")).collect(),
            "--probes" => o.probes = v.parse().expect("--probes"),
            "--budget" => o.budget = Duration::from_secs(v.parse().expect("--budget")),
            "--cli" => {
                o.clis = v
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            }
            "--populate" => {
                o.direct = match v.as_str() {
                    "direct" => true,
                    "api" => false,
                    x => panic!("scaling: --populate api|direct, not {x}"),
                }
            }
            x => panic!("scaling: unknown option {x}"),
        }
        i += 2;
    }
    assert!(!o.root.as_os_str().is_empty(), "scaling needs --root DIR");
    o
}

/// One device record as the seed kept it (the fields Docker's driver wrote).
#[derive(Serialize)]
struct SeedRecord {
    hash: String,
    device_id: u32,
    size: u64,
    transaction_id: u64,
    initialized: bool,
    deleted: bool,
}

#[derive(Serialize)]
struct SeedFile<'a> {
    next_device_id: u32,
    base_device_uuid: &'a str,
    base_device_filesystem: &'a str,
    devices: &'a BTreeMap<String, SeedRecord>,
}

/// The seed's persistence: every change rewrites the whole set as one JSON
/// file (write a temp file, fsync it, rename it over the old one).
struct SeedSet {
    path: PathBuf,
    devices: BTreeMap<String, SeedRecord>,
    next_id: u32,
    bytes: usize,
}

impl SeedSet {
    fn save(&mut self) {
        let file = SeedFile {
            next_device_id: self.next_id,
            base_device_uuid: "5f0c2a3e-8d1b-4c7e-9a2f-0b1c2d3e4f50",
            base_device_filesystem: "ext4",
            devices: &self.devices,
        };
        let json = serde_json::to_vec(&file).expect("json");
        self.bytes = json.len();
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).expect("seed tmp");
        f.write_all(&json).expect("seed write");
        f.sync_all().expect("seed fsync");
        drop(f);
        std::fs::rename(&tmp, &self.path).expect("seed rename");
    }

    fn record(&self, id: u32) -> SeedRecord {
        SeedRecord {
            hash: format!("{:064x}", u64::from(id).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            device_id: id,
            size: 64 << 20,
            transaction_id: u64::from(id),
            initialized: true,
            deleted: false,
        }
    }
}

/// The seed strategies: `Faithful` moves the pool's transaction id after
/// each JSON save, as the seed's saveMetadata does; `NoTxn` is the same
/// without those messages (this bench's seed before issue #19).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seed {
    Faithful,
    NoTxn,
}

/// The pool's transaction id now (outside the timed part: the seed keeps it
/// in memory, but dmthin's folds move it between the interleaved probes).
fn pool_txn(ctl: &mut Control, pool: &str) -> u64 {
    let (_, lines) = ctl
        .table_status(DevId::Name(pool), &dmthin::dm::StatusOptions::default())
        .expect("pool status");
    let params = lines
        .first()
        .expect("pool status line")
        .params()
        .to_string();
    params
        .split_whitespace()
        .next()
        .and_then(|t| t.parse().ok())
        .expect("pool transaction id")
}

/// Moves the pool's transaction id back to `orig` after a faithful seed
/// probe (outside the timing): the seed's pool would be its own, this one is
/// shared with the set, which refuses a pool moved behind its back.
fn restore_txn(ctl: &mut Control, pool: &str, txn: u64, orig: u64) {
    if txn != orig {
        ctl.send_message(
            DevId::Name(pool),
            0,
            &format!("set_transaction_id {txn} {orig}"),
        )
        .expect("restore the pool's transaction id");
    }
}

/// One seed add_device + remove_device: the same pool messages as the set
/// (create_snap of the base, later delete), each followed by a full rewrite
/// and, for the faithful seed, a set_transaction_id from `txn`.
#[allow(clippy::too_many_arguments)]
fn seed_probe(
    ctl: &mut Control,
    seed: &mut SeedSet,
    pool: &str,
    base: &str,
    base_id: u32,
    id: u32,
    kind: Seed,
    txn: &mut u64,
) {
    snapshot_base(ctl, pool, base, base_id, id);
    let mut set_txn = |ctl: &mut Control| {
        if kind == Seed::Faithful {
            ctl.send_message(
                DevId::Name(pool),
                0,
                &format!("set_transaction_id {} {}", *txn, *txn + 1),
            )
            .expect("seed set_transaction_id");
            *txn += 1;
        }
    };
    let rec = seed.record(id);
    seed.devices.insert(rec.hash.clone(), rec);
    seed.next_id = id + 1;
    seed.save();
    set_txn(ctl);
    ctl.send_message(DevId::Name(pool), 0, &format!("delete {id}"))
        .expect("seed delete");
    let hash = seed.record(id).hash;
    seed.devices.remove(&hash);
    seed.save();
    set_txn(ctl);
}

/// create_snap of the base as thin `id`, the base suspended around it when
/// active (as add_device does).
fn snapshot_base(ctl: &mut Control, pool: &str, base: &str, base_id: u32, id: u32) {
    let base_active = ctl
        .info(DevId::Name(base))
        .map(|i| i.active_table() && !i.suspended())
        .unwrap_or(false);
    if base_active {
        ctl.suspend(DevId::Name(base), &SuspendOptions::default())
            .expect("suspend base");
    }
    ctl.send_message(DevId::Name(pool), 0, &format!("create_snap {id} {base_id}"))
        .expect("create_snap");
    if base_active {
        ctl.resume(DevId::Name(base), UdevFlags::empty())
            .expect("resume base");
    }
}

/// The floor: what the kernel must persist for an add+remove, the two pool
/// messages (each one metadata commit) and nothing else.
fn floor_probe(ctl: &mut Control, pool: &str, base: &str, base_id: u32, id: u32) {
    snapshot_base(ctl, pool, base, base_id, id);
    ctl.send_message(DevId::Name(pool), 0, &format!("delete {id}"))
        .expect("floor delete");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `probe set|seed|seed-notxn|floor ROOT K`: K add+remove pairs against the
/// set at ROOT/set (or a peer strategy on its pool, the seeds with as many
/// records), between two getppid() markers, for strace to count the system
/// calls of one operation.
pub fn probe_main(a: &[String]) {
    let (kind, root, k) = (
        a[0].as_str(),
        PathBuf::from(&a[1]),
        a[2].parse::<u32>().expect("K"),
    );
    let set_root = root.join("set");
    let opts = DeviceSet::recorded_options(&set_root)
        .ok()
        .flatten()
        .unwrap_or_default();
    let set = DeviceSet::open(&set_root, opts).expect("open set");
    let marker = crate::sys::strace_marker;
    let pool = set.pool_name().to_string();
    let base = set.base_name().to_string();
    let base_id = set.status().expect("status").base_thin_id;
    let mut ctl = Control::open().expect("control");
    match kind {
        "set" => {
            marker();
            for j in 0..k {
                let id = format!("sprobe{j}");
                set.add_device(&id, None).expect("add_device");
                set.remove_device(&id).expect("remove_device");
            }
            marker();
        }
        "floor" => {
            marker();
            for j in 0..k {
                floor_probe(&mut ctl, &pool, &base, base_id, 16_600_000 + j);
            }
            marker();
        }
        _ => {
            let variant = if kind == "seed" {
                Seed::Faithful
            } else {
                Seed::NoTxn
            };
            let n = set.status().expect("status").devices as u32;
            let mut seed = SeedSet {
                path: root.join("seed").join("devicemapper.json"),
                devices: BTreeMap::new(),
                next_id: 0,
                bytes: 0,
            };
            for i in 0..n {
                let rec = seed.record(1_000_000 + i);
                seed.devices.insert(rec.hash.clone(), rec);
            }
            seed.save();
            let orig = pool_txn(&mut ctl, &pool);
            let mut txn = orig;
            marker();
            for j in 0..k {
                let id = 16_500_000 + j;
                seed_probe(
                    &mut ctl, &mut seed, &pool, &base, base_id, id, variant, &mut txn,
                );
            }
            marker();
            restore_txn(&mut ctl, &pool, txn, orig);
        }
    }
}

/// System calls by name between the first and last getppid() of an strace -f
/// log; ioctls split into device-mapper ones and the rest.
fn count_syscalls(log: &str) -> BTreeMap<String, u64> {
    let lines: Vec<&str> = log.lines().collect();
    let marks: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains("getppid()"))
        .collect();
    let mut out = BTreeMap::new();
    if marks.len() < 2 {
        return out;
    }
    for l in &lines[marks[0] + 1..marks[marks.len() - 1]] {
        let l = l
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start();
        if l.starts_with("<...") || l.starts_with("+++") || l.starts_with("---") {
            continue;
        }
        let Some(name) = l.split('(').next() else {
            continue;
        };
        let mut name = name.to_string();
        if name == "ioctl" {
            name = if l.contains("DM_") || l.contains("0xc138fd") {
                "ioctl (dm)".into()
            } else {
                "ioctl (other)".into()
            };
            if l.contains("DM_TARGET_MSG") || l.contains("0xc138fd0e") {
                // Each pool message is one metadata commit; named by its
                // first word when strace shows the text.
                let what = l
                    .split("message=\"")
                    .nth(1)
                    .and_then(|m| m.split([' ', '"']).next())
                    .unwrap_or("(text not shown)");
                *out.entry(format!("pool commit: {what}")).or_insert(0) += 1;
            }
        }
        *out.entry(name).or_insert(0) += 1;
    }
    out
}

fn strace_probe(kind: &str, root: &Path, k: u32) -> Option<BTreeMap<String, u64>> {
    let exe = std::env::current_exe().ok()?;
    let log = root.join(format!("strace-{kind}.log"));
    let st = std::process::Command::new("strace")
        .args(["-f", "-qq", "-e"])
        .arg("trace=ioctl,fsync,fdatasync,sync_file_range,rename,renameat,renameat2,openat,write,pwrite64,unlink,unlinkat,mkdir,semget,semop,semtimedop,getppid")
        .arg("-o")
        .arg(&log)
        .arg(exe)
        .args(["probe", kind])
        .arg(root)
        .arg(k.to_string())
        .stdin(std::process::Stdio::null())
        .status()
        .ok()?;
    if !st.success() {
        eprintln!("dmthin-compare scaling: strace probe {kind} failed: {st}");
        return None;
    }
    let text = std::fs::read_to_string(&log).ok()?;
    let _ = std::fs::remove_file(&log);
    Some(count_syscalls(&text))
}

pub fn main(a: &[String]) {
    let o = parse(a);
    let t_all = Instant::now();
    let set_root = o.root.join("set");
    let seed_dir = o.root.join("seed");
    std::fs::create_dir_all(&seed_dir).expect("seed dir");
    let opts = Options {
        storage: StorageOptions::LoopFiles {
            data_size: 8 << 30,
            metadata_size: 1 << 30,
        },
        base_size: 64 << 20,
        // The protocol is what is measured here: no discard before each
        // delete (on by default for loop-file pools; benches/space.sh
        // measures what it costs).
        remove_discard: Some(false),
        ..Default::default()
    };
    let t0 = Instant::now();
    let mut set = Some(DeviceSet::open(&set_root, opts).expect("DeviceSet::open"));
    let open_new = t0.elapsed();
    let status = set.as_ref().unwrap().status().expect("status");
    let pool = set.as_ref().unwrap().pool_name().to_string();
    let base = set.as_ref().unwrap().base_name().to_string();
    let base_id = status.base_thin_id;
    let base_size = status.base_size;
    eprintln!(
        "dmthin-compare scaling: set opened in {:.1} s (pool {pool}, base thin id {base_id})",
        open_new.as_secs_f64()
    );
    let mut ctl = Control::open().expect("control");
    let mut seed = SeedSet {
        path: seed_dir.join("devicemapper.json"),
        devices: BTreeMap::new(),
        next_id: 0,
        bytes: 0,
    };

    struct Row {
        size: u32,
        populate: Duration,
        populated: u32,
        dmthin: Duration,
        seed: Duration,
        seed_notxn: Duration,
        floor: Duration,
        seed_bytes: usize,
        /// DeviceSet::open after a crash left an add's intent unresolved
        /// (the pool's thin ids read), then a plain reopen.
        crash_open: Duration,
        reopen: Duration,
        probes: u32,
        /// DeviceSet::open right after populating (direct populate only).
        open: Option<Duration>,
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut count: u32 = 0;
    let mut skipped: Vec<u32> = Vec::new();
    let mut populate_total = Duration::ZERO;
    for &size in &o.sizes {
        // Grow the set to `size` devices (add_device = create_snap only).
        if size > count {
            let per_add = if count > 0 {
                populate_total.as_secs_f64() / f64::from(count)
            } else {
                0.0
            };
            let eta = per_add * f64::from(size - count);
            if t_all.elapsed().as_secs_f64() + eta > o.budget.as_secs_f64() {
                eprintln!(
                    "dmthin-compare scaling: skipping {size}: populating would take ~{eta:.0} s more \
                     (budget {} s)",
                    o.budget.as_secs()
                );
                skipped.push(size);
                continue;
            }
        }
        let t0 = Instant::now();
        let from = count;
        let mut open = None;
        if o.direct && count < size {
            // The same state add_device leaves (a snapshot of the base in the
            // pool, one record file), made without the per-add fsyncs and
            // status calls. The set is closed meanwhile so that it reloads.
            drop(set.take());
            let devices = set_root.join("metadata").join("devices");
            while count < size {
                let thin = DIRECT_THIN_BASE + count;
                ctl.send_message(
                    DevId::Name(&pool),
                    0,
                    &format!("create_snap {thin} {base_id}"),
                )
                .unwrap_or_else(|e| panic!("populate create_snap {thin}: {e}"));
                let rec = DeviceRecord::new(format!("d{count:05}"), None, thin, base_size);
                std::fs::write(
                    devices.join(format!("{}.json", rec.id)),
                    serde_json::to_vec_pretty(&rec).expect("record json"),
                )
                .expect("write record");
                count += 1;
                if count.is_multiple_of(2000) {
                    eprintln!(
                        "dmthin-compare scaling: {count} devices after {:.0} s",
                        t_all.elapsed().as_secs_f64()
                    );
                }
            }
            let t = Instant::now();
            let opts = DeviceSet::recorded_options(&set_root)
                .ok()
                .flatten()
                .unwrap_or_default();
            set = Some(DeviceSet::open(&set_root, opts).expect("reopen after populating"));
            open = Some(t.elapsed());
        }
        let set_ref = set.as_ref().expect("set is open");
        while count < size {
            set_ref
                .add_device(&format!("d{count:05}"), None)
                .unwrap_or_else(|e| panic!("add_device d{count:05}: {e}"));
            count += 1;
            if count.is_multiple_of(500) {
                eprintln!(
                    "dmthin-compare scaling: {count} devices after {:.0} s",
                    t_all.elapsed().as_secs_f64()
                );
            }
        }
        let populate = t0.elapsed();
        populate_total += populate;
        // Let writeback of the populate finish before probing, so that it
        // does not land on whichever strategy happens to run next.
        crate::sys::sync();
        std::thread::sleep(Duration::from_millis(500));
        // The seed's set holds the same number of records.
        while (seed.devices.len() as u32) < size {
            let id = 1_000_000 + seed.devices.len() as u32;
            let rec = seed.record(id);
            seed.devices.insert(rec.hash.clone(), rec);
        }
        seed.save();
        let probes = o.probes.max(1);
        let mut d_dm = Duration::ZERO;
        let mut d_seed = Duration::ZERO;
        let mut d_notxn = Duration::ZERO;
        let mut d_floor = Duration::ZERO;
        for j in 0..probes {
            // Interleaved, so that all see the same machine load.
            let id = format!("probe{j}");
            let t = Instant::now();
            set_ref.add_device(&id, None).expect("probe add_device");
            set_ref.remove_device(&id).expect("probe remove_device");
            d_dm += t.elapsed();
            for (kind, d) in [(Seed::Faithful, &mut d_seed), (Seed::NoTxn, &mut d_notxn)] {
                let orig = pool_txn(&mut ctl, &pool);
                let mut txn = orig;
                let t = Instant::now();
                let thin = 16_000_000 + j;
                seed_probe(
                    &mut ctl, &mut seed, &pool, &base, base_id, thin, kind, &mut txn,
                );
                *d += t.elapsed();
                restore_txn(&mut ctl, &pool, txn, orig);
            }
            let t = Instant::now();
            floor_probe(&mut ctl, &pool, &base, base_id, 16_100_000 + j);
            d_floor += t.elapsed();
        }
        let per = |d: Duration| ms(d) / f64::from(probes);
        eprintln!(
            "dmthin-compare scaling: {size:>6} devices: dmthin {:.2} ms, seed {:.2} ms, \
             seed without transaction ids {:.2} ms, floor {:.2} ms per add+remove",
            per(d_dm),
            per(d_seed),
            per(d_notxn),
            per(d_floor)
        );
        // The hidden cost: an open after a crash that left an add's intent
        // without its outcome (the journal line written by hand, for a thin
        // that does not exist), which reads the pool's thin ids.
        drop(set.take());
        {
            let store = dmthin::internals::MetadataStore::open(&set_root, 64).expect("store");
            let (mut journal, _) = store.open_journal().expect("journal");
            let rec = DeviceRecord::new("crashprobe", None, 16_200_000 + size, base_size);
            journal.intend_create(&rec).expect("intent");
        }
        let reopen_opts = || {
            DeviceSet::recorded_options(&set_root)
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        let t = Instant::now();
        let s2 = DeviceSet::open(&set_root, reopen_opts()).expect("open after a crash");
        let crash_open = t.elapsed();
        assert!(
            !s2.has_device("crashprobe"),
            "a create whose thin is missing is dropped"
        );
        drop(s2);
        let t = Instant::now();
        set = Some(DeviceSet::open(&set_root, reopen_opts()).expect("reopen"));
        let reopen = t.elapsed();
        rows.push(Row {
            size,
            populate,
            populated: size - from,
            dmthin: d_dm,
            seed: d_seed,
            seed_notxn: d_notxn,
            floor: d_floor,
            seed_bytes: seed.bytes,
            probes,
            open,
            crash_open,
            reopen,
        });
    }
    drop(set);
    let direct_note = if o.direct {
        " Populated directly (create_snap messages and record files, the state add_device leaves), \
         not through add_device."
    } else {
        ""
    };

    // Reopen at full size (what every CLI call pays), then the CLI's memory.
    let t0 = Instant::now();
    let set = DeviceSet::open(
        &set_root,
        DeviceSet::recorded_options(&set_root)
            .ok()
            .flatten()
            .unwrap_or_default(),
    )
    .expect("reopen");
    let reopen = t0.elapsed();
    drop(set);

    let strace_k = 3u32;
    let traced: Vec<(&str, BTreeMap<String, u64>)> = if crate::in_path("strace") {
        ["set", "seed", "seed-notxn", "floor"]
            .iter()
            .filter_map(|k| strace_probe(k, &o.root, strace_k).map(|m| (*k, m)))
            .collect()
    } else {
        Vec::new()
    };

    let mut rss_rows: Vec<(String, String, i64, f64, bool)> = Vec::new();
    let root_s = set_root.to_string_lossy().into_owned();
    for cli in &o.clis {
        let cmds: Vec<Vec<String>> = vec![
            vec!["--version".into()],
            vec!["loop".into(), "list".into()],
            vec!["--root".into(), root_s.clone(), "status".into()],
            vec!["--root".into(), root_s.clone(), "list".into()],
            vec![
                "--root".into(),
                root_s.clone(),
                "create".into(),
                "rssprobe".into(),
            ],
            vec![
                "--root".into(),
                root_s.clone(),
                "activate".into(),
                "rssprobe".into(),
            ],
            vec![
                "--root".into(),
                root_s.clone(),
                "remove".into(),
                "rssprobe".into(),
            ],
        ];
        for c in cmds {
            let (kib, wall, ok) = crate::sys::peak_rss(cli, &c);
            let shown = c.join(" ").replace(&root_s, "R");
            eprintln!(
                "dmthin-compare rss: {cli} {shown}: {kib} KiB, {:.0} ms, ok={ok}",
                ms(wall)
            );
            rss_rows.push((cli.clone(), shown, kib, ms(wall), ok));
        }
    }
    if let Some(cli) = o.clis.first() {
        let _ = crate::sys::peak_rss(cli, &["--root".into(), root_s.clone(), "shutdown".into()]);
    }

    println!(
        "=== BEGIN dmthin-compare scaling (udev {}) ===",
        if crate::udev_running() {
            "running"
        } else {
            "not running"
        }
    );
    println!();
    println!(
        "DeviceSet on ext4 (virtio disk), loop files; each probe = add_device (create_snap of the base) \
         + remove_device; floor = the two pool messages alone; seed = the same two pool messages, \
         each followed by the whole set's JSON written to a temp file, fsynced and renamed, then \
         set_transaction_id (the seed's saveMetadata); seed without txn ids = the same without \
         set_transaction_id. The four run interleaved. Open after a crash: an add's intent left \
         without its outcome in the journal, so the open reads the pool's thin ids from a \
         metadata snapshot.{direct_note}"
    );
    println!();
    println!("| devices in set | dmthin add+remove ms | floor ms | dmthin / floor | seed ms | seed without txn ids ms | seed / dmthin | seed JSON size | probes | populate: adds, s (ms/add) | DeviceSet::open ms | open after a crash ms | reopen ms |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let per_probe = |d: Duration| ms(d) / f64::from(r.probes);
        let (dm, fl) = (per_probe(r.dmthin), per_probe(r.floor));
        let (sd, nt) = (per_probe(r.seed), per_probe(r.seed_notxn));
        let per = if r.populated > 0 {
            format!(
                "{}, {:.1} s ({:.1})",
                r.populated,
                r.populate.as_secs_f64(),
                ms(r.populate) / f64::from(r.populated)
            )
        } else {
            "-".into()
        };
        println!(
            "| {} | {dm:.2} | {fl:.2} | {:.2}x | {sd:.2} | {nt:.2} | {:.1}x | {} KiB | {} | {per} | {} | {:.0} | {:.0} |",
            r.size,
            dm / fl,
            sd / dm,
            r.seed_bytes / 1024,
            r.probes,
            r.open.map_or("-".to_string(), |d| format!("{:.0}", ms(d))),
            ms(r.crash_open),
            ms(r.reopen)
        );
    }
    for s in &skipped {
        println!("| {s} | skipped: populating would exceed the --budget | | | | | | | | | | | |");
    }
    println!();
    println!(
        "Reopening the set with {count} devices (DeviceSet::open): {:.0} ms. Total scaling run {:.0} s.",
        ms(reopen),
        t_all.elapsed().as_secs_f64()
    );
    println!();
    if !traced.is_empty() {
        let mut names: Vec<&String> = traced.iter().flat_map(|(_, m)| m.keys()).collect();
        names.sort();
        names.dedup();
        println!(
            "System calls per add+remove at {count} devices (strace -f, {strace_k} probes, averaged):"
        );
        println!();
        println!("| syscall | dmthin DeviceSet | floor (2 messages) | seed (whole JSON, set_transaction_id) | seed without txn ids |");
        println!("|---|---:|---:|---:|---:|");
        for n in names {
            let get = |kind: &str| {
                traced
                    .iter()
                    .find(|(k, _)| *k == kind)
                    .map_or("-".to_string(), |(_, m)| {
                        format!(
                            "{:.1}",
                            *m.get(n).unwrap_or(&0) as f64 / f64::from(strace_k)
                        )
                    })
            };
            println!(
                "| {n} | {} | {} | {} | {} |",
                get("set"),
                get("floor"),
                get("seed"),
                get("seed-notxn")
            );
        }
        println!();
    }
    if !rss_rows.is_empty() {
        println!("CLI peak resident memory (VmHWM read at exit through ptrace), set with {count} devices:");
        println!();
        println!("| binary | command | peak RSS | wall ms | ok |");
        println!("|---|---|---:|---:|---|");
        for (cli, cmd, kib, wall, ok) in &rss_rows {
            println!(
                "| {} | dmthin {cmd} | {:.2} MiB | {wall:.0} | {} |",
                Path::new(cli).display(),
                *kib as f64 / 1024.0,
                if *ok { "yes" } else { "FAILED" }
            );
        }
        println!();
    }
    println!("=== END dmthin-compare scaling ===");
}
