//! The suite's only unsafe code: `HDIO_GETGEO` on a block device and `poll()`
//! on a raw fd, for cross-checks no shipped tool can make.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

/// `HDIO_GETGEO` from `<linux/hdreg.h>`: a plain number, not `_IOR`-encoded.
const HDIO_GETGEO: u64 = 0x0301;

/// `struct hd_geometry` from `<linux/hdreg.h>`.
#[repr(C)]
#[derive(Default)]
struct HdGeometry {
    heads: u8,
    sectors: u8,
    cylinders: u16,
    start: nix::libc::c_ulong,
}

/// A block device's geometry as the kernel reports it (`HDIO_GETGEO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub cylinders: u16,
    pub heads: u8,
    pub sectors: u8,
    pub start: u64,
}

/// Reads the geometry of the block device at `path` with `HDIO_GETGEO`.
pub fn block_device_geometry(path: impl AsRef<Path>) -> io::Result<Geometry> {
    let file = File::open(path)?;
    let mut geo = HdGeometry::default();
    // SAFETY: HDIO_GETGEO writes one `struct hd_geometry` through the pointer,
    // which points at a live, properly aligned value of that layout; the fd is
    // open for the whole call.
    let r = unsafe { nix::libc::ioctl(file.as_raw_fd(), HDIO_GETGEO as _, &mut geo) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // c_ulong is u32 on 32-bit targets, u64 here.
    #[allow(clippy::useless_conversion)]
    let start = u64::from(geo.start);
    Ok(Geometry {
        cylinders: geo.cylinders,
        heads: geo.heads,
        sectors: geo.sectors,
        start,
    })
}

/// Polls `fd` for readability (`POLLIN`) for at most `timeout`; true if it
/// became readable. The caller keeps `fd` open for the call.
pub fn poll_readable(fd: i32, timeout: Duration) -> io::Result<bool> {
    let mut pfd = nix::libc::pollfd {
        fd,
        events: nix::libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `pfd` is one valid pollfd and the count passed is 1; poll only
    // writes its `revents`. An fd the caller closed makes POLLNVAL, not UB.
    let r = unsafe { nix::libc::poll(&mut pfd, 1, ms) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r > 0 && pfd.revents & nix::libc::POLLIN != 0)
}

/// Sets the calling thread's nice value (Linux: per thread), so a test's
/// observer thread wakes as promptly as the monitor it times.
pub fn set_thread_nice(nice: i32) -> io::Result<()> {
    let tid = nix::unistd::gettid().as_raw() as nix::libc::id_t;
    // SAFETY: setpriority takes three integers and touches no memory of ours.
    let r = unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, tid, nice) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
