//! Re-exports of crate internals for `fuzz/` and `benches/` (see `lib.rs`).
//! Each layer lists here what its fuzz targets and benches drive directly.

// deviceset: the metadata store (benches/store.rs; benches/compare writes
// device records directly to populate a big set).
pub use crate::deviceset::store::{DeviceRecord, MetadataStore};
