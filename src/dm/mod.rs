//! The device-mapper kernel interface, in pure Rust.
//!
//! `struct dm_ioctl` and the payloads are encoded by hand ([`abi`], [`codec`]);
//! [`Control`] issues every command on `/dev/mapper/control`. This is the only
//! module of the crate that issues DM ioctls.

pub mod abi;
pub mod codec;
mod control;
mod error;
pub mod names;
pub mod udev;

pub use abi::{Command, Dev, DmFlags, Version};
pub use codec::{
    DevId, DeviceEntry, DeviceInfo, NameList, NameListEntry, NameListIter, NameRecord, NameRecords,
    TargetVersion,
};
pub use control::{
    Control, ControlOptions, CreateOptions, NodeMode, RemoveOptions, StatusKind, StatusOptions,
    SuspendOptions, INITIAL_BUFFER, MAX_BUFFER,
};
pub use error::{DmError, ErrorKind, Result};
pub use names::NamePolicy;
pub use udev::UdevFlags;
