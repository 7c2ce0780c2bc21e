//! Bounded reads of record files.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::OFlag;

use super::cache::FileStamp;
use super::error::{ProblemReason, StoreError};
use super::MAX_RECORD_BYTES;

/// First read size for a record file; records are a few hundred bytes.
const READ_CHUNK: usize = 16 << 10;

/// Reads a record file that may not exist yet, as [`read_record_file`]:
/// `Ok(None)` if there is none, [`StoreError::Corrupt`] if it cannot be read.
pub(super) fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match read_record_file(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(ProblemReason::Unreadable(e)) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(reason) => Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            reason,
        }),
    }
}

/// Reads a record file: no symlinks, regular files only, bounded size.
fn read_record_file(path: &Path) -> Result<Vec<u8>, ProblemReason> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::libc::ELOOP) {
                ProblemReason::NotRegularFile
            } else {
                ProblemReason::Unreadable(e)
            }
        })?;
    let meta = file.metadata().map_err(ProblemReason::Unreadable)?;
    if !meta.is_file() {
        return Err(ProblemReason::NotRegularFile);
    }
    if meta.len() > MAX_RECORD_BYTES {
        return Err(ProblemReason::TooLarge { len: meta.len() });
    }
    // The file may grow between fstat and read; the limit still holds.
    let mut bytes = Vec::with_capacity(meta.len() as usize + 1);
    file.take(MAX_RECORD_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ProblemReason::Unreadable)?;
    if bytes.len() as u64 > MAX_RECORD_BYTES {
        return Err(ProblemReason::TooLarge {
            len: bytes.len() as u64,
        });
    }
    Ok(bytes)
}

/// Reads the record file `name` in the directory open as `dir` into `buf`,
/// returning its length: the record is `buf[..len]`.
///
/// This is the hot loop of opening a large set, and on a slow (emulated)
/// machine each syscall counts, so: the caller has already seen from the
/// directory entry that the file is regular; it is opened relative to the
/// directory (a one-step path walk) without an fstat; and a read that comes
/// back shorter than asked is taken as the end of the file, which is what
/// reads of regular files do. The size bound holds whatever the file turns
/// out to be.
/// Reads a record file into `buf`; returns its length and the stamp of the
/// file that was read (fstat of the open file, so the two always agree).
pub(super) fn read_record_at(
    dir: &File,
    name: &str,
    buf: &mut Vec<u8>,
) -> Result<(usize, FileStamp), ProblemReason> {
    let fd = nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|errno| {
        if errno == nix::errno::Errno::ELOOP {
            ProblemReason::NotRegularFile
        } else {
            ProblemReason::Unreadable(errno.into())
        }
    })?;
    let mut file = File::from(fd);
    // Zeroed once per load, not per file.
    if buf.len() < READ_CHUNK {
        buf.resize(READ_CHUNK, 0);
    }
    let n = loop {
        match file.read(&mut buf[..READ_CHUNK]) {
            Ok(n) => break n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(ProblemReason::Unreadable(e)),
        }
    };
    let stamp = nix::sys::stat::fstat(&file)
        .map(|st| FileStamp::of(&st))
        .map_err(|e| ProblemReason::Unreadable(e.into()))?;
    if n < READ_CHUNK {
        return Ok((n, stamp));
    }
    // A big record (or not a record at all): read the rest, bounded.
    buf.truncate(READ_CHUNK);
    file.take(MAX_RECORD_BYTES + 1 - READ_CHUNK as u64)
        .read_to_end(buf)
        .map_err(ProblemReason::Unreadable)?;
    if buf.len() as u64 > MAX_RECORD_BYTES {
        return Err(ProblemReason::TooLarge {
            len: buf.len() as u64,
        });
    }
    Ok((buf.len(), stamp))
}
