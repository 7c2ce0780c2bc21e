//! The device set's durable metadata: one JSON file per device, a set-wide
//! record, an open-transaction record and the intent journal.
//!
//! Layout under the set root (directories mode 0700, files mode 0600):
//!
//! ```text
//! <root>/metadata/set.json           SetRecord
//! <root>/metadata/transaction.json   TransactionState: last committed id, open transaction
//! <root>/metadata/journal            Journal: device changes since the last fold
//! <root>/metadata/devices/<id>.json  DeviceRecord, one per device (as of the last fold)
//! <root>/metadata/devices.cache      a derived copy of the records, never trusted alone
//! <root>/metadata/autoextend.json    a side file: the growth log (and its spare, `.spare`)
//! ```
//!
//! Adds, removes and record changes are appended to the journal (one
//! `fdatasync` each, see [`Journal`]); the record files are rewritten from
//! it by a fold ([`MetadataStore::write_records`], one directory fsync for
//! the batch). A device's record is its last journal entry when it has
//! one, else its file.
//!
//! Every write goes to a fresh temp file in the target's directory (named
//! `.tmp~…`, which no device id can collide with since ids cannot contain
//! `~`), which is fsynced, renamed over the target, and then the directory is
//! fsynced (side files are rewritten in place of a preallocated spare
//! instead, so a full filesystem does not stop them: see `side.rs`). A
//! removal is an unlink followed by a directory fsync. A device
//! change touches only that device's file, so its cost does not depend on how
//! many devices exist.
//!
//! [`MetadataStore::load_all`] reads everything back. A damaged device record
//! is reported as a [`RecordProblem`] naming the file, and the other records
//! still load. So is a record named like the set's own devices (`pool`,
//! `base`), and every record of a thin id that two records (or a record and
//! the base device) claim; a damaged set or transaction record is an error, since the set
//! cannot be opened safely without it. Damaged files are never deleted or
//! overwritten: they stay in place, reported at every open, until an
//! operator repairs one or sets it aside by renaming it to `<id>.json.corrupt`
//! (or `<id>.json.corrupt.<n>`). Loads skip such files and list them in
//! [`LoadReport::quarantined`]; the id is then free again.
//!
//! Opening a big set reads `devices.cache` first: a copy of every record
//! with its file's inode, size, mtime and ctime. A cached record is used only
//! when one `stat` of its file still matches; any other file is read as
//! usual. Our own writes always make a new inode, and a hand edit changes the
//! ctime, so a stale or damaged cache costs time, never correctness. The
//! cache is rewritten (without fsync: it is only an optimisation) when many
//! records had to be read, and holds only files whose ctime is at least
//! [`CACHE_SETTLE_SECS`](cache::CACHE_SETTLE_SECS) older than the cache, so
//! a file changed within one timestamp tick of being cached cannot be
//! mistaken for the cached one.
//!
//! The store may be shared between threads. [`MetadataStore::load_all`]
//! removes temp files left by earlier processes (never by this store), so it
//! is safe to call while writes are in flight, though it is meant for opening.

mod cache;
mod checks;
mod durable;
mod error;
mod journal;
mod read;
mod records;
mod side;

use std::fs::{self, File};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ids::validate_device_id;
use crate::durable::TempFiles;
use cache::{CacheReader, FileStamp, CACHE_FILE, CACHE_REWRITE_MIN_MISSES};
use durable::{ensure_private_dir, is_quarantined, open_dir, remove_durably, TEMP_PREFIX};
use error::io_err;
use read::{read_if_exists, read_record_at};
use records::{parse, to_json, TransactionState};

pub use error::{LoadReport, ProblemReason, RecordProblem, StoreError};
pub use journal::{Journal, Replay, ThinIdentity, Unresolved};
pub use records::{
    DeviceRecord, FsKind, SetRecord, Storage, TransactionOp, TransactionRecord, UnknownFsKind,
    RESERVED_DEVICE_IDS,
};

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
const RECORD_EXT: &str = ".json";

/// The metadata directory of one device set. `Send + Sync`.
#[derive(Debug)]
pub struct MetadataStore {
    meta_dir: PathBuf,
    devices_dir: PathBuf,
    meta_dir_file: File,
    devices_dir_file: File,
    max_id_len: usize,
    /// This store's temp files (their names tell them from other writers').
    temp_files: TempFiles,
    /// Opened by [`MetadataStore::open_read_only`]: never writes or removes.
    read_only: bool,
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
        ensure_private_dir(&meta_dir, root)?;
        ensure_private_dir(&meta_dir.join(DEVICES_DIR), &meta_dir)?;
        Self::at(root, max_id_len, false)
    }

    /// The store of the existing metadata directory under `root`.
    fn at(root: &Path, max_id_len: usize, read_only: bool) -> Result<Self, StoreError> {
        let meta_dir = root.join(METADATA_DIR);
        let devices_dir = meta_dir.join(DEVICES_DIR);
        Ok(Self {
            meta_dir_file: open_dir(&meta_dir)?,
            devices_dir_file: open_dir(&devices_dir)?,
            meta_dir,
            devices_dir,
            max_id_len: max_id_len.min(MAX_FILE_ID_LEN),
            temp_files: TempFiles::new(),
            read_only,
        })
    }

    /// Opens the metadata directory under `root` to read it while another
    /// process (the set's owner) may be writing it: nothing is created,
    /// tightened, removed or written, and every write method fails. Every
    /// record is replaced by a rename, so each read sees a whole old or new
    /// record; a record removed during [`MetadataStore::load_all`] is left
    /// out. Loads are snapshots that may mix records from before and after
    /// a concurrent change.
    pub fn open_read_only(root: &Path, max_id_len: usize) -> Result<Self, StoreError> {
        Self::at(root, max_id_len, true)
    }

    /// Refuses a change to `path` on a read-only store.
    fn check_writable(&self, path: &Path) -> Result<(), StoreError> {
        if self.read_only {
            return Err(io_err("change (the set is open read-only)", path)(
                std::io::Error::from_raw_os_error(nix::libc::EROFS),
            ));
        }
        Ok(())
    }

    /// `<root>/metadata`.
    #[cfg(test)]
    pub fn metadata_dir(&self) -> &Path {
        &self.meta_dir
    }

    /// `<root>/metadata/devices`.
    #[cfg(test)]
    pub fn devices_dir(&self) -> &Path {
        &self.devices_dir
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

    /// Durably writes (creates or replaces) a device record. (The set
    /// writes records through the journal and its folds; the tests and
    /// benches/store.rs use this.)
    #[allow(dead_code)]
    pub fn write_device(&self, record: &DeviceRecord) -> Result<(), StoreError> {
        let (path, bytes) = self.device_bytes(record)?;
        self.write_atomic(&self.devices_dir, &self.devices_dir_file, &path, &bytes)
    }

    /// A valid record's file and JSON.
    fn device_bytes(&self, record: &DeviceRecord) -> Result<(PathBuf, Vec<u8>), StoreError> {
        let path = self.device_path(&record.id)?;
        record
            .validate(self.max_id_len)
            .map_err(|reason| StoreError::InvalidRecord {
                path: path.clone(),
                reason,
            })?;
        let bytes = to_json(record, &path)?;
        Ok((path, bytes))
    }

    /// Opens the intent journal and reads what it says on top of the
    /// record files (see [`Journal`]).
    pub fn open_journal(&self) -> Result<(Journal, Replay), StoreError> {
        if self.read_only {
            return self.read_journal();
        }
        Journal::open(&self.meta_dir, &self.meta_dir_file)
    }

    /// The intent journal opened only to read (see [`Journal::open_read_only`]).
    pub fn read_journal(&self) -> Result<(Journal, Replay), StoreError> {
        Journal::open_read_only(&self.meta_dir)
    }

    /// Writes the records in `put` and removes those of `remove`, with one
    /// directory fsync for them all: each file is written to a fsynced temp
    /// file and renamed over the old one, so every record is whole, old or
    /// new, whatever a crash interrupts.
    pub fn write_records(&self, put: &[&DeviceRecord], remove: &[&str]) -> Result<(), StoreError> {
        for record in put {
            let (path, bytes) = self.device_bytes(record)?;
            self.rename_into_place(&self.devices_dir, &path, &bytes)?;
        }
        for id in remove {
            let path = self.device_path(id)?;
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &path)(e)),
            }
        }
        if put.is_empty() && remove.is_empty() {
            return Ok(());
        }
        self.devices_dir_file
            .sync_all()
            .map_err(io_err("fsync directory", &self.devices_dir))
    }

    /// Durably removes a device record. Returns whether it existed; the
    /// directory is fsynced either way, so an earlier unsynced removal becomes
    /// durable too.
    pub fn remove_device_record(&self, id: &str) -> Result<bool, StoreError> {
        let path = self.device_path(id)?;
        self.check_writable(&path)?;
        remove_durably(&path, &self.devices_dir, &self.devices_dir_file)
    }

    /// Reads one device record; `Ok(None)` if there is none. (Only the
    /// tests read a single record; the set loads them all.)
    #[cfg(test)]
    pub fn read_device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        let path = self.device_path(id)?;
        let Some(bytes) = read_if_exists(&path)? else {
            return Ok(None);
        };
        self.parse_device(id, &bytes)
            .map(Some)
            .map_err(|reason| StoreError::Corrupt { path, reason })
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
        let Some(bytes) = read_if_exists(&path)? else {
            return Ok(None);
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
            if open.op != TransactionOp::Journal
                && open.open_transaction_id >= txn.open_transaction_id
            {
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
    /// Returns whether one was open. (Only the tests roll back this way; the
    /// set's recovery commits instead.)
    #[cfg(test)]
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

    /// Durably records that the pool's transaction id is `transaction_id`
    /// and that the device records continue in the journal
    /// ([`TransactionOp::Journal`]).
    pub fn mark_journal(&self, transaction_id: u64) -> Result<(), StoreError> {
        self.write_transaction_state(&TransactionState {
            committed_transaction_id: transaction_id,
            open: Some(TransactionRecord {
                open_transaction_id: transaction_id + 1,
                op: TransactionOp::Journal,
            }),
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
        let Some(bytes) = read_if_exists(&path)? else {
            return Ok(None);
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
    /// the others loading; so do records of reserved ids and every record of
    /// a thin id claimed twice (none of them is used; see
    /// [`ProblemReason::SharedThinId`]). Temp files left by interrupted writes of earlier
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
                log::debug!("skipping set-aside record {}", path.display());
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
                    let read = read_record_at(&self.devices_dir_file, &name, &mut buf);
                    if self.read_only && is_missing(&read) {
                        // Removed by the owner since the directory was read.
                        continue;
                    }
                    read.and_then(|(len, stamp)| {
                        let r = self.parse_device(stem, &buf[..len])?;
                        stamps.push((name.clone(), stamp));
                        Ok(r)
                    })
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
        checks::refuse_shared_thin_ids(&mut report, &self.set_path(), |id| {
            self.devices_dir.join(format!("{id}{RECORD_EXT}"))
        });
        let total = report.cache_hits + report.cache_misses;
        if !self.read_only
            && report.cache_misses >= CACHE_REWRITE_MIN_MISSES
            && report.cache_misses * 16 >= total
        {
            self.write_cache(&stamps, &report.devices);
        }
        Ok(report)
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
                if self.read_only || name.starts_with(self.temp_files.tag()) {
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
}

/// Whether a record read failed because the file is gone.
fn is_missing<T>(read: &Result<T, ProblemReason>) -> bool {
    matches!(read, Err(ProblemReason::Unreadable(e)) if e.kind() == std::io::ErrorKind::NotFound)
}

#[cfg(test)]
pub(crate) mod tests;
