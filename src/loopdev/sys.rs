//! Raw loop-device ABI from `include/uapi/linux/loop.h`: the two structs the
//! ioctls carry, the ioctl numbers and thin wrappers around each ioctl.
//!
//! Every `unsafe` block of the loop layer lives in this file, one per ioctl.
#![allow(unsafe_code)]

use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::libc;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// Length of `lo_file_name` and `lo_crypt_name`.
pub const LO_NAME_SIZE: usize = 64;
/// Length of `lo_encrypt_key`.
pub const LO_KEY_SIZE: usize = 32;

/// Major number of loop block devices.
pub const LOOP_MAJOR: u64 = 7;

/// `LOOP_SET_FD`: bind a backing file descriptor.
pub const LOOP_SET_FD: u32 = 0x4C00;
/// `LOOP_CLR_FD`: detach (deferred to the last close while others hold the device).
pub const LOOP_CLR_FD: u32 = 0x4C01;
/// `LOOP_SET_STATUS64`: set offset, size limit, flags and name.
pub const LOOP_SET_STATUS64: u32 = 0x4C04;
/// `LOOP_GET_STATUS64`: read a bound device's `loop_info64`.
pub const LOOP_GET_STATUS64: u32 = 0x4C05;
/// `LOOP_SET_CAPACITY`: re-read the backing file's size.
pub const LOOP_SET_CAPACITY: u32 = 0x4C07;
/// `LOOP_SET_DIRECT_IO`: switch direct I/O on (1) or off (0).
pub const LOOP_SET_DIRECT_IO: u32 = 0x4C08;
/// `LOOP_SET_BLOCK_SIZE`: set the logical block size.
pub const LOOP_SET_BLOCK_SIZE: u32 = 0x4C09;
/// `LOOP_CONFIGURE` (Linux 5.8+): bind and configure in one call.
pub const LOOP_CONFIGURE: u32 = 0x4C0A;
/// `LOOP_CTL_ADD` on `/dev/loop-control`: create device N.
pub const LOOP_CTL_ADD: u32 = 0x4C80;
/// `LOOP_CTL_REMOVE` on `/dev/loop-control`: remove device N.
pub const LOOP_CTL_REMOVE: u32 = 0x4C81;
/// `LOOP_CTL_GET_FREE` on `/dev/loop-control`: number of an unbound device (made if needed).
pub const LOOP_CTL_GET_FREE: u32 = 0x4C82;

/// `BLKGETSIZE64`: size of a block device in bytes (`_IOR(0x12, 114, size_t)`).
pub const BLKGETSIZE64: u32 = 0x8008_1272;
/// `BLKROGET`: whether a block device is read-only (`_IO(0x12, 94)`).
pub const BLKROGET: u32 = 0x125E;

/// `struct loop_info64`, 232 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct LoopInfo64 {
    /// `st_dev` of the backing file (kernel `huge_encode_dev`, same as userspace `dev_t`).
    pub lo_device: u64,
    /// Inode number of the backing file.
    pub lo_inode: u64,
    /// `st_rdev` of the backing file.
    pub lo_rdevice: u64,
    /// Byte offset into the backing file.
    pub lo_offset: u64,
    /// Size limit in bytes, 0 for "to the end of the file".
    pub lo_sizelimit: u64,
    /// Device number N of `/dev/loopN`.
    pub lo_number: u32,
    /// Obsolete encryption type, always 0.
    pub lo_encrypt_type: u32,
    /// Obsolete encryption key size, always 0.
    pub lo_encrypt_key_size: u32,
    /// `LO_FLAGS_*`.
    pub lo_flags: u32,
    /// Name set by userspace (not necessarily the path), NUL-terminated.
    pub lo_file_name: [u8; LO_NAME_SIZE],
    /// Obsolete.
    pub lo_crypt_name: [u8; LO_NAME_SIZE],
    /// Obsolete.
    pub lo_encrypt_key: [u8; LO_KEY_SIZE],
    /// Obsolete.
    pub lo_init: [u64; 2],
}

/// `struct loop_config` for `LOOP_CONFIGURE`, 304 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct LoopConfig {
    /// Backing file descriptor.
    pub fd: u32,
    /// Logical block size, 0 for the default.
    pub block_size: u32,
    /// Offset, size limit, flags and name.
    pub info: LoopInfo64,
    /// Must be zero.
    pub reserved: [u64; 8],
}

const _: () = {
    assert!(size_of::<LoopInfo64>() == 232);
    assert!(offset_of!(LoopInfo64, lo_device) == 0);
    assert!(offset_of!(LoopInfo64, lo_inode) == 8);
    assert!(offset_of!(LoopInfo64, lo_rdevice) == 16);
    assert!(offset_of!(LoopInfo64, lo_offset) == 24);
    assert!(offset_of!(LoopInfo64, lo_sizelimit) == 32);
    assert!(offset_of!(LoopInfo64, lo_number) == 40);
    assert!(offset_of!(LoopInfo64, lo_encrypt_type) == 44);
    assert!(offset_of!(LoopInfo64, lo_encrypt_key_size) == 48);
    assert!(offset_of!(LoopInfo64, lo_flags) == 52);
    assert!(offset_of!(LoopInfo64, lo_file_name) == 56);
    assert!(offset_of!(LoopInfo64, lo_crypt_name) == 120);
    assert!(offset_of!(LoopInfo64, lo_encrypt_key) == 184);
    assert!(offset_of!(LoopInfo64, lo_init) == 216);
    assert!(size_of::<LoopConfig>() == 304);
    assert!(offset_of!(LoopConfig, fd) == 0);
    assert!(offset_of!(LoopConfig, block_size) == 4);
    assert!(offset_of!(LoopConfig, info) == 8);
    assert!(offset_of!(LoopConfig, reserved) == 240);
};

impl Default for LoopInfo64 {
    fn default() -> Self {
        Self::new_zeroed()
    }
}

impl Default for LoopConfig {
    fn default() -> Self {
        Self::new_zeroed()
    }
}

impl LoopInfo64 {
    /// Store `name` in `lo_file_name`, cut to 63 bytes so it stays NUL-terminated.
    pub fn set_file_name(&mut self, name: &[u8]) {
        let n = name.len().min(LO_NAME_SIZE - 1);
        self.lo_file_name = [0; LO_NAME_SIZE];
        self.lo_file_name[..n].copy_from_slice(&name[..n]);
    }

    /// `lo_file_name` up to its first NUL.
    pub fn file_name(&self) -> &[u8] {
        let end = self
            .lo_file_name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(LO_NAME_SIZE);
        &self.lo_file_name[..end]
    }
}

nix::ioctl_none_bad!(ioctl_loop_clr_fd, LOOP_CLR_FD);
nix::ioctl_none_bad!(ioctl_loop_set_capacity, LOOP_SET_CAPACITY);
nix::ioctl_none_bad!(ioctl_loop_ctl_get_free, LOOP_CTL_GET_FREE);
nix::ioctl_write_int_bad!(ioctl_loop_set_fd, LOOP_SET_FD);
nix::ioctl_write_ptr_bad!(ioctl_loop_set_status64, LOOP_SET_STATUS64, LoopInfo64);
nix::ioctl_read_bad!(ioctl_loop_get_status64, LOOP_GET_STATUS64, LoopInfo64);
nix::ioctl_write_ptr_bad!(ioctl_loop_configure, LOOP_CONFIGURE, LoopConfig);
nix::ioctl_read_bad!(ioctl_blkgetsize64, BLKGETSIZE64, u64);
nix::ioctl_read_bad!(ioctl_blkroget, BLKROGET, libc::c_int);

/// Issue an ioctl whose argument is an `unsigned long` value.
fn ioctl_ulong(fd: BorrowedFd<'_>, request: u32, arg: libc::c_ulong) -> Result<i32, Errno> {
    // SAFETY: `fd` is a live descriptor for the borrow's duration; the loop
    // ioctls routed here (SET_BLOCK_SIZE, SET_DIRECT_IO, CTL_ADD, CTL_REMOVE)
    // take their argument by value and touch no user memory.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg) };
    Errno::result(r)
}

/// `LOOP_SET_FD`.
pub fn loop_set_fd(dev: BorrowedFd<'_>, file: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: both descriptors are live for the call; the argument is an fd by value.
    unsafe { ioctl_loop_set_fd(dev.as_raw_fd(), file.as_raw_fd()) }.map(drop)
}

/// `LOOP_CLR_FD`.
pub fn loop_clr_fd(dev: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: live descriptor; the ioctl takes no argument.
    unsafe { ioctl_loop_clr_fd(dev.as_raw_fd()) }.map(drop)
}

/// `LOOP_SET_STATUS64`.
pub fn loop_set_status64(dev: BorrowedFd<'_>, info: &LoopInfo64) -> Result<(), Errno> {
    // SAFETY: live descriptor; `info` points to a valid 232-byte loop_info64 the
    // kernel only reads.
    unsafe { ioctl_loop_set_status64(dev.as_raw_fd(), info) }.map(drop)
}

/// `LOOP_GET_STATUS64`; `ENXIO` means the device is not bound.
pub fn loop_get_status64(dev: BorrowedFd<'_>) -> Result<LoopInfo64, Errno> {
    let mut info = LoopInfo64::new_zeroed();
    // SAFETY: live descriptor; `info` is a writable 232-byte loop_info64 and
    // every bit pattern is valid for it.
    unsafe { ioctl_loop_get_status64(dev.as_raw_fd(), &mut info) }?;
    Ok(info)
}

/// `LOOP_CONFIGURE`.
pub fn loop_configure(dev: BorrowedFd<'_>, config: &LoopConfig) -> Result<(), Errno> {
    // SAFETY: live descriptor; `config` points to a valid 304-byte loop_config
    // (reserved words zeroed) the kernel only reads.
    unsafe { ioctl_loop_configure(dev.as_raw_fd(), config) }.map(drop)
}

/// `LOOP_SET_CAPACITY`.
pub fn loop_set_capacity(dev: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: live descriptor; the ioctl takes no argument.
    unsafe { ioctl_loop_set_capacity(dev.as_raw_fd()) }.map(drop)
}

/// `LOOP_SET_DIRECT_IO`.
pub fn loop_set_direct_io(dev: BorrowedFd<'_>, on: bool) -> Result<(), Errno> {
    ioctl_ulong(dev, LOOP_SET_DIRECT_IO, libc::c_ulong::from(on)).map(drop)
}

/// `LOOP_SET_BLOCK_SIZE`.
pub fn loop_set_block_size(dev: BorrowedFd<'_>, size: u32) -> Result<(), Errno> {
    ioctl_ulong(dev, LOOP_SET_BLOCK_SIZE, libc::c_ulong::from(size)).map(drop)
}

/// `LOOP_CTL_GET_FREE`: the number of an unbound device.
pub fn loop_ctl_get_free(ctl: BorrowedFd<'_>) -> Result<u32, Errno> {
    // SAFETY: live descriptor; the ioctl takes no argument and returns the number.
    let n = unsafe { ioctl_loop_ctl_get_free(ctl.as_raw_fd()) }?;
    u32::try_from(n).map_err(|_| Errno::EINVAL)
}

/// `LOOP_CTL_ADD`: create device `n`; returns its number.
pub fn loop_ctl_add(ctl: BorrowedFd<'_>, n: u32) -> Result<u32, Errno> {
    let r = ioctl_ulong(ctl, LOOP_CTL_ADD, libc::c_ulong::from(n))?;
    u32::try_from(r).map_err(|_| Errno::EINVAL)
}

/// `LOOP_CTL_REMOVE`: remove unbound, unopened device `n`.
pub fn loop_ctl_remove(ctl: BorrowedFd<'_>, n: u32) -> Result<(), Errno> {
    ioctl_ulong(ctl, LOOP_CTL_REMOVE, libc::c_ulong::from(n)).map(drop)
}

/// `BLKGETSIZE64`.
pub fn blk_get_size64(dev: BorrowedFd<'_>) -> Result<u64, Errno> {
    let mut size = 0u64;
    // SAFETY: live descriptor; `size` is a writable u64, as BLKGETSIZE64 expects.
    unsafe { ioctl_blkgetsize64(dev.as_raw_fd(), &mut size) }?;
    Ok(size)
}

/// `BLKROGET`.
pub fn blk_ro_get(dev: BorrowedFd<'_>) -> Result<bool, Errno> {
    let mut ro: libc::c_int = 0;
    // SAFETY: live descriptor; `ro` is a writable int, as BLKROGET expects.
    unsafe { ioctl_blkroget(dev.as_raw_fd(), &mut ro) }?;
    Ok(ro != 0)
}
