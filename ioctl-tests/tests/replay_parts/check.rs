//! The checks at a replay point.
//!
//! - quick (every point): the pool's metadata read in-process from the
//!   replay file, as the kernel would find it after the crash: it must be
//!   whole (every tree and space map walks), hold every thin of an
//!   acknowledged device and none the model cannot explain.
//! - full (every acknowledgement and a sample of the rest): on a
//!   copy-on-write view of the replay, the root filesystem is mounted (its
//!   journal recovers), the set is opened for real (it repairs), every
//!   acknowledged operation must be there, the records must name exactly
//!   the pool's thins, and `thin_check` must pass on the metadata afterwards.

use super::disks::{node, MIB, ROOT_BYTES};
use super::model::Expect;
use dmthin::deviceset::{AutoextendOptions, DeviceSet, Options, Presence};
use dmthin::thinmeta::{Metadata, ReadAt, Source};
use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::path::Path;

/// A byte range of a file, read as a device of its own.
struct Segment<'a> {
    file: &'a File,
    offset: u64,
    len: u64,
}

impl ReadAt for Segment<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset.saturating_add(buf.len() as u64) > self.len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        std::os::unix::fs::FileExt::read_exact_at(self.file, buf, self.offset + offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.len)
    }
}

/// Thin ids of the metadata in `reader`, after walking every tree and the
/// data space map (a torn commit fails here).
fn pool_thins(reader: impl ReadAt) -> Result<BTreeSet<u32>, String> {
    let md = Metadata::open(reader, Source::Live).map_err(|e| e.to_string())?;
    md.usage().map_err(|e| e.to_string())?;
    Ok(md.thin_ids().into_iter().collect())
}

/// The thins the model requires are there, and every thin there is one it allows.
fn compare_thins(found: &BTreeSet<u32>, e: &Expect) -> Result<(), String> {
    let missing: Vec<_> = e.required_thins.difference(found).collect();
    let unexplained: Vec<_> = found.difference(&e.allowed_thins).collect();
    if missing.is_empty() && unexplained.is_empty() {
        return Ok(());
    }
    Err(format!(
        "pool thins {found:?}: missing acknowledged {missing:?}, unexplained {unexplained:?}"
    ))
}

/// The quick check on the replay file (the logged device's image), its
/// metadata segment `meta_bytes` long.
pub fn quick(replay: &File, meta_bytes: u64, e: &Expect) -> Result<(), String> {
    let seg = Segment {
        file: replay,
        offset: ROOT_BYTES,
        len: meta_bytes,
    };
    let found = pool_thins(seg).map_err(|m| format!("pool metadata: {m}"))?;
    compare_thins(&found, e)
}

/// The autoextend options the workload remembers.
pub const AUTOEXTEND: AutoextendOptions = AutoextendOptions {
    threshold_percent: 90,
    extend_percent: 10,
    max_data_size: Some(512 * MIB),
    max_metadata_size: None,
};

/// Time spent in each phase of the full checks.
#[derive(Debug, Default)]
pub struct Phases {
    pub open: std::time::Duration,
    pub compare: std::time::Duration,
    pub shutdown: std::time::Duration,
    /// Reading the pool's thins and `thin_check`.
    pub thin_check: std::time::Duration,
}

/// The full check on a view mounted with the set's root at `root`: open
/// (repairing), compare with the model, shut down, then the pool's thins
/// and `thin_check` on the metadata device. `fresh` are the options of a
/// set not yet recorded. Before the set's creation returned, only the
/// records against the pool and `thin_check` are checked (a repaired
/// creation may pick another base thin).
pub fn full(root: &Path, e: &Expect, fresh: &Options, phases: &mut Phases) -> Result<(), String> {
    let t = std::time::Instant::now();
    let options = match DeviceSet::recorded_options(root) {
        Ok(Some(mut o)) => {
            o.busy_retries = 3;
            o.udev_timeout = fresh.udev_timeout;
            o
        }
        Ok(None) if !e.created => fresh.clone(),
        Ok(None) => return Err("no set record, though the set's creation returned".into()),
        Err(err) => return Err(format!("reading the set's options: {err}")),
    };
    let set = DeviceSet::open(root, options).map_err(|err| format!("open: {err}"))?;
    phases.open += t.elapsed();
    let t = std::time::Instant::now();
    let compared = compare_set(&set, e);
    phases.compare += t.elapsed();
    let t = std::time::Instant::now();
    let shut = set.shutdown().map_err(|err| format!("shutdown: {err}"));
    phases.shutdown += t.elapsed();
    let t = std::time::Instant::now();
    let records = compared?;
    shut?;
    drop(set);
    let meta = File::open(node("meta")).map_err(|err| format!("metadata device: {err}"))?;
    let found = pool_thins(&meta).map_err(|m| format!("pool metadata after open: {m}"))?;
    if found != records {
        return Err(format!(
            "after open, the pool's thins {found:?} are not the records' {records:?}"
        ));
    }
    if e.created {
        compare_thins(&found, e)?;
    }
    let out = std::process::Command::new("thin_check")
        .arg(node("meta"))
        .output()
        .map_err(|err| format!("thin_check: {err}"))?;
    phases.thin_check += t.elapsed();
    if !out.status.success() {
        return Err(format!(
            "thin_check: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// The opened set against the model; returns the thin ids its records name
/// (the base's included).
fn compare_set(set: &DeviceSet, e: &Expect) -> Result<BTreeSet<u32>, String> {
    let unsettled = set.unsettled_ids().map_err(|err| err.to_string())?;
    if !unsettled.is_empty() {
        return Err(format!("a healthy open left {unsettled:?} unsettled"));
    }
    let list = set.list().map_err(|err| format!("list: {err}"))?;
    let listed: BTreeSet<&str> = list.iter().map(|d| d.id.as_str()).collect();
    for id in &e.present {
        let p = set.presence(id).map_err(|err| err.to_string())?;
        if p != Presence::Present || !listed.contains(id.as_str()) {
            return Err(format!(
                "acknowledged device {id} is {p:?} (listed: {listed:?})"
            ));
        }
    }
    for id in &e.absent {
        let p = set.presence(id).map_err(|err| err.to_string())?;
        if p != Presence::Absent || listed.contains(id.as_str()) {
            return Err(format!("device {id} should be absent but is {p:?}"));
        }
    }
    for d in &list {
        if e.initialized.contains(&d.id) && !d.initialized {
            return Err(format!("{} was marked initialized, the mark is lost", d.id));
        }
    }
    if e.autoextend_remembered {
        let o = set.autoextend_options().map_err(|err| err.to_string())?;
        if o != Some(AUTOEXTEND) {
            return Err(format!("remembered autoextend options lost: {o:?}"));
        }
    }
    let mut thins: BTreeSet<u32> = list.iter().map(|d| d.thin_id).collect();
    let status = set.status().map_err(|err| format!("status: {err}"))?;
    thins.insert(status.base_thin_id);
    Ok(thins)
}
