//! [`DeviceSet`]: the public face of the set. Each call takes the set's lock
//! and hands the locked state to the engine.

use super::engine::{check_open, Config, State};
use super::error::{DeviceSetError, Result};
use super::ids::max_id_len_for_prefix;
use super::lock::SetLock;
use super::options::{AutoextendOptions, Options};
use super::read_only::ReadOnlySet;
use super::report::{DeviceSummary, Growth, Presence, RemoveOutcome, SetStatus};
use super::store::{MetadataStore, RecordProblem};
use super::usage_report::{DeviceUsage, SetUsage};
use crate::deviceset::fail_point;
use crate::dm::Dev;
use crate::target::BlockSize;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// A thin pool with a base filesystem and one thin snapshot per caller id.
///
/// `Send + Sync`: calls from many threads serialise on an internal lock.
/// Every durable change is complete before a call returns.
pub struct DeviceSet {
    state: Mutex<State>,
    config: Config,
    problems: Vec<RecordProblem>,
    _lock: SetLock,
}

impl std::fmt::Debug for DeviceSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceSet")
            .field("root", &self.config.root)
            .field("pool", &self.config.pool_name)
            .finish_non_exhaustive()
    }
}

/// The kernel-name prefix of a set rooted at `root`: `dmthin-<maj>:<min>-<ino>-`.
pub fn name_prefix(root: &Path) -> std::io::Result<String> {
    let meta = std::fs::metadata(root)?;
    let dev = Dev::from_dev_t(meta.dev());
    Ok(format!(
        "dmthin-{}:{}-{}-",
        dev.major,
        dev.minor,
        meta.ino()
    ))
}

/// The prefix of the set at `root`, a failure to stat it reported as an invalid root.
fn root_prefix(root: &Path) -> Result<String> {
    name_prefix(root).map_err(|e| DeviceSetError::InvalidOption {
        option: "root",
        reason: format!("stat {}: {e}", root.display()),
    })
}

/// The kernel-name prefix an existing set was made with: recorded in its
/// set record, or (sets from before it was recorded) read off the name of the
/// pool it made. `None` for a new set or an unreadable record (the load
/// reports that).
fn recorded_prefix(store: &MetadataStore) -> Option<String> {
    let set = store.read_set().ok()??;
    if let Some(prefix) = set.name_prefix {
        return Some(prefix);
    }
    let derived = set.pool_name.strip_suffix("pool")?;
    (set.pool_owned && derived.starts_with("dmthin-")).then(|| derived.to_string())
}

/// The settings and the store of the writable set at `root` (canonical,
/// its lock held): its kernel names keep the prefix its set record holds
/// (see [`recorded_prefix`]; today's from the root's device and inode for a
/// new set), and the store's id limit follows that prefix. The one way a
/// writable set's engine is made: by [`DeviceSet::open`] and by the
/// monitor's growth.
pub(crate) fn open_config(
    root: PathBuf,
    options: Options,
    block_size: BlockSize,
) -> Result<(Config, MetadataStore)> {
    let mut prefix = root_prefix(&root)?;
    let mut store = MetadataStore::open(&root, max_id_len_for_prefix(&prefix))?;
    if let Some(recorded) = recorded_prefix(&store).filter(|p| *p != prefix) {
        log::info!("{}: kernel names keep the recorded prefix {recorded} (the root's device number changed; today's would be {prefix})", root.display());
        prefix = recorded;
        store = MetadataStore::open(&root, max_id_len_for_prefix(&prefix))?;
    }
    Ok((Config::new(root, prefix, options, block_size), store))
}

impl DeviceSet {
    /// Creates the set at `root`, or reopens it, repairing any operation a
    /// crash interrupted.
    pub fn open(root: impl AsRef<Path>, options: Options) -> Result<DeviceSet> {
        let root = root.as_ref();
        std::fs::create_dir_all(root).map_err(|e| DeviceSetError::InvalidOption {
            option: "root",
            reason: format!("cannot create {}: {e}", root.display()),
        })?;
        let _ = std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o700));
        let root = root
            .canonicalize()
            .map_err(|e| DeviceSetError::InvalidOption {
                option: "root",
                reason: format!("{}: {e}", root.display()),
            })?;
        super::trust::check_dir(&root)?;
        let block_size = options.validate()?;
        let lock = SetLock::acquire(&root)?;
        let (config, store) = open_config(root, options, block_size)?;
        let mut report = store.load_all()?;
        for p in &report.problems {
            log::warn!("skipping damaged record {}: {}", p.path.display(), p.reason);
        }
        let problems = std::mem::take(&mut report.problems);
        let state = config.open_state(store, report, &problems)?;
        Ok(DeviceSet {
            state: Mutex::new(state),
            config,
            problems,
            _lock: lock,
        })
    }

    /// Opens the existing set at `root` to look at it only, while another
    /// process may own it (a running `dmthin-snapshotter`, say): no lock is
    /// taken and nothing is repaired, written or sent to the pool. See
    /// [`ReadOnlySet`].
    pub fn open_read_only(root: impl AsRef<Path>) -> Result<ReadOnlySet> {
        ReadOnlySet::open(root.as_ref(), |store, root| match recorded_prefix(store) {
            Some(p) => Ok(p),
            None => root_prefix(root),
        })
    }

    /// The options an existing set at `root` was created with, read from its
    /// records (loop file sizes are the files' current sizes), or `None` when
    /// no set exists there yet. Lets a caller reopen a set without repeating
    /// its options.
    pub fn recorded_options(root: impl AsRef<Path>) -> Result<Option<Options>> {
        let root = root.as_ref();
        if !root
            .join(super::store::METADATA_DIR)
            .join(super::store::SET_FILE)
            .exists()
        {
            return Ok(None);
        }
        let prefix = root_prefix(root)?;
        let store = MetadataStore::open(root, max_id_len_for_prefix(&prefix))?;
        Ok(store.read_set()?.as_ref().map(Options::from_record))
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        let guard = self.state.lock().map_err(|_| DeviceSetError::Closed)?;
        check_open(&guard)?;
        Ok(guard)
    }

    /// The set's root directory.
    pub fn root(&self) -> &Path {
        &self.config.root
    }

    /// The pool's device-mapper name.
    pub fn pool_name(&self) -> &str {
        &self.config.pool_name
    }

    /// The device-mapper name a device id gets.
    pub fn device_name(&self, id: &str) -> String {
        self.config.device_name(id)
    }

    /// The device-mapper name of the base device.
    pub fn base_name(&self) -> &str {
        &self.config.base_name
    }

    /// Longest device id this set accepts (its kernel name must fit 127 bytes).
    pub fn max_id_len(&self) -> usize {
        max_id_len_for_prefix(&self.config.prefix)
    }

    /// Damaged records found at open (skipped; the rest of the set works).
    pub fn problems(&self) -> &[RecordProblem] {
        &self.problems
    }

    /// Creates device `id` as a thin snapshot of `parent` (the base device when `None`).
    pub fn add_device(&self, id: &str, parent: Option<&str>) -> Result<()> {
        self.add_device_sized(id, parent, None)
    }

    /// Like [`DeviceSet::add_device`], but `size` bytes (`None`: the
    /// parent's size). A size below the parent's is refused; above it, the
    /// new device's filesystem is grown to fill it before the call returns
    /// (a growth cut short by a crash is finished by the next open).
    pub fn add_device_sized(
        &self,
        id: &str,
        parent: Option<&str>,
        size: Option<u64>,
    ) -> Result<()> {
        let mut state = self.lock()?;
        self.config.add_device(&mut state, id, parent, size)
    }

    /// Deactivates device `id` (EBUSY retried), deletes it from the pool and frees its thin id.
    /// Refused while this set has it mounted. With [`Options::remove_discard`]
    /// (the default on loop files) its blocks are discarded first, so a
    /// loop data file gives them back to the host.
    pub fn remove_device(&self, id: &str) -> Result<()> {
        let mut guard = self.lock()?;
        self.config.settle_unresolved(&mut guard)?;
        self.config.record(&guard, id)?;
        // A discard first needs a writable pool: refused at once, before
        // the device is deactivated, when the pool cannot take it. Without
        // one the delete message finds out itself, and its error names the
        // pool's mode (one status read less per remove).
        if self.config.remove_discard(&guard) {
            self.config.writable_pool(&mut guard)?;
        }
        let mut guard = match self.config.deactivate_retrying(guard, &self.state, id) {
            Err(DeviceSetError::Busy { .. }) if self.config.options.deferred_removal => {
                let mut state = self.lock()?;
                return self.config.remove_device_deferred(&mut state, id).map(drop);
            }
            other => other?,
        };
        fail_point!("remove.after_deactivate")?;
        self.config.delete_device_without_status(&mut guard, id)
    }

    /// Like [`DeviceSet::remove_device`], but a device held open elsewhere is
    /// removed by the kernel once its last opener closes it, and deleted from the
    /// pool on a later call or open.
    pub fn remove_device_deferred(&self, id: &str) -> Result<RemoveOutcome> {
        let mut state = self.lock()?;
        self.config.remove_device_deferred(&mut state, id)
    }

    /// Finishes deferred removals whose devices have been closed since.
    pub fn cleanup_deferred(&self) -> Result<()> {
        let mut state = self.lock()?;
        self.config.finish_deferred_deletes(&mut state)
    }

    /// Activates device `id`; returns its `/dev/mapper` path.
    pub fn activate_device(&self, id: &str) -> Result<PathBuf> {
        let mut state = self.lock()?;
        self.config.activate_device(&mut state, id)
    }

    /// Deactivates device `id` (refused while mounted; EBUSY retried).
    pub fn deactivate_device(&self, id: &str) -> Result<()> {
        let guard = self.lock()?;
        match self.config.deactivate_retrying(guard, &self.state, id) {
            Err(DeviceSetError::Busy { .. }) if self.config.options.deferred_removal => {
                let mut state = self.lock()?;
                let name = self.config.device_name(id);
                Ok(self.config.deactivate_once(&mut state, &name, true)?)
            }
            other => other.map(drop),
        }
    }

    /// Deactivates device `id` unless something holds it open, in any mount
    /// namespace or process (the kernel's open count decides; no EBUSY
    /// retries). Returns whether it deactivated it: false when it was
    /// inactive or is open.
    pub fn deactivate_device_unless_open(&self, id: &str) -> Result<bool> {
        let mut state = self.lock()?;
        self.config.deactivate_unless_open(&mut state, id)
    }

    /// Mounts device `id` at `path`, activating it if needed. Mounting the same
    /// device at the same path again only counts a reference.
    pub fn mount_device(&self, id: &str, path: impl AsRef<Path>, read_only: bool) -> Result<()> {
        let mut state = self.lock()?;
        self.config
            .mount_device(&mut state, id, path.as_ref(), read_only)
    }

    /// Drops one reference to the mount of `id` at `path`; the last one unmounts
    /// it, and with `deactivate` also deactivates the device.
    pub fn unmount_device(&self, id: &str, path: impl AsRef<Path>, deactivate: bool) -> Result<()> {
        let guard = self.lock()?;
        self.config
            .unmount_device(guard, &self.state, id, path.as_ref(), deactivate)
    }

    /// Whether device `id` exists, and whether the set can tell: an add or
    /// a remove of it whose outcome is not yet settled against the pool
    /// makes it [`Presence::Uncertain`]. Unlike [`DeviceSet::has_device`],
    /// a closed set is an error, never "absent".
    pub fn presence(&self, id: &str) -> Result<Presence> {
        let state = self.lock()?;
        Ok(self.config.presence(&state, id))
    }

    /// Ids of devices whose add or remove has an outcome not yet settled
    /// against the pool (see [`Presence::Uncertain`]): a caller that
    /// numbers its devices must not reuse them.
    pub fn unsettled_ids(&self) -> Result<Vec<String>> {
        let state = self.lock()?;
        Ok(self.config.unsettled_ids(&state))
    }

    /// Whether device `id` exists (and is not being removed). `false` too
    /// when the set cannot tell (see [`DeviceSet::presence`]).
    pub fn has_device(&self, id: &str) -> bool {
        self.lock()
            .map(|s| self.config.record(&s, id).is_ok())
            .unwrap_or(false)
    }

    /// Whether device `id` exists and was marked initialized.
    pub fn has_initialized_device(&self, id: &str) -> bool {
        self.lock()
            .map(|s| {
                self.config
                    .record(&s, id)
                    .map(|r| r.initialized)
                    .unwrap_or(false)
            })
            .unwrap_or(false)
    }

    /// Whether device `id` is active.
    pub fn has_activated_device(&self, id: &str) -> bool {
        let Ok(mut state) = self.lock() else {
            return false;
        };
        if self.config.record(&state, id).is_err() {
            return false;
        }
        let name = self.config.device_name(id);
        state.ctl.exists(&name).unwrap_or(false)
    }

    /// Marks device `id` initialized (or not), durably.
    pub fn set_initialized(&self, id: &str, initialized: bool) -> Result<()> {
        let mut state = self.lock()?;
        self.config.set_initialized(&mut state, id, initialized)
    }

    /// Bytes the pool has mapped for device `id` (`None` while it is
    /// inactive): one status read of that device, cheaper than [`DeviceSet::list`].
    pub fn mapped_bytes(&self, id: &str) -> Result<Option<u64>> {
        let mut state = self.lock()?;
        self.config.mapped_bytes(&mut state, id)
    }

    /// Every device with its state.
    pub fn list(&self) -> Result<Vec<DeviceSummary>> {
        let mut state = self.lock()?;
        self.config.list(&mut state)
    }

    /// Runs fstrim on every mounted device of the set (the filesystems
    /// discard their free blocks, the pool passes the discards down) and
    /// reports what each trimmed and the bytes the data file gave back.
    pub fn trim(&self) -> Result<super::report::TrimReport> {
        let mut state = self.lock()?;
        self.config.trim(&mut state)
    }

    /// Pool usage and mode.
    pub fn status(&self) -> Result<SetStatus> {
        let mut state = self.lock()?;
        self.config.status(&mut state)
    }

    /// Grows the pool's data space to `new_data_size` bytes (loop files are
    /// grown; block devices must already be that large). Never shrinks.
    pub fn grow_pool(&self, new_data_size: u64) -> Result<()> {
        let mut state = self.lock()?;
        self.config.grow_pool(&mut state, new_data_size)?;
        self.heal(&mut state);
        Ok(())
    }

    /// After a growth: finishes what the pool's degraded state held back.
    /// The growth stands either way; a failure here is only logged, and the
    /// next open tries again.
    fn heal(&self, state: &mut State) {
        if let Err(e) = self.config.heal(state) {
            log::warn!(
                "pool {}: finishing held-back work failed: {e}",
                self.config.pool_name
            );
        }
    }

    /// Grows the pool's metadata device to `new_metadata_size` bytes: a loop
    /// file is extended in place, a block device must already be that big.
    /// The pool is then reloaded (suspend, resume) so the kernel takes the
    /// new space; a pool that had run out of metadata space (`ro`, without
    /// `needs_check`) becomes writable again. Shrinking is refused, and so is
    /// more than the kernel can use ([`MAX_METADATA_BYTES`](super::MAX_METADATA_BYTES), ~15.9 GiB).
    pub fn grow_pool_metadata(&self, new_metadata_size: u64) -> Result<()> {
        Config::check_metadata_size(new_metadata_size)?;
        let mut state = self.lock()?;
        self.config
            .grow_pool_metadata(&mut state, new_metadata_size)?;
        self.heal(&mut state);
        Ok(())
    }

    /// One autoextend check (what [`Monitor`](super::Monitor) runs under the
    /// set's lock): finishes a growth a crash interrupted, grows a loop-file
    /// pool's data or metadata that reached `options`' threshold (by its
    /// percentage, up to its cap and the host filesystem's free space), and
    /// sets the pool's low-water mark at the threshold. Returns the growths
    /// made; a pool on block devices is never grown (warning, then error at
    /// 95%).
    pub fn autoextend(&self, options: &AutoextendOptions) -> Result<Vec<Growth>> {
        let mut state = self.lock()?;
        let grown = self.config.autoextend(&mut state, options)?;
        if !grown.is_empty() {
            self.heal(&mut state);
        }
        Ok(grown)
    }

    /// The autoextend options remembered for this set, if any were.
    pub fn autoextend_options(&self) -> Result<Option<AutoextendOptions>> {
        let state = self.lock()?;
        Ok(self.config.growth_log(&state)?.options)
    }

    /// Remembers `options` as this set's autoextend options.
    pub fn remember_autoextend_options(&self, options: &AutoextendOptions) -> Result<()> {
        options.validate()?;
        let state = self.lock()?;
        self.config.remember_autoextend(&state, options)
    }

    /// The growths the set's autoextend log holds, oldest first.
    pub fn growth_history(&self) -> Result<Vec<Growth>> {
        let state = self.lock()?;
        Ok(self.config.growth_log(&state)?.history)
    }

    /// Unmounts what this set mounted, deactivates every device, and removes the
    /// pool if the set created it. The set cannot be used afterwards.
    pub fn shutdown(&self) -> Result<()> {
        let mut state = self.lock()?;
        self.config.shutdown(&mut state)
    }

    /// Space device `id` uses (`base`: the base device): mapped, exclusive
    /// and shared bytes, read from a metadata snapshot of the pool (see
    /// [`DeviceSet::usage_all`]).
    pub fn usage(&self, id: &str) -> Result<DeviceUsage> {
        let mut state = self.lock()?;
        self.config.usage(&mut state, id)
    }

    /// Space the base and every device use, and the pool's totals, read
    /// in-process from the pool's metadata device: a metadata snapshot is
    /// reserved for the read and always released (a read-only pool is read
    /// as it is). Other calls on the set wait meanwhile; the pool's writers
    /// do not.
    pub fn usage_all(&self) -> Result<SetUsage> {
        let mut state = self.lock()?;
        self.config.usage_all(&mut state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn device_set_is_send_and_sync() {
        assert_send_sync::<DeviceSet>();
    }

    #[test]
    fn prefix_names_device_and_inode() {
        let dir = std::env::temp_dir();
        let p = name_prefix(&dir).unwrap();
        assert!(p.starts_with("dmthin-") && p.ends_with('-'), "{p}");
        assert!(p.len() <= 7 + 12 + 1 + 20 + 1);
        // A sha256 hex id always fits.
        assert!(max_id_len_for_prefix(&p) >= 64);
    }

    #[test]
    fn open_config_keeps_the_recorded_prefix() {
        let s = crate::testutil::Scratch::new("open-config");
        let root = s.path().canonicalize().unwrap();
        let options = Options::default();
        let bs = options.validate().unwrap();
        // A new set: today's prefix, from the root.
        let (config, store) = open_config(root.clone(), options.clone(), bs).unwrap();
        let today = name_prefix(&root).unwrap();
        assert_eq!(config.prefix, today);
        assert_eq!(config.pool_name, format!("{today}pool"));
        // A set whose root moved: the prefix its record holds.
        let mut record = crate::deviceset::store::tests::set_record();
        record.name_prefix = Some("dmthin-8:1-1234-".into());
        store.write_set(&record).unwrap();
        let (config, _) = open_config(root.clone(), options.clone(), bs).unwrap();
        assert_eq!(config.prefix, "dmthin-8:1-1234-");
        assert_eq!(
            (config.pool_name.as_str(), config.base_name.as_str()),
            ("dmthin-8:1-1234-pool", "dmthin-8:1-1234-base")
        );
        assert_eq!(config.device_name("a"), "dmthin-8:1-1234-a");
        // From before the prefix was recorded: read off the pool's name.
        record.name_prefix = None;
        record.pool_name = "dmthin-8:1-99-pool".into();
        store.write_set(&record).unwrap();
        let (config, _) = open_config(root, options, bs).unwrap();
        assert_eq!(config.prefix, "dmthin-8:1-99-");
    }
}
