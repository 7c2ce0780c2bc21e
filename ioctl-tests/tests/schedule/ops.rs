//! One seed's run ([`Run`]): random operations on the set, each checked
//! against the model, with an error injected at a random fail point of
//! the operation now and then.
//!
//! Every answer is compared with the model: a call that returned `Ok` is
//! acknowledged and must hold from then on; a call that returned an error
//! must have been wholly done or wholly undone, which the set's own view
//! ([`DeviceSet::presence`], its list) and the kernel's (mounts, the pool's
//! thin ids) must agree on; [`Presence::Uncertain`] only where the outcome
//! could not be known (a commit check that failed, a pool that stopped
//! taking changes, a degraded open).

use super::model::{Counts, Dev, Entry, Model, Rng};
use super::world::{World, DATA_CAP, META_CAP};
use crate::common::MIB;
use dmthin::deviceset::failpoint::{self, Mode, FAIL_POINTS};
use dmthin::deviceset::{DeviceSet, DeviceSetError, Presence, RemoveOutcome};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

pub type Res<T> = dmthin::deviceset::Result<T>;

/// Fail points an operation meets, by the prefixes of their names.
pub fn points(prefixes: &[&str]) -> Vec<&'static str> {
    FAIL_POINTS
        .iter()
        .copied()
        .filter(|p| prefixes.iter().any(|pre| p.starts_with(pre)))
        .collect()
}

/// The fail point groups of the operations, by the operation's name.
pub fn group(op: &str) -> &'static [&'static str] {
    match op {
        "add" => &["add."],
        "add_sized" => &["add.", "add_sized."],
        "remove" => &["remove."],
        "remove_deferred" => &["remove_deferred."],
        "cleanup" => &["cleanup_deferred.", "remove.after_"],
        "activate" => &["activate."],
        "deactivate" => &["deactivate."],
        "mount" => &["mount.", "activate."],
        "unmount" => &["unmount.", "deactivate."],
        "set_initialized" => &["set_initialized."],
        "grow_pool" => &["grow_pool."],
        "grow_meta" => &["grow_pool_metadata."],
        "open" => &["resolve.", "fold.", "cleanup_deferred."],
        "shutdown" => &["fold."],
        other => panic!("no fail point group for {other}"),
    }
}

/// An in-process fail point armed in error mode; disarmed when dropped
/// (a panic included).
struct Armed;

impl Armed {
    fn new(point: &'static str) -> Armed {
        failpoint::set(Some((point, Mode::Error)));
        Armed
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        failpoint::set(None);
    }
}

/// Whether error `e` may leave an add or a remove of unknown outcome: a
/// commit check that could not tell, or a real failure of the pool; any
/// other injected error happens where the set knows what it did.
fn may_be_unknown(e: &DeviceSetError) -> bool {
    match e {
        DeviceSetError::Injected { point, .. } => point.ends_with("commit_check"),
        _ => true,
    }
}

/// A divergence: the set's answer disagrees with the model.
macro_rules! diverged {
    ($run:expr, $($arg:tt)*) => {{
        let msg = format!($($arg)*);
        $run.note(format!("DIVERGED: {msg}"));
        panic!("divergence: {msg}");
    }};
}
pub(crate) use diverged;

/// One seed's run on a world.
pub struct Run<'a> {
    pub world: &'a mut World,
    pub model: Model,
    pub rng: Rng,
    pub counts: &'a mut Counts,
    /// What happened, printed when the seed diverges.
    pub log: &'a mut Vec<String>,
    /// Percent of operations run with an error armed at one of their points.
    pub inject_pct: u64,
    /// Ids that may be pending deletion (an add of one may be refused).
    pub pending: BTreeSet<String>,
    /// The point the next [`Run::armed`] arms, whatever the dice say.
    pub force_point: Option<&'static str>,
    /// Operations and fail points not to run (a known divergence, while
    /// looking for others): chosen as usual, so other choices stay the same.
    pub skip: Vec<String>,
    started: std::time::Instant,
}

impl<'a> Run<'a> {
    pub fn new(
        world: &'a mut World,
        seed: u64,
        counts: &'a mut Counts,
        log: &'a mut Vec<String>,
    ) -> Run<'a> {
        Run {
            world,
            model: Model::new(seed),
            rng: Rng::new(seed),
            counts,
            log,
            inject_pct: 30,
            pending: BTreeSet::new(),
            force_point: None,
            skip: Vec::new(),
            started: std::time::Instant::now(),
        }
    }

    /// Logs a step, with the milliseconds since the seed began.
    pub fn note(&mut self, line: String) {
        let ms = self.started.elapsed().as_millis();
        for said in super::model::trace::take() {
            self.log.push(format!("{:9}  {said}", ""));
        }
        self.log.push(format!("{ms:6} ms  {line}"));
    }

    /// Whether `DMTHIN_SCHEDULE_SKIP` names this operation or fail point.
    pub fn skipped(&self, what: &str) -> bool {
        self.skip.iter().any(|s| s == what)
    }

    pub fn set(&self) -> &DeviceSet {
        self.world.set()
    }

    /// Runs `f` on the set, with an error armed (`inject_pct` of the time)
    /// at a random point of `op`'s group; counts what was injected.
    pub fn armed<T: std::fmt::Debug>(
        &mut self,
        op: &str,
        what: &str,
        f: impl FnOnce(&DeviceSet) -> Res<T>,
    ) -> Res<T> {
        let point = match self.force_point.take() {
            Some(p) => Some(p),
            None if self.rng.percent(self.inject_pct) => self.rng.pick(&points(group(op))),
            None => None,
        };
        let point = match point {
            Some(p) if self.skipped(p) => {
                self.note(format!("(not arming {p}: skipped)"));
                None
            }
            other => other,
        };
        let armed = point.map(Armed::new);
        let r = f(self.world.set());
        drop(armed);
        let at = point
            .map(|p| format!(" [error armed at {p}]"))
            .unwrap_or_default();
        self.note(format!("{what}{at} -> {r:?}"));
        if let Some(p) = point {
            match &r {
                Err(DeviceSetError::Injected { point: hit, .. }) => {
                    assert_eq!(*hit, p, "injected at another point");
                    self.counts.add("injected errors (reached)");
                    self.counts.add(format!("  injected at {p}"));
                }
                _ => self.counts.add("injected errors (armed, not reached)"),
            }
        }
        r
    }

    /// After an operation that must have settled every intent (a
    /// successful add or remove, a healthy open, a heal): none is left.
    pub fn assert_settled(&mut self, after: &str) {
        if self.world.degraded() {
            return;
        }
        let left = self.set().unsettled_ids().unwrap();
        if !left.is_empty() {
            diverged!(
                self,
                "after {after} on a writable pool, unsettled ids remain: {left:?}"
            );
        }
    }

    /// The set's presence answer for every id the model knows agrees with
    /// it; an uncertain entry takes the set's answer once it is certain.
    pub fn check_presence(&mut self) {
        let ids: Vec<String> = self.model.entries.keys().cloned().collect();
        for id in ids {
            let said = self.set().presence(&id).unwrap();
            let entry = self.model.entries[&id].clone();
            match (entry, said) {
                (Entry::Present(_), Presence::Present) | (Entry::Absent, Presence::Absent) => {}
                (Entry::Uncertain(_), Presence::Uncertain) => {}
                (Entry::Uncertain(d), Presence::Present) => {
                    self.note(format!("{id}: settled present"));
                    self.model.entries.insert(id, Entry::Present(d));
                }
                (Entry::Uncertain(d), Presence::Absent) => {
                    self.note(format!("{id}: settled absent"));
                    self.gone(&id, &d);
                }
                (e, said) => diverged!(self, "{id}: the model has {e:?}, the set says {said:?}"),
            }
        }
    }

    /// Marks `id` absent, its thin id freed.
    pub fn gone(&mut self, id: &str, d: &Dev) {
        if let Some(t) = d.thin {
            self.world.freed_thins.insert(t);
        }
        self.model.entries.insert(id.to_string(), Entry::Absent);
        self.model.mounted.remove(id);
    }

    /// The outcome of an operation on `id` that returned `e` (or whose
    /// process died): wholly done or undone as the set now says, uncertain
    /// only when `unknown` allows. `dev` is the device if present.
    pub fn adopt(&mut self, id: &str, dev: Dev, unknown: bool, why: &str) {
        let said = self.set().presence(id).unwrap();
        self.note(format!("{id}: after {why}, the set says {said:?}"));
        match said {
            Presence::Present => {
                self.model
                    .entries
                    .insert(id.to_string(), Entry::Present(dev));
            }
            Presence::Absent => self.gone(id, &dev),
            Presence::Uncertain if unknown => {
                self.counts.add("uncertain outcomes");
                self.model
                    .entries
                    .insert(id.to_string(), Entry::Uncertain(dev));
            }
            Presence::Uncertain => {
                diverged!(
                    self,
                    "{id} is uncertain after {why}, whose outcome the set knows"
                )
            }
        }
    }

    /// The set's list and the kernel's mounts against the model: every
    /// present device listed whole (parent, size, thin id), nothing else of
    /// this seed listed, mounts counted by the set exactly where the model
    /// has them (`adopt_mounts`: after a crash of an operation that may
    /// have mounted or unmounted, the set's word is taken), and no mount
    /// under the set's directory the set does not count.
    pub fn reconcile(&mut self, adopt_mounts: bool) {
        let prefix = format!("s{}-", self.model.seed);
        let list = self.set().list().unwrap();
        let mut set_mounts = BTreeMap::new();
        let mut counted = BTreeSet::new();
        for s in &list {
            counted.extend(s.mount_points.iter().cloned());
            if !s.id.starts_with(&prefix) {
                continue;
            }
            match self.model.entries.get(&s.id).cloned() {
                Some(Entry::Present(mut d)) => {
                    if s.parent != d.parent || s.size != d.size {
                        diverged!(
                            self,
                            "{} is listed with parent {:?} size {}, the model has {:?} {}",
                            s.id,
                            s.parent,
                            s.size,
                            d.parent,
                            d.size
                        );
                    }
                    if d.initialized != s.initialized {
                        diverged!(
                            self,
                            "{} is listed initialized={}, the model has {}",
                            s.id,
                            s.initialized,
                            d.initialized
                        );
                    }
                    if d.thin.is_none() {
                        if self.world.freed_thins.remove(&s.thin_id) {
                            self.counts.add("thin ids reused");
                        }
                        d.thin = Some(s.thin_id);
                        self.model.entries.insert(s.id.clone(), Entry::Present(d));
                    }
                    if let Some(p) = s.mount_points.first() {
                        set_mounts.insert(s.id.clone(), p.clone());
                    }
                }
                other => diverged!(self, "{} is listed, the model has {other:?}", s.id),
            }
        }
        for (id, e) in &self.model.entries {
            if matches!(e, Entry::Present(_)) && !list.iter().any(|s| s.id == *id) {
                diverged!(self, "acknowledged device {id} is missing from the list");
            }
        }
        if adopt_mounts {
            self.model.mounted = set_mounts;
        } else if set_mounts != self.model.mounted {
            diverged!(
                self,
                "the set counts mounts {set_mounts:?}, the model has {:?}",
                self.model.mounted
            );
        }
        let kernel = self.world.kernel_mounts();
        let stray: Vec<_> = kernel.difference(&counted).collect();
        if !stray.is_empty() {
            diverged!(self, "mounted but not counted by the set: {stray:?}");
        }
    }

    /// No device of the set is left suspended or without a table (a
    /// failed reload or activation must undo itself). One left suspended is
    /// resumed so the run cannot hang, and the divergence noted.
    pub fn check_devices(&mut self, after: &str) {
        let stuck = self.world.stuck_devices();
        if !stuck.is_empty() {
            diverged!(self, "after {after}: devices left {stuck:?}");
        }
    }

    // ---- the operations ----

    /// Adds a device (a new id, or one removed earlier in the seed),
    /// from the base or from a present device; sometimes bigger than its parent.
    pub fn add(&mut self) {
        let reuse = self.rng.percent(25);
        let again = reuse
            .then(|| self.rng.pick(&self.model.absent_ids()))
            .flatten();
        let id = match again.filter(|_| !self.skipped("reuse_id")) {
            Some(id) => {
                self.counts.add("device ids reused");
                id
            }
            None => self.model.new_id(),
        };
        let parent = if self.rng.percent(50) {
            None
        } else {
            self.rng.pick(&self.model.fs_ids(None))
        };
        let mut dev = self.model.child_of(parent.as_deref());
        let sized = self.rng.percent(8);
        if sized {
            dev.size += 16 * MIB;
        }
        self.add_as(&id, parent.as_deref(), dev, sized);
    }

    /// Adds `id` as `dev` (a snapshot of `parent`).
    pub fn add_as(&mut self, id: &str, parent: Option<&str>, dev: Dev, sized: bool) -> bool {
        let size = dev.size;
        let what = format!("add {id} from {parent:?} size {} MiB", size / MIB);
        let op = if sized { "add_sized" } else { "add" };
        self.counts.add(format!("op {op}"));
        let r = self.armed(op, &what, |s| {
            if sized {
                s.add_device_sized(id, parent, Some(size))
            } else {
                s.add_device(id, parent)
            }
        });
        match r {
            Ok(()) => {
                self.model
                    .entries
                    .insert(id.to_string(), Entry::Present(dev));
                self.assert_settled("an add");
                true
            }
            Err(e) => {
                let was_uncertain = matches!(self.model.entries.get(id), Some(Entry::Uncertain(_)));
                let known_refusal = match &e {
                    DeviceSetError::LowSpace { .. } => true,
                    DeviceSetError::PoolUnusable { .. } => self.world.degraded(),
                    DeviceSetError::DeviceExists(_) => was_uncertain,
                    DeviceSetError::PendingDeletion(_) => self.pending.contains(id),
                    DeviceSetError::Injected { .. } => true,
                    _ => false,
                };
                if !known_refusal {
                    diverged!(self, "{what} failed unexpectedly: {e}");
                }
                if let DeviceSetError::DeviceExists(_) = e {
                    // The earlier add of unknown outcome was settled: made.
                    self.check_presence();
                    return false;
                }
                self.adopt(id, dev, may_be_unknown(&e), &what);
                self.check_devices(&what);
                false
            }
        }
    }

    /// Removes a present device: at once, or deferred while it is held open.
    /// A mounted one must be refused.
    pub fn remove(&mut self) {
        let Some(id) = self.rng.pick(&self.model.present_ids(None)) else {
            return;
        };
        let mounted = self.model.mounted.contains_key(&id);
        let deferred = !mounted && self.rng.percent(25);
        self.remove_id(&id, deferred);
    }

    pub fn remove_id(&mut self, id: &str, deferred: bool) {
        let mounted = self.model.mounted.contains_key(id);
        let dev = self.model.present(id).cloned().expect("present");
        let what = format!(
            "remove {id}{}",
            if deferred { " deferred, held open" } else { "" }
        );
        let (r, holder) = if deferred {
            self.counts.add("op remove_deferred (held open)");
            let node = match self.set().activate_device(id) {
                Ok(n) => n,
                Err(e) => diverged!(self, "activating {id} to hold it: {e}"),
            };
            let holder = std::fs::File::open(&node).unwrap();
            let r = self.armed("remove_deferred", &what, |s| s.remove_device_deferred(id));
            (r.map(Some), Some(holder))
        } else {
            self.counts.add("op remove");
            (
                self.armed("remove", &what, |s| s.remove_device(id))
                    .map(|()| None),
                None,
            )
        };
        drop(holder);
        match r {
            Ok(outcome) => {
                if mounted {
                    diverged!(self, "{what}: removed while mounted");
                }
                if deferred {
                    if outcome != Some(RemoveOutcome::Deferred) {
                        diverged!(self, "{what}: {outcome:?}, not deferred while held");
                    }
                    self.counts.add("deferred deletes");
                    self.pending.insert(id.to_string());
                }
                self.gone(id, &dev);
                self.assert_settled("a remove");
            }
            Err(DeviceSetError::Mounted { .. }) if mounted => {
                self.check_presence();
            }
            Err(e) => {
                let known_refusal = match &e {
                    DeviceSetError::PoolUnusable { .. } => self.world.degraded(),
                    DeviceSetError::Injected { .. } => true,
                    _ => false,
                };
                if !known_refusal {
                    diverged!(self, "{what} failed unexpectedly: {e}");
                }
                self.pending.insert(id.to_string());
                self.adopt(id, dev, may_be_unknown(&e), &what);
                self.check_devices(&what);
            }
        }
    }

    /// Finishes deferred deletes (their devices closed since).
    pub fn cleanup(&mut self) {
        self.counts.add("op cleanup_deferred");
        self.wait_pending_closed();
        let r = self.armed("cleanup", "cleanup_deferred", |s| s.cleanup_deferred());
        match r {
            Ok(()) => {
                self.pending.clear();
                self.assert_settled("cleanup_deferred");
            }
            Err(DeviceSetError::PoolUnusable { .. }) if self.world.degraded() => {}
            Err(DeviceSetError::Injected { .. }) => self.check_devices("cleanup_deferred"),
            Err(e) => diverged!(self, "cleanup_deferred failed unexpectedly: {e}"),
        }
        self.check_presence();
    }

    /// Waits until the kernel has removed the devices of deferred removals.
    pub fn wait_pending_closed(&mut self) {
        let pending = self.pending.clone();
        for id in pending
            .iter()
            .filter(|id| matches!(self.model.entries.get(*id), Some(Entry::Absent)))
        {
            let name = self.set().device_name(id);
            let t0 = std::time::Instant::now();
            while crate::common::sh(&format!("dmsetup info {name} >/dev/null 2>&1")).0 {
                if t0.elapsed().as_secs() > 10 {
                    diverged!(self, "{name} not removed 10 s after its holder closed it");
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }

    pub fn activate(&mut self) {
        let Some(id) = self.rng.pick(&self.model.present_ids(None)) else {
            return;
        };
        self.counts.add("op activate");
        let what = format!("activate {id}");
        match self.armed("activate", &what, |s| s.activate_device(&id)) {
            Ok(node) if !node.exists() => diverged!(self, "{what}: {} missing", node.display()),
            Ok(_) => {}
            Err(DeviceSetError::Injected { .. }) => self.check_devices(&what),
            Err(e) => diverged!(self, "{what} failed unexpectedly: {e}"),
        }
        self.check_presence();
    }

    pub fn deactivate(&mut self) {
        let Some(id) = self.rng.pick(&self.model.present_ids(None)) else {
            return;
        };
        self.counts.add("op deactivate");
        let mounted = self.model.mounted.contains_key(&id);
        let what = format!("deactivate {id}");
        match self.armed("deactivate", &what, |s| s.deactivate_device(&id)) {
            Ok(()) if mounted => diverged!(self, "{what}: deactivated while mounted"),
            Ok(()) => {}
            Err(DeviceSetError::Mounted { .. }) if mounted => {}
            Err(DeviceSetError::Injected { .. }) => self.check_devices(&what),
            Err(e) => diverged!(self, "{what} failed unexpectedly: {e}"),
        }
        self.check_presence();
    }

    /// Mounts a device (if it is not), writes a file through the mount and
    /// syncs it; then unmounts it most of the time.
    pub fn mount_write(&mut self) {
        let Some(id) = self.rng.pick(&self.model.fs_ids(None)) else {
            return;
        };
        if !self.model.mounted.contains_key(&id) && !self.mount(&id) {
            return;
        }
        let path = self.model.mounted[&id].clone();
        let salt = self.rng.next_u64();
        let (name, text) = self.model.new_file(&id, salt);
        if let Err(e) = write_synced(&path, &name, &text) {
            diverged!(self, "writing {name} on {id} at {}: {e}", path.display());
        }
        self.note(format!("wrote {name} on {id}"));
        self.counts.add("files written and synced");
        if let Some(Entry::Present(d)) = self.model.entries.get_mut(&id) {
            d.files.insert(name, text);
        }
        if self.rng.percent(60) {
            self.unmount_id(&id);
        }
    }

    /// Mounts `id` read-write at its mount point; whether it is mounted after.
    pub fn mount(&mut self, id: &str) -> bool {
        self.counts.add("op mount");
        let path = self.world.mnt(id);
        let what = format!("mount {id}");
        match self.armed("mount", &what, |s| s.mount_device(id, &path, false)) {
            Ok(()) => {
                self.model.mounted.insert(id.to_string(), path);
                true
            }
            Err(DeviceSetError::Injected { .. }) => {
                self.check_devices(&what);
                self.reconcile(false);
                false
            }
            Err(DeviceSetError::PoolUnusable { .. }) if self.world.degraded() => false,
            Err(e) => diverged!(self, "{what} failed unexpectedly: {e}"),
        }
    }

    pub fn unmount(&mut self) {
        let mounted: Vec<String> = self.model.mounted.keys().cloned().collect();
        if let Some(id) = self.rng.pick(&mounted) {
            self.unmount_id(&id);
        }
    }

    /// Unmounts `id` (and deactivates it, half of the time).
    pub fn unmount_id(&mut self, id: &str) {
        self.counts.add("op unmount");
        let path = self.model.mounted[id].clone();
        let deactivate = self.rng.percent(50);
        let what = format!("unmount {id} deactivate={deactivate}");
        match self.armed("unmount", &what, |s| {
            s.unmount_device(id, &path, deactivate)
        }) {
            Ok(()) => {
                self.model.mounted.remove(id);
            }
            Err(DeviceSetError::Injected { .. }) => {
                self.check_devices(&what);
                self.reconcile(true);
            }
            Err(e) => diverged!(self, "{what} failed unexpectedly: {e}"),
        }
    }

    pub fn set_initialized(&mut self) {
        let Some(id) = self.rng.pick(&self.model.present_ids(None)) else {
            return;
        };
        self.counts.add("op set_initialized");
        let what = format!("set_initialized {id}");
        let r = self.armed("set_initialized", &what, |s| s.set_initialized(&id, true));
        let now = self.set().has_initialized_device(&id);
        match r {
            Ok(()) if !now => diverged!(self, "{what}: acknowledged, but not initialized"),
            Ok(()) => {}
            Err(DeviceSetError::Injected { .. }) => {}
            Err(e) => diverged!(self, "{what} failed unexpectedly: {e}"),
        }
        if let Some(Entry::Present(d)) = self.model.entries.get_mut(&id) {
            d.initialized = now;
        }
    }

    /// Grows the pool's data (up to [`DATA_CAP`]) or metadata (up to
    /// [`META_CAP`]); at the cap, or on fixed-size disks, a reload at the
    /// same size. A growth heals a degraded set when the pool allows.
    pub fn grow(&mut self) {
        let meta = self.rng.percent(40);
        let st = self.set().status().unwrap();
        let on_files = self.world.disks.is_none();
        let (op, size) = if meta {
            let file = self.world.path().join("devicemapper/metadata");
            let now = std::fs::metadata(&file)
                .map(|m| m.len())
                .unwrap_or(16 * MIB);
            let to = if on_files {
                (now + MIB).min(META_CAP).max(now)
            } else {
                now
            };
            ("grow_meta", to)
        } else {
            let to = if on_files {
                (st.data_total + 4 * MIB).min(DATA_CAP).max(st.data_total)
            } else {
                st.data_total
            };
            ("grow_pool", to)
        };
        if self.skipped(op) {
            self.note(format!("({op} skipped)"));
            return;
        }
        self.counts.add(format!("op {op}"));
        let what = format!("{op} to {} MiB", size / MIB);
        let r = self.armed(op, &what, |s| {
            if meta {
                s.grow_pool_metadata(size)
            } else {
                s.grow_pool(size)
            }
        });
        match r {
            Ok(()) => self.assert_settled(&what),
            Err(DeviceSetError::Injected { .. }) => self.check_devices(&what),
            Err(e) => diverged!(self, "{what} failed unexpectedly: {e}"),
        }
        self.check_presence();
    }

    /// A crash (the set dropped) and a reopen, sometimes with an error
    /// injected during the open's repair first (that open fails; the next
    /// one must work).
    pub fn reopen(&mut self) {
        self.counts.add("crashes (in-process) and reopens");
        self.world.crash();
        if self.rng.percent(self.inject_pct) {
            if let Some(p) = self
                .rng
                .pick(&points(group("open")))
                .filter(|p| !self.skipped(p))
            {
                let armed = Armed::new(p);
                let r = self.world.open();
                drop(armed);
                self.note(format!("reopen [error armed at {p}] -> {r:?}"));
                match r {
                    Ok(()) => {
                        self.counts.add("injected errors (armed, not reached)");
                        self.world.crash();
                    }
                    Err(DeviceSetError::Injected { .. }) => {
                        self.counts.add("injected errors (reached)");
                        self.counts.add(format!("  injected at {p}"));
                    }
                    Err(e) => diverged!(self, "open with {p} armed failed otherwise: {e}"),
                }
            }
        }
        self.reopened("a reopen", false);
    }

    /// Opens the set after a crash and checks it against the model:
    /// presence, the list, settled when the pool is writable.
    pub fn reopened(&mut self, after: &str, adopt_mounts: bool) {
        let t = std::time::Instant::now();
        if let Err(e) = self.world.open() {
            diverged!(self, "the set does not reopen after {after}: {e}");
        }
        self.counts
            .time("  (DeviceSet::open)", t.elapsed().as_secs_f64());
        let degraded = self.world.degraded();
        self.note(format!(
            "reopened after {after} (pool {})",
            self.world.mode()
        ));
        if degraded {
            self.counts
                .add(format!("degraded opens ({})", self.world.mode()));
        }
        self.check_devices(after);
        self.check_presence();
        self.assert_settled(&format!("an open after {after}"));
        self.reconcile(adopt_mounts);
    }
}

/// Writes `name` with `text` in directory `dir` and syncs file and directory.
pub fn write_synced(dir: &Path, name: &str, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::File::create(dir.join(name))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}
