//! Typed errors of the loop layer.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

/// Everything that can go wrong with a loop device. Each variant names the file
/// or device it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoopError {
    /// The backing file does not exist.
    #[error("backing file {path} does not exist")]
    FileNotFound {
        /// The file as given.
        path: PathBuf,
    },
    /// The backing file is a directory.
    #[error("backing file {path} is a directory")]
    IsDirectory {
        /// The file as given.
        path: PathBuf,
    },
    /// The backing file is neither a regular file nor a block device.
    #[error("backing file {path} is not a regular file or block device")]
    NotAFile {
        /// The file as given.
        path: PathBuf,
    },
    /// The backing file can be opened for reading only (read-only filesystem,
    /// immutable file, missing write permission).
    #[error(
        "backing file {path} can only be opened read-only ({errno}); \
         only a read-only attach is possible"
    )]
    ReadOnlyFile {
        /// The file as given.
        path: PathBuf,
        /// Why opening it for writing failed.
        errno: Errno,
    },
    /// The backing file or device cannot be opened at all.
    #[error("permission denied opening {path}")]
    PermissionDenied {
        /// The file or device.
        path: PathBuf,
    },
    /// An attach option the loop driver (or we) refuse.
    #[error("invalid loop option for {path}: {reason}")]
    InvalidOption {
        /// The backing file.
        path: PathBuf,
        /// Which option and why.
        reason: String,
    },
    /// The loop driver refused the backing file (for instance a loop device
    /// backed by itself).
    #[error("the loop driver refused backing file {path} ({errno})")]
    InvalidBackingFile {
        /// The backing file.
        path: PathBuf,
        /// The errno of the refusal.
        errno: Errno,
    },
    /// No loop device could be had.
    #[error("no free loop device: {reason}")]
    NoFreeDevice {
        /// Why.
        reason: String,
    },
    /// The device is held by another user.
    #[error("loop device {device} is busy: {reason}")]
    DeviceBusy {
        /// The device node.
        device: PathBuf,
        /// What holds it, as far as we know.
        reason: String,
    },
    /// The device exists but no file is bound to it.
    #[error("loop device {device} is not bound to a file")]
    NotBound {
        /// The device node.
        device: PathBuf,
    },
    /// The path is not a loop device.
    #[error("{device} is not a loop device")]
    NotALoopDevice {
        /// The path as given.
        device: PathBuf,
    },
    /// The device node does not exist.
    #[error("loop device {device} does not exist")]
    DeviceNotFound {
        /// The device node.
        device: PathBuf,
    },
    /// `/dev/loop-control` cannot be opened (no loop driver, no permission).
    #[error("loop control device {path} is not available ({errno})")]
    ControlUnavailable {
        /// The control node.
        path: PathBuf,
        /// Why opening it failed.
        errno: Errno,
    },
    /// Any other failed system call, with what we were doing and on what.
    #[error("{op} on {path} failed: {errno}")]
    Sys {
        /// The operation, e.g. `LOOP_SET_CAPACITY`.
        op: &'static str,
        /// The file or device.
        path: PathBuf,
        /// The errno.
        errno: Errno,
    },
}

impl LoopError {
    /// The errno behind this error, where there is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            LoopError::ReadOnlyFile { errno, .. }
            | LoopError::InvalidBackingFile { errno, .. }
            | LoopError::ControlUnavailable { errno, .. }
            | LoopError::Sys { errno, .. } => Some(*errno),
            LoopError::FileNotFound { .. } | LoopError::DeviceNotFound { .. } => {
                Some(Errno::ENOENT)
            }
            LoopError::IsDirectory { .. } => Some(Errno::EISDIR),
            LoopError::PermissionDenied { .. } => Some(Errno::EACCES),
            LoopError::DeviceBusy { .. } => Some(Errno::EBUSY),
            LoopError::NotBound { .. } => Some(Errno::ENXIO),
            LoopError::NotALoopDevice { .. } => Some(Errno::ENOTTY),
            LoopError::InvalidOption { .. } | LoopError::NotAFile { .. } => Some(Errno::EINVAL),
            LoopError::NoFreeDevice { .. } => Some(Errno::ENOSPC),
        }
    }
}

/// Result type of the loop layer.
pub type Result<T, E = LoopError> = std::result::Result<T, E>;

pub(crate) fn sys(op: &'static str, path: impl Into<PathBuf>, errno: Errno) -> LoopError {
    LoopError::Sys {
        op,
        path: path.into(),
        errno,
    }
}

pub(crate) fn io_errno(e: &std::io::Error) -> Errno {
    e.raw_os_error().map(Errno::from_raw).unwrap_or(Errno::EIO)
}

pub(super) fn device_open_error(path: &Path, e: &std::io::Error) -> LoopError {
    match io_errno(e) {
        Errno::ENOENT | Errno::ENODEV => LoopError::DeviceNotFound {
            device: path.into(),
        },
        Errno::ENXIO => LoopError::NotBound {
            device: path.into(),
        },
        Errno::EACCES | Errno::EPERM => LoopError::PermissionDenied { path: path.into() },
        e => sys("open", path, e),
    }
}

pub(super) fn stat_error(path: &Path, e: &std::io::Error) -> LoopError {
    match io_errno(e) {
        Errno::ENOENT | Errno::ENOTDIR => LoopError::FileNotFound { path: path.into() },
        Errno::EACCES | Errno::EPERM => LoopError::PermissionDenied { path: path.into() },
        e => sys("stat", path, e),
    }
}

pub(super) fn open_error(path: &Path, e: &std::io::Error, writing: bool) -> LoopError {
    match io_errno(e) {
        Errno::ENOENT | Errno::ENOTDIR => LoopError::FileNotFound { path: path.into() },
        Errno::EISDIR => LoopError::IsDirectory { path: path.into() },
        errno @ (Errno::EACCES | Errno::EPERM | Errno::EROFS | Errno::ETXTBSY)
            if writing && File::open(path).is_ok() =>
        {
            LoopError::ReadOnlyFile {
                path: path.into(),
                errno,
            }
        }
        Errno::EACCES | Errno::EPERM | Errno::EROFS => {
            LoopError::PermissionDenied { path: path.into() }
        }
        e => sys("open", path, e),
    }
}
