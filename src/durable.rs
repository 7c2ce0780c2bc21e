//! Durable file changes: after a crash or power cut a file holds its old or
//! its new content, never a mix, and a removal stays removed.
//!
//! A write goes to a new temp file (mode 0600) in the target's directory,
//! which is fsynced, renamed over the target, and then the directory is
//! fsynced. A removal is an unlink followed by a directory fsync. The device
//! set's metadata store writes this way, and so does the snapshotter.
//!
//! A crash between creating a temp file and renaming it leaves the temp file
//! behind; it never held the committed content. Its name starts with
//! [`TEMP_PREFIX`] ([`is_temp_file`]), so a reader of the directory can skip
//! it, or remove it when no write can be in flight.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::OFlag;

/// How every temp file name starts: `.tmp~` (`~` keeps it apart from the
/// device set's ids, which cannot hold one).
pub const TEMP_PREFIX: &str = ".tmp~";

/// A durable change that failed: the step, the file or directory, and why.
#[derive(Debug, thiserror::Error)]
#[error("{step} {}: {source}", path.display())]
pub struct DurableError {
    /// What was being done (`fsync directory`, say).
    pub step: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

impl From<DurableError> for io::Error {
    /// The same kind of error, its message naming the step and the path.
    fn from(e: DurableError) -> io::Error {
        io::Error::new(e.source.kind(), e.to_string())
    }
}

/// A function that turns an `io::Error` of `step` on `path` into a [`DurableError`].
pub(crate) fn failed(step: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DurableError {
    let path = path.to_path_buf();
    move |source| DurableError { step, path, source }
}

/// Replaces `target` with a file holding `bytes` (mode 0600), durably: a
/// temp file in its directory, fsynced, renamed over it, then the directory
/// fsynced. On failure `target` is as it was and the temp file is gone.
pub fn write_file(target: &Path, bytes: &[u8]) -> Result<(), DurableError> {
    static TEMP: OnceLock<TempFiles> = OnceLock::new();
    let dir = parent_dir(target);
    TEMP.get_or_init(TempFiles::new)
        .replace(dir, target, bytes)?;
    sync_dir(dir)
}

/// Removes the file `path` and fsyncs its directory. `Ok(false)`: it was
/// not there.
pub fn remove_file(path: &Path) -> Result<bool, DurableError> {
    let dir = parent_dir(path);
    remove_and_sync(path, dir, &open_dir(dir)?)
}

/// Whether a file name is that of a temp file a durable write made.
pub fn is_temp_file(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX)
}

/// The directory `path` is in (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Opens directory `dir` (to fsync it).
pub(crate) fn open_dir(dir: &Path) -> Result<File, DurableError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_DIRECTORY.bits())
        .open(dir)
        .map_err(failed("open directory", dir))
}

fn sync_dir(dir: &Path) -> Result<(), DurableError> {
    open_dir(dir)?
        .sync_all()
        .map_err(failed("fsync directory", dir))
}

/// Removes `path`, then fsyncs `dir_file` (its directory `dir`, open).
/// `Ok(false)`: it was not there.
pub(crate) fn remove_and_sync(
    path: &Path,
    dir: &Path,
    dir_file: &File,
) -> Result<bool, DurableError> {
    let existed = match fs::remove_file(path) {
        Ok(()) => true,
        Err(e) if e.kind() == ErrorKind::NotFound => false,
        Err(e) => return Err(failed("remove", path)(e)),
    };
    dir_file
        .sync_all()
        .map_err(failed("fsync directory", dir))?;
    Ok(existed)
}

/// Process-wide counter that makes each writer's temp file names unique.
static WRITERS: AtomicU64 = AtomicU64::new(0);

/// The temp files of one writer: `.tmp~<pid>-<nanos>-<writer>~<n>`, so a
/// writer can tell its own (in flight) from those a dead process left.
#[derive(Debug)]
pub(crate) struct TempFiles {
    tag: String,
    seq: AtomicU64,
}

impl TempFiles {
    /// A writer whose names no other writer, in this or another process, uses.
    pub(crate) fn new() -> TempFiles {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let writer = WRITERS.fetch_add(1, Ordering::Relaxed);
        TempFiles {
            tag: format!("{TEMP_PREFIX}{}-{nanos:x}-{writer}~", std::process::id()),
            seq: AtomicU64::new(0),
        }
    }

    /// How this writer's temp file names start.
    pub(crate) fn tag(&self) -> &str {
        &self.tag
    }

    /// Creates a new temp file (mode 0600) in `dir`.
    pub(crate) fn create(&self, dir: &Path) -> Result<(PathBuf, File), DurableError> {
        loop {
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            let tmp = dir.join(format!("{}{seq}", self.tag));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
            {
                Ok(file) => return Ok((tmp, file)),
                // Only possible if a dead process had our pid, start time and
                // writer number; take the next sequence number.
                Err(e) if e.kind() == ErrorKind::AlreadyExists && seq < 1 << 20 => continue,
                Err(e) => return Err(failed("create temp file", &tmp)(e)),
            }
        }
    }

    /// Writes `bytes` to a new fsynced temp file in `dir` and renames it
    /// over `target`; the directory is the caller's to fsync. On failure
    /// the temp file is removed.
    pub(crate) fn replace(
        &self,
        dir: &Path,
        target: &Path,
        bytes: &[u8],
    ) -> Result<(), DurableError> {
        let (tmp, mut file) = self.create(dir)?;
        let written = file
            .write_all(bytes)
            .map_err(failed("write", &tmp))
            .and_then(|()| file.sync_all().map_err(failed("fsync", &tmp)))
            .and_then(|()| {
                fs::rename(&tmp, target).map_err(failed("rename temp file onto", target))
            });
        if written.is_err() {
            drop(file);
            let _ = fs::remove_file(&tmp);
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Scratch;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn write_replace_remove() {
        let s = Scratch::new("durable");
        let target = s.path().join("a.json");
        write_file(&target, b"one").unwrap();
        write_file(&target, b"two").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"two");
        let mode = fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<String> = fs::read_dir(s.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["a.json"], "no temp file is left");
        assert!(remove_file(&target).unwrap());
        assert!(!remove_file(&target).unwrap());
        assert!(!target.exists());
    }

    #[test]
    fn a_failed_write_names_the_step_and_leaves_no_temp_file() {
        let s = Scratch::new("durable-fail");
        let target = s.path().join("dir");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("x"), b"").unwrap();
        let err = write_file(&target, b"x").unwrap_err();
        assert_eq!(err.step, "rename temp file onto");
        assert_eq!(err.path, target);
        let left: Vec<_> = fs::read_dir(s.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| is_temp_file(n))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        let io: io::Error = err.into();
        assert!(io.to_string().starts_with("rename temp file onto "));
        let missing = write_file(&s.path().join("no/such/file"), b"x").unwrap_err();
        assert_eq!(missing.step, "create temp file");
    }

    #[test]
    fn temp_names_differ_per_writer_and_are_recognised() {
        let (a, b) = (TempFiles::new(), TempFiles::new());
        assert_ne!(a.tag(), b.tag());
        assert!(is_temp_file(a.tag()));
        assert!(!is_temp_file("snap-1.json"));
    }
}
