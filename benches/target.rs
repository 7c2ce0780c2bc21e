//! Benchmarks for `dmthin::target`: formatting and parsing thin-pool table
//! and status lines, and thin status lines.
//!
//! Every benchmark runs twice: once timed by the wall clock (criterion's
//! default) and once by the thread's CPU clock, which leaves out the time the
//! thread spends descheduled and so stays meaningful on a loaded machine.
use std::fmt::Write as _;
use std::hint::black_box;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dmthin::target::{
    BlockSize, DeviceRef, PoolFeatures, PoolStatus, TableLine, Target, TargetTable, ThinPoolStatus,
    ThinPoolTable, ThinStatus,
};
use nix::time::{clock_gettime, ClockId};

const POOL_STATUS: &str =
    "12 1834/4161600 163840/1638400 - rw discard_passdown queue_if_no_space - 1024 ";
const POOL_TABLE: &str = "253:0 253:1 128 32768 1 skip_block_zeroing ";
const THIN_STATUS: &str = "10485760 20971519";

/// Thread CPU time (`CLOCK_THREAD_CPUTIME_ID`), in nanoseconds.
struct ThreadCpuTime;

fn thread_cpu_ns() -> u64 {
    let ts = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).expect("thread CPU clock");
    let secs = u64::try_from(ts.tv_sec()).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec()).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a.saturating_add(*b)
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuNanos
    }
}

/// Formats thread CPU time like durations, with a `cpu` suffix.
struct CpuNanos;

impl CpuNanos {
    fn scale(typical: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if typical < 1e3 {
            (1.0, "ns cpu")
        } else if typical < 1e6 {
            (1e-3, "µs cpu")
        } else if typical < 1e9 {
            (1e-6, "ms cpu")
        } else {
            (1e-9, "s cpu")
        };
        for v in values {
            *v *= factor;
        }
        unit
    }
}

impl ValueFormatter for CpuNanos {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        Self::scale(typical, values)
    }
    fn scale_throughputs(&self, typical: f64, t: &Throughput, values: &mut [f64]) -> &'static str {
        let per = match t {
            Throughput::Bytes(n) | Throughput::BytesDecimal(n) | Throughput::Elements(n) => {
                *n as f64
            }
        };
        for v in values.iter_mut() {
            *v = per * 1e9 / *v;
        }
        let _ = typical;
        "units/s cpu"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

fn pool_table() -> ThinPoolTable {
    ThinPoolTable::new(
        DeviceRef::MajorMinor(253, 0),
        DeviceRef::MajorMinor(253, 1),
        BlockSize::new(128).expect("valid"),
        32768,
    )
    .and_then(|t| {
        t.with_features(PoolFeatures {
            skip_block_zeroing: true,
            ..PoolFeatures::default()
        })
    })
    .expect("valid")
}

fn bench_pool_status<M: Measurement>(c: &mut Criterion<M>, clock: &str) {
    let mut g = c.benchmark_group(format!("thin-pool status ({clock})"));
    g.bench_function("parse", |b| {
        b.iter(|| PoolStatus::parse(black_box(POOL_STATUS)))
    });
    let status = ThinPoolStatus::parse(POOL_STATUS).expect("valid");
    let mut buf = String::with_capacity(128);
    g.bench_function("format into reused buffer", |b| {
        b.iter(|| {
            buf.clear();
            write!(buf, "{}", black_box(&status)).expect("write to String");
            buf.len()
        })
    });
    g.bench_function("format to_string", |b| {
        b.iter(|| black_box(&status).to_string())
    });
    g.finish();
}

fn bench_pool_table<M: Measurement>(c: &mut Criterion<M>, clock: &str) {
    let mut g = c.benchmark_group(format!("thin-pool table ({clock})"));
    g.bench_function("parse params", |b| {
        b.iter(|| ThinPoolTable::parse_params(black_box(POOL_TABLE)))
    });
    let table = pool_table();
    let mut buf = String::with_capacity(128);
    g.bench_function("format params into reused buffer", |b| {
        b.iter(|| {
            buf.clear();
            write!(buf, "{}", black_box(&table)).expect("write to String");
            buf.len()
        })
    });
    g.bench_function("to_line", |b| {
        b.iter(|| black_box(&table).to_line(0, 2_097_152))
    });
    let line_text = table.to_line(0, 2_097_152).to_string();
    g.bench_function("parse whole line to Target", |b| {
        b.iter(|| {
            let l = TableLine::parse(black_box(&line_text)).expect("valid");
            Target::from_line(&l)
        })
    });
    g.finish();
}

fn bench_thin_status<M: Measurement>(c: &mut Criterion<M>, clock: &str) {
    let mut g = c.benchmark_group(format!("thin status ({clock})"));
    g.bench_function("parse", |b| {
        b.iter(|| ThinStatus::parse(black_box(THIN_STATUS)))
    });
    let s = ThinStatus::parse(THIN_STATUS).expect("valid");
    let mut buf = String::with_capacity(64);
    g.bench_function("format into reused buffer", |b| {
        b.iter(|| {
            buf.clear();
            write!(buf, "{}", black_box(&s)).expect("write to String");
            buf.len()
        })
    });
    g.finish();
}

fn wall(c: &mut Criterion<WallTime>) {
    bench_pool_status(c, "wall");
    bench_pool_table(c, "wall");
    bench_thin_status(c, "wall");
}

fn cpu(c: &mut Criterion<ThreadCpuTime>) {
    bench_pool_status(c, "cpu");
    bench_pool_table(c, "cpu");
    bench_thin_status(c, "cpu");
}

criterion_group!(wall_clock, wall);
criterion_group! {
    name = cpu_clock;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = cpu
}
criterion_main!(wall_clock, cpu_clock);
