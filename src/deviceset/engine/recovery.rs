//! Open-time repair: interrupted operations, stray devices, deferred deletes,
//! mounts left by an earlier process.

use super::{Config, State};
use crate::deviceset::error::{DeviceSetError, Result};
use crate::deviceset::fail_point;
use crate::deviceset::fs as fsx;
use crate::deviceset::ids::ThinIdAllocator;
use crate::deviceset::options::StorageOptions;
use crate::deviceset::store::{
    DeviceRecord, LoadReport, MetadataStore, RecordProblem, SetRecord, Storage, TransactionOp,
    TransactionRecord, Unresolved, FORMAT_VERSION, MAX_RECORD_BYTES,
};
use crate::dm::{DevId, UdevFlags};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The thin ids damaged records may own. A damaged record still owns its
/// thin id: read from a record that still parses as JSON, else unknown.
#[derive(Debug, Default)]
pub(crate) struct DamagedClaims {
    /// Thin ids read from damaged records.
    pub(crate) ids: BTreeSet<u32>,
    /// A damaged record's thin id could not be read: it may own any id.
    pub(crate) unknown: bool,
}

impl DamagedClaims {
    /// The claims of the damaged records `problems` names.
    pub(crate) fn read(problems: &[RecordProblem]) -> DamagedClaims {
        let mut claims = DamagedClaims::default();
        for p in problems {
            match raw_thin_id(&p.path) {
                Some(id) => {
                    claims.ids.insert(id);
                }
                None => claims.unknown = true,
            }
        }
        claims
    }
}

/// Refuses records that share a thin id once the journal is applied (the
/// files alone are checked by the load): a removal would destroy the other.
fn check_unique_thin_ids(
    config: &Config,
    devices: &BTreeMap<String, DeviceRecord>,
    journal: &Path,
) -> Result<()> {
    let mut owner: BTreeMap<u32, &str> = BTreeMap::new();
    for r in devices.values() {
        if let Some(other) = owner.insert(r.thin_id, &r.id) {
            return Err(DeviceSetError::Inconsistent {
                pool: config.pool_name.clone(),
                root: config.root.clone(),
                reason: format!(
                    "devices {other} and {} both claim thin id {} after replaying {}",
                    r.id,
                    r.thin_id,
                    journal.display()
                ),
            });
        }
    }
    Ok(())
}

/// The `thin_id` field of a record that parses as JSON but not as a record.
fn raw_thin_id(path: &Path) -> Option<u32> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    let mut bytes = Vec::new();
    file.take(MAX_RECORD_BYTES).read_to_end(&mut bytes).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    u32::try_from(value.get("thin_id")?.as_u64()?).ok()
}

impl Config {
    /// Opens the set's state from its records and brings the pool and the
    /// records into agreement: the pool set up, an interrupted operation
    /// repaired, the base device made or checked.
    ///
    /// A pool that cannot take changes (read-only, out of metadata space,
    /// needs_check, failed) does not stop the open: the set runs degraded,
    /// an interrupted operation and deferred deletes left for when the pool
    /// is writable again (see [`Config::heal`]).
    pub(crate) fn open_state(
        &self,
        store: MetadataStore,
        report: LoadReport,
        problems: &[RecordProblem],
    ) -> Result<State> {
        self.check_recorded_options(report.set.as_ref())?;
        let ctl = self.control()?;
        let LoadReport {
            set,
            transaction,
            mut devices,
            ..
        } = report;
        // The journal's resolved changes go on top of the record files; its
        // unresolved intents keep their thin ids used until settled.
        let (mut journal, replay) = store.open_journal()?;
        journal.set_guarded(
            transaction
                .as_ref()
                .is_some_and(|t| t.op == TransactionOp::Journal),
        );
        replay.apply(&mut devices);
        let unresolved = replay.unresolved;
        check_unique_thin_ids(self, &devices, journal.path())?;
        let mut ids = ThinIdAllocator::new();
        for rec in devices.values() {
            ids.mark_used(rec.thin_id)?;
        }
        for u in &unresolved {
            ids.mark_used(u.thin_id())?;
            if let Unresolved::Delete {
                device_id, thin_id, ..
            } = u
            {
                // Being deleted: hidden and refused until the delete is done.
                if let Some(r) = devices.get_mut(device_id).filter(|r| r.thin_id == *thin_id) {
                    r.deferred_delete = true;
                }
            }
        }
        // A damaged record still owns its thin id: new devices skip the ids
        // read from them (any other, the pool's EEXIST answer covers).
        let damaged = DamagedClaims::read(problems);
        for id in &damaged.ids {
            let _ = ids.mark_used(*id);
        }
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
                deferred_removal: Some(self.options.deferred_removal),
                deferred_deletion: Some(self.options.deferred_deletion),
                remove_discard: self.options.remove_discard,
            },
        };
        let mut state = State::new(ctl, store, journal, set);
        state.unresolved = unresolved;
        state.set_written = set_written;
        state.devices = devices;
        state.ids = ids;
        state.damaged = damaged;
        self.setup_pool(&mut state, set_written)?;
        // A growth the monitor was making when it died: finished (or
        // dropped) before the pool's state is judged.
        if let Err(e) = self.finish_growth(&mut state) {
            log::warn!(
                "pool {}: finishing an interrupted growth failed: {e}",
                self.pool_name
            );
        }
        let degraded = self.degraded(&mut state)?;
        let redo_base = match (&degraded, transaction) {
            (Some(why), Some(txn)) => {
                log::warn!(
                    "pool {} cannot be changed ({why}): the interrupted {:?} is finished once it can",
                    self.pool_name,
                    txn.op
                );
                false
            }
            (_, txn) => {
                let redo = self.recover(&mut state, txn)?;
                if degraded.is_none() {
                    self.resolve_journal(&mut state)?;
                }
                redo
            }
        };
        self.remove_stray_devices(&mut state)?;
        match &degraded {
            Some(why) if !state.set_written => {
                return Err(DeviceSetError::PoolUnusable {
                    pool: self.pool_name.clone(),
                    reason: format!("{why}; the set's base device cannot be made"),
                })
            }
            Some(why) => log::warn!(
                "pool {} cannot be changed ({why}): the set is open degraded, changes are refused",
                self.pool_name
            ),
            None if !state.set_written || redo_base => self.init_base(&mut state)?,
            None => self.check_base(&mut state)?,
        }
        self.remember_options(&mut state);
        self.adopt_existing_mounts(&mut state)?;
        if degraded.is_none() {
            self.finish_space_work(&mut state);
            self.finish_deferred_deletes(&mut state)?;
        }
        Ok(state)
    }

    /// Finishes what a degraded open left once the pool can take changes
    /// again (after growing it): an interrupted operation, the base device,
    /// deferred deletes. Nothing while the pool is still degraded.
    pub(crate) fn heal(&self, state: &mut State) -> Result<()> {
        let status = match self.writable_pool(state) {
            Ok(s) => s,
            Err(DeviceSetError::PoolUnusable { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        state.transaction_id = status.transaction_id;
        let pending = state.store.pending()?;
        let redo_base = self.recover(state, pending)?;
        self.resolve_journal(state)?;
        if !state.set_written || redo_base {
            self.init_base(state)?;
        }
        self.finish_space_work(state);
        self.finish_deferred_deletes(state)
    }

    /// Brings back a pool of ours an interrupted process left unusable:
    /// suspended (killed between the suspend and the resume of a table
    /// reload, or a failed resume: every I/O to the set would hang) is
    /// resumed, with the new table if the kernel takes it, else the old one;
    /// left without a table (an interrupted create) is removed, to be made
    /// again. Returns whether the pool still exists. An adopted pool is its
    /// owner's to repair: refused with the reason.
    pub(crate) fn revive_pool(&self, state: &mut State) -> Result<bool> {
        let id = DevId::Name(&self.pool_name);
        let info = state.ctl.info(id)?;
        if info.active_table() && !info.suspended() {
            return Ok(true);
        }
        if let StorageOptions::AdoptPool { .. } = self.options.storage {
            return Err(DeviceSetError::PoolUnusable {
                pool: self.pool_name.clone(),
                reason: if info.active_table() {
                    "the pool is suspended; its owner must resume it".into()
                } else {
                    "the pool has no table".into()
                },
            });
        }
        if !info.active_table() {
            log::warn!("removing pool {} left without a table", self.pool_name);
            self.deactivate_once(state, &self.pool_name, false)?;
            return Ok(false);
        }
        log::warn!("resuming pool {} left suspended", self.pool_name);
        if let Err(e) = state.ctl.resume(id, UdevFlags::PRIVATE) {
            log::warn!(
                "pool {}: the table loaded before the interruption was refused ({e}); resuming the live one",
                self.pool_name
            );
            state.ctl.table_clear(id)?;
            state.ctl.resume(id, UdevFlags::PRIVATE)?;
        }
        Ok(true)
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
        set.deferred_removal = Some(o.deferred_removal);
        set.deferred_deletion = Some(o.deferred_deletion);
        set.remove_discard = o.remove_discard;
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
        // The journal's mark is no operation: the set was between them.
        let txn = txn.filter(|t| t.op != TransactionOp::Journal);
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
                TransactionOp::Fold | TransactionOp::Journal => true,
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
        // A delete was of a device of ours; a committed create made its thin.
        let ours = committed
            || matches!(txn.op, TransactionOp::Delete { .. })
            || self.made_by_rolled_back_create(state, &txn.op);
        match &txn.op {
            // A create reaches here only uncommitted: roll it back. A delete
            // may have reached the pool: finish it either way. Both end with
            // the device gone.
            TransactionOp::Create { device_id, thin_id }
            | TransactionOp::Delete { device_id, thin_id } => {
                let name = self.device_name(device_id);
                self.deactivate_once(state, &name, false)?;
                self.delete_own_thin(state, *thin_id, ours)?;
                state.store.remove_device_record(device_id)?;
                state.devices.remove(device_id);
            }
            TransactionOp::BaseCreate { thin_id } => {
                self.deactivate_once(state, &self.base_name, false)?;
                self.delete_own_thin(state, *thin_id, ours)?;
                redo_base = true;
            }
            // A fold changes no thin: uncommitted, the id simply stays.
            TransactionOp::Fold | TransactionOp::Journal => {}
        }
        self.record_committed(state)?;
        Ok(redo_base)
    }

    /// Whether the thin of an uncommitted create is provably the one it
    /// made, so rolling back may delete it. The create recorded its start
    /// before asking the pool, so the pool may hold that id for someone
    /// else: a damaged record (which the allocator could not see) or an
    /// adopted pool's owner. Proof is the device's own record (written only
    /// once the pool made the thin), or an owned pool where no record, even
    /// damaged, can claim the id.
    fn made_by_rolled_back_create(&self, state: &State, op: &TransactionOp) -> bool {
        let Some(thin) = op.thin_id() else {
            return false;
        };
        let device = op.device_id();
        let claimed_elsewhere = state
            .devices
            .values()
            .any(|r| r.thin_id == thin && Some(r.id.as_str()) != device)
            || (state.set_written && device.is_some() && state.set.base_thin_id == thin)
            || state.damaged.ids.contains(&thin);
        if claimed_elsewhere {
            return false;
        }
        if device
            .and_then(|d| state.devices.get(d))
            .is_some_and(|r| r.thin_id == thin)
        {
            return true;
        }
        !state.damaged.unknown && state.set.pool_owned
    }

    /// Deletes the thin of an operation being repaired when it is the
    /// set's (`ours`); otherwise leaves it in the pool, its id kept used.
    fn delete_own_thin(&self, state: &mut State, thin_id: u32, ours: bool) -> Result<()> {
        if ours {
            self.delete_thin(state, thin_id)?;
            state.release_thin_id(thin_id);
        } else {
            log::warn!(
                "rolling back: thin id {thin_id} is left in pool {}; it may belong to a damaged record or to the pool's owner",
                self.pool_name
            );
            let _ = state.ids.mark_used(thin_id);
        }
        Ok(())
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
        // A delete of unknown outcome is settled first, under its own
        // intent: deleting its device again under a new one would leave the
        // old intent to act on whatever device takes the thin id next.
        self.settle_unresolved(state)?;
        let pending: Vec<String> = state
            .devices
            .values()
            .filter(|r| r.deferred_delete)
            .map(|r| r.id.clone())
            .collect();
        for id in pending {
            let name = self.device_name(&id);
            if !state.ctl.exists(&name)? {
                fail_point!("cleanup_deferred.before_delete")?;
                self.delete_device(state, &id)?;
            }
        }
        Ok(())
    }
}
