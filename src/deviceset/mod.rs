//! The device set: a thin pool on loop files or block devices, a base device
//! with a filesystem, and one thin snapshot per caller-chosen id, with
//! crash-consistent metadata (the design of Docker's devicemapper driver).

mod engine;
pub mod error;
#[cfg(feature = "failpoints")]
pub mod failpoint;
pub(crate) mod fs;
pub(crate) mod ids;
pub(crate) mod lock;
mod monitor;
mod mount_flags;
mod option_flags;
mod options;
mod read_only;
mod report;
mod set;
pub(crate) mod store;
mod sys;
mod trust;
mod usage_report;

pub use engine::MAX_METADATA_BYTES;
pub use error::{DeviceSetError, Result};
pub use monitor::{Check, Monitor};
pub use option_flags::{FlagError, OptionFlags};
pub use options::{AutoextendOptions, Options, Progress, StorageOptions};
pub use read_only::ReadOnlySet;
pub use report::{DeviceSummary, Growth, GrowthTarget, Presence, RemoveOutcome, SetStatus};
pub use set::{name_prefix, DeviceSet};
pub use store::{FsKind, UnknownFsKind};
pub use usage_report::{DeviceUsage, SetUsage};

pub use report::{TrimReport, TrimmedMount};

#[cfg(feature = "failpoints")]
pub(crate) use failpoint::fail_point;

/// Fail points compile to nothing without the `failpoints` feature: `Ok(())`.
#[cfg(not(feature = "failpoints"))]
macro_rules! fail_point {
    ($name:literal) => {
        $crate::deviceset::error::Result::<()>::Ok(())
    };
}
#[cfg(not(feature = "failpoints"))]
pub(crate) use fail_point;
