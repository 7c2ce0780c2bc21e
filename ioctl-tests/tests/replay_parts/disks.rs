//! The disks of the replay suite: one `log-writes` device cut into two
//! linear segments (the set's root filesystem, the pool's metadata), the
//! pool's data on its own unlogged loop device, and the throwaway views a
//! replay point is checked on.

use dmthin::deviceset::StorageOptions;
use dmthin::dm::{Control, CreateOptions, DevId, RemoveOptions, StatusOptions, UdevFlags};
use dmthin::target::{DeviceRef, LinearTable, TableLine, TargetTable};
use dmthin_ioctl_tests::LoopDevice;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const MIB: u64 = 1 << 20;
/// The set's root filesystem: the first segment of the logged device.
pub const ROOT_BYTES: u64 = 32 * MIB;
/// The pool's metadata device at first, and once grown: the second segment.
pub const META_BYTES: u64 = 8 * MIB;
pub const META_GROWN_BYTES: u64 = 16 * MIB;
/// The logged device: both segments at their largest.
pub const LOGGED_BYTES: u64 = ROOT_BYTES + META_GROWN_BYTES;
/// The pool's data device at first, and once grown (unlogged).
pub const DATA_BYTES: u64 = 192 * MIB;
pub const DATA_GROWN_BYTES: u64 = 256 * MIB;
/// The log device (sparse: only what is logged takes memory).
const LOG_BYTES: u64 = 384 * MIB;
/// Copy-on-write space of a view (non-persistent snapshots).
const COW_BYTES: u64 = 24 * MIB;

/// Every device-mapper name of the suite starts with this.
pub const NAME_PREFIX: &str = "dmthin-test-rp-";

pub fn name(part: &str) -> String {
    format!("{NAME_PREFIX}{part}")
}

pub fn node(part: &str) -> PathBuf {
    PathBuf::from(format!("/dev/mapper/{}", name(part)))
}

fn sectors(bytes: u64) -> u64 {
    bytes / 512
}

/// A `linear` line of `len` bytes onto `dev` from byte `offset`.
fn linear(dev: &DeviceRef, offset: u64, len: u64) -> TableLine {
    LinearTable::new(dev.clone(), sectors(offset))
        .unwrap()
        .to_line(0, sectors(len))
}

/// A non-persistent `snapshot` of all of `origin` (`len` bytes): reads come
/// from `origin` until written, writes go to `cow` only.
fn snapshot(origin: &DeviceRef, cow: &DeviceRef, len: u64) -> TableLine {
    TableLine::new(0, sectors(len), "snapshot", format!("{origin} {cow} N 8")).unwrap()
}

fn loop_ref(l: &LoopDevice) -> DeviceRef {
    let (ma, mi) = dmthin_ioctl_tests::node_major_minor(l.path()).expect("a loop device's number");
    DeviceRef::MajorMinor(ma, mi)
}

/// Creates `name(part)` with one table line; its device number as a table reference.
pub fn create(ctl: &mut Control, part: &str, line: TableLine) -> Result<DeviceRef, String> {
    let info = ctl
        .create_with_table(
            &name(part),
            &CreateOptions::default(),
            &[line],
            UdevFlags::PRIVATE,
        )
        .map_err(|e| format!("creating {}: {e}", name(part)))?;
    Ok(DeviceRef::MajorMinor(info.dev.major, info.dev.minor))
}

/// Removes device `name`, retrying while it is briefly busy (a closing opener).
pub fn remove(ctl: &mut Control, name: &str) -> Result<(), String> {
    for attempt in 0.. {
        match ctl.remove(DevId::Name(name), &RemoveOptions::default()) {
            Ok(()) => return Ok(()),
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) if e.is_busy() && attempt < 50 => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("removing {name}: {e}")),
        }
    }
    unreachable!()
}

/// Removes every device whose name starts with one of `prefixes`, in an
/// order that lets each go: a set's thin devices, its pool, the linear
/// devices under the pool, then the snapshots and the log-writes device
/// under those. Failures are ignored (a leftover shows in the next create).
pub fn remove_all(ctl: &mut Control, prefixes: &[&str]) {
    let Ok(list) = ctl.list_devices() else { return };
    let rank = |n: &str| match n.strip_prefix(NAME_PREFIX) {
        Some("view" | "dsnap" | "lw") => 3,
        Some(_) => 2,
        None if n.ends_with("pool") => 1,
        None => 0,
    };
    for pass in 0..4 {
        for e in &list {
            if prefixes.iter().any(|p| e.name.starts_with(p)) && rank(&e.name) == pass {
                let _ = remove(ctl, &e.name);
            }
        }
    }
}

/// The loop devices under everything, and the logged disks while the workload runs.
pub struct Disks {
    pub dir: PathBuf,
    _logged: LoopDevice,
    log: LoopDevice,
    data: LoopDevice,
    lw: DeviceRef,
}

impl Disks {
    /// Loop devices over sparse files in `dir`; `lw` = log-writes(logged,
    /// log); `root` and `meta` its two segments; `data` a linear over the
    /// data loop.
    pub fn new(ctl: &mut Control, dir: &Path) -> Disks {
        let logged = LoopDevice::with_sparse_file(dir, "logged", LOGGED_BYTES);
        let log = LoopDevice::with_sparse_file(dir, "log", LOG_BYTES);
        let data = LoopDevice::with_sparse_file(dir, "data", DATA_GROWN_BYTES);
        let params = format!("{} {}", logged.majmin(), log.majmin());
        let lw_line = TableLine::new(0, sectors(LOGGED_BYTES), "log-writes", params).unwrap();
        let lw = create(ctl, "lw", lw_line).unwrap();
        create(ctl, "root", linear(&lw, 0, ROOT_BYTES)).unwrap();
        create(ctl, "meta", linear(&lw, ROOT_BYTES, META_BYTES)).unwrap();
        create(ctl, "data", linear(&loop_ref(&data), 0, DATA_BYTES)).unwrap();
        Disks {
            dir: dir.to_path_buf(),
            _logged: logged,
            log,
            data,
            lw,
        }
    }

    /// The pool's storage as the set records it.
    pub fn storage() -> StorageOptions {
        StorageOptions::BlockDevices {
            data: node("data"),
            metadata: node("meta"),
        }
    }

    /// Logs a mark: the `mark <name>` message to the log-writes target.
    pub fn mark(&self, ctl: &mut Control, mark: &str) {
        ctl.send_message(DevId::Name(&name("lw")), 0, &format!("mark {mark}"))
            .unwrap_or_else(|e| panic!("mark {mark}: {e}"));
    }

    /// Grows the data device to [`DATA_GROWN_BYTES`] (the pool is grown after).
    pub fn grow_data(&self, ctl: &mut Control) {
        let line = linear(&loop_ref(&self.data), 0, DATA_GROWN_BYTES);
        ctl.reload_table(DevId::Name(&name("data")), &[line], UdevFlags::PRIVATE)
            .unwrap();
    }

    /// Grows the metadata segment to [`META_GROWN_BYTES`].
    pub fn grow_meta(&self, ctl: &mut Control) {
        let line = linear(&self.lw, ROOT_BYTES, META_GROWN_BYTES);
        ctl.reload_table(DevId::Name(&name("meta")), &[line], UdevFlags::PRIVATE)
            .unwrap();
    }

    /// Ends logging: checks the target logged everything, removes the
    /// segments and the log-writes device (which writes its final super).
    /// Returns the log file and the number of entries the target reported.
    pub fn finish_log(&self, ctl: &mut Control) -> (PathBuf, u64) {
        let (_, lines) = ctl
            .table_status(DevId::Name(&name("lw")), &StatusOptions::default())
            .unwrap();
        let status = lines[0].params().to_string();
        assert!(
            !status.contains("logging_disabled"),
            "log-writes stopped logging (log device full?): {status}"
        );
        let entries: u64 = status.split_whitespace().next().unwrap().parse().unwrap();
        for part in ["root", "meta", "data", "lw"] {
            remove(ctl, &name(part)).unwrap();
        }
        (self.log.backing_file().to_path_buf(), entries)
    }

    /// The file the log is replayed onto: as big as the logged device, all
    /// zeros (the logged device's state when logging began).
    pub fn replay_target(&self) -> LoopDevice {
        LoopDevice::with_sparse_file(&self.dir, "replay", LOGGED_BYTES)
    }

    /// Copy-on-write devices for the views (reused: a non-persistent
    /// snapshot starts empty whatever they hold).
    pub fn cows(&self) -> (LoopDevice, LoopDevice) {
        (
            LoopDevice::with_sparse_file(&self.dir, "cow", COW_BYTES),
            LoopDevice::with_sparse_file(&self.dir, "dcow", COW_BYTES),
        )
    }

    pub fn data_loop(&self) -> &LoopDevice {
        &self.data
    }
}

/// Creates the set's disks as a crash at a replay point left them, writable
/// without touching the replay: `view` = snapshot(replay file), cut into
/// `vroot` and `meta` (the name the set records); `dsnap` = snapshot(data
/// loop) and `data` its first `data_bytes`. [`remove_all`] removes them.
pub fn create_view(
    ctl: &mut Control,
    replay: &LoopDevice,
    cows: &(LoopDevice, LoopDevice),
    data: &LoopDevice,
    meta_bytes: u64,
    data_bytes: u64,
) -> Result<(), String> {
    let view = create(
        ctl,
        "view",
        snapshot(&loop_ref(replay), &loop_ref(&cows.0), LOGGED_BYTES),
    )?;
    create(ctl, "vroot", linear(&view, 0, ROOT_BYTES))?;
    create(ctl, "meta", linear(&view, ROOT_BYTES, meta_bytes))?;
    let dsnap = create(
        ctl,
        "dsnap",
        snapshot(&loop_ref(data), &loop_ref(&cows.1), DATA_GROWN_BYTES),
    )?;
    create(ctl, "data", linear(&dsnap, 0, data_bytes))?;
    Ok(())
}
