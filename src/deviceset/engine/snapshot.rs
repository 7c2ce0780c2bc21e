//! Thin snapshots: adding and deleting the set's devices.

use super::mount_paths;
use super::{ClaimedId, Config, State};
use crate::deviceset::error::{DeviceSetError, Result};
use crate::deviceset::fail_point;
use crate::deviceset::ids::{max_id_len_for_prefix, validate_device_id};
use crate::deviceset::report::{DeviceSummary, Presence, RemoveOutcome};
use crate::deviceset::store::RESERVED_DEVICE_IDS;
use crate::deviceset::store::{DeviceRecord, Unresolved};
use crate::dm::StatusOptions;
use crate::dm::SECTOR_SIZE;
use crate::dm::{DevId, ErrorKind, SuspendOptions, UdevFlags};
use crate::retry::Backoff;
use crate::target::ThinStatus;
use crate::target::{PoolMessage, ThinId};
use std::collections::BTreeSet;

impl Config {
    /// Refuses changes while the pool is not writable or below `min_free_space_percent`.
    pub(crate) fn check_space(&self, state: &mut State) -> Result<()> {
        let s = self.writable_pool(state)?;
        let min = self.options.min_free_space_percent;
        let check = |what: &'static str, free: u64, total: u64| {
            if total == 0 {
                return Ok(());
            }
            let pct = free as f64 * 100.0 / total as f64;
            if pct < f64::from(min) {
                return Err(DeviceSetError::LowSpace {
                    what,
                    free_percent: pct,
                    min_percent: min,
                });
            }
            Ok(())
        };
        check("data", s.free_data_blocks(), s.total_data_blocks)?;
        check(
            "metadata",
            s.free_metadata_blocks(),
            s.total_metadata_blocks,
        )
    }

    /// Refuses an id that is malformed, too long, or one of the set's own names.
    pub(crate) fn validate_new_id(&self, id: &str) -> Result<()> {
        validate_device_id(id, max_id_len_for_prefix(&self.prefix))?;
        if RESERVED_DEVICE_IDS.contains(&id) {
            return Err(DeviceSetError::ReservedId(id.to_string()));
        }
        Ok(())
    }

    /// Snapshots `parent` (the base device when `None`) into a new device `id`.
    pub(crate) fn add_device(
        &self,
        state: &mut State,
        id: &str,
        parent: Option<&str>,
        requested_size: Option<u64>,
    ) -> Result<()> {
        self.validate_new_id(id)?;
        // An earlier add of this id whose outcome is unknown is settled
        // first: finished, it makes this one a duplicate; left, it would
        // later be finished over this device's record.
        self.settle_unresolved(state)?;
        if let Some(r) = state.devices.get(id) {
            return Err(if r.deferred_delete {
                DeviceSetError::PendingDeletion(id.to_string())
            } else {
                DeviceSetError::DeviceExists(id.to_string())
            });
        }
        // A record the load refused (damaged, sharing a thin id) still holds
        // what was stored under this id: never write over it. A record file
        // of a device removed since the last fold is no such thing: the
        // journal says it is gone, and the next fold rewrites it.
        let path = state.store.device_path(id)?;
        if path.exists() && !state.journal.touched().contains(id) {
            return Err(DeviceSetError::RefusedRecord {
                id: id.to_string(),
                path,
            });
        }
        let (origin, size, origin_name) = match parent {
            None => (
                state.set.base_thin_id,
                state.set.base_size,
                self.base_name.clone(),
            ),
            Some(p) => {
                let r = match self.record(state, p) {
                    Ok(r) => r,
                    Err(DeviceSetError::UnknownDevice(_)) => {
                        return Err(DeviceSetError::UnknownParent {
                            id: id.to_string(),
                            parent: p.to_string(),
                        })
                    }
                    Err(e) => return Err(e),
                };
                (r.thin_id, r.size, self.device_name(p))
            }
        };
        let (size, grow) = self.new_device_size(id, size, requested_size)?;
        self.check_space(state)?;
        let origin_id = ThinId::new(origin)?;
        let no_ids = || DeviceSetError::PoolUnusable {
            pool: self.pool_name.clone(),
            reason: "all 2^24 thin ids are in use".into(),
        };
        let mut claim = ClaimedId::claim(state).ok_or_else(no_ids)?;
        let parent_active = match claim.ctl.info(DevId::Name(&origin_name)) {
            Ok(info) => info.active_table() && !info.suspended(),
            Err(e) if e.is_not_found() => false,
            Err(e) => return Err(e.into()),
        };
        // The intent is durable before the pool is asked; every failure
        // below cancels it (or, when even that cannot be written, keeps the
        // id used: the next open settles it against the pool).
        let (seq, record, event_after) = loop {
            let thin = claim.id();
            let thin_id = ThinId::new(thin)?;
            let mut record = DeviceRecord::new(id, parent.map(str::to_string), thin, size);
            record.grow_pending = grow;
            self.guard_journal(&mut claim)?;
            let seq = claim.journal.intend_create(&record)?;
            let snap = fail_point!("add.after_intent").and_then(|()| {
                // Snapshotting an active origin: suspend it around create_snap
                // so the snapshot sees a consistent, flushed origin.
                if parent_active {
                    claim
                        .ctl
                        .suspend(DevId::Name(&origin_name), &SuspendOptions::default())?;
                }
                // An error injected here stands for a failed create_snap.
                let snap = if parent_active {
                    fail_point!("add.after_suspend_parent")
                } else {
                    Ok(())
                }
                .and_then(|()| {
                    let msg = PoolMessage::CreateSnap {
                        id: thin_id,
                        origin: origin_id,
                    };
                    Ok(self.message_event(&mut claim, msg)?)
                });
                if parent_active {
                    if let Err(e) = claim
                        .ctl
                        .resume(DevId::Name(&origin_name), UdevFlags::empty())
                    {
                        log::error!("resuming {origin_name} after create_snap failed: {e}");
                        if snap.is_ok() {
                            let _ = self.delete_thin(&mut claim, thin);
                        }
                        return Err(e.into());
                    }
                }
                snap
            });
            match snap {
                Ok(event) => break (seq, record, event),
                Err(DeviceSetError::Dm(e)) if e.kind() == Some(ErrorKind::Exists) => {
                    if let Err(closing) = claim.journal.cancel(seq) {
                        // The id is the pool's: never given back.
                        claim.keep();
                        return Err(closing.into());
                    }
                    log::warn!(
                        "thin id {thin} exists in the pool though no record names it; skipping it"
                    );
                    if !claim.skip() {
                        return Err(no_ids());
                    }
                }
                Err(e) => {
                    if claim.journal.cancel(seq).is_err() {
                        claim.keep();
                    }
                    return Err(e);
                }
            }
        };
        let thin = record.thin_id;
        let checked = fail_point!("add.commit_check")
            .and_then(|()| self.committed(&mut claim, "create_snap", Some(event_after)));
        if let Err(e) = checked {
            // Unknown outcome: the intent stays for the pool to settle, its
            // thin id used meanwhile.
            claim.keep();
            state.unresolved.push(Unresolved::Create { seq, record });
            return Err(e);
        }
        let injected = fail_point!("add.after_create_snap");
        if let Err(e) = injected {
            // Undone: the thin deleted, the intent cancelled. A thin that
            // cannot be deleted stays, recorded, and the error is returned.
            if self.delete_thin(&mut claim, thin).is_err() {
                claim.journal.done(seq, true)?;
                claim.keep();
                state.devices.insert(id.to_string(), record);
                return Err(e);
            }
            if claim.journal.cancel(seq).is_err() {
                claim.keep();
            }
            return Err(e);
        }
        // Done. The marker is not synced where the set owns every thin of
        // the pool: lost in a power cut, the next open finds the thin in the
        // pool and finishes the create the same way. Elsewhere (an adopted
        // pool, a damaged record's unknown claim) a thin found there may not
        // be ours, so the marker is synced and an unmarked create dropped.
        let sync = !self.pool_is_ours(&claim);
        let marked = claim.journal.done(seq, sync);
        claim.keep();
        state.devices.insert(id.to_string(), record);
        marked?;
        fail_point!("add.after_done")?;
        self.maybe_fold(state);
        self.finish_new_device(state, id)
    }

    /// Deletes an inactive device from the pool and its record.
    pub(crate) fn delete_device(&self, state: &mut State, id: &str) -> Result<()> {
        if !state.devices.contains_key(id) {
            return Err(DeviceSetError::UnknownDevice(id.to_string()));
        }
        self.writable_pool(state)?;
        self.delete_device_without_status(state, id)
    }

    /// [`Config::delete_device`] without reading the pool's status first:
    /// for a caller that has just seen the pool writable
    /// ([`Config::writable_pool`]), or one without a discard to do, whose
    /// refused delete then reads the pool's mode for its error.
    pub(crate) fn delete_device_without_status(&self, state: &mut State, id: &str) -> Result<()> {
        self.settle_unresolved(state)?;
        let thin = match state.devices.get(id) {
            Some(r) => r.thin_id,
            None => return Err(DeviceSetError::UnknownDevice(id.to_string())),
        };
        self.discard_before_delete(state, id)?;
        // On a pool another owner shares, a delete redone after a crash
        // must find this very thin, not one the owner made since with the
        // same id: its identity goes into the intent.
        let identity = if self.pool_is_ours(state) {
            None
        } else {
            self.pool_thin_identities(state)?.get(&thin).copied()
        };
        self.guard_journal(state)?;
        let seq = state.journal.intend_delete(id, thin, identity)?;
        // A failed delete cancels the intent: the device stays. EBUSY is
        // retried: a deferred removal the kernel is finishing (from a work
        // queue) has the name gone a moment before the thin is closed in the
        // pool.
        let busy = |e: &DeviceSetError| matches!(e, DeviceSetError::Dm(e) if e.is_busy());
        let deleted = fail_point!("remove.after_intent")
            .and_then(|()| Backoff::BUSY.run(|_| self.delete_thin_event(state, thin), busy));
        let event_after = match deleted {
            Ok(event) => event,
            Err(e) if busy(&e) && self.options.deferred_deletion => {
                // Still open in the pool: deleted by a later call or open.
                log::info!("{id}: thin {thin} is still open in the pool; it is deleted later");
                let Some(rec) = state.devices.get(id).filter(|r| !r.deferred_delete) else {
                    state.journal.cancel(seq)?;
                    return Ok(()); // marked already: a later try
                };
                let mut rec = rec.clone();
                rec.deferred_delete = true;
                state.journal.cancel_and_update(seq, &rec)?;
                state.devices.insert(id.to_string(), rec);
                return Ok(());
            }
            Err(e) => {
                // Not cancelled (the journal stopped): the next open deletes it.
                let _ = state.journal.cancel(seq);
                // A pool that takes no writes refuses the message: its mode
                // makes the clearer error.
                return Err(match self.writable_pool(state) {
                    Err(unusable @ DeviceSetError::PoolUnusable { .. }) => unusable,
                    _ => e,
                });
            }
        };
        let checked = fail_point!("remove.commit_check")
            .and_then(|()| self.committed(state, "delete", event_after));
        if let Err(e) = checked {
            // Unknown outcome: hidden, its thin id used, until settled.
            if let Some(r) = state.devices.get_mut(id) {
                r.deferred_delete = true;
            }
            state.unresolved.push(Unresolved::Delete {
                seq,
                device_id: id.to_string(),
                thin_id: thin,
                identity,
            });
            return Err(e);
        }
        // Deleted in the pool. A crash before the marker is durable leaves
        // the intent, and the next open deletes again (a missing thin is fine).
        let injected = fail_point!("remove.after_delete");
        let sync = !self.pool_is_ours(state);
        let marked = state.journal.done(seq, sync);
        state.devices.remove(id);
        state.release_thin_id(thin);
        injected?;
        marked?;
        fail_point!("remove.after_done")?;
        self.maybe_fold(state);
        Ok(())
    }

    /// Whether device `id` exists, as far as the set can tell (see
    /// [`Presence`]): an intent of unknown outcome naming it makes it
    /// uncertain, whatever the records say.
    pub(crate) fn presence(&self, state: &State, id: &str) -> Presence {
        if state.unresolved.iter().any(|u| u.device_id() == id) {
            Presence::Uncertain
        } else if self.record(state, id).is_ok() {
            Presence::Present
        } else {
            Presence::Absent
        }
    }

    /// Device ids named by intents of unknown outcome.
    pub(crate) fn unsettled_ids(&self, state: &State) -> Vec<String> {
        let ids: BTreeSet<&str> = state.unresolved.iter().map(|u| u.device_id()).collect();
        ids.into_iter().map(str::to_string).collect()
    }

    /// Bytes the pool has mapped for device `id`, from its thin status line;
    /// `None` while it is inactive (or its status reports no usage: failed).
    pub(crate) fn thin_mapped_bytes(&self, state: &mut State, id: &str) -> Result<Option<u64>> {
        let name = self.device_name(id);
        let lines = match state
            .ctl
            .table_status(DevId::Name(&name), &StatusOptions::default())
        {
            Ok((_, lines)) => lines,
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(lines
            .first()
            .and_then(|l| ThinStatus::parse(l.params()).ok())
            .and_then(|s| s.usage().map(|u| u.mapped_sectors * SECTOR_SIZE)))
    }

    /// Bytes the pool has mapped for the set's device `id` (`None` while
    /// inactive): one status read, not a [`Config::list`].
    pub(crate) fn mapped_bytes(&self, state: &mut State, id: &str) -> Result<Option<u64>> {
        self.record(state, id)?;
        self.thin_mapped_bytes(state, id)
    }

    /// Every device with its state.
    pub(crate) fn list(&self, state: &mut State) -> Result<Vec<DeviceSummary>> {
        let active: BTreeSet<String> = state
            .ctl
            .list_devices()?
            .into_iter()
            .filter_map(|e| e.name.strip_prefix(&self.prefix).map(str::to_string))
            .collect();
        let records: Vec<DeviceRecord> = state
            .devices
            .values()
            .filter(|r| !r.deferred_delete)
            .cloned()
            .collect();
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            let is_active = active.contains(&r.id);
            let mapped_bytes = if is_active {
                self.thin_mapped_bytes(state, &r.id).ok().flatten()
            } else {
                None
            };
            out.push(DeviceSummary {
                mount_points: mount_paths(state, &r.id),
                id: r.id,
                parent: r.parent,
                thin_id: r.thin_id,
                size: r.size,
                initialized: r.initialized,
                active: is_active,
                mapped_bytes,
            });
        }
        Ok(out)
    }

    /// Like [`DeviceSet::remove_device`](crate::deviceset::DeviceSet::remove_device),
    /// but a device held open elsewhere is removed by the kernel once its last
    /// opener closes it, and deleted from the pool on a later call or open.
    pub(crate) fn remove_device_deferred(
        &self,
        state: &mut State,
        id: &str,
    ) -> Result<RemoveOutcome> {
        self.settle_unresolved(state)?;
        self.record(state, id)?;
        let paths = mount_paths(state, id);
        if !paths.is_empty() {
            return Err(DeviceSetError::Mounted {
                id: id.to_string(),
                paths,
            });
        }
        self.writable_pool(state)?;
        let name = self.device_name(id);
        self.deactivate_once(state, &name, true)?;
        fail_point!("remove_deferred.after_deactivate")?;
        if state.ctl.exists(&name)? {
            let mut rec = self.record(state, id)?.clone();
            rec.deferred_delete = true;
            self.guard_journal(state)?;
            state.journal.update(&rec)?;
            // Durable now: memory follows at once, so a failure reported
            // from here on leaves the removal wholly done, as the next open
            // would find it.
            state.devices.insert(id.to_string(), rec);
            fail_point!("remove_deferred.after_write_record")?;
            return Ok(RemoveOutcome::Deferred);
        }
        self.delete_device_without_status(state, id)?;
        Ok(RemoveOutcome::Removed)
    }

    /// Marks device `id` initialized (or not), durably.
    pub(crate) fn set_initialized(
        &self,
        state: &mut State,
        id: &str,
        initialized: bool,
    ) -> Result<()> {
        let mut rec = self.record(state, id)?.clone();
        rec.initialized = initialized;
        fail_point!("set_initialized.before_write")?;
        self.guard_journal(state)?;
        state.journal.update(&rec)?;
        // Durable now: memory follows at once (see remove_device_deferred).
        state.devices.insert(id.to_string(), rec);
        fail_point!("set_initialized.after_write")?;
        Ok(())
    }
}
