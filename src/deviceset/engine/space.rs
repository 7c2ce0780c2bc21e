//! Sizes and space: a new device bigger than its parent (its filesystem
//! grown to fill it), discarding a device before its delete so the host gets
//! the space back, fstrim on the mounts, the data file's allocation.

use super::{Config, State};
use crate::deviceset::error::{DeviceSetError, Result};
use crate::deviceset::fail_point;
use crate::deviceset::fs as fsx;
use crate::deviceset::report::{TrimReport, TrimmedMount};
use crate::deviceset::store::Storage;
use crate::dm::{DmError, UdevFlags, SECTOR_SIZE};
use crate::retry::Backoff;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Discards go this many bytes an ioctl, so a big device reports progress.
const DISCARD_CHUNK: u64 = 1 << 30;

/// The size of new device `id` snapshotted from a parent of `parent_size`
/// bytes: `requested` (at least the parent's, a multiple of 512, at most
/// 1 EiB) or the parent's. Also whether its filesystem must grow.
fn new_device_size(id: &str, parent_size: u64, requested: Option<u64>) -> Result<(u64, bool)> {
    let Some(size) = requested else {
        return Ok((parent_size, false));
    };
    let refuse = |reason: String| DeviceSetError::InvalidOption {
        option: "size",
        reason: format!("device {id:?}: {reason}"),
    };
    if size < parent_size {
        return Err(refuse(format!(
            "{size} bytes is smaller than its parent's {parent_size} bytes; a device can only be as big as its parent or bigger"
        )));
    }
    if size % SECTOR_SIZE != 0 {
        return Err(refuse(format!("{size} bytes is not a multiple of 512")));
    }
    // The thin target counts sectors in 64 bits; filesystems stop far sooner.
    if size > (1 << 60) {
        return Err(refuse(format!("{size} bytes is over the 1 EiB limit")));
    }
    Ok((size, size > parent_size))
}

impl Config {
    /// The size of new device `id` snapshotted from a parent of
    /// `parent_size` bytes, and whether its filesystem must grow (see
    /// [`new_device_size`]).
    pub(crate) fn new_device_size(
        &self,
        id: &str,
        parent_size: u64,
        requested: Option<u64>,
    ) -> Result<(u64, bool)> {
        new_device_size(id, parent_size, requested)
    }

    /// Grows the filesystem of the new device `id` (just committed with
    /// `grow_pending`) to its size. On failure the device is removed again,
    /// so the caller's error means "not created".
    pub(crate) fn finish_new_device(&self, state: &mut State, id: &str) -> Result<()> {
        if !state.devices.get(id).is_some_and(|r| r.grow_pending) {
            return Ok(());
        }
        let grown =
            fail_point!("add_sized.after_commit").and_then(|()| self.grow_device(state, id));
        if let Err(e) = grown {
            log::warn!("{id}: growing its filesystem failed ({e}); removing the device");
            if let Err(undo) = self.delete_device(state, id) {
                log::warn!(
                    "{id}: removing it failed too ({undo}); the next open finishes the growth"
                );
            }
            return Err(e);
        }
        Ok(())
    }

    /// Grows device `id`'s filesystem to the recorded size, then records
    /// the growth done. Redoing it is harmless: a filesystem that fills its
    /// device already is left as it is.
    fn grow_device(&self, state: &mut State, id: &str) -> Result<()> {
        let mut rec = self.record(state, id)?.clone();
        let name = self.device_name(id);
        let scratch = self.root.join("mnt-grow");
        // An xfs growth interrupted mid-way leaves its scratch mount.
        if fsx::is_mounted(&scratch) {
            fsx::unmount(&scratch)?;
        }
        state.mounts.retain(|(_, p), _| *p != scratch);
        // Active from an interrupted growth: start again at the new size.
        self.deactivate_once(state, &name, false)?;
        let dev = self.activate(state, &name, rec.thin_id, rec.size, UdevFlags::PRIVATE)?;
        let node = crate::dm::dm_node_path(dev);
        self.progress(&format!(
            "growing the filesystem of {id} to {} bytes",
            rec.size
        ));
        let grown = fsx::grow_with(
            state.set.filesystem,
            &node,
            &scratch,
            &state.set.mount_options,
            || fail_point!("add_sized.mid_grow"),
        );
        let removed = self.deactivate_retrying_once(state, &name);
        grown?;
        removed?;
        fail_point!("add_sized.after_grow_fs")?;
        rec.grow_pending = false;
        state.journal.update(&rec)?;
        state.devices.insert(id.to_string(), rec);
        Ok(())
    }

    /// Removes `name`, a transient EBUSY retried.
    fn deactivate_retrying_once(
        &self,
        state: &mut State,
        name: &str,
    ) -> std::result::Result<(), DmError> {
        Backoff::BUSY.run(
            |_| self.deactivate_once(state, name, false),
            DmError::is_busy,
        )
    }

    /// Whether removals discard first: as asked, else on for loop-file pools.
    pub(crate) fn remove_discard(&self, state: &State) -> bool {
        self.options
            .remove_discard
            .unwrap_or(matches!(state.set.storage, Storage::LoopFiles { .. }))
    }

    /// Before device `id` (inactive) is deleted: discards its blocks so the
    /// pool passes the discards down (a loop file punches holes). The
    /// record is marked for deletion first: with its data discarded, a
    /// crash from here on must end with the device deleted, which the next
    /// open does. A discard the devices refuse only costs the host's space.
    pub(crate) fn discard_before_delete(&self, state: &mut State, id: &str) -> Result<()> {
        if !self.remove_discard(state) {
            return Ok(());
        }
        let Some(mut rec) = state.devices.get(id).cloned() else {
            return Ok(());
        };
        if !rec.deferred_delete {
            rec.deferred_delete = true;
            state.journal.update(&rec)?;
            state.devices.insert(id.to_string(), rec.clone());
        }
        if let Err(e) = self.discard_thin(state, id, rec.thin_id, rec.size) {
            log::warn!(
                "{id}: discarding its blocks before the delete failed ({e}); the pool frees them, but the data file keeps them"
            );
        }
        fail_point!("remove.after_discard")
    }

    /// Activates thin `thin_id` as `id`'s device, discards all `size`
    /// bytes, and deactivates it.
    fn discard_thin(&self, state: &mut State, id: &str, thin_id: u32, size: u64) -> Result<()> {
        let name = self.device_name(id);
        let dev = self.activate(state, &name, thin_id, size, UdevFlags::PRIVATE)?;
        let node = crate::dm::dm_node_path(dev);
        let large = size >= DISCARD_CHUNK;
        if large {
            self.progress(&format!(
                "discarding {id} ({size} bytes) before deleting it"
            ));
        }
        let t0 = std::time::Instant::now();
        let done = fsx::discard(&node, size, DISCARD_CHUNK, |done| {
            if large {
                log::info!("{id}: {} of {} MiB discarded", done >> 20, size >> 20);
            }
        });
        let removed = self.deactivate_retrying_once(state, &name);
        done?;
        removed?;
        log::debug!("{id}: discarded {size} bytes in {:?}", t0.elapsed());
        Ok(())
    }

    /// At open: finishes what an interrupted space operation left. A
    /// device activated for a discard whose removal was cut short is
    /// deactivated (the deferred delete then deletes it); a device whose
    /// filesystem growth was cut short is grown. Failures are logged: the
    /// set opens, and the next open tries again.
    pub(crate) fn finish_space_work(&self, state: &mut State) {
        let records: Vec<_> = state.devices.values().cloned().collect();
        for rec in records {
            let name = self.device_name(&rec.id);
            if rec.deferred_delete {
                // A deferred removal's device still open is the kernel's;
                // one nobody holds is ours, left by a discard.
                match state.ctl.info(crate::dm::DevId::Name(&name)) {
                    Ok(info) if info.open_count == 0 => {
                        if let Err(e) = self.deactivate_once(state, &name, false) {
                            log::warn!("{}: deactivating it failed: {e}", rec.id);
                        }
                    }
                    _ => {}
                }
            } else if rec.grow_pending {
                log::warn!("{}: finishing the growth of its filesystem", rec.id);
                if let Err(e) = self.grow_device(state, &rec.id) {
                    log::warn!("{}: growing its filesystem failed: {e}", rec.id);
                }
            }
        }
    }

    /// Bytes the host has allocated to the data file, for loop-file pools.
    pub(crate) fn data_allocated(&self, state: &State) -> Option<u64> {
        let Storage::LoopFiles { data_file, .. } = &state.set.storage else {
            return None;
        };
        std::fs::metadata(data_file)
            .map(|m| m.blocks() * 512)
            .map_err(|e| log::warn!("stat {}: {e}", data_file.display()))
            .ok()
    }

    /// Runs fstrim on every mount of the set's devices; reports what each
    /// trimmed and how much the data file shrank.
    pub(crate) fn trim(&self, state: &mut State) -> Result<TrimReport> {
        self.writable_pool(state)?;
        let before = self.data_allocated(state);
        let targets: Vec<(String, PathBuf)> = state.mounts.keys().cloned().collect();
        let mut mounts = Vec::with_capacity(targets.len());
        for (id, path) in targets {
            if path == self.root.join("mnt-grow") {
                continue;
            }
            let (trimmed, error) = match fsx::trim(&path) {
                Ok(n) => (Some(n), None),
                Err(e) => {
                    log::warn!("{id}: fstrim on {} failed: {e}", path.display());
                    (None, Some(e.to_string()))
                }
            };
            mounts.push(TrimmedMount {
                id,
                path,
                trimmed,
                error,
            });
        }
        let after = self.data_allocated(state);
        Ok(TrimReport {
            mounts,
            host_reclaimed: before.zip(after).map(|(b, a)| b.saturating_sub(a)),
            data_allocated: after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_sizes_are_at_least_the_parents_and_whole_sectors() {
        assert_eq!(
            new_device_size("a", 1 << 30, None).unwrap(),
            (1 << 30, false)
        );
        assert_eq!(
            new_device_size("a", 1 << 30, Some(1 << 30)).unwrap(),
            (1 << 30, false)
        );
        assert_eq!(
            new_device_size("a", 1 << 30, Some(2 << 30)).unwrap(),
            (2 << 30, true)
        );
        let refused = |size| match new_device_size("dev", 2 << 30, Some(size)) {
            Err(e @ DeviceSetError::InvalidOption { option: "size", .. }) => e.to_string(),
            other => panic!("{size}: {other:?}"),
        };
        let small = refused(1 << 30);
        assert!(
            small.contains("\"dev\"") && small.contains("smaller than its parent's 2147483648"),
            "{small}"
        );
        assert!(refused((3 << 30) + 1).contains("multiple of 512"));
        assert!(refused(!511).contains("1 EiB"));
    }
}
