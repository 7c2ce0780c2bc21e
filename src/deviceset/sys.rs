//! The device set's system calls without a safe wrapper in nix: the two block
//! and filesystem ioctls it issues itself, `BLKDISCARD` (discard a byte range
//! of a block device) and `FITRIM` (fstrim: a mounted filesystem discards its
//! free space), neither a device-mapper ioctl; and a thread's scheduling
//! priority, for the pool monitor. Every `unsafe` block of the set lives here.
#![allow(unsafe_code)]

use nix::errno::Errno;
use nix::libc;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `struct fstrim_range` of `<linux/fs.h>`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct FstrimRange {
    start: u64,
    len: u64,
    minlen: u64,
}

// BLKDISCARD is _IO(0x12, 119) but takes a pointer to `uint64_t[2]`.
nix::ioctl_write_ptr_bad!(
    ioctl_blkdiscard,
    nix::request_code_none!(0x12, 119),
    [u64; 2]
);
nix::ioctl_readwrite!(ioctl_fitrim, b'X', 121, FstrimRange);

/// Discards `len` bytes at `offset` of the block device open (for writing) as `fd`.
pub(crate) fn blkdiscard(fd: BorrowedFd<'_>, offset: u64, len: u64) -> Result<(), Errno> {
    let range = [offset, len];
    // SAFETY: `fd` is a live descriptor; the kernel reads two u64s from
    // `range`, which lives for the call.
    unsafe { ioctl_blkdiscard(fd.as_raw_fd(), &range) }.map(drop)
}

/// Trims the whole filesystem a directory `fd` is in; returns the bytes the
/// filesystem reports it discarded.
pub(crate) fn fitrim(fd: BorrowedFd<'_>) -> Result<u64, Errno> {
    let mut range = FstrimRange {
        start: 0,
        len: u64::MAX,
        minlen: 0,
    };
    // SAFETY: `fd` is a live descriptor; the kernel reads and writes one
    // `struct fstrim_range`, which `range` is (repr(C), three u64s).
    unsafe { ioctl_fitrim(fd.as_raw_fd(), &mut range) }?;
    Ok(range.len)
}

/// Sets the calling thread's nice value (on Linux `setpriority` with a
/// thread id applies to that thread alone). Lowering it below 0 needs
/// `CAP_SYS_NICE`.
pub(crate) fn set_thread_nice(nice: i32) -> nix::Result<()> {
    let tid = libc::id_t::try_from(nix::unistd::gettid().as_raw()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: setpriority takes three integers and touches no memory of ours.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
    if r == -1 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}
