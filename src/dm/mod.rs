//! The device-mapper kernel interface, in pure Rust.
//!
//! `struct dm_ioctl` and the payloads are encoded and decoded by hand
//! (`abi`, `encode`, `decode`, `name_list`); [`Control`] issues every command
//! on `/dev/mapper/control`. This is the only module of the crate that issues
//! DM ioctls, and `sys` holds its only unsafe code.

pub(crate) mod abi;
mod control;
mod cookie;
pub(crate) mod decode;
mod encode;
mod error;
pub mod name_list;
mod names;
mod node;
mod options;
mod sys;
mod table_line;
mod uevent;

pub use abi::{Command, Dev, DmFlags, Version};
pub use control::Control;
pub use cookie::UdevFlags;
pub use decode::{DeviceInfo, FixedStr, TargetVersion};
pub use encode::DevId;
pub use error::{DmError, ErrorKind, Result};
pub use name_list::NameList;
pub use names::NamePolicy;
pub use options::{
    ControlOptions, CreateOptions, NodeMode, RemoveOptions, StatusKind, StatusOptions,
    SuspendOptions,
};
pub use table_line::{TableLine, TableLineError, MAX_TARGET_TYPE_LEN};

pub(crate) use node::{dm_node_path, mapper_path};

/// Longest device name the kernel takes, in bytes (`DM_NAME_LEN` less the NUL).
pub const MAX_NAME_LEN: usize = abi::NAME_LEN - 1;
/// Longest device uuid the kernel takes, in bytes (`DM_UUID_LEN` less the NUL).
pub const MAX_UUID_LEN: usize = abi::UUID_LEN - 1;
/// Bytes per sector: the unit of table line starts and lengths.
pub const SECTOR_SIZE: u64 = 512;
