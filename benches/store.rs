//! Metadata store costs: one device change (write + remove, both durable) with
//! 10 and with 10,000 existing records, whose ratio should be about 1, and
//! loading 10,000 records.
//!
//! Runs in cargo's target tmp dir, so the fsyncs hit a real file system.

use std::fs;
use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use dmthin::internals::{DeviceRecord, MetadataStore};

const MAX_ID: usize = 77;

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A store holding `n` device records (seeded without fsync, for speed).
fn seeded(n: u32) -> (Scratch, MetadataStore) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-store-{n}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let store = MetadataStore::open(&dir, MAX_ID).unwrap();
    for i in 0..n {
        let r = DeviceRecord::new(format!("{i:064x}"), None, i + 1, 10 << 30);
        fs::write(
            store.device_path(&r.id).unwrap(),
            serde_json::to_vec_pretty(&r).unwrap(),
        )
        .unwrap();
    }
    (Scratch(dir), store)
}

fn write_remove(c: &mut Criterion) {
    let mut g = c.benchmark_group("store/write_device+remove_device_record");
    g.sample_size(30);
    for n in [10u32, 10_000] {
        let (_dir, store) = seeded(n);
        let rec = DeviceRecord::new(
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            Some(format!("{:064x}", 0)),
            0xFF_FFFF,
            10 << 30,
        );
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                store.write_device(&rec).unwrap();
                store.remove_device_record(&rec.id).unwrap();
            })
        });
    }
    g.finish();
}

fn load(c: &mut Criterion) {
    let mut g = c.benchmark_group("store/open+load_all");
    g.sample_size(10);
    let (dir, _) = seeded(10_000);
    g.bench_function("10000", |b| {
        b.iter(|| {
            let store = MetadataStore::open(&dir.0, MAX_ID).unwrap();
            let rep = store.load_all().unwrap();
            assert_eq!(rep.devices.len(), 10_000);
        })
    });
    g.finish();
}

criterion_group!(benches, write_remove, load);
criterion_main!(benches);
