//! [`Monitor`]: grows a set's loop-file pool before it fills, woken by the
//! kernel's low-water event.
//!
//! The monitor holds its own device-mapper control fd and no lock while it
//! waits: `ARM_POLL`, then `poll()` on the control fd (any dm event wakes
//! it; the pool's low-water mark is set at the threshold, so its event
//! comes when use reaches it) with a slow timer as the fallback (metadata
//! use has no event of its own at the threshold). Each wake reads the
//! pool's status with `noflush` (any dm event on the host wakes it, and a
//! plain status would commit the pool's metadata each time); only when
//! data or metadata use reached the threshold does it take the set's lock
//! (opening the set, or through the caller's open set) and run
//! [`DeviceSet::autoextend`].

use super::engine::{percent, pool_status, Config, State, CRITICAL_PERCENT};
use super::error::{DeviceSetError, Result};
use super::lock::{LockError, SetLock};
use super::options::{AutoextendOptions, Options, StorageOptions};
use super::report::Growth;
use super::set::{open_config, DeviceSet};
use super::store::MetadataStore;
use crate::dm::Control;
use crate::target::PoolStatus;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a growth that could not be made (at the cap, no host room) is
/// tried again while the pool's size stays the same.
const STALLED_RETRY: Duration = Duration::from_secs(60);

/// The monitor thread's default nice value.
const DEFAULT_NICE: i32 = -10;

/// How the monitor reaches the set when it must grow it.
enum Source {
    /// Opens the set at this root (taking its lock) for each growth.
    Root(PathBuf, Box<Options>),
    /// A set this process holds open.
    Set(Arc<DeviceSet>),
}

/// What one [`Monitor::check`] saw and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Data use in whole percent (0 when the pool has no status).
    pub data_percent: u64,
    /// Metadata use in whole percent.
    pub metadata_percent: u64,
    /// The growths made.
    pub growths: Vec<Growth>,
}

/// Watches one set's pool and grows it (see the module docs).
pub struct Monitor {
    source: Source,
    pool_name: String,
    options: AutoextendOptions,
    ctl: Control,
    interval: Duration,
    events: bool,
    can_grow: bool,
    lock_wait: Duration,
    /// The pool's (data, metadata) totals when a growth was due but none
    /// was made (at the cap, no host room), and since when: no new try
    /// until they change, or a timer check a minute later.
    stalled: Option<((u64, u64), Instant)>,
    /// The nice value `run` gives its thread (see [`Monitor::set_nice`]).
    nice: Option<i32>,
    /// The growth's state under the lock, kept between growths (a root's).
    light: Option<Box<(Config, State)>>,
    /// The last warning level logged for a pool that cannot grow (0 none,
    /// 1 threshold, 2 critical), so each level is logged once.
    warned: u8,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("pool", &self.pool_name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The options to run with: the given ones (then remembered), else the
/// remembered ones, else the defaults.
fn settle_options(set: &DeviceSet, given: Option<AutoextendOptions>) -> Result<AutoextendOptions> {
    match given {
        Some(o) => {
            set.remember_autoextend_options(&o)?;
            Ok(o)
        }
        None => Ok(set.autoextend_options()?.unwrap_or_default()),
    }
}

impl Monitor {
    /// A monitor of the set at `root`, opened with `set_options` (normally
    /// [`DeviceSet::recorded_options`]) once now and again for each growth,
    /// its lock held only then. `options`: `None` runs with the remembered
    /// ones (else the defaults); given ones are remembered. The first check
    /// runs now: it finishes an interrupted growth, grows what is due and
    /// sets the low-water mark.
    pub fn open(
        root: impl AsRef<Path>,
        set_options: Options,
        options: Option<AutoextendOptions>,
    ) -> Result<Monitor> {
        let set = DeviceSet::open(root, set_options.clone())?;
        let options = settle_options(&set, options)?;
        let can_grow = matches!(set_options.storage, StorageOptions::LoopFiles { .. });
        let monitor = Monitor::new(
            set.pool_name(),
            can_grow,
            options,
            Source::Root(set.root().to_path_buf(), Box::new(set_options)),
        )?;
        set.autoextend(&options)?;
        Ok(monitor)
    }

    /// A monitor of a set this process holds open (the snapshotter's): each
    /// growth goes through `set`'s own lock. `options` as in
    /// [`Monitor::open`].
    pub fn for_set(set: Arc<DeviceSet>, options: Option<AutoextendOptions>) -> Result<Monitor> {
        let options = settle_options(&set, options)?;
        let can_grow = set
            .status()?
            .data_source
            .is_some_and(|p| std::fs::metadata(&p).is_ok_and(|m| m.file_type().is_file()));
        let name = set.pool_name().to_string();
        let monitor = Monitor::new(&name, can_grow, options, Source::Set(set.clone()))?;
        set.autoextend(&options)?;
        Ok(monitor)
    }

    fn new(
        pool_name: &str,
        can_grow: bool,
        options: AutoextendOptions,
        source: Source,
    ) -> Result<Monitor> {
        options.validate()?;
        Ok(Monitor {
            source,
            pool_name: pool_name.to_string(),
            options,
            ctl: Control::open()?,
            interval: Duration::from_secs(10),
            events: true,
            can_grow,
            lock_wait: Duration::from_secs(30),
            stalled: None,
            nice: Some(DEFAULT_NICE),
            light: None,
            warned: 0,
        })
    }

    /// The options this monitor runs with.
    pub fn options(&self) -> &AutoextendOptions {
        &self.options
    }

    /// How often the pool is checked without an event (default 10 s).
    pub fn set_fallback_interval(&mut self, interval: Duration) {
        self.interval = interval.max(Duration::from_millis(1));
    }

    /// The nice value [`Monitor::run`] gives the thread it runs on (default
    /// -10: a growth must win the CPU from the writers filling the pool;
    /// refused without `CAP_SYS_NICE`, then logged and left as it is);
    /// `None` leaves the thread's priority alone.
    pub fn set_nice(&mut self, nice: Option<i32>) {
        self.nice = nice;
    }

    /// With `false`, only the fallback timer wakes the monitor (no dm
    /// events): the timer-only check the benchmark compares against.
    pub fn set_events(&mut self, on: bool) {
        self.events = on;
    }

    /// Reads the pool's status and, when data or metadata use reached the
    /// threshold, grows the pool under the set's lock.
    pub fn check(&mut self) -> Result<Check> {
        self.check_at(false)
    }

    fn check_at(&mut self, timer: bool) -> Result<Check> {
        let s = match pool_status(&mut self.ctl, &self.pool_name)? {
            PoolStatus::Active(s) => s,
            other => {
                log::error!(
                    "pool {}: {}; not grown",
                    self.pool_name,
                    other.to_string().to_lowercase()
                );
                return Ok(Check {
                    data_percent: 0,
                    metadata_percent: 0,
                    growths: Vec::new(),
                });
            }
        };
        let mut check = Check {
            data_percent: percent(s.used_data_blocks, s.total_data_blocks),
            metadata_percent: percent(s.used_metadata_blocks, s.total_metadata_blocks),
            growths: Vec::new(),
        };
        let th = u64::from(self.options.threshold_percent);
        let due = check.data_percent >= th || check.metadata_percent >= th;
        if !self.can_grow {
            self.warn_cannot_grow(&check);
            return Ok(check);
        }
        let totals = (s.total_data_blocks, s.total_metadata_blocks);
        let retry = match self.stalled {
            Some((t, since)) if t == totals => timer && since.elapsed() >= STALLED_RETRY,
            _ => true,
        };
        if !due || !retry {
            return Ok(check);
        }
        check.growths = self.grow()?;
        if check.growths.is_empty() {
            self.stalled = Some((totals, Instant::now()));
        } else {
            self.stalled = None;
        }
        Ok(check)
    }

    /// Runs [`DeviceSet::autoextend`] under the set's lock.
    fn grow(&mut self) -> Result<Vec<Growth>> {
        let (root, set_options) = match &self.source {
            Source::Set(set) => return set.autoextend(&self.options),
            Source::Root(root, o) => (root.clone(), (**o).clone()),
        };
        let lock = self.wait_for_lock(&root)?;
        if let Some(grown) = self.grow_locked(&root, &set_options)? {
            return Ok(grown);
        }
        // Degraded (out of space): the full open, whose growth also
        // finishes what the pool held back.
        drop(lock);
        let t0 = Instant::now();
        let set = loop {
            match DeviceSet::open(&root, set_options.clone()) {
                Err(DeviceSetError::Lock(_)) if t0.elapsed() < self.lock_wait => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                other => break other?,
            }
        };
        set.autoextend(&self.options)
    }

    /// The set's lock, waited for (other dmthin commands hold it briefly).
    fn wait_for_lock(&self, root: &Path) -> Result<SetLock> {
        let t0 = Instant::now();
        loop {
            match SetLock::acquire(root) {
                Err(LockError::Held { .. }) if t0.elapsed() < self.lock_wait => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                other => return Ok(other?),
            }
        }
    }

    /// The growth under the lock the caller holds, without a full open:
    /// only the pool, its backing files and the growth log are touched, so
    /// neither the devices' records nor their recovery are needed. `None`
    /// when the pool cannot take changes (a full open then heals it).
    fn grow_locked(&mut self, root: &Path, set_options: &Options) -> Result<Option<Vec<Growth>>> {
        let mut light = match self.light.take() {
            Some(l) => l,
            None => Box::new(self.light_state(root, set_options)?),
        };
        let (config, state) = &mut *light;
        // Read again under the lock: another process may have changed it.
        state.set = read_set(&state.store, root)?;
        if config.degraded(state)?.is_some() {
            return Ok(None);
        }
        let grown = config.autoextend(state, &self.options)?;
        self.light = Some(light);
        Ok(Some(grown))
    }

    /// What a growth under the lock works on, kept between growths (the
    /// set's record is read again each time): the engine made as
    /// [`DeviceSet::open`] makes it, with only the pool's part of its state.
    fn light_state(&self, root: &Path, set_options: &Options) -> Result<(Config, State)> {
        let block_size = set_options.validate()?;
        let (config, store) = open_config(root.to_path_buf(), set_options.clone(), block_size)?;
        let set = read_set(&store, root)?;
        let ctl = config.control()?;
        Ok((config, State::for_pool(ctl, store, set)?))
    }

    /// A pool on block devices: logs each level (threshold, 95%) once.
    fn warn_cannot_grow(&mut self, c: &Check) {
        let worst = c.data_percent.max(c.metadata_percent);
        let level = if worst >= CRITICAL_PERCENT {
            2
        } else if worst >= u64::from(self.options.threshold_percent) {
            1
        } else {
            0
        };
        if level > self.warned {
            let msg = format!(
                "pool {}: data {}%, metadata {}% used; its block devices cannot be grown automatically",
                self.pool_name, c.data_percent, c.metadata_percent
            );
            if level == 2 {
                log::error!("{msg}");
            } else {
                log::warn!("{msg}");
            }
        }
        self.warned = level;
    }

    /// Checks the pool at every dm event and every fallback interval until
    /// `stop` is readable (say a signalfd for SIGTERM, or a pipe). A failed
    /// check is logged and the monitor goes on.
    pub fn run(&mut self, stop: BorrowedFd<'_>) -> Result<()> {
        if let Some(nice) = self.nice {
            if let Err(e) = super::sys::set_thread_nice(nice) {
                log::info!(
                    "pool {}: monitor priority left as is (nice {nice}: {e})",
                    self.pool_name
                );
            }
        }
        let mut next_timer = Instant::now() + self.interval;
        let mut timer = false;
        loop {
            if self.events {
                self.ctl.arm_poll()?;
            }
            if let Err(e) = self.check_at(timer) {
                log::error!("pool {}: check failed: {e}", self.pool_name);
            }
            let now = Instant::now();
            if now >= next_timer {
                next_timer = now + self.interval;
            }
            let wait = next_timer.saturating_duration_since(now);
            let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
            let ctl = self.ctl.as_fd();
            let mut fds = vec![PollFd::new(stop, PollFlags::POLLIN)];
            if self.events {
                fds.push(PollFd::new(ctl, PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    return Err(DeviceSetError::PoolUnusable {
                        pool: self.pool_name.clone(),
                        reason: format!("poll on the device-mapper control fd: {e}"),
                    })
                }
            }
            if fds[0].any().unwrap_or(false) {
                log::info!("pool {}: monitor stopping", self.pool_name);
                return Ok(());
            }
            timer = Instant::now() >= next_timer;
        }
    }
}

/// The set record of the set at `root`.
fn read_set(store: &MetadataStore, root: &Path) -> Result<super::store::SetRecord> {
    store
        .read_set()?
        .ok_or_else(|| DeviceSetError::InvalidOption {
            option: "root",
            reason: format!("no device set at {}", root.display()),
        })
}
