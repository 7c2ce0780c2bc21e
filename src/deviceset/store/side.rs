//! Side files beside the set record (the autoextend log): JSON rewritten in
//! blocks already allocated, so that a full filesystem under the set's root
//! does not stop a rewrite (nor, through the log, the growth that would
//! give the pool's writers room).
//!
//! A side file `<name>` and its spare `<name>.spare` are each
//! [`SIDE_FILE_BYTES`] long: the JSON, then spaces (which a JSON reader
//! skips). A write fills the spare from its start, in place (every block of
//! it is written already, so no new one is needed), fsyncs it, swaps the two
//! names in one `renameat2(RENAME_EXCHANGE)` and fsyncs the directory. The
//! old contents are then the spare: the next write's scratch.
//!
//! Why a crash loses nothing written and tears nothing read:
//! - before the swap, `<name>` is the old version, whole: only the spare,
//!   which nothing reads, may be half written;
//! - the spare's new contents are on disk (fsynced) before the swap, and
//!   the swap is atomic, so `<name>` is always one whole version, old or new;
//! - until the directory fsync a power cut may leave either version, as
//!   after a temp file renamed over a target; once it returns, the new one.
//!
//! The first write (no spare yet, or a file an older dmthin wrote unpadded),
//! a JSON longer than [`SIDE_FILE_BYTES`], and a filesystem that cannot swap
//! names take the store's ordinary durable write (a fresh temp file renamed
//! over `<name>`), padded the same, and then make the spare if it is
//! missing. Those need room: the monitor writes its log when it starts,
//! while the root has room ([`MetadataStore::side_file_ready`] says when it
//! is done), so the growths it logs later need none.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;

use super::error::{io_err, StoreError};
use super::read::read_if_exists;
use super::records::{parse, to_json};
use super::MetadataStore;
use crate::deviceset::sys::exchange_names;

/// Bytes a side file and its spare each take: room for the autoextend log's
/// 64 growths several times over.
pub(crate) const SIDE_FILE_BYTES: usize = 64 << 10;

/// What a side file's spare is called after it: `<name>.spare`.
const SPARE_SUFFIX: &str = ".spare";

/// The file name of side file `name`'s spare.
fn spare_name(name: &str) -> String {
    format!("{name}{SPARE_SUFFIX}")
}

/// `json` padded with spaces (and a final newline) to [`SIDE_FILE_BYTES`];
/// a longer one as it is.
fn padded(json: &[u8]) -> Vec<u8> {
    let mut bytes = json.to_vec();
    if bytes.len() < SIDE_FILE_BYTES {
        bytes.resize(SIDE_FILE_BYTES - 1, b' ');
        bytes.push(b'\n');
    }
    bytes
}

/// Whether `path` is a regular file (not followed if a link) of exactly
/// [`SIDE_FILE_BYTES`].
fn full_size(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() == SIDE_FILE_BYTES as u64)
}

impl MetadataStore {
    fn side_path(&self, name: &str) -> PathBuf {
        self.meta_dir.join(name)
    }

    fn spare_path(&self, name: &str) -> PathBuf {
        self.meta_dir.join(spare_name(name))
    }

    /// Whether side file `name` and its spare are both in place at full
    /// size: its next rewrites need no new blocks (see the module docs).
    pub(crate) fn side_file_ready(&self, name: &str) -> bool {
        full_size(&self.side_path(name)) && full_size(&self.spare_path(name))
    }

    /// Durably writes `value` as JSON to `<root>/metadata/<name>`, a side
    /// file beside the set record, in blocks already allocated when it can
    /// (see the module docs for how, and why a crash is safe).
    pub(crate) fn write_side_file<T: serde::Serialize>(
        &self,
        name: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let path = self.side_path(name);
        self.check_writable(&path)?;
        let bytes = padded(&to_json(value, &path)?);
        if bytes.len() == SIDE_FILE_BYTES && self.side_file_ready(name) {
            self.fill_spare(name, &bytes)?;
            match exchange_names(&self.meta_dir_file, &spare_name(name), name) {
                Ok(()) => return self.sync_meta_dir(),
                // No RENAME_EXCHANGE here: the ordinary write below.
                Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {}
                Err(e) => {
                    return Err(io_err("swap with its spare", &path)(std::io::Error::from(
                        e,
                    )))
                }
            }
        }
        self.rename_into_place(&self.meta_dir, &path, &bytes)?;
        let spare = self.spare_path(name);
        if !full_size(&spare) {
            let blank = padded(b"");
            if let Err(e) = self.rename_into_place(&self.meta_dir, &spare, &blank) {
                log::warn!(
                    "{}: no spare made ({e}); its next rewrite needs free space again",
                    path.display()
                );
            }
        }
        self.sync_meta_dir()
    }

    /// The write's first half: `bytes` ([`SIDE_FILE_BYTES`] of them) over
    /// side file `name`'s spare, in place, fsynced. Until the swap that
    /// follows, `name` itself is untouched.
    pub(super) fn fill_spare(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let spare = self.spare_path(name);
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(OFlag::O_NOFOLLOW.bits())
            .open(&spare)
            .map_err(io_err("open", &spare))?;
        file.write_all_at(bytes, 0)
            .map_err(io_err("write", &spare))?;
        file.sync_data().map_err(io_err("fsync", &spare))
    }

    fn sync_meta_dir(&self) -> Result<(), StoreError> {
        self.meta_dir_file
            .sync_all()
            .map_err(io_err("fsync directory", &self.meta_dir))
    }

    /// Reads the side file `<root>/metadata/<name>`; `Ok(None)` when absent.
    pub(crate) fn read_side_file<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<T>, StoreError> {
        let path = self.side_path(name);
        let Some(bytes) = read_if_exists(&path)? else {
            return Ok(None);
        };
        parse(&bytes)
            .map(Some)
            .map_err(|reason| StoreError::Corrupt { path, reason })
    }
}

#[cfg(test)]
#[path = "side_tests.rs"]
mod tests;
