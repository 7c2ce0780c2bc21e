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
        assert!(a.len() == 8, "need WORKLOAD ITERS POOL POOL_DEV FIRST_ID SIZE ORIGIN ORIGIN_ID");
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
    // SAFETY: getppid has no preconditions.
    unsafe {
        libc::getppid();
    }
}

fn bad_workload(w: &str) -> ! {
    panic!("unknown workload {w}")
}

// ------------------------------------------------------------------ dmthin

pub fn run_dmthin(job: &Job) -> Outcome {
    use dmthin::dm::{Control, CreateOptions, DevId, RemoveOptions, StatusOptions, SuspendOptions, UdevFlags};
    use dmthin::target::{PoolStatus, TableLine};
    // Control::open issues DM_VERSION (the others' warm-up does the same).
    let mut ctl = Control::open().expect("open /dev/mapper/control");
    let mut sink = 0usize;
    let mut op = |ctl: &mut Control, id: u32| {
        let pool = DevId::Name(&job.pool);
        match job.workload.as_str() {
            "cycle" => {
                let name = job.name(id);
                ctl.target_message(pool, 0, &format!("create_thin {id}")).expect("create_thin");
                let line = TableLine {
                    start: 0,
                    length: job.size,
                    target_type: "thin".into(),
                    params: format!("{} {id}", job.pool_dev),
                };
                ctl.create_with_table(&name, &CreateOptions::default(), &[line], UdevFlags::empty())
                    .expect("activate");
                ctl.remove(DevId::Name(&name), &RemoveOptions::default()).expect("deactivate");
                ctl.target_message(pool, 0, &format!("delete {id}")).expect("delete");
            }
            "snapshot" => {
                let origin = DevId::Name(&job.origin);
                ctl.suspend(origin, &SuspendOptions::default()).expect("suspend");
                ctl.target_message(pool, 0, &format!("create_snap {id} {}", job.origin_id))
                    .expect("create_snap");
                ctl.resume(origin, UdevFlags::empty()).expect("resume");
            }
            "list" => sink += ctl.list_devices().expect("list").len(),
            "status" => {
                let (_, lines) = ctl.table_status(pool, &StatusOptions::default()).expect("status");
                match PoolStatus::parse(&lines[0].params).expect("parse") {
                    PoolStatus::Active(s) => sink += s.used_data_blocks as usize,
                    _ => sink += 1,
                }
            }
            w => bad_workload(w),
        }
    };
    op(&mut ctl, job.first + job.iters); // warm-up
    marker();
    let before = ctl.ioctl_count();
    let t0 = Instant::now();
    for i in 0..job.iters {
        op(&mut ctl, job.first + i);
    }
    let elapsed = t0.elapsed();
    let ioctls = ctl.ioctl_count() - before;
    marker();
    std::hint::black_box(sink);
    Outcome { elapsed, ioctls: Some(ioctls) }
}

// ------------------------------------------------------------ devicemapper

pub fn run_devmapper(job: &Job) -> Outcome {
    use devicemapper::{DevId, DmFlags, DmName, DmOptions, DM};
    let dm = DM::new().expect("DM::new");
    dm.version().expect("version");
    let pool_name = DmName::new(&job.pool).expect("pool name");
    let pool = DevId::Name(pool_name);
    let mut sink = 0usize;
    let mut op = |id: u32| match job.workload.as_str() {
        "cycle" => {
            let name = job.name(id);
            let dname = DmName::new(&name).expect("name");
            let did = DevId::Name(dname);
            dm.target_msg(&pool, None, &format!("create_thin {id}")).expect("create_thin");
            dm.device_create(dname, None, DmOptions::default()).expect("create");
            let table = [(0u64, job.size, "thin".to_string(), format!("{} {id}", job.pool_dev))];
            dm.table_load(&did, &table, DmOptions::default()).expect("load");
            dm.device_suspend(&did, DmOptions::default()).expect("resume");
            dm.device_remove(&did, DmOptions::default()).expect("remove");
            dm.target_msg(&pool, None, &format!("delete {id}")).expect("delete");
        }
        "snapshot" => {
            let origin = DevId::Name(DmName::new(&job.origin).expect("origin"));
            dm.device_suspend(&origin, DmOptions::default().set_flags(DmFlags::DM_SUSPEND))
                .expect("suspend");
            dm.target_msg(&pool, None, &format!("create_snap {id} {}", job.origin_id))
                .expect("create_snap");
            dm.device_suspend(&origin, DmOptions::default()).expect("resume");
        }
        "list" => sink += dm.list_devices().expect("list").len(),
        "status" => {
            let (_, lines) = dm.table_status(&pool, DmOptions::default()).expect("status");
            // The crate's typed thin-pool status needs a ThinPoolDev it set up
            // itself; take the used-data field out of the line instead.
            sink += lines[0].3.split_whitespace().nth(2).map_or(0, |f| f.len());
        }
        w => bad_workload(w),
    };
    op(job.first + job.iters); // warm-up
    marker();
    let t0 = Instant::now();
    for i in 0..job.iters {
        op(job.first + i);
    }
    let elapsed = t0.elapsed();
    marker();
    std::hint::black_box(sink);
    Outcome { elapsed, ioctls: None }
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

pub fn run_dmsetup(job: &Job) -> Outcome {
    let op = |id: u32| match job.workload.as_str() {
        "cycle" => {
            let name = job.name(id);
            dmsetup(&["message", &job.pool, "0", &format!("create_thin {id}")]);
            let table = format!("0 {} thin {} {id}", job.size, job.pool_dev);
            dmsetup(&["create", &name, "--table", &table]);
            dmsetup(&["remove", &name]);
            dmsetup(&["message", &job.pool, "0", &format!("delete {id}")]);
        }
        "snapshot" => {
            dmsetup(&["suspend", &job.origin]);
            dmsetup(&["message", &job.pool, "0", &format!("create_snap {id} {}", job.origin_id)]);
            dmsetup(&["resume", &job.origin]);
        }
        "list" => dmsetup(&["ls"]),
        "status" => dmsetup(&["status", &job.pool]),
        w => bad_workload(w),
    };
    op(job.first + job.iters); // warm-up
    marker();
    let t0 = Instant::now();
    for i in 0..job.iters {
        op(job.first + i);
    }
    let elapsed = t0.elapsed();
    marker();
    Outcome { elapsed, ioctls: None }
}

// -------------------------------------------------------------------- floor

pub fn run_floor(job: &Job) -> Outcome {
    let mut raw = Raw::open().expect("open /dev/mapper/control");
    raw.must(&mut Req::version(), "version");
    // Every buffer of the timed loop is built here, before it: one group per
    // operation, the warm-up's (id first+iters) first.
    let group = |id: u32| -> Vec<Req> {
        match job.workload.as_str() {
            "cycle" => {
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
    };
    // Repeatable requests (list, status): one buffer, header restored before
    // each use. The list buffer is the smallest power of two from 16 KiB that
    // holds the reply, i.e. where a growing buffer settles.
    let mut template = match job.workload.as_str() {
        "list" => {
            let mut size = 16 * 1024;
            loop {
                let mut probe = Req::list(size);
                raw.must(&mut probe, "list");
                if probe.flags() & crate::raw::FLAG_BUFFER_FULL == 0 {
                    break Some(Req::list(size));
                }
                size *= 2;
            }
        }
        "status" => Some(Req::status(&job.pool, 16 * 1024)),
        "cycle" | "snapshot" => None,
        w => bad_workload(w),
    };
    let mut header = [0u8; crate::raw::HEADER];
    if let Some(t) = &template {
        header.copy_from_slice(&t.buf[..crate::raw::HEADER]);
    }
    let mut warm = group(job.first + job.iters);
    let mut reqs: Vec<Req> = (0..job.iters).flat_map(|i| group(job.first + i)).collect();
    let repeat = |raw: &mut Raw, t: &mut Req| {
        t.buf[..crate::raw::HEADER].copy_from_slice(&header);
        raw.must(t, &job.workload);
    };
    // warm-up
    match template.as_mut() {
        Some(t) => repeat(&mut raw, t),
        None => warm.iter_mut().for_each(|r| raw.must(r, "warm-up")),
    }
    marker();
    let before = raw.ioctls;
    let t0 = Instant::now();
    if let Some(t) = template.as_mut() {
        for _ in 0..job.iters {
            repeat(&mut raw, t);
        }
    } else {
        for r in reqs.iter_mut() {
            let what = r.nr;
            if let Err(e) = raw.issue(r) {
                panic!("raw ioctl nr {what}: {e}");
            }
        }
    }
    let elapsed = t0.elapsed();
    let ioctls = raw.ioctls - before;
    marker();
    Outcome { elapsed, ioctls: Some(ioctls) }
}
