//! Re-exports of crate internals for `fuzz/` and `benches/` (see `lib.rs`).
//! Each layer lists here what its fuzz targets and benches drive directly.

// dm: the reply decoders (fuzz/fuzz_targets/dm_reply.rs, benches/compare).
pub use crate::dm::abi::{DmIoctl, HEADER_SIZE};
pub use crate::dm::decode::{
    decode_deps, decode_header, decode_message_reply, decode_specs, decode_versions, device_info,
    payload,
};
pub use crate::dm::name_list::{name_list, DeviceEntry, NameListEntry};
