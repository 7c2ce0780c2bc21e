//! Open-time repair: interrupted operations, stray devices, deferred deletes,
//! mounts left by an earlier process.

use super::{Config, State};
use crate::deviceset::error::{DeviceSetError, Result};
use crate::deviceset::fs as fsx;
use crate::deviceset::ids::ThinIdAllocator;
use crate::deviceset::options::StorageOptions;
use crate::deviceset::store::{
    LoadReport, MetadataStore, SetRecord, Storage, TransactionOp, TransactionRecord, FORMAT_VERSION,
};
use crate::dm::{Control, ControlOptions, Dev, DevId, NodeMode, UdevFlags};
use std::collections::BTreeMap;

impl Config {
    /// Opens the set's state from its records and brings the pool and the
    /// records into agreement: the pool set up, an interrupted operation
    /// repaired, the base device made or checked.
    pub(crate) fn open_state(&self, store: MetadataStore, report: LoadReport) -> Result<State> {
        self.check_recorded_options(report.set.as_ref())?;
        let mut ctl = Control::open_with(ControlOptions::default())?;
        if let NodeMode::Udev { .. } | NodeMode::UdevWatch { .. } = ctl.node_mode() {
            ctl.set_node_mode(if self.options.udev_sync {
                NodeMode::UdevWatch {
                    timeout: self.options.udev_timeout,
                }
            } else {
                NodeMode::Bypass
            });
        }
        let mut ids = ThinIdAllocator::new();
        for rec in report.devices.values() {
            ids.mark_used(rec.thin_id)?;
        }
        let LoadReport {
            set,
            transaction,
            devices,
            ..
        } = report;
        let set_written = set.is_some();
        let set = match set {
            Some(s) => {
                ids.mark_used(s.base_thin_id)?;
                s
            }
            None => SetRecord {
                format_version: FORMAT_VERSION,
                base_thin_id: 0,
                base_size: self.options.base_size,
                base_fs_uuid: None,
                filesystem: self.options.filesystem,
                mkfs_options: self.options.mkfs_options.clone(),
                mount_options: self.options.mount_options.clone(),
                data_block_size: self.options.data_block_size,
                pool_name: self.pool_name.clone(),
                pool_owned: !matches!(self.options.storage, StorageOptions::AdoptPool { .. }),
                storage: Storage::AdoptedPool,
                next_thin_id: 0,
                name_prefix: Some(self.prefix.clone()),
                min_free_space_percent: Some(self.options.min_free_space_percent),
                block_zeroing: Some(self.options.block_zeroing),
                mount_discard: Some(self.options.mount_discard),
            },
        };
        // A damaged record still owns its thin id; we cannot know which, so the
        // pool's EEXIST answer (skip that id) covers it.
        let mut state = State {
            ctl,
            store,
            set,
            set_written,
            devices,
            ids,
            transaction_id: 0,
            pool_dev: Dev::default(),
            mounts: BTreeMap::new(),
            loops: Vec::new(),
            closed: false,
        };
        self.setup_pool(&mut state, set_written)?;
        let redo_base = self.recover(&mut state, transaction)?;
        self.remove_stray_devices(&mut state)?;
        if !state.set_written || redo_base {
            self.init_base(&mut state)?;
        } else {
            self.check_base(&mut state)?;
        }
        self.remember_options(&mut state);
        self.adopt_existing_mounts(&mut state)?;
        self.finish_deferred_deletes(&mut state)?;
        Ok(state)
    }

    /// Records the options a set keeps between opens when this open changed
    /// them (or the set predates their recording), so the next open without
    /// options (the CLI's) uses them. A failed write only costs the memory
    /// of the change: this open still runs with the options given.
    fn remember_options(&self, state: &mut State) {
        let o = &self.options;
        let mut set = state.set.clone();
        set.name_prefix = Some(self.prefix.clone());
        set.min_free_space_percent = Some(o.min_free_space_percent);
        set.mount_discard = Some(o.mount_discard);
        set.mount_options.clone_from(&o.mount_options);
        if set.block_zeroing.is_some_and(|z| z != o.block_zeroing) {
            log::info!(
                "block zeroing {} from the pool's next activation",
                if o.block_zeroing { "on" } else { "off" }
            );
        }
        set.block_zeroing = Some(o.block_zeroing);
        if set == state.set {
            return;
        }
        match state.store.write_set(&set) {
            Ok(()) => state.set = set,
            Err(e) => log::warn!("could not record the set's changed options: {e}"),
        }
    }

    /// Refuses options that differ from the ones the set was made with.
    pub(crate) fn check_recorded_options(&self, set: Option<&SetRecord>) -> Result<()> {
        let Some(set) = set else { return Ok(()) };
        if set.data_block_size != self.options.data_block_size {
            return Err(DeviceSetError::OptionMismatch {
                option: "data block size",
                recorded: set.data_block_size.to_string(),
                given: self.options.data_block_size.to_string(),
            });
        }
        if set.filesystem != self.options.filesystem {
            return Err(DeviceSetError::OptionMismatch {
                option: "filesystem",
                recorded: set.filesystem.as_str().into(),
                given: self.options.filesystem.as_str().into(),
            });
        }
        if self.options.base_size < set.base_size {
            return Err(DeviceSetError::OptionMismatch {
                option: "base size (it can grow, never shrink)",
                recorded: set.base_size.to_string(),
                given: self.options.base_size.to_string(),
            });
        }
        if set.pool_name != self.pool_name {
            return Err(DeviceSetError::OptionMismatch {
                option: "pool",
                recorded: set.pool_name.clone(),
                given: self.pool_name.clone(),
            });
        }
        Ok(())
    }

    /// Repairs an interrupted operation: committed in the pool → finish it;
    /// not committed → make sure its device is gone.
    ///
    /// `transaction.json` keeps the last operation begun. Committed and
    /// complete (the normal case after a clean return) costs nothing here.
    pub(crate) fn recover(
        &self,
        state: &mut State,
        txn: Option<TransactionRecord>,
    ) -> Result<bool> {
        let pool = state.transaction_id;
        let mismatch = |recorded: u64| {
            DeviceSetError::Inconsistent {
            pool: self.pool_name.clone(),
            root: self.root.clone(),
            reason: format!(
                "the pool's transaction id is {pool} but the records end at {recorded}: the pool is {} the records (changed by another tool, or metadata restored from a backup)",
                if pool > recorded { "ahead of" } else { "behind" }
            ),
        }
        };
        let Some(txn) = txn else {
            // No operation was under way: the pool must be where we left it.
            if let Some(committed) = state.store.committed()? {
                if committed != pool {
                    return Err(mismatch(committed));
                }
            }
            return Ok(false);
        };
        let open = txn.open_transaction_id;
        let committed = if pool == open {
            true
        } else if pool + 1 == open {
            false
        } else if pool > open {
            return Err(mismatch(open));
        } else {
            return Err(mismatch(open - 1));
        };
        let complete = committed
            && match &txn.op {
                TransactionOp::Create { .. } => true,
                TransactionOp::Delete { device_id, .. } => !state.devices.contains_key(device_id),
                TransactionOp::BaseCreate { .. } => state.set_written,
            };
        if complete {
            return Ok(false);
        }
        log::warn!(
            "recovering interrupted {:?} (transaction {open}, {})",
            txn.op,
            if committed {
                "committed"
            } else {
                "not committed"
            }
        );
        let mut redo_base = false;
        match &txn.op {
            // A create reaches here only uncommitted: roll it back. A delete
            // may have reached the pool: finish it either way. Both end with
            // the device gone.
            TransactionOp::Create { device_id, thin_id }
            | TransactionOp::Delete { device_id, thin_id } => {
                let name = self.device_name(device_id);
                self.deactivate_once(state, &name, false)?;
                self.delete_thin(state, *thin_id)?;
                state.store.remove_device_record(device_id)?;
                state.devices.remove(device_id);
                let _ = state.ids.release(*thin_id);
            }
            TransactionOp::BaseCreate { thin_id } => {
                self.deactivate_once(state, &self.base_name, false)?;
                self.delete_thin(state, *thin_id)?;
                let _ = state.ids.release(*thin_id);
                redo_base = true;
            }
        }
        state.store.commit(state.transaction_id)?;
        Ok(redo_base)
    }

    /// Mounts of our devices left by an earlier process count as one reference each.
    pub(crate) fn adopt_existing_mounts(&self, state: &mut State) -> Result<()> {
        let mounts = fsx::mounts();
        if mounts.is_empty() {
            return Ok(());
        }
        let list = state.ctl.list_devices()?;
        for entry in list {
            let Some(id) = entry.name.strip_prefix(&self.prefix) else {
                continue;
            };
            if !state.devices.contains_key(id) {
                continue;
            }
            for m in mounts
                .iter()
                .filter(|m| m.dev == (entry.dev.major, entry.dev.minor))
            {
                state.mounts.insert((id.to_string(), m.path.clone()), 1);
            }
        }
        Ok(())
    }

    /// Removes half-made devices (no live table) an interrupted activation left.
    pub(crate) fn remove_stray_devices(&self, state: &mut State) -> Result<()> {
        // Only our names are decoded: a host may have many other devices.
        let mut ours = Vec::new();
        for record in state.ctl.list_devices_view()?.records() {
            let record = record?;
            let name = record.name_bytes()?;
            if name.starts_with(self.prefix.as_bytes()) && name != self.pool_name.as_bytes() {
                ours.push(record.entry()?.name.into_owned());
            }
        }
        for name in ours {
            let info = state.ctl.info(DevId::Name(&name))?;
            if info.active_table() && info.suspended() {
                // Left suspended by an interrupted snapshot: I/O to it would hang.
                log::warn!("resuming {name} left suspended");
                state.ctl.resume(DevId::Name(&name), UdevFlags::empty())?;
            } else if !info.active_table() {
                log::warn!("removing half-made device {name}");
                self.deactivate_once(state, &name, false)?;
            }
        }
        Ok(())
    }

    /// Deletes the devices whose deferred removal the kernel has completed.
    pub(crate) fn finish_deferred_deletes(&self, state: &mut State) -> Result<()> {
        let pending: Vec<String> = state
            .devices
            .values()
            .filter(|r| r.deferred_delete)
            .map(|r| r.id.clone())
            .collect();
        for id in pending {
            let name = self.device_name(&id);
            if !state.ctl.exists(&name)? {
                self.delete_device(state, &id)?;
            }
        }
        Ok(())
    }
}
