//! The device set: a thin pool on loop files or block devices, a base device
//! with a filesystem, and one thin snapshot per caller-chosen id, with
//! crash-consistent metadata (the design of Docker's devicemapper driver).

pub mod error;
pub mod failpoint;
pub mod fs;
pub(crate) mod ids;
pub(crate) mod lock;
mod set;
pub(crate) mod store;

pub use error::{DeviceSetError, Result};
pub use set::{
    name_prefix, DeviceSet, DeviceSummary, Options, Progress, RemoveOutcome, SetStatus,
    StorageOptions, MAX_METADATA_BYTES,
};
pub use store::FsKind;
