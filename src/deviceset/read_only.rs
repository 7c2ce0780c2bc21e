//! [`ReadOnlySet`]: a look at a set another process owns (say, a running
//! `dmthin-snapshotter`), for `dmthin status`, `list` and `usage`.
//!
//! It takes no lock and changes nothing: no repair, no record written or
//! removed (not even the owner's leftover temp files), no pool message, no
//! device made or removed. Records are read beside the owner's writes,
//! which replace each file by a rename, so each record read is a whole old
//! or new one; a view is a snapshot that a concurrent change may straddle.
//! Space use is read live from the metadata device (see
//! `Config::read_usage_beside_owner`): a metadata snapshot would take a pool
//! message, and the owner may hold one itself.

use super::engine::{set_control, Config, State};
use super::error::{DeviceSetError, Result};
use super::ids::{max_id_len_for_prefix, ThinIdAllocator};
use super::lock::{LockHolder, SetLock};
use super::options::Options;
use super::report::{DeviceSummary, SetStatus};
use super::store::{MetadataStore, RecordProblem};
use super::usage_report::{DeviceUsage, SetUsage};
use crate::dm::DevId;
use crate::target::PoolStatus;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

/// A read-only view of an existing set, usable while another process owns
/// it. Made by [`DeviceSet::open_read_only`](super::DeviceSet::open_read_only).
pub struct ReadOnlySet {
    state: Mutex<State>,
    config: Config,
    problems: Vec<RecordProblem>,
    holder: Option<LockHolder>,
}

impl std::fmt::Debug for ReadOnlySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadOnlySet")
            .field("root", &self.config.root)
            .field("pool", &self.config.pool_name)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

impl ReadOnlySet {
    /// Reads the set at `root` (which must exist, with its pool set up)
    /// without locking or changing it; `prefix_of` gives the set's kernel-name
    /// prefix from its records (read through a first store) and root.
    pub(crate) fn open(
        root: &Path,
        prefix_of: impl Fn(&MetadataStore, &Path) -> Result<String>,
    ) -> Result<Self> {
        let root = root
            .canonicalize()
            .map_err(|e| DeviceSetError::InvalidOption {
                option: "root",
                reason: format!("{}: {e}", root.display()),
            })?;
        super::trust::check_dir(&root)?;
        let no_set = || DeviceSetError::InvalidOption {
            option: "root",
            reason: format!("no device set at {}", root.display()),
        };
        let probe = MetadataStore::open_read_only(&root, max_id_len_for_prefix(""))
            .map_err(|_| no_set())?;
        probe.read_set()?.ok_or_else(no_set)?;
        let prefix = prefix_of(&probe, &root)?;
        let store = MetadataStore::open_read_only(&root, max_id_len_for_prefix(&prefix))?;
        let mut report = store.load_all()?;
        let problems = std::mem::take(&mut report.problems);
        let set = report.set.take().ok_or_else(no_set)?;
        let options = Options::from_record(&set);
        let block_size = options.validate()?;
        let mut config = Config::new(root.clone(), prefix, options, block_size);
        config.read_only = true;
        // Nothing is made or removed, so no node is ever waited for.
        let ctl = set_control(None)?;
        // The journal's finished changes on top of the record files (a fold
        // racing this read shows the state a moment old, never a torn one).
        let (journal, replay) = store.open_journal()?;
        let mut devices = std::mem::take(&mut report.devices);
        replay.apply(&mut devices);
        let mut ids = ThinIdAllocator::new();
        for rec in devices.values() {
            let _ = ids.mark_used(rec.thin_id);
        }
        let mut state = State::new(ctl, store, journal, set);
        state.unresolved = replay.unresolved;
        state.devices = devices;
        state.ids = ids;
        let info = state
            .ctl
            .info(DevId::Name(&config.pool_name))
            .map_err(|e| DeviceSetError::PoolUnusable {
                pool: config.pool_name.clone(),
                reason: format!("it is not set up ({e}); a read-only open does not set it up"),
            })?;
        state.pool_dev = info.dev;
        if let Ok(PoolStatus::Active(s)) = config.any_pool_status(&mut state) {
            state.transaction_id = s.transaction_id;
        }
        // Mounts in our mount namespace; the owner's may not show.
        config.adopt_existing_mounts(&mut state)?;
        Ok(ReadOnlySet {
            state: Mutex::new(state),
            config,
            problems,
            holder: SetLock::holder(&root),
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| DeviceSetError::Closed)
    }

    /// The set's root directory.
    pub fn root(&self) -> &Path {
        &self.config.root
    }

    /// The pool's device-mapper name.
    pub fn pool_name(&self) -> &str {
        &self.config.pool_name
    }

    /// Who owned the set when it was opened (`None`: no one, or unknown).
    pub fn holder(&self) -> Option<&LockHolder> {
        self.holder.as_ref()
    }

    /// Damaged records found at open (skipped).
    pub fn problems(&self) -> &[RecordProblem] {
        &self.problems
    }

    /// Every device with its state, as [`DeviceSet::list`](super::DeviceSet::list).
    /// Mount points are those in this process's mount namespace.
    pub fn list(&self) -> Result<Vec<DeviceSummary>> {
        let mut state = self.lock()?;
        self.config.list(&mut state)
    }

    /// Pool usage and mode, as [`DeviceSet::status`](super::DeviceSet::status).
    pub fn status(&self) -> Result<SetStatus> {
        let mut state = self.lock()?;
        self.config.status(&mut state)
    }

    /// Bytes the pool has mapped for device `id` (`None` while inactive).
    pub fn mapped_bytes(&self, id: &str) -> Result<Option<u64>> {
        let mut state = self.lock()?;
        self.config.mapped_bytes(&mut state, id)
    }

    /// Space device `id` uses (`base`: the base device), read live.
    pub fn usage(&self, id: &str) -> Result<DeviceUsage> {
        let mut state = self.lock()?;
        self.config.usage(&mut state, id)
    }

    /// Space every device uses and the pool's totals, read live from the
    /// metadata device (`from_snapshot` is false).
    pub fn usage_all(&self) -> Result<SetUsage> {
        let mut state = self.lock()?;
        self.config.usage_all(&mut state)
    }
}

#[cfg(test)]
mod tests {
    use crate::deviceset::DeviceSet;
    use crate::testutil::Scratch;

    #[test]
    fn no_set_is_an_error_and_nothing_is_created() {
        let s = Scratch::new("ro-none");
        let root = s.path().join("set");
        std::fs::create_dir(&root).unwrap();
        let err = DeviceSet::open_read_only(&root).unwrap_err();
        assert!(err.to_string().contains("no device set at"), "{err}");
        assert_eq!(
            std::fs::read_dir(&root).unwrap().count(),
            0,
            "created files"
        );
        let missing = s.path().join("missing");
        assert!(DeviceSet::open_read_only(&missing).is_err());
        assert!(!missing.exists());
    }
}
