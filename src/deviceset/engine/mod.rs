//! The device set's engine: [`Config`] (what is fixed at open) with the
//! steps every operation shares, run on the locked [`State`].

mod activation;
mod base;
mod guard;
mod mounts;
mod pool;
mod recovery;
mod snapshot;

pub(crate) use guard::{ClaimedId, OpenTransaction};
pub(crate) use mounts::mount_paths;
pub use pool::MAX_METADATA_BYTES;

use super::error::{DeviceSetError, Result};
use super::ids::ThinIdAllocator;
use super::options::{Options, StorageOptions};
use super::store::{DeviceRecord, MetadataStore, SetRecord};
use crate::dm::SECTOR_SIZE;
use crate::dm::{Control, Dev, DevId, DmError, ErrorKind};
use crate::loopdev::LoopDevice;
use crate::target::{BlockSize, PoolMessage, ThinId};
use std::collections::BTreeMap;
use std::path::PathBuf;

pub(crate) struct State {
    pub(crate) ctl: Control,
    pub(crate) store: MetadataStore,
    pub(crate) set: SetRecord,
    /// Whether `set` has been written (false until the base device exists).
    pub(crate) set_written: bool,
    pub(crate) devices: BTreeMap<String, DeviceRecord>,
    pub(crate) ids: ThinIdAllocator,
    /// The pool's transaction id as of the last commit.
    pub(crate) transaction_id: u64,
    pub(crate) pool_dev: Dev,
    /// (device id, mount point) → reference count.
    pub(crate) mounts: BTreeMap<(String, PathBuf), u32>,
    /// Loop devices we hold (autoclear); dropping them lets the kernel detach.
    pub(crate) loops: Vec<LoopDevice>,
    pub(crate) closed: bool,
}

/// What does not change after open.
pub(crate) struct Config {
    pub(crate) root: PathBuf,
    pub(crate) prefix: String,
    pub(crate) pool_name: String,
    pub(crate) base_name: String,
    pub(crate) block_size: BlockSize,
    pub(crate) options: Options,
}

impl Config {
    /// The settings of the set at `root` (canonical), whose kernel names start with `prefix`.
    pub(crate) fn new(
        root: PathBuf,
        prefix: String,
        options: Options,
        block_size: BlockSize,
    ) -> Config {
        let pool_name = match &options.storage {
            StorageOptions::AdoptPool { name } => name.clone(),
            _ => format!("{prefix}pool"),
        };
        Config {
            base_name: format!("{prefix}base"),
            root,
            prefix,
            pool_name,
            block_size,
            options,
        }
    }

    pub(crate) fn device_name(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }

    pub(crate) fn progress(&self, msg: &str) {
        if let Some(p) = &self.options.progress {
            p(msg);
        }
        log::info!("{msg}");
    }

    pub(crate) fn message(
        &self,
        state: &mut State,
        msg: PoolMessage,
    ) -> std::result::Result<(), DmError> {
        // Thin-pool messages never reply: no reply buffer to copy.
        state.ctl.send_message(
            DevId::Name(&self.pool_name),
            PoolMessage::SECTOR,
            &msg.to_string(),
        )
    }

    pub(crate) fn set_transaction(&self, state: &mut State, new: u64) -> Result<()> {
        let current = state.transaction_id;
        self.message(state, PoolMessage::SetTransactionId { current, new })?;
        state.transaction_id = new;
        Ok(())
    }

    pub(crate) fn delete_thin(&self, state: &mut State, thin_id: u32) -> Result<()> {
        match self.message(state, PoolMessage::Delete(ThinId::new(thin_id)?)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == Some(ErrorKind::NoData) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) fn record<'a>(&self, state: &'a State, id: &str) -> Result<&'a DeviceRecord> {
        match state.devices.get(id) {
            Some(r) if r.deferred_delete => Err(DeviceSetError::PendingDeletion(id.to_string())),
            Some(r) => Ok(r),
            None => Err(DeviceSetError::UnknownDevice(id.to_string())),
        }
    }
}

pub(crate) fn check_open(state: &State) -> Result<()> {
    if state.closed {
        Err(DeviceSetError::Closed)
    } else {
        Ok(())
    }
}

/// Whole sectors in `bytes`.
pub(crate) fn sectors(bytes: u64) -> u64 {
    bytes / SECTOR_SIZE
}
