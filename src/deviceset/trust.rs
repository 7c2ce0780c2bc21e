//! What the set trusts on the host filesystem: a root only its owner (the
//! user running dmthin, normally root) can change, and backing files that are
//! regular files opened without following symbolic links, so a link planted
//! under the root cannot redirect the pool onto another file.

use super::error::{DeviceSetError, Result};
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

fn untrusted(path: &Path, reason: impl Into<String>) -> DeviceSetError {
    DeviceSetError::Untrusted {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Refuses a directory (not followed if a link) that is not a directory, not
/// owned by this process's user, or writable by group or others.
pub(crate) fn check_dir(dir: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(dir).map_err(|e| untrusted(dir, e.to_string()))?;
    if meta.file_type().is_symlink() {
        return Err(untrusted(dir, "it is a symbolic link"));
    }
    if !meta.is_dir() {
        return Err(untrusted(dir, "it is not a directory"));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(untrusted(
            dir,
            format!(
                "it is owned by uid {}, not by uid {me} running dmthin",
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(untrusted(
            dir,
            format!(
                "its mode {:o} lets group or others write to it",
                meta.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Makes `file`'s directory (mode 0700) if missing and checks it, then opens
/// or creates `file` as a regular file without following a link, grows it
/// to at least `size` bytes (never shrinks it), and with `allocate` reserves
/// every byte (fallocate), so writes to it cannot meet a full host
/// filesystem later. Returns the file's size.
pub(crate) fn prepare_backing_file(file: &Path, size: u64, allocate: bool) -> Result<u64> {
    let dir = file
        .parent()
        .ok_or_else(|| untrusted(file, "it has no directory"))?;
    let name = file
        .file_name()
        .ok_or_else(|| untrusted(file, "it has no file name"))?;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(untrusted(dir, format!("cannot create it: {e}")))
        }
        _ => {}
    }
    check_dir(dir)?;
    let dir_fd = File::from(
        nix::fcntl::open(
            dir,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| untrusted(dir, format!("open: {e}")))?,
    );
    let fd = openat(
        &dir_fd,
        name,
        OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| match e {
        nix::errno::Errno::ELOOP => untrusted(
            file,
            "it is a symbolic link; refusing to follow it (the link and its target are left as they are)",
        ),
        e => untrusted(file, format!("open: {e}")),
    })?;
    let st = fstat(&fd).map_err(|e| untrusted(file, format!("fstat: {e}")))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(untrusted(file, "it is not a regular file"));
    }
    let file_handle = File::from(fd);
    let have = u64::try_from(st.st_size).unwrap_or(0);
    if have < size {
        file_handle
            .set_len(size)
            .map_err(|e| DeviceSetError::InvalidOption {
                option: "storage",
                reason: format!("cannot grow {} to {size} bytes: {e}", file.display()),
            })?;
    }
    let len = have.max(size);
    if allocate {
        let len_off = i64::try_from(len).unwrap_or(i64::MAX);
        nix::fcntl::fallocate(
            &file_handle,
            nix::fcntl::FallocateFlags::empty(),
            0,
            len_off,
        )
        .map_err(|e| DeviceSetError::InvalidOption {
            option: "storage",
            reason: format!(
                "cannot reserve {len} bytes for {} on the host filesystem: {e}",
                file.display()
            ),
        })?;
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Scratch;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_planted_link_is_refused_and_its_target_left_alone() {
        let s = Scratch::new("trust-link");
        let dir = s.path().join("devicemapper");
        std::fs::create_dir(&dir).unwrap();
        let victim = s.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("data")).unwrap();
        let err = prepare_backing_file(&dir.join("data"), 1 << 20, false).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn a_linked_or_open_directory_is_refused() {
        let s = Scratch::new("trust-dir");
        let real = s.path().join("elsewhere");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, s.path().join("devicemapper")).unwrap();
        let err =
            prepare_backing_file(&s.path().join("devicemapper/data"), 4096, false).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(!real.join("data").exists());

        let open = s.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_dir(&open).unwrap_err();
        assert!(err.to_string().contains("group or others"), "{err}");
    }

    #[test]
    fn files_grow_never_shrink_and_can_be_reserved() {
        let s = Scratch::new("trust-grow");
        let f = s.path().join("dm/metadata");
        assert_eq!(prepare_backing_file(&f, 1 << 20, true).unwrap(), 1 << 20);
        let meta = std::fs::metadata(&f).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert!(
            meta.blocks() * 512 >= 1 << 20,
            "not allocated: {} blocks",
            meta.blocks()
        );
        assert_eq!(prepare_backing_file(&f, 4096, false).unwrap(), 1 << 20);
        assert_eq!(std::fs::metadata(&f).unwrap().len(), 1 << 20);
        let fifo = s.path().join("dm/fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        let err = prepare_backing_file(&fifo, 4096, false).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}
