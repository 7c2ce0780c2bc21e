//! Shared fixtures of the device-set and crash suites.
#![allow(dead_code)]

use dmthin::deviceset::{DeviceSet, FsKind, Options, StorageOptions};
use dmthin::dm::{Control, CreateOptions, DevId, RemoveOptions, UdevFlags};
use dmthin::target::TableLine;
use dmthin_ioctl_tests::TempDir;
pub use dmthin_ioctl_tests::{majmin, sh, sh_ok, LoopDevice};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const MIB: u64 = 1 << 20;

/// A fresh device-set root directory, `/tmp/dmthin-ds-TAG`; on drop, whatever
/// the test left is torn down, then the directory is removed.
pub struct Root(pub PathBuf, TempDir);

impl Root {
    pub fn new(tag: &str) -> Root {
        let dir = TempDir::at(format!("/tmp/dmthin-ds-{tag}"));
        Root(dir.path().to_path_buf(), dir)
    }

    /// A fresh root at `path` (say on a scratch disk), torn down the same way.
    pub fn at(path: impl Into<PathBuf>) -> Root {
        let dir = TempDir::at(path);
        Root(dir.path().to_path_buf(), dir)
    }

    pub fn mnt(&self, name: &str) -> PathBuf {
        self.0.join("mnt").join(name)
    }
}

/// The `--scratch` disk as a fresh ext4 at /mnt/scratch (made by the first
/// test binary of the boot that asks), when the run has one.
pub fn scratch_dir() -> Option<&'static Path> {
    static DIR: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dev = dmthin_ioctl_tests::scratch_device()?;
        let mnt = PathBuf::from("/mnt/scratch");
        std::fs::create_dir_all(&mnt).unwrap();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        if !mounts.lines().any(|l| l.split(' ').nth(1) == mnt.to_str()) {
            sh_ok(&format!(
                "mkfs.ext4 -q -F {d} && mount {d} {m}",
                d = dev.display(),
                m = mnt.display()
            ));
        }
        Some(mnt)
    })
    .as_deref()
}

/// A set root on the scratch disk when the run has one, else in /tmp (a
/// tmpfs of half the guest's memory: it holds less than 512 MiB).
pub fn big_root(tag: &str) -> Root {
    match scratch_dir() {
        Some(d) => Root::at(d.join(tag)),
        None => Root::new(tag),
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        // Best-effort teardown of anything a failed test left behind.
        let prefix = dmthin::deviceset::name_prefix(&self.0).unwrap_or_default();
        let (_, mounts) = sh("cat /proc/self/mounts");
        for line in mounts.lines() {
            if let Some(mp) = line.split(' ').nth(1) {
                if mp.starts_with(&self.0.display().to_string()) {
                    let _ = nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH);
                }
            }
        }
        if let Ok(mut c) = Control::open() {
            if let Ok(list) = c.list_devices() {
                for pass in 0..2 {
                    for e in &list {
                        let is_pool = e.name.ends_with("pool");
                        if e.name.starts_with(&prefix) && (is_pool == (pass == 1)) {
                            let _ = c.remove(DevId::Name(&e.name), &RemoveOptions::default());
                        }
                    }
                }
            }
        }
        // the TempDir field removes the directory after this
    }
}

pub fn options(fs: FsKind) -> Options {
    Options {
        storage: StorageOptions::LoopFiles {
            data_size: 1024 * MIB,
            metadata_size: 16 * MIB,
        },
        base_size: if fs == FsKind::Xfs {
            320 * MIB
        } else {
            64 * MIB
        },
        filesystem: fs,
        busy_retries: 3,
        udev_timeout: Duration::from_secs(10),
        ..Options::default()
    }
}

/// Thin ids in the pool's own metadata, read with thin_dump from a metadata snapshot.
pub fn pool_thin_ids(set: &DeviceSet) -> BTreeSet<u32> {
    let pool = set.pool_name().to_string();
    let meta = set.root().join("devicemapper/metadata");
    let loopdev = sh_ok(&format!("losetup -j {} | cut -d: -f1", meta.display()));
    let loopdev = loopdev
        .lines()
        .next()
        .expect("metadata loop device")
        .trim()
        .to_string();
    sh_ok(&format!("dmsetup message {pool} 0 reserve_metadata_snap"));
    let (ok, xml) = sh(&format!("thin_dump --metadata-snap {loopdev}"));
    sh_ok(&format!("dmsetup message {pool} 0 release_metadata_snap"));
    assert!(ok, "thin_dump failed: {xml}");
    xml.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let rest = l.strip_prefix("<device dev_id=\"")?;
            rest.split('"').next()?.parse().ok()
        })
        .collect()
}

/// The pool holds exactly the thin ids the records name (plus the base).
pub fn check_invariants(set: &DeviceSet) {
    let status = set.status().unwrap();
    let mut expected: BTreeSet<u32> = set.list().unwrap().iter().map(|d| d.thin_id).collect();
    expected.insert(status.base_thin_id);
    assert_eq!(pool_thin_ids(set), expected, "pool thin ids vs records");
    let dm = sh_ok(&format!("dmsetup status {}", set.pool_name()));
    let txn: u64 = dm.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert_eq!(txn, status.transaction_id);
}

/// Runs thin_check on a metadata file (through a loop device: thin_check uses
/// O_DIRECT, which the guest's tmpfs refuses). Returns its verdict and output.
pub fn thin_check_file(meta: &std::path::Path) -> (bool, String) {
    let dev = LoopDevice::attach(meta);
    sh(&format!("thin_check {}", dev.path_str()))
}

/// Writes one 4 KiB block of zeros at each MiB offset given, bypassing the
/// page cache, then fsyncs (a flush: the pool commits its metadata).
pub fn write_blocks(node: &Path, mib_offsets: &[u64]) -> (bool, String) {
    let cmds: Vec<String> = mib_offsets
        .iter()
        .map(|m| {
            format!(
                "dd if=/dev/urandom of={} bs=4k count=1 seek={} oflag=direct conv=notrunc,fsync 2>&1",
                node.display(),
                m * 256
            )
        })
        .collect();
    sh(&format!("set -e; {}", cmds.join("; ")))
}

/// A `flakey` table over device node `dev`: healthy, or failing every write.
pub fn flakey_line(dev: impl AsRef<Path>, sectors: u64, failing: bool) -> Vec<TableLine> {
    // up 1 s / down 0 s = healthy; up 0 s / down 1 s with error_writes = every write fails.
    let params = if failing {
        format!("{} 0 0 1 1 error_writes", majmin(dev))
    } else {
        format!("{} 0 1 0", majmin(dev))
    };
    vec![TableLine::new(0, sectors, "flakey", params).unwrap()]
}

/// Pool disks that can be made to fail: healthy `flakey` devices `<tag>-data`
/// (512 MiB) and `<tag>-meta` (16 MiB) over loop files in `dir`. Dropping it
/// removes both, then its loop devices detach.
pub struct FlakeyDisks {
    pub data_loop: LoopDevice,
    pub meta_loop: LoopDevice,
    pub data: String,
    pub meta: String,
}

impl FlakeyDisks {
    pub const DATA_MIB: u64 = 512;
    pub const META_MIB: u64 = 16;

    pub fn new(dir: &Path, tag: &str) -> FlakeyDisks {
        let disks = FlakeyDisks {
            data_loop: LoopDevice::with_sparse_file(dir, "data", Self::DATA_MIB * MIB),
            meta_loop: LoopDevice::with_sparse_file(dir, "meta", Self::META_MIB * MIB),
            data: format!("dmthin-test-{tag}-data"),
            meta: format!("dmthin-test-{tag}-meta"),
        };
        let mut c = Control::open().unwrap();
        for (name, dev, mib) in [
            (&disks.meta, &disks.meta_loop, Self::META_MIB),
            (&disks.data, &disks.data_loop, Self::DATA_MIB),
        ] {
            c.create_with_table(
                name,
                &CreateOptions::default(),
                &flakey_line(dev.path(), mib * MIB / 512, false),
                UdevFlags::PRIVATE,
            )
            .unwrap();
        }
        disks
    }

    /// Options of an ext4 set on these disks.
    pub fn options(&self) -> Options {
        let mut o = options(FsKind::Ext4);
        o.storage = self.storage();
        o
    }

    /// The set's storage on these disks.
    pub fn storage(&self) -> StorageOptions {
        StorageOptions::BlockDevices {
            data: format!("/dev/mapper/{}", self.data).into(),
            metadata: self.meta_node().into(),
        }
    }

    pub fn meta_node(&self) -> String {
        format!("/dev/mapper/{}", self.meta)
    }

    /// Replaces the metadata device's table (`flakey_line` healthy or failing, or another).
    pub fn set_meta_table(&self, table: &[TableLine]) {
        Control::open()
            .unwrap()
            .reload_table(DevId::Name(&self.meta), table, UdevFlags::PRIVATE)
            .unwrap();
    }

    /// Every metadata write fails (`failing`) or none does.
    pub fn fail_meta_writes(&self, failing: bool) {
        self.set_meta_table(&flakey_line(
            self.meta_loop.path(),
            Self::META_MIB * MIB / 512,
            failing,
        ));
    }
}

impl Drop for FlakeyDisks {
    fn drop(&mut self) {
        let mut c = Control::open().unwrap();
        for n in [&self.meta, &self.data] {
            let _ = c.remove(DevId::Name(n), &RemoveOptions::default());
        }
        // The loop devices detach as the fields drop, after this.
    }
}

/// Pool thin ids vs records for a set whose metadata is on `meta_dev`.
pub fn check_invariants_on(set: &DeviceSet, meta_dev: &str) {
    let pool = set.pool_name();
    sh_ok(&format!("dmsetup message {pool} 0 reserve_metadata_snap"));
    let (ok, xml) = sh(&format!("thin_dump --metadata-snap {meta_dev}"));
    sh_ok(&format!("dmsetup message {pool} 0 release_metadata_snap"));
    assert!(ok, "{xml}");
    let n = xml.matches("<device dev_id=").count();
    assert_eq!(n, set.list().unwrap().len() + 1, "{xml}");
}

/// Bytes the filesystem mounted at `mnt` spans (`stat -f`: blocks × size).
pub fn fs_bytes(mnt: &Path) -> u64 {
    sh_ok(&format!("stat -f -c '%b %S' {}", mnt.display()))
        .split_whitespace()
        .map(|x| x.parse::<u64>().unwrap())
        .product()
}

/// Runs the `dmthin` CLI (on PATH in the test VM) on the set at `root`.
pub fn dmthin_cli(root: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new("dmthin")
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("the dmthin CLI is on PATH in the test VM")
}

/// Runs the CLI like [`dmthin_cli`], asserts success and returns its stdout.
pub fn dmthin_ok(root: &Path, args: &[&str]) -> String {
    let out = dmthin_cli(root, args);
    assert!(
        out.status.success(),
        "dmthin {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `dmthin init` with a small pool and base, for CLI tests.
pub const SMALL_INIT: [&str; 7] = [
    "init",
    "--data-size",
    "256M",
    "--metadata-size",
    "16M",
    "--base-size",
    "64M",
];

/// The durable record of device `id` of the set at `root`, as the next open
/// reads it: the journal's last word on the device (a create or delete
/// with its done marker, an update), else its record file. `None`: no
/// record (deleted, or never made).
pub fn durable_record(root: &std::path::Path, id: &str) -> Option<serde_json::Value> {
    use serde_json::Value;
    let journal = std::fs::read_to_string(root.join("metadata/journal")).unwrap_or_default();
    let entries: Vec<Value> = journal
        .lines()
        .filter_map(|l| l.get(17..).and_then(|j| serde_json::from_str(j).ok()))
        .collect();
    let done = |seq: &Value| {
        entries
            .iter()
            .any(|e| e["op"] == "done" && e["seq"] == *seq)
    };
    let mut state: Option<Option<Value>> = None;
    for e in &entries {
        match e["op"].as_str() {
            Some("create") if e["record"]["id"] == id && done(&e["seq"]) => {
                state = Some(Some(e["record"].clone()))
            }
            Some("update") if e["record"]["id"] == id => state = Some(Some(e["record"].clone())),
            Some("delete") if e["device_id"] == id && done(&e["seq"]) => state = Some(None),
            _ => {}
        }
    }
    state.unwrap_or_else(|| {
        let file = root.join(format!("metadata/devices/{id}.json"));
        std::fs::read_to_string(file)
            .ok()
            .map(|t| serde_json::from_str(&t).unwrap())
    })
}

/// Thin ids in the metadata on `meta_dev` of the live pool `pool`.
pub fn thin_ids_on(pool: &str, meta_dev: &str) -> std::collections::BTreeSet<u32> {
    sh_ok(&format!("dmsetup message {pool} 0 reserve_metadata_snap"));
    let (ok, xml) = sh(&format!("thin_dump --metadata-snap {meta_dev}"));
    sh_ok(&format!("dmsetup message {pool} 0 release_metadata_snap"));
    assert!(ok, "{xml}");
    xml.lines()
        .filter_map(|l| {
            let rest = l.trim_start().strip_prefix("<device dev_id=\"")?;
            rest.split('"').next()?.parse().ok()
        })
        .collect()
}

/// Repairs a needs_check pool's metadata on `meta_node` (its pool removed)
/// as an operator would: `thin_check --clear-needs-check-flag`. Its verdict
/// and output.
pub fn clear_needs_check(meta_node: &str) -> (bool, String) {
    let (ok, out) = sh(&format!("thin_check --clear-needs-check-flag {meta_node}"));
    println!("thin_check: ok={ok} {out}");
    (ok, out)
}

/// A thin pool made by another owner (as LVM or Docker would), for a set to
/// adopt: `dmthin-test-<tag>-pool` over loop files of 512 MiB data and
/// 16 MiB metadata, 64 KiB blocks. Dropped: the pool is removed, then the
/// loops detached.
pub struct ForeignPool {
    pub name: String,
    pub data: LoopDevice,
    pub meta: LoopDevice,
}

impl ForeignPool {
    pub fn new(dir: &Path, tag: &str) -> ForeignPool {
        let mk = |name: &str, mib: u64| LoopDevice::with_sparse_file(dir, name, mib * MIB);
        let (data, meta) = (mk("data", 512), mk("meta", 16));
        let name = format!("dmthin-test-{tag}-pool");
        let params = format!("{} {} 128 32", meta.majmin(), data.majmin());
        let line = TableLine::new(0, 512 * MIB / 512, "thin-pool", params).unwrap();
        Control::open()
            .unwrap()
            .create_with_table(
                &name,
                &CreateOptions::default(),
                &[line],
                UdevFlags::PRIVATE,
            )
            .unwrap();
        ForeignPool { name, data, meta }
    }

    /// Options of a set that adopts this pool.
    pub fn options(&self) -> Options {
        let mut o = options(FsKind::Ext4);
        o.storage = StorageOptions::AdoptPool {
            name: self.name.clone(),
        };
        o
    }

    /// Thin ids in the pool's metadata.
    pub fn thin_ids(&self) -> BTreeSet<u32> {
        thin_ids_on(&self.name, self.meta.path_str())
    }
}

impl Drop for ForeignPool {
    fn drop(&mut self) {
        if let Ok(mut c) = Control::open() {
            let _ = c.remove(DevId::Name(&self.name), &RemoveOptions::default());
        }
    }
}
