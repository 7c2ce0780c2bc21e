//! Re-exports of crate internals for `fuzz/` and `benches/` (see `lib.rs`).
//! Each layer lists here what its fuzz targets and benches drive directly.

// thinmeta: resealing blocks so fuzz input reaches the checks past the checksum.
pub use crate::thinmeta::seal::seal_blocks;
