//! The snapshotter's logic, over any [`Devices`]: keys, kinds, parents,
//! labels, and the crash protocol (see the crate docs in `main.rs`).
//!
//! Calls are synchronous and may block on the device set; the gRPC layer
//! runs them on tokio's blocking pool. The in-memory state sits behind one
//! mutex that is only held for map look-ups and updates, never across a
//! device-set call or an fsync: a snapshot being changed is marked `busy`
//! instead, and a second change to the same snapshot is refused with
//! `Unavailable` meanwhile.

use crate::devices::{DevErrorKind, Devices};
use crate::error::{Code, Error, Result};
use crate::failpoint::fail_point;
use crate::filter::{Filter, SnapshotFields};
use crate::store::{Kind, Record, Stamp, State, Store, FORMAT};
use dmthin::deviceset::Presence;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// The device that parentless snapshots are taken from: the base device
/// with `lost+found` removed.
pub const TEMPLATE: &str = "snap-base";
/// Prefix of snapshot device ids (`snap-<n>`).
const PREFIX: &str = "snap-";
/// Longest key or name accepted.
pub const MAX_KEY: usize = 4096;
/// Longest label (key plus value), as containerd's `labels.Validate`.
pub const MAX_LABEL: usize = 4096;
/// Most label bytes per snapshot.
pub const MAX_LABELS_TOTAL: usize = 64 * 1024;

/// The number of a snapshot device id, if `id` is one.
pub fn snap_number(id: &str) -> Option<u64> {
    let n = id.strip_prefix(PREFIX)?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || n.starts_with('0') {
        return None;
    }
    n.parse().ok()
}

/// A snapshot as callers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Kind.
    pub kind: Kind,
    /// Key or name.
    pub name: String,
    /// Parent name ("" for none).
    pub parent: String,
    /// Labels.
    pub labels: HashMap<String, String>,
    /// Creation time.
    pub created: Stamp,
    /// Last update.
    pub updated: Stamp,
}

impl From<&Record> for Info {
    fn from(r: &Record) -> Info {
        Info {
            kind: r.kind,
            name: r.key.clone(),
            parent: r.parent.clone().unwrap_or_default(),
            labels: r.labels.clone().into_iter().collect(),
            created: r.created,
            updated: r.updated,
        }
    }
}

/// A mount for containerd to perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Filesystem type.
    pub fs_type: String,
    /// Block device.
    pub source: String,
    /// Mount options.
    pub options: Vec<String>,
}

struct Entry {
    rec: Record,
    /// A call is changing this snapshot.
    busy: bool,
    /// Its block device, once known.
    path: Option<PathBuf>,
}

#[derive(Default)]
struct Tables {
    /// Device id → snapshot.
    by_device: HashMap<String, Entry>,
    /// Key or name → device id (also names reserved by a commit in flight).
    by_key: HashMap<String, String>,
    /// The next device number.
    next: u64,
}

impl Tables {
    /// The ready snapshot called `key`.
    fn visible(&self, key: &str) -> Result<(&String, &Entry)> {
        let dev = self.by_key.get(key).ok_or_else(|| Error::not_found(key))?;
        match self.by_device.get(dev) {
            Some(e) if e.rec.key == key && e.rec.state == State::Ready => Ok((dev, e)),
            _ => Err(Error::not_found(key)),
        }
    }

    /// Like [`Tables::visible`], and marks it busy; refused if it is busy already.
    fn claim(&mut self, key: &str) -> Result<(String, Record)> {
        let (dev, e) = self.visible(key)?;
        if e.busy {
            return Err(Error::new(
                Code::Unavailable,
                format!("snapshot {key:?} is being changed by another call; try again"),
            ));
        }
        let dev = dev.clone();
        let e = self.by_device.get_mut(&dev).expect("visible entry");
        e.busy = true;
        Ok((dev, e.rec.clone()))
    }

    fn release(&mut self, dev: &str, rec: Option<Record>) {
        if let Some(e) = self.by_device.get_mut(dev) {
            e.busy = false;
            if let Some(r) = rec {
                e.rec = r;
            }
        }
    }

    fn forget(&mut self, dev: &str) {
        if let Some(e) = self.by_device.remove(dev) {
            if self.by_key.get(&e.rec.key).map(String::as_str) == Some(dev) {
                self.by_key.remove(&e.rec.key);
            }
        }
    }
}

/// The snapshotter over a device layer.
pub struct Engine<D: Devices> {
    devs: D,
    store: Store,
    tables: Mutex<Tables>,
}

fn check_key(what: &str, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::new(
            Code::InvalidArgument,
            format!("{what} is empty"),
        ));
    }
    if key.len() > MAX_KEY {
        return Err(Error::new(
            Code::InvalidArgument,
            format!("{what} is {} bytes, more than {MAX_KEY}", key.len()),
        ));
    }
    if key.contains('\0') {
        return Err(Error::new(
            Code::InvalidArgument,
            format!("{what} {key:?} contains a NUL"),
        ));
    }
    Ok(())
}

/// Checks labels as containerd does (key plus value at most 4096 bytes), and their total.
pub fn check_labels<'a>(labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> Result<()> {
    let mut total = 0;
    for (k, v) in labels {
        let n = k.len() + v.len();
        if n > MAX_LABEL {
            let short: String = k.chars().take(10).collect();
            return Err(Error::new(
                Code::InvalidArgument,
                format!("label key and value greater than maximum size ({MAX_LABEL} bytes), key: {short}"),
            ));
        }
        if k.contains('\0') {
            return Err(Error::new(
                Code::InvalidArgument,
                "label key contains a NUL",
            ));
        }
        total += n;
    }
    if total > MAX_LABELS_TOTAL {
        return Err(Error::new(
            Code::InvalidArgument,
            format!("labels take {total} bytes, more than {MAX_LABELS_TOTAL}"),
        ));
    }
    Ok(())
}

/// Labels as stored: empty values are dropped (containerd does the same).
fn stored_labels(labels: HashMap<String, String>) -> BTreeMap<String, String> {
    labels.into_iter().filter(|(_, v)| !v.is_empty()).collect()
}

impl<D: Devices> Engine<D> {
    /// Opens the snapshotter state in `dir` over `devs`, finishing or rolling
    /// back what a crash interrupted, and making the template device if missing.
    pub fn open(devs: D, dir: &Path) -> Result<Engine<D>> {
        std::fs::create_dir_all(dir)?;
        let store = Store::open(&dir.join("snapshots"))?;
        let engine = Engine {
            devs,
            store,
            tables: Mutex::new(Tables::default()),
        };
        engine.ensure_template(dir)?;
        engine.reconcile()?;
        Ok(engine)
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ensure_template(&self, dir: &Path) -> Result<()> {
        let marker = dir.join("template.json");
        let present = self.devs.presence(TEMPLATE)? == Presence::Present;
        if marker.exists() && present {
            return Ok(());
        }
        if present {
            log::info!("removing the unfinished template device {TEMPLATE}");
            self.devs.remove(TEMPLATE)?;
        }
        log::info!("making the template device {TEMPLATE} (base without lost+found)");
        self.devs
            .make_template(TEMPLATE, &dir.join("template-mnt"))?;
        fail_point!("snap.template.after_device")?;
        dmthin::durable::write_file(&marker, br#"{"device":"snap-base"}"#)
            .map_err(std::io::Error::from)?;
        Ok(())
    }

    /// Startup repair: Creating records are rolled back, Removing ones
    /// finished, Ready ones without a device dropped, and snapshot devices
    /// no record names removed.
    fn reconcile(&self) -> Result<()> {
        let (recs, damaged) = self.store.load()?;
        let mut referenced = BTreeSet::new();
        let mut max = 0;
        for d in &damaged {
            log::error!(
                "ignoring damaged snapshot record {}: {} (its device is kept)",
                d.path.display(),
                d.reason
            );
            if let Some(stem) = d.path.file_stem().and_then(|s| s.to_str()) {
                referenced.insert(stem.to_string());
                max = max.max(snap_number(stem).unwrap_or(0));
            }
        }
        // A device whose add or remove the pool has not confirmed (a set
        // opened degraded) is neither kept nor dropped yet: its record stays
        // as it is, and its number is never given out again.
        for id in self.devs.unsettled_ids()? {
            max = max.max(snap_number(&id).unwrap_or(0));
        }
        let mut t = self.tables();
        for rec in recs {
            max = max.max(snap_number(&rec.device).unwrap_or(0));
            let presence = self.devs.presence(&rec.device)?;
            if presence == Presence::Uncertain {
                log::warn!(
                    "snapshot {:?} (device {}): the device set cannot tell yet whether its device exists; the record is kept{}",
                    rec.key,
                    rec.device,
                    if rec.state == State::Ready { "" } else { " and settled at a later start" }
                );
                referenced.insert(rec.device.clone());
                if rec.state != State::Ready {
                    continue;
                }
            }
            let drop_reason = match rec.state {
                State::Creating => Some("rolling back an interrupted prepare/view of"),
                State::Removing => Some("finishing an interrupted removal of"),
                State::Ready if presence == Presence::Absent => {
                    Some("dropping (its device is gone from the device set)")
                }
                State::Ready if t.by_key.contains_key(&rec.key) => {
                    Some("dropping a duplicate record of")
                }
                State::Ready => None,
            };
            if let Some(why) = drop_reason {
                log::warn!("{why} snapshot {:?} (device {})", rec.key, rec.device);
                if rec.state != State::Ready && presence == Presence::Present {
                    self.devs.remove(&rec.device)?;
                }
                self.store.remove(&rec.device)?;
                continue;
            }
            referenced.insert(rec.device.clone());
            t.by_key.insert(rec.key.clone(), rec.device.clone());
            t.by_device.insert(
                rec.device.clone(),
                Entry {
                    rec,
                    busy: false,
                    path: None,
                },
            );
        }
        for id in self.devs.ids()? {
            if let Some(n) = snap_number(&id) {
                max = max.max(n);
                if !referenced.contains(&id) {
                    log::warn!("removing device {id}: no snapshot refers to it");
                    self.devs.remove(&id)?;
                }
            }
        }
        t.next = max + 1;
        drop(t);
        if let Err(e) = self.devs.cleanup_deferred() {
            log::warn!("finishing deferred removals: {e}");
        }
        Ok(())
    }

    fn mounts(&self, kind: Kind, path: &Path) -> Vec<Mount> {
        let mut options = Vec::new();
        if self.devs.fs_type() == "xfs" {
            options.push("nouuid".to_string());
        }
        if kind != Kind::Active {
            options.push("ro".to_string());
        }
        vec![Mount {
            fs_type: self.devs.fs_type().to_string(),
            source: path.display().to_string(),
            options,
        }]
    }

    /// Prepare (`Kind::Active`) or View (`Kind::View`).
    pub fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>> {
        check_key("key", key)?;
        check_labels(&labels)?;
        let (device, parent_dev, rec) = {
            let mut t = self.tables();
            if t.by_key.contains_key(key) {
                return Err(Error::new(
                    Code::AlreadyExists,
                    format!("snapshot {key:?} already exists"),
                ));
            }
            let parent_dev = if parent.is_empty() {
                TEMPLATE.to_string()
            } else {
                let (dev, e) = t.visible(parent).map_err(|_| {
                    Error::new(
                        Code::NotFound,
                        format!("parent snapshot {parent:?} does not exist"),
                    )
                })?;
                if e.rec.kind != Kind::Committed {
                    return Err(Error::new(
                        Code::InvalidArgument,
                        format!("parent {parent:?} is not a committed snapshot"),
                    ));
                }
                dev.clone()
            };
            let device = format!("{PREFIX}{}", t.next);
            t.next += 1;
            let now = Stamp::now();
            let rec = Record {
                format: FORMAT,
                device: device.clone(),
                key: key.to_string(),
                kind,
                parent: (!parent.is_empty()).then(|| parent.to_string()),
                labels: stored_labels(labels),
                created: now,
                updated: now,
                state: State::Creating,
                mapped_bytes: None,
            };
            t.by_key.insert(key.to_string(), device.clone());
            t.by_device.insert(
                device.clone(),
                Entry {
                    rec: rec.clone(),
                    busy: true,
                    path: None,
                },
            );
            (device, parent_dev, rec)
        };
        let made = (|| -> Result<(Record, PathBuf)> {
            self.store.write(&rec)?;
            fail_point!("snap.create.after_intent")?;
            self.devs.create(&device, Some(&parent_dev))?;
            fail_point!("snap.create.after_device")?;
            let path = self.devs.activate(&device)?;
            let ready = Record {
                state: State::Ready,
                ..rec.clone()
            };
            self.store.write(&ready)?;
            fail_point!("snap.create.after_ready")?;
            Ok((ready, path))
        })();
        match made {
            Ok((ready, path)) => {
                let mounts = self.mounts(kind, &path);
                let mut t = self.tables();
                t.release(&device, Some(ready));
                if let Some(e) = t.by_device.get_mut(&device) {
                    e.path = Some(path);
                }
                Ok(mounts)
            }
            Err(e) => {
                log::warn!("prepare/view of {key:?} failed, rolling back: {e}");
                if matches!(self.devs.presence(&device), Ok(Presence::Present)) {
                    if let Err(e) = self.devs.remove(&device) {
                        log::warn!("rollback: removing device {device}: {e} (Cleanup retries)");
                    }
                }
                if let Err(e) = self.store.remove(&device) {
                    log::warn!("rollback: removing record {device}: {e} (startup retries)");
                }
                self.tables().forget(&device);
                Err(e)
            }
        }
    }

    /// The mounts of an active snapshot or a view.
    pub fn mounts_of(&self, key: &str) -> Result<Vec<Mount>> {
        let (dev, kind, path) = {
            let t = self.tables();
            let (dev, e) = t.visible(key)?;
            if e.rec.kind == Kind::Committed {
                return Err(Error::new(
                    Code::FailedPrecondition,
                    format!("snapshot {key:?} is committed, not active"),
                ));
            }
            (dev.clone(), e.rec.kind, e.path.clone())
        };
        let path = match path {
            Some(p) if p.exists() => p,
            _ => {
                let p = self.devs.activate(&dev)?;
                if let Some(e) = self.tables().by_device.get_mut(&dev) {
                    e.path = Some(p.clone());
                }
                p
            }
        };
        Ok(self.mounts(kind, &path))
    }

    /// Commits active snapshot `key` as `name`.
    pub fn commit(&self, name: &str, key: &str, labels: HashMap<String, String>) -> Result<()> {
        check_key("name", name)?;
        check_labels(&labels)?;
        let (dev, rec) = {
            let mut t = self.tables();
            let kind = t.visible(key)?.1.rec.kind;
            if kind != Kind::Active {
                return Err(Error::new(
                    Code::FailedPrecondition,
                    format!("snapshot {key:?} is not active"),
                ));
            }
            if t.by_key.contains_key(name) {
                return Err(Error::new(
                    Code::AlreadyExists,
                    format!("snapshot {name:?} already exists"),
                ));
            }
            let (dev, rec) = t.claim(key)?;
            t.by_key.insert(name.to_string(), dev.clone());
            (dev, rec)
        };
        let mapped = match self.devs.mapped_bytes(&dev) {
            Ok(m) => m,
            Err(e) => {
                log::warn!("usage of {dev} at commit: {e}");
                None
            }
        };
        let now = Stamp::now();
        let rec_before = rec.clone();
        let committed = Record {
            key: name.to_string(),
            kind: Kind::Committed,
            labels: stored_labels(labels),
            created: now,
            updated: now,
            mapped_bytes: mapped,
            ..rec
        };
        // A failure just after the write (the injected one) puts the
        // active record back: the commit did not happen.
        let written = self
            .store
            .write(&committed)
            .map_err(Error::from)
            .and_then(|()| {
                fail_point!("snap.commit.after_write").inspect_err(|_| {
                    if let Err(e) = self.store.write(&rec_before) {
                        log::warn!("undoing the commit of {key:?}: rewriting {dev}: {e}");
                    }
                })
            });
        if let Err(e) = written {
            let mut t = self.tables();
            t.by_key.remove(name);
            t.release(&dev, None);
            return Err(e);
        }
        {
            let mut t = self.tables();
            t.by_key.remove(key);
            t.release(&dev, Some(committed));
        }
        // A committed device is only a parent from now on: deactivate it
        // unless containerd still has it mounted (it may unmount later).
        match self.devs.deactivate_if_unused(&dev) {
            Ok(_) => {}
            Err(e) => log::warn!("deactivating committed {dev}: {e}"),
        }
        Ok(())
    }

    /// Removes snapshot `key` (refused while it has children).
    pub fn remove(&self, key: &str) -> Result<()> {
        let (dev, rec) = {
            let mut t = self.tables();
            t.visible(key)?;
            let has_child = t
                .by_device
                .values()
                .any(|e| e.rec.parent.as_deref() == Some(key));
            if has_child {
                return Err(Error::new(
                    Code::FailedPrecondition,
                    format!("cannot remove snapshot {key:?}: it has children"),
                ));
            }
            let (dev, rec) = t.claim(key)?;
            // Hidden from now on, and no longer a possible parent.
            if let Some(e) = t.by_device.get_mut(&dev) {
                e.rec.state = State::Removing;
            }
            (dev, rec)
        };
        let restore = |err: Error| {
            let _ = self.store.write(&rec);
            self.tables().release(&dev, Some(rec.clone()));
            Err(err)
        };
        let removing = Record {
            state: State::Removing,
            ..rec.clone()
        };
        if let Err(e) = self.store.write(&removing) {
            return restore(e.into());
        }
        if let Err(e) = fail_point!("snap.remove.after_intent") {
            return restore(e);
        }
        match self.devs.remove(&dev) {
            Ok(()) => {}
            Err(e) if e.kind == DevErrorKind::NotFound => {}
            Err(e) => return restore(e.into()),
        }
        // Past the device's removal there is no way back: a failure to drop
        // the record (or the injected one) leaves it `removing`, which the
        // next start finishes.
        let dropped = fail_point!("snap.remove.after_device")
            .and_then(|()| self.store.remove(&dev).map_err(Error::from));
        if let Err(e) = dropped {
            log::warn!("removing record {dev}: {e} (finished at the next start)");
        }
        self.tables().forget(&dev);
        Ok(())
    }

    /// Information about `key`.
    pub fn stat(&self, key: &str) -> Result<Info> {
        Ok(Info::from(&self.tables().visible(key)?.1.rec))
    }

    /// Updates the labels of `info.name` (the only mutable field), as
    /// containerd's `storage.UpdateInfo`: no field paths replace every label,
    /// `labels` does the same, `labels.KEY` sets or clears one; any other
    /// path is InvalidArgument.
    pub fn update(&self, info: Info, paths: &[String]) -> Result<Info> {
        check_labels(&info.labels)?;
        let (dev, rec) = self.tables().claim(&info.name)?;
        let mut labels: HashMap<String, String> = rec.labels.clone().into_iter().collect();
        let mut bad = None;
        if paths.is_empty() {
            labels = info.labels.clone();
        }
        for p in paths {
            if let Some(k) = p.strip_prefix("labels.") {
                labels.insert(
                    k.to_string(),
                    info.labels.get(k).cloned().unwrap_or_default(),
                );
            } else if p == "labels" {
                labels = info.labels.clone();
            } else {
                bad = Some(p.clone());
                break;
            }
        }
        let checked = match bad {
            Some(p) => Err(Error::new(
                Code::InvalidArgument,
                format!("cannot update {p:?} field on snapshot {:?}", info.name),
            )),
            None => check_labels(&labels),
        };
        if let Err(e) = checked {
            self.tables().release(&dev, None);
            return Err(e);
        }
        let updated = Record {
            labels: stored_labels(labels),
            updated: Stamp::now(),
            ..rec
        };
        if let Err(e) = self.store.write(&updated) {
            self.tables().release(&dev, None);
            return Err(e.into());
        }
        let out = Info::from(&updated);
        self.tables().release(&dev, Some(updated));
        Ok(out)
    }

    /// Bytes `key` uses on its own (its mapped blocks less its parent's) and inodes (0: not known).
    pub fn usage(&self, key: &str) -> Result<(u64, u64)> {
        let (dev, rec, parent_bytes) = {
            let t = self.tables();
            let (dev, e) = t.visible(key)?;
            let parent_bytes = e
                .rec
                .parent
                .as_deref()
                .and_then(|p| t.visible(p).ok())
                .and_then(|(_, pe)| pe.rec.mapped_bytes)
                .unwrap_or(0);
            (dev.clone(), e.rec.clone(), parent_bytes)
        };
        let own = match rec.kind {
            Kind::Active => self.devs.mapped_bytes(&dev)?.unwrap_or(0),
            Kind::Committed => rec.mapped_bytes.unwrap_or(0),
            Kind::View => return Ok((0, 0)),
        };
        Ok((own.saturating_sub(parent_bytes), 0))
    }

    /// Every snapshot that passes `filters` (containerd's syntax).
    pub fn walk(&self, filters: &[String]) -> Result<Vec<Info>> {
        let filter =
            Filter::parse_all(filters).map_err(|e| Error::new(Code::InvalidArgument, e))?;
        let t = self.tables();
        let mut out: Vec<Info> = t
            .by_device
            .values()
            .filter(|e| {
                e.rec.state == State::Ready && t.by_key.get(&e.rec.key) == Some(&e.rec.device)
            })
            .map(|e| Info::from(&e.rec))
            .filter(|i| {
                filter.matches(&SnapshotFields {
                    kind: i.kind.as_str(),
                    name: &i.name,
                    parent: &i.parent,
                    labels: &i.labels,
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Deactivates every device and removes the pool (`--teardown-on-exit`).
    pub fn teardown(&self) -> Result<()> {
        Ok(self.devs.teardown()?)
    }

    /// Removes snapshot devices no snapshot refers to, and finishes deferred removals.
    pub fn cleanup(&self) -> Result<()> {
        if let Err(e) = self.devs.cleanup_deferred() {
            log::warn!("cleanup: deferred removals: {e}");
        }
        let ids = self.devs.ids()?;
        let orphans: Vec<String> = {
            let t = self.tables();
            ids.into_iter()
                .filter(|id| snap_number(id).is_some() && !t.by_device.contains_key(id))
                .collect()
        };
        for id in orphans {
            log::info!("cleanup: removing device {id}, which no snapshot refers to");
            self.devs.remove(&id)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
