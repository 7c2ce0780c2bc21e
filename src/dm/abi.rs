//! The kernel's device-mapper ioctl ABI (`include/uapi/linux/dm-ioctl.h`), encoded by hand.
//!
//! Layouts are checked at compile time against the kernel's x86_64 sizes and offsets.

use bitflags::bitflags;
use std::fmt;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Path of the device-mapper control node.
pub const CONTROL_PATH: &str = "/dev/mapper/control";
/// Directory holding `/dev/mapper/<name>` nodes.
pub const MAPPER_DIR: &str = "/dev/mapper";
/// Major interface version this crate speaks.
pub const INTERFACE_MAJOR: u32 = 4;
/// Size of `struct dm_ioctl`; also the offset where payloads start.
pub const HEADER_SIZE: usize = 312;
/// Size of `struct dm_target_spec`.
pub const TARGET_SPEC_SIZE: usize = 40;
/// `DM_NAME_LEN`: name field size including the NUL.
pub const NAME_LEN: usize = 128;
/// `DM_UUID_LEN`: uuid field size including the NUL.
pub const UUID_LEN: usize = 129;
/// `DM_MAX_TYPE_NAME`: target type field size including the NUL.
pub const MAX_TYPE_NAME: usize = 16;
/// `DM_NAME_LIST_FLAG_HAS_UUID`.
pub const NAME_LIST_HAS_UUID: u32 = 1;
/// `DM_NAME_LIST_FLAG_DOESNT_HAVE_UUID` (no decoder needs it: without
/// `HAS_UUID` there is no uuid; the tests write it).
#[allow(dead_code)]
pub const NAME_LIST_NO_UUID: u32 = 2;

/// `struct dm_ioctl`: the header of every request and reply.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct DmIoctl {
    /// Interface version: in, the minimum the command needs; out, the kernel's.
    pub version: [u32; 3],
    /// Size of the whole buffer, header included.
    pub data_size: u32,
    /// Offset of the payload from the buffer start.
    pub data_start: u32,
    /// Number of targets (in for TABLE_LOAD, out for status).
    pub target_count: u32,
    /// Number of openers of the device (out).
    pub open_count: i32,
    /// `DM_*_FLAG` bits, in and out.
    pub flags: u32,
    /// Event number, or the udev cookie on resume, remove and rename.
    pub event_nr: u32,
    /// Unused.
    pub padding: u32,
    /// Device number, huge-encoded.
    pub dev: u64,
    /// NUL-terminated device name.
    pub name: [u8; NAME_LEN],
    /// NUL-terminated device uuid.
    pub uuid: [u8; UUID_LEN],
    /// Start of the payload area inside the header.
    pub data: [u8; 7],
}

/// `struct dm_target_spec`: one table line; its params string follows it.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct DmTargetSpec {
    /// First sector of the line.
    pub sector_start: u64,
    /// Length in sectors.
    pub length: u64,
    /// Unused by the kernel on input.
    pub status: i32,
    /// Offset to the next spec (input: from this spec; output: from the payload start).
    pub next: u32,
    /// NUL-terminated target type.
    pub target_type: [u8; MAX_TYPE_NAME],
}

/// `struct dm_target_deps` header; `count` device numbers (u64) follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct DmTargetDeps {
    /// Number of devices.
    pub count: u32,
    /// Unused.
    pub padding: u32,
}

/// `struct dm_name_list` header; the NUL-terminated name starts at offset 12
/// (inside the C struct's tail padding), followed on 4.38+ by an 8-aligned
/// `event_nr: u32, flags: u32` and, with `HAS_UUID`, the uuid.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct DmNameList {
    /// Device number, huge-encoded.
    pub dev: u64,
    /// Offset of the next record from this one; 0 for the last.
    pub next: u32,
    /// Start of the name (the C struct's padding).
    pub name_start: [u8; 4],
}

/// Offset of the name in a `dm_name_list` record.
pub const NAME_LIST_NAME_OFFSET: usize = 12;

/// `struct dm_target_versions` header; the NUL-terminated name follows.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct DmTargetVersions {
    /// Offset of the next record from this one; 0 for the last.
    pub next: u32,
    /// Target version.
    pub version: [u32; 3],
}

/// `struct dm_target_msg` header; the NUL-terminated message follows.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct DmTargetMsg {
    /// Sector the message is for.
    pub sector: u64,
}

const _: () = {
    assert!(core::mem::size_of::<DmIoctl>() == HEADER_SIZE);
    assert!(core::mem::align_of::<DmIoctl>() == 8);
    assert!(core::mem::offset_of!(DmIoctl, data_size) == 12);
    assert!(core::mem::offset_of!(DmIoctl, data_start) == 16);
    assert!(core::mem::offset_of!(DmIoctl, target_count) == 20);
    assert!(core::mem::offset_of!(DmIoctl, open_count) == 24);
    assert!(core::mem::offset_of!(DmIoctl, flags) == 28);
    assert!(core::mem::offset_of!(DmIoctl, event_nr) == 32);
    assert!(core::mem::offset_of!(DmIoctl, dev) == 40);
    assert!(core::mem::offset_of!(DmIoctl, name) == 48);
    assert!(core::mem::offset_of!(DmIoctl, uuid) == 176);
    assert!(core::mem::offset_of!(DmIoctl, data) == 305);
    assert!(core::mem::size_of::<DmTargetSpec>() == TARGET_SPEC_SIZE);
    assert!(core::mem::offset_of!(DmTargetSpec, status) == 16);
    assert!(core::mem::offset_of!(DmTargetSpec, next) == 20);
    assert!(core::mem::offset_of!(DmTargetSpec, target_type) == 24);
    assert!(core::mem::size_of::<DmTargetDeps>() == 8);
    assert!(core::mem::size_of::<DmNameList>() == 16);
    assert!(core::mem::offset_of!(DmNameList, next) == 8);
    assert!(core::mem::offset_of!(DmNameList, name_start) == NAME_LIST_NAME_OFFSET);
    assert!(core::mem::size_of::<DmTargetVersions>() == 16);
    assert!(core::mem::offset_of!(DmTargetVersions, version) == 4);
    assert!(core::mem::size_of::<DmTargetMsg>() == 8);
};

bitflags! {
    /// `DM_*_FLAG` bits of `dm_ioctl.flags`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct DmFlags: u32 {
        /// Device is (to be made) read-only.
        const READONLY = 1 << 0;
        /// Suspend (set) or resume (clear) on DEV_SUSPEND; out: device is suspended.
        const SUSPEND = 1 << 1;
        /// Create with the minor given in `dev`.
        const PERSISTENT_DEV = 1 << 3;
        /// TABLE_STATUS returns the table instead of the status.
        const STATUS_TABLE = 1 << 4;
        /// Out: a live table is loaded.
        const ACTIVE_PRESENT = 1 << 5;
        /// Out: an inactive table is loaded.
        const INACTIVE_PRESENT = 1 << 6;
        /// Out: the buffer was too small.
        const BUFFER_FULL = 1 << 8;
        /// Skip bdget (obsolete).
        const SKIP_BDGET = 1 << 9;
        /// Do not freeze the filesystem when suspending.
        const SKIP_LOCKFS = 1 << 10;
        /// Do not flush queued I/O when suspending.
        const NOFLUSH = 1 << 11;
        /// Query the inactive table instead of the live one.
        const QUERY_INACTIVE_TABLE = 1 << 12;
        /// Out: a uevent was generated (udev will decrement the cookie).
        const UEVENT_GENERATED = 1 << 13;
        /// Rename sets the uuid; LIST_DEVICES returns uuids.
        const UUID = 1 << 14;
        /// Wipe kernel buffers that held the request.
        const SECURE_DATA = 1 << 15;
        /// Out: a target message returned data.
        const DATA_OUT = 1 << 16;
        /// Remove once the last opener closes.
        const DEFERRED_REMOVE = 1 << 17;
        /// Out: the device is suspended internally.
        const INTERNAL_SUSPEND = 1 << 18;
        /// Measure the table with IMA.
        const IMA_MEASUREMENT = 1 << 19;
    }
}

/// A device-mapper ioctl command, with the interface version it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// `DM_VERSION`
    Version,
    /// `DM_REMOVE_ALL`
    RemoveAll,
    /// `DM_LIST_DEVICES`
    ListDevices,
    /// `DM_DEV_CREATE`
    DevCreate,
    /// `DM_DEV_REMOVE`
    DevRemove,
    /// `DM_DEV_RENAME`
    DevRename,
    /// `DM_DEV_SUSPEND` (suspend and resume)
    DevSuspend,
    /// `DM_DEV_STATUS`
    DevStatus,
    /// `DM_DEV_WAIT`
    DevWait,
    /// `DM_TABLE_LOAD`
    TableLoad,
    /// `DM_TABLE_CLEAR`
    TableClear,
    /// `DM_TABLE_DEPS`
    TableDeps,
    /// `DM_TABLE_STATUS`
    TableStatus,
    /// `DM_LIST_VERSIONS`
    ListVersions,
    /// `DM_TARGET_MSG`
    TargetMsg,
    /// `DM_DEV_SET_GEOMETRY`
    DevSetGeometry,
    /// `DM_DEV_ARM_POLL`
    DevArmPoll,
    /// `DM_GET_TARGET_VERSION`
    GetTargetVersion,
}

impl Command {
    /// The command number (`nr` of the ioctl request).
    pub const fn nr(self) -> u32 {
        match self {
            Command::Version => 0,
            Command::RemoveAll => 1,
            Command::ListDevices => 2,
            Command::DevCreate => 3,
            Command::DevRemove => 4,
            Command::DevRename => 5,
            Command::DevSuspend => 6,
            Command::DevStatus => 7,
            Command::DevWait => 8,
            Command::TableLoad => 9,
            Command::TableClear => 10,
            Command::TableDeps => 11,
            Command::TableStatus => 12,
            Command::ListVersions => 13,
            Command::TargetMsg => 14,
            Command::DevSetGeometry => 15,
            Command::DevArmPoll => 16,
            Command::GetTargetVersion => 17,
        }
    }

    /// The ioctl request value: `_IOWR(0xfd, nr, struct dm_ioctl)`.
    pub const fn request(self) -> u32 {
        0xC138_FD00 | self.nr()
    }

    /// The lowest interface version (major 4) that implements the command.
    pub const fn min_version(self) -> Version {
        let minor = match self {
            Command::ListVersions => 1,
            Command::TargetMsg => 2,
            Command::DevSetGeometry => 6,
            Command::DevArmPoll => 36,
            Command::GetTargetVersion => 41,
            _ => 0,
        };
        Version::new(INTERFACE_MAJOR, minor, 0)
    }

    /// The kernel's name for the command, as dmsetup and the kernel log use it.
    pub const fn name(self) -> &'static str {
        match self {
            Command::Version => "DM_VERSION",
            Command::RemoveAll => "DM_REMOVE_ALL",
            Command::ListDevices => "DM_LIST_DEVICES",
            Command::DevCreate => "DM_DEV_CREATE",
            Command::DevRemove => "DM_DEV_REMOVE",
            Command::DevRename => "DM_DEV_RENAME",
            Command::DevSuspend => "DM_DEV_SUSPEND",
            Command::DevStatus => "DM_DEV_STATUS",
            Command::DevWait => "DM_DEV_WAIT",
            Command::TableLoad => "DM_TABLE_LOAD",
            Command::TableClear => "DM_TABLE_CLEAR",
            Command::TableDeps => "DM_TABLE_DEPS",
            Command::TableStatus => "DM_TABLE_STATUS",
            Command::ListVersions => "DM_LIST_VERSIONS",
            Command::TargetMsg => "DM_TARGET_MSG",
            Command::DevSetGeometry => "DM_DEV_SET_GEOMETRY",
            Command::DevArmPoll => "DM_DEV_ARM_POLL",
            Command::GetTargetVersion => "DM_GET_TARGET_VERSION",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A three-part interface or target version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch level.
    pub patch: u32,
}

impl Version {
    /// Builds a version.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// Whether a kernel of this version implements something that needs `needed`.
    pub fn supports(self, needed: Version) -> bool {
        self.major == needed.major && (self.minor, self.patch) >= (needed.minor, needed.patch)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A block device number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dev {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

impl Dev {
    /// Builds a device number.
    pub const fn new(major: u32, minor: u32) -> Self {
        Dev { major, minor }
    }

    /// The kernel's `huge_encode_dev` form used in `dm_ioctl.dev`.
    pub const fn huge_encode(self) -> u64 {
        let minor = self.minor as u64;
        let major = self.major as u64;
        (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
    }

    /// Inverse of [`Dev::huge_encode`].
    pub const fn huge_decode(value: u64) -> Self {
        let major = ((value >> 8) & 0xfff) as u32;
        let minor = ((value & 0xff) | ((value >> 12) & 0xfff_ff00)) as u32;
        Dev { major, minor }
    }

    /// The libc `dev_t` for `mknod` and `stat` comparisons.
    pub fn to_dev_t(self) -> u64 {
        nix::sys::stat::makedev(u64::from(self.major), u64::from(self.minor))
    }

    /// Splits a libc `dev_t`.
    pub fn from_dev_t(dev: u64) -> Self {
        Dev {
            major: nix::sys::stat::major(dev) as u32,
            minor: nix::sys::stat::minor(dev) as u32,
        }
    }
}

impl fmt::Display for Dev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_match_iowr() {
        // _IOWR(0xfd, nr, 312): dir=3<<30, size=312<<16, type=0xfd<<8.
        let base = (3u32 << 30) | (312 << 16) | (0xfd << 8);
        assert_eq!(Command::Version.request(), base);
        assert_eq!(Command::GetTargetVersion.request(), base | 17);
        assert_eq!(Command::TableStatus.request(), 0xC138_FD0C);
    }

    #[test]
    fn huge_dev_round_trip() {
        for (maj, min) in [(253, 0), (7, 3), (253, 255), (253, 256), (259, 1_048_575)] {
            let d = Dev::new(maj, min);
            assert_eq!(Dev::huge_decode(d.huge_encode()), d);
        }
        assert_eq!(Dev::new(253, 1).huge_encode(), (253 << 8) | 1);
        assert_eq!(
            Dev::new(253, 0x1234).huge_encode(),
            0x34 | (253 << 8) | (0x1200 << 12)
        );
    }

    #[test]
    fn version_support() {
        let k = Version::new(4, 47, 0);
        assert!(k.supports(Command::GetTargetVersion.min_version()));
        assert!(!Version::new(4, 40, 0).supports(Command::GetTargetVersion.min_version()));
        assert!(!Version::new(5, 0, 0).supports(Version::new(4, 0, 0)));
    }
}
