//! The store's durable file changes, through [`crate::durable`] (temp
//! file, fsync, rename, directory fsync): the store's own temp files, its
//! private directories, and quarantine (also followed by a directory fsync).

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
    /// Moves a device record file aside to `<name>.corrupt` (or
    /// `<name>.corrupt.<n>` if that exists), durably. Only files directly in
    /// the device record directory may be moved. Returns the new path.
    /// (Nothing in the set quarantines yet; only the tests do.)
    #[cfg(test)]
    pub fn quarantine(&self, path: &Path) -> Result<PathBuf, StoreError> {
        let refuse = || StoreError::NotQuarantinable {
            path: path.to_path_buf(),
            dir: self.devices_dir.clone(),
        };
        let name = match (path.parent(), path.file_name().and_then(|n| n.to_str())) {
            (Some(parent), Some(name)) if parent == self.devices_dir => name,
            _ => return Err(refuse()),
        };
        if name.starts_with(TEMP_PREFIX) || name == "." || name == ".." {
            return Err(refuse());
        }
        fs::symlink_metadata(path).map_err(io_err("stat", path))?;
        for n in 0..1000u32 {
            let target = if n == 0 {
                self.devices_dir.join(format!("{name}{QUARANTINE_SUFFIX}"))
            } else {
                self.devices_dir
                    .join(format!("{name}{QUARANTINE_SUFFIX}.{n}"))
            };
            match fs::symlink_metadata(&target) {
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Ok(_) => continue,
                Err(e) => return Err(io_err("stat", &target)(e)),
            }
            fs::rename(path, &target).map_err(io_err("rename to quarantine", path))?;
            self.devices_dir_file
                .sync_all()
                .map_err(io_err("fsync directory", &self.devices_dir))?;
            log::info!("quarantined {} as {}", path.display(), target.display());
            return Ok(target);
        }
        Err(io_err("quarantine", path)(io::Error::new(
            ErrorKind::AlreadyExists,
            "too many quarantined copies",
        )))
    }

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

/// `<name>.corrupt` or `<name>.corrupt.<digits>`.
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
