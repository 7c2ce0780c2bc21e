//! Re-exports of crate internals for `fuzz/` and `benches/` (see `lib.rs`).
//! Each layer lists here what its fuzz targets and benches drive directly.

// dm: the reply decoders (fuzz/fuzz_targets/dm_reply.rs, benches/compare).
pub use crate::dm::abi::{DmIoctl, HEADER_SIZE};
pub use crate::dm::decode::{
    decode_deps, decode_header, decode_message_reply, decode_specs, decode_versions, device_info,
    payload,
};

/// dm: a `DM_LIST_DEVICES` payload as a kernel of interface `version` wrote
/// it (`Control::list_devices_view` makes these from its own replies).
pub fn name_list(payload: &[u8], version: crate::dm::Version) -> crate::dm::NameList<'_> {
    crate::dm::NameList::new(payload, version)
}

// deviceset: the metadata store (benches/store.rs; benches/compare writes
// device records directly to populate a big set).
pub use crate::deviceset::store::{DeviceRecord, MetadataStore};

// thinmeta: resealing blocks so fuzz input reaches the checks past the checksum.
pub use crate::thinmeta::seal::seal_blocks;
