//! Errors of the device set.

use crate::dm::DmError;
use crate::loopdev::LoopError;
use crate::target::TargetError;
use std::path::PathBuf;

// The error types of the set's private parts, nameable by users matching on
// a `DeviceSetError` or reading `DeviceSet::problems`.
pub use super::fs::FsError;
pub use super::ids::IdError;
pub use super::lock::{LockError, LockHolder};
pub use super::store::{ProblemReason, RecordProblem, StoreError};

/// An error from a [`DeviceSet`](super::DeviceSet) operation.
#[derive(Debug, thiserror::Error)]
pub enum DeviceSetError {
    /// A device-mapper call failed.
    #[error(transparent)]
    Dm(#[from] DmError),
    /// A loop device call failed.
    #[error(transparent)]
    Loop(#[from] LoopError),
    /// Reading or writing metadata failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The set is locked by another process.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// Filesystem work failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// A table, message or status line was refused or malformed.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// A device id was refused.
    #[error(transparent)]
    Id(#[from] IdError),
    /// A path under the set's root that another user could have planted or
    /// changed (a symbolic link, a file of the wrong kind, a directory
    /// others can write to).
    #[error("refusing {path}: {reason}")]
    Untrusted {
        /// The path refused.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A record file for this id exists but was refused at load (see
    /// [`DeviceSet::problems`](super::DeviceSet::problems)); it is kept, so the id
    /// cannot be reused until it is repaired or moved away.
    #[error("device id {id:?} has a record the set refused at open ({path}); repair or move it away first")]
    RefusedRecord {
        /// The id.
        id: String,
        /// The record file.
        path: PathBuf,
    },
    /// No device with this id.
    #[error("no device {0:?} in the set")]
    UnknownDevice(String),
    /// A device with this id exists already.
    #[error("device {0:?} exists already")]
    DeviceExists(String),
    /// The parent given to `add_device` does not exist.
    #[error("cannot snapshot {parent:?} into {id:?}: no such parent device")]
    UnknownParent {
        /// The new device.
        id: String,
        /// The missing parent.
        parent: String,
    },
    /// The id is reserved for the set's own devices.
    #[error("device id {0:?} is reserved (the set uses it for its pool or base device)")]
    ReservedId(String),
    /// The device is mounted, so it cannot be removed or deactivated.
    #[error("device {id:?} is mounted at {paths:?}; unmount it first")]
    Mounted {
        /// The device.
        id: String,
        /// Where it is mounted.
        paths: Vec<PathBuf>,
    },
    /// The device is not mounted at that path by this set.
    #[error("device {id:?} is not mounted at {path}")]
    NotMounted {
        /// The device.
        id: String,
        /// The path given.
        path: PathBuf,
    },
    /// The device stayed busy (held open elsewhere).
    #[error("device {id:?} is busy (held open by another process or mount namespace) after {tries} tries; use deferred removal")]
    Busy {
        /// The device.
        id: String,
        /// How many attempts were made.
        tries: u32,
    },
    /// Free pool space is below `min_free_space`.
    #[error("pool {what} space is low: {free_percent:.1}% free, below the minimum of {min_percent}%; grow the pool")]
    LowSpace {
        /// "data" or "metadata".
        what: &'static str,
        /// Free percentage now.
        free_percent: f64,
        /// The configured minimum.
        min_percent: u32,
    },
    /// The pool cannot take changes in its current mode.
    #[error("pool {pool} cannot be changed: {reason}")]
    PoolUnusable {
        /// The pool's name.
        pool: String,
        /// Its mode (read-only, out of space, failed, needs_check).
        reason: String,
    },
    /// The pool and the records disagree in a way open cannot repair.
    #[error("pool {pool} is inconsistent with the metadata in {root}: {reason}")]
    Inconsistent {
        /// The pool's name.
        pool: String,
        /// The set's root.
        root: PathBuf,
        /// What disagrees.
        reason: String,
    },
    /// The base filesystem is not the one recorded.
    #[error("base device filesystem uuid is {found} but the set recorded {expected}: wrong pool or metadata?")]
    BaseUuidMismatch {
        /// Recorded uuid.
        expected: String,
        /// Uuid found on the device.
        found: String,
    },
    /// An option differs from the one the set was created with and cannot change.
    #[error(
        "option {option} is {given} but the set was created with {recorded}; it cannot change"
    )]
    OptionMismatch {
        /// The option.
        option: &'static str,
        /// Recorded value.
        recorded: String,
        /// Given value.
        given: String,
    },
    /// An option value is invalid.
    #[error("invalid option {option}: {reason}")]
    InvalidOption {
        /// The option.
        option: &'static str,
        /// Why.
        reason: String,
    },
    /// The pool's metadata device could not be opened or read (usage).
    #[error("pool {pool}: reading its metadata device {device}: {source}")]
    Metadata {
        /// The pool's name.
        pool: String,
        /// The metadata device read.
        device: PathBuf,
        /// What went wrong, naming the block.
        #[source]
        source: crate::thinmeta::Error,
    },
    /// The device is waiting for a deferred deletion.
    #[error("device {0:?} is being removed (deferred); try again once it is no longer open")]
    PendingDeletion(String),
    /// The set was shut down.
    #[error("the device set has been shut down")]
    Closed,
    /// A test armed this fail point to fail its step (feature `failpoints`).
    #[cfg(feature = "failpoints")]
    #[error("injected error at fail point {point}: {source}")]
    Injected {
        /// The fail point.
        point: &'static str,
        /// The error injected (EIO).
        source: std::io::Error,
    },
}

/// Result alias for the device set.
pub type Result<T> = std::result::Result<T, DeviceSetError>;
