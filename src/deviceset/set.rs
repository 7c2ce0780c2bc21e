//! The device set: a thin pool, a base filesystem and one snapshot per layer.

use super::error::{DeviceSetError, Result};
use super::fs::{self as fsx, FsError};
use super::ids::{max_id_len_for_prefix, validate_device_id, ThinIdAllocator};
use super::lock::SetLock;
use super::store::{
    DeviceRecord, FsKind, MetadataStore, RecordProblem, SetRecord, Storage, TransactionOp,
    TransactionRecord, FORMAT_VERSION,
};
use crate::dm::{
    Control, ControlOptions, CreateOptions, Dev, DevId, DmError, ErrorKind, NodeMode,
    RemoveOptions, StatusKind, StatusOptions, SuspendOptions, UdevFlags,
};
use crate::fail_point;
use crate::loopdev::{self, AttachOptions, LoopDevice};
use crate::target::{
    BlockSize, DeviceRef, PoolFeatures, PoolMessage, PoolMode, PoolStatus, TableLine, TargetTable,
    ThinId, ThinPoolStatus, ThinPoolTable, ThinStatus, ThinTable,
};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

const GIB: u64 = 1 << 30;
const SECTOR: u64 = 512;

/// Where the pool's data and metadata live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageOptions {
    /// Sparse files `<root>/devicemapper/{data,metadata}` on loop devices.
    LoopFiles {
        /// Size of the data file in bytes (grown, never shrunk).
        data_size: u64,
        /// Size of the metadata file in bytes (grown, never shrunk).
        metadata_size: u64,
    },
    /// Existing block devices.
    BlockDevices {
        /// The data device.
        data: PathBuf,
        /// The metadata device.
        metadata: PathBuf,
    },
    /// A pool that already exists, by its device-mapper name. It must be
    /// empty (transaction id 0) the first time the set uses it.
    AdoptPool {
        /// The pool's name.
        name: String,
    },
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions::LoopFiles {
            data_size: 100 * GIB,
            metadata_size: 2 * GIB,
        }
    }
}

/// A progress callback for long steps (mkfs, growing).
pub type Progress = Arc<dyn Fn(&str) + Send + Sync>;

/// Settings for [`DeviceSet::open`].
#[derive(Clone)]
pub struct Options {
    /// Pool storage.
    pub storage: StorageOptions,
    /// Pool data block size in bytes (64 KiB to 1 GiB, a multiple of 64 KiB).
    pub data_block_size: u64,
    /// Low water mark in data blocks; `None` picks 1% of the pool (at least 1).
    pub low_water_mark: Option<u64>,
    /// Size of the base device in bytes. Growing it later grows the base filesystem.
    pub base_size: u64,
    /// Filesystem of the base device.
    pub filesystem: FsKind,
    /// Extra mkfs arguments.
    pub mkfs_options: Vec<String>,
    /// Mount options (xfs always gets `nouuid`).
    pub mount_options: Vec<String>,
    /// Try the `discard` mount option (dropped where the filesystem refuses it).
    pub mount_discard: bool,
    /// Refuse `add_device` when free data or metadata space is below this percentage.
    pub min_free_space_percent: u32,
    /// Zero newly provisioned blocks (safe: a new layer never sees an old one's data).
    pub block_zeroing: bool,
    /// Longest wait for udev per device-mapper operation.
    pub udev_timeout: Duration,
    /// With udev running: wait for it through cookies, as libdevmapper does
    /// (`true`, the default), or bypass it ([`NodeMode::Bypass`]: the dm
    /// rules skip our devices and the set makes `/dev/mapper` nodes itself,
    /// no `/dev/disk/by-*` links). Bypassing makes activation several times
    /// faster on hosts where udev is slow; not recorded, so every open picks.
    pub udev_sync: bool,
    /// How often a busy device's deactivation is retried before giving up.
    pub busy_retries: u32,
    /// Called with a line of text before long steps.
    pub progress: Option<Progress>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("storage", &self.storage)
            .field("data_block_size", &self.data_block_size)
            .field("base_size", &self.base_size)
            .field("filesystem", &self.filesystem)
            .finish_non_exhaustive()
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            storage: StorageOptions::default(),
            data_block_size: 64 * 1024,
            low_water_mark: None,
            base_size: 10 * GIB,
            filesystem: FsKind::Ext4,
            mkfs_options: Vec::new(),
            mount_options: Vec::new(),
            mount_discard: true,
            min_free_space_percent: 10,
            block_zeroing: true,
            udev_timeout: Duration::from_secs(30),
            udev_sync: true,
            busy_retries: 20,
            progress: None,
        }
    }
}

/// One device of the set, as [`DeviceSet::list`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceSummary {
    /// The caller's id.
    pub id: String,
    /// The device it was snapshotted from (`None`: the base).
    pub parent: Option<String>,
    /// Its thin id in the pool.
    pub thin_id: u32,
    /// Its size in bytes.
    pub size: u64,
    /// Whether the caller marked it initialized.
    pub initialized: bool,
    /// Whether it is active (has a device-mapper device).
    pub active: bool,
    /// Where this set has it mounted.
    pub mount_points: Vec<PathBuf>,
    /// Bytes the pool has provisioned for it (only while active).
    pub mapped_bytes: Option<u64>,
}

/// Pool usage as [`DeviceSet::status`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetStatus {
    /// The pool's device-mapper name.
    pub pool_name: String,
    /// Data file or device.
    pub data_source: Option<PathBuf>,
    /// Metadata file or device.
    pub metadata_source: Option<PathBuf>,
    /// Data block size in bytes.
    pub data_block_size: u64,
    /// Data space used, bytes.
    pub data_used: u64,
    /// Data space total, bytes.
    pub data_total: u64,
    /// Metadata space used, bytes.
    pub metadata_used: u64,
    /// Metadata space total, bytes.
    pub metadata_total: u64,
    /// Pool mode: `rw`, `ro`, `out_of_data_space`, `out_of_metadata_space`
    /// (the kernel's `ro` with every metadata block used) or `fail`.
    pub mode: String,
    /// Whether the pool wants `thin_check`.
    pub needs_check: bool,
    /// The pool's transaction id.
    pub transaction_id: u64,
    /// Number of devices in the set (the base not counted).
    pub devices: usize,
    /// Base filesystem.
    pub filesystem: String,
    /// Base device size in bytes.
    pub base_size: u64,
    /// The base device's thin id in the pool.
    pub base_thin_id: u32,
}

/// What [`DeviceSet::remove_device_deferred`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveOutcome {
    /// The device is gone from the pool.
    Removed,
    /// The device is still held open; it goes once the holder closes it.
    Deferred,
}

struct Inner {
    ctl: Control,
    store: MetadataStore,
    set: SetRecord,
    /// Whether `set` has been written (false until the base device exists).
    set_written: bool,
    devices: BTreeMap<String, DeviceRecord>,
    ids: ThinIdAllocator,
    /// The pool's transaction id as of the last commit.
    transaction_id: u64,
    pool_dev: Dev,
    /// (device id, mount point) → reference count.
    mounts: BTreeMap<(String, PathBuf), u32>,
    /// Loop devices we hold (autoclear); dropping them lets the kernel detach.
    loops: Vec<LoopDevice>,
    closed: bool,
}

/// What does not change after open.
struct Cfg {
    root: PathBuf,
    prefix: String,
    pool_name: String,
    base_name: String,
    block_size: BlockSize,
    options: Options,
}

/// A thin pool with a base filesystem and one thin snapshot per caller id.
///
/// `Send + Sync`: calls from many threads serialise on an internal lock.
/// Every durable change is complete before a call returns.
pub struct DeviceSet {
    inner: Mutex<Inner>,
    cfg: Cfg,
    problems: Vec<RecordProblem>,
    _lock: SetLock,
}

impl std::fmt::Debug for DeviceSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceSet")
            .field("root", &self.cfg.root)
            .field("pool", &self.cfg.pool_name)
            .finish_non_exhaustive()
    }
}

/// The kernel-name prefix of a set rooted at `root`: `dmthin-<maj>:<min>-<ino>-`.
pub fn name_prefix(root: &Path) -> std::io::Result<String> {
    let meta = std::fs::metadata(root)?;
    let dev = Dev::from_dev_t(meta.dev());
    Ok(format!(
        "dmthin-{}:{}-{}-",
        dev.major,
        dev.minor,
        meta.ino()
    ))
}

/// The most metadata a thin-pool uses: 255 × (2^14 − 64) blocks of 4 KiB
/// (the kernel's DM_SM_METADATA_MAX_BLOCKS); the rest of a bigger device is
/// ignored.
pub const MAX_METADATA_BYTES: u64 = 255 * ((1 << 14) - 64) * 4096;

/// Which of the pool's two backing devices.
#[derive(Clone, Copy)]
enum Backing {
    Data,
    Metadata,
}

impl Backing {
    fn option(self) -> &'static str {
        match self {
            Backing::Data => "data size",
            Backing::Metadata => "metadata size",
        }
    }
}

fn sectors(bytes: u64) -> u64 {
    bytes / SECTOR
}

fn block_device_size(path: &Path) -> Result<u64> {
    use std::io::Seek;
    let mut f = std::fs::File::open(path).map_err(|e| DeviceSetError::InvalidOption {
        option: "storage",
        reason: format!("cannot open {}: {e}", path.display()),
    })?;
    f.seek(std::io::SeekFrom::End(0))
        .map_err(|e| DeviceSetError::InvalidOption {
            option: "storage",
            reason: format!("cannot size {}: {e}", path.display()),
        })
}

fn dev_of(path: &Path) -> Result<Dev> {
    let meta = std::fs::metadata(path).map_err(|e| DeviceSetError::InvalidOption {
        option: "storage",
        reason: format!("{}: {e}", path.display()),
    })?;
    use std::os::unix::fs::FileTypeExt;
    if !meta.file_type().is_block_device() {
        return Err(DeviceSetError::InvalidOption {
            option: "storage",
            reason: format!("{} is not a block device", path.display()),
        });
    }
    Ok(Dev::from_dev_t(meta.rdev()))
}

impl Cfg {
    fn device_name(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }

    fn progress(&self, msg: &str) {
        if let Some(p) = &self.options.progress {
            p(msg);
        }
        log::info!("{msg}");
    }

    fn data_file(&self) -> PathBuf {
        self.root.join("devicemapper").join("data")
    }

    fn metadata_file(&self) -> PathBuf {
        self.root.join("devicemapper").join("metadata")
    }

    fn low_water_mark(&self, data_sectors: u64) -> u64 {
        let blocks = data_sectors / u64::from(self.block_size.sectors());
        self.options.low_water_mark.unwrap_or((blocks / 100).max(1))
    }

    fn pool_table(&self, meta: Dev, data: Dev, data_bytes: u64) -> Result<TableLine> {
        let bs = u64::from(self.block_size.sectors());
        let len = sectors(data_bytes) / bs * bs;
        if len == 0 {
            return Err(DeviceSetError::InvalidOption {
                option: "data size",
                reason: format!("{data_bytes} bytes is smaller than one data block"),
            });
        }
        let features = PoolFeatures {
            skip_block_zeroing: !self.options.block_zeroing,
            // Fail writes at once when full: queueing hangs writers (XFS retries forever).
            error_if_no_space: true,
            ..PoolFeatures::default()
        };
        let table = ThinPoolTable::new(
            DeviceRef::MajorMinor(meta.major, meta.minor),
            DeviceRef::MajorMinor(data.major, data.minor),
            self.block_size,
            self.low_water_mark(len),
        )?
        .with_features(features)?;
        Ok(table.to_line(0, len))
    }

    /// The pool's live table line.
    fn pool_line(&self, inner: &mut Inner) -> Result<TableLine> {
        let (_, table) = inner.ctl.table_status(
            DevId::Name(&self.pool_name),
            &StatusOptions {
                kind: StatusKind::Table,
                ..Default::default()
            },
        )?;
        table
            .first()
            .cloned()
            .ok_or_else(|| DeviceSetError::PoolUnusable {
                pool: self.pool_name.clone(),
                reason: "no table".into(),
            })
    }

    /// Makes the pool's data or metadata backing at least `size` bytes: a
    /// loop file is extended and its loop device told; a block device must
    /// already be that big; an adopted pool is refused.
    fn grow_backing(&self, inner: &Inner, which: Backing, size: u64) -> Result<()> {
        let option = which.option();
        match &inner.set.storage {
            Storage::LoopFiles {
                data_file,
                metadata_file,
            } => {
                let file = match which {
                    Backing::Data => data_file,
                    Backing::Metadata => metadata_file,
                };
                loopdev::create_sparse_file(file, size)?;
                match loopdev::find_by_file(file)? {
                    Some(d) => Ok(d.set_capacity()?),
                    None => Err(DeviceSetError::PoolUnusable {
                        pool: self.pool_name.clone(),
                        reason: format!("no loop device is bound to {}", file.display()),
                    }),
                }
            }
            Storage::BlockDevices {
                data_device,
                metadata_device,
            } => {
                let device = match which {
                    Backing::Data => data_device,
                    Backing::Metadata => metadata_device,
                };
                let have = block_device_size(device)?;
                if have < size {
                    return Err(DeviceSetError::InvalidOption {
                        option,
                        reason: format!("{} holds only {have} bytes", device.display()),
                    });
                }
                Ok(())
            }
            Storage::AdoptedPool => Err(DeviceSetError::InvalidOption {
                option,
                reason: "an adopted pool is grown by its owner".into(),
            }),
        }
    }

    fn message(&self, inner: &mut Inner, msg: PoolMessage) -> std::result::Result<(), DmError> {
        // Thin-pool messages never reply: no reply buffer to copy.
        inner.ctl.send_message(
            DevId::Name(&self.pool_name),
            PoolMessage::SECTOR,
            &msg.to_string(),
        )
    }

    fn pool_status(&self, inner: &mut Inner) -> Result<ThinPoolStatus> {
        let (_, lines) = inner
            .ctl
            .table_status(DevId::Name(&self.pool_name), &StatusOptions::default())?;
        let line = lines.first().ok_or_else(|| DeviceSetError::PoolUnusable {
            pool: self.pool_name.clone(),
            reason: "the pool has no table".into(),
        })?;
        match PoolStatus::parse(line.params())? {
            PoolStatus::Active(s) => Ok(s),
            other => Err(DeviceSetError::PoolUnusable {
                pool: self.pool_name.clone(),
                reason: format!("status is {other}"),
            }),
        }
    }

    fn writable_pool(&self, inner: &mut Inner) -> Result<ThinPoolStatus> {
        let s = self.pool_status(inner)?;
        if s.mode != PoolMode::ReadWrite || s.needs_check {
            let hint = if s.needs_check {
                ", needs_check (run thin_check)"
            } else if out_of_metadata_space(&s) {
                " (grow it with grow-pool --metadata)"
            } else {
                ""
            };
            return Err(DeviceSetError::PoolUnusable {
                pool: self.pool_name.clone(),
                reason: format!("mode {}{hint}", mode_name(&s)),
            });
        }
        Ok(s)
    }

    fn set_transaction(&self, inner: &mut Inner, new: u64) -> Result<()> {
        let current = inner.transaction_id;
        self.message(inner, PoolMessage::SetTransactionId { current, new })?;
        inner.transaction_id = new;
        Ok(())
    }

    fn thin_table(&self, inner: &Inner, thin_id: u32, size: u64) -> Result<Vec<TableLine>> {
        let t = ThinTable::new(
            DeviceRef::MajorMinor(inner.pool_dev.major, inner.pool_dev.minor),
            ThinId::new(thin_id)?,
        )?;
        Ok(vec![t.to_line(0, sectors(size))])
    }

    /// Activates a thin device: create, load, resume, undone on failure.
    fn activate(
        &self,
        inner: &mut Inner,
        name: &str,
        thin_id: u32,
        size: u64,
        flags: UdevFlags,
    ) -> Result<Dev> {
        match inner.ctl.info(DevId::Name(name)) {
            Ok(info) if info.active_table() => return Ok(info.dev),
            Ok(_) => {
                // A half-made device from an interrupted activation: replace it.
                inner
                    .ctl
                    .remove(DevId::Name(name), &RemoveOptions::default())?;
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        let table = self.thin_table(inner, thin_id, size)?;
        let info = inner.ctl.create(name, &CreateOptions::default())?;
        fail_point!("activate.after_create");
        let made = inner
            .ctl
            .table_load(DevId::Name(name), &table, false)
            .and_then(|_| {
                fail_point!("activate.after_load");
                inner.ctl.resume(DevId::Name(name), flags)
            });
        if let Err(e) = made {
            let _ = inner
                .ctl
                .remove(DevId::Name(name), &RemoveOptions::default());
            return Err(e.into());
        }
        Ok(info.dev)
    }

    /// Removes a device-mapper device; missing is fine. EBUSY is returned as is.
    fn deactivate_once(
        &self,
        inner: &mut Inner,
        name: &str,
        deferred: bool,
    ) -> std::result::Result<(), DmError> {
        match inner.ctl.remove(
            DevId::Name(name),
            &RemoveOptions {
                deferred,
                ..Default::default()
            },
        ) {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    fn delete_thin(&self, inner: &mut Inner, thin_id: u32) -> Result<()> {
        match self.message(inner, PoolMessage::Delete(ThinId::new(thin_id)?)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == Some(ErrorKind::NoData) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn begin(&self, inner: &mut Inner, op: TransactionOp) -> Result<u64> {
        let open = inner.transaction_id + 1;
        inner.store.begin(&TransactionRecord {
            open_transaction_id: open,
            op,
        })?;
        Ok(open)
    }

    // ----- open -----

    fn check_recorded_options(&self, set: Option<&SetRecord>) -> Result<()> {
        let Some(set) = set else { return Ok(()) };
        if set.data_block_size != self.options.data_block_size {
            return Err(DeviceSetError::OptionMismatch {
                option: "data block size",
                recorded: set.data_block_size.to_string(),
                given: self.options.data_block_size.to_string(),
            });
        }
        if set.filesystem != self.options.filesystem {
            return Err(DeviceSetError::OptionMismatch {
                option: "filesystem",
                recorded: set.filesystem.as_str().into(),
                given: self.options.filesystem.as_str().into(),
            });
        }
        if self.options.base_size < set.base_size {
            return Err(DeviceSetError::OptionMismatch {
                option: "base size (it can grow, never shrink)",
                recorded: set.base_size.to_string(),
                given: self.options.base_size.to_string(),
            });
        }
        if set.pool_name != self.pool_name {
            return Err(DeviceSetError::OptionMismatch {
                option: "pool",
                recorded: set.pool_name.clone(),
                given: self.pool_name.clone(),
            });
        }
        Ok(())
    }

    fn attach_loop(&self, inner: &mut Inner, file: &Path, size: u64) -> Result<Dev> {
        loopdev::create_sparse_file(file, size)?;
        let dev = match loopdev::find_by_file(file)? {
            Some(d) => {
                // Grown since it was attached: let the device see the new size.
                if d.size()? < size {
                    d.set_capacity()?;
                }
                d
            }
            None => loopdev::attach(file, &AttachOptions::new().autoclear(true))?,
        };
        let meta = std::fs::metadata(dev.path()).map_err(|e| DeviceSetError::InvalidOption {
            option: "storage",
            reason: format!("{}: {e}", dev.path().display()),
        })?;
        let d = Dev::from_dev_t(meta.rdev());
        inner.loops.push(dev);
        Ok(d)
    }

    fn setup_pool(&self, inner: &mut Inner, has_set: bool) -> Result<()> {
        let exists = inner.ctl.exists(&self.pool_name)?;
        if !exists {
            let (meta, data, data_bytes, storage) = match &self.options.storage {
                StorageOptions::AdoptPool { name } => {
                    return Err(DeviceSetError::InvalidOption {
                        option: "pool",
                        reason: format!("no device-mapper device named {name:?} to adopt"),
                    })
                }
                StorageOptions::LoopFiles {
                    data_size,
                    metadata_size,
                } => {
                    if *metadata_size < 2 << 20 {
                        return Err(DeviceSetError::InvalidOption {
                            option: "metadata size",
                            reason: format!("{metadata_size} bytes is below the 2 MiB minimum"),
                        });
                    }
                    let dir = self.root.join("devicemapper");
                    std::fs::create_dir_all(&dir).map_err(|e| DeviceSetError::InvalidOption {
                        option: "root",
                        reason: format!("cannot create {}: {e}", dir.display()),
                    })?;
                    let _ = std::fs::set_permissions(
                        &dir,
                        std::os::unix::fs::PermissionsExt::from_mode(0o700),
                    );
                    let data_size = (*data_size).max(
                        std::fs::metadata(self.data_file())
                            .map(|m| m.len())
                            .unwrap_or(0),
                    );
                    let meta = self.attach_loop(inner, &self.metadata_file(), *metadata_size)?;
                    let data = self.attach_loop(inner, &self.data_file(), data_size)?;
                    let storage = Storage::LoopFiles {
                        data_file: self.data_file(),
                        metadata_file: self.metadata_file(),
                    };
                    (meta, data, data_size, storage)
                }
                StorageOptions::BlockDevices { data, metadata } => {
                    let storage = Storage::BlockDevices {
                        data_device: data.clone(),
                        metadata_device: metadata.clone(),
                    };
                    (
                        dev_of(metadata)?,
                        dev_of(data)?,
                        block_device_size(data)?,
                        storage,
                    )
                }
            };
            let line = self.pool_table(meta, data, data_bytes)?;
            inner.ctl.create_with_table(
                &self.pool_name,
                &CreateOptions::default(),
                &[line],
                UdevFlags::PRIVATE,
            )?;
            inner.set.storage = storage;
        } else if let StorageOptions::LoopFiles { .. } = self.options.storage {
            inner.set.storage = Storage::LoopFiles {
                data_file: self.data_file(),
                metadata_file: self.metadata_file(),
            };
            // Hold the loop devices so a later shutdown frees them.
            for f in [self.metadata_file(), self.data_file()] {
                if let Some(d) = loopdev::find_by_file(&f)? {
                    inner.loops.push(d);
                }
            }
        } else if let StorageOptions::BlockDevices { data, metadata } = &self.options.storage {
            inner.set.storage = Storage::BlockDevices {
                data_device: data.clone(),
                metadata_device: metadata.clone(),
            };
        }
        inner.pool_dev = inner.ctl.info(DevId::Name(&self.pool_name))?.dev;
        // The pool's table must match our block size.
        let line = self.pool_line(inner)?;
        let pool_table = ThinPoolTable::from_line(&line)?;
        if pool_table.block_size() != self.block_size {
            return Err(DeviceSetError::OptionMismatch {
                option: "data block size",
                recorded: format!("{} sectors (the pool's)", pool_table.block_size().sectors()),
                given: format!("{} sectors", self.block_size.sectors()),
            });
        }
        let status = self.pool_status(inner)?;
        inner.transaction_id = status.transaction_id;
        if !has_set && inner.store.pending()?.is_none() && status.transaction_id != 0 {
            return Err(DeviceSetError::Inconsistent {
                pool: self.pool_name.clone(),
                root: self.root.clone(),
                reason: format!(
                    "the pool has transaction id {} but the set has no records; a pool must be empty (transaction id 0) when a set first uses it",
                    status.transaction_id
                ),
            });
        }
        if status.needs_check {
            log::warn!(
                "pool {} needs a check (thin_check); changes will be refused",
                self.pool_name
            );
        }
        Ok(())
    }

    /// Repairs an interrupted operation: committed in the pool → finish it;
    /// not committed → make sure its device is gone.
    ///
    /// `transaction.json` keeps the last operation begun. Committed and
    /// complete (the normal case after a clean return) costs nothing here.
    fn recover(&self, inner: &mut Inner, txn: Option<TransactionRecord>) -> Result<bool> {
        let pool = inner.transaction_id;
        let mismatch = |recorded: u64| {
            DeviceSetError::Inconsistent {
            pool: self.pool_name.clone(),
            root: self.root.clone(),
            reason: format!(
                "the pool's transaction id is {pool} but the records end at {recorded}: the pool is {} the records (changed by another tool, or metadata restored from a backup)",
                if pool > recorded { "ahead of" } else { "behind" }
            ),
        }
        };
        let Some(txn) = txn else {
            // No operation was under way: the pool must be where we left it.
            if let Some(committed) = inner.store.committed()? {
                if committed != pool {
                    return Err(mismatch(committed));
                }
            }
            return Ok(false);
        };
        let open = txn.open_transaction_id;
        let committed = if pool == open {
            true
        } else if pool + 1 == open {
            false
        } else if pool > open {
            return Err(mismatch(open));
        } else {
            return Err(mismatch(open - 1));
        };
        let complete = committed
            && match &txn.op {
                TransactionOp::Create { .. } => true,
                TransactionOp::Delete { device_id, .. } => !inner.devices.contains_key(device_id),
                TransactionOp::BaseCreate { .. } => inner.set_written,
            };
        if complete {
            return Ok(false);
        }
        log::warn!(
            "recovering interrupted {:?} (transaction {open}, {})",
            txn.op,
            if committed {
                "committed"
            } else {
                "not committed"
            }
        );
        let mut redo_base = false;
        match &txn.op {
            // A create reaches here only uncommitted: roll it back. A delete
            // may have reached the pool: finish it either way. Both end with
            // the device gone.
            TransactionOp::Create { device_id, thin_id }
            | TransactionOp::Delete { device_id, thin_id } => {
                let name = self.device_name(device_id);
                self.deactivate_once(inner, &name, false)?;
                self.delete_thin(inner, *thin_id)?;
                inner.store.remove_device_record(device_id)?;
                inner.devices.remove(device_id);
                let _ = inner.ids.release(*thin_id);
            }
            TransactionOp::BaseCreate { thin_id } => {
                self.deactivate_once(inner, &self.base_name, false)?;
                self.delete_thin(inner, *thin_id)?;
                let _ = inner.ids.release(*thin_id);
                redo_base = true;
            }
        }
        inner.store.commit(inner.transaction_id)?;
        Ok(redo_base)
    }

    fn init_base(&self, inner: &mut Inner) -> Result<()> {
        self.writable_pool(inner)?;
        let mut thin = inner
            .ids
            .allocate_from(0)
            .ok_or_else(|| DeviceSetError::PoolUnusable {
                pool: self.pool_name.clone(),
                reason: "no free thin ids".into(),
            })?;
        let open = loop {
            let open = self.begin(inner, TransactionOp::BaseCreate { thin_id: thin })?;
            fail_point!("init.after_begin");
            match self.message(inner, PoolMessage::CreateThin(ThinId::new(thin)?)) {
                Ok(()) => break open,
                Err(e) if e.kind() == Some(ErrorKind::Exists) => {
                    // Taken in the pool though no record names it: skip it for good.
                    inner.store.commit(inner.transaction_id)?;
                    thin = inner.ids.allocate_from(thin).ok_or_else(|| {
                        DeviceSetError::PoolUnusable {
                            pool: self.pool_name.clone(),
                            reason: "no free thin ids".into(),
                        }
                    })?;
                }
                Err(e) => {
                    inner.store.commit(inner.transaction_id)?;
                    let _ = inner.ids.release(thin);
                    return Err(e.into());
                }
            }
        };
        fail_point!("init.after_create_thin");
        let undo = |cfg: &Cfg, inner: &mut Inner| {
            let _ = cfg.deactivate_once(inner, &cfg.base_name, false);
            let _ = cfg.delete_thin(inner, thin);
            let _ = inner.store.commit(inner.transaction_id);
            let _ = inner.ids.release(thin);
        };
        if let Err(e) = self.set_transaction(inner, open) {
            undo(self, inner);
            return Err(e);
        }
        fail_point!("init.after_set_transaction");
        let made = (|| -> Result<String> {
            let size = self.options.base_size;
            let dev = self.activate(inner, &self.base_name, thin, size, UdevFlags::PRIVATE)?;
            let node = crate::dm::dm_node_path(dev);
            self.progress(&format!(
                "creating {} filesystem on the base device ({} bytes)",
                self.options.filesystem.as_str(),
                size
            ));
            fsx::mkfs(self.options.filesystem, &node, &self.options.mkfs_options)?;
            let uuid = fsx::read_fs_uuid(self.options.filesystem, &node)?;
            self.deactivate_once(inner, &self.base_name, false)?;
            Ok(uuid)
        })();
        let uuid = match made {
            Ok(u) => u,
            Err(e) => {
                undo(self, inner);
                return Err(e);
            }
        };
        fail_point!("init.after_mkfs");
        inner.set.base_thin_id = thin;
        inner.set.base_size = self.options.base_size;
        inner.set.base_fs_uuid = Some(uuid);
        inner.store.write_set(&inner.set)?;
        inner.set_written = true;
        fail_point!("init.after_write_set");
        Ok(())
    }

    fn check_base(&self, inner: &mut Inner) -> Result<()> {
        let was_active = inner.ctl.exists(&self.base_name)?;
        let thin = inner.set.base_thin_id;
        let size = inner.set.base_size;
        let dev = self.activate(inner, &self.base_name, thin, size, UdevFlags::PRIVATE)?;
        let node = crate::dm::dm_node_path(dev);
        let result = (|| -> Result<u64> {
            let found = fsx::read_fs_uuid(inner.set.filesystem, &node)?;
            if let Some(expected) = &inner.set.base_fs_uuid {
                if *expected != found {
                    return Err(DeviceSetError::BaseUuidMismatch {
                        expected: expected.clone(),
                        found,
                    });
                }
            }
            Ok(fsx::read_fs_size(inner.set.filesystem, &node)?)
        })();
        if !was_active {
            self.deactivate_once(inner, &self.base_name, false)?;
        }
        let fs_size = result?;
        // A growth interrupted after its record was written left the
        // filesystem smaller than the device: finish it.
        let unfinished = fs_size < inner.set.base_size / 100 * 95;
        if self.options.base_size > inner.set.base_size || unfinished {
            self.grow_base(inner)?;
        }
        Ok(())
    }

    fn grow_base(&self, inner: &mut Inner) -> Result<()> {
        self.writable_pool(inner)?;
        let new = self.options.base_size;
        let old = inner.set.base_size;
        self.progress(&format!(
            "growing the base device from {old} to {new} bytes"
        ));
        // Record first: a filesystem smaller than its device is harmless, the reverse is not.
        let mut set = inner.set.clone();
        set.base_size = new;
        inner.store.write_set(&set)?;
        inner.set = set;
        fail_point!("grow_base.after_write_set");
        self.deactivate_once(inner, &self.base_name, false)?;
        let dev = self.activate(
            inner,
            &self.base_name,
            inner.set.base_thin_id,
            new,
            UdevFlags::PRIVATE,
        )?;
        let node = crate::dm::dm_node_path(dev);
        let grown = fsx::grow(
            inner.set.filesystem,
            &node,
            &self.root.join("mnt-base-grow"),
            &inner.set.mount_options,
        );
        let _ = self.deactivate_once(inner, &self.base_name, false);
        grown?;
        fail_point!("grow_base.after_grow_fs");
        Ok(())
    }

    /// Mounts of our devices left by an earlier process count as one reference each.
    fn adopt_existing_mounts(&self, inner: &mut Inner) -> Result<()> {
        let mounts = fsx::mounts();
        if mounts.is_empty() {
            return Ok(());
        }
        let list = inner.ctl.list_devices()?;
        for entry in list {
            let Some(id) = entry.name.strip_prefix(&self.prefix) else {
                continue;
            };
            if !inner.devices.contains_key(id) {
                continue;
            }
            for m in mounts
                .iter()
                .filter(|m| m.dev == (entry.dev.major, entry.dev.minor))
            {
                inner.mounts.insert((id.to_string(), m.path.clone()), 1);
            }
        }
        Ok(())
    }

    /// Removes half-made devices (no live table) an interrupted activation left.
    fn remove_stray_devices(&self, inner: &mut Inner) -> Result<()> {
        // Only our names are decoded: a host may have many other devices.
        let mut ours = Vec::new();
        for record in inner.ctl.list_devices_view()?.records() {
            let record = record?;
            let name = record.name_bytes()?;
            if name.starts_with(self.prefix.as_bytes()) && name != self.pool_name.as_bytes() {
                ours.push(record.entry()?.name.into_owned());
            }
        }
        for name in ours {
            let info = inner.ctl.info(DevId::Name(&name))?;
            if info.active_table() && info.suspended() {
                // Left suspended by an interrupted snapshot: I/O to it would hang.
                log::warn!("resuming {name} left suspended");
                inner.ctl.resume(DevId::Name(&name), UdevFlags::empty())?;
            } else if !info.active_table() {
                log::warn!("removing half-made device {name}");
                self.deactivate_once(inner, &name, false)?;
            }
        }
        Ok(())
    }

    fn finish_deferred_deletes(&self, inner: &mut Inner) -> Result<()> {
        let pending: Vec<String> = inner
            .devices
            .values()
            .filter(|r| r.deferred_delete)
            .map(|r| r.id.clone())
            .collect();
        for id in pending {
            let name = self.device_name(&id);
            if !inner.ctl.exists(&name)? {
                self.delete_device(inner, &id)?;
            }
        }
        Ok(())
    }

    // ----- operations -----

    fn check_space(&self, inner: &mut Inner) -> Result<()> {
        let s = self.writable_pool(inner)?;
        let min = self.options.min_free_space_percent;
        let check = |what: &'static str, free: u64, total: u64| {
            if total == 0 {
                return Ok(());
            }
            let pct = free as f64 * 100.0 / total as f64;
            if pct < f64::from(min) {
                return Err(DeviceSetError::LowSpace {
                    what,
                    free_percent: pct,
                    min_percent: min,
                });
            }
            Ok(())
        };
        check("data", s.free_data_blocks(), s.total_data_blocks)?;
        check(
            "metadata",
            s.free_metadata_blocks(),
            s.total_metadata_blocks,
        )
    }

    fn record<'a>(&self, inner: &'a Inner, id: &str) -> Result<&'a DeviceRecord> {
        match inner.devices.get(id) {
            Some(r) if r.deferred_delete => Err(DeviceSetError::PendingDeletion(id.to_string())),
            Some(r) => Ok(r),
            None => Err(DeviceSetError::UnknownDevice(id.to_string())),
        }
    }

    fn validate_new_id(&self, id: &str) -> Result<()> {
        validate_device_id(id, max_id_len_for_prefix(&self.prefix))?;
        if id == "pool" || id == "base" {
            return Err(DeviceSetError::ReservedId(id.to_string()));
        }
        Ok(())
    }

    fn add_device(&self, inner: &mut Inner, id: &str, parent: Option<&str>) -> Result<()> {
        self.validate_new_id(id)?;
        if let Some(r) = inner.devices.get(id) {
            return Err(if r.deferred_delete {
                DeviceSetError::PendingDeletion(id.to_string())
            } else {
                DeviceSetError::DeviceExists(id.to_string())
            });
        }
        let (origin, size, origin_name) = match parent {
            None => (
                inner.set.base_thin_id,
                inner.set.base_size,
                self.base_name.clone(),
            ),
            Some(p) => {
                let r = match self.record(inner, p) {
                    Ok(r) => r,
                    Err(DeviceSetError::UnknownDevice(_)) => {
                        return Err(DeviceSetError::UnknownParent {
                            id: id.to_string(),
                            parent: p.to_string(),
                        })
                    }
                    Err(e) => return Err(e),
                };
                (r.thin_id, r.size, self.device_name(p))
            }
        };
        self.check_space(inner)?;
        let no_ids = || DeviceSetError::PoolUnusable {
            pool: self.pool_name.clone(),
            reason: "all 2^24 thin ids are in use".into(),
        };
        let mut thin = inner.ids.allocate_from(0).ok_or_else(no_ids)?;
        let parent_active = match inner.ctl.info(DevId::Name(&origin_name)) {
            Ok(info) => info.active_table() && !info.suspended(),
            Err(e) if e.is_not_found() => false,
            Err(e) => {
                let _ = inner.ids.release(thin);
                return Err(e.into());
            }
        };
        let open = loop {
            let open = match self.begin(
                inner,
                TransactionOp::Create {
                    device_id: id.to_string(),
                    thin_id: thin,
                },
            ) {
                Ok(o) => o,
                Err(e) => {
                    let _ = inner.ids.release(thin);
                    return Err(e);
                }
            };
            fail_point!("add.after_begin");
            // Snapshotting an active origin: suspend it around create_snap so
            // the snapshot sees a consistent, flushed origin.
            if parent_active {
                if let Err(e) = inner
                    .ctl
                    .suspend(DevId::Name(&origin_name), &SuspendOptions::default())
                {
                    let _ = inner.store.commit(inner.transaction_id);
                    let _ = inner.ids.release(thin);
                    return Err(e.into());
                }
                fail_point!("add.after_suspend_parent");
            }
            let snap = self.message(
                inner,
                PoolMessage::CreateSnap {
                    id: ThinId::new(thin)?,
                    origin: ThinId::new(origin)?,
                },
            );
            if parent_active {
                if let Err(e) = inner
                    .ctl
                    .resume(DevId::Name(&origin_name), UdevFlags::empty())
                {
                    log::error!("resuming {origin_name} after create_snap failed: {e}");
                    if snap.is_ok() {
                        let _ = self.delete_thin(inner, thin);
                    }
                    let _ = inner.store.commit(inner.transaction_id);
                    let _ = inner.ids.release(thin);
                    return Err(e.into());
                }
            }
            match snap {
                Ok(()) => break open,
                Err(e) if e.kind() == Some(ErrorKind::Exists) => {
                    inner.store.commit(inner.transaction_id)?;
                    log::warn!(
                        "thin id {thin} exists in the pool though no record names it; skipping it"
                    );
                    thin = inner.ids.allocate_from(thin).ok_or_else(no_ids)?;
                }
                Err(e) => {
                    let _ = inner.store.commit(inner.transaction_id);
                    let _ = inner.ids.release(thin);
                    return Err(e.into());
                }
            }
        };
        fail_point!("add.after_create_snap");
        let record = DeviceRecord::new(id, parent.map(str::to_string), thin, size);
        let committed = inner
            .store
            .write_device(&record)
            .map_err(DeviceSetError::from)
            .and_then(|()| {
                fail_point!("add.after_write_record");
                self.set_transaction(inner, open)
            });
        if let Err(e) = committed {
            let _ = self.delete_thin(inner, thin);
            let _ = inner.store.remove_device_record(id);
            let _ = inner.store.commit(inner.transaction_id);
            let _ = inner.ids.release(thin);
            return Err(e);
        }
        fail_point!("add.after_set_transaction");
        // Committed: the pool's transaction id now equals the recorded one.
        // transaction.json is left as it is and replaced by the next begin.
        inner.devices.insert(id.to_string(), record);
        Ok(())
    }

    /// Deactivates with EBUSY retried, releasing the set's lock between tries.
    fn deactivate_retrying<'a>(
        &self,
        mut guard: MutexGuard<'a, Inner>,
        lock: &'a Mutex<Inner>,
        id: &str,
    ) -> Result<MutexGuard<'a, Inner>> {
        let name = self.device_name(id);
        let tries = self.options.busy_retries.max(1);
        for attempt in 1..=tries {
            check_open(&guard)?;
            self.record(&guard, id)?;
            let paths = mount_paths(&guard, id);
            if !paths.is_empty() {
                return Err(DeviceSetError::Mounted {
                    id: id.to_string(),
                    paths,
                });
            }
            fail_point!("deactivate.before_remove");
            match self.deactivate_once(&mut guard, &name, false) {
                Ok(()) => return Ok(guard),
                Err(e) if e.is_busy() && attempt < tries => {
                    drop(guard);
                    std::thread::sleep(Duration::from_millis(20 * u64::from(attempt.min(10))));
                    guard = lock.lock().map_err(|_| DeviceSetError::Closed)?;
                }
                Err(e) if e.is_busy() => break,
                Err(e) => return Err(e.into()),
            }
        }
        Err(DeviceSetError::Busy {
            id: id.to_string(),
            tries,
        })
    }

    /// Deletes an inactive device from the pool and its record.
    fn delete_device(&self, inner: &mut Inner, id: &str) -> Result<()> {
        let thin = match inner.devices.get(id) {
            Some(r) => r.thin_id,
            None => return Err(DeviceSetError::UnknownDevice(id.to_string())),
        };
        let open = self.begin(
            inner,
            TransactionOp::Delete {
                device_id: id.to_string(),
                thin_id: thin,
            },
        )?;
        fail_point!("remove.after_begin");
        if let Err(e) = self.delete_thin(inner, thin) {
            let _ = inner.store.commit(inner.transaction_id);
            return Err(e);
        }
        fail_point!("remove.after_delete");
        if let Err(e) = self.set_transaction(inner, open) {
            // The delete itself is committed in the pool; finish our side.
            log::warn!("set_transaction_id after deleting {id} failed: {e}");
        }
        fail_point!("remove.after_set_transaction");
        inner.store.remove_device_record(id)?;
        fail_point!("remove.after_remove_record");
        inner.devices.remove(id);
        let _ = inner.ids.release(thin);
        Ok(())
    }
}

/// Whether a pool is read-only because its metadata is full: the kernel
/// reports `ro` and counts its metadata reserve as used, so used == total.
fn out_of_metadata_space(s: &ThinPoolStatus) -> bool {
    s.mode == PoolMode::ReadOnly
        && s.total_metadata_blocks > 0
        && s.used_metadata_blocks >= s.total_metadata_blocks
}

/// The pool's mode as the set reports it (see [`SetStatus::mode`]).
fn mode_name(s: &ThinPoolStatus) -> &'static str {
    if out_of_metadata_space(s) {
        "out_of_metadata_space"
    } else {
        s.mode.as_str()
    }
}

fn check_open(inner: &Inner) -> Result<()> {
    if inner.closed {
        Err(DeviceSetError::Closed)
    } else {
        Ok(())
    }
}

fn mount_paths(inner: &Inner, id: &str) -> Vec<PathBuf> {
    inner
        .mounts
        .keys()
        .filter(|(d, _)| d == id)
        .map(|(_, p)| p.clone())
        .collect()
}

impl DeviceSet {
    /// Creates the set at `root`, or reopens it, repairing any operation a
    /// crash interrupted.
    pub fn open(root: impl AsRef<Path>, options: Options) -> Result<DeviceSet> {
        let root = root.as_ref();
        std::fs::create_dir_all(root).map_err(|e| DeviceSetError::InvalidOption {
            option: "root",
            reason: format!("cannot create {}: {e}", root.display()),
        })?;
        let _ = std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o700));
        let root = root
            .canonicalize()
            .map_err(|e| DeviceSetError::InvalidOption {
                option: "root",
                reason: format!("{}: {e}", root.display()),
            })?;
        let block_size = BlockSize::from_bytes(options.data_block_size)?;
        if options.min_free_space_percent > 99 {
            return Err(DeviceSetError::InvalidOption {
                option: "min_free_space",
                reason: format!("{}% is not below 100%", options.min_free_space_percent),
            });
        }
        if options.base_size < 16 << 20 || options.base_size % SECTOR != 0 {
            return Err(DeviceSetError::InvalidOption {
                option: "base_size",
                reason: format!(
                    "{} bytes: must be at least 16 MiB and a multiple of 512",
                    options.base_size
                ),
            });
        }
        let lock = SetLock::acquire(&root)?;
        let prefix = name_prefix(&root).map_err(|e| DeviceSetError::InvalidOption {
            option: "root",
            reason: format!("stat {}: {e}", root.display()),
        })?;
        let store = MetadataStore::open(&root, max_id_len_for_prefix(&prefix))?;
        let report = store.load_all()?;
        for p in &report.problems {
            log::warn!("skipping damaged record {}: {}", p.path.display(), p.reason);
        }
        let pool_name = match &options.storage {
            StorageOptions::AdoptPool { name } => name.clone(),
            _ => format!("{prefix}pool"),
        };
        let cfg = Cfg {
            base_name: format!("{prefix}base"),
            root,
            prefix,
            pool_name,
            block_size,
            options,
        };
        cfg.check_recorded_options(report.set.as_ref())?;
        let mut ctl = Control::open_with(ControlOptions::default())?;
        if let NodeMode::Udev { .. } = ctl.node_mode() {
            ctl.set_node_mode(if cfg.options.udev_sync {
                NodeMode::Udev {
                    timeout: cfg.options.udev_timeout,
                }
            } else {
                NodeMode::Bypass
            });
        }
        let mut ids = ThinIdAllocator::new();
        for rec in report.devices.values() {
            ids.mark_used(rec.thin_id)?;
        }
        let devices = report.devices;
        let set_written = report.set.is_some();
        let set = match report.set {
            Some(s) => {
                ids.mark_used(s.base_thin_id)?;
                s
            }
            None => SetRecord {
                format_version: FORMAT_VERSION,
                base_thin_id: 0,
                base_size: cfg.options.base_size,
                base_fs_uuid: None,
                filesystem: cfg.options.filesystem,
                mkfs_options: cfg.options.mkfs_options.clone(),
                mount_options: cfg.options.mount_options.clone(),
                data_block_size: cfg.options.data_block_size,
                pool_name: cfg.pool_name.clone(),
                pool_owned: !matches!(cfg.options.storage, StorageOptions::AdoptPool { .. }),
                storage: Storage::AdoptedPool,
                next_thin_id: 0,
            },
        };
        // A damaged record still owns its thin id; we cannot know which, so the
        // pool's EEXIST answer (skip that id) covers it.
        let mut inner = Inner {
            ctl,
            store,
            set,
            set_written,
            devices,
            ids,
            transaction_id: 0,
            pool_dev: Dev::default(),
            mounts: BTreeMap::new(),
            loops: Vec::new(),
            closed: false,
        };
        cfg.setup_pool(&mut inner, set_written)?;
        let redo_base = cfg.recover(&mut inner, report.transaction)?;
        cfg.remove_stray_devices(&mut inner)?;
        if !inner.set_written || redo_base {
            cfg.init_base(&mut inner)?;
        } else {
            cfg.check_base(&mut inner)?;
        }
        cfg.adopt_existing_mounts(&mut inner)?;
        cfg.finish_deferred_deletes(&mut inner)?;
        Ok(DeviceSet {
            inner: Mutex::new(inner),
            cfg,
            problems: report.problems,
            _lock: lock,
        })
    }

    /// The options an existing set at `root` was created with, read from its
    /// records (loop file sizes are the files' current sizes), or `None` when
    /// no set exists there yet. Lets a caller reopen a set without repeating
    /// its options.
    pub fn recorded_options(root: impl AsRef<Path>) -> Result<Option<Options>> {
        let root = root.as_ref();
        if !root
            .join(super::store::METADATA_DIR)
            .join(super::store::SET_FILE)
            .exists()
        {
            return Ok(None);
        }
        let prefix = name_prefix(root).map_err(|e| DeviceSetError::InvalidOption {
            option: "root",
            reason: format!("stat {}: {e}", root.display()),
        })?;
        let store = MetadataStore::open(root, max_id_len_for_prefix(&prefix))?;
        let Some(set) = store.read_set()? else {
            return Ok(None);
        };
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let storage = match &set.storage {
            Storage::LoopFiles {
                data_file,
                metadata_file,
            } => StorageOptions::LoopFiles {
                data_size: size(data_file),
                metadata_size: size(metadata_file),
            },
            Storage::BlockDevices {
                data_device,
                metadata_device,
            } => StorageOptions::BlockDevices {
                data: data_device.clone(),
                metadata: metadata_device.clone(),
            },
            Storage::AdoptedPool => StorageOptions::AdoptPool {
                name: set.pool_name.clone(),
            },
        };
        Ok(Some(Options {
            storage,
            data_block_size: set.data_block_size,
            base_size: set.base_size,
            filesystem: set.filesystem,
            mkfs_options: set.mkfs_options.clone(),
            mount_options: set.mount_options.clone(),
            ..Options::default()
        }))
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>> {
        let guard = self.inner.lock().map_err(|_| DeviceSetError::Closed)?;
        check_open(&guard)?;
        Ok(guard)
    }

    /// The set's root directory.
    pub fn root(&self) -> &Path {
        &self.cfg.root
    }

    /// The pool's device-mapper name.
    pub fn pool_name(&self) -> &str {
        &self.cfg.pool_name
    }

    /// The device-mapper name a device id gets.
    pub fn device_name(&self, id: &str) -> String {
        self.cfg.device_name(id)
    }

    /// The device-mapper name of the base device.
    pub fn base_name(&self) -> &str {
        &self.cfg.base_name
    }

    /// Longest device id this set accepts (its kernel name must fit 127 bytes).
    pub fn max_id_len(&self) -> usize {
        max_id_len_for_prefix(&self.cfg.prefix)
    }

    /// Damaged records found at open (skipped; the rest of the set works).
    pub fn problems(&self) -> &[RecordProblem] {
        &self.problems
    }

    /// Creates device `id` as a thin snapshot of `parent` (the base device when `None`).
    pub fn add_device(&self, id: &str, parent: Option<&str>) -> Result<()> {
        let mut inner = self.lock()?;
        self.cfg.add_device(&mut inner, id, parent)
    }

    /// Deactivates device `id` (EBUSY retried), deletes it from the pool and frees its thin id.
    /// Refused while this set has it mounted.
    pub fn remove_device(&self, id: &str) -> Result<()> {
        let guard = self.lock()?;
        let mut guard = self.cfg.deactivate_retrying(guard, &self.inner, id)?;
        fail_point!("remove.after_deactivate");
        self.cfg.delete_device(&mut guard, id)
    }

    /// Like [`DeviceSet::remove_device`], but a device held open elsewhere is
    /// removed by the kernel once its last opener closes it, and deleted from the
    /// pool on a later call or open.
    pub fn remove_device_deferred(&self, id: &str) -> Result<RemoveOutcome> {
        let mut inner = self.lock()?;
        self.cfg.record(&inner, id)?;
        let paths = mount_paths(&inner, id);
        if !paths.is_empty() {
            return Err(DeviceSetError::Mounted {
                id: id.to_string(),
                paths,
            });
        }
        let name = self.cfg.device_name(id);
        self.cfg.deactivate_once(&mut inner, &name, true)?;
        if inner.ctl.exists(&name)? {
            let mut rec = self.cfg.record(&inner, id)?.clone();
            rec.deferred_delete = true;
            inner.store.write_device(&rec)?;
            inner.devices.insert(id.to_string(), rec);
            return Ok(RemoveOutcome::Deferred);
        }
        self.cfg.delete_device(&mut inner, id)?;
        Ok(RemoveOutcome::Removed)
    }

    /// Finishes deferred removals whose devices have been closed since.
    pub fn cleanup_deferred(&self) -> Result<()> {
        let mut inner = self.lock()?;
        self.cfg.finish_deferred_deletes(&mut inner)
    }

    /// Activates device `id`; returns its `/dev/mapper` path.
    pub fn activate_device(&self, id: &str) -> Result<PathBuf> {
        let mut inner = self.lock()?;
        let (thin, size) = {
            let r = self.cfg.record(&inner, id)?;
            (r.thin_id, r.size)
        };
        let name = self.cfg.device_name(id);
        let dev = self
            .cfg
            .activate(&mut inner, &name, thin, size, UdevFlags::empty())?;
        Ok(device_path(&inner, &name, dev))
    }

    /// Deactivates device `id` (refused while mounted; EBUSY retried).
    pub fn deactivate_device(&self, id: &str) -> Result<()> {
        let guard = self.lock()?;
        self.cfg
            .deactivate_retrying(guard, &self.inner, id)
            .map(drop)
    }

    /// Mounts device `id` at `path`, activating it if needed. Mounting the same
    /// device at the same path again only counts a reference.
    pub fn mount_device(&self, id: &str, path: impl AsRef<Path>, read_only: bool) -> Result<()> {
        let path = path.as_ref();
        let mut inner = self.lock()?;
        let (thin, size) = {
            let r = self.cfg.record(&inner, id)?;
            (r.thin_id, r.size)
        };
        let key = (id.to_string(), path.to_path_buf());
        if let Some(count) = inner.mounts.get_mut(&key) {
            *count += 1;
            return Ok(());
        }
        let name = self.cfg.device_name(id);
        let was_active = inner.ctl.exists(&name)?;
        let dev = self
            .cfg
            .activate(&mut inner, &name, thin, size, UdevFlags::empty())?;
        fail_point!("mount.after_activate");
        let node = crate::dm::dm_node_path(dev);
        let mounted = std::fs::create_dir_all(path)
            .map_err(|source| {
                DeviceSetError::Fs(FsError::Io {
                    device: path.display().to_string(),
                    source,
                })
            })
            .and_then(|()| {
                fsx::mount(
                    inner.set.filesystem,
                    &node,
                    path,
                    read_only,
                    &inner.set.mount_options,
                    self.cfg.options.mount_discard,
                )
                .map_err(DeviceSetError::from)
            });
        if let Err(e) = mounted {
            if !was_active {
                let _ = self.cfg.deactivate_once(&mut inner, &name, false);
            }
            return Err(e);
        }
        fail_point!("mount.after_mount");
        inner.mounts.insert(key, 1);
        Ok(())
    }

    /// Drops one reference to the mount of `id` at `path`; the last one unmounts
    /// it, and with `deactivate` also deactivates the device.
    pub fn unmount_device(&self, id: &str, path: impl AsRef<Path>, deactivate: bool) -> Result<()> {
        let path = path.as_ref();
        let mut inner = self.lock()?;
        let key = (id.to_string(), path.to_path_buf());
        let Some(count) = inner.mounts.get_mut(&key) else {
            return Err(DeviceSetError::NotMounted {
                id: id.to_string(),
                path: path.to_path_buf(),
            });
        };
        *count -= 1;
        if *count > 0 {
            return Ok(());
        }
        if let Err(e) = fsx::unmount(path) {
            inner.mounts.insert(key, 1);
            return Err(e.into());
        }
        inner.mounts.remove(&key);
        fail_point!("unmount.after_unmount");
        if deactivate && mount_paths(&inner, id).is_empty() {
            drop(self.cfg.deactivate_retrying(inner, &self.inner, id)?);
        }
        Ok(())
    }

    /// Whether device `id` exists (and is not being removed).
    pub fn has_device(&self, id: &str) -> bool {
        self.lock()
            .map(|i| self.cfg.record(&i, id).is_ok())
            .unwrap_or(false)
    }

    /// Whether device `id` exists and was marked initialized.
    pub fn has_initialized_device(&self, id: &str) -> bool {
        self.lock()
            .map(|i| {
                self.cfg
                    .record(&i, id)
                    .map(|r| r.initialized)
                    .unwrap_or(false)
            })
            .unwrap_or(false)
    }

    /// Whether device `id` is active.
    pub fn has_activated_device(&self, id: &str) -> bool {
        let Ok(mut inner) = self.lock() else {
            return false;
        };
        if self.cfg.record(&inner, id).is_err() {
            return false;
        }
        let name = self.cfg.device_name(id);
        inner.ctl.exists(&name).unwrap_or(false)
    }

    /// Marks device `id` initialized (or not), durably.
    pub fn set_initialized(&self, id: &str, initialized: bool) -> Result<()> {
        let mut inner = self.lock()?;
        let mut rec = self.cfg.record(&inner, id)?.clone();
        rec.initialized = initialized;
        inner.store.write_device(&rec)?;
        inner.devices.insert(id.to_string(), rec);
        Ok(())
    }

    /// Every device with its state.
    pub fn list(&self) -> Result<Vec<DeviceSummary>> {
        let mut inner = self.lock()?;
        let active: BTreeSet<String> = inner
            .ctl
            .list_devices()?
            .into_iter()
            .filter_map(|e| e.name.strip_prefix(&self.cfg.prefix).map(str::to_string))
            .collect();
        let records: Vec<DeviceRecord> = inner
            .devices
            .values()
            .filter(|r| !r.deferred_delete)
            .cloned()
            .collect();
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            let is_active = active.contains(&r.id);
            let mapped_bytes = if is_active {
                let name = self.cfg.device_name(&r.id);
                match inner
                    .ctl
                    .table_status(DevId::Name(&name), &StatusOptions::default())
                {
                    Ok((_, lines)) => lines
                        .first()
                        .and_then(|l| ThinStatus::parse(l.params()).ok())
                        .and_then(|s| s.usage().map(|u| u.mapped_sectors * SECTOR)),
                    Err(_) => None,
                }
            } else {
                None
            };
            out.push(DeviceSummary {
                mount_points: mount_paths(&inner, &r.id),
                id: r.id,
                parent: r.parent,
                thin_id: r.thin_id,
                size: r.size,
                initialized: r.initialized,
                active: is_active,
                mapped_bytes,
            });
        }
        Ok(out)
    }

    /// Pool usage and mode.
    pub fn status(&self) -> Result<SetStatus> {
        let mut inner = self.lock()?;
        let (_, lines) = inner
            .ctl
            .table_status(DevId::Name(&self.cfg.pool_name), &StatusOptions::default())?;
        let line = lines.first().ok_or_else(|| DeviceSetError::PoolUnusable {
            pool: self.cfg.pool_name.clone(),
            reason: "no table".into(),
        })?;
        let parsed = PoolStatus::parse(line.params())?;
        let (data_source, metadata_source) = match &inner.set.storage {
            Storage::LoopFiles {
                data_file,
                metadata_file,
            } => (Some(data_file.clone()), Some(metadata_file.clone())),
            Storage::BlockDevices {
                data_device,
                metadata_device,
            } => (Some(data_device.clone()), Some(metadata_device.clone())),
            Storage::AdoptedPool => (None, None),
        };
        let bs = self.cfg.block_size;
        let (usage, mode, needs_check, txn) = match parsed {
            PoolStatus::Active(s) => (
                Some(s.usage_bytes(bs)),
                mode_name(&s).to_string(),
                s.needs_check,
                s.transaction_id,
            ),
            PoolStatus::Fail => (None, "fail".to_string(), true, inner.transaction_id),
            PoolStatus::Error => (None, "error".to_string(), true, inner.transaction_id),
        };
        let u = |f: fn(&crate::target::PoolUsageBytes) -> Option<u64>| {
            usage.as_ref().and_then(f).unwrap_or(0)
        };
        Ok(SetStatus {
            pool_name: self.cfg.pool_name.clone(),
            data_source,
            metadata_source,
            data_block_size: self.cfg.options.data_block_size,
            data_used: u(|x| x.used_data),
            data_total: u(|x| x.total_data),
            metadata_used: u(|x| x.used_metadata),
            metadata_total: u(|x| x.total_metadata),
            mode,
            needs_check,
            transaction_id: txn,
            devices: inner
                .devices
                .values()
                .filter(|r| !r.deferred_delete)
                .count(),
            filesystem: inner.set.filesystem.as_str().to_string(),
            base_size: inner.set.base_size,
            base_thin_id: inner.set.base_thin_id,
        })
    }

    /// Grows the pool's data space to `new_data_size` bytes (loop files are
    /// grown; block devices must already be that large). Never shrinks.
    pub fn grow_pool(&self, new_data_size: u64) -> Result<()> {
        let mut inner = self.lock()?;
        let cfg = &self.cfg;
        let line = cfg.pool_line(&mut inner)?;
        let current = line.length() * SECTOR;
        if new_data_size < current {
            return Err(DeviceSetError::InvalidOption {
                option: "data size",
                reason: format!("{new_data_size} bytes is smaller than the pool's {current} bytes; pools never shrink"),
            });
        }
        cfg.grow_backing(&inner, Backing::Data, new_data_size)?;
        fail_point!("grow_pool.after_grow_file");
        let pool_table = ThinPoolTable::from_line(&line)?;
        let bs = u64::from(cfg.block_size.sectors());
        let len = sectors(new_data_size) / bs * bs;
        let new_line = pool_table.to_line(0, len);
        inner
            .ctl
            .reload_table(DevId::Name(&cfg.pool_name), &[new_line], UdevFlags::PRIVATE)?;
        fail_point!("grow_pool.after_reload");
        Ok(())
    }

    /// Grows the pool's metadata device to `new_metadata_size` bytes: a loop
    /// file is extended in place, a block device must already be that big.
    /// The pool is then reloaded (suspend, resume) so the kernel takes the
    /// new space; a pool that had run out of metadata space (`ro`, without
    /// `needs_check`) becomes writable again. Shrinking is refused, and so is
    /// more than the kernel can use ([`MAX_METADATA_BYTES`], ~15.9 GiB).
    pub fn grow_pool_metadata(&self, new_metadata_size: u64) -> Result<()> {
        if new_metadata_size > MAX_METADATA_BYTES {
            return Err(DeviceSetError::InvalidOption {
                option: "metadata size",
                reason: format!(
                    "{new_metadata_size} bytes is more than the {MAX_METADATA_BYTES} bytes a thin-pool can use"
                ),
            });
        }
        let mut inner = self.lock()?;
        let cfg = &self.cfg;
        let line = cfg.pool_line(&mut inner)?;
        if let Storage::LoopFiles { metadata_file, .. } = &inner.set.storage {
            let current = std::fs::metadata(metadata_file)
                .map_err(|e| DeviceSetError::PoolUnusable {
                    pool: cfg.pool_name.clone(),
                    reason: format!("cannot stat {}: {e}", metadata_file.display()),
                })?
                .len();
            if new_metadata_size < current {
                return Err(DeviceSetError::InvalidOption {
                    option: "metadata size",
                    reason: format!(
                        "{new_metadata_size} bytes is smaller than the metadata device's {current} bytes; metadata never shrinks"
                    ),
                });
            }
        }
        cfg.grow_backing(&inner, Backing::Metadata, new_metadata_size)?;
        // The same table: the pool re-reads its metadata device's size on
        // resume (pool_preresume), and a reload lets it leave read-only mode.
        inner
            .ctl
            .reload_table(DevId::Name(&cfg.pool_name), &[line], UdevFlags::PRIVATE)?;
        Ok(())
    }

    /// Unmounts what this set mounted, deactivates every device, and removes the
    /// pool if the set created it. The set cannot be used afterwards.
    pub fn shutdown(&self) -> Result<()> {
        let mut inner = self.lock()?;
        let mounts: Vec<PathBuf> = inner.mounts.keys().map(|(_, p)| p.clone()).collect();
        let mut first_error: Option<DeviceSetError> = None;
        for p in mounts {
            if let Err(e) = fsx::unmount(&p) {
                first_error.get_or_insert(e.into());
            }
        }
        inner.mounts.clear();
        let list = inner.ctl.list_devices()?;
        for e in list {
            if e.name.starts_with(&self.cfg.prefix) && e.name != self.cfg.pool_name {
                if let Err(err) = remove_retrying(&mut inner.ctl, &e.name) {
                    first_error.get_or_insert(err.into());
                }
            }
        }
        if inner.set.pool_owned {
            if let Err(err) = remove_retrying(&mut inner.ctl, &self.cfg.pool_name) {
                first_error.get_or_insert(err.into());
            }
        }
        inner.loops.clear();
        inner.closed = true;
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn remove_retrying(ctl: &mut Control, name: &str) -> std::result::Result<(), DmError> {
    for attempt in 0..20u64 {
        match ctl.remove(DevId::Name(name), &RemoveOptions::default()) {
            Ok(()) => return Ok(()),
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) if e.is_busy() && attempt < 19 => {
                std::thread::sleep(Duration::from_millis(20 + attempt * 10))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn device_path(inner: &Inner, name: &str, dev: Dev) -> PathBuf {
    match inner.ctl.node_mode() {
        NodeMode::None => crate::dm::dm_node_path(dev),
        _ => crate::dm::mapper_path(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn device_set_is_send_and_sync() {
        assert_send_sync::<DeviceSet>();
    }

    #[test]
    fn prefix_names_device_and_inode() {
        let dir = std::env::temp_dir();
        let p = name_prefix(&dir).unwrap();
        assert!(p.starts_with("dmthin-") && p.ends_with('-'), "{p}");
        assert!(p.len() <= 7 + 12 + 1 + 20 + 1);
        // A sha256 hex id always fits.
        assert!(max_id_len_for_prefix(&p) >= 64);
    }
}
