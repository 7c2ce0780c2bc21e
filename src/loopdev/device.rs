//! [`LoopDevice`], an open handle on a bound device: status, capacity,
//! detach.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::stat::major;

use super::error::{device_open_error, io_errno, sys as sys_err, LoopError, Result};
use super::options::LoopStatus;
use super::sys;

/// How long [`LoopDevice::detach`] waits for other users to close the device.
pub const DEFAULT_DETACH_GRACE: Duration = Duration::from_secs(1);

/// An open handle on a bound loop device.
///
/// Dropping it closes the descriptor; that detaches the device only if it is
/// autoclear and this was its last user.
#[derive(Debug)]
pub struct LoopDevice {
    pub(super) fd: OwnedFd,
    pub(super) number: u32,
    pub(super) path: PathBuf,
    pub(super) backing_file: PathBuf,
    pub(super) direct_io: bool,
    pub(super) read_only: bool,
}

impl LoopDevice {
    /// Open the bound loop device at `device` (e.g. `/dev/loop3`).
    pub fn open(device: impl AsRef<Path>) -> Result<Self> {
        let path = device.as_ref();
        let file = match open_device_rw(path) {
            Ok(f) => f,
            Err(e) if io_errno(&e) == Errno::ENXIO => {
                return Err(LoopError::NotBound {
                    device: path.into(),
                })
            }
            Err(e) => return Err(device_open_error(path, &e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| sys_err("fstat", path, io_errno(&e)))?;
        if !meta.file_type().is_block_device() || major(meta.rdev()) != sys::LOOP_MAJOR {
            return Err(LoopError::NotALoopDevice {
                device: path.into(),
            });
        }
        let fd: OwnedFd = file.into();
        let info = match sys::loop_get_status64(fd.as_fd()) {
            Ok(info) => info,
            Err(Errno::ENXIO) => {
                return Err(LoopError::NotBound {
                    device: path.into(),
                })
            }
            Err(Errno::ENOTTY | Errno::EINVAL) => {
                return Err(LoopError::NotALoopDevice {
                    device: path.into(),
                })
            }
            Err(e) => return Err(sys_err("LOOP_GET_STATUS64", path, e)),
        };
        let status = LoopStatus::from_info(path.into(), &info);
        Ok(LoopDevice {
            fd,
            number: info.lo_number,
            path: path.into(),
            backing_file: status.backing_file.clone(),
            direct_io: status.direct_io(),
            read_only: status.read_only(),
        })
    }

    /// N of `/dev/loopN`.
    pub fn number(&self) -> u32 {
        self.number
    }
    /// The device node.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The backing file (absolute path at attach time).
    pub fn backing_file(&self) -> &Path {
        &self.backing_file
    }
    /// Whether direct I/O was on when the handle was made (an attach that asked
    /// for direct I/O on a filesystem refusing it ends up with `false`).
    pub fn direct_io(&self) -> bool {
        self.direct_io
    }
    /// Whether the device refuses writes.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Current status from `LOOP_GET_STATUS64`.
    pub fn status(&self) -> Result<LoopStatus> {
        sys::loop_get_status64(self.fd.as_fd())
            .map(|info| LoopStatus::from_info(self.path.clone(), &info))
            .map_err(|e| self.map_errno("LOOP_GET_STATUS64", e))
    }

    /// `LOOP_SET_CAPACITY`: take up the backing file's new size.
    pub fn set_capacity(&self) -> Result<()> {
        sys::loop_set_capacity(self.fd.as_fd()).map_err(|e| self.map_errno("LOOP_SET_CAPACITY", e))
    }

    /// Size of the device in bytes (`BLKGETSIZE64`).
    pub fn size(&self) -> Result<u64> {
        sys::blk_get_size64(self.fd.as_fd()).map_err(|e| self.map_errno("BLKGETSIZE64", e))
    }

    /// Whether the block layer marks the device read-only (`BLKROGET`).
    pub fn is_read_only(&self) -> Result<bool> {
        sys::blk_ro_get(self.fd.as_fd()).map_err(|e| self.map_errno("BLKROGET", e))
    }

    /// Detach, waiting up to [`DEFAULT_DETACH_GRACE`] for other users to close
    /// the device. See [`LoopDevice::detach_within`].
    pub fn detach(self) -> Result<()> {
        self.detach_within(DEFAULT_DETACH_GRACE)
    }

    /// Detach (`LOOP_CLR_FD`). The kernel finishes a detach when the last user
    /// closes the device; if other users still hold it after `grace`, this
    /// returns [`LoopError::DeviceBusy`] and the device will be detached when
    /// they close it. [`LoopError::NotBound`] if nothing is bound.
    pub fn detach_within(self, grace: Duration) -> Result<()> {
        let start = Instant::now();
        // Hold the device exclusively while detaching: binding needs an
        // exclusive claim, so no one can bind it between our LOOP_CLR_FD and
        // the checks below (kernels before 6.x clear synchronously inside
        // LOOP_CLR_FD, leaving our descriptor on an unbound device that
        // another attach could take). A concurrent attach that opened the
        // device before we bound it holds such a claim for a moment only.
        let mut delay = Duration::from_micros(100);
        let exclusive = loop {
            match self.reopen_exclusive() {
                Ok(f) => break Some(OwnedFd::from(f)),
                Err(Errno::EBUSY) if start.elapsed() < grace => {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_millis(20));
                }
                Err(Errno::EBUSY) => break None,
                Err(Errno::ENXIO) => return Err(LoopError::NotBound { device: self.path }),
                Err(e) => return Err(sys_err("open O_EXCL", self.path, e)),
            }
        };
        let LoopDevice { fd, path, .. } = self;
        let Some(exclusive) = exclusive else {
            // Held exclusively (mounted, in a device-mapper table, ...): the
            // binding is ours, so ask for the detach on its last close.
            return match sys::loop_clr_fd(fd.as_fd()) {
                Ok(()) => Err(LoopError::DeviceBusy {
                    device: path,
                    reason: "held exclusively by another user (mounted or in use by \
                             device-mapper?); it will be detached when released"
                        .into(),
                }),
                Err(Errno::ENXIO) => Err(LoopError::NotBound { device: path }),
                Err(e) => Err(sys_err("LOOP_CLR_FD", path, e)),
            };
        };
        drop(fd);
        let fd = exclusive.as_fd();
        match sys::loop_clr_fd(fd) {
            Ok(()) => {}
            Err(Errno::ENXIO) => return Err(LoopError::NotBound { device: path }),
            Err(e) => return Err(sys_err("LOOP_CLR_FD", path, e)),
        }
        let mut delay = Duration::from_micros(200);
        loop {
            // With our descriptor the only one left, LOOP_CLR_FD has detached
            // the device or put it into rundown (finished when `exclusive` is
            // dropped), and status reads ENXIO. Otherwise other users hold it
            // open and the kernel has set autoclear.
            match sys::loop_get_status64(fd) {
                Err(Errno::ENXIO) => return Ok(()),
                Err(e) => return Err(sys_err("LOOP_GET_STATUS64", path, e)),
                Ok(_) => {}
            }
            let waited = start.elapsed();
            if waited >= grace {
                return Err(LoopError::DeviceBusy {
                    device: path,
                    reason: "held open by another user; it will be detached \
                             when the last user closes it"
                        .into(),
                });
            }
            std::thread::sleep(delay.min(grace - waited));
            delay = (delay * 2).min(Duration::from_millis(50));
            // Still ours: no one can have bound it while we hold the claim.
            match sys::loop_clr_fd(fd) {
                Ok(()) | Err(Errno::ENXIO) => {}
                Err(e) => return Err(sys_err("LOOP_CLR_FD", path, e)),
            }
        }
    }

    /// A second, exclusive descriptor on the same device: through
    /// `/proc/self/fd` (the same inode even if the node was renamed), or the
    /// path where /proc is not mounted.
    fn reopen_exclusive(&self) -> std::result::Result<File, Errno> {
        let via_proc = PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&self.fd)
        ));
        let path = if via_proc.exists() {
            via_proc
        } else {
            self.path.clone()
        };
        let open = |write: bool| {
            OpenOptions::new()
                .read(true)
                .write(write)
                .custom_flags(nix::libc::O_EXCL)
                .open(&path)
        };
        match open(true) {
            Err(e) if matches!(io_errno(&e), Errno::EROFS | Errno::EACCES | Errno::EPERM) => {
                open(false)
            }
            r => r,
        }
        .map_err(|e| io_errno(&e))
    }

    fn map_errno(&self, op: &'static str, e: Errno) -> LoopError {
        match e {
            Errno::ENXIO => LoopError::NotBound {
                device: self.path.clone(),
            },
            e => sys_err(op, self.path.clone(), e),
        }
    }
}

impl AsFd for LoopDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

pub(super) fn open_device_rw(path: &Path) -> std::io::Result<File> {
    match OpenOptions::new().read(true).write(true).open(path) {
        Err(e) if matches!(io_errno(&e), Errno::EROFS | Errno::EACCES | Errno::EPERM) => {
            File::open(path)
        }
        r => r,
    }
}
