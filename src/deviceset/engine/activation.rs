//! Activating and deactivating thin devices, and shutting the set down.

use super::{check_open, mount_paths, sectors};
use super::{Config, State};
use crate::deviceset::error::{DeviceSetError, Result};
use crate::deviceset::fail_point;
use crate::deviceset::fs as fsx;
use crate::dm::{CreateOptions, Dev, DevId, DmError, NodeMode, RemoveOptions, UdevFlags};
use crate::retry::Backoff;
use crate::target::{DeviceRef, TableLine, TargetTable, ThinId, ThinTable};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

impl Config {
    /// Activates device `id`; returns its `/dev/mapper` path.
    pub(crate) fn activate_device(&self, state: &mut State, id: &str) -> Result<PathBuf> {
        let (thin, size) = {
            let r = self.record(state, id)?;
            (r.thin_id, r.size)
        };
        let name = self.device_name(id);
        let dev = self.activate(state, &name, thin, size, UdevFlags::empty())?;
        Ok(device_path(state, &name, dev))
    }

    /// The table of thin device `thin_id` of `size` bytes in the pool.
    pub(crate) fn thin_table(
        &self,
        state: &State,
        thin_id: u32,
        size: u64,
    ) -> Result<Vec<TableLine>> {
        let t = ThinTable::new(
            DeviceRef::MajorMinor(state.pool_dev.major, state.pool_dev.minor),
            ThinId::new(thin_id)?,
        )?;
        Ok(vec![t.to_line(0, sectors(size))])
    }

    /// Activates a thin device: create, load, resume, undone on failure.
    pub(crate) fn activate(
        &self,
        state: &mut State,
        name: &str,
        thin_id: u32,
        size: u64,
        flags: UdevFlags,
    ) -> Result<Dev> {
        match state.ctl.info(DevId::Name(name)) {
            Ok(info) if info.active_table() => return Ok(info.dev),
            Ok(_) => {
                // A half-made device from an interrupted activation: replace it.
                state
                    .ctl
                    .remove(DevId::Name(name), &RemoveOptions::default())?;
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        let table = self.thin_table(state, thin_id, size)?;
        let info = state.ctl.create_with_table_steps(
            name,
            &CreateOptions::default(),
            &table,
            flags,
            || fail_point!("activate.after_create"),
            || fail_point!("activate.after_load"),
        )?;
        Ok(info.dev)
    }

    /// Removes a device-mapper device; missing is fine. EBUSY is returned as is.
    pub(crate) fn deactivate_once(
        &self,
        state: &mut State,
        name: &str,
        deferred: bool,
    ) -> std::result::Result<(), DmError> {
        match state.ctl.remove(
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

    /// Deactivates with EBUSY retried ([`Backoff::BUSY`], `busy_retries`
    /// tries), releasing the set's lock between tries.
    pub(crate) fn deactivate_retrying<'a>(
        &self,
        guard: MutexGuard<'a, State>,
        lock: &'a Mutex<State>,
        id: &str,
    ) -> Result<MutexGuard<'a, State>> {
        let name = self.device_name(id);
        let backoff = Backoff::BUSY.with_tries(self.options.busy_retries);
        let busy = |e: &DeviceSetError| matches!(e, DeviceSetError::Dm(e) if e.is_busy());
        let mut held = Some(guard);
        let removed = backoff.run(
            |_| {
                let mut guard = match held.take() {
                    Some(guard) => guard,
                    None => lock.lock().map_err(|_| DeviceSetError::Closed)?,
                };
                check_open(&guard)?;
                self.record(&guard, id)?;
                let paths = mount_paths(&guard, id);
                if !paths.is_empty() {
                    return Err(DeviceSetError::Mounted {
                        id: id.to_string(),
                        paths,
                    });
                }
                fail_point!("deactivate.before_remove")?;
                // On EBUSY the guard goes here: the lock is free during the pause.
                self.deactivate_once(&mut guard, &name, false)?;
                Ok(guard)
            },
            busy,
        );
        match removed {
            Err(e) if busy(&e) => Err(DeviceSetError::Busy {
                id: id.to_string(),
                tries: backoff.tries(),
            }),
            other => other,
        }
    }

    /// Deactivates device `id` if nothing holds it open: the kernel's open
    /// count, which sees mounts in every mount namespace and any opener,
    /// decides; no retries. Whether it deactivated it (false: inactive, or
    /// open, or opened between the look and the remove).
    pub(crate) fn deactivate_unless_open(&self, state: &mut State, id: &str) -> Result<bool> {
        self.record(state, id)?;
        let name = self.device_name(id);
        let info = match state.ctl.info(DevId::Name(&name)) {
            Ok(info) => info,
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        if info.open_count > 0 || !mount_paths(state, id).is_empty() {
            return Ok(false);
        }
        fail_point!("deactivate.before_remove")?;
        match self.deactivate_once(state, &name, false) {
            Ok(()) => Ok(true),
            Err(e) if e.is_busy() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a device at shutdown, EBUSY retried ([`Backoff::BUSY`]); missing is fine.
    fn remove_retrying(&self, state: &mut State, name: &str) -> std::result::Result<(), DmError> {
        Backoff::BUSY.run(
            |_| self.deactivate_once(state, name, false),
            DmError::is_busy,
        )
    }

    /// Unmounts what this set mounted, deactivates every device, and removes the
    /// pool if the set created it. The set cannot be used afterwards.
    pub(crate) fn shutdown(&self, state: &mut State) -> Result<()> {
        let mounts: Vec<PathBuf> = state.mounts.keys().map(|(_, p)| p.clone()).collect();
        // The journal folded into the record files while the pool is still
        // there to take the transaction id; a failure keeps the journal,
        // which the next open replays (a full or read-only root is no error).
        let mut first_error: Option<DeviceSetError> = self
            .fold(state)
            .err()
            .filter(|e| !super::commit::root_cannot_take_writes(e));
        for p in mounts {
            if let Err(e) = fsx::unmount(&p) {
                first_error.get_or_insert(e.into());
            }
        }
        state.mounts.clear();
        let list = state.ctl.list_devices()?;
        for e in list {
            if e.name.starts_with(&self.prefix) && e.name != self.pool_name {
                if let Err(err) = self.remove_retrying(state, &e.name) {
                    first_error.get_or_insert(err.into());
                }
            }
        }
        if state.set.pool_owned {
            if let Err(err) = self.remove_retrying(state, &self.pool_name) {
                first_error.get_or_insert(err.into());
            }
        }
        state.loops.clear();
        state.closed = true;
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The path a caller opens an active device by: its `/dev/mapper` name, or
/// the `/dev/dm-N` node where nothing makes `/dev/mapper` names.
fn device_path(state: &State, name: &str, dev: Dev) -> PathBuf {
    match state.ctl.node_mode() {
        NodeMode::None => crate::dm::dm_node_path(dev),
        _ => crate::dm::mapper_path(name),
    }
}
