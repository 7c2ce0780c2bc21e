//! The device layer under the snapshotter: a small trait, implemented by
//! dmthin's [`DeviceSet`] and, in the unit tests, by a fake that can fail
//! on demand.

use dmthin::deviceset::{DeviceSet, DeviceSetError, Presence, RemoveOutcome};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What went wrong in the device layer, coarsely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevErrorKind {
    /// No such device.
    NotFound,
    /// The device exists already.
    Exists,
    /// The device is held open.
    Busy,
    /// The pool is (nearly) full.
    NoSpace,
    /// Anything else.
    Other,
}

/// An error of the device layer.
#[derive(Debug, Clone)]
pub struct DevError {
    /// Its kind.
    pub kind: DevErrorKind,
    /// The message.
    pub msg: String,
}

impl std::fmt::Display for DevError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl From<DeviceSetError> for DevError {
    fn from(e: DeviceSetError) -> DevError {
        let kind = match &e {
            DeviceSetError::UnknownDevice(_) | DeviceSetError::UnknownParent { .. } => {
                DevErrorKind::NotFound
            }
            DeviceSetError::DeviceExists(_) => DevErrorKind::Exists,
            DeviceSetError::Busy { .. }
            | DeviceSetError::Mounted { .. }
            | DeviceSetError::PendingDeletion(_) => DevErrorKind::Busy,
            DeviceSetError::LowSpace { .. } => DevErrorKind::NoSpace,
            _ => DevErrorKind::Other,
        };
        DevError {
            kind,
            msg: e.to_string(),
        }
    }
}

/// Result of the device layer.
pub type DevResult<T> = Result<T, DevError>;

/// The operations the snapshotter needs from the device set.
pub trait Devices: Send + Sync + 'static {
    /// Creates `id` as a snapshot of `parent` (of the set's base when `None`).
    fn create(&self, id: &str, parent: Option<&str>) -> DevResult<()>;
    /// Activates `id` (a no-op when active); returns its block device.
    fn activate(&self, id: &str) -> DevResult<PathBuf>;
    /// Deactivates `id` unless something has it mounted or open; says whether it did.
    fn deactivate_if_unused(&self, id: &str) -> DevResult<bool>;
    /// Removes `id`; a device held open goes once its last opener closes it.
    fn remove(&self, id: &str) -> DevResult<()>;
    /// Whether `id` exists, or the set cannot tell yet (an add or remove
    /// of it whose outcome the pool has not confirmed).
    fn presence(&self, id: &str) -> DevResult<Presence>;
    /// Ids of adds and removes whose outcome is not settled yet: never
    /// given to a new device, never counted as gone.
    fn unsettled_ids(&self) -> DevResult<Vec<String>>;
    /// Every device id in the set.
    fn ids(&self) -> DevResult<Vec<String>>;
    /// Bytes the pool has mapped for `id` (`None` while it is inactive).
    fn mapped_bytes(&self, id: &str) -> DevResult<Option<u64>>;
    /// Finishes removals that waited for a device to be closed.
    fn cleanup_deferred(&self) -> DevResult<()>;
    /// Makes `id`, a snapshot of the base whose filesystem root is empty
    /// (no `lost+found`) with mode 0755, and leaves it inactive.
    fn make_template(&self, id: &str, scratch: &Path) -> DevResult<()>;
    /// The filesystem type for mounts (`ext4`, `xfs`).
    fn fs_type(&self) -> &str;
    /// Deactivates every device and removes the pool (the set is unusable afterwards).
    fn teardown(&self) -> DevResult<()>;
}

/// The real device layer: dmthin's device set.
pub struct SetDevices {
    set: Arc<DeviceSet>,
    fs: String,
}

impl SetDevices {
    /// Wraps an open set whose base filesystem is `fs`.
    pub fn new(set: Arc<DeviceSet>, fs: String) -> SetDevices {
        SetDevices { set, fs }
    }
}

impl Devices for SetDevices {
    fn create(&self, id: &str, parent: Option<&str>) -> DevResult<()> {
        Ok(self.set.add_device(id, parent)?)
    }

    fn activate(&self, id: &str) -> DevResult<PathBuf> {
        Ok(self.set.activate_device(id)?)
    }

    fn deactivate_if_unused(&self, id: &str) -> DevResult<bool> {
        // The open count sees containerd's mounts in any mount namespace.
        Ok(self.set.deactivate_device_unless_open(id)?)
    }

    fn remove(&self, id: &str) -> DevResult<()> {
        match self.set.remove_device_deferred(id)? {
            RemoveOutcome::Removed => {}
            RemoveOutcome::Deferred => {
                log::info!("device {id} is still open; the kernel removes it once it is closed")
            }
        }
        Ok(())
    }

    fn presence(&self, id: &str) -> DevResult<Presence> {
        Ok(self.set.presence(id)?)
    }

    fn unsettled_ids(&self) -> DevResult<Vec<String>> {
        Ok(self.set.unsettled_ids()?)
    }

    fn ids(&self) -> DevResult<Vec<String>> {
        Ok(self.set.list()?.into_iter().map(|d| d.id).collect())
    }

    fn mapped_bytes(&self, id: &str) -> DevResult<Option<u64>> {
        Ok(self.set.mapped_bytes(id)?)
    }

    fn cleanup_deferred(&self) -> DevResult<()> {
        Ok(self.set.cleanup_deferred()?)
    }

    fn make_template(&self, id: &str, scratch: &Path) -> DevResult<()> {
        self.set.add_device(id, None)?;
        std::fs::create_dir_all(scratch).map_err(io_err)?;
        self.set.mount_device(id, scratch, false)?;
        let tidy = (|| {
            match std::fs::remove_dir(scratch.join("lost+found")) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            std::fs::set_permissions(scratch, std::fs::Permissions::from_mode(0o755))
        })();
        let unmounted = self.set.unmount_device(id, scratch, true);
        tidy.map_err(io_err)?;
        unmounted?;
        let _ = std::fs::remove_dir(scratch);
        Ok(())
    }

    fn fs_type(&self) -> &str {
        &self.fs
    }

    fn teardown(&self) -> DevResult<()> {
        Ok(self.set.shutdown()?)
    }
}

fn io_err(e: std::io::Error) -> DevError {
    DevError {
        kind: DevErrorKind::Other,
        msg: e.to_string(),
    }
}
