//! Bound-device configuration: `LOOP_CONFIGURE`, or `LOOP_SET_FD` +
//! `LOOP_SET_STATUS64` (+ block size, direct I/O) on kernels without it.

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;

use crate::retry::Backoff;

use super::backing::Backing;
use super::control::Attempt;
use super::error::{sys as sys_err, LoopError};
use super::options::{AttachOptions, LoopFlags};
use super::sys::{self, LoopConfig, LoopInfo64};

/// Set once a kernel has shown it lacks `LOOP_CONFIGURE`.
static NO_CONFIGURE: AtomicBool = AtomicBool::new(false);

/// Apply `opts` to the unbound device `dev`: `LOOP_CONFIGURE`, or on kernels
/// without it `LOOP_SET_FD` + `LOOP_SET_STATUS64` (+ block size, direct I/O).
pub(super) fn configure(
    dev: BorrowedFd<'_>,
    device: &Path,
    backing: &Backing,
    opts: &AttachOptions,
    use_configure: bool,
) -> std::result::Result<(), Attempt> {
    let mut info = LoopInfo64 {
        lo_offset: opts.offset,
        lo_sizelimit: opts.size_limit,
        lo_flags: opts.flags().bits(),
        ..LoopInfo64::default()
    };
    info.set_file_name(backing.name.as_os_str().as_bytes());
    let backing_fd = backing.file.as_fd();

    let mut configure_refused = false;
    if use_configure && !NO_CONFIGURE.load(Ordering::Relaxed) {
        let mut cfg = LoopConfig {
            fd: u32::try_from(std::os::fd::AsRawFd::as_raw_fd(&backing_fd))
                .map_err(|_| Attempt::Fatal(sys_err("LOOP_CONFIGURE", device, Errno::EBADF)))?,
            block_size: opts.block_size.unwrap_or(0),
            info,
            ..LoopConfig::default()
        };
        let mut result = sys::loop_configure(dev, &cfg);
        if result == Err(Errno::EINVAL) && opts.direct_io {
            // Some kernels refuse direct I/O outright instead of falling back.
            cfg.info.lo_flags &= !LoopFlags::DIRECT_IO.bits();
            result = sys::loop_configure(dev, &cfg);
        }
        match result {
            Ok(()) => {
                if opts.direct_io {
                    enable_direct_io(dev, device);
                }
                return Ok(());
            }
            Err(Errno::EBUSY) => return Err(Attempt::Retry { busy: true }),
            // Unknown loop ioctls answer EINVAL; take the old path, which also
            // tells which setting the kernel refuses.
            Err(Errno::EINVAL) | Err(Errno::ENOTTY) => configure_refused = true,
            Err(e) => return Err(configure_error(device, backing, e).into()),
        }
    }

    match sys::loop_set_fd(dev, backing_fd) {
        Ok(()) => {}
        Err(Errno::EBUSY) => return Err(Attempt::Retry { busy: true }),
        Err(e) => return Err(configure_error(device, backing, e).into()),
    }
    let undo = |e: LoopError| {
        let _ = sys::loop_clr_fd(dev);
        Attempt::Fatal(e)
    };
    // READ_ONLY follows from the backing descriptor's mode; DIRECT_IO has its
    // own ioctl.
    info.lo_flags &= (LoopFlags::AUTOCLEAR | LoopFlags::PARTSCAN).bits();
    match while_busy(|| sys::loop_set_status64(dev, &info)) {
        Ok(()) => {}
        Err(Errno::EINVAL) => {
            return Err(undo(LoopError::InvalidOption {
                path: backing.given.clone(),
                reason: format!(
                    "offset {} / size limit {} refused by the loop driver",
                    opts.offset, opts.size_limit
                ),
            }))
        }
        Err(Errno::EBUSY | Errno::EAGAIN) => return Err(undo(busy_configuring(device))),
        Err(e) => return Err(undo(sys_err("LOOP_SET_STATUS64", device, e))),
    }
    if let Some(bs) = opts.block_size {
        match while_busy(|| sys::loop_set_block_size(dev, bs)) {
            Ok(()) => {}
            Err(Errno::EINVAL) => {
                return Err(undo(LoopError::InvalidOption {
                    path: backing.given.clone(),
                    reason: format!("block size {bs} refused by the loop driver"),
                }))
            }
            Err(Errno::EBUSY) => return Err(undo(busy_configuring(device))),
            Err(e) => return Err(undo(sys_err("LOOP_SET_BLOCK_SIZE", device, e))),
        }
    }
    if opts.direct_io {
        enable_direct_io(dev, device);
    }
    // CONFIGURE refused what the old ioctls accepted: the kernel lacks it.
    if configure_refused && !NO_CONFIGURE.swap(true, Ordering::Relaxed) {
        log::debug!("LOOP_CONFIGURE unavailable, using LOOP_SET_FD + LOOP_SET_STATUS64");
    }
    Ok(())
}

/// How long a device we have just bound may stay busy: 50 tries, pausing
/// 1 ms, then 2 ms more each time up to 20 ms (about 0.9 s in all).
///
/// On such a device, `EBUSY`/`EAGAIN` come from someone holding it open
/// exclusively for a moment (newer kernels claim the device for
/// `LOOP_SET_BLOCK_SIZE`/`LOOP_SET_DIRECT_IO`) or, on older kernels, from
/// `LOOP_SET_STATUS64` finding cached pages it could not drop.
const SETTLE: Backoff = Backoff::new(50, 1, 2, 20);

/// Repeat `op` while it fails with `EBUSY`/`EAGAIN`, as [`SETTLE`] allows.
fn while_busy(
    mut op: impl FnMut() -> std::result::Result<(), Errno>,
) -> std::result::Result<(), Errno> {
    SETTLE.run(|_| op(), |e| matches!(e, Errno::EBUSY | Errno::EAGAIN))
}

fn busy_configuring(device: &Path) -> LoopError {
    LoopError::DeviceBusy {
        device: device.into(),
        reason: "held exclusively by another user while it was being configured".into(),
    }
}

/// Switch direct I/O on if it is not on yet; where the backing filesystem (or
/// the offset) does not allow it, the device stays on buffered I/O.
fn enable_direct_io(dev: BorrowedFd<'_>, device: &Path) {
    let on = sys::loop_get_status64(dev)
        .map(|i| i.lo_flags & LoopFlags::DIRECT_IO.bits() != 0)
        .unwrap_or(false);
    if !on {
        if let Err(e) = while_busy(|| sys::loop_set_direct_io(dev, true)) {
            log::debug!(
                "{}: direct I/O not available ({e}), using buffered I/O",
                device.display()
            );
        }
    }
}

fn configure_error(device: &Path, backing: &Backing, e: Errno) -> LoopError {
    match e {
        Errno::EINVAL | Errno::EBADF => LoopError::InvalidBackingFile {
            path: backing.given.clone(),
            errno: e,
        },
        Errno::EPERM | Errno::EACCES => LoopError::PermissionDenied {
            path: device.into(),
        },
        e => sys_err("LOOP_CONFIGURE", device, e),
    }
}
