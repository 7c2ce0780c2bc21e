//! `status`, `list` and `usage` on a set another process owns: when the
//! set's lock is held (by a running `dmthin-snapshotter`, say), they read it
//! through [`DeviceSet::open_read_only`] instead of being refused.

use std::path::Path;

use dmthin::deviceset::error::LockError;
use dmthin::deviceset::{
    DeviceSet, DeviceSetError, DeviceSummary, ReadOnlySet, Result, SetStatus, SetUsage,
};

use crate::output::failed;
use crate::CliError;

/// What the read-only commands need from a set, owned or only looked at.
pub(crate) trait SetLook {
    /// Pool usage and mode.
    fn status(&self) -> Result<SetStatus>;
    /// Every device with its state.
    fn list(&self) -> Result<Vec<DeviceSummary>>;
    /// Space every device uses.
    fn usage_all(&self) -> Result<SetUsage>;
}

impl SetLook for DeviceSet {
    fn status(&self) -> Result<SetStatus> {
        DeviceSet::status(self)
    }
    fn list(&self) -> Result<Vec<DeviceSummary>> {
        DeviceSet::list(self)
    }
    fn usage_all(&self) -> Result<SetUsage> {
        DeviceSet::usage_all(self)
    }
}

impl SetLook for ReadOnlySet {
    fn status(&self) -> Result<SetStatus> {
        ReadOnlySet::status(self)
    }
    fn list(&self) -> Result<Vec<DeviceSummary>> {
        ReadOnlySet::list(self)
    }
    fn usage_all(&self) -> Result<SetUsage> {
        ReadOnlySet::usage_all(self)
    }
}

/// The set at `root` for a command that only reads: opened as usual (with
/// repairs) when it is free, else, when another process holds its lock,
/// looked at read-only. `open` is the CLI's usual open.
pub(crate) fn open_to_look(
    root: &Path,
    open: impl FnOnce() -> std::result::Result<Result<DeviceSet>, CliError>,
) -> std::result::Result<Box<dyn SetLook>, CliError> {
    match open()? {
        Ok(set) => Ok(Box::new(set)),
        Err(DeviceSetError::Lock(held @ LockError::Held { .. })) => {
            let view = DeviceSet::open_read_only(root)
                .map_err(|e| failed(format!("{held}; reading it read-only failed: {e}")))?;
            log::info!("{held}: showing the set read-only, as its owner sees it");
            Ok(Box::new(view))
        }
        Err(e) => Err(failed(e)),
    }
}
