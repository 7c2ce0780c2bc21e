//! The intent journal: `metadata/journal`, append-only, one line per entry.
//!
//! An add or a remove costs one durable write: its intent is appended and
//! `fdatasync`ed before the pool is asked, and no transaction id is moved.
//! Its outcome follows as a marker written without a sync (`done`) or, on
//! the rare failure path, with one (`cancel`). A marker lost in a power cut
//! leaves the intent *unresolved*, and the next open reads the pool's real
//! state: a create whose thin exists is finished, one whose thin is missing
//! is dropped, a delete is tried again (deleting a missing thin is fine).
//!
//! An entry is unresolved only when nothing was appended after it: the next
//! entry's `fdatasync` makes every earlier write of the file durable,
//! markers included, and an operation that cannot write its marker stops
//! the journal (every later append fails until the set is opened again).
//! The thin id of an unresolved entry stays used until it is resolved, so a
//! later create never takes it.
//!
//! Each line is `<16 hex digits of FNV-1a 64 of the JSON> <JSON>\n`. A line
//! that is incomplete or fails its check at the end of the file is the torn
//! tail of an interrupted append (never acknowledged: its sync had not
//! returned) and is cut off; one followed by good lines is damage, and the
//! open fails naming the file.
//!
//! The journal is folded into the per-device record files from time to time
//! (see `MetadataStore::write_records`), then emptied.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{io_err, ProblemReason, StoreError};
use super::records::DeviceRecord;

/// The journal's file name in the metadata directory.
pub const JOURNAL_FILE: &str = "journal";

/// Largest journal read at open; a bigger one is reported as damaged.
const MAX_JOURNAL_BYTES: u64 = 256 << 20;

/// Bytes of zeros the journal is kept written to. An append then overwrites
/// blocks that are allocated and written, so its `fdatasync` flushes the
/// data alone, with no file system journal commit (the file grows past it
/// only when a fold is overdue).
pub const PREALLOC: u64 = 1 << 20;

/// How far from the end of the written bytes a damaged line may lie and
/// still be the torn tail of unsynced appends (at most an intent and the
/// marker before it, a few hundred bytes each).
const TORN_WINDOW: usize = 64 << 10;

/// What tells one thin apart from a later thin that took the same id, as
/// the pool's device-details tree records it. Every snapshot moves the
/// pool's time on, so a thin made after ours differs in its creation time,
/// or (a plain `create_thin` with no snapshot since) in its transaction id
/// or mapped blocks: a new thin maps none, ours shares its origin's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThinIdentity {
    /// The pool's time when the thin was made.
    pub creation_time: u32,
    /// The pool's time when it was last snapshotted (or made).
    pub snapshotted_time: u32,
    /// The pool's transaction id when it was made.
    pub transaction_id: u64,
    /// Data blocks it maps.
    pub mapped_blocks: u64,
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Entry {
    /// About to create `record`'s thin in the pool.
    Create {
        /// This intent's sequence number (markers name it).
        seq: u64,
        /// The record the device has once made.
        record: DeviceRecord,
    },
    /// About to delete device `device_id`'s thin `thin_id` from the pool.
    Delete {
        /// This intent's sequence number.
        seq: u64,
        /// The device.
        device_id: String,
        /// Its thin id.
        thin_id: u32,
        /// The thin's identity, recorded on a pool the set does not own
        /// (whose owner may reuse the id): a redone delete checks it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        identity: Option<ThinIdentity>,
    },
    /// A record changed without a pool step (initialized, deferred deletion).
    Update {
        /// The new record.
        record: DeviceRecord,
    },
    /// The intent `seq` happened in the pool.
    Done {
        /// The intent.
        seq: u64,
    },
    /// The intent `seq` did not happen.
    Cancel {
        /// The intent.
        seq: u64,
    },
}

/// An intent whose outcome the journal does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unresolved {
    /// A create: finished if its thin exists in the pool, else dropped.
    Create {
        /// The intent's sequence number (its settling marker names it).
        seq: u64,
        /// The record the device has once made.
        record: DeviceRecord,
    },
    /// A delete: tried again.
    Delete {
        /// The intent's sequence number.
        seq: u64,
        /// The device.
        device_id: String,
        /// Its thin id.
        thin_id: u32,
        /// The thin's identity when the delete began, if recorded.
        identity: Option<ThinIdentity>,
    },
}

impl Unresolved {
    /// The thin id it touches.
    pub fn thin_id(&self) -> u32 {
        match self {
            Unresolved::Create { record, .. } => record.thin_id,
            Unresolved::Delete { thin_id, .. } => *thin_id,
        }
    }

    /// The device id it touches.
    pub fn device_id(&self) -> &str {
        match self {
            Unresolved::Create { record, .. } => &record.id,
            Unresolved::Delete { device_id, .. } => device_id,
        }
    }

    /// The intent's sequence number.
    pub fn seq(&self) -> u64 {
        match self {
            Unresolved::Create { seq, .. } | Unresolved::Delete { seq, .. } => *seq,
        }
    }
}

/// What the journal says on top of the record files.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replay {
    /// Device id → its record after the journal (`None`: deleted).
    pub changes: BTreeMap<String, Option<DeviceRecord>>,
    /// Intents of unknown outcome, in journal order.
    pub unresolved: Vec<Unresolved>,
    /// Entries read.
    pub entries: usize,
    /// Bytes of a torn last append that were cut off.
    pub torn_bytes: u64,
}

impl Replay {
    /// Applies the resolved changes to the records loaded from the files.
    pub fn apply(&self, devices: &mut BTreeMap<String, DeviceRecord>) {
        for (id, change) in &self.changes {
            match change {
                Some(r) => {
                    devices.insert(id.clone(), r.clone());
                }
                None => {
                    devices.remove(id);
                }
            }
        }
    }
}

/// The open journal file.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Where the next append goes (the end of the good entries).
    end: u64,
    next_seq: u64,
    entries: usize,
    /// Device ids the entries touch (what a fold must write).
    touched: BTreeSet<String>,
    /// Set once an append failed: the file's end is unknown.
    stopped: Option<String>,
    /// Whether `transaction.json` says the records continue here.
    guarded: bool,
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Reads and parses the journal `file`: its entries, where the good ones
/// end, where any data ends (beyond: a torn append), and the file's length.
fn read_entries(
    file: &mut File,
    path: &Path,
) -> Result<(Vec<Entry>, usize, usize, u64), StoreError> {
    let mut bytes = Vec::new();
    file.take(MAX_JOURNAL_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err("read", path))?;
    let corrupt = |reason| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() as u64 > MAX_JOURNAL_BYTES {
        return Err(corrupt(ProblemReason::TooLarge {
            len: bytes.len() as u64,
        }));
    }
    let (entries, good, data_end) = parse(&bytes).map_err(corrupt)?;
    Ok((entries, good, data_end, bytes.len() as u64))
}

/// One entry as a journal line.
pub fn encode(entry: &Entry) -> Vec<u8> {
    let json = serde_json::to_vec(entry).expect("journal entries always serialize");
    let mut line = format!("{:016x} ", fnv1a(&json)).into_bytes();
    line.extend_from_slice(&json);
    line.push(b'\n');
    line
}

/// One line (without its newline) back into an entry; `None` if damaged.
fn decode(line: &[u8]) -> Option<Entry> {
    let (sum, json) = (line.get(..16)?, line.get(17..)?);
    if line.get(16) != Some(&b' ') {
        return None;
    }
    let sum = u64::from_str_radix(std::str::from_utf8(sum).ok()?, 16).ok()?;
    if sum != fnv1a(json) {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// Parses a journal: its entries, the length of the good prefix and the end
/// of the written bytes (the rest is zero padding). A damaged line is the
/// torn tail of appends whose sync never returned when it lies within
/// [`TORN_WINDOW`] of the written end; one further back is damage (the
/// error's reason).
pub fn parse(bytes: &[u8]) -> Result<(Vec<Entry>, usize, usize), ProblemReason> {
    let data_end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    let mut entries = Vec::new();
    let mut good = 0;
    while good < data_end {
        let line = bytes[good..data_end]
            .iter()
            .position(|b| *b == b'\n')
            .and_then(|nl| decode(&bytes[good..good + nl]).map(|e| (e, nl)));
        let Some((e, nl)) = line else {
            if data_end - good > TORN_WINDOW {
                return Err(ProblemReason::InvalidValue(format!(
                    "journal line at byte {good} is damaged, {} bytes before the journal's end",
                    data_end - good
                )));
            }
            break;
        };
        entries.push(e);
        good += nl + 1;
    }
    Ok((entries, good, data_end))
}

/// What the entries say, in order (see the module docs).
pub fn replay(entries: &[Entry]) -> Replay {
    let mut out = Replay {
        entries: entries.len(),
        ..Replay::default()
    };
    let mut open: BTreeMap<u64, Unresolved> = BTreeMap::new();
    for e in entries {
        match e {
            Entry::Create { seq, record } => {
                open.insert(
                    *seq,
                    Unresolved::Create {
                        seq: *seq,
                        record: record.clone(),
                    },
                );
            }
            Entry::Delete {
                seq,
                device_id,
                thin_id,
                identity,
            } => {
                open.insert(
                    *seq,
                    Unresolved::Delete {
                        seq: *seq,
                        device_id: device_id.clone(),
                        thin_id: *thin_id,
                        identity: *identity,
                    },
                );
            }
            Entry::Update { record } => {
                out.changes.insert(record.id.clone(), Some(record.clone()));
            }
            Entry::Done { seq } => match open.remove(seq) {
                Some(Unresolved::Create { record, .. }) => {
                    out.changes.insert(record.id.clone(), Some(record));
                }
                Some(Unresolved::Delete { device_id, .. }) => {
                    out.changes.insert(device_id, None);
                }
                None => {}
            },
            Entry::Cancel { seq } => {
                open.remove(seq);
            }
        }
    }
    out.unresolved = open.into_values().collect();
    out
}

fn touched_by(entries: &[Entry]) -> BTreeSet<String> {
    entries
        .iter()
        .filter_map(|e| match e {
            Entry::Create { record, .. } | Entry::Update { record } => Some(record.id.clone()),
            Entry::Delete { device_id, .. } => Some(device_id.clone()),
            _ => None,
        })
        .collect()
}

impl Journal {
    /// Opens (creating, durably, if needed) the journal in `meta_dir` and
    /// reads it. A torn last append is cut off; damage inside is
    /// [`StoreError::Corrupt`].
    pub fn open(meta_dir: &Path, meta_dir_file: &File) -> Result<(Journal, Replay), StoreError> {
        let path = meta_dir.join(JOURNAL_FILE);
        let existed = path.exists();
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path);
        let (mut file, read_only) = match opened {
            Ok(f) => (f, None),
            // A read-only root: replayed, and every append refused.
            Err(e) if e.raw_os_error() == Some(nix::libc::EROFS) => {
                match OpenOptions::new()
                    .read(true)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(&path)
                {
                    Ok(f) => (f, Some(e.to_string())),
                    Err(n) if n.kind() == std::io::ErrorKind::NotFound => {
                        return Ok((Journal::unwritable(path, e.to_string())?, Replay::default()))
                    }
                    Err(n) => return Err(io_err("open", &path)(n)),
                }
            }
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        if !existed && read_only.is_none() {
            meta_dir_file
                .sync_all()
                .map_err(io_err("fsync directory", meta_dir))?;
        }
        let (entries, good, data_end, len) = read_entries(&mut file, &path)?;
        let mut replay = replay(&entries);
        let stopped = read_only;
        if data_end > good {
            replay.torn_bytes = (data_end - good) as u64;
            log::warn!(
                "{}: clearing {} bytes of an interrupted append",
                path.display(),
                replay.torn_bytes
            );
        }
        let torn = data_end > good;
        if stopped.is_none() && (torn || len < PREALLOC) {
            // Zeros over a torn tail, and up to the preallocated size.
            let filled = (if torn {
                zero_fill(&file, good as u64, data_end as u64)
            } else {
                Ok(())
            })
            .and_then(|()| zero_fill(&file, len, PREALLOC))
            .and_then(|()| file.sync_data());
            match filled {
                Ok(()) => {}
                Err(e) if torn => return Err(io_err("clear the torn tail of", &path)(e)),
                // Only the preallocation failed (a full file system):
                // appends grow the file instead.
                Err(e) => log::warn!("{}: cannot preallocate: {e}", path.display()),
            }
        }
        let next_seq = entries
            .iter()
            .filter_map(|e| match e {
                Entry::Create { seq, .. }
                | Entry::Delete { seq, .. }
                | Entry::Done { seq }
                | Entry::Cancel { seq } => Some(*seq),
                Entry::Update { .. } => None,
            })
            .max()
            .map_or(1, |s| s + 1);
        let journal = Journal {
            touched: touched_by(&entries),
            path,
            file,
            end: good as u64,
            next_seq,
            entries: entries.len(),
            stopped,
            guarded: false,
        };
        Ok((journal, replay))
    }

    /// Reads the journal in `meta_dir` without changing anything: for a
    /// look beside the set's owner (who may be appending: a torn last entry
    /// is skipped, not cleared) or a process that never appends. Every
    /// append is refused.
    pub fn open_read_only(meta_dir: &Path) -> Result<(Journal, Replay), StoreError> {
        let path = meta_dir.join(JOURNAL_FILE);
        let why = "the journal is open read-only".to_string();
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path);
        let mut file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Journal::unwritable(path, why)?, Replay::default()))
            }
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        let (entries, good, _, _) = read_entries(&mut file, &path)?;
        let journal = Journal {
            touched: touched_by(&entries),
            path,
            file,
            end: good as u64,
            next_seq: 0,
            entries: entries.len(),
            stopped: Some(why),
            guarded: false,
        };
        Ok((journal, replay(&entries)))
    }

    /// A journal that does not exist and cannot be made (a read-only root):
    /// empty, every append refused.
    fn unwritable(path: PathBuf, why: String) -> Result<Journal, StoreError> {
        let file = File::open("/dev/null").map_err(io_err("open", Path::new("/dev/null")))?;
        Ok(Journal {
            path,
            file,
            end: 0,
            next_seq: 1,
            entries: 0,
            touched: BTreeSet::new(),
            stopped: Some(why),
            guarded: false,
        })
    }

    /// `<root>/metadata/journal`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Entries since the last fold.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Whether no entry was written since the last fold.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Whether `transaction.json` says the records continue in the journal
    /// (see `TransactionOp::Journal`).
    pub fn guarded(&self) -> bool {
        self.guarded
    }

    /// Notes whether `transaction.json` says so.
    pub fn set_guarded(&mut self, guarded: bool) {
        self.guarded = guarded;
    }

    /// Device ids the entries since the last fold touch.
    pub fn touched(&self) -> &BTreeSet<String> {
        &self.touched
    }

    fn append(&mut self, entries: &[Entry], sync: bool) -> Result<(), StoreError> {
        if let Some(why) = &self.stopped {
            return Err(StoreError::Io {
                op: "append to",
                path: self.path.clone(),
                source: std::io::Error::other(format!(
                    "the journal stopped after a failed write ({why}); open the set again"
                )),
            });
        }
        let mut bytes = Vec::new();
        for e in entries {
            bytes.extend(encode(e));
        }
        let r = self
            .file
            .write_all_at(&bytes, self.end)
            .map_err(io_err("append to", &self.path))
            .and_then(|()| {
                if sync {
                    self.file
                        .sync_data()
                        .map_err(io_err("fdatasync", &self.path))
                } else {
                    Ok(())
                }
            });
        match r {
            Ok(()) => {
                self.end += bytes.len() as u64;
                self.entries += entries.len();
                self.touched.extend(touched_by(entries));
                Ok(())
            }
            Err(e) => {
                log::error!("{e}: the journal takes no more entries until the set is opened again");
                self.stopped = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Durably records the intent to create `record`'s thin; returns its
    /// sequence number.
    pub fn intend_create(&mut self, record: &DeviceRecord) -> Result<u64, StoreError> {
        let seq = self.next_seq;
        self.append(
            &[Entry::Create {
                seq,
                record: record.clone(),
            }],
            true,
        )?;
        self.next_seq += 1;
        Ok(seq)
    }

    /// Durably records the intent to delete `device_id`'s thin (whose
    /// `identity` is given on a pool the set does not own).
    pub fn intend_delete(
        &mut self,
        device_id: &str,
        thin_id: u32,
        identity: Option<ThinIdentity>,
    ) -> Result<u64, StoreError> {
        let seq = self.next_seq;
        self.append(
            &[Entry::Delete {
                seq,
                device_id: device_id.to_owned(),
                thin_id,
                identity,
            }],
            true,
        )?;
        self.next_seq += 1;
        Ok(seq)
    }

    /// Records that intent `seq` happened; without `sync`, lost in a power
    /// cut, the next open reads the pool instead.
    pub fn done(&mut self, seq: u64, sync: bool) -> Result<(), StoreError> {
        self.append(&[Entry::Done { seq }], sync)
    }

    /// Durably records that intent `seq` did not happen.
    pub fn cancel(&mut self, seq: u64) -> Result<(), StoreError> {
        self.append(&[Entry::Cancel { seq }], true)
    }

    /// Durably records, in one sync, the outcomes of intents settled against
    /// the pool after their outcome was unknown: `(seq, true)` happened
    /// (done), `(seq, false)` did not (cancelled). Until this returns, none
    /// of their thin ids may be given to another device: a marker lost in a
    /// crash would leave the old intent to act on the new device's thin.
    pub fn settle(&mut self, outcomes: &[(u64, bool)]) -> Result<(), StoreError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let markers: Vec<Entry> = outcomes
            .iter()
            .map(|&(seq, happened)| {
                if happened {
                    Entry::Done { seq }
                } else {
                    Entry::Cancel { seq }
                }
            })
            .collect();
        self.append(&markers, true)
    }

    /// Durably records that intent `seq` did not happen and `record` is now
    /// as given (one sync).
    pub fn cancel_and_update(&mut self, seq: u64, record: &DeviceRecord) -> Result<(), StoreError> {
        self.append(
            &[
                Entry::Cancel { seq },
                Entry::Update {
                    record: record.clone(),
                },
            ],
            true,
        )
    }

    /// Durably records a changed record.
    pub fn update(&mut self, record: &DeviceRecord) -> Result<(), StoreError> {
        self.append(
            &[Entry::Update {
                record: record.clone(),
            }],
            true,
        )
    }

    /// Empties the journal, durably: called once its entries are in the
    /// record files. A crash before this returns replays them again, which
    /// changes nothing. The file is cut to nothing (one atomic step), then
    /// written with zeros again up to [`PREALLOC`].
    pub fn clear(&mut self) -> Result<(), StoreError> {
        let r = self
            .file
            .set_len(0)
            .map_err(io_err("truncate", &self.path))
            .and_then(|()| {
                self.file
                    .sync_data()
                    .map_err(io_err("fdatasync", &self.path))
            });
        if let Err(e) = r {
            self.stopped = Some(e.to_string());
            return Err(e);
        }
        self.end = 0;
        self.entries = 0;
        self.touched.clear();
        self.stopped = None;
        if let Err(e) = zero_fill(&self.file, 0, PREALLOC).and_then(|()| self.file.sync_data()) {
            log::warn!("{}: cannot preallocate: {e}", self.path.display());
        }
        Ok(())
    }
}

/// Writes zeros over `[from, to)` of `file`.
fn zero_fill(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; 64 << 10];
    let mut at = from;
    while at < to {
        let n = (to - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
