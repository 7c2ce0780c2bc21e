//! Loop devices through the `LOOP_*` ioctls.
//!
//! - [`create_sparse_file`] makes (or grows, never shrinks) a sparse backing file.
//! - [`LoopControl::attach`] / [`attach`] bind a file to a free loop device with
//!   `LOOP_CTL_GET_FREE` + `LOOP_CONFIGURE` (falling back to `LOOP_SET_FD` +
//!   `LOOP_SET_STATUS64` on kernels without it), retrying when another process
//!   takes the device first.
//! - [`LoopDevice`] is an open handle on a bound device: [`LoopDevice::status`],
//!   [`LoopDevice::set_capacity`], [`LoopDevice::detach`].
//! - [`list`], [`find_by_file`] and [`find_all_by_file`] look at what is bound;
//!   files are matched by device and inode, never by the 64-byte name field.
//!
//! A [`LoopDevice`] keeps the device open. Dropping it closes the descriptor
//! and does not detach, except that an autoclear device is detached by the
//! kernel when its last user closes it.

mod backing;
mod configure;
mod control;
mod device;
mod error;
mod options;
mod scan;
mod sys;
#[cfg(test)]
mod tests;

use std::path::Path;

pub use backing::create_sparse_file;
pub use control::{LoopControl, LOOP_CONTROL};
pub use device::{LoopDevice, DEFAULT_DETACH_GRACE};
pub use error::{LoopError, Result};
pub use options::{AttachOptions, LoopFlags, LoopStatus};
pub use scan::{find_all_by_file, find_by_file, list};

/// Bind `file` to a free loop device (opens [`LoopControl`] for one call).
pub fn attach(file: impl AsRef<Path>, opts: &AttachOptions) -> Result<LoopDevice> {
    LoopControl::open()?.attach(file, opts)
}

/// Detach the loop device at `device`; [`LoopError::NotBound`] if nothing is
/// bound to it.
pub fn detach(device: impl AsRef<Path>) -> Result<()> {
    LoopDevice::open(device)?.detach()
}
