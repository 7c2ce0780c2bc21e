//! The schedule's heavier steps: a real abort at a fail point in a child
//! process, a degraded pool (read-only, out of data space, failed metadata
//! writes) and its heal, and a seed's final check and clean-up.

use super::model::{Dev, Entry};
use super::ops::{diverged, group, points, Run};
use crate::common::{sh, MIB};
use dmthin::deviceset::{DeviceSet, DeviceSetError};
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

/// The child's operation (words) and the set's root.
pub const CHILD_OP: &str = "DMTHIN_SCHEDULE_CHILD_OP";
pub const CHILD_ROOT: &str = "DMTHIN_SCHEDULE_CHILD_ROOT";

/// Runs one operation in the child process (the `schedule_child` test)
/// on the set at `root`; exit status 0 when it returned `Ok`, 3 on an
/// error. A fail point armed by `DMTHIN_FAILPOINT` aborts it on the way.
pub fn child_main(op: &str, root: &Path) -> ! {
    let mut o = DeviceSet::recorded_options(root).unwrap().unwrap();
    o.busy_retries = 3;
    let set = match DeviceSet::open(root, o) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("schedule child: open: {e}");
            std::process::exit(3);
        }
    };
    let w: Vec<&str> = op.split(' ').collect();
    let opt = |s: &str| (s != "-").then(|| s.to_string());
    let r = match w[0] {
        "add" => match opt(w[3]) {
            Some(size) => set.add_device_sized(w[1], opt(w[2]).as_deref(), size.parse().ok()),
            None => set.add_device(w[1], opt(w[2]).as_deref()),
        },
        "remove" => set.remove_device(w[1]),
        "remove_deferred" => set.activate_device(w[1]).and_then(|node| {
            let _held = std::fs::File::open(node).unwrap();
            set.remove_device_deferred(w[1]).map(drop)
        }),
        "cleanup" => set.cleanup_deferred(),
        "activate" => set.activate_device(w[1]).map(drop),
        "deactivate" => set.deactivate_device(w[1]),
        "mount" => set.mount_device(w[1], w[2], false),
        "unmount" => set.unmount_device(w[1], w[2], true),
        "set_initialized" => set.set_initialized(w[1], true),
        "grow_pool" => set.grow_pool(w[1].parse().unwrap()),
        "grow_meta" => set.grow_pool_metadata(w[1].parse().unwrap()),
        "shutdown" => set.shutdown(),
        "open" => Ok(()),
        other => panic!("no child operation {other}"),
    };
    match r {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("schedule child: {op}: {e}");
            std::process::exit(3);
        }
    }
}

/// How a child's operation ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// Aborted at the fail point: unacknowledged.
    Aborted,
    /// Returned `Ok` (the point was not on its way): acknowledged.
    Ok,
    /// Returned an error.
    Failed,
}

impl Run<'_> {
    /// A process killed at a random fail point of a random operation
    /// (`DMTHIN_FAILPOINT` in a child), then a reopen here: the
    /// operation is wholly done or undone, or uncertain on a degraded pool.
    pub fn abort(&mut self) {
        let unmounted = self.model.present_ids(Some(false));
        let mounted: Vec<String> = self.model.mounted.keys().cloned().collect();
        let fs_unmounted: Vec<String> = self
            .model
            .fs_ids(Some(false))
            .into_iter()
            .filter(|id| unmounted.contains(id))
            .collect();
        let mut choices = vec![(5, "add"), (1, "grow_pool"), (1, "shutdown"), (1, "open")];
        if !unmounted.is_empty() {
            choices.extend([(3, "remove"), (1, "remove_deferred"), (1, "activate")]);
            choices.extend([(1, "deactivate"), (1, "set_initialized")]);
        }
        if !fs_unmounted.is_empty() {
            choices.push((2, "mount"));
        }
        if !mounted.is_empty() {
            choices.push((1, "unmount"));
        }
        if !self.pending.is_empty() {
            choices.push((1, "cleanup"));
        }
        let op = self.rng.weighted(&choices);
        let mut target: Option<(String, Dev)> = None;
        let words = match op {
            "add" => {
                let id = self.model.new_id();
                let parent = if self.rng.percent(50) {
                    None
                } else {
                    self.rng.pick(&self.model.fs_ids(None))
                };
                let dev = self.model.child_of(parent.as_deref());
                let words = format!("add {id} {} -", parent.as_deref().unwrap_or("-"));
                target = Some((id, dev));
                words
            }
            "remove" | "remove_deferred" | "activate" | "deactivate" | "set_initialized" => {
                let id = self.rng.pick(&unmounted).unwrap();
                target = Some((id.clone(), self.model.present(&id).unwrap().clone()));
                format!("{op} {id}")
            }
            "mount" => {
                let id = self.rng.pick(&fs_unmounted).unwrap();
                format!("mount {id} {}", self.world.mnt(&id).display())
            }
            "unmount" => {
                let id = self.rng.pick(&mounted).unwrap();
                format!("unmount {id} {}", self.model.mounted[&id].display())
            }
            "grow_pool" => {
                let total = self.set().status().unwrap().data_total;
                let cap = if self.world.disks.is_some() {
                    total
                } else {
                    super::world::DATA_CAP
                };
                format!("grow_pool {}", (total + 4 * MIB).min(cap).max(total))
            }
            other => other.to_string(),
        };
        let Some(point) = self.rng.pick(&points(group(op))) else {
            return;
        };
        if self.skipped(point) || self.skipped(op) {
            self.note(format!("(abort of {op} at {point} skipped)"));
            return;
        }
        self.counts.add("op abort (child process)");
        self.world.crash();
        let t0 = std::time::Instant::now();
        let status = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "schedule_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_OP, &words)
            .env(CHILD_ROOT, self.world.path())
            .env("DMTHIN_FAILPOINT", point)
            .env("RUST_LOG", "off")
            .output()
            .unwrap();
        if !status.status.success() && status.status.signal().is_none() {
            let err = String::from_utf8_lossy(&status.stderr);
            for line in err.lines().filter(|l| l.starts_with("schedule child")) {
                self.note(line.to_string());
            }
        }
        let ended = match (status.status.signal(), status.status.code()) {
            (Some(nix::libc::SIGABRT), _) => Ended::Aborted,
            (_, Some(0)) => Ended::Ok,
            (_, Some(3)) => Ended::Failed,
            _ => diverged!(
                self,
                "child `{words}` with {point} ended {:?}: {}",
                status.status,
                String::from_utf8_lossy(&status.stderr)
            ),
        };
        self.note(format!(
            "child `{words}` with abort at {point}: {ended:?} ({:.2} s)",
            t0.elapsed().as_secs_f64()
        ));
        if ended == Ended::Aborted {
            self.counts.add("aborts at a fail point (child killed)");
            self.counts.add(format!("  aborted at {point}"));
        } else {
            self.counts
                .add("aborts armed, not reached (child finished)");
        }
        self.counts
            .time("  (child process)", t0.elapsed().as_secs_f64());
        let t = std::time::Instant::now();
        if let Err(e) = self.world.open() {
            diverged!(
                self,
                "the set does not reopen after `{words}` aborted at {point}: {e}"
            );
        }
        self.counts
            .time("  (DeviceSet::open)", t.elapsed().as_secs_f64());
        let degraded = self.world.degraded();
        let what = format!("`{words}` (abort at {point}: {ended:?})");
        if let Some((id, dev)) = target {
            match (op, &ended) {
                ("add", Ended::Ok) => {
                    self.model.entries.insert(id.clone(), Entry::Present(dev));
                }
                ("remove" | "remove_deferred", Ended::Ok) => {
                    if op == "remove_deferred" {
                        self.pending.insert(id.clone());
                    }
                    self.gone(&id, &dev);
                }
                ("add" | "remove" | "remove_deferred", _) => {
                    self.pending.insert(id.clone());
                    self.adopt(&id, dev, degraded, &what);
                }
                ("set_initialized", e) => {
                    let now = self.set().has_initialized_device(&id);
                    if *e == Ended::Ok && !now {
                        diverged!(self, "{what}: acknowledged, but not initialized");
                    }
                    if let Some(Entry::Present(d)) = self.model.entries.get_mut(&id) {
                        d.initialized = now;
                    }
                }
                _ => {}
            }
        }
        if op == "cleanup" && ended == Ended::Ok {
            self.pending.clear();
        }
        self.check_devices(&what);
        self.check_presence();
        self.assert_settled(&what);
        self.reconcile(true);
        let mounted_now = |run: &Run, id: &str| run.model.mounted.contains_key(id);
        let w: Vec<&str> = words.split(' ').collect();
        match (w[0], &ended) {
            ("mount", Ended::Ok) if !mounted_now(self, w[1]) => {
                diverged!(
                    self,
                    "{what}: acknowledged, but not mounted after the reopen"
                )
            }
            ("unmount", Ended::Ok) if mounted_now(self, w[1]) => {
                diverged!(
                    self,
                    "{what}: acknowledged, but still mounted after the reopen"
                )
            }
            ("shutdown", Ended::Ok) if !self.model.mounted.is_empty() => {
                diverged!(self, "{what}: acknowledged, but mounts remain")
            }
            _ => {}
        }
    }

    /// Unmounts every device the model has mounted (each must work).
    pub fn unmount_all(&mut self) {
        for (id, path) in self.model.mounted.clone() {
            if let Err(e) = self.set().unmount_device(&id, &path, true) {
                diverged!(self, "unmount {id}: {e}");
            }
            self.model.mounted.remove(&id);
        }
    }

    /// Tries what a degraded pool must refuse (an add, a remove) and checks
    /// that each refusal changed nothing.
    fn refused_while_degraded(&mut self) {
        let id = self.model.new_id();
        let r = self.set().add_device(&id, None);
        self.note(format!("add {id} on the degraded pool -> {r:?}"));
        match r {
            Err(DeviceSetError::PoolUnusable { .. } | DeviceSetError::LowSpace { .. }) => {}
            other => diverged!(self, "add on a degraded pool: {other:?}"),
        }
        self.model.entries.insert(id, Entry::Absent);
        if let Some(id) = self.rng.pick(&self.model.present_ids(Some(false))) {
            let r = self.set().remove_device(&id);
            self.note(format!("remove {id} on the degraded pool -> {r:?}"));
            match r {
                Err(DeviceSetError::PoolUnusable { .. }) => {}
                other => diverged!(self, "remove on a degraded pool: {other:?}"),
            }
        }
        self.check_presence();
    }

    /// The pool turned read-only behind the set's back (its table reloaded
    /// with `read_only`): refusals, maybe a degraded open, then the table
    /// restored and the set healed by a reopen or a growth.
    pub fn read_only_episode(&mut self) {
        self.counts.add("read-only pool episodes");
        self.unmount_all();
        self.world.set_pool_read_only(true);
        self.note("pool table reloaded read_only".into());
        if self.rng.percent(60) {
            self.world.crash();
            self.reopened("the pool turned read-only", false);
        }
        if !self.world.degraded() {
            diverged!(self, "the pool is not degraded with a read_only table");
        }
        self.refused_while_degraded();
        self.world.set_pool_read_only(false);
        self.note("pool table reloaded without read_only".into());
        self.heal("the read-only pool");
    }

    /// After the pool can take changes again: a reopen or a growth (at the
    /// same size) heals the set; nothing is left unsettled.
    fn heal(&mut self, what: &str) {
        if self.rng.percent(50) {
            self.world.crash();
            self.reopened(&format!("{what} was restored"), false);
        } else {
            let total = self.set().status().unwrap().data_total;
            if let Err(e) = self.set().grow_pool(total) {
                diverged!(self, "healing growth after {what}: {e}");
            }
            self.note(format!("healed by a growth after {what}"));
        }
        if self.world.degraded() {
            diverged!(
                self,
                "still degraded after {what} was restored: {}",
                self.world.mode()
            );
        }
        self.assert_settled(&format!("the heal after {what}"));
        self.check_presence();
        self.reconcile(false);
    }

    /// Fills the pool to out-of-data-space by writing raw to filler
    /// devices, tries what must be refused (maybe across a degraded open),
    /// then discards the fillers' blocks: the pool becomes writable again
    /// by itself and the fillers are removed.
    pub fn fill_episode(&mut self) {
        self.unmount_all();
        let mut fillers = Vec::new();
        // The fillers' adds without injected errors: the fill always runs.
        let inject = std::mem::replace(&mut self.inject_pct, 0);
        for _ in 0..2 {
            let id = self.model.new_id();
            let mut dev = self.model.child_of(None);
            dev.raw = true;
            if !self.add_as(&id, None, dev, false) {
                self.note("no filler: the add was refused".into());
                self.inject_pct = inject;
                return;
            }
            fillers.push(id);
        }
        self.inject_pct = inject;
        self.counts.add("out-of-space fills");
        for id in &fillers {
            let node = match self.set().activate_device(id) {
                Ok(n) => n,
                Err(e) => diverged!(self, "activating filler {id}: {e}"),
            };
            let (_, out) = sh(&format!(
                "dd if=/dev/zero of={} bs=1M oflag=direct 2>&1 | tail -n 2",
                node.display()
            ));
            self.note(format!("filled {id}: {}", out.trim().replace('\n', "; ")));
        }
        let mode = self.world.mode();
        self.note(format!("pool after the fill: {mode}"));
        if !mode.starts_with("out_of_data_space") {
            diverged!(self, "the pool is {mode} after writing past its size");
        }
        if self.rng.percent(50) {
            self.world.crash();
            self.reopened("the pool ran out of data space", false);
        }
        self.refused_while_degraded();
        for id in &fillers {
            let node = self.set().activate_device(id).unwrap();
            let (ok, out) = sh(&format!("blkdiscard {} 2>&1", node.display()));
            assert!(ok, "blkdiscard {id}: {out}");
        }
        if !self.world.wait_writable() {
            diverged!(
                self,
                "the pool stays {} after the discards",
                self.world.mode()
            );
        }
        self.note("discarded: the pool is writable again".into());
        self.heal("the full pool");
        for id in fillers {
            if self.model.present(&id).is_some() {
                self.remove_id(&id, false);
            }
        }
    }

    /// On the flakey world: the metadata device starts failing writes
    /// during an add (maybe after a commit check that could not tell);
    /// the set reopens degraded (needs_check or failed) and refuses
    /// changes; then the disks are repaired (thin_check) and the set
    /// settles everything on the next open.
    pub fn flakey_episode(&mut self) {
        self.counts.add("failed-metadata-write episodes");
        self.unmount_all();
        if self.rng.percent(50) {
            let id = self.model.new_id();
            let dev = self.model.child_of(None);
            self.force_point = Some("add.commit_check");
            self.add_as(&id, None, dev, false);
        }
        self.world.disks.as_ref().unwrap().fail_meta_writes(true);
        self.note("metadata writes fail from now".into());
        let id = self.model.new_id();
        let dev = self.model.child_of(None);
        let r = self.set().add_device(&id, None);
        self.note(format!("add {id} while metadata writes fail -> {r:?}"));
        match r {
            Ok(()) => {
                self.counts
                    .add("adds acknowledged while metadata writes failed");
                self.model.entries.insert(id, Entry::Present(dev));
            }
            Err(_) => self.adopt(&id, dev, true, "an add while metadata writes failed"),
        }
        self.world.crash();
        self.reopened("metadata writes failed", false);
        if !self.world.degraded() {
            diverged!(
                self,
                "the pool is {} after failed metadata writes",
                self.world.mode()
            );
        }
        self.refused_while_degraded();
        let (ok, out) = self.world.repair_flakey();
        self.note(format!(
            "thin_check --clear-needs-check-flag: ok={ok} {}",
            out.trim()
        ));
        if !ok {
            diverged!(self, "thin_check fails after failed metadata writes: {out}");
        }
        self.reopened("the metadata disk was repaired", false);
        if self.world.degraded() {
            diverged!(
                self,
                "still degraded after the repair: {}",
                self.world.mode()
            );
        }
    }

    /// The seed's end: the pool writable, everything settled, every
    /// acknowledged device whole with its files, the pool's thin ids the
    /// records' (read with `thin_dump`, or in-process); then its devices
    /// removed.
    pub fn finish(&mut self, thin_dump: bool) {
        if self.world.degraded() {
            diverged!(self, "the pool is {} at the seed's end", self.world.mode());
        }
        self.wait_pending_closed();
        if let Err(e) = self.set().cleanup_deferred() {
            diverged!(self, "cleanup_deferred at the seed's end: {e}");
        }
        self.pending.clear();
        self.assert_settled("the seed's end");
        self.check_presence();
        let left = self.model.uncertain_ids();
        if !left.is_empty() {
            diverged!(self, "uncertain at the seed's end: {left:?}");
        }
        self.reconcile(false);
        self.note("final: settled and reconciled".into());
        self.verify_files();
        self.note("final: files read back".into());
        self.world.check_invariants(thin_dump);
        self.counts.add(if thin_dump {
            "pool thin ids checked (thin_dump)"
        } else {
            "pool thin ids checked (in-process reader)"
        });
        self.note("final: pool thin ids checked".into());
        self.unmount_all();
        for id in self.model.present_ids(None) {
            let dev = self.model.present(&id).unwrap().clone();
            if let Err(e) = self.set().remove_device(&id) {
                diverged!(self, "removing {id} at the seed's end: {e}");
            }
            self.gone(&id, &dev);
        }
        self.note("final: devices removed".into());
        let prefix = format!("s{}-", self.model.seed);
        let left: Vec<String> = self
            .set()
            .list()
            .unwrap()
            .into_iter()
            .filter(|d| d.id.starts_with(&prefix))
            .map(|d| d.id)
            .collect();
        if !left.is_empty() {
            diverged!(self, "listed after the seed's clean-up: {left:?}");
        }
    }

    /// Every present device with files holds exactly them (read through
    /// its mount, or a read-only mount made for the check).
    fn verify_files(&mut self) {
        for id in self.model.fs_ids(None) {
            let dev = self.model.present(&id).unwrap().clone();
            if dev.files.is_empty() {
                continue;
            }
            let own = !self.model.mounted.contains_key(&id);
            let path = match self.model.mounted.get(&id) {
                Some(p) => p.clone(),
                None => {
                    let p = self.world.mnt(&id);
                    if let Err(e) = self.set().mount_device(&id, &p, true) {
                        diverged!(self, "mounting {id} to read its files: {e}");
                    }
                    p
                }
            };
            let found = read_files(&path);
            if own {
                if let Err(e) = self.set().unmount_device(&id, &path, true) {
                    diverged!(self, "unmounting {id} after reading: {e}");
                }
            }
            self.counts.add("devices whose files were read back");
            if found != dev.files {
                let want: Vec<&String> = dev.files.keys().collect();
                let got: Vec<&String> = found.keys().collect();
                diverged!(
                    self,
                    "{id} holds files {got:?} (contents differ?), the model {want:?}"
                );
            }
        }
    }
}

/// The files `f<n>` in `dir` with their contents.
fn read_files(dir: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with('f') && name[1..].chars().all(|c| c.is_ascii_digit()) {
            let text = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
            files.insert(name, text);
        }
    }
    files
}
