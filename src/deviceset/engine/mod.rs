//! The device set's engine: [`Config`] (what is fixed at open) with the
//! steps every operation shares, run on the locked [`State`].

mod activation;
mod autoextend;
mod base;
mod commit;
mod guard;
mod mounts;
mod pool;
mod recovery;
mod snapshot;
mod space;
mod usage;

pub(crate) use autoextend::{percent, CRITICAL_PERCENT};
pub(crate) use guard::{ClaimedId, OpenTransaction};
pub(crate) use mounts::mount_paths;
pub(crate) use pool::pool_status;
pub use pool::MAX_METADATA_BYTES;

use super::error::{DeviceSetError, Result};
use super::ids::ThinIdAllocator;
use super::options::{Options, StorageOptions};
use super::store::{DeviceRecord, Journal, MetadataStore, SetRecord, StoreError, Unresolved};
use crate::dm::SECTOR_SIZE;
use crate::dm::{Control, ControlOptions, Dev, DevId, DmError, ErrorKind, NodeMode};
use crate::loopdev::LoopDevice;
use crate::target::{BlockSize, PoolMessage, ThinId};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The set's mutable state, behind [`DeviceSet`](super::DeviceSet)'s lock.
pub(crate) struct State {
    /// The device-mapper control handle.
    pub(crate) ctl: Control,
    /// The records on disk.
    pub(crate) store: MetadataStore,
    /// The intent journal: adds, removes and record changes since the last
    /// fold into `store`'s files.
    pub(crate) journal: Journal,
    /// Journal intents of unknown outcome, left while the pool cannot be
    /// read or changed (degraded); their thin ids stay used.
    pub(crate) unresolved: Vec<Unresolved>,
    /// The set's record (base device, pool, options).
    pub(crate) set: SetRecord,
    /// Whether `set` has been written (false until the base device exists).
    pub(crate) set_written: bool,
    /// Every device's record, by id.
    pub(crate) devices: BTreeMap<String, DeviceRecord>,
    /// The thin ids in use.
    pub(crate) ids: ThinIdAllocator,
    /// The pool's transaction id as of the last commit.
    pub(crate) transaction_id: u64,
    /// The pool's device number (thin tables name it).
    pub(crate) pool_dev: Dev,
    /// (device id, mount point) → reference count.
    pub(crate) mounts: BTreeMap<(String, PathBuf), u32>,
    /// Loop devices we hold (autoclear); dropping them lets the kernel detach.
    pub(crate) loops: Vec<LoopDevice>,
    /// Set by shutdown: every later call fails.
    pub(crate) closed: bool,
    /// Thin ids damaged records may own: recovery never deletes them.
    pub(crate) damaged: recovery::DamagedClaims,
    /// The pool's event number when its status last showed it writable
    /// (`None` after a status that did not): a message whose reply carries
    /// the same number was committed with no mode change in between.
    pub(crate) writable_at_event: Option<u32>,
}

impl State {
    /// A state with the set's record and journal and nothing else yet: no
    /// devices or ids, nothing unresolved, no mounts or loops; `set_written`.
    pub(crate) fn new(
        ctl: Control,
        store: MetadataStore,
        journal: Journal,
        set: SetRecord,
    ) -> State {
        State {
            ctl,
            store,
            journal,
            unresolved: Vec::new(),
            set,
            set_written: true,
            devices: BTreeMap::new(),
            ids: ThinIdAllocator::new(),
            transaction_id: 0,
            pool_dev: Dev::default(),
            mounts: BTreeMap::new(),
            loops: Vec::new(),
            closed: false,
            damaged: recovery::DamagedClaims::default(),
            writable_at_event: None,
        }
    }

    /// Gives thin id `thin` back to the allocator, unless an intent of
    /// unknown outcome still names it: were the id taken by a new device,
    /// that old intent, settled after a crash, would act on the new
    /// device's thin.
    pub(crate) fn release_thin_id(&mut self, thin: u32) {
        if self.unresolved.iter().any(|u| u.thin_id() == thin) {
            log::info!("thin id {thin} stays used until its journal intent is settled");
            return;
        }
        let _ = self.ids.release(thin);
    }

    /// The state of a set opened only to work on its pool (the monitor's
    /// growth, under the set's lock): its record, no devices, the journal
    /// open only to read (the pool's growth never appends to it).
    pub(crate) fn for_pool(
        ctl: Control,
        store: MetadataStore,
        set: SetRecord,
    ) -> std::result::Result<State, StoreError> {
        let (journal, _) = store.read_journal()?;
        Ok(State::new(ctl, store, journal, set))
    }
}

/// What does not change after open: the set's settings and names.
pub(crate) struct Config {
    /// The set's root directory (canonical).
    pub(crate) root: PathBuf,
    /// The kernel-name prefix of every device of the set.
    pub(crate) prefix: String,
    /// The pool's device-mapper name.
    pub(crate) pool_name: String,
    /// The base device's device-mapper name.
    pub(crate) base_name: String,
    /// The pool's data block size.
    pub(crate) block_size: BlockSize,
    /// The options the set was opened with.
    pub(crate) options: Options,
    /// Opened to look only ([`DeviceSet::open_read_only`](super::DeviceSet::open_read_only)):
    /// no pool messages, no writes.
    pub(crate) read_only: bool,
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
            read_only: false,
        }
    }

    /// The control handle for this set's work: where udev runs, its events
    /// are waited for with `udev_sync` (at most `udev_timeout`), else
    /// bypassed (see [`set_control`]).
    pub(crate) fn control(&self) -> Result<Control> {
        set_control(self.options.udev_sync.then_some(self.options.udev_timeout))
    }

    /// The device-mapper name of device `id`.
    pub(crate) fn device_name(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }

    /// Reports a long step to the caller's progress callback and the log.
    pub(crate) fn progress(&self, msg: &str) {
        if let Some(p) = &self.options.progress {
            p(msg);
        }
        log::info!("{msg}");
    }

    /// Sends a message to the pool.
    pub(crate) fn message(
        &self,
        state: &mut State,
        msg: PoolMessage,
    ) -> std::result::Result<(), DmError> {
        self.message_event(state, msg).map(drop)
    }

    /// [`Config::message`], returning the pool's event number after it
    /// (see [`Config::committed`]).
    pub(crate) fn message_event(
        &self,
        state: &mut State,
        msg: PoolMessage,
    ) -> std::result::Result<u32, DmError> {
        debug_assert!(!self.read_only, "pool message {msg} from a read-only open");
        // Thin-pool messages never reply: no reply buffer to copy.
        state.ctl.send_message(
            DevId::Name(&self.pool_name),
            PoolMessage::SECTOR,
            &msg.to_string(),
        )
    }

    /// Moves the pool's transaction id to `new`: commits the open operation.
    pub(crate) fn set_transaction(&self, state: &mut State, new: u64) -> Result<()> {
        let current = state.transaction_id;
        self.message(state, PoolMessage::SetTransactionId { current, new })?;
        state.transaction_id = new;
        Ok(())
    }

    /// Deletes a thin device from the pool; one already gone is fine.
    pub(crate) fn delete_thin(&self, state: &mut State, thin_id: u32) -> Result<()> {
        self.delete_thin_event(state, thin_id).map(drop)
    }

    /// [`Config::delete_thin`], returning the pool's event number after the
    /// delete (`None` when the thin was gone already: nothing committed).
    pub(crate) fn delete_thin_event(&self, state: &mut State, thin_id: u32) -> Result<Option<u32>> {
        match self.message_event(state, PoolMessage::Delete(ThinId::new(thin_id)?)) {
            Ok(event) => Ok(Some(event)),
            Err(e) if e.kind() == Some(ErrorKind::NoData) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The record of a usable device (not unknown, not pending deletion).
    pub(crate) fn record<'a>(&self, state: &'a State, id: &str) -> Result<&'a DeviceRecord> {
        match state.devices.get(id) {
            Some(r) if r.deferred_delete => Err(DeviceSetError::PendingDeletion(id.to_string())),
            Some(r) => Ok(r),
            None => Err(DeviceSetError::UnknownDevice(id.to_string())),
        }
    }
}

/// A device-mapper control handle for a set: where udev runs, each
/// operation waits for udev's processing of its events (`udev_wait`: at most
/// that long) or, with `None`, bypasses udev (dmthin makes the nodes);
/// without udev, the handle's own mode. The one choice of node mode for
/// every set opened (writable, read-only, the monitor's growth).
pub(crate) fn set_control(udev_wait: Option<Duration>) -> Result<Control> {
    let mut ctl = Control::open_with(ControlOptions::default())?;
    if let NodeMode::Udev { .. } | NodeMode::UdevWatch { .. } = ctl.node_mode() {
        ctl.set_node_mode(match udev_wait {
            Some(timeout) => NodeMode::UdevWatch { timeout },
            None => NodeMode::Bypass,
        });
    }
    Ok(ctl)
}

/// Refuses calls once the set is shut down.
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
