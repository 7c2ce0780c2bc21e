//! The base device: made with its filesystem at first open, checked and grown later.

use super::{ClaimedId, Config, OpenTransaction, State};
use crate::deviceset::error::{DeviceSetError, Result};
use crate::deviceset::fail_point;
use crate::deviceset::fs as fsx;
use crate::deviceset::store::TransactionOp;
use crate::dm::{ErrorKind, UdevFlags};
use crate::target::{PoolMessage, ThinId};

impl Config {
    /// Makes the base device: a thin device with a fresh filesystem, committed
    /// in the pool before the set record names it.
    pub(crate) fn init_base(&self, state: &mut State) -> Result<()> {
        self.writable_pool(state)?;
        let no_ids = || DeviceSetError::PoolUnusable {
            pool: self.pool_name.clone(),
            reason: "no free thin ids".into(),
        };
        let mut claim = ClaimedId::claim(state).ok_or_else(no_ids)?;
        let (mut txn, thin) = loop {
            let thin = claim.id();
            let thin_id = ThinId::new(thin)?;
            let mut txn =
                OpenTransaction::begin(&mut claim, TransactionOp::BaseCreate { thin_id: thin })?;
            fail_point!("init.after_begin")?;
            match self.message(&mut txn, PoolMessage::CreateThin(thin_id)) {
                Ok(()) => break (txn, thin),
                Err(e) if e.kind() == Some(ErrorKind::Exists) => {
                    // Taken in the pool though no record names it: skip it for good.
                    if let Err(closing) = txn.abort() {
                        claim.keep();
                        return Err(closing);
                    }
                    if !claim.skip() {
                        return Err(no_ids());
                    }
                }
                Err(e) => {
                    txn.abort()?;
                    return Err(e.into());
                }
            }
        };
        let open = txn.open_id();
        // On failure from here the base device goes and the pool's
        // transaction id moves back (a first init leaves an empty pool at 0,
        // which a new init accepts), then the guards close the transaction
        // and give the thin id back.
        let undo = |config: &Config, state: &mut State| {
            let _ = config.deactivate_once(state, &config.base_name, false);
            let _ = config.delete_thin(state, thin);
            if state.transaction_id == open {
                if let Err(back) = config.set_transaction(state, open - 1) {
                    log::warn!(
                        "could not move pool {} back to transaction {}: {back}",
                        config.pool_name,
                        open - 1
                    );
                }
            }
        };
        let committed = fail_point!("init.after_create_thin")
            .and_then(|()| self.set_transaction(&mut txn, open));
        if let Err(e) = committed {
            undo(self, &mut txn);
            return Err(e);
        }
        let made = (|| -> Result<String> {
            fail_point!("init.after_set_transaction")?;
            let state: &mut State = &mut txn;
            let size = self.options.base_size;
            let dev = self.activate(state, &self.base_name, thin, size, UdevFlags::PRIVATE)?;
            let node = crate::dm::dm_node_path(dev);
            self.progress(&format!(
                "creating {} filesystem on the base device ({} bytes)",
                self.options.filesystem.as_str(),
                size
            ));
            fsx::mkfs(self.options.filesystem, &node, &self.options.mkfs_options)?;
            let uuid = fsx::read_superblock(self.options.filesystem, &node)?.uuid;
            self.deactivate_once(state, &self.base_name, false)?;
            Ok(uuid)
        })();
        let uuid = match made {
            Ok(u) => u,
            Err(e) => {
                undo(self, &mut txn);
                return Err(e);
            }
        };
        // Committed in the pool: a failure from here is finished by recovery.
        txn.keep();
        claim.keep();
        fail_point!("init.after_mkfs")?;
        state.set.base_thin_id = thin;
        state.set.base_size = self.options.base_size;
        state.set.base_fs_uuid = Some(uuid);
        state.store.write_set(&state.set)?;
        state.set_written = true;
        fail_point!("init.after_write_set")?;
        Ok(())
    }

    /// Checks the base device holds the recorded filesystem; grows it when
    /// asked for (or when an interrupted growth left it short).
    pub(crate) fn check_base(&self, state: &mut State) -> Result<()> {
        let was_active = state.ctl.exists(&self.base_name)?;
        let thin = state.set.base_thin_id;
        let size = state.set.base_size;
        let dev = self.activate(state, &self.base_name, thin, size, UdevFlags::PRIVATE)?;
        let node = crate::dm::dm_node_path(dev);
        let result = (|| -> Result<u64> {
            let sb = fsx::read_superblock(state.set.filesystem, &node)?;
            if let Some(expected) = &state.set.base_fs_uuid {
                if *expected != sb.uuid {
                    return Err(DeviceSetError::BaseUuidMismatch {
                        expected: expected.clone(),
                        found: sb.uuid,
                    });
                }
            }
            Ok(sb.size)
        })();
        if !was_active {
            self.deactivate_once(state, &self.base_name, false)?;
        }
        let fs_size = result?;
        // A growth interrupted after its record was written left the
        // filesystem smaller than the device: finish it.
        let unfinished = fs_size < state.set.base_size / 100 * 95;
        if self.options.base_size > state.set.base_size || unfinished {
            self.grow_base(state)?;
        }
        Ok(())
    }

    /// Grows the base device and its filesystem to `base_size`.
    pub(crate) fn grow_base(&self, state: &mut State) -> Result<()> {
        self.writable_pool(state)?;
        let new = self.options.base_size;
        let old = state.set.base_size;
        self.progress(&format!(
            "growing the base device from {old} to {new} bytes"
        ));
        // Record first: a filesystem smaller than its device is harmless, the reverse is not.
        let mut set = state.set.clone();
        set.base_size = new;
        state.store.write_set(&set)?;
        state.set = set;
        fail_point!("grow_base.after_write_set")?;
        self.deactivate_once(state, &self.base_name, false)?;
        let dev = self.activate(
            state,
            &self.base_name,
            state.set.base_thin_id,
            new,
            UdevFlags::PRIVATE,
        )?;
        let node = crate::dm::dm_node_path(dev);
        let grown = fsx::grow(
            state.set.filesystem,
            &node,
            &self.root.join("mnt-base-grow"),
            &state.set.mount_options,
        );
        let _ = self.deactivate_once(state, &self.base_name, false);
        grown?;
        fail_point!("grow_base.after_grow_fs")?;
        Ok(())
    }
}
