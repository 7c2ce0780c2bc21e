//! The seeded fault schedule (issue #25): random operations on a device
//! set, checked against a model of what the set acknowledged, with faults
//! mixed in: errors injected at random fail points, processes aborted at
//! random fail points (a child process), crashes and reopens, a pool made
//! read-only, filled to out-of-data-space and discarded, metadata writes
//! failing (a pool that needs a check), deferred deletes, and device and
//! thin ids used again.
//!
//! Each seed runs its own operations (device ids `s<seed>-<n>`) on a set
//! shared with the other seeds, ends with every acknowledged device
//! checked (listed whole, its files read back, the pool's thin ids the
//! records') and removes its devices. A seed whose answers disagree with
//! the model is a divergence: its log is printed with the command that
//! replays it, the run goes on on a fresh set, and the test fails at the
//! end. The last lines say `N seeds, D divergences` and how often each
//! fault ran.
//!
//! Knobs (`ioctl-tests/run --test schedule --env NAME=VALUE`):
//!
//! - `DMTHIN_SCHEDULE_SEEDS` (200): how many seeds;
//! - `DMTHIN_SCHEDULE_FIRST` (1): the first seed;
//! - `DMTHIN_SCHEDULE_SEED`: only these seeds, comma-separated (a replay);
//! - `DMTHIN_SCHEDULE_OPS` (6): operations per seed, besides its episode;
//! - `DMTHIN_SCHEDULE_THIN_DUMP_EVERY` (25): every seed ends with the
//!   pool's thin ids read in-process from a metadata snapshot; every k-th
//!   with `thin_dump` instead (independent of the crate, ~1 s under TCG);
//! - `DMTHIN_SCHEDULE_VERBOSE`: print every seed's log, not only a diverging one's;
//! - `DMTHIN_SCHEDULE_SKIP`: operations (`grow_meta`, `reuse_id`: an add
//!   of an id removed earlier, ...) and fail points not to run,
//!   comma-separated: to look past a known divergence (the seeds that
//!   never meet one run as without it);
//! - `DMTHIN_SCHEDULE_FLAKEY_EVERY` (40) and `DMTHIN_SCHEDULE_FILL_EVERY`
//!   (20): the seeds that are multiples of the first have a
//!   failed-metadata-write episode, those 10 past a multiple of the second
//!   an out-of-space fill (0: none), so any 200 seeds in a row have 5 and 10.
//!
//! What the schedule found is also kept as short tests (`found_*`).
//!
//! A seed replays the same operations wherever it runs; thin ids (and so
//! the pool's answers) can differ on a fresh set, so a divergence also
//! prints the range that reproduces the run exactly.

mod common;
#[path = "schedule/episodes.rs"]
mod episodes;
#[path = "schedule/found.rs"]
mod found;
#[path = "schedule/model.rs"]
mod model;
#[path = "schedule/ops.rs"]
mod ops;
#[path = "schedule/world.rs"]
mod world;

use dmthin::deviceset::failpoint;
use model::Counts;
use ops::Run;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::Instant;
use world::World;

/// Prints past libtest's capture (straight to stderr), so the VM log shows it.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// The run's knobs, from the environment.
struct Knobs {
    /// The seeds to run, in order.
    seeds: Vec<u64>,
    /// Whether they were listed (`DMTHIN_SCHEDULE_SEED`), not a range.
    listed: bool,
    ops: usize,
    thin_dump_every: u64,
    flakey_every: u64,
    fill_every: u64,
    skip: Vec<String>,
}

fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

impl Knobs {
    fn from_env() -> Knobs {
        let listed = std::env::var("DMTHIN_SCHEDULE_SEED").ok();
        let seeds = match &listed {
            Some(list) => list
                .split(',')
                .map(|s| {
                    s.trim()
                        .parse()
                        .unwrap_or_else(|_| panic!("DMTHIN_SCHEDULE_SEED: {s:?} is not a seed"))
                })
                .collect(),
            None => {
                let first = env_num("DMTHIN_SCHEDULE_FIRST", 1);
                (first..first + env_num("DMTHIN_SCHEDULE_SEEDS", 200)).collect()
            }
        };
        Knobs {
            seeds,
            listed: listed.is_some(),
            ops: env_num("DMTHIN_SCHEDULE_OPS", 6) as usize,
            thin_dump_every: env_num("DMTHIN_SCHEDULE_THIN_DUMP_EVERY", 25).max(1),
            flakey_every: env_num("DMTHIN_SCHEDULE_FLAKEY_EVERY", 40),
            fill_every: env_num("DMTHIN_SCHEDULE_FILL_EVERY", 20),
            skip: std::env::var("DMTHIN_SCHEDULE_SKIP")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        }
    }

    /// The `--env` arguments that give this run's knobs (for a replay).
    fn env_args(&self) -> String {
        let mut args = format!(
            "--env DMTHIN_SCHEDULE_OPS={} --env DMTHIN_SCHEDULE_FLAKEY_EVERY={} --env DMTHIN_SCHEDULE_FILL_EVERY={}",
            self.ops, self.flakey_every, self.fill_every
        );
        if !self.skip.is_empty() {
            args += &format!(" --env DMTHIN_SCHEDULE_SKIP={}", self.skip.join(","));
        }
        args
    }
}

/// What a seed does besides its random operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Random operations only.
    Plain,
    /// And a fill to out-of-data-space, then discards.
    Fill,
    /// On the flakey set, and metadata writes fail (needs_check).
    Flakey,
}

impl Kind {
    fn of(seed: u64, k: &Knobs) -> Kind {
        let every = |n: u64, offset: u64| n > 0 && seed % n == offset % n;
        if every(k.flakey_every, 0) {
            Kind::Flakey
        } else if every(k.fill_every, 10) {
            Kind::Fill
        } else {
            Kind::Plain
        }
    }
}

/// The random operations, with their weights.
#[derive(Clone, Copy, Debug)]
enum Op {
    Add,
    Remove,
    Activate,
    Deactivate,
    MountWrite,
    Unmount,
    SetInitialized,
    Grow,
    Reopen,
    Cleanup,
    Abort,
    ReadOnly,
}

/// One seed: a first add, `ops` random operations with the seed's
/// episode among them, then the final check and clean-up.
fn run_seed(run: &mut Run, kind: Kind, k: &Knobs, thin_dump: bool) {
    run.skip.clone_from(&k.skip);
    run.add();
    let episode_at = run.rng.below(k.ops.max(1));
    for i in 0..k.ops {
        if i == episode_at {
            let t = Instant::now();
            match kind {
                Kind::Plain => {}
                Kind::Fill => run.fill_episode(),
                Kind::Flakey => run.flakey_episode(),
            }
            if kind != Kind::Plain {
                run.counts
                    .time(format!("{kind:?} episode"), t.elapsed().as_secs_f64());
            }
        }
        let mut choices = vec![
            (20, Op::Add),
            (5, Op::Activate),
            (3, Op::SetInitialized),
            (4, Op::Grow),
            (8, Op::Reopen),
            (4, Op::Abort),
            (2, Op::ReadOnly),
        ];
        if !run.model.present_ids(None).is_empty() {
            choices.extend([(10, Op::Remove), (3, Op::Deactivate), (12, Op::MountWrite)]);
        }
        if !run.model.mounted.is_empty() {
            choices.push((4, Op::Unmount));
        }
        if !run.pending.is_empty() {
            choices.push((2, Op::Cleanup));
        }
        let op = run.rng.weighted(&choices);
        run.counts.add("operations");
        let t = Instant::now();
        match op {
            Op::Add => run.add(),
            Op::Remove => run.remove(),
            Op::Activate => run.activate(),
            Op::Deactivate => run.deactivate(),
            Op::MountWrite => run.mount_write(),
            Op::Unmount => run.unmount(),
            Op::SetInitialized => run.set_initialized(),
            Op::Grow => run.grow(),
            Op::Reopen => run.reopen(),
            Op::Cleanup => run.cleanup(),
            Op::Abort => run.abort(),
            Op::ReadOnly => run.read_only_episode(),
        }
        run.check_presence();
        run.counts
            .time(format!("{op:?}"), t.elapsed().as_secs_f64());
    }
    let t = Instant::now();
    run.finish(thin_dump);
    run.counts
        .time("final check and clean-up", t.elapsed().as_secs_f64());
}

/// The text of a caught panic.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}

#[test]
fn seeded_fault_schedule() {
    let k = Knobs::from_env();
    let (first, last) = (k.seeds[0], k.seeds[k.seeds.len() - 1]);
    say!(
        "schedule: {} seeds {}, {} operations each (replay some: DMTHIN_SCHEDULE_SEED=N,M ioctl-tests/run --test schedule {})",
        k.seeds.len(),
        if k.listed { format!("{:?}", k.seeds) } else { format!("{first}..={last}") },
        k.ops,
        k.env_args()
    );
    model::trace::install();
    let t0 = Instant::now();
    let mut counts = Counts::default();
    let mut main = World::main("sched");
    let mut flakey: Option<World> = None;
    let mut diverged = Vec::new();
    let verbose = std::env::var_os("DMTHIN_SCHEDULE_VERBOSE").is_some();
    let mut secs_by_kind = std::collections::BTreeMap::<&str, (u64, f64)>::new();
    for (i, &seed) in k.seeds.iter().enumerate() {
        let kind = Kind::of(seed, &k);
        let world = match kind {
            Kind::Flakey => flakey.get_or_insert_with(|| World::flakey("sched-flakey")),
            _ => &mut main,
        };
        let thin_dump = (i as u64).is_multiple_of(k.thin_dump_every);
        let mut log = Vec::new();
        model::trace::take();
        let ts = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut run = Run::new(world, seed, &mut counts, &mut log);
            run_seed(&mut run, kind, &k, thin_dump);
        }));
        failpoint::set(None);
        let secs = ts.elapsed().as_secs_f64();
        let entry = secs_by_kind.entry(format!("{kind:?}").leak()).or_default();
        entry.0 += 1;
        entry.1 += secs;
        counts.add("seeds");
        match outcome {
            Ok(()) => {
                say!(
                    "seed {seed} ({kind:?}): as modelled, {} steps, {secs:.1} s",
                    log.len()
                );
                if verbose {
                    for line in &log {
                        say!("    {line}");
                    }
                }
            }
            Err(p) => {
                let msg = panic_text(p.as_ref());
                say!("seed {seed} ({kind:?}): DIVERGENCE: {msg}");
                for line in &log {
                    say!("    {line}");
                }
                let before: Vec<String> = k.seeds[..=i].iter().map(u64::to_string).collect();
                say!(
                    "    replay: DMTHIN_SCHEDULE_SEED={seed} ioctl-tests/run --test schedule {}; \
                     exactly as here (on one set): DMTHIN_SCHEDULE_{}",
                    k.env_args(),
                    if k.listed {
                        format!("SEED={}", before.join(","))
                    } else {
                        format!("FIRST={first} DMTHIN_SCHEDULE_SEEDS={}", i + 1)
                    }
                );
                diverged.push(seed);
                // Later seeds start from a fresh set.
                match kind {
                    Kind::Flakey => flakey = None,
                    _ => main = World::main(&format!("sched-{seed}")),
                }
            }
        }
    }
    drop(flakey);
    drop(main);
    say!("schedule: {:.0} s in all", t0.elapsed().as_secs_f64());
    for (kind, (n, secs)) in &secs_by_kind {
        say!(
            "  {kind}: {n} seeds, {secs:.0} s, {:.2} s a seed",
            secs / *n as f64
        );
    }
    say!("  time by step (times, seconds, ms each):");
    for (step, (n, secs)) in &counts.secs {
        say!(
            "  {n:7} {secs:7.1} s {:7.0} ms  {step}",
            secs * 1e3 / *n as f64
        );
    }
    say!("  counts:");
    for (what, n) in &counts.n {
        say!("  {n:7}  {what}");
    }
    say!("{} seeds, {} divergences", k.seeds.len(), diverged.len());
    assert!(diverged.is_empty(), "diverging seeds: {diverged:?}");
}

/// The child process of an abort (does nothing in a normal run).
#[test]
fn schedule_child() {
    let (Ok(op), Ok(root)) = (
        std::env::var(episodes::CHILD_OP),
        std::env::var(episodes::CHILD_ROOT),
    ) else {
        return;
    };
    episodes::child_main(&op, Path::new(&root));
}
