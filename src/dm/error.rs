//! Typed device-mapper errors.

use super::abi::{Command, Version};
use nix::errno::Errno;
use std::fmt;

/// What a failed ioctl's errno means for a device-mapper command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// ENXIO / ENODEV / ENOENT: no such device.
    NotFound,
    /// EBUSY: the device is open, or the name, uuid or minor is taken.
    Busy,
    /// EEXIST: the object (such as a thin id) already exists.
    Exists,
    /// EINVAL: the kernel refused the request or the table.
    Invalid,
    /// EACCES / EPERM: no CAP_SYS_ADMIN.
    Permission,
    /// ENOTTY / EOPNOTSUPP: the kernel or the target does not support it.
    Unsupported,
    /// ENODATA: the target has no such object (such as a thin id).
    NoData,
    /// ENOSPC: out of space.
    NoSpace,
    /// EINTR: interrupted.
    Interrupted,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// Classifies an errno.
    pub fn from_errno(errno: Errno) -> Self {
        match errno {
            Errno::ENXIO | Errno::ENODEV | Errno::ENOENT => ErrorKind::NotFound,
            Errno::EBUSY => ErrorKind::Busy,
            Errno::EEXIST => ErrorKind::Exists,
            Errno::EINVAL => ErrorKind::Invalid,
            Errno::EACCES | Errno::EPERM => ErrorKind::Permission,
            Errno::ENOTTY | Errno::EOPNOTSUPP => ErrorKind::Unsupported,
            Errno::ENODATA => ErrorKind::NoData,
            Errno::ENOSPC => ErrorKind::NoSpace,
            Errno::EINTR => ErrorKind::Interrupted,
            _ => ErrorKind::Other,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::Busy => "busy",
            ErrorKind::Exists => "already exists",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Permission => "permission denied",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::NoData => "no such object in the target",
            ErrorKind::NoSpace => "out of space",
            ErrorKind::Interrupted => "interrupted",
            ErrorKind::Other => "failed",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// An error from the device-mapper layer.
#[derive(Debug, thiserror::Error)]
pub enum DmError {
    /// A DM ioctl failed.
    #[error("{command} on {device}: {kind} ({errno}: {desc}){}", detail.as_deref().map(|d| format!("; {d}")).unwrap_or_default(), desc = errno.desc())]
    Ioctl {
        /// The command that failed.
        command: Command,
        /// The device it addressed (name, uuid or major:minor), or `-`.
        device: String,
        /// The errno the kernel returned.
        errno: Errno,
        /// What that errno means here.
        kind: ErrorKind,
        /// Extra context, such as the table lines or the message sent.
        detail: Option<String>,
    },
    /// The kernel's interface is too old for the command.
    #[error("{command} needs device-mapper interface {needed} but the kernel has {kernel}")]
    Unsupported {
        /// The command.
        command: Command,
        /// The version it needs.
        needed: Version,
        /// The kernel's version.
        kernel: Version,
    },
    /// The control node could not be opened.
    #[error("cannot open {path}: {errno} ({desc}){hint}", desc = errno.desc())]
    Open {
        /// The path tried.
        path: String,
        /// Why.
        errno: Errno,
        /// A hint for the common causes.
        hint: &'static str,
    },
    /// A name, uuid or argument was refused before any ioctl.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidArgument {
        /// What was being validated (device name, uuid, target type...).
        what: &'static str,
        /// The offending value (lossily decoded).
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// The kernel's reply could not be decoded.
    #[error("malformed {command} reply from the kernel: {reason}")]
    Malformed {
        /// The command whose reply was malformed.
        command: Command,
        /// What was wrong.
        reason: String,
    },
    /// Waiting for udev failed or timed out.
    #[error("udev: {0}")]
    Udev(String),
    /// Creating or removing a device node failed.
    #[error("device node {path}: {errno} ({desc})", desc = errno.desc())]
    Node {
        /// The node path.
        path: String,
        /// Why.
        errno: Errno,
    },
}

impl DmError {
    /// The errno of a failed ioctl, if this is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            DmError::Ioctl { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// The kind of a failed ioctl, if this is one.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            DmError::Ioctl { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// True for "no such device".
    pub fn is_not_found(&self) -> bool {
        self.kind() == Some(ErrorKind::NotFound)
    }

    /// True for EBUSY.
    pub fn is_busy(&self) -> bool {
        self.kind() == Some(ErrorKind::Busy)
    }
}

/// Result alias for the dm layer.
pub type Result<T> = std::result::Result<T, DmError>;
