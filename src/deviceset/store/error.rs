//! The store's errors, and what a load found.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use super::records::{DeviceRecord, SetRecord, TransactionRecord};
use super::{FORMAT_VERSION, MAX_RECORD_BYTES};
use crate::deviceset::ids::IdError;

/// What is wrong with a record file.
#[derive(Debug, thiserror::Error)]
pub enum ProblemReason {
    /// Opening or reading it failed.
    #[error("cannot read it: {0}")]
    Unreadable(#[source] io::Error),
    /// A directory, symlink, fifo or the like where a record file should be.
    #[error("not a regular file")]
    NotRegularFile,
    /// Bigger than `MAX_RECORD_BYTES` (1 MiB).
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
    /// Another device record, or the set record's base device, claims the
    /// same thin id. Acting on either (a removal deletes the thin) would
    /// destroy the other's data, so none of the claimants is used.
    #[error(
        "thin id {thin_id} is also claimed by {}; none of these records is used until all but one are fixed or removed",
        claimants(others, base.as_ref())
    )]
    SharedThinId {
        /// The thin id.
        thin_id: u32,
        /// The other device record files that claim it.
        others: Vec<PathBuf>,
        /// The set record (`set.json`) that has it as the base device's, if it does.
        base: Option<PathBuf>,
    },
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
    /// `MetadataStore::begin` while a transaction is open.
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
}

fn claimants(others: &[PathBuf], base: Option<&PathBuf>) -> String {
    others
        .iter()
        .map(|p| p.display().to_string())
        .chain(base.map(|p| format!("{} (the base device)", p.display())))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { op, path, source }
}

/// Everything [`MetadataStore::load_all`](super::MetadataStore::load_all) found.
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
    /// Device record files an operator set aside as damaged (renamed
    /// `<id>.json.corrupt` or `<id>.json.corrupt.<n>`); skipped.
    pub quarantined: Vec<PathBuf>,
    /// Temp files of interrupted writes that were removed (they never held
    /// committed data).
    pub removed_temp_files: Vec<PathBuf>,
    /// Records taken from the record cache (their files were only stat'ed).
    pub cache_hits: usize,
    /// Records read from their files.
    pub cache_misses: usize,
}
