//! dmthin: device-mapper thin provisioning in pure Rust.
//!
//! Layers, each depending only on the ones below it:
//!
//! - [`deviceset`]: a Docker-style device set (thin pool, base filesystem, snapshots).
//! - [`dm`]: the device-mapper kernel interface (`/dev/mapper/control`). The only
//!   module that issues DM ioctls.
//! - [`loopdev`]: loop devices through the `LOOP_*` ioctls.
//! - [`thinmeta`]: a read-only reader of the thin-pool metadata device.
//! - [`target`]: target tables, messages and status lines; pure functions, no I/O.

#![deny(missing_docs)]

pub mod cmdline;
pub mod deviceset;
pub mod dm;
pub mod durable;
pub mod logger;
pub mod loopdev;
mod retry;
pub mod size;
#[cfg(test)]
pub(crate) mod testutil;
pub mod thinmeta;

/// Crate internals for the fuzz targets and benches only: compiled in under
/// cargo-fuzz (`cfg(fuzzing)`) or with the `internals` feature, never in a
/// normal build.
#[cfg(any(fuzzing, feature = "internals"))]
#[doc(hidden)]
pub mod internals;
pub mod target;
