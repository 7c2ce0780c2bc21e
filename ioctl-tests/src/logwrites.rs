//! A reader and replayer of dm-log-writes logs.
//!
//! The kernel's `log-writes` target (drivers/md/dm-log-writes.c,
//! Documentation/admin-guide/device-mapper/log-writes.rst) passes every bio
//! to its device and appends each completed write to a log device, in the
//! order the writes became durable: writes that completed are held until a
//! FLUSH and logged just before it, FUA writes as they complete, marks
//! (`mark <name>` messages) when they are sent. Replaying a prefix of the log
//! onto a copy of the device's starting state gives the device as a power
//! cut at that moment could have left it.
//!
//! Layout, all little-endian, in units of the device's logical block size
//! (`sectorsize`, recorded in the super):
//!
//! ```text
//! sector 0          struct log_write_super { magic, version, nr_entries, sectorsize }
//! then nr_entries × [ one sector: struct log_write_entry { sector, nr_sectors, flags, data_len }
//!                     (a mark's text follows the struct in the same sector)
//!                     nr_sectors sectors of written data (none for discards, flushes, marks) ]
//! ```
//!
//! The super is rewritten after every FUA or mark entry and when the target
//! is removed, so its `nr_entries` is final once the log-writes device is gone.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The entry is a FLUSH (the writes logged before it are durable).
pub const LOG_FLUSH_FLAG: u64 = 1 << 0;
/// The entry is a FUA write (durable on completion).
pub const LOG_FUA_FLAG: u64 = 1 << 1;
/// The entry discards its range (no data in the log).
pub const LOG_DISCARD_FLAG: u64 = 1 << 2;
/// The entry is a mark: a name sent with the `mark` message.
pub const LOG_MARK_FLAG: u64 = 1 << 3;
/// The write was flagged as filesystem metadata (`REQ_META`); replayed like any write.
pub const LOG_METADATA_FLAG: u64 = 1 << 4;

const KNOWN_FLAGS: u64 =
    LOG_FLUSH_FLAG | LOG_FUA_FLAG | LOG_DISCARD_FLAG | LOG_MARK_FLAG | LOG_METADATA_FLAG;

/// `WRITE_LOG_MAGIC`.
pub const WRITE_LOG_MAGIC: u64 = 0x006a_7366_7773_6872;
/// `WRITE_LOG_VERSION`.
pub const WRITE_LOG_VERSION: u64 = 1;
/// Bytes of `struct log_write_super` (u64 × 3 + u32) and `struct log_write_entry` (u64 × 4).
const SUPER_LEN: usize = 28;
const ENTRY_LEN: usize = 32;
/// Bytes replayed per read/write when applying a write.
const CHUNK: usize = 1 << 20;

/// One logged bio or mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// First sector written (in the log's sector size).
    pub sector: u64,
    /// Sectors written or discarded.
    pub nr_sectors: u64,
    /// `LOG_*_FLAG` bits.
    pub flags: u64,
    /// A mark's name.
    pub mark: Option<String>,
    /// Byte offset of the written data in the log.
    data_offset: u64,
}

impl Entry {
    /// A FLUSH (with or without data).
    pub fn is_flush(&self) -> bool {
        self.flags & LOG_FLUSH_FLAG != 0
    }

    /// A FUA write.
    pub fn is_fua(&self) -> bool {
        self.flags & LOG_FUA_FLAG != 0
    }

    /// A discard.
    pub fn is_discard(&self) -> bool {
        self.flags & LOG_DISCARD_FLAG != 0
    }

    /// A mark.
    pub fn is_mark(&self) -> bool {
        self.flags & LOG_MARK_FLAG != 0
    }

    /// Whether the device's state after this entry is one to check: after a
    /// FLUSH, a FUA write or a mark.
    pub fn is_replay_point(&self) -> bool {
        self.is_flush() || self.is_fua() || self.is_mark()
    }

    /// Whether replaying it changes the device (a write with data, or a discard).
    pub fn changes_device(&self) -> bool {
        self.nr_sectors > 0 && !self.is_mark()
    }
}

/// A parsed log: its sector size and every entry's header.
#[derive(Debug)]
pub struct Log {
    file: File,
    sector_size: u64,
    entries: Vec<Entry>,
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

impl Log {
    /// Opens and parses the log at `path` (a log file or the log device).
    pub fn open(path: &Path) -> io::Result<Log> {
        let file = File::open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Log::read(file)
            .map_err(|e| io::Error::new(e.kind(), format!("log {}: {e}", path.display())))
    }

    /// Parses the log in `file`: the super, then every entry header. Fails
    /// (`InvalidData`, naming the entry) on a bad magic, version or sector
    /// size, unknown flags, a mark longer than its sector, inline data, or
    /// an entry running past the end of the file.
    pub fn read(file: File) -> io::Result<Log> {
        let len = file.metadata()?.len();
        let mut sup = [0u8; SUPER_LEN];
        file.read_exact_at(&mut sup, 0)
            .map_err(|e| invalid(format!("cannot read the super: {e}")))?;
        let magic = le64(&sup, 0);
        if magic != WRITE_LOG_MAGIC {
            return Err(invalid(format!(
                "not a dm-log-writes log: magic {magic:#x}, expected {WRITE_LOG_MAGIC:#x}"
            )));
        }
        let version = le64(&sup, 8);
        if version != WRITE_LOG_VERSION {
            return Err(invalid(format!(
                "log version {version}, only {WRITE_LOG_VERSION} is known"
            )));
        }
        let nr_entries = le64(&sup, 16);
        let sector_size = u64::from(u32::from_le_bytes([sup[24], sup[25], sup[26], sup[27]]));
        if !(512..=65536).contains(&sector_size) || !sector_size.is_power_of_two() {
            return Err(invalid(format!(
                "sector size {sector_size}: not a power of two from 512 to 65536"
            )));
        }
        // Every entry takes at least one sector: a count the file cannot
        // hold is refused before anything is sized by it.
        if nr_entries > len / sector_size {
            return Err(invalid(format!(
                "{nr_entries} entries cannot fit in {len} bytes of log"
            )));
        }
        let mut entries = Vec::with_capacity(nr_entries as usize);
        let mut header = vec![0u8; sector_size as usize];
        let mut at = sector_size;
        for index in 0..nr_entries {
            let start = at;
            let past_end = || {
                invalid(format!(
                    "entry {index} at byte {start} runs past the end of the log ({len} bytes)"
                ))
            };
            if at.checked_add(sector_size).is_none_or(|end| end > len) {
                return Err(past_end());
            }
            file.read_exact_at(&mut header, at)?;
            let sector = le64(&header, 0);
            let nr_sectors = le64(&header, 8);
            let flags = le64(&header, 16);
            let data_len = le64(&header, 24);
            if flags & !KNOWN_FLAGS != 0 {
                return Err(invalid(format!(
                    "entry {index}: unknown flags {:#x}",
                    flags & !KNOWN_FLAGS
                )));
            }
            let mut mark = None;
            if flags & LOG_MARK_FLAG != 0 {
                if data_len > sector_size - ENTRY_LEN as u64 {
                    return Err(invalid(format!(
                        "entry {index}: a mark of {data_len} bytes does not fit its sector"
                    )));
                }
                let text = &header[ENTRY_LEN..ENTRY_LEN + data_len as usize];
                mark = Some(String::from_utf8_lossy(text).into_owned());
            } else if data_len != 0 {
                return Err(invalid(format!(
                    "entry {index}: {data_len} bytes of inline data (only marks carry any)"
                )));
            }
            let data_offset = at + sector_size;
            let data_bytes = if flags & (LOG_DISCARD_FLAG | LOG_MARK_FLAG) != 0 {
                0
            } else {
                nr_sectors.checked_mul(sector_size).ok_or_else(past_end)?
            };
            let end = data_offset.checked_add(data_bytes).ok_or_else(past_end)?;
            if end > len {
                return Err(past_end());
            }
            at = end;
            sector
                .checked_add(nr_sectors)
                .and_then(|end| end.checked_mul(sector_size))
                .ok_or_else(|| {
                    invalid(format!(
                        "entry {index}: sector {sector} + {nr_sectors} overflows"
                    ))
                })?;
            entries.push(Entry {
                sector,
                nr_sectors,
                flags,
                mark,
                data_offset,
            });
        }
        Ok(Log {
            file,
            sector_size,
            entries,
        })
    }

    /// The logged device's logical block size: the unit of every entry's
    /// `sector` and `nr_sectors`.
    pub fn sector_size(&self) -> u64 {
        self.sector_size
    }

    /// Every entry, in log order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The index of the first mark named `name`.
    pub fn find_mark(&self, name: &str) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.mark.as_deref() == Some(name))
    }
}

/// Applies a log's entries, in order, onto a target file or device that
/// started as the logged device did.
pub struct Replayer<'a> {
    log: &'a Log,
    target: File,
    target_len: u64,
    applied: usize,
    buf: Vec<u8>,
}

impl<'a> Replayer<'a> {
    /// A replayer of `log` onto `target` (opened for writing), with no entry applied yet.
    pub fn new(log: &'a Log, target: File) -> io::Result<Replayer<'a>> {
        let target_len = target_len(&target)?;
        Ok(Replayer {
            log,
            target,
            target_len,
            applied: 0,
            buf: Vec::new(),
        })
    }

    /// How many entries have been applied (the next one to apply is this index).
    pub fn applied(&self) -> usize {
        self.applied
    }

    /// Applies entries until the first `end` have been: the target is then
    /// the device as it was right after entry `end - 1` was logged. Only
    /// forward: an `end` before what is applied, or past the log, is an error.
    pub fn replay_to(&mut self, end: usize) -> io::Result<()> {
        if end < self.applied || end > self.log.entries.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "cannot replay to entry {end}: {} applied, {} in the log",
                    self.applied,
                    self.log.entries.len()
                ),
            ));
        }
        while self.applied < end {
            self.apply(self.applied)?;
            self.applied += 1;
        }
        Ok(())
    }

    /// The target, flushed to stable storage (`fsync`), for a reader that
    /// opens it as a device.
    pub fn sync(&self) -> io::Result<()> {
        self.target.sync_all()
    }

    fn apply(&mut self, index: usize) -> io::Result<()> {
        let e = &self.log.entries[index];
        if !e.changes_device() {
            return Ok(());
        }
        let ss = self.log.sector_size;
        let offset = e.sector * ss;
        let len = e.nr_sectors * ss;
        if offset + len > self.target_len {
            return Err(invalid(format!(
                "entry {index}: sectors {}..{} lie past the target's {} bytes",
                e.sector,
                e.sector + e.nr_sectors,
                self.target_len
            )));
        }
        if e.is_discard() {
            return self.zero(offset, len);
        }
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK as u64) as usize;
            self.buf.resize(n, 0);
            self.log
                .file
                .read_exact_at(&mut self.buf, e.data_offset + done)?;
            self.target.write_all_at(&self.buf, offset + done)?;
            done += n as u64;
        }
        Ok(())
    }

    /// A discarded range reads as zeros: a hole punched where the target
    /// allows it, zeros written elsewhere.
    fn zero(&mut self, offset: u64, len: u64) -> io::Result<()> {
        use nix::fcntl::{fallocate, FallocateFlags};
        let punch = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        if fallocate(&self.target, punch, offset as i64, len as i64).is_ok() {
            return Ok(());
        }
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK as u64) as usize;
            self.buf.clear();
            self.buf.resize(n, 0);
            self.target.write_all_at(&self.buf, offset + done)?;
            done += n as u64;
        }
        Ok(())
    }
}

/// A regular file's length, or a block device's size.
fn target_len(f: &File) -> io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let md = f.metadata()?;
    if md.is_file() {
        return Ok(md.len());
    }
    let mut f = f;
    f.seek(SeekFrom::End(0))
}

#[cfg(test)]
mod tests;
