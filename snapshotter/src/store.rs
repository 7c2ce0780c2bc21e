//! The snapshot records: one JSON file per snapshot under
//! `<root>/snapshotter/snapshots/<device id>.json`.
//!
//! File names are device ids (`snap-<n>`), never snapshot keys, so a key
//! can hold any character. Every write and removal is durable through the
//! library's [`dmthin::durable`] (temp file, fsync, rename, directory
//! fsync), so a record is either its old or its new content after a crash,
//! never a mix.

use dmthin::durable;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The record format version.
pub const FORMAT: u32 = 1;

/// A snapshot's kind, as containerd knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Writable, from Prepare.
    Active,
    /// Read-only, from View.
    View,
    /// Read-only parent, from Commit.
    Committed,
}

impl Kind {
    /// containerd's filter name of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Active => "active",
            Kind::View => "view",
            Kind::Committed => "committed",
        }
    }
}

/// Where a snapshot is in its life; only `Ready` ones are visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Intent: the device may or may not exist yet. Rolled back at startup.
    Creating,
    /// Complete.
    Ready,
    /// Intent: the device may or may not be gone yet. Finished at startup.
    Removing,
}

/// A point in time, stored as seconds and nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Stamp {
    /// Seconds since the epoch.
    pub secs: u64,
    /// Nanoseconds.
    pub nanos: u32,
}

impl Stamp {
    /// Now.
    pub fn now() -> Stamp {
        Stamp::from(SystemTime::now())
    }
}

impl From<SystemTime> for Stamp {
    fn from(t: SystemTime) -> Stamp {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        Stamp {
            secs: d.as_secs(),
            nanos: d.subsec_nanos(),
        }
    }
}

impl From<Stamp> for SystemTime {
    fn from(s: Stamp) -> SystemTime {
        UNIX_EPOCH + Duration::new(s.secs, s.nanos)
    }
}

/// One snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// [`FORMAT`].
    pub format: u32,
    /// The device set id of its thin device (also the file name).
    pub device: String,
    /// Its key (active, view) or name (committed).
    pub key: String,
    /// Its kind.
    pub kind: Kind,
    /// The parent's name, if any.
    pub parent: Option<String>,
    /// containerd's labels.
    pub labels: BTreeMap<String, String>,
    /// When it was made (for a committed one: when it was committed).
    pub created: Stamp,
    /// When it last changed.
    pub updated: Stamp,
    /// Where it is in its life.
    pub state: State,
    /// Bytes the pool had mapped for the device when it was committed.
    #[serde(default)]
    pub mapped_bytes: Option<u64>,
}

/// The directory of records.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
}

/// A record file that could not be read (reported, then ignored).
#[derive(Debug)]
pub struct Damaged {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

impl Store {
    /// Opens (creating) the record directory `dir`.
    pub fn open(dir: &Path) -> io::Result<Store> {
        fs::create_dir_all(dir)?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, device: &str) -> PathBuf {
        self.dir.join(format!("{device}.json"))
    }

    /// Writes `rec` durably (temp file, fsync, rename, directory fsync).
    pub fn write(&self, rec: &Record) -> io::Result<()> {
        let data = serde_json::to_vec_pretty(rec).map_err(io::Error::other)?;
        Ok(durable::write_file(&self.path(&rec.device), &data)?)
    }

    /// Removes the record of `device` durably; a missing one is fine.
    pub fn remove(&self, device: &str) -> io::Result<()> {
        durable::remove_file(&self.path(device))?;
        Ok(())
    }

    /// Every record, and the files that could not be read. Leftover
    /// temporary files of an interrupted write are deleted (call it only
    /// when no write is in flight).
    pub fn load(&self) -> io::Result<(Vec<Record>, Vec<Damaged>)> {
        let mut recs = Vec::new();
        let mut bad = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            // `.tmp`: the temp files of builds before the library's writer.
            if durable::is_temp_file(name) || name.ends_with(".tmp") {
                let _ = fs::remove_file(&path);
                continue;
            }
            let Some(stem) = name.strip_suffix(".json") else {
                continue;
            };
            let parsed = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|d| serde_json::from_slice::<Record>(&d).map_err(|e| e.to_string()))
                .and_then(|r| {
                    if r.device != stem {
                        Err(format!("records device {:?}", r.device))
                    } else if r.format != FORMAT {
                        Err(format!("unknown format {}", r.format))
                    } else {
                        Ok(r)
                    }
                });
            match parsed {
                Ok(r) => recs.push(r),
                Err(reason) => bad.push(Damaged { path, reason }),
            }
        }
        recs.sort_by(|a, b| a.device.cmp(&b.device));
        Ok((recs, bad))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(device: &str, key: &str) -> Record {
        Record {
            format: FORMAT,
            device: device.into(),
            key: key.into(),
            kind: Kind::Committed,
            parent: Some("p/1".into()),
            labels: [("a".to_string(), "b".to_string())].into(),
            created: Stamp { secs: 5, nanos: 7 },
            updated: Stamp::now(),
            state: State::Ready,
            mapped_bytes: Some(65536),
        }
    }

    #[test]
    fn round_trip_overwrite_remove() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("snaps")).unwrap();
        let mut r = rec("snap-1", "default/1/sha256:x\n\"y\"");
        s.write(&r).unwrap();
        r.state = State::Removing;
        s.write(&r).unwrap();
        s.write(&rec("snap-2", "k")).unwrap();
        let (recs, bad) = s.load().unwrap();
        assert!(bad.is_empty());
        assert_eq!(
            recs,
            vec![r, rec("snap-2", "k")]
                .into_iter()
                .map(|mut x| {
                    x.updated = recs.iter().find(|y| y.device == x.device).unwrap().updated;
                    x
                })
                .collect::<Vec<_>>()
        );
        s.remove("snap-1").unwrap();
        s.remove("snap-1").unwrap();
        assert_eq!(s.load().unwrap().0.len(), 1);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("snaps/snap-2.json"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn damaged_and_mismatched_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("snap-1.json"), b"{").unwrap();
        let mut r = rec("snap-3", "k");
        s.write(&r).unwrap();
        std::fs::rename(
            dir.path().join("snap-3.json"),
            dir.path().join("snap-2.json"),
        )
        .unwrap();
        r.format = 99;
        r.device = "snap-4".into();
        s.write(&r).unwrap();
        std::fs::write(dir.path().join("snap-5.json.tmp"), b"half").unwrap();
        std::fs::write(dir.path().join(".tmp~1-2-3~4"), b"half").unwrap();
        std::fs::write(dir.path().join("README"), b"ignored").unwrap();
        let (recs, bad) = s.load().unwrap();
        assert!(recs.is_empty());
        let mut names: Vec<_> = bad
            .iter()
            .map(|d| d.path.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["snap-1.json", "snap-2.json", "snap-4.json"]);
        assert!(!dir.path().join("snap-5.json.tmp").exists());
        assert!(!dir.path().join(".tmp~1-2-3~4").exists());
    }

    #[test]
    fn stamps_convert_exactly() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(SystemTime::from(Stamp::from(t)), t);
    }
}
