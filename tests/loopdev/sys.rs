//! The test's only unsafe code: the file-attribute ioctls.
#![allow(unsafe_code)]

use std::fs::File;
use std::path::Path;

const FS_IOC_GETFLAGS: u32 = 0x8008_6601;
const FS_IOC_SETFLAGS: u32 = 0x4008_6602;
const FS_IMMUTABLE_FL: i32 = 0x10;

/// Set or clear the immutable attribute; false where the filesystem has none.
pub fn set_immutable(p: &Path, on: bool) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(f) = File::open(p) else { return false };
    let mut flags: i32 = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int through the pointer, which is valid.
    let r = unsafe { nix::libc::ioctl(f.as_raw_fd(), FS_IOC_GETFLAGS as _, &mut flags) };
    if r != 0 {
        return false;
    }
    if on {
        flags |= FS_IMMUTABLE_FL;
    } else {
        flags &= !FS_IMMUTABLE_FL;
    }
    // SAFETY: FS_IOC_SETFLAGS reads one int through the pointer, which is valid.
    unsafe { nix::libc::ioctl(f.as_raw_fd(), FS_IOC_SETFLAGS as _, &flags) == 0 }
}
