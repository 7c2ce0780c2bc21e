//! The commit protocol of adds and removes: the intent journal
//! ([`Journal`](crate::deviceset::store::Journal)), resolved against the
//! pool's real thin ids after a crash and folded into the record files from
//! time to time.
//!
//! An add or a remove is one `fdatasync` (its intent) and one pool commit
//! (`create_snap` or `delete`); the pool's transaction id is not moved per
//! operation. It is moved when the journal is folded (every
//! [`FOLD_AT`] entries, at shutdown, after a recovery), through the
//! `transaction.json` protocol, so it still tells a pool changed behind the
//! set's back.

use super::{Config, OpenTransaction, State};
use crate::deviceset::error::{DeviceSetError, Result};
use crate::deviceset::fail_point;
use crate::deviceset::store::StoreError;
use crate::deviceset::store::{DeviceRecord, TransactionOp, Unresolved};
use std::collections::BTreeMap;

/// Journal entries after which an operation folds the journal into the
/// record files.
pub(crate) const FOLD_AT: usize = 1024;

/// Whether `e` is the root file system refusing writes (full, over quota,
/// read-only): a fold then waits for a later open, logged, not failed.
pub(crate) fn root_cannot_take_writes(e: &DeviceSetError) -> bool {
    let full = match e {
        DeviceSetError::Store(StoreError::Io { source, .. }) => source.raw_os_error(),
        _ => None,
    };
    let cannot = matches!(
        full,
        Some(nix::libc::ENOSPC | nix::libc::EDQUOT | nix::libc::EROFS)
    );
    if cannot {
        log::warn!("the journal is not folded into the record files: {e}");
    }
    cannot
}

impl Config {
    /// Whether every thin of the pool is the set's: an owned pool, and no
    /// damaged record whose thin id is unknown. Only then is a thin found in
    /// the pool proof that an interrupted create made it.
    pub(crate) fn pool_is_ours(&self, state: &State) -> bool {
        state.set.pool_owned && !state.damaged.unknown
    }

    /// Makes sure `transaction.json` says the records continue in the
    /// journal before the first entry is appended (older builds then refuse
    /// the set rather than open it without them).
    pub(crate) fn guard_journal(&self, state: &mut State) -> Result<()> {
        if !state.journal.guarded() {
            state.store.mark_journal(state.transaction_id)?;
            state.journal.set_guarded(true);
        }
        Ok(())
    }

    /// Records the pool's transaction id as committed with no operation
    /// open, keeping the journal's mark while it holds entries.
    pub(crate) fn record_committed(&self, state: &mut State) -> Result<()> {
        let id = state.transaction_id;
        if state.journal.guarded() && !state.journal.is_empty() {
            state.store.mark_journal(id)?;
        } else {
            state.store.commit(id)?;
            state.journal.set_guarded(false);
        }
        Ok(())
    }

    /// Whether the pool made a message's change durable. The kernel commits
    /// after each message but ignores the commit's result: a failed commit
    /// aborts the transaction and leaves the pool read-only or failed, and
    /// the message still reports success. A mode change always raises a
    /// device event, and the message's reply carries the pool's event
    /// number as of after its commit (`event_after`): when that is the
    /// number of the last status that showed the pool writable, nothing
    /// changed and the commit held, with no ioctl more. Otherwise the
    /// pool's status (no commit of its own) is read; a pool that no longer
    /// takes writes makes the change's outcome unknown, which the caller
    /// leaves to the next open or heal to settle against the pool.
    pub(crate) fn committed(
        &self,
        state: &mut State,
        what: &str,
        event_after: Option<u32>,
    ) -> Result<()> {
        if event_after.is_some() && state.writable_at_event == event_after {
            return Ok(());
        }
        match self.writable_pool(state) {
            Ok(_) => Ok(()),
            Err(DeviceSetError::PoolUnusable { pool, reason }) => {
                Err(DeviceSetError::PoolUnusable {
                    pool,
                    reason: format!("{what} may not be committed: the pool is now {reason}"),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Folds the journal into the record files when it has grown past
    /// [`FOLD_AT`]. The operation that calls it has succeeded: a failed fold
    /// is logged and tried again by the next one.
    pub(crate) fn maybe_fold(&self, state: &mut State) {
        if state.journal.len() < FOLD_AT {
            return;
        }
        if let Err(e) = self.fold(state) {
            log::warn!("folding the journal into the record files failed: {e}");
        }
    }

    /// Writes the records the journal touched (removing those gone), empties
    /// the journal, then moves the pool's transaction id on by one when the
    /// pool is writable. Nothing while intents are unresolved (the records
    /// in memory are not the whole truth then) or the journal is empty.
    pub(crate) fn fold(&self, state: &mut State) -> Result<()> {
        if !state.unresolved.is_empty() || state.journal.is_empty() {
            return Ok(());
        }
        let touched = state.journal.touched().clone();
        let put: Vec<&DeviceRecord> = touched
            .iter()
            .filter_map(|id| state.devices.get(id))
            .collect();
        let remove: Vec<&str> = touched
            .iter()
            .filter(|id| !state.devices.contains_key(*id))
            .map(String::as_str)
            .collect();
        state.store.write_records(&put, &remove)?;
        fail_point!("fold.after_write_records")?;
        state.journal.clear()?;
        fail_point!("fold.after_clear")?;
        if self.degraded(state)?.is_some() {
            return Ok(());
        }
        let mut txn = OpenTransaction::begin(state, TransactionOp::Fold)?;
        txn.journal.set_guarded(false);
        let open = txn.open_id();
        self.set_transaction(&mut txn, open)?;
        txn.keep();
        fail_point!("fold.after_set_transaction")
    }

    /// Settles intents of unknown outcome before an operation that changes
    /// devices: an add, a remove or a deferred delete must never meet an
    /// intent that still names its device id or its thin id. Nothing to do
    /// in the common case; otherwise the pool must be writable (its status
    /// is read), and the operation is refused while it is not.
    pub(crate) fn settle_unresolved(&self, state: &mut State) -> Result<()> {
        if state.unresolved.is_empty() {
            return Ok(());
        }
        self.writable_pool(state)?;
        self.resolve_journal(state)
    }

    /// Settles the journal's intents of unknown outcome against the pool
    /// (which must be writable): a create whose thin exists is finished, one
    /// whose thin is missing dropped; a delete is done again. The outcomes
    /// are then written to the journal as markers, synced, and only after
    /// that are thin ids given back and the intents forgotten: a crash
    /// before the markers are durable settles the same intents again at the
    /// next open, and no id has been reused meanwhile. Then folds, so the
    /// journal no longer holds them (a failed fold leaves nothing unsettled).
    pub(crate) fn resolve_journal(&self, state: &mut State) -> Result<()> {
        if state.unresolved.is_empty() {
            return Ok(());
        }
        let needs_pool = state.unresolved.iter().any(|u| {
            matches!(
                u,
                Unresolved::Create { .. }
                    | Unresolved::Delete {
                        identity: Some(_),
                        ..
                    }
            )
        });
        let pool_ids = if needs_pool {
            let t0 = std::time::Instant::now();
            let ids = self.pool_thin_identities(state)?;
            log::info!(
                "read {} thin ids from pool {}'s metadata in {:.1} ms",
                ids.len(),
                self.pool_name,
                t0.elapsed().as_secs_f64() * 1e3
            );
            ids
        } else {
            BTreeMap::new()
        };
        let unresolved = state.unresolved.clone();
        let mut outcomes = Vec::with_capacity(unresolved.len());
        let mut freed = Vec::new();
        for u in &unresolved {
            let thin = u.thin_id();
            // A later create of the same thin id (a journal written by a
            // build that gave ids back before settling) claims it too.
            let claimed_later = unresolved.iter().any(|o| {
                o.seq() > u.seq() && o.thin_id() == thin && matches!(o, Unresolved::Create { .. })
            });
            let claimed_elsewhere = |state: &State, id: &str| {
                state
                    .devices
                    .values()
                    .any(|r| r.thin_id == thin && r.id != id)
                    || (state.set_written && state.set.base_thin_id == thin)
                    || state.damaged.ids.contains(&thin)
                    || claimed_later
            };
            match u {
                Unresolved::Create { seq, record } => {
                    let present = pool_ids.contains_key(&thin);
                    // A newer device under the same id (made after this
                    // intent was left) keeps its record.
                    let superseded = state
                        .devices
                        .get(&record.id)
                        .is_some_and(|r| r.thin_id != thin);
                    let finish = present
                        && !superseded
                        && self.pool_is_ours(state)
                        && !claimed_elsewhere(state, &record.id);
                    log::warn!(
                        "interrupted create of {} (thin {thin}): {}",
                        record.id,
                        if finish {
                            "its thin exists, the create is finished"
                        } else if present && superseded {
                            "a newer device has that id; dropped, the thin left as it is"
                        } else if present {
                            "its thin exists but may not be the set's; dropped, the thin left as it is"
                        } else {
                            "its thin does not exist; dropped"
                        }
                    );
                    if finish {
                        state.devices.insert(record.id.clone(), record.clone());
                    } else if !present {
                        freed.push(thin);
                    }
                    outcomes.push((*seq, finish));
                }
                Unresolved::Delete {
                    seq,
                    device_id,
                    thin_id,
                    identity,
                } => {
                    let record_matches =
                        state.devices.get(device_id).map(|r| r.thin_id == *thin_id);
                    // A thin that is not the one the delete began on (the
                    // pool's owner reused the id): the delete had happened.
                    let replaced = identity.is_some_and(|identity| {
                        pool_ids.get(thin_id).is_some_and(|now| *now != identity)
                    });
                    if replaced {
                        log::warn!(
                            "interrupted delete of {device_id} (thin {thin_id}): the pool now holds another thin with that id (made since by the pool's owner); it is left as it is"
                        );
                    } else {
                        log::warn!(
                            "interrupted delete of {device_id} (thin {thin_id}): done again"
                        );
                    }
                    let ours = !replaced
                        && (record_matches == Some(true)
                            || !claimed_elsewhere(state, device_id) && !state.damaged.unknown);
                    if ours {
                        let name = self.device_name(device_id);
                        self.deactivate_once(state, &name, false)?;
                        self.delete_thin(state, *thin_id)?;
                        freed.push(*thin_id);
                    }
                    if record_matches == Some(true) {
                        state.devices.remove(device_id);
                    }
                    if replaced && record_matches == Some(true) {
                        state.devices.remove(device_id);
                    }
                    // Done (the record goes at replay) only when the device
                    // is gone; a record of another thin under the same id
                    // stays, so the intent is cancelled.
                    outcomes.push((*seq, (ours || replaced) && record_matches != Some(false)));
                }
            }
        }
        state.journal.settle(&outcomes)?;
        fail_point!("resolve.before_fold")?;
        state.unresolved.clear();
        for thin in freed {
            state.release_thin_id(thin);
        }
        self.fold(state)
    }
}
