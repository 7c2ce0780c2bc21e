//! Automatic growth of a loop-file pool, the monitor's one step: data or
//! metadata use at the threshold grows that file by a percentage (up to its
//! cap and the host filesystem's free space), sets the loop device's
//! capacity and reloads the pool table with its low-water mark at the
//! threshold, so the kernel's next event comes when use reaches it again.
//!
//! Every growth is logged in `metadata/autoextend.json`, its intent first:
//! a crash between the steps (file grown, capacity not set, table not
//! reloaded, pool left suspended) is finished by the next open or check
//! ([`Config::finish_growth`]); an intent whose file never grew is dropped.
//!
//! A full root filesystem must not stop a growth: the growth is what gives
//! the pool's writers room, and the root may be full of something else
//! while the loop files under `devicemapper/` (another filesystem, say)
//! have room. So the log is a side file (`store/side.rs`) whose rewrites
//! need no new block: [`Config::autoextend`] first makes it and its spare
//! full-size while there is room (the monitor runs it when it starts), and
//! the intent and the done record of every later growth are written over
//! blocks already allocated, then swapped in by name. The crash reasoning
//! is unchanged, since a log read after any crash is one whole version,
//! old or new, and the steps keep their order:
//! - before the intent is durable, nothing has grown: the old log is right;
//! - intent durable, file not grown: the intent is dropped;
//! - file grown, capacity or table not yet: the open or check finishes it
//!   from the intent and records it done;
//! - all done but the done record: finished the same way (each step is
//!   idempotent: the capacity set again, the table reloaded only if short).

use super::pool::Backing;
use super::{sectors, Config, State};
use crate::deviceset::error::{DeviceSetError, Result};
use crate::deviceset::fail_point;
use crate::deviceset::options::AutoextendOptions;
use crate::deviceset::report::{Growth, GrowthTarget};
use crate::deviceset::store::Storage;
use crate::dm::{DevId, UdevFlags};
use crate::target::{PoolStatus, TargetTable, ThinPoolStatus, ThinPoolTable};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

/// The log's file name in the metadata directory.
pub(crate) const LOG_FILE: &str = "autoextend.json";
/// Growths the log keeps (the oldest are dropped).
const HISTORY_LEN: usize = 64;
/// Metadata use at which a pool that cannot grow logs an error, not a warning.
pub(crate) const CRITICAL_PERCENT: u64 = 95;

/// `metadata/autoextend.json`: the remembered options, a growth under way,
/// the last growths.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct GrowthLog {
    /// The options `dmthin monitor` last ran with.
    #[serde(default)]
    pub(crate) options: Option<AutoextendOptions>,
    /// A growth started and not yet recorded as done.
    #[serde(default)]
    pub(crate) pending: Option<Growth>,
    /// Finished growths, oldest first.
    #[serde(default)]
    pub(crate) history: Vec<Growth>,
}

/// What a backing at some use calls for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Below the threshold.
    Below,
    /// Grow to this many bytes.
    Grow(u64),
    /// At the threshold but already at its cap.
    AtCap,
}

/// Whole percent of `total` that `used` is (0 for an empty total).
pub(crate) fn percent(used: u64, total: u64) -> u64 {
    if total == 0 {
        0
    } else {
        u64::try_from(u128::from(used) * 100 / u128::from(total)).unwrap_or(100)
    }
}

/// The plan for a backing `current` bytes big with `used` of `total` units
/// in use: past the threshold, `extend_percent` more (at least one `align`
/// unit, rounded down to `align`), never past `cap`.
pub(crate) fn plan(
    used: u64,
    total: u64,
    current: u64,
    o: &AutoextendOptions,
    cap: u64,
    align: u64,
) -> Plan {
    if total == 0 || percent(used, total) < u64::from(o.threshold_percent) {
        return Plan::Below;
    }
    let align = align.max(1);
    let grow = (u128::from(current) * u128::from(o.extend_percent) / 100).max(u128::from(align));
    let want = u64::try_from(u128::from(current) + grow).unwrap_or(u64::MAX);
    let to = want.min(cap) / align * align;
    if to <= current {
        Plan::AtCap
    } else {
        Plan::Grow(to)
    }
}

/// The low-water mark (free data blocks) at which the kernel raises its
/// event for a pool of `total_blocks` watched at `threshold` percent.
pub(crate) fn low_water_blocks(total_blocks: u64, threshold: u32) -> u64 {
    let free = u128::from(total_blocks) * u128::from(100 - threshold.min(100)) / 100;
    u64::try_from(free).unwrap_or(u64::MAX).max(1)
}

/// Bytes the host filesystem under `file` can still give (to an
/// unprivileged writer: root's reserve is left alone).
fn host_free(file: &Path) -> Result<u64> {
    let dir = file.parent().unwrap_or(Path::new("/"));
    let vfs = nix::sys::statvfs::statvfs(dir).map_err(|e| DeviceSetError::InvalidOption {
        option: "storage",
        reason: format!("statvfs {}: {e}", dir.display()),
    })?;
    // u64 on 64-bit targets, narrower on some 32-bit ones.
    #[allow(clippy::useless_conversion)]
    let (blocks, size) = (
        u64::from(vfs.blocks_available()),
        u64::from(vfs.fragment_size()),
    );
    Ok(blocks.saturating_mul(size))
}

impl Config {
    /// The set's autoextend log (empty when there is none yet).
    pub(crate) fn growth_log(&self, state: &State) -> Result<GrowthLog> {
        Ok(state.store.read_side_file(LOG_FILE)?.unwrap_or_default())
    }

    fn write_growth_log(&self, state: &State, log: &GrowthLog) -> Result<()> {
        Ok(state.store.write_side_file(LOG_FILE, log)?)
    }

    /// Makes the growth log's later rewrites need no free space on the
    /// set's root (see the module docs): the log is written now as it is,
    /// with its spare, unless both are in place. A root already full leaves
    /// it as it was (a warning: growths then need room there to be logged).
    fn reserve_growth_log(&self, state: &State) {
        if state.store.side_file_ready(LOG_FILE) {
            return;
        }
        let written = self
            .growth_log(state)
            .and_then(|log| self.write_growth_log(state, &log));
        if let Err(e) = written {
            log::warn!(
                "pool {}: the growth log is not ready for a full root filesystem ({e}); until it is, a growth needs free space there to be logged",
                self.pool_name
            );
        }
    }

    /// Remembers the options `dmthin monitor` runs with.
    pub(crate) fn remember_autoextend(&self, state: &State, o: &AutoextendOptions) -> Result<()> {
        let mut log = self.growth_log(state)?;
        if log.options.as_ref() != Some(o) {
            log.options = Some(*o);
            self.write_growth_log(state, &log)?;
        }
        Ok(())
    }

    /// The pool's table line with `data_sectors` of data (rounded down to
    /// whole blocks) and its low-water mark at `threshold` percent.
    fn armed_line(
        &self,
        state: &mut State,
        data_sectors: Option<u64>,
        threshold: u32,
    ) -> Result<crate::target::TableLine> {
        let live = self.pool_line(state)?;
        let t = ThinPoolTable::from_line(&live)?;
        let bs = u64::from(self.block_size.sectors());
        let len = data_sectors.unwrap_or(live.length()) / bs * bs;
        let table = ThinPoolTable::new(
            t.metadata_dev().clone(),
            t.data_dev().clone(),
            self.block_size,
            low_water_blocks(len / bs, threshold),
        )?
        .with_features(t.features())?;
        Ok(table.to_line(0, len))
    }

    /// Re-arms the kernel's low-water event at `threshold` percent when the
    /// live table has another mark (a table reload, no growth).
    fn arm_low_water(&self, state: &mut State, threshold: u32) -> Result<()> {
        let live = self.pool_line(state)?;
        let bs = u64::from(self.block_size.sectors());
        let want = low_water_blocks(live.length() / bs, threshold);
        if ThinPoolTable::from_line(&live)?.low_water_mark() == want {
            return Ok(());
        }
        let line = self.armed_line(state, None, threshold)?;
        log::info!(
            "pool {}: low-water mark set for {threshold}% use",
            self.pool_name
        );
        state
            .ctl
            .reload_table(DevId::Name(&self.pool_name), &[line], UdevFlags::PRIVATE)?;
        Ok(())
    }

    /// One autoextend check of the locked set: makes the growth log ready
    /// for a full root, finishes an interrupted growth, then grows data and
    /// metadata that reached the threshold, and re-arms the low-water event. Returns the growths made. A pool on
    /// block devices (or adopted) is never grown: a warning at the
    /// threshold, an error from 95%.
    pub(crate) fn autoextend(
        &self,
        state: &mut State,
        o: &AutoextendOptions,
    ) -> Result<Vec<Growth>> {
        o.validate()?;
        self.reserve_growth_log(state);
        self.finish_growth(state)?;
        let s = match self.any_pool_status(state)? {
            PoolStatus::Active(s) if !s.needs_check => s,
            other => {
                log::error!(
                    "pool {}: {} (needs a check); not grown",
                    self.pool_name,
                    other.to_string().to_lowercase()
                );
                return Ok(Vec::new());
            }
        };
        let Storage::LoopFiles {
            data_file,
            metadata_file,
        } = state.set.storage.clone()
        else {
            self.warn_cannot_grow(&s, o);
            return Ok(Vec::new());
        };
        let mut done = Vec::new();
        let bs = self.options.data_block_size;
        let data_now = s.total_data_blocks * bs;
        let data_cap = o.max_data_size.unwrap_or(u64::MAX);
        let data_plan = plan(
            s.used_data_blocks,
            s.total_data_blocks,
            data_now,
            o,
            data_cap,
            bs,
        );
        let meta_now = std::fs::metadata(&metadata_file)
            .map(|m| m.len())
            .unwrap_or(0);
        let meta_cap = o
            .max_metadata_size
            .unwrap_or(super::MAX_METADATA_BYTES)
            .min(super::MAX_METADATA_BYTES);
        let meta_plan = plan(
            s.used_metadata_blocks,
            s.total_metadata_blocks,
            meta_now,
            o,
            meta_cap,
            1 << 20,
        );
        for (target, file, now, p, used, total) in [
            (
                GrowthTarget::Data,
                &data_file,
                data_now,
                data_plan,
                s.used_data_blocks,
                s.total_data_blocks,
            ),
            (
                GrowthTarget::Metadata,
                &metadata_file,
                meta_now,
                meta_plan,
                s.used_metadata_blocks,
                s.total_metadata_blocks,
            ),
        ] {
            let what = target_name(target);
            match p {
                Plan::Below => {}
                Plan::AtCap => log::warn!(
                    "pool {}: {what} {}% used and at its maximum size ({now} bytes); not grown",
                    self.pool_name,
                    percent(used, total)
                ),
                Plan::Grow(to) => {
                    // The growth itself must fit on the host; the sparse
                    // file's holes below it are the pool's free space.
                    let (free, need) = (host_free(file)?, to - now);
                    if need > free {
                        log::error!(
                            "pool {}: {what} {}% used, but the host filesystem under {} has {free} bytes free, {need} needed to grow it to {to} bytes; not grown",
                            self.pool_name,
                            percent(used, total),
                            file.display()
                        );
                        continue;
                    }
                    done.push(self.grow_step(state, target, now, to, o.threshold_percent)?);
                }
            }
        }
        self.arm_low_water(state, o.threshold_percent)?;
        Ok(done)
    }

    /// A pool that cannot grow: warns at the threshold, errs from 95%.
    fn warn_cannot_grow(&self, s: &ThinPoolStatus, o: &AutoextendOptions) {
        for (what, used, total) in [
            ("data", s.used_data_blocks, s.total_data_blocks),
            ("metadata", s.used_metadata_blocks, s.total_metadata_blocks),
        ] {
            let pct = percent(used, total);
            if pct >= CRITICAL_PERCENT {
                log::error!(
                    "pool {}: {what} {pct}% used; its block device cannot be grown automatically",
                    self.pool_name
                );
            } else if pct >= u64::from(o.threshold_percent) {
                log::warn!(
                    "pool {}: {what} {pct}% used; its block device cannot be grown automatically",
                    self.pool_name
                );
            }
        }
    }

    /// Grows `target` from `from` to `to` bytes: intent logged, file grown
    /// and its loop capacity set, table reloaded, growth logged.
    fn grow_step(
        &self,
        state: &mut State,
        target: GrowthTarget,
        from: u64,
        to: u64,
        threshold: u32,
    ) -> Result<Growth> {
        let started = Instant::now();
        let mut growth = Growth {
            target,
            from,
            to,
            at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            micros: 0,
        };
        let mut log = self.growth_log(state)?;
        log.pending = Some(growth.clone());
        self.write_growth_log(state, &log)?;
        fail_point!("autoextend.after_intent")?;
        self.grow_backing(state, backing(target), to)?;
        fail_point!("autoextend.after_grow_file")?;
        let file_done = started.elapsed();
        let data_sectors = (target == GrowthTarget::Data).then(|| sectors(to));
        let line = self.armed_line(state, data_sectors, threshold)?;
        state.ctl.reload_table_steps(
            DevId::Name(&self.pool_name),
            &[line],
            UdevFlags::PRIVATE,
            || fail_point!("autoextend.after_suspend"),
        )?;
        fail_point!("autoextend.after_reload")?;
        let reload_done = started.elapsed();
        growth.micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        log.pending = None;
        log.history.push(growth.clone());
        let excess = log.history.len().saturating_sub(HISTORY_LEN);
        log.history.drain(..excess);
        self.write_growth_log(state, &log)?;
        log::info!(
            "pool {}: {} grown from {from} to {to} bytes in {} ms (log and file {} ms, table reload {} ms)",
            self.pool_name,
            target_name(target),
            growth.micros / 1000,
            file_done.as_millis(),
            (reload_done - file_done).as_millis()
        );
        Ok(growth)
    }

    /// Finishes a growth a crash interrupted: a file that was grown gets
    /// its loop capacity and the pool its table; an intent whose file never
    /// grew is dropped. Then the growth is logged as done.
    pub(crate) fn finish_growth(&self, state: &mut State) -> Result<()> {
        let mut log = self.growth_log(state)?;
        let Some(growth) = log.pending.take() else {
            return Ok(());
        };
        let Storage::LoopFiles {
            data_file,
            metadata_file,
        } = state.set.storage.clone()
        else {
            return self.write_growth_log(state, &log);
        };
        let file = match growth.target {
            GrowthTarget::Data => data_file,
            GrowthTarget::Metadata => metadata_file,
        };
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        let what = target_name(growth.target);
        if size < growth.to {
            log::warn!(
                "pool {}: the interrupted growth of its {what} to {} bytes never grew the file; dropped",
                self.pool_name,
                growth.to
            );
            return self.write_growth_log(state, &log);
        }
        log::warn!(
            "pool {}: finishing the interrupted growth of its {what} to {} bytes",
            self.pool_name,
            growth.to
        );
        self.grow_backing(state, backing(growth.target), growth.to)?;
        let live = self.pool_line(state)?;
        let data_sectors = match growth.target {
            GrowthTarget::Data => sectors(growth.to),
            GrowthTarget::Metadata => live.length(),
        };
        let bs = u64::from(self.block_size.sectors());
        let threshold = log.options.map(|o| o.threshold_percent).unwrap_or(80);
        // A data growth whose table went live before the crash, or any
        // metadata growth (the pool re-reads its metadata size on resume).
        if growth.target == GrowthTarget::Metadata || live.length() < data_sectors / bs * bs {
            let line = self.armed_line(state, Some(data_sectors), threshold)?;
            state
                .ctl
                .reload_table(DevId::Name(&self.pool_name), &[line], UdevFlags::PRIVATE)?;
        }
        log.history.push(growth);
        let excess = log.history.len().saturating_sub(HISTORY_LEN);
        log.history.drain(..excess);
        self.write_growth_log(state, &log)
    }
}

fn backing(target: GrowthTarget) -> Backing {
    match target {
        GrowthTarget::Data => Backing::Data,
        GrowthTarget::Metadata => Backing::Metadata,
    }
}

fn target_name(target: GrowthTarget) -> &'static str {
    match target {
        GrowthTarget::Data => "data",
        GrowthTarget::Metadata => "metadata",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(threshold: u32, extend: u32) -> AutoextendOptions {
        AutoextendOptions {
            threshold_percent: threshold,
            extend_percent: extend,
            ..AutoextendOptions::default()
        }
    }

    #[test]
    fn plan_grows_past_the_threshold_up_to_the_cap() {
        let mib = 1u64 << 20;
        let o = o(80, 20);
        assert_eq!(
            plan(79, 100, 100 * mib, &o, u64::MAX, 64 << 10),
            Plan::Below
        );
        assert_eq!(
            plan(80, 100, 100 * mib, &o, u64::MAX, 64 << 10),
            Plan::Grow(120 * mib)
        );
        // Capped, and rounded down to the alignment.
        assert_eq!(
            plan(90, 100, 100 * mib, &o, 110 * mib + 1, mib),
            Plan::Grow(110 * mib)
        );
        assert_eq!(plan(99, 100, 100 * mib, &o, 100 * mib, mib), Plan::AtCap);
        // A tiny backing still grows by one unit.
        assert_eq!(plan(1, 1, mib, &o, u64::MAX, mib), Plan::Grow(2 * mib));
        // No total (a failed status) never grows.
        assert_eq!(plan(0, 0, mib, &o, u64::MAX, mib), Plan::Below);
    }

    #[test]
    fn growth_log_round_trips_through_the_store() {
        use crate::deviceset::store::MetadataStore;
        let s = crate::testutil::Scratch::new("growthlog");
        let store = MetadataStore::open(s.path(), 64).unwrap();
        assert!(store
            .read_side_file::<GrowthLog>(LOG_FILE)
            .unwrap()
            .is_none());
        let g = Growth {
            target: GrowthTarget::Metadata,
            from: 2 << 20,
            to: 3 << 20,
            at: 1,
            micros: 1500,
        };
        let log = GrowthLog {
            options: Some(o(70, 30)),
            pending: Some(g.clone()),
            history: vec![g.clone()],
        };
        store.write_side_file(LOG_FILE, &log).unwrap();
        let back: GrowthLog = store.read_side_file(LOG_FILE).unwrap().unwrap();
        assert_eq!(back.options, log.options);
        assert_eq!((back.pending, back.history), (Some(g.clone()), vec![g]));
        // A damaged log is an error naming the file, not a silent reset.
        std::fs::write(s.path().join("metadata").join(LOG_FILE), b"{").unwrap();
        let e = store.read_side_file::<GrowthLog>(LOG_FILE).unwrap_err();
        assert!(e.to_string().contains(LOG_FILE), "{e}");
    }

    #[test]
    fn low_water_mark_fires_at_the_threshold() {
        assert_eq!(low_water_blocks(1000, 80), 200);
        assert_eq!(low_water_blocks(4096, 0), 4096);
        assert_eq!(low_water_blocks(10, 99), 1, "at least one block");
        assert_eq!(percent(800, 1000), 80);
        assert_eq!(percent(1, 0), 0);
    }
}
