//! The device set's durable metadata: one JSON file per device, a set-wide
//! record and an open-transaction record.
//!
//! Layout under the set root (directories mode 0700, files mode 0600):
//!
//! ```text
//! <root>/metadata/set.json           SetRecord
//! <root>/metadata/transaction.json   TransactionState: last committed id, open transaction
//! <root>/metadata/devices/<id>.json  DeviceRecord, one per device
//! <root>/metadata/devices.cache      a derived copy of the records, never trusted alone
//! ```
//!
//! Every write goes to a fresh temp file in the target's directory (named
//! `.tmp~…`, which no device id can collide with since ids cannot contain
//! `~`), which is fsynced, renamed over the target, and then the directory is
//! fsynced. A removal is an unlink followed by a directory fsync. A device
//! change touches only that device's file, so its cost does not depend on how
//! many devices exist.
//!
//! [`MetadataStore::load_all`] reads everything back. A damaged device record
//! is reported as a [`RecordProblem`] naming the file, and the other records
//! still load; a damaged set or transaction record is an error, since the set
//! cannot be opened safely without it. Damaged files are never deleted or
//! overwritten: they stay in place until [`MetadataStore::quarantine`] moves
//! one aside.
//!
//! Opening a big set reads `devices.cache` first: a copy of every record
//! with its file's inode, size, mtime and ctime. A cached record is used only
//! when one `stat` of its file still matches; any other file is read as
//! usual. Our own writes always make a new inode, and a hand edit changes the
//! ctime, so a stale or damaged cache costs time, never correctness. The
//! cache is rewritten (without fsync: it is only an optimisation) when many
//! records had to be read, and holds only files whose ctime is at least
//! [`CACHE_SETTLE_SECS`] older than the cache, so a file changed within one
//! timestamp tick of being cached cannot be mistaken for the cached one.
//!
//! The store may be shared between threads. [`MetadataStore::load_all`]
//! removes temp files left by earlier processes (never by this store), so it
//! is safe to call while writes are in flight, though it is meant for opening.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::OFlag;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::ids::{validate_device_id, IdError, THIN_ID_MAX};

/// The newest format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The metadata directory inside a set root.
pub const METADATA_DIR: &str = "metadata";
/// The device record directory inside the metadata directory.
pub const DEVICES_DIR: &str = "devices";
/// The set record's file name.
pub const SET_FILE: &str = "set.json";
/// The transaction record's file name.
pub const TRANSACTION_FILE: &str = "transaction.json";
/// Largest record file that is read; anything bigger is reported as damaged.
pub const MAX_RECORD_BYTES: u64 = 1 << 20;
/// Longest device id the store accepts whatever the caller's limit, so that
/// `<id>.json` fits in a 255-byte file name.
pub const MAX_FILE_ID_LEN: usize = 255 - RECORD_EXT.len();

/// The record cache's file name (in the metadata directory).
pub const CACHE_FILE: &str = "devices.cache";
/// Files changed less than this many seconds before a cache is written are
/// left out of it.
pub const CACHE_SETTLE_SECS: i64 = 2;
/// The cache is rewritten when at least this many records were read from
/// their files (and they are at least 1/16 of all records).
const CACHE_REWRITE_MIN_MISSES: usize = 64;
/// First line of the record cache (its format and version).
const CACHE_HEADER: &str = "dmthin-record-cache 2";

const RECORD_EXT: &str = ".json";
const TEMP_PREFIX: &str = ".tmp~";
const QUARANTINE_SUFFIX: &str = ".corrupt";
const SECTOR: u64 = 512;
/// First read size for a record file; records are a few hundred bytes.
const READ_CHUNK: usize = 16 << 10;
const MIN_DATA_BLOCK: u64 = 64 << 10;
const MAX_DATA_BLOCK: u64 = 1 << 30;

/// Seconds since the Unix epoch, now (0 if the clock is before 1970).
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One thin device (a layer), stored as `devices/<id>.json`.
///
/// The base device has no `DeviceRecord`; it lives in [`SetRecord`]. Unknown
/// fields are ignored on load, for forward compatibility.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// The device id; must match the file name.
    pub id: String,
    /// The device this one is a snapshot of; `None` means the base device.
    #[serde(default)]
    pub parent: Option<String>,
    /// The pool's thin id, `0..=0xFFFFFF`.
    pub thin_id: u32,
    /// Size in bytes, a non-zero multiple of 512.
    pub size: u64,
    /// Whether the owner has finished populating the device.
    pub initialized: bool,
    /// Creation time, seconds since the Unix epoch.
    pub created_at: u64,
    /// Marked for deletion that has not happened yet (device busy).
    #[serde(default)]
    pub deferred_delete: bool,
}

impl DeviceRecord {
    /// A new, uninitialized record created now.
    pub fn new(id: impl Into<String>, parent: Option<String>, thin_id: u32, size: u64) -> Self {
        Self {
            id: id.into(),
            parent,
            thin_id,
            size,
            initialized: false,
            created_at: now_unix(),
            deferred_delete: false,
        }
    }

    /// Checks the values: ids valid (`max_id_len` as in
    /// [`validate_device_id`]), parent not the device itself, thin id in
    /// range, size a non-zero multiple of 512.
    pub fn validate(&self, max_id_len: usize) -> Result<(), String> {
        validate_device_id(&self.id, max_id_len).map_err(|e| e.to_string())?;
        if let Some(parent) = &self.parent {
            validate_device_id(parent, max_id_len).map_err(|e| format!("parent: {e}"))?;
            if *parent == self.id {
                return Err(format!("device {:?} is its own parent", self.id));
            }
        }
        check_thin_id("thin_id", self.thin_id)?;
        check_size("size", self.size)
    }
}

/// The base device's filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsKind {
    /// ext4 (the default).
    Ext4,
    /// XFS, always mounted with `nouuid`.
    Xfs,
}

impl FsKind {
    /// The name mkfs and mount use: `ext4` or `xfs`.
    pub fn as_str(self) -> &'static str {
        match self {
            FsKind::Ext4 => "ext4",
            FsKind::Xfs => "xfs",
        }
    }
}

/// Where the pool's data and metadata live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Storage {
    /// Sparse files attached to loop devices.
    LoopFiles {
        /// The data file (absolute path).
        data_file: PathBuf,
        /// The metadata file (absolute path).
        metadata_file: PathBuf,
    },
    /// Block devices given by the user.
    BlockDevices {
        /// The data device (absolute path).
        data_device: PathBuf,
        /// The metadata device (absolute path).
        metadata_device: PathBuf,
    },
    /// An existing pool, named by [`SetRecord::pool_name`].
    AdoptedPool,
}

/// The set-wide record, `set.json`: what must not change between opens.
///
/// Unknown fields are ignored on load; a newer `format_version` is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetRecord {
    /// Format of the metadata directory; [`FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// Thin id of the base device.
    pub base_thin_id: u32,
    /// Size of the base device in bytes (a non-zero multiple of 512).
    pub base_size: u64,
    /// UUID of the base filesystem; `None` until it has been made.
    #[serde(default)]
    pub base_fs_uuid: Option<String>,
    /// The base filesystem.
    pub filesystem: FsKind,
    /// Extra mkfs arguments.
    #[serde(default)]
    pub mkfs_options: Vec<String>,
    /// Extra mount options.
    #[serde(default)]
    pub mount_options: Vec<String>,
    /// Pool data block size in bytes: a multiple of 64 KiB, at most 1 GiB.
    pub data_block_size: u64,
    /// Kernel name of the pool.
    pub pool_name: String,
    /// Whether this set created the pool (and so may remove it).
    pub pool_owned: bool,
    /// Where the pool's data and metadata live.
    pub storage: Storage,
    /// Where the next thin id search starts.
    #[serde(default)]
    pub next_thin_id: u32,
}

impl SetRecord {
    /// Checks the values (the version is checked separately, on load).
    pub fn validate(&self) -> Result<(), String> {
        if self.format_version == 0 || self.format_version > FORMAT_VERSION {
            return Err(format!(
                "format_version {} is not supported (1..={FORMAT_VERSION})",
                self.format_version
            ));
        }
        check_thin_id("base_thin_id", self.base_thin_id)?;
        check_thin_id("next_thin_id", self.next_thin_id)?;
        check_size("base_size", self.base_size)?;
        if let Some(uuid) = &self.base_fs_uuid {
            if uuid.is_empty()
                || uuid.len() > 64
                || !uuid.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
            {
                return Err(format!(
                    "base_fs_uuid {uuid:?} is not a UUID (hex digits and '-', 1 to 64 long)"
                ));
            }
        }
        let dbs = self.data_block_size;
        if !(MIN_DATA_BLOCK..=MAX_DATA_BLOCK).contains(&dbs) || dbs % MIN_DATA_BLOCK != 0 {
            return Err(format!(
                "data_block_size {dbs} is not a multiple of 65536 between 65536 and 1073741824"
            ));
        }
        let name = &self.pool_name;
        if name.is_empty()
            || name.len() > super::ids::KERNEL_NAME_MAX
            || name == "."
            || name == ".."
            || name.chars().any(|c| c == '/' || c.is_control())
        {
            return Err(format!(
                "pool_name {name:?} is not a device-mapper name (1 to 127 bytes, no '/' or control characters)"
            ));
        }
        for opt in self.mkfs_options.iter().chain(&self.mount_options) {
            if opt.contains('\0') {
                return Err(format!("option {opt:?} contains a NUL byte"));
            }
        }
        let paths: &[(&str, &Path)] = match &self.storage {
            Storage::LoopFiles {
                data_file,
                metadata_file,
            } => &[("data_file", data_file), ("metadata_file", metadata_file)],
            Storage::BlockDevices {
                data_device,
                metadata_device,
            } => &[
                ("data_device", data_device),
                ("metadata_device", metadata_device),
            ],
            Storage::AdoptedPool => &[],
        };
        for (field, path) in paths {
            if !path.is_absolute() || path.as_os_str().as_encoded_bytes().contains(&0) {
                return Err(format!("storage {field} {path:?} is not an absolute path"));
            }
        }
        if let [(_, a), (_, b)] = paths {
            if a == b {
                return Err(format!("storage uses {a:?} for both data and metadata"));
            }
        }
        Ok(())
    }
}

/// The pool operation an open transaction is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TransactionOp {
    /// Creating device `device_id` as thin id `thin_id`.
    Create {
        /// The device being created.
        device_id: String,
        /// Its thin id.
        thin_id: u32,
    },
    /// Deleting device `device_id`, thin id `thin_id`.
    Delete {
        /// The device being deleted.
        device_id: String,
        /// Its thin id.
        thin_id: u32,
    },
    /// Creating the base device as thin id `thin_id`.
    BaseCreate {
        /// The base device's thin id.
        thin_id: u32,
    },
}

impl TransactionOp {
    /// The thin id the operation touches.
    pub fn thin_id(&self) -> u32 {
        match self {
            TransactionOp::Create { thin_id, .. }
            | TransactionOp::Delete { thin_id, .. }
            | TransactionOp::BaseCreate { thin_id } => *thin_id,
        }
    }

    /// The device the operation touches; `None` for the base device.
    pub fn device_id(&self) -> Option<&str> {
        match self {
            TransactionOp::Create { device_id, .. } | TransactionOp::Delete { device_id, .. } => {
                Some(device_id)
            }
            TransactionOp::BaseCreate { .. } => None,
        }
    }
}

/// What `transaction.json` holds: the committed pool transaction id and the
/// last transaction begun, which is committed once the pool's transaction id
/// equals its `open_transaction_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionState {
    /// The pool's transaction id after the last committed operation.
    pub committed_transaction_id: u64,
    /// The operation under way, if any.
    #[serde(default)]
    pub open: Option<TransactionRecord>,
}

/// An open pool transaction, kept in `transaction.json` between
/// [`MetadataStore::begin`] and [`MetadataStore::commit`] or [`MetadataStore::clear`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionRecord {
    /// The pool transaction id that will be set when the operation commits.
    pub open_transaction_id: u64,
    /// What the transaction does.
    pub op: TransactionOp,
}

impl TransactionRecord {
    /// Checks the values: thin id in range, device id valid.
    pub fn validate(&self, max_id_len: usize) -> Result<(), String> {
        check_thin_id("thin_id", self.op.thin_id())?;
        if let Some(id) = self.op.device_id() {
            validate_device_id(id, max_id_len).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

fn check_thin_id(field: &str, id: u32) -> Result<(), String> {
    if id > THIN_ID_MAX {
        Err(format!(
            "{field} {id} is over the 24-bit limit {THIN_ID_MAX}"
        ))
    } else {
        Ok(())
    }
}

fn check_size(field: &str, size: u64) -> Result<(), String> {
    if size == 0 || size % SECTOR != 0 {
        Err(format!("{field} {size} is not a non-zero multiple of 512"))
    } else {
        Ok(())
    }
}

/// What is wrong with a record file.
#[derive(Debug, thiserror::Error)]
pub enum ProblemReason {
    /// Opening or reading it failed.
    #[error("cannot read it: {0}")]
    Unreadable(#[source] io::Error),
    /// A directory, symlink, fifo or the like where a record file should be.
    #[error("not a regular file")]
    NotRegularFile,
    /// Bigger than [`MAX_RECORD_BYTES`].
    #[error("over the {MAX_RECORD_BYTES}-byte limit for a record (at least {len} bytes)")]
    TooLarge {
        /// Its size, or as much of it as was read.
        len: u64,
    },
    /// Zero bytes long.
    #[error("empty file")]
    Empty,
    /// JSON that stops in the middle.
    #[error("truncated: {0}")]
    Truncated(String),
    /// Not JSON at all.
    #[error("not valid JSON: {0}")]
    NotJson(String),
    /// JSON, but missing fields or with fields of the wrong type.
    #[error("not a valid record: {0}")]
    WrongShape(String),
    /// A field holds a value out of range.
    #[error("invalid value: {0}")]
    InvalidValue(String),
    /// The file name is not `<device id>.json`.
    #[error("unexpected file name: {0}")]
    BadFileName(String),
    /// The file is named for one device but holds another's record.
    #[error("file is named for device {file_id:?} but holds the record of {record_id:?}")]
    NameMismatch {
        /// The id in the file name.
        file_id: String,
        /// The id in the record.
        record_id: String,
    },
}

/// A device record file that could not be loaded, and why.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}", path = path.display())]
pub struct RecordProblem {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: ProblemReason,
}

/// Errors from the metadata store. Each names the file and what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The set or transaction record, or a requested device record, is damaged.
    #[error("corrupt metadata record {}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: ProblemReason,
    },
    /// The set record is from a newer format.
    #[error(
        "{} has format version {found}; this build understands versions up to {FORMAT_VERSION}",
        path.display()
    )]
    UnsupportedVersion {
        /// The set record.
        path: PathBuf,
        /// Its version.
        found: u32,
    },
    /// A device id that cannot be a record file name.
    #[error("invalid device id: {0}")]
    InvalidId(#[from] IdError),
    /// A record with invalid values was given to a write.
    #[error("refusing to write {}: {reason}", path.display())]
    InvalidRecord {
        /// The file it would have gone to.
        path: PathBuf,
        /// What is invalid.
        reason: String,
    },
    /// Serializing a record failed (e.g. a non-UTF-8 path).
    #[error("serialize {}: {source}", path.display())]
    Serialize {
        /// The file it would have gone to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// [`MetadataStore::begin`] while a transaction is open.
    #[error(
        "a transaction (open id {}) is already recorded in {}; clear it first",
        open_transaction_id.map_or_else(|| "unreadable".to_owned(), |id| id.to_string()),
        path.display()
    )]
    TransactionPending {
        /// The transaction file.
        path: PathBuf,
        /// The open transaction's id, if it could be read.
        open_transaction_id: Option<u64>,
    },
    /// [`MetadataStore::quarantine`] of a file outside the device directory.
    #[error("{} is not a file in the device record directory {}", path.display(), dir.display())]
    NotQuarantinable {
        /// The refused path.
        path: PathBuf,
        /// The device record directory.
        dir: PathBuf,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { op, path, source }
}

/// Everything [`MetadataStore::load_all`] found.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// The set record; `None` for a new set.
    pub set: Option<SetRecord>,
    /// The open transaction, if an operation was interrupted.
    pub transaction: Option<TransactionRecord>,
    /// Every device record that loaded, by id.
    pub devices: BTreeMap<String, DeviceRecord>,
    /// Device record files that did not load, each with its reason. They are
    /// left in place.
    pub problems: Vec<RecordProblem>,
    /// Files set aside earlier by [`MetadataStore::quarantine`].
    pub quarantined: Vec<PathBuf>,
    /// Temp files of interrupted writes that were removed (they never held
    /// committed data).
    pub removed_temp_files: Vec<PathBuf>,
    /// Records taken from the record cache (their files were only stat'ed).
    pub cache_hits: usize,
    /// Records read from their files.
    pub cache_misses: usize,
}

/// A file's identity as far as the record cache is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    ino: u64,
    size: i64,
    mtime: i64,
    mtime_ns: i64,
    ctime: i64,
    ctime_ns: i64,
}

impl FileStamp {
    fn of(st: &nix::sys::stat::FileStat) -> Self {
        FileStamp {
            ino: st.st_ino,
            size: st.st_size,
            mtime: st.st_mtime,
            mtime_ns: st.st_mtime_nsec,
            ctime: st.st_ctime,
            ctime_ns: st.st_ctime_nsec,
        }
    }
}

/// One line of the record cache: a record file's name and stamp, and the
/// record it held.
///
/// ```text
/// <name> <ino> <size> <mtime> <mtime_ns> <ctime> <ctime_ns> <thin_id> <bytes> <initialized> <created_at> <deferred_delete> <parent or />
/// ```
///
/// Device ids have no spaces and cannot be `/`, so the line splits cleanly.
/// Lines are sorted by name, like the directory scan they are joined with.
struct CacheLine {
    name: String,
    stamp: FileStamp,
    record: DeviceRecord,
}

impl CacheLine {
    fn parse(line: &str) -> Option<CacheLine> {
        let mut f = line.split(' ');
        let mut next = || f.next();
        let name = next()?.to_owned();
        let stamp = FileStamp {
            ino: next()?.parse().ok()?,
            size: next()?.parse().ok()?,
            mtime: next()?.parse().ok()?,
            mtime_ns: next()?.parse().ok()?,
            ctime: next()?.parse().ok()?,
            ctime_ns: next()?.parse().ok()?,
        };
        let flag = |v: &str| match v {
            "0" => Some(false),
            "1" => Some(true),
            _ => None,
        };
        let thin_id = next()?.parse().ok()?;
        let size = next()?.parse().ok()?;
        let initialized = flag(next()?)?;
        let created_at = next()?.parse().ok()?;
        let deferred_delete = flag(next()?)?;
        let parent = match next()? {
            "/" => None,
            p => Some(p.to_owned()),
        };
        if next().is_some() {
            return None;
        }
        let id = name.strip_suffix(RECORD_EXT)?.to_owned();
        Some(CacheLine {
            name,
            stamp,
            record: DeviceRecord {
                id,
                parent,
                thin_id,
                size,
                initialized,
                created_at,
                deferred_delete,
            },
        })
    }

    fn write(name: &str, st: &FileStamp, r: &DeviceRecord, out: &mut impl Write) -> io::Result<()> {
        writeln!(
            out,
            "{name} {} {} {} {} {} {} {} {} {} {} {} {}",
            st.ino,
            st.size,
            st.mtime,
            st.mtime_ns,
            st.ctime,
            st.ctime_ns,
            r.thin_id,
            r.size,
            u8::from(r.initialized),
            r.created_at,
            u8::from(r.deferred_delete),
            r.parent.as_deref().unwrap_or("/")
        )
    }
}

/// Reads the record cache line by line, in name order, for a merge join
/// with the sorted directory scan. A damaged line ends it (the rest of the
/// records are read from their files).
struct CacheReader {
    input: Option<io::BufReader<File>>,
    line: String,
    current: Option<CacheLine>,
}

impl CacheReader {
    fn open(path: &Path) -> CacheReader {
        let mut reader = CacheReader {
            input: None,
            line: String::new(),
            current: None,
        };
        match File::open(path) {
            Ok(f) => {
                let mut input = io::BufReader::with_capacity(64 << 10, f);
                let mut header = String::new();
                match io::BufRead::read_line(&mut input, &mut header) {
                    Ok(_) if header.trim_end() == CACHE_HEADER => {
                        reader.input = Some(input);
                        reader.advance();
                    }
                    Ok(_) => log::debug!("record cache {}: unknown format", path.display()),
                    Err(e) => log::debug!("record cache {}: {e}", path.display()),
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => log::debug!("record cache {}: {e}", path.display()),
        }
        reader
    }

    fn advance(&mut self) {
        self.current = None;
        let Some(input) = self.input.as_mut() else {
            return;
        };
        self.line.clear();
        match io::BufRead::read_line(input, &mut self.line) {
            Ok(n) if n > 0 && self.line.ends_with('\n') => {
                self.current = CacheLine::parse(&self.line[..self.line.len() - 1]);
                if self.current.is_none() {
                    log::debug!("record cache: damaged line, ignoring the rest");
                }
            }
            _ => {}
        }
        if self.current.is_none() {
            self.input = None;
        }
    }

    /// The cached line for `name`, skipping lines of files that are gone.
    fn take(&mut self, name: &str) -> Option<CacheLine> {
        loop {
            let here = self.current.as_ref()?.name.as_str();
            match here.cmp(name) {
                std::cmp::Ordering::Less => self.advance(),
                std::cmp::Ordering::Equal => {
                    let line = self.current.take();
                    self.advance();
                    return line;
                }
                std::cmp::Ordering::Greater => return None,
            }
        }
    }
}

/// Process-wide counter that makes each store's temp file names unique.
static INSTANCES: AtomicU64 = AtomicU64::new(0);

/// The metadata directory of one device set. `Send + Sync`.
#[derive(Debug)]
pub struct MetadataStore {
    root: PathBuf,
    meta_dir: PathBuf,
    devices_dir: PathBuf,
    meta_dir_file: File,
    devices_dir_file: File,
    max_id_len: usize,
    /// `.tmp~<pid>-<nanos>-<instance>~`: the prefix of this store's temp files.
    temp_tag: String,
    seq: AtomicU64,
}

impl MetadataStore {
    /// Opens (creating if needed) the metadata directory under `root`.
    ///
    /// `max_id_len` bounds device ids, as in [`validate_device_id`]; it is
    /// capped at [`MAX_FILE_ID_LEN`]. Directories that exist with group or
    /// other permissions are tightened to 0700.
    pub fn open(root: &Path, max_id_len: usize) -> Result<Self, StoreError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(io_err("create directory", root))?;
        let meta_dir = root.join(METADATA_DIR);
        let devices_dir = meta_dir.join(DEVICES_DIR);
        ensure_private_dir(&meta_dir, root)?;
        ensure_private_dir(&devices_dir, &meta_dir)?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let instance = INSTANCES.fetch_add(1, Ordering::Relaxed);
        Ok(Self {
            root: root.to_path_buf(),
            meta_dir_file: open_dir(&meta_dir)?,
            devices_dir_file: open_dir(&devices_dir)?,
            meta_dir,
            devices_dir,
            max_id_len: max_id_len.min(MAX_FILE_ID_LEN),
            temp_tag: format!("{TEMP_PREFIX}{}-{nanos:x}-{instance}~", std::process::id()),
            seq: AtomicU64::new(0),
        })
    }

    /// The set root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/metadata`.
    pub fn metadata_dir(&self) -> &Path {
        &self.meta_dir
    }

    /// `<root>/metadata/devices`.
    pub fn devices_dir(&self) -> &Path {
        &self.devices_dir
    }

    /// The device id length limit in force.
    pub fn max_id_len(&self) -> usize {
        self.max_id_len
    }

    /// `<root>/metadata/set.json`.
    pub fn set_path(&self) -> PathBuf {
        self.meta_dir.join(SET_FILE)
    }

    /// `<root>/metadata/transaction.json`.
    pub fn transaction_path(&self) -> PathBuf {
        self.meta_dir.join(TRANSACTION_FILE)
    }

    /// The record file of device `id`, after validating `id`.
    pub fn device_path(&self, id: &str) -> Result<PathBuf, StoreError> {
        validate_device_id(id, self.max_id_len)?;
        Ok(self.devices_dir.join(format!("{id}{RECORD_EXT}")))
    }

    /// Durably writes (creates or replaces) a device record.
    pub fn write_device(&self, record: &DeviceRecord) -> Result<(), StoreError> {
        let path = self.device_path(&record.id)?;
        record
            .validate(self.max_id_len)
            .map_err(|reason| StoreError::InvalidRecord {
                path: path.clone(),
                reason,
            })?;
        let bytes = to_json(record, &path)?;
        self.write_atomic(&self.devices_dir, &self.devices_dir_file, &path, &bytes)
    }

    /// Durably removes a device record. Returns whether it existed; the
    /// directory is fsynced either way, so an earlier unsynced removal becomes
    /// durable too.
    pub fn remove_device_record(&self, id: &str) -> Result<bool, StoreError> {
        let path = self.device_path(id)?;
        remove_durably(&path, &self.devices_dir, &self.devices_dir_file)
    }

    /// Reads one device record; `Ok(None)` if there is none.
    pub fn read_device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        let path = self.device_path(id)?;
        match read_record_file(&path) {
            Ok(bytes) => self
                .parse_device(id, &bytes)
                .map(Some)
                .map_err(|reason| StoreError::Corrupt { path, reason }),
            Err(ProblemReason::Unreadable(e)) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(reason) => Err(StoreError::Corrupt { path, reason }),
        }
    }

    /// Durably writes (creates or replaces) the set record.
    pub fn write_set(&self, record: &SetRecord) -> Result<(), StoreError> {
        let path = self.set_path();
        record
            .validate()
            .map_err(|reason| StoreError::InvalidRecord {
                path: path.clone(),
                reason,
            })?;
        let bytes = to_json(record, &path)?;
        self.write_atomic(&self.meta_dir, &self.meta_dir_file, &path, &bytes)
    }

    /// Reads the set record; `Ok(None)` for a new set. A damaged record is
    /// [`StoreError::Corrupt`]; a newer format is
    /// [`StoreError::UnsupportedVersion`].
    pub fn read_set(&self) -> Result<Option<SetRecord>, StoreError> {
        let path = self.set_path();
        let bytes = match read_record_file(&path) {
            Ok(bytes) => bytes,
            Err(ProblemReason::Unreadable(e)) if e.kind() == ErrorKind::NotFound => {
                return Ok(None)
            }
            Err(reason) => return Err(StoreError::Corrupt { path, reason }),
        };
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        let corrupt = |reason| StoreError::Corrupt {
            path: path.clone(),
            reason,
        };
        let version: Version = parse(&bytes).map_err(corrupt)?;
        if version.format_version > FORMAT_VERSION {
            return Err(StoreError::UnsupportedVersion {
                path,
                found: version.format_version,
            });
        }
        let record: SetRecord = parse(&bytes).map_err(corrupt)?;
        record
            .validate()
            .map_err(|e| corrupt(ProblemReason::InvalidValue(e)))?;
        Ok(Some(record))
    }

    /// Durably records the start of a transaction.
    ///
    /// The record of the previous operation is simply replaced: an operation
    /// is committed by the pool's transaction id reaching its
    /// `open_transaction_id`, so no second write is needed to close it.
    /// Refused with [`StoreError::TransactionPending`] while the recorded
    /// transaction has an id at or past the new one (it never committed and
    /// must be recovered or cleared first).
    ///
    /// `transaction.json` also names the committed pool transaction id the
    /// operation starts from, so an open can tell a pool that moved without us.
    pub fn begin(&self, txn: &TransactionRecord) -> Result<(), StoreError> {
        let path = self.transaction_path();
        txn.validate(self.max_id_len)
            .map_err(|reason| StoreError::InvalidRecord {
                path: path.clone(),
                reason,
            })?;
        let state = self.transaction_state()?;
        if let Some(open) = state.as_ref().and_then(|s| s.open.as_ref()) {
            if open.open_transaction_id >= txn.open_transaction_id {
                return Err(StoreError::TransactionPending {
                    path,
                    open_transaction_id: Some(open.open_transaction_id),
                });
            }
        }
        self.write_transaction_state(&TransactionState {
            committed_transaction_id: txn.open_transaction_id.saturating_sub(1),
            open: Some(txn.clone()),
        })
    }

    /// Durably drops the open transaction without committing it (a roll back).
    /// Returns whether one was open.
    pub fn clear(&self) -> Result<bool, StoreError> {
        match self.transaction_state()? {
            Some(TransactionState {
                committed_transaction_id,
                open: Some(_),
            }) => {
                self.write_transaction_state(&TransactionState {
                    committed_transaction_id,
                    open: None,
                })?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Durably records that the pool's transaction id is now `transaction_id`,
    /// closing any open transaction.
    pub fn commit(&self, transaction_id: u64) -> Result<(), StoreError> {
        self.write_transaction_state(&TransactionState {
            committed_transaction_id: transaction_id,
            open: None,
        })
    }

    /// The last committed pool transaction id, or `None` before the first.
    pub fn committed(&self) -> Result<Option<u64>, StoreError> {
        Ok(self
            .transaction_state()?
            .map(|s| s.committed_transaction_id))
    }

    /// The open transaction, if any. A damaged record is
    /// [`StoreError::Corrupt`].
    pub fn pending(&self) -> Result<Option<TransactionRecord>, StoreError> {
        Ok(self.transaction_state()?.and_then(|s| s.open))
    }

    fn write_transaction_state(&self, state: &TransactionState) -> Result<(), StoreError> {
        let path = self.transaction_path();
        let bytes = to_json(state, &path)?;
        self.write_atomic(&self.meta_dir, &self.meta_dir_file, &path, &bytes)
    }

    fn transaction_state(&self) -> Result<Option<TransactionState>, StoreError> {
        let path = self.transaction_path();
        let bytes = match read_record_file(&path) {
            Ok(bytes) => bytes,
            Err(ProblemReason::Unreadable(e)) if e.kind() == ErrorKind::NotFound => {
                return Ok(None)
            }
            Err(reason) => return Err(StoreError::Corrupt { path, reason }),
        };
        let corrupt = |reason| StoreError::Corrupt {
            path: path.clone(),
            reason,
        };
        let state: TransactionState = parse(&bytes).map_err(corrupt)?;
        if let Some(txn) = &state.open {
            txn.validate(self.max_id_len)
                .map_err(|e| corrupt(ProblemReason::InvalidValue(e)))?;
        }
        Ok(Some(state))
    }

    /// Loads the set record, the open transaction and every device record.
    ///
    /// Damaged device records go to [`LoadReport::problems`] and do not stop
    /// the others loading. Temp files left by interrupted writes of earlier
    /// processes are removed. Errors only for a damaged set or transaction
    /// record, or an unreadable directory.
    pub fn load_all(&self) -> Result<LoadReport, StoreError> {
        let mut report = LoadReport::default();
        // Only for its side effect: removing leftover temp files.
        self.scan_dir(&self.meta_dir, &mut report)?;
        report.set = self.read_set()?;
        report.transaction = self.pending()?;

        let entries = self.scan_dir(&self.devices_dir, &mut report)?;
        let mut cache = CacheReader::open(&self.meta_dir.join(CACHE_FILE));
        // (file name, stamp) of every record that loaded, for a cache rewrite.
        let mut stamps: Vec<(String, FileStamp)> = Vec::new();
        // One buffer for every record: records are small and this is the
        // hot loop of opening a large set.
        let mut buf = Vec::new();
        for (name, is_file) in entries {
            let outcome = if is_quarantined(&name) {
                let path = self.devices_dir.join(&name);
                log::debug!("skipping quarantined record {}", path.display());
                report.quarantined.push(path);
                continue;
            } else if let Some(stem) = name.strip_suffix(RECORD_EXT) {
                if let Err(e) = validate_device_id(stem, self.max_id_len) {
                    Err(ProblemReason::BadFileName(e.to_string()))
                } else if !is_file {
                    Err(ProblemReason::NotRegularFile)
                } else if let Some(hit) = cache.take(&name).filter(|c| {
                    c.record.validate(self.max_id_len).is_ok()
                        && nix::sys::stat::fstatat(
                            &self.devices_dir_file,
                            name.as_str(),
                            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                        )
                        .is_ok_and(|st| FileStamp::of(&st) == c.stamp)
                }) {
                    report.cache_hits += 1;
                    stamps.push((hit.name, hit.stamp));
                    Ok(hit.record)
                } else {
                    report.cache_misses += 1;
                    read_record_at(&self.devices_dir_file, &name, &mut buf).and_then(
                        |(len, stamp)| {
                            let r = self.parse_device(stem, &buf[..len])?;
                            stamps.push((name.clone(), stamp));
                            Ok(r)
                        },
                    )
                }
            } else {
                Err(ProblemReason::BadFileName(
                    "not a device record (expected <device id>.json)".to_owned(),
                ))
            };
            match outcome {
                Ok(record) => {
                    report.devices.insert(record.id.clone(), record);
                }
                Err(reason) => report.problems.push(RecordProblem {
                    path: self.devices_dir.join(&name),
                    reason,
                }),
            }
        }
        let total = report.cache_hits + report.cache_misses;
        if report.cache_misses >= CACHE_REWRITE_MIN_MISSES && report.cache_misses * 16 >= total {
            self.write_cache(&stamps, &report.devices);
        }
        Ok(report)
    }

    /// Replaces the record cache, leaving out files changed in the last
    /// [`CACHE_SETTLE_SECS`]. Best effort: failures are logged.
    fn write_cache(
        &self,
        stamps: &[(String, FileStamp)],
        devices: &BTreeMap<String, DeviceRecord>,
    ) {
        let now = now_unix() as i64;
        let target = self.meta_dir.join(CACHE_FILE);
        let (tmp, file) = match self.create_temp(&self.meta_dir) {
            Ok(t) => t,
            Err(e) => {
                log::warn!("writing record cache {}: {e}", target.display());
                return;
            }
        };
        let mut out = io::BufWriter::with_capacity(64 << 10, file);
        let written = writeln!(out, "{CACHE_HEADER}")
            .and_then(|()| {
                for (name, stamp) in stamps {
                    if stamp.ctime + CACHE_SETTLE_SECS >= now {
                        continue;
                    }
                    let id = name.strip_suffix(RECORD_EXT).unwrap_or(name);
                    if let Some(r) = devices.get(id) {
                        CacheLine::write(name, stamp, r, &mut out)?;
                    }
                }
                out.flush()
            })
            .and_then(|()| fs::rename(&tmp, &target));
        if let Err(e) = written {
            drop(out);
            let _ = fs::remove_file(&tmp);
            log::warn!("writing record cache {}: {e}", target.display());
        }
    }

    /// Moves a device record file aside to `<name>.corrupt` (or
    /// `<name>.corrupt.<n>` if that exists), durably. Only files directly in
    /// the device record directory may be moved. Returns the new path.
    pub fn quarantine(&self, path: &Path) -> Result<PathBuf, StoreError> {
        let refuse = || StoreError::NotQuarantinable {
            path: path.to_path_buf(),
            dir: self.devices_dir.clone(),
        };
        let name = match (path.parent(), path.file_name().and_then(|n| n.to_str())) {
            (Some(parent), Some(name)) if parent == self.devices_dir => name,
            _ => return Err(refuse()),
        };
        if name.starts_with(TEMP_PREFIX) || name == "." || name == ".." {
            return Err(refuse());
        }
        fs::symlink_metadata(path).map_err(io_err("stat", path))?;
        for n in 0..1000u32 {
            let target = if n == 0 {
                self.devices_dir.join(format!("{name}{QUARANTINE_SUFFIX}"))
            } else {
                self.devices_dir
                    .join(format!("{name}{QUARANTINE_SUFFIX}.{n}"))
            };
            match fs::symlink_metadata(&target) {
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Ok(_) => continue,
                Err(e) => return Err(io_err("stat", &target)(e)),
            }
            fs::rename(path, &target).map_err(io_err("rename to quarantine", path))?;
            self.devices_dir_file
                .sync_all()
                .map_err(io_err("fsync directory", &self.devices_dir))?;
            log::info!("quarantined {} as {}", path.display(), target.display());
            return Ok(target);
        }
        Err(io_err("quarantine", path)(io::Error::new(
            ErrorKind::AlreadyExists,
            "too many quarantined copies",
        )))
    }

    fn parse_device(&self, file_id: &str, bytes: &[u8]) -> Result<DeviceRecord, ProblemReason> {
        let record: DeviceRecord = parse(bytes)?;
        record
            .validate(self.max_id_len)
            .map_err(ProblemReason::InvalidValue)?;
        if record.id != file_id {
            return Err(ProblemReason::NameMismatch {
                file_id: file_id.to_owned(),
                record_id: record.id,
            });
        }
        Ok(record)
    }

    /// Lists a directory's entries sorted by name, each with whether it is a
    /// regular file, removing other stores' temp files. Non-UTF-8 names in
    /// the device directory become problems.
    fn scan_dir(
        &self,
        dir: &Path,
        report: &mut LoadReport,
    ) -> Result<Vec<(String, bool)>, StoreError> {
        let mut entries = Vec::new();
        let mut removed_any = false;
        for entry in fs::read_dir(dir).map_err(io_err("read directory", dir))? {
            let entry = entry.map_err(io_err("read directory", dir))?;
            let name = match entry.file_name().into_string() {
                Ok(name) => name,
                Err(_) => {
                    if dir == self.devices_dir {
                        report.problems.push(RecordProblem {
                            path: entry.path(),
                            reason: ProblemReason::BadFileName("not valid UTF-8".to_owned()),
                        });
                    }
                    continue;
                }
            };
            if name.starts_with(TEMP_PREFIX) {
                if name.starts_with(&self.temp_tag) {
                    continue; // one of our own writes, in flight
                }
                let path = entry.path();
                match fs::remove_file(&path) {
                    Ok(()) => {
                        log::debug!("removed leftover temp file {}", path.display());
                        removed_any = true;
                        report.removed_temp_files.push(path);
                    }
                    Err(e) => log::warn!("removing leftover temp file {}: {e}", path.display()),
                }
                continue;
            }
            // From the directory entry's d_type; no stat unless the file
            // system does not fill it in.
            let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
            entries.push((name, is_file));
        }
        if removed_any {
            let file = if dir == self.devices_dir {
                &self.devices_dir_file
            } else {
                &self.meta_dir_file
            };
            if let Err(e) = file.sync_all() {
                log::warn!("fsync directory {}: {e}", dir.display());
            }
        }
        entries.sort_unstable();
        Ok(entries)
    }

    /// Creates a new temp file (mode 0600) of this store's in `dir`.
    fn create_temp(&self, dir: &Path) -> Result<(PathBuf, File), StoreError> {
        loop {
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            let tmp = dir.join(format!("{}{seq}", self.temp_tag));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
            {
                Ok(file) => return Ok((tmp, file)),
                // Only possible if a dead process had our pid, start time and
                // instance number; take the next sequence number.
                Err(e) if e.kind() == ErrorKind::AlreadyExists && seq < 1 << 20 => continue,
                Err(e) => return Err(io_err("create temp file", &tmp)(e)),
            }
        }
    }

    /// Writes `bytes` to a new fsynced temp file in `dir` and returns its path.
    fn write_temp(&self, dir: &Path, bytes: &[u8]) -> Result<PathBuf, StoreError> {
        let (tmp, mut file) = self.create_temp(dir)?;
        let written = file
            .write_all(bytes)
            .map_err(io_err("write", &tmp))
            .and_then(|()| file.sync_all().map_err(io_err("fsync", &tmp)));
        if let Err(e) = written {
            drop(file);
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(tmp)
    }

    fn write_atomic(
        &self,
        dir: &Path,
        dir_file: &File,
        target: &Path,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let tmp = self.write_temp(dir, bytes)?;
        if let Err(e) = fs::rename(&tmp, target) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("rename temp file onto", target)(e));
        }
        dir_file.sync_all().map_err(io_err("fsync directory", dir))
    }
}

fn to_json<T: Serialize>(value: &T, path: &Path) -> Result<Vec<u8>, StoreError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| StoreError::Serialize {
        path: path.to_path_buf(),
        source,
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProblemReason> {
    use serde_json::error::Category;
    if bytes.is_empty() {
        return Err(ProblemReason::Empty);
    }
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        Category::Eof => ProblemReason::Truncated(e.to_string()),
        Category::Data => ProblemReason::WrongShape(e.to_string()),
        Category::Syntax | Category::Io => ProblemReason::NotJson(e.to_string()),
    })
}

/// Reads a record file: no symlinks, regular files only, bounded size.
fn read_record_file(path: &Path) -> Result<Vec<u8>, ProblemReason> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::libc::ELOOP) {
                ProblemReason::NotRegularFile
            } else {
                ProblemReason::Unreadable(e)
            }
        })?;
    let meta = file.metadata().map_err(ProblemReason::Unreadable)?;
    if !meta.is_file() {
        return Err(ProblemReason::NotRegularFile);
    }
    if meta.len() > MAX_RECORD_BYTES {
        return Err(ProblemReason::TooLarge { len: meta.len() });
    }
    // The file may grow between fstat and read; the limit still holds.
    let mut bytes = Vec::with_capacity(meta.len() as usize + 1);
    file.take(MAX_RECORD_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ProblemReason::Unreadable)?;
    if bytes.len() as u64 > MAX_RECORD_BYTES {
        return Err(ProblemReason::TooLarge {
            len: bytes.len() as u64,
        });
    }
    Ok(bytes)
}

/// Reads the record file `name` in the directory open as `dir` into `buf`,
/// returning its length: the record is `buf[..len]`.
///
/// This is the hot loop of opening a large set, and on a slow (emulated)
/// machine each syscall counts, so: the caller has already seen from the
/// directory entry that the file is regular; it is opened relative to the
/// directory (a one-step path walk) without an fstat; and a read that comes
/// back shorter than asked is taken as the end of the file, which is what
/// reads of regular files do. The size bound holds whatever the file turns
/// out to be.
/// Reads a record file into `buf`; returns its length and the stamp of the
/// file that was read (fstat of the open file, so the two always agree).
fn read_record_at(
    dir: &File,
    name: &str,
    buf: &mut Vec<u8>,
) -> Result<(usize, FileStamp), ProblemReason> {
    let fd = nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|errno| {
        if errno == nix::errno::Errno::ELOOP {
            ProblemReason::NotRegularFile
        } else {
            ProblemReason::Unreadable(errno.into())
        }
    })?;
    let mut file = File::from(fd);
    // Zeroed once per load, not per file.
    if buf.len() < READ_CHUNK {
        buf.resize(READ_CHUNK, 0);
    }
    let n = loop {
        match file.read(&mut buf[..READ_CHUNK]) {
            Ok(n) => break n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(ProblemReason::Unreadable(e)),
        }
    };
    let stamp = nix::sys::stat::fstat(&file)
        .map(|st| FileStamp::of(&st))
        .map_err(|e| ProblemReason::Unreadable(e.into()))?;
    if n < READ_CHUNK {
        return Ok((n, stamp));
    }
    // A big record (or not a record at all): read the rest, bounded.
    buf.truncate(READ_CHUNK);
    file.take(MAX_RECORD_BYTES + 1 - READ_CHUNK as u64)
        .read_to_end(buf)
        .map_err(ProblemReason::Unreadable)?;
    if buf.len() as u64 > MAX_RECORD_BYTES {
        return Err(ProblemReason::TooLarge {
            len: buf.len() as u64,
        });
    }
    Ok((buf.len(), stamp))
}

fn remove_durably(path: &Path, dir: &Path, dir_file: &File) -> Result<bool, StoreError> {
    let existed = match fs::remove_file(path) {
        Ok(()) => true,
        Err(e) if e.kind() == ErrorKind::NotFound => false,
        Err(e) => return Err(io_err("remove", path)(e)),
    };
    dir_file
        .sync_all()
        .map_err(io_err("fsync directory", dir))?;
    Ok(existed)
}

/// `<name>.corrupt` or `<name>.corrupt.<digits>`.
fn is_quarantined(name: &str) -> bool {
    match name.rfind(QUARANTINE_SUFFIX) {
        Some(i) => {
            let rest = &name[i + QUARANTINE_SUFFIX.len()..];
            rest.is_empty()
                || rest
                    .strip_prefix('.')
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        }
        None => false,
    }
}

fn open_dir(dir: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_DIRECTORY.bits())
        .open(dir)
        .map_err(io_err("open directory", dir))
}

/// Creates `dir` with mode 0700 (fsyncing `parent` so it stays), or tightens
/// an existing one to 0700.
fn ensure_private_dir(dir: &Path, parent: &Path) -> Result<(), StoreError> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => open_dir(parent)?
            .sync_all()
            .map_err(io_err("fsync directory", parent)),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            let meta = fs::metadata(dir).map_err(io_err("stat", dir))?;
            if !meta.is_dir() {
                return Err(io_err("open directory", dir)(io::Error::new(
                    ErrorKind::NotADirectory,
                    "exists and is not a directory",
                )));
            }
            if meta.permissions().mode() & 0o077 != 0 {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                    .map_err(io_err("chmod 0700", dir))?;
            }
            Ok(())
        }
        Err(e) => Err(io_err("create directory", dir)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantine_names() {
        assert!(is_quarantined("a.json.corrupt"));
        assert!(is_quarantined("a.json.corrupt.12"));
        assert!(!is_quarantined("a.corrupt.json"));
        assert!(!is_quarantined("a.json.corrupt."));
        assert!(!is_quarantined("a.json.corrupt.x"));
    }

    #[test]
    fn parse_classifies() {
        assert!(matches!(
            parse::<DeviceRecord>(b""),
            Err(ProblemReason::Empty)
        ));
        assert!(matches!(
            parse::<DeviceRecord>(b"{\"id\": \"a\""),
            Err(ProblemReason::Truncated(_))
        ));
        assert!(matches!(
            parse::<DeviceRecord>(b"\0\0\0"),
            Err(ProblemReason::NotJson(_))
        ));
        assert!(matches!(
            parse::<DeviceRecord>(b"{\"id\": 3}"),
            Err(ProblemReason::WrongShape(_))
        ));
    }

    #[test]
    fn record_validation() {
        let mut r = DeviceRecord::new("a", None, 1, 4096);
        assert!(r.validate(64).is_ok());
        r.size = 100;
        assert!(r.validate(64).unwrap_err().contains("size 100"));
        r.size = 4096;
        r.thin_id = THIN_ID_MAX + 1;
        assert!(r.validate(64).unwrap_err().contains("24-bit"));
        r.thin_id = 1;
        r.parent = Some("a".into());
        assert!(r.validate(64).unwrap_err().contains("own parent"));
        r.parent = Some("../b".into());
        assert!(r.validate(64).unwrap_err().starts_with("parent:"));
    }
}
