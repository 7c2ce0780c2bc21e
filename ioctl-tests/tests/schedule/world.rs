//! The sets the seeded schedule runs on ([`World`]): one on small loop
//! files shared by most seeds, and one on dm-flakey disks whose metadata
//! writes can be made to fail (a pool that needs a check). Also what is
//! done to a pool behind the set's back: a read-only table, filling it,
//! failing its metadata writes.

use crate::common::*;
use dmthin::deviceset::{DeviceSet, FsKind, Options, StorageOptions};
use dmthin::dm::{Control, DevId, StatusKind, StatusOptions, UdevFlags};
use dmthin::target::TableLine;
use dmthin::thinmeta::{Metadata, Source};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The main set's data size at the start; growth stops at [`DATA_CAP`]
/// (a later grow is a reload at the same size), so a fill stays short.
pub const DATA_START: u64 = 80 * MIB;
pub const DATA_CAP: u64 = 96 * MIB;
/// Metadata: 8 MiB, grown by 1 MiB up to 12.
pub const META_START: u64 = 8 * MIB;
pub const META_CAP: u64 = 12 * MIB;
/// Every device's size (the base's): two fillers exceed the pool.
pub const BASE: u64 = 64 * MIB;

/// A set the schedule runs on, and what it needs to crash and reopen it.
pub struct World {
    /// The open set (`None` between a crash and the reopen).
    pub set: Option<DeviceSet>,
    /// The set's root; dropping it tears down what is left.
    pub root: Root,
    pub options: Options,
    /// The flakey world's disks (after `root`: dropped once the pool is gone).
    pub disks: Option<FlakeyDisks>,
    _disk_dir: Option<Root>,
    /// Thin ids of devices removed so far: a new device that gets one is a
    /// thin id reuse.
    pub freed_thins: BTreeSet<u32>,
}

impl World {
    /// A set on small loop files under `/tmp/dmthin-ds-<tag>`.
    pub fn main(tag: &str) -> World {
        let storage = StorageOptions::LoopFiles {
            data_size: DATA_START,
            metadata_size: META_START,
        };
        World::opened(Root::new(tag), storage, None)
    }

    /// A set on dm-flakey disks (`FlakeyDisks`).
    pub fn flakey(tag: &str) -> World {
        let disk_dir = Root::new(&format!("{tag}-disks"));
        let disks = FlakeyDisks::new(&disk_dir.0, tag);
        let root = Root::at(disk_dir.0.join("set"));
        World::opened(root, disks.storage(), Some((disks, disk_dir)))
    }

    /// A new set at `root` on `storage`, open.
    fn opened(root: Root, storage: StorageOptions, disks: Option<(FlakeyDisks, Root)>) -> World {
        let mut o = options(FsKind::Ext4);
        o.storage = storage;
        o.base_size = BASE;
        o.busy_retries = 3;
        let (disks, disk_dir) = disks.unzip();
        let mut world = World {
            set: None,
            root,
            options: o,
            disks,
            _disk_dir: disk_dir,
            freed_thins: BTreeSet::new(),
        };
        world.open().expect("a new set opens");
        world
    }

    pub fn set(&self) -> &DeviceSet {
        self.set.as_ref().expect("the set is open")
    }

    pub fn path(&self) -> &Path {
        &self.root.0
    }

    /// Opens the set (it must be closed).
    pub fn open(&mut self) -> dmthin::deviceset::Result<()> {
        assert!(self.set.is_none(), "the set is open already");
        self.set = Some(DeviceSet::open(&self.root.0, self.options.clone())?);
        Ok(())
    }

    /// A crash: the set is dropped without a shutdown, as a killed process
    /// leaves it (the kernel's devices and mounts stay).
    pub fn crash(&mut self) {
        self.set = None;
    }

    pub fn mnt(&self, id: &str) -> PathBuf {
        self.root.0.join("mnt").join(id)
    }

    pub fn pool(&self) -> String {
        self.set().pool_name().to_string()
    }

    /// Whether the pool refuses changes (not `rw`, or wants a check).
    pub fn degraded(&self) -> bool {
        let st = self.set().status().expect("status");
        st.mode != "rw" || st.needs_check
    }

    pub fn mode(&self) -> String {
        let st = self.set().status().expect("status");
        format!(
            "{}{}",
            st.mode,
            if st.needs_check { " needs_check" } else { "" }
        )
    }

    /// The file under the pool's metadata (the loop file, or the one under
    /// flakey's loop device): read in-process, it sees every write the pool
    /// made (the loop device writes through its page cache).
    fn meta_file(&self) -> PathBuf {
        match &self.disks {
            Some(_) => self.root.0.parent().unwrap().join("meta.img"),
            None => self.root.0.join("devicemapper/metadata"),
        }
    }

    /// Runs `f` with a metadata snapshot of the pool held.
    fn holding_snapshot<T>(&self, f: impl FnOnce() -> T) -> T {
        let pool = self.pool();
        let mut ctl = Control::open().unwrap();
        ctl.send_message(DevId::Name(&pool), 0, "reserve_metadata_snap")
            .expect("reserve_metadata_snap");
        let out = f();
        ctl.send_message(DevId::Name(&pool), 0, "release_metadata_snap")
            .expect("release_metadata_snap");
        out
    }

    /// Thin ids and transaction id in the live pool's metadata: a held
    /// metadata snapshot read in-process (the crate's reader), or with
    /// `thin_dump` (slower under emulation, independent of the crate).
    pub fn pool_thin_ids(&self, thin_dump: bool) -> (BTreeSet<u32>, Option<u64>) {
        if !thin_dump {
            let file = self.meta_file();
            return self.holding_snapshot(|| {
                let f = std::fs::File::open(&file).unwrap();
                let md = Metadata::open(f, Source::Snapshot).expect("metadata snapshot");
                (
                    md.thin_ids().into_iter().collect(),
                    Some(md.transaction_id()),
                )
            });
        }
        let Some(disks) = &self.disks else {
            return (pool_thin_ids(self.set()), None);
        };
        let dev = disks.meta_node();
        let (ok, xml) = self.holding_snapshot(|| sh(&format!("thin_dump --metadata-snap {dev}")));
        assert!(ok, "thin_dump failed: {xml}");
        let ids = xml
            .lines()
            .filter_map(|l| {
                let rest = l.trim_start().strip_prefix("<device dev_id=\"")?;
                rest.split('"').next()?.parse().ok()
            })
            .collect();
        (ids, None)
    }

    /// The pool holds exactly the thin ids the set's records name (and the
    /// base's), and its transaction id is the set's. Only meaningful with
    /// nothing unsettled or pending deletion.
    pub fn check_invariants(&self, thin_dump: bool) {
        let set = self.set();
        let status = set.status().unwrap();
        let mut expected: BTreeSet<u32> = set.list().unwrap().iter().map(|d| d.thin_id).collect();
        expected.insert(status.base_thin_id);
        let (ids, txn) = self.pool_thin_ids(thin_dump);
        assert_eq!(ids, expected, "pool thin ids vs records");
        if let Some(txn) = txn {
            assert_eq!(
                txn, status.transaction_id,
                "pool transaction id vs the set's"
            );
        }
    }

    /// Reloads the pool's table with or without the `read_only` feature,
    /// behind the set's back (an operator, or a pool another tool set
    /// read-only): the set then runs degraded.
    pub fn set_pool_read_only(&self, read_only: bool) {
        let pool = self.pool();
        let mut ctl = Control::open().unwrap();
        let table = StatusOptions {
            kind: StatusKind::Table,
            ..StatusOptions::default()
        };
        let (_, lines) = ctl.table_status(DevId::Name(&pool), &table).unwrap();
        let line = &lines[0];
        assert_eq!(line.target_type(), "thin-pool", "{line:?}");
        // meta data block_size low_water_mark #features features...
        let words: Vec<&str> = line.params().split_whitespace().collect();
        let n: usize = words[4].parse().unwrap();
        let mut features: Vec<&str> = words[5..5 + n]
            .iter()
            .copied()
            .filter(|f| *f != "read_only")
            .collect();
        if read_only {
            features.push("read_only");
        }
        let params = format!(
            "{} {} {}",
            words[..4].join(" "),
            features.len(),
            features.join(" ")
        );
        let new = TableLine::new(line.start(), line.length(), "thin-pool", params).unwrap();
        ctl.reload_table(DevId::Name(&pool), &[new], UdevFlags::PRIVATE)
            .unwrap();
    }

    /// Waits (up to 10 s) until the pool is writable again by itself, as a
    /// pool out of data space becomes once discards free blocks and it
    /// commits. A status read without noflush makes it commit.
    pub fn wait_writable(&self) -> bool {
        let t0 = Instant::now();
        let mut ctl = Control::open().unwrap();
        loop {
            let _ = ctl.table_status(DevId::Name(&self.pool()), &StatusOptions::default());
            if !self.degraded() {
                return true;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Devices of the set left suspended, without a live table, or with an
    /// inactive one loaded: (name, what is wrong).
    pub fn stuck_devices(&self) -> Vec<(String, String)> {
        let prefix = dmthin::deviceset::name_prefix(self.path()).unwrap();
        let mut ctl = Control::open().unwrap();
        let mut stuck = Vec::new();
        for e in ctl.list_devices().unwrap() {
            if !e.name.starts_with(&prefix) {
                continue;
            }
            let Ok(info) = ctl.info(DevId::Name(&e.name)) else {
                continue;
            };
            let wrong = if info.suspended() {
                "suspended"
            } else if !info.active_table() {
                "without a table"
            } else if info.inactive_table() {
                "with an inactive table loaded"
            } else {
                continue;
            };
            if info.suspended() {
                let _ = ctl.resume(DevId::Name(&e.name), UdevFlags::empty());
            }
            stuck.push((e.name, wrong.to_string()));
        }
        stuck
    }

    /// Every mount under this set's `mnt/` directory, in the kernel.
    pub fn kernel_mounts(&self) -> BTreeSet<PathBuf> {
        let mnt = self.root.0.join("mnt");
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .map(PathBuf::from)
            .filter(|p| p.starts_with(&mnt))
            .collect()
    }

    /// The flakey world's repair after its metadata writes failed: the set
    /// shut down (the pool removed), the disks healthy again,
    /// `thin_check --clear-needs-check-flag` on the metadata. Returns
    /// thin_check's verdict and output.
    pub fn repair_flakey(&mut self) -> (bool, String) {
        if let Some(set) = self.set.take() {
            if let Err(e) = set.shutdown() {
                println!("shutdown of the degraded set: {e}");
            }
        }
        let disks = self.disks.as_ref().expect("a flakey world");
        disks.fail_meta_writes(false);
        sh(&format!(
            "thin_check --clear-needs-check-flag {}",
            disks.meta_node()
        ))
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(set) = self.set.take() {
            let _ = set.shutdown();
        }
        if let Some(d) = &self.disks {
            d.fail_meta_writes(false);
        }
    }
}
