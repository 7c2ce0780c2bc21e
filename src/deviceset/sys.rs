//! The device set's system calls without a safe wrapper in nix: the two block
//! and filesystem ioctls it issues itself, `BLKDISCARD` (discard a byte range
//! of a block device) and `FITRIM` (fstrim: a mounted filesystem discards its
//! free space), neither a device-mapper ioctl; a thread's scheduling
//! priority, for the pool monitor; and swapping two names in a directory,
//! for the side files. Every `unsafe` block of the set lives here.
#![allow(unsafe_code)]

use nix::errno::Errno;
use nix::libc;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

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

/// Swaps the names `a` and `b` (both existing, file names in the directory
/// open as `dir`) in one step: `renameat2(RENAME_EXCHANGE)`, as the raw
/// system call (nix wraps it only for glibc, and musl builds are static).
/// `EINVAL` where the filesystem cannot (or a name holds a NUL).
pub(crate) fn exchange_names(dir: impl AsFd, a: &str, b: &str) -> Result<(), Errno> {
    let (a, b) = (
        CString::new(a).map_err(|_| Errno::EINVAL)?,
        CString::new(b).map_err(|_| Errno::EINVAL)?,
    );
    let fd = dir.as_fd().as_raw_fd();
    // SAFETY: renameat2 reads two NUL-terminated strings, which `a` and `b`
    // are and outlive the call, and takes a live descriptor and integers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            fd,
            a.as_ptr(),
            fd,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == -1 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}
