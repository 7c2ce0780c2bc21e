//! The backing file: creating a sparse one, and opening it for the kernel.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::error::{io_errno, open_error, stat_error, sys as sys_err, LoopError, Result};

/// `size` if it is smaller. Never shrinks; returns the file's size afterwards.
///
/// A new file gets mode 0600; missing parent directories are created with
/// mode 0700 (existing ones are left as they are).
pub fn create_sparse_file(path: impl AsRef<Path>, size: u64) -> Result<u64> {
    let path = path.as_ref();
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if fs::symlink_metadata(parent).is_err() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| sys_err("mkdir", parent, io_errno(&e)))?;
        }
    }
    if let Ok(meta) = fs::metadata(path) {
        if meta.is_dir() {
            return Err(LoopError::IsDirectory { path: path.into() });
        }
        if !meta.is_file() {
            return Err(LoopError::NotAFile { path: path.into() });
        }
    }
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| open_error(path, &e, true))?;
    let len = file
        .metadata()
        .map_err(|e| sys_err("fstat", path, io_errno(&e)))?
        .len();
    if len < size {
        file.set_len(size)
            .map_err(|e| sys_err("ftruncate", path, io_errno(&e)))?;
    }
    Ok(len.max(size))
}

/// The backing file, opened for the kernel to take a reference on.
pub(super) struct Backing {
    pub(super) file: File,
    pub(super) given: PathBuf,
    pub(super) name: PathBuf,
}

pub(super) fn open_backing(path: &Path, read_only: bool) -> Result<Backing> {
    let meta = fs::metadata(path).map_err(|e| stat_error(path, &e))?;
    if meta.is_dir() {
        return Err(LoopError::IsDirectory { path: path.into() });
    }
    if !meta.is_file() && !meta.file_type().is_block_device() {
        return Err(LoopError::NotAFile { path: path.into() });
    }
    let file = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(path)
        .map_err(|e| open_error(path, &e, !read_only))?;
    let name = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(Backing {
        file,
        given: path.into(),
        name,
    })
}
