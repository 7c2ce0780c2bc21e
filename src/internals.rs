//! Re-exports of crate internals for `fuzz/` and `benches/` (see `lib.rs`).
//! Each layer lists here what its fuzz targets and benches drive directly.
