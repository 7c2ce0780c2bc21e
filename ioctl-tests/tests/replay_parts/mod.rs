//! Parts of the crash-replay suite (`tests/replay.rs`): the logged disks and
//! views, the model of acknowledged operations, the checks.

pub mod check;
pub mod disks;
pub mod model;
