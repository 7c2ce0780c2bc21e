//! The store's durable file changes, through [`crate::durable`] (temp
//! file, fsync, rename, directory fsync): the store's own temp files and its
//! private directories; and the names of records set aside as damaged.

use std::fs::{self, File};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::error::{io_err, StoreError};
use super::MetadataStore;
use crate::durable::{self, DurableError};

pub(super) use crate::durable::TEMP_PREFIX;
const QUARANTINE_SUFFIX: &str = ".corrupt";

impl From<DurableError> for StoreError {
    fn from(e: DurableError) -> StoreError {
        StoreError::Io {
            op: e.step,
            path: e.path,
            source: e.source,
        }
    }
}

impl MetadataStore {
    /// Creates a new temp file (mode 0600) of this store's in `dir`.
    pub(super) fn create_temp(&self, dir: &Path) -> Result<(PathBuf, File), StoreError> {
        Ok(self.temp_files.create(dir)?)
    }

    pub(super) fn write_atomic(
        &self,
        dir: &Path,
        dir_file: &File,
        target: &Path,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        self.rename_into_place(dir, target, bytes)?;
        dir_file.sync_all().map_err(io_err("fsync directory", dir))
    }

    /// Writes `bytes` to a fsynced temp file in `dir` and renames it over
    /// `target`; the directory is the caller's to fsync.
    pub(super) fn rename_into_place(
        &self,
        dir: &Path,
        target: &Path,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        self.check_writable(target)?;
        Ok(self.temp_files.replace(dir, target, bytes)?)
    }
}

pub(super) fn remove_durably(path: &Path, dir: &Path, dir_file: &File) -> Result<bool, StoreError> {
    Ok(durable::remove_and_sync(path, dir, dir_file)?)
}

/// `<name>.corrupt` or `<name>.corrupt.<digits>`: a device record an
/// operator set aside as damaged, which loads skip.
pub(super) fn is_quarantined(name: &str) -> bool {
    match name.rfind(QUARANTINE_SUFFIX) {
        Some(i) => {
            let rest = &name[i + QUARANTINE_SUFFIX.len()..];
            rest.is_empty()
                || rest
                    .strip_prefix('.')
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        }
        None => false,
    }
}

pub(super) fn open_dir(dir: &Path) -> Result<File, StoreError> {
    Ok(durable::open_dir(dir)?)
}

/// Creates `dir` with mode 0700 (fsyncing `parent` so it stays), or tightens
/// an existing one to 0700.
pub(super) fn ensure_private_dir(dir: &Path, parent: &Path) -> Result<(), StoreError> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => open_dir(parent)?
            .sync_all()
            .map_err(io_err("fsync directory", parent)),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            // Not followed: a link planted here must not move the records.
            let meta = fs::symlink_metadata(dir).map_err(io_err("stat", dir))?;
            if !meta.is_dir() {
                return Err(io_err("open directory", dir)(io::Error::new(
                    ErrorKind::NotADirectory,
                    "exists and is not a directory",
                )));
            }
            if meta.permissions().mode() & 0o077 != 0 {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                    .map_err(io_err("chmod 0700", dir))?;
            }
            Ok(())
        }
        Err(e) => Err(io_err("create directory", dir)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantine_names() {
        assert!(is_quarantined("a.json.corrupt"));
        assert!(is_quarantined("a.json.corrupt.12"));
        assert!(!is_quarantined("a.corrupt.json"));
        assert!(!is_quarantined("a.json.corrupt."));
        assert!(!is_quarantined("a.json.corrupt.x"));
    }
}
