//! Attach options, device flags and the status of a bound device.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use bitflags::bitflags;
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use super::error::{LoopError, Result};
use super::scan::sysfs_backing_file;
use super::sys::LoopInfo64;

bitflags! {
    /// `LO_FLAGS_*` of a bound device.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct LoopFlags: u32 {
        /// The device refuses writes.
        const READ_ONLY = 1;
        /// The device is detached when its last user closes it.
        const AUTOCLEAR = 4;
        /// The kernel scans the device for partitions.
        const PARTSCAN = 8;
        /// The device reads and writes its backing file with direct I/O.
        const DIRECT_IO = 16;
    }
}

/// Create `path` as a sparse file of exactly `size` bytes, or grow it to
/// Options for [`LoopControl::attach`](super::LoopControl::attach). Build with [`AttachOptions::new`] and
/// the setters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttachOptions {
    /// Bind read-only: the backing file is opened read-only and the device
    /// refuses writes.
    pub read_only: bool,
    /// Detach automatically when the last user closes the device.
    pub autoclear: bool,
    /// Ask for direct I/O on the backing file. Where the filesystem or the
    /// offset does not allow it the device uses buffered I/O instead; see
    /// [`LoopDevice::direct_io`](super::LoopDevice::direct_io).
    pub direct_io: bool,
    /// Let the kernel scan the device for partitions.
    pub partscan: bool,
    /// Logical block size (power of two, 512..=65536), `None` for the default.
    pub block_size: Option<u32>,
    /// Byte offset of the device's start in the backing file.
    pub offset: u64,
    /// Maximum size of the device in bytes, 0 for "up to the end of the file".
    pub size_limit: u64,
}

impl AttachOptions {
    /// Default options: read-write, no autoclear, buffered I/O, whole file.
    pub fn new() -> Self {
        Self::default()
    }
    /// Set [`AttachOptions::read_only`].
    pub fn read_only(mut self, on: bool) -> Self {
        self.read_only = on;
        self
    }
    /// Set [`AttachOptions::autoclear`].
    pub fn autoclear(mut self, on: bool) -> Self {
        self.autoclear = on;
        self
    }
    /// Set [`AttachOptions::direct_io`].
    pub fn direct_io(mut self, on: bool) -> Self {
        self.direct_io = on;
        self
    }
    /// Set [`AttachOptions::partscan`].
    pub fn partscan(mut self, on: bool) -> Self {
        self.partscan = on;
        self
    }
    /// Set [`AttachOptions::block_size`].
    pub fn block_size(mut self, size: u32) -> Self {
        self.block_size = Some(size);
        self
    }
    /// Set [`AttachOptions::offset`].
    pub fn offset(mut self, offset: u64) -> Self {
        self.offset = offset;
        self
    }
    /// Set [`AttachOptions::size_limit`].
    pub fn size_limit(mut self, limit: u64) -> Self {
        self.size_limit = limit;
        self
    }

    pub(super) fn flags(&self) -> LoopFlags {
        let mut f = LoopFlags::empty();
        f.set(LoopFlags::READ_ONLY, self.read_only);
        f.set(LoopFlags::AUTOCLEAR, self.autoclear);
        f.set(LoopFlags::PARTSCAN, self.partscan);
        f.set(LoopFlags::DIRECT_IO, self.direct_io);
        f
    }

    pub(super) fn validate(&self, path: &Path) -> Result<()> {
        if let Some(bs) = self.block_size {
            if !bs.is_power_of_two() || !(512..=65536).contains(&bs) {
                return Err(LoopError::InvalidOption {
                    path: path.into(),
                    reason: format!("block size {bs} is not a power of two between 512 and 65536"),
                });
            }
        }
        Ok(())
    }
}

/// Status of a bound loop device, read with `LOOP_GET_STATUS64`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoopStatus {
    /// N of `/dev/loopN`.
    pub number: u32,
    /// The device node.
    pub device: PathBuf,
    /// Full path of the backing file as the kernel reports it in sysfs (ends in
    /// " (deleted)" if the file was unlinked), or the name field where sysfs
    /// is unavailable.
    pub backing_file: PathBuf,
    /// The 64-byte name field set at attach time (may be truncated).
    pub file_name: String,
    /// `st_dev` of the backing file.
    pub backing_device: u64,
    /// Inode of the backing file.
    pub backing_inode: u64,
    /// Byte offset into the backing file.
    pub offset: u64,
    /// Size limit in bytes, 0 for none.
    pub size_limit: u64,
    /// Flags in force.
    pub flags: LoopFlags,
}

impl LoopStatus {
    pub(super) fn from_info(device: PathBuf, info: &LoopInfo64) -> Self {
        let file_name = String::from_utf8_lossy(info.file_name()).into_owned();
        let backing_file = sysfs_backing_file(info.lo_number)
            .unwrap_or_else(|| PathBuf::from(std::ffi::OsStr::from_bytes(info.file_name())));
        LoopStatus {
            number: info.lo_number,
            device,
            backing_file,
            file_name,
            backing_device: info.lo_device,
            backing_inode: info.lo_inode,
            offset: info.lo_offset,
            size_limit: info.lo_sizelimit,
            flags: LoopFlags::from_bits_retain(info.lo_flags),
        }
    }

    /// The device refuses writes.
    pub fn read_only(&self) -> bool {
        self.flags.contains(LoopFlags::READ_ONLY)
    }
    /// The device is detached on its last close.
    pub fn autoclear(&self) -> bool {
        self.flags.contains(LoopFlags::AUTOCLEAR)
    }
    /// The device uses direct I/O.
    pub fn direct_io(&self) -> bool {
        self.flags.contains(LoopFlags::DIRECT_IO)
    }
    /// The kernel scans the device for partitions.
    pub fn partscan(&self) -> bool {
        self.flags.contains(LoopFlags::PARTSCAN)
    }
}

impl Serialize for LoopStatus {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("LoopStatus", 12)?;
        st.serialize_field("number", &self.number)?;
        st.serialize_field("device", &self.device.to_string_lossy())?;
        st.serialize_field("backing_file", &self.backing_file.to_string_lossy())?;
        st.serialize_field("file_name", &self.file_name)?;
        st.serialize_field("backing_device", &self.backing_device)?;
        st.serialize_field("backing_inode", &self.backing_inode)?;
        st.serialize_field("offset", &self.offset)?;
        st.serialize_field("size_limit", &self.size_limit)?;
        st.serialize_field("read_only", &self.read_only())?;
        st.serialize_field("autoclear", &self.autoclear())?;
        st.serialize_field("direct_io", &self.direct_io())?;
        st.serialize_field("partscan", &self.partscan())?;
        st.end()
    }
}
