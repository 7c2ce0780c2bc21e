//! Mounting and unmounting the set's devices, with reference counts.

use super::{Config, State};
use crate::deviceset::error::{DeviceSetError, Result};
use crate::deviceset::fail_point;
use crate::deviceset::fs::{self as fsx, FsError};
use crate::dm::UdevFlags;
use crate::target::{PoolMode, PoolStatus};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

impl Config {
    /// Mounts device `id` at `path`, activating it if needed. Mounting the same
    /// device at the same path again only counts a reference.
    pub(crate) fn mount_device(
        &self,
        state: &mut State,
        id: &str,
        path: &Path,
        read_only: bool,
    ) -> Result<()> {
        let (thin, size) = {
            let r = self.record(state, id)?;
            (r.thin_id, r.size)
        };
        let key = (id.to_string(), path.to_path_buf());
        if let Some(count) = state.mounts.get_mut(&key) {
            *count += 1;
            return Ok(());
        }
        if !read_only {
            self.check_pool_takes_writes(state)?;
        }
        let name = self.device_name(id);
        let was_active = state.ctl.exists(&name)?;
        let dev = self.activate(state, &name, thin, size, UdevFlags::empty())?;
        let node = crate::dm::dm_node_path(dev);
        // An error injected after the activation is undone like a failed mount.
        let mounted = fail_point!("mount.after_activate")
            .and_then(|()| {
                std::fs::create_dir_all(path).map_err(|source| {
                    DeviceSetError::Fs(FsError::Io {
                        device: path.display().to_string(),
                        source,
                    })
                })
            })
            .and_then(|()| {
                fsx::mount(
                    state.set.filesystem,
                    &node,
                    path,
                    read_only,
                    &state.set.mount_options,
                    self.options.mount_discard,
                )
                .map_err(DeviceSetError::from)
            });
        if let Err(e) = mounted {
            if !was_active {
                let _ = self.deactivate_once(state, &name, false);
            }
            return Err(e);
        }
        // A failure reported after the mount undoes it, as a failed mount
        // is undone: nothing left mounted that the set does not count.
        if let Err(e) = fail_point!("mount.after_mount") {
            if let Err(u) = fsx::unmount(path) {
                log::warn!("undoing the mount of {id} at {}: {u}", path.display());
                state.mounts.insert(key, 1);
                return Err(e);
            }
            if !was_active {
                let _ = self.deactivate_once(state, &name, false);
            }
            return Err(e);
        }
        state.mounts.insert(key, 1);
        Ok(())
    }

    /// A read-write mount needs a pool that takes writes: refused up front on
    /// a read-only, failed or needs_check pool (the filesystem would fail its
    /// first write), naming the mode. Out of data space is allowed, with a
    /// warning: writes to blocks already provisioned still work.
    fn check_pool_takes_writes(&self, state: &mut State) -> Result<()> {
        match self.writable_pool(state) {
            Ok(_) => Ok(()),
            Err(DeviceSetError::PoolUnusable { pool, reason }) => {
                if let PoolStatus::Active(s) = self.any_pool_status(state)? {
                    if s.mode == PoolMode::OutOfDataSpace && !s.needs_check {
                        log::warn!("pool {pool} is out of data space: writes to new blocks fail");
                        return Ok(());
                    }
                }
                Err(DeviceSetError::PoolUnusable {
                    pool,
                    reason: format!("{reason}; only read-only mounts are possible"),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Drops one reference to the mount of `id` at `path`; the last one unmounts
    /// it, and with `deactivate` also deactivates the device.
    pub(crate) fn unmount_device<'a>(
        &self,
        mut state: MutexGuard<'a, State>,
        lock: &'a Mutex<State>,
        id: &str,
        path: &Path,
        deactivate: bool,
    ) -> Result<()> {
        let key = (id.to_string(), path.to_path_buf());
        let Some(count) = state.mounts.get_mut(&key) else {
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
            state.mounts.insert(key, 1);
            return Err(e.into());
        }
        state.mounts.remove(&key);
        fail_point!("unmount.after_unmount")?;
        if deactivate && mount_paths(&state, id).is_empty() {
            drop(self.deactivate_retrying(state, lock, id)?);
        }
        Ok(())
    }
}

/// Where this set has device `id` mounted.
pub(crate) fn mount_paths(state: &State, id: &str) -> Vec<PathBuf> {
    state
        .mounts
        .keys()
        .filter(|(d, _)| d == id)
        .map(|(_, p)| p.clone())
        .collect()
}
