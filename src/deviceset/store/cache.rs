//! The record cache, `devices.cache`: a derived copy of every device record
//! with its file's stamp, so that opening a big set needs one `stat` per
//! unchanged record instead of a read.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, ErrorKind, Write};
use std::path::Path;

use super::records::{now_unix, DeviceRecord};
use super::{MetadataStore, RECORD_EXT};

/// The record cache's file name (in the metadata directory).
pub const CACHE_FILE: &str = "devices.cache";
/// Files changed less than this many seconds before a cache is written are
/// left out of it.
pub const CACHE_SETTLE_SECS: i64 = 2;
/// The cache is rewritten when at least this many records were read from
/// their files (and they are at least 1/16 of all records).
pub(super) const CACHE_REWRITE_MIN_MISSES: usize = 64;
/// First line of the record cache (its format and version).
const CACHE_HEADER: &str = "dmthin-record-cache 3";

/// A file's identity as far as the record cache is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileStamp {
    ino: u64,
    size: i64,
    mtime: i64,
    mtime_ns: i64,
    ctime: i64,
    ctime_ns: i64,
}

impl FileStamp {
    pub(super) fn of(st: &nix::sys::stat::FileStat) -> Self {
        FileStamp {
            ino: st.st_ino,
            size: st.st_size,
            mtime: st.st_mtime,
            mtime_ns: st.st_mtime_nsec,
            ctime: st.st_ctime,
            ctime_ns: st.st_ctime_nsec,
        }
    }
}

/// One line of the record cache: a record file's name and stamp, and the
/// record it held.
///
/// ```text
/// <name> <ino> <size> <mtime> <mtime_ns> <ctime> <ctime_ns> <thin_id> <bytes> <initialized> <created_at> <deferred_delete> <grow_pending> <parent or />
/// ```
///
/// Device ids have no spaces and cannot be `/`, so the line splits cleanly.
/// Lines are sorted by name, like the directory scan they are joined with.
pub(super) struct CacheLine {
    pub(super) name: String,
    pub(super) stamp: FileStamp,
    pub(super) record: DeviceRecord,
}

impl CacheLine {
    fn parse(line: &str) -> Option<CacheLine> {
        let mut f = line.split(' ');
        let mut next = || f.next();
        let name = next()?.to_owned();
        let stamp = FileStamp {
            ino: next()?.parse().ok()?,
            size: next()?.parse().ok()?,
            mtime: next()?.parse().ok()?,
            mtime_ns: next()?.parse().ok()?,
            ctime: next()?.parse().ok()?,
            ctime_ns: next()?.parse().ok()?,
        };
        let flag = |v: &str| match v {
            "0" => Some(false),
            "1" => Some(true),
            _ => None,
        };
        let thin_id = next()?.parse().ok()?;
        let size = next()?.parse().ok()?;
        let initialized = flag(next()?)?;
        let created_at = next()?.parse().ok()?;
        let deferred_delete = flag(next()?)?;
        let grow_pending = flag(next()?)?;
        let parent = match next()? {
            "/" => None,
            p => Some(p.to_owned()),
        };
        if next().is_some() {
            return None;
        }
        let id = name.strip_suffix(RECORD_EXT)?.to_owned();
        Some(CacheLine {
            name,
            stamp,
            record: DeviceRecord {
                id,
                parent,
                thin_id,
                size,
                initialized,
                created_at,
                deferred_delete,
                grow_pending,
            },
        })
    }

    fn write(name: &str, st: &FileStamp, r: &DeviceRecord, out: &mut impl Write) -> io::Result<()> {
        writeln!(
            out,
            "{name} {} {} {} {} {} {} {} {} {} {} {} {} {}",
            st.ino,
            st.size,
            st.mtime,
            st.mtime_ns,
            st.ctime,
            st.ctime_ns,
            r.thin_id,
            r.size,
            u8::from(r.initialized),
            r.created_at,
            u8::from(r.deferred_delete),
            u8::from(r.grow_pending),
            r.parent.as_deref().unwrap_or("/")
        )
    }
}

/// Reads the record cache line by line, in name order, for a merge join
/// with the sorted directory scan. A damaged line ends it (the rest of the
/// records are read from their files).
pub(super) struct CacheReader {
    input: Option<io::BufReader<File>>,
    line: String,
    current: Option<CacheLine>,
}

impl CacheReader {
    pub(super) fn open(path: &Path) -> CacheReader {
        let mut reader = CacheReader {
            input: None,
            line: String::new(),
            current: None,
        };
        match File::open(path) {
            Ok(f) => {
                let mut input = io::BufReader::with_capacity(64 << 10, f);
                let mut header = String::new();
                match io::BufRead::read_line(&mut input, &mut header) {
                    Ok(_) if header.trim_end() == CACHE_HEADER => {
                        reader.input = Some(input);
                        reader.advance();
                    }
                    Ok(_) => log::debug!("record cache {}: unknown format", path.display()),
                    Err(e) => log::debug!("record cache {}: {e}", path.display()),
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => log::debug!("record cache {}: {e}", path.display()),
        }
        reader
    }

    fn advance(&mut self) {
        self.current = None;
        let Some(input) = self.input.as_mut() else {
            return;
        };
        self.line.clear();
        match io::BufRead::read_line(input, &mut self.line) {
            Ok(n) if n > 0 && self.line.ends_with('\n') => {
                self.current = CacheLine::parse(&self.line[..self.line.len() - 1]);
                if self.current.is_none() {
                    log::debug!("record cache: damaged line, ignoring the rest");
                }
            }
            _ => {}
        }
        if self.current.is_none() {
            self.input = None;
        }
    }

    /// The cached line for `name`, skipping lines of files that are gone.
    pub(super) fn take(&mut self, name: &str) -> Option<CacheLine> {
        loop {
            let here = self.current.as_ref()?.name.as_str();
            match here.cmp(name) {
                std::cmp::Ordering::Less => self.advance(),
                std::cmp::Ordering::Equal => {
                    let line = self.current.take();
                    self.advance();
                    return line;
                }
                std::cmp::Ordering::Greater => return None,
            }
        }
    }
}

impl MetadataStore {
    /// Replaces the record cache, leaving out files changed in the last
    /// [`CACHE_SETTLE_SECS`]. Best effort: failures are logged.
    pub(super) fn write_cache(
        &self,
        stamps: &[(String, FileStamp)],
        devices: &BTreeMap<String, DeviceRecord>,
    ) {
        let now = now_unix() as i64;
        let target = self.meta_dir.join(CACHE_FILE);
        let (tmp, file) = match self.create_temp(&self.meta_dir) {
            Ok(t) => t,
            Err(e) => {
                log::warn!("writing record cache {}: {e}", target.display());
                return;
            }
        };
        let mut out = io::BufWriter::with_capacity(64 << 10, file);
        let written = writeln!(out, "{CACHE_HEADER}")
            .and_then(|()| {
                for (name, stamp) in stamps {
                    if stamp.ctime + CACHE_SETTLE_SECS >= now {
                        continue;
                    }
                    let id = name.strip_suffix(RECORD_EXT).unwrap_or(name);
                    if let Some(r) = devices.get(id) {
                        CacheLine::write(name, stamp, r, &mut out)?;
                    }
                }
                out.flush()
            })
            .and_then(|()| fs::rename(&tmp, &target));
        if let Err(e) = written {
            drop(out);
            let _ = fs::remove_file(&tmp);
            log::warn!("writing record cache {}: {e}", target.display());
        }
    }
}
