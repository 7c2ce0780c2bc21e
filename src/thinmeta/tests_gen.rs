//! Test support: random pools written as `thin_dump` XML, turned into real
//! metadata by `thin_restore`, and the output of `thin_ls` and `thin_dump`
//! parsed for comparison. The tools come from thin-provisioning-tools, which
//! CI installs; a missing tool fails the test with a message saying so.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// xorshift64*: deterministic, seeded per test.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A model pool: each device's virtual -> data block map. Data blocks are
/// handed out in order and never reused, like a pool that has not wrapped.
pub(super) struct Pool {
    pub(super) nr_data_blocks: u64,
    pub(super) data_block_sectors: u32,
    pub(super) devices: BTreeMap<u32, BTreeMap<u64, u64>>,
    next_free: u64,
}

impl Pool {
    pub(super) fn new(nr_data_blocks: u64) -> Self {
        Pool {
            nr_data_blocks,
            data_block_sectors: 128,
            devices: BTreeMap::new(),
            next_free: 0,
        }
    }

    fn alloc(&mut self) -> u64 {
        let b = self.next_free;
        assert!(b < self.nr_data_blocks, "model pool out of data blocks");
        self.next_free += 1;
        b
    }

    /// Writes `n` random virtual blocks below `virt` of device `id` (new
    /// data blocks: a write to a shared block breaks the sharing).
    pub(super) fn write(&mut self, id: u32, rng: &mut Rng, n: u64, virt: u64) {
        for _ in 0..n {
            let v = rng.below(virt);
            let d = self.alloc();
            self.devices.entry(id).or_default().insert(v, d);
        }
    }

    /// Writes `n` consecutive virtual blocks from `start` (long ranges).
    pub(super) fn write_range(&mut self, id: u32, start: u64, n: u64) {
        for v in start..start + n {
            let d = self.alloc();
            self.devices.entry(id).or_default().insert(v, d);
        }
    }

    pub(super) fn snapshot(&mut self, origin: u32, id: u32) {
        let m = self.devices.get(&origin).cloned().unwrap_or_default();
        self.devices.insert(id, m);
    }

    pub(super) fn delete(&mut self, id: u32) {
        self.devices.remove(&id);
    }

    pub(super) fn total_mappings(&self) -> u64 {
        self.devices.values().map(|m| m.len() as u64).sum()
    }

    /// (thin id, mapped, exclusive) per device by the model.
    pub(super) fn expected(&self) -> Vec<(u32, u64, u64)> {
        let mut refs: HashMap<u64, u32> = HashMap::new();
        for m in self.devices.values() {
            for &d in m.values() {
                *refs.entry(d).or_default() += 1;
            }
        }
        self.devices
            .iter()
            .map(|(&id, m)| {
                let excl = m.values().filter(|d| refs.get(d) == Some(&1)).count();
                (id, m.len() as u64, excl as u64)
            })
            .collect()
    }

    /// The pool as `thin_dump` XML, runs coalesced into range mappings.
    pub(super) fn xml(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<superblock uuid="" time="0" transaction="1" flags="0" version="2" data_block_size="{}" nr_data_blocks="{}">"#,
            self.data_block_sectors, self.nr_data_blocks
        );
        for (id, m) in &self.devices {
            let _ = writeln!(
                s,
                r#"  <device dev_id="{id}" mapped_blocks="{}" transaction="0" creation_time="0" snap_time="0">"#,
                m.len()
            );
            let mut run: Option<(u64, u64, u64)> = None;
            let emit = |s: &mut String, r: (u64, u64, u64)| {
                let _ = if r.2 == 1 {
                    writeln!(
                        s,
                        r#"    <single_mapping origin_block="{}" data_block="{}" time="0"/>"#,
                        r.0, r.1
                    )
                } else {
                    writeln!(
                        s,
                        r#"    <range_mapping origin_begin="{}" data_begin="{}" length="{}" time="0"/>"#,
                        r.0, r.1, r.2
                    )
                };
            };
            for (&v, &d) in m {
                run = match run {
                    Some((v0, d0, n)) if v0 + n == v && d0 + n == d => Some((v0, d0, n + 1)),
                    Some(r) => {
                        emit(&mut s, r);
                        Some((v, d, 1))
                    }
                    None => Some((v, d, 1)),
                };
            }
            if let Some(r) = run {
                emit(&mut s, r);
            }
            s.push_str("  </device>\n");
        }
        s.push_str("</superblock>\n");
        s
    }
}

/// A scratch directory removed on drop.
pub(super) struct Scratch(pub(super) PathBuf);

impl Scratch {
    pub(super) fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "dmthin-thinmeta-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tool(name: &str) -> Command {
    let found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists());
    match found {
        Some(p) => Command::new(p),
        None => panic!(
            "{name} not found: these tests need thin-provisioning-tools \
             (apt-get install thin-provisioning-tools)"
        ),
    }
}

fn run(mut cmd: Command) -> String {
    let out = cmd
        .output()
        .expect("running a thin-provisioning-tools command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Restores `pool` into `dir/meta` (sized for its mappings) and returns the path.
pub(super) fn restore(pool: &Pool, dir: &Path) -> PathBuf {
    let xml = dir.join("pool.xml");
    std::fs::write(&xml, pool.xml()).expect("write xml");
    let meta = dir.join("meta");
    let size = (8 << 20u64).max(pool.total_mappings() * 40 + (4 << 20));
    let f = std::fs::File::create(&meta).expect("create metadata file");
    f.set_len(size.next_multiple_of(4096))
        .expect("size metadata file");
    let mut cmd = tool("thin_restore");
    cmd.arg("-i").arg(&xml).arg("-o").arg(&meta);
    run(cmd);
    meta
}

/// `thin_ls` rows: (thin id, mapped, exclusive, shared) in blocks.
pub(super) fn thin_ls(meta: &Path, snapshot: bool) -> Vec<(u32, u64, u64, u64)> {
    let mut cmd = tool("thin_ls");
    cmd.args([
        "--no-headers",
        "-o",
        "DEV,MAPPED_BLOCKS,EXCLUSIVE_BLOCKS,SHARED_BLOCKS",
    ]);
    if snapshot {
        cmd.arg("-m");
    }
    cmd.arg(meta);
    run(cmd)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .map(|w| w.parse().expect("thin_ls number"))
                .collect();
            assert_eq!(f.len(), 4, "thin_ls row {l:?}");
            (f[0] as u32, f[1], f[2], f[3])
        })
        .collect()
}

/// Thin ids in `thin_dump`'s output, in order.
pub(super) fn thin_dump_ids(meta: &Path) -> Vec<u32> {
    let mut cmd = tool("thin_dump");
    cmd.arg(meta);
    run(cmd)
        .split("dev_id=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().parse().expect("dev_id"))
        .collect()
}
