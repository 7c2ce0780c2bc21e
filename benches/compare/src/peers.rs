//! The Rust-side peers: dmthin, the devicemapper crate, dmsetup per step and
//! the raw-ioctl floor. Each runs one workload `iters` times in this process
//! and returns the wall time of the loop. libdevmapper lives in c/libdm_peer.c.

use crate::raw::{Raw, Req};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What every peer is told; identical to the C harness's arguments.
#[derive(Clone, Debug)]
pub struct Job {
    pub workload: String,
    pub iters: u32,
    pub pool: String,
    pub pool_dev: String,
    pub first: u32,
    pub size: u64,
    pub origin: String,
    pub origin_id: u32,
}

impl Job {
    pub fn from_args(a: &[String]) -> Job {
        assert!(
            a.len() == 8,
            "need WORKLOAD ITERS POOL POOL_DEV FIRST_ID SIZE ORIGIN ORIGIN_ID"
        );
        Job {
            workload: a[0].clone(),
            iters: a[1].parse().expect("ITERS"),
            pool: a[2].clone(),
            pool_dev: a[3].clone(),
            first: a[4].parse().expect("FIRST_ID"),
            size: a[5].parse().expect("SIZE"),
            origin: a[6].clone(),
            origin_id: a[7].parse().expect("ORIGIN_ID"),
        }
    }

    pub fn to_args(&self) -> Vec<String> {
        vec![
            self.workload.clone(),
            self.iters.to_string(),
            self.pool.clone(),
            self.pool_dev.clone(),
            self.first.to_string(),
            self.size.to_string(),
            self.origin.clone(),
            self.origin_id.to_string(),
        ]
    }

    fn dummy() -> Job {
        Job {
            workload: String::new(),
            iters: 0,
            pool: String::new(),
            pool_dev: String::new(),
            first: 0,
            size: 0,
            origin: String::new(),
            origin_id: 0,
        }
    }

    fn name(&self, id: u32) -> String {
        format!("cmp-{id}")
    }
}

/// The outcome of one peer run.
pub struct Outcome {
    pub elapsed: Duration,
    /// ioctls counted in code during the timed loop (dmthin, floor).
    pub ioctls: Option<u64>,
}

/// strace markers around the timed loop (see c/libdm_peer.c).
fn marker() {
    crate::sys::strace_marker();
}

/// The "nodes" workload is the cycle with checks: is /dev/mapper/<name>
/// there right after the activation returned, and gone right after the
/// deactivation returned? (Untimed; it is about correctness.)
pub static MISSING: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
pub static STALE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn check_active(job: &Job, name: &str) {
    if job.workload == "nodes" && !std::path::Path::new("/dev/mapper").join(name).exists() {
        MISSING.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn check_removed(job: &Job, name: &str) {
    if job.workload == "nodes"
        && std::fs::symlink_metadata(std::path::Path::new("/dev/mapper").join(name)).is_ok()
    {
        STALE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn bad_workload(w: &str) -> ! {
    panic!("unknown workload {w}")
}

// ------------------------------------------------------------------ dmthin

pub struct DmthinPeer {
    pub ctl: dmthin::dm::Control,
    sink: usize,
    /// udev rule flags for activate/resume/remove: empty (all rules, as
    /// libdevmapper by default), or `UdevFlags::PRIVATE` for the
    /// "dmthin-private" peer (node made, no blkid/disk/other rules).
    pub flags: dmthin::dm::UdevFlags,
}

impl DmthinPeer {
    /// Control::open issues DM_VERSION (the others' warm-up does the same).
    pub fn new() -> DmthinPeer {
        let ctl = dmthin::dm::Control::open().expect("open /dev/mapper/control");
        DmthinPeer {
            ctl,
            sink: 0,
            flags: dmthin::dm::UdevFlags::empty(),
        }
    }

    pub fn op(&mut self, job: &Job, id: u32) {
        use dmthin::dm::{CreateOptions, DevId, RemoveOptions, StatusOptions, SuspendOptions};
        use dmthin::target::{PoolStatus, TableLine};
        let ctl = &mut self.ctl;
        let pool = DevId::Name(&job.pool);
        match job.workload.as_str() {
            "cycle" | "nodes" => {
                let name = job.name(id);
                ctl.send_message(pool, 0, &format!("create_thin {id}"))
                    .expect("create_thin");
                let line = TableLine::new(0, job.size, "thin", format!("{} {id}", job.pool_dev))
                    .expect("thin line");
                ctl.create_with_table(&name, &CreateOptions::default(), &[line], self.flags)
                    .expect("activate");
                check_active(job, &name);
                let opts = RemoveOptions {
                    udev_flags: self.flags,
                    ..Default::default()
                };
                ctl.remove(DevId::Name(&name), &opts).expect("deactivate");
                check_removed(job, &name);
                ctl.send_message(pool, 0, &format!("delete {id}"))
                    .expect("delete");
            }
            "snapshot" => {
                let origin = DevId::Name(&job.origin);
                ctl.suspend(origin, &SuspendOptions::default())
                    .expect("suspend");
                ctl.send_message(pool, 0, &format!("create_snap {id} {}", job.origin_id))
                    .expect("create_snap");
                ctl.resume(origin, self.flags).expect("resume");
            }
            "list" => self.sink += consume_list(ctl.list_devices_view().expect("list")),
            "status" => {
                let (_, lines) = ctl
                    .table_status(pool, &StatusOptions::default())
                    .expect("status");
                match PoolStatus::parse(lines[0].params()).expect("parse") {
                    PoolStatus::Active(s) => self.sink += s.used_data_blocks as usize,
                    _ => self.sink += 1,
                }
            }
            w => bad_workload(w),
        }
        std::hint::black_box(self.sink);
    }
}

/// Which dmthin variant a run measures.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum DmthinMode {
    /// Defaults: beside udev, `NodeMode::UdevWatch` (all rules, udevd's
    /// monitor, no cookie).
    Default,
    /// `NodeMode::Udev`: all rules, libdm's cookie protocol.
    Cookie,
    /// `UdevFlags::PRIVATE`: cookies, but no blkid/disk/other rules.
    Private,
    /// `NodeMode::Bypass`: no cookie; every uevent carries
    /// `UdevFlags::BYPASS`, so the dm rules skip the device, and dmthin
    /// makes and removes the node itself.
    NoSync,
}

pub fn run_dmthin(job: &Job, mode: DmthinMode) -> Outcome {
    let mut p = DmthinPeer::new();
    match mode {
        DmthinMode::Default => {}
        DmthinMode::Private => p.flags = dmthin::dm::UdevFlags::PRIVATE,
        DmthinMode::NoSync => p.ctl.set_node_mode(dmthin::dm::NodeMode::Bypass),
        DmthinMode::Cookie => p.ctl.set_node_mode(dmthin::dm::NodeMode::Udev {
            timeout: std::time::Duration::from_secs(30),
        }),
    }
    p.op(job, job.first + job.iters); // warm-up
    marker();
    let before = p.ctl.ioctl_count();
    let t0 = Instant::now();
    for i in 0..job.iters {
        p.op(job, job.first + i);
    }
    let elapsed = t0.elapsed();
    let ioctls = p.ctl.ioctl_count() - before;
    marker();
    Outcome {
        elapsed,
        ioctls: Some(ioctls),
    }
}

// ------------------------------------------------------------ devicemapper

pub struct DevmapperPeer {
    dm: devicemapper::DM,
    sink: usize,
}

impl DevmapperPeer {
    pub fn new() -> DevmapperPeer {
        let dm = devicemapper::DM::new().expect("DM::new");
        dm.version().expect("version");
        DevmapperPeer { dm, sink: 0 }
    }

    pub fn op(&mut self, job: &Job, id: u32) {
        use devicemapper::{DevId, DmFlags, DmName, DmOptions};
        let dm = &self.dm;
        let pool = DevId::Name(DmName::new(&job.pool).expect("pool name"));
        match job.workload.as_str() {
            "cycle" | "nodes" => {
                let name = job.name(id);
                let dname = DmName::new(&name).expect("name");
                let did = DevId::Name(dname);
                dm.target_msg(&pool, None, &format!("create_thin {id}"))
                    .expect("create_thin");
                dm.device_create(dname, None, DmOptions::default())
                    .expect("create");
                let table = [(
                    0u64,
                    job.size,
                    "thin".to_string(),
                    format!("{} {id}", job.pool_dev),
                )];
                dm.table_load(&did, &table, DmOptions::default())
                    .expect("load");
                dm.device_suspend(&did, DmOptions::default())
                    .expect("resume");
                check_active(job, &name);
                dm.device_remove(&did, DmOptions::default())
                    .expect("remove");
                check_removed(job, &name);
                dm.target_msg(&pool, None, &format!("delete {id}"))
                    .expect("delete");
            }
            "snapshot" => {
                let origin = DevId::Name(DmName::new(&job.origin).expect("origin"));
                dm.device_suspend(&origin, DmOptions::default().set_flags(DmFlags::DM_SUSPEND))
                    .expect("suspend");
                dm.target_msg(&pool, None, &format!("create_snap {id} {}", job.origin_id))
                    .expect("create_snap");
                dm.device_suspend(&origin, DmOptions::default())
                    .expect("resume");
            }
            "list" => self.sink += dm.list_devices().expect("list").len(),
            "status" => {
                let (_, lines) = dm
                    .table_status(&pool, DmOptions::default())
                    .expect("status");
                // The crate's typed thin-pool status needs a ThinPoolDev it set up
                // itself; take the used-data field out of the line instead.
                self.sink += lines[0].3.split_whitespace().nth(2).map_or(0, |f| f.len());
            }
            w => bad_workload(w),
        }
        std::hint::black_box(self.sink);
    }
}

pub fn run_devmapper(job: &Job) -> Outcome {
    let mut p = DevmapperPeer::new();
    p.op(job, job.first + job.iters); // warm-up
    marker();
    let t0 = Instant::now();
    for i in 0..job.iters {
        p.op(job, job.first + i);
    }
    let elapsed = t0.elapsed();
    marker();
    Outcome {
        elapsed,
        ioctls: None,
    }
}

// ------------------------------------------------------------------ dmsetup

fn dmsetup(args: &[&str]) {
    let out = Command::new("dmsetup")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("spawn dmsetup");
    if !out.status.success() {
        panic!(
            "dmsetup {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::hint::black_box(out.stdout.len());
}

fn dmsetup_op(job: &Job, id: u32) {
    match job.workload.as_str() {
        "cycle" | "nodes" => {
            let name = job.name(id);
            dmsetup(&["message", &job.pool, "0", &format!("create_thin {id}")]);
            let table = format!("0 {} thin {} {id}", job.size, job.pool_dev);
            dmsetup(&["create", &name, "--table", &table]);
            check_active(job, &name);
            dmsetup(&["remove", &name]);
            check_removed(job, &name);
            dmsetup(&["message", &job.pool, "0", &format!("delete {id}")]);
        }
        "snapshot" => {
            dmsetup(&["suspend", &job.origin]);
            dmsetup(&[
                "message",
                &job.pool,
                "0",
                &format!("create_snap {id} {}", job.origin_id),
            ]);
            dmsetup(&["resume", &job.origin]);
        }
        "list" => dmsetup(&["ls"]),
        "status" => dmsetup(&["status", &job.pool]),
        w => bad_workload(w),
    }
}

pub fn run_dmsetup(job: &Job) -> Outcome {
    dmsetup_op(job, job.first + job.iters); // warm-up
    marker();
    let t0 = Instant::now();
    for i in 0..job.iters {
        dmsetup_op(job, job.first + i);
    }
    let elapsed = t0.elapsed();
    marker();
    Outcome {
        elapsed,
        ioctls: None,
    }
}

// -------------------------------------------------------------------- floor

/// The floor's state: every buffer it will issue, built before any timing.
pub struct FloorPeer {
    pub raw: Raw,
    /// Per-operation request groups (cycle, snapshot), by thin id.
    groups: std::collections::HashMap<u32, Vec<Req>>,
    /// One reusable request (list, status) and its pristine header.
    template: Option<(Req, [u8; crate::raw::HEADER])>,
    /// Decode the reply with dmthin's own decoders (list, status): the floor
    /// plus exactly dmthin's decoding, to split dmthin's cost in two.
    pub decode: bool,
    /// "floor-nodewait": after the resume of a new device, poll until
    /// /dev/mapper/<name> exists; after its removal, until it is gone. No
    /// cookie, so udev's dm rules spawn no `dmsetup udevflags/udevcomplete`:
    /// a udev-correct floor for the cycle.
    pub wait_nodes: bool,
    nodes_check: bool,
    sink: usize,
}

fn wait_node(name: &str, present: bool) {
    let path = std::path::Path::new("/dev/mapper").join(name);
    let t0 = Instant::now();
    while std::fs::symlink_metadata(&path).is_ok() != present {
        if t0.elapsed() > Duration::from_secs(30) {
            panic!(
                "{} did not {} within 30 s",
                path.display(),
                if present { "appear" } else { "go" }
            );
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

impl FloorPeer {
    /// Prepares the buffers for the operations on `ids`.
    pub fn new(job: &Job, ids: impl Iterator<Item = u32>) -> FloorPeer {
        let mut raw = Raw::open().expect("open /dev/mapper/control");
        raw.must(&mut Req::version(), "version");
        let mut groups = std::collections::HashMap::new();
        let mut template = None;
        match job.workload.as_str() {
            "cycle" | "snapshot" | "nodes" => {
                for id in ids {
                    groups.insert(id, Self::group(job, id));
                }
            }
            // The list buffer is the smallest power of two from 16 KiB that
            // holds the reply, i.e. where a growing buffer settles.
            "list" => {
                let mut size = 16 * 1024;
                let req = loop {
                    let mut probe = Req::list(size);
                    raw.must(&mut probe, "list");
                    if probe.flags() & crate::raw::FLAG_BUFFER_FULL == 0 {
                        break Req::list(size);
                    }
                    size *= 2;
                };
                let mut h = [0u8; crate::raw::HEADER];
                h.copy_from_slice(&req.buf[..crate::raw::HEADER]);
                template = Some((req, h));
            }
            "status" => {
                let req = Req::status(&job.pool, 16 * 1024);
                let mut h = [0u8; crate::raw::HEADER];
                h.copy_from_slice(&req.buf[..crate::raw::HEADER]);
                template = Some((req, h));
            }
            w => bad_workload(w),
        }
        FloorPeer {
            raw,
            groups,
            template,
            decode: false,
            wait_nodes: false,
            nodes_check: job.workload == "nodes",
            sink: 0,
        }
    }

    fn group(job: &Job, id: u32) -> Vec<Req> {
        match job.workload.as_str() {
            "cycle" | "nodes" => {
                let name = job.name(id);
                vec![
                    Req::message(&job.pool, &format!("create_thin {id}")),
                    Req::create(&name),
                    Req::load(&name, job.size, "thin", &format!("{} {id}", job.pool_dev)),
                    Req::resume(&name),
                    Req::remove(&name),
                    Req::message(&job.pool, &format!("delete {id}")),
                ]
            }
            "snapshot" => vec![
                Req::suspend(&job.origin),
                Req::message(&job.pool, &format!("create_snap {id} {}", job.origin_id)),
                Req::resume(&job.origin),
            ],
            _ => Vec::new(),
        }
    }

    #[inline]
    pub fn op(&mut self, id: u32) {
        if let Some((req, header)) = self.template.as_mut() {
            req.buf[..crate::raw::HEADER].copy_from_slice(header);
            if let Err(e) = self.raw.issue(req) {
                panic!("raw ioctl nr {}: {e}", req.nr);
            }
            if self.decode {
                self.sink += decode_reply(req);
            }
        } else {
            let group = self.groups.get_mut(&id).expect("prepared id");
            let cycle = group.len() == 6;
            for (i, r) in group.iter_mut().enumerate() {
                if let Err(e) = self.raw.issue(r) {
                    panic!("raw ioctl nr {}: {e}", r.nr);
                }
                if cycle && (self.wait_nodes || self.nodes_check) && (i == 3 || i == 4) {
                    let name = format!("cmp-{id}");
                    if self.wait_nodes {
                        wait_node(&name, i == 3);
                    }
                    if self.nodes_check {
                        let job_nodes = Job {
                            workload: "nodes".into(),
                            ..Job::dummy()
                        };
                        if i == 3 {
                            check_active(&job_nodes, &name);
                        } else {
                            check_removed(&job_nodes, &name);
                        }
                    }
                }
            }
        }
    }
}

/// What the dmthin and floor+decode peers do with a device list: walk it with
/// dmthin's borrowing decoder (no copies), counting entries and name bytes so
/// that the decoding cannot be optimised away.
/// Walks a list reply the way the libdm peer walks `dm_names` (count the
/// devices, touch each device number): `NameList::records`, which checks
/// every record's bounds and decodes names only when asked.
fn consume_list(list: dmthin::dm::NameList<'_>) -> usize {
    let mut sink = 0;
    for record in list.records() {
        sink += 1 + record.expect("walk list").dev().minor as usize;
    }
    sink
}

/// dmthin's decoding of a LIST_DEVICES or TABLE_STATUS reply (its decoders,
/// through `dmthin::internals`, and status parser), applied to the floor's buffer.
fn decode_reply(req: &Req) -> usize {
    use dmthin::dm::{Command, Version};
    use dmthin::internals as codec;
    let u32_at = |off: usize| u32::from_ne_bytes(req.buf[off..off + 4].try_into().unwrap());
    let (start, end, count) = (u32_at(16) as usize, u32_at(12) as usize, u32_at(20));
    let payload = &req.buf[start..end.max(start).min(req.buf.len())];
    if req.nr == crate::raw::LIST_DEVICES {
        // The reply header carries the kernel's interface version, which
        // says what follows each name.
        let version = Version::new(u32_at(0), u32_at(4), u32_at(8));
        consume_list(codec::name_list(payload, version))
    } else {
        let lines =
            codec::decode_specs(Command::TableStatus, payload, count).expect("decode status");
        match dmthin::target::PoolStatus::parse(lines[0].params()).expect("parse") {
            dmthin::target::PoolStatus::Active(s) => s.used_data_blocks as usize,
            _ => 1,
        }
    }
}

pub fn run_floor(job: &Job, wait_nodes: bool) -> Outcome {
    let mut p = FloorPeer::new(job, job.first..=job.first + job.iters);
    // Without udev nobody makes the node: then this is the plain floor.
    p.wait_nodes = wait_nodes && crate::udev_running();
    p.op(job.first + job.iters); // warm-up
    marker();
    let before = p.raw.ioctls;
    let t0 = Instant::now();
    for i in 0..job.iters {
        p.op(job.first + i);
    }
    let elapsed = t0.elapsed();
    let ioctls = p.raw.ioctls - before;
    marker();
    Outcome {
        elapsed,
        ioctls: Some(ioctls),
    }
}

// ------------------------------------------------------------------- paired

/// Per-operation times of the in-process peers, their operations alternated
/// (order rotated every operation), so that all see the same machine load.
/// Peers: dmthin, floor, devicemapper crate and, for list and status,
/// "floor+decode" (the floor's ioctl followed by dmthin's decoding). Ids:
/// operation i of peer k uses first + 3*i + k; the warm-ups use i = iters.
pub fn run_paired(job: &Job) -> Vec<(&'static str, Vec<Duration>)> {
    let n = job.iters;
    let id = |i: u32, k: u32| job.first + 3 * i + k;
    let mut dmthin = DmthinPeer::new();
    let mut floor = FloorPeer::new(job, (0..=n).map(|i| id(i, 1)));
    let mut crate_ = DevmapperPeer::new();
    let decoding = matches!(job.workload.as_str(), "list" | "status");
    let mut floor_dec = FloorPeer::new(job, std::iter::empty());
    floor_dec.decode = true;
    let peers = if decoding { 4 } else { 3 };
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); peers];
    let mut op = |k: usize, i: u32| match k {
        0 => dmthin.op(job, id(i, 0)),
        1 => floor.op(id(i, 1)),
        2 => crate_.op(job, id(i, 2)),
        _ => floor_dec.op(0),
    };
    for k in 0..peers {
        op(k, n); // warm-up
    }
    for i in 0..n {
        for j in 0..peers {
            let k = (i as usize + j) % peers;
            let t0 = Instant::now();
            op(k, i);
            times[k].push(t0.elapsed());
        }
    }
    let names = ["dmthin", "floor", "devicemapper", "floor+decode"];
    names.iter().copied().zip(times).collect()
}
