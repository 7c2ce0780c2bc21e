//! The record types: what each metadata file holds, how it is checked, and
//! how it is encoded (pretty JSON, unknown fields ignored on load).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::{ProblemReason, StoreError};
use super::FORMAT_VERSION;
use crate::deviceset::ids::validate_device_id;
use crate::target::ThinId;

use crate::dm::SECTOR_SIZE as SECTOR;
const MIN_DATA_BLOCK: u64 = 64 << 10;
const MAX_DATA_BLOCK: u64 = 1 << 30;

/// Seconds since the Unix epoch, now (0 if the clock is before 1970).
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Device ids no record may have: the set names its kernel devices
/// `<prefix><id>`, and `<prefix>pool` and `<prefix>base` are its own pool and
/// base device.
pub const RESERVED_DEVICE_IDS: [&str; 2] = ["pool", "base"];

/// One thin device (a layer), stored as `devices/<id>.json`.
///
/// The base device has no `DeviceRecord`; it lives in the `SetRecord`. Unknown
/// fields are ignored on load, for forward compatibility.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// The device id; must match the file name.
    pub id: String,
    /// The device this one is a snapshot of; `None` means the base device.
    #[serde(default)]
    pub parent: Option<String>,
    /// The pool's thin id, `0..=0xFFFFFF`.
    pub thin_id: u32,
    /// Size in bytes, a non-zero multiple of 512.
    pub size: u64,
    /// Whether the owner has finished populating the device.
    pub initialized: bool,
    /// Creation time, seconds since the Unix epoch.
    pub created_at: u64,
    /// Marked for deletion that has not happened yet (device busy).
    #[serde(default)]
    pub deferred_delete: bool,
    /// Bigger than its parent, its filesystem not yet grown to fill it: the
    /// next open finishes the growth (see `DeviceSet::add_device_sized`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub grow_pending: bool,
}

impl DeviceRecord {
    /// A new, uninitialized record created now.
    pub fn new(id: impl Into<String>, parent: Option<String>, thin_id: u32, size: u64) -> Self {
        Self {
            id: id.into(),
            parent,
            thin_id,
            size,
            initialized: false,
            created_at: now_unix(),
            deferred_delete: false,
            grow_pending: false,
        }
    }

    /// Checks the values: ids valid (`max_id_len` as in
    /// [`validate_device_id`]) and the id not one of
    /// [`RESERVED_DEVICE_IDS`], parent not the device itself, thin id in
    /// range, size a non-zero multiple of 512.
    pub fn validate(&self, max_id_len: usize) -> Result<(), String> {
        validate_device_id(&self.id, max_id_len).map_err(|e| e.to_string())?;
        if RESERVED_DEVICE_IDS.contains(&self.id.as_str()) {
            return Err(format!(
                "device id {:?} is reserved: the set's own {} device has that name",
                self.id, self.id
            ));
        }
        if let Some(parent) = &self.parent {
            validate_device_id(parent, max_id_len).map_err(|e| format!("parent: {e}"))?;
            if *parent == self.id {
                return Err(format!("device {:?} is its own parent", self.id));
            }
        }
        check_thin_id("thin_id", self.thin_id)?;
        check_size("size", self.size)
    }
}

/// The base device's filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsKind {
    /// ext4 (the default).
    Ext4,
    /// XFS, always mounted with `nouuid`.
    Xfs,
}

impl FsKind {
    /// The name mkfs and mount use: `ext4` or `xfs`.
    pub fn as_str(self) -> &'static str {
        match self {
            FsKind::Ext4 => "ext4",
            FsKind::Xfs => "xfs",
        }
    }
}

/// A filesystem name that is not one of [`FsKind`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not ext4 or xfs")]
pub struct UnknownFsKind(pub String);

impl std::str::FromStr for FsKind {
    type Err = UnknownFsKind;

    /// `ext4` or `xfs`, as [`FsKind::as_str`] writes them.
    fn from_str(name: &str) -> Result<FsKind, UnknownFsKind> {
        [FsKind::Ext4, FsKind::Xfs]
            .into_iter()
            .find(|fs| fs.as_str() == name)
            .ok_or_else(|| UnknownFsKind(name.to_string()))
    }
}

/// Where the pool's data and metadata live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Storage {
    /// Sparse files attached to loop devices.
    LoopFiles {
        /// The data file (absolute path).
        data_file: PathBuf,
        /// The metadata file (absolute path).
        metadata_file: PathBuf,
    },
    /// Block devices given by the user.
    BlockDevices {
        /// The data device (absolute path).
        data_device: PathBuf,
        /// The metadata device (absolute path).
        metadata_device: PathBuf,
    },
    /// An existing pool, named by [`SetRecord::pool_name`].
    AdoptedPool,
}

/// The set-wide record, `set.json`: what must not change between opens.
///
/// Unknown fields are ignored on load; a newer `format_version` is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetRecord {
    /// Format of the metadata directory; [`FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// Thin id of the base device.
    pub base_thin_id: u32,
    /// Size of the base device in bytes (a non-zero multiple of 512).
    pub base_size: u64,
    /// UUID of the base filesystem; `None` until it has been made.
    #[serde(default)]
    pub base_fs_uuid: Option<String>,
    /// The base filesystem.
    pub filesystem: FsKind,
    /// Extra mkfs arguments.
    #[serde(default)]
    pub mkfs_options: Vec<String>,
    /// Extra mount options.
    #[serde(default)]
    pub mount_options: Vec<String>,
    /// Pool data block size in bytes: a multiple of 64 KiB, at most 1 GiB.
    pub data_block_size: u64,
    /// Kernel name of the pool.
    pub pool_name: String,
    /// Whether this set created the pool (and so may remove it).
    pub pool_owned: bool,
    /// Where the pool's data and metadata live.
    pub storage: Storage,
    /// Where the next thin id search starts.
    #[serde(default)]
    pub next_thin_id: u32,
    /// Kernel-name prefix of the set's devices, fixed when the set is made:
    /// the root's device number, which the default prefix comes from, can
    /// change across boots (LVM, btrfs). `None` in sets from before it was
    /// recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_prefix: Option<String>,
    /// Options the set remembers between opens; `None` where a set from
    /// before they were recorded leaves them at their defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_free_space_percent: Option<u32>,
    /// Whether the pool zeroes newly provisioned blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_zeroing: Option<bool>,
    /// Whether mounts try the `discard` option.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_discard: Option<bool>,
    /// Whether busy devices get the kernel's deferred removal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred_removal: Option<bool>,
    /// Whether busy thins are deleted later instead of failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred_deletion: Option<bool>,
    /// Whether removing a device discards its blocks first; `None`: on for
    /// loop-file pools, off elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_discard: Option<bool>,
}

impl SetRecord {
    /// Checks the values (the version is checked separately, on load).
    pub fn validate(&self) -> Result<(), String> {
        if self.format_version == 0 || self.format_version > FORMAT_VERSION {
            return Err(format!(
                "format_version {} is not supported (1..={FORMAT_VERSION})",
                self.format_version
            ));
        }
        check_thin_id("base_thin_id", self.base_thin_id)?;
        check_thin_id("next_thin_id", self.next_thin_id)?;
        check_size("base_size", self.base_size)?;
        if let Some(uuid) = &self.base_fs_uuid {
            if uuid.is_empty()
                || uuid.len() > 64
                || !uuid.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
            {
                return Err(format!(
                    "base_fs_uuid {uuid:?} is not a UUID (hex digits and '-', 1 to 64 long)"
                ));
            }
        }
        let dbs = self.data_block_size;
        if !(MIN_DATA_BLOCK..=MAX_DATA_BLOCK).contains(&dbs) || dbs % MIN_DATA_BLOCK != 0 {
            return Err(format!(
                "data_block_size {dbs} is not a multiple of 65536 between 65536 and 1073741824"
            ));
        }
        let name = &self.pool_name;
        if name.is_empty()
            || name.len() > crate::dm::MAX_NAME_LEN
            || name == "."
            || name == ".."
            || name.chars().any(|c| c == '/' || c.is_control())
        {
            return Err(format!(
                "pool_name {name:?} is not a device-mapper name (1 to 127 bytes, no '/' or control characters)"
            ));
        }
        if let Some(prefix) = &self.name_prefix {
            if !prefix.starts_with("dmthin-")
                || prefix.len() > crate::dm::MAX_NAME_LEN - "pool".len()
                || !prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
            {
                return Err(format!(
                    "name_prefix {prefix:?} is not a dmthin prefix ('dmthin-' then [A-Za-z0-9_.:-], at most {} bytes)",
                    crate::dm::MAX_NAME_LEN - "pool".len()
                ));
            }
        }
        if let Some(pct) = self.min_free_space_percent {
            if pct > 99 {
                return Err(format!("min_free_space_percent {pct} is not below 100"));
            }
        }
        for opt in self.mkfs_options.iter().chain(&self.mount_options) {
            if opt.contains('\0') {
                return Err(format!("option {opt:?} contains a NUL byte"));
            }
        }
        let paths: &[(&str, &Path)] = match &self.storage {
            Storage::LoopFiles {
                data_file,
                metadata_file,
            } => &[("data_file", data_file), ("metadata_file", metadata_file)],
            Storage::BlockDevices {
                data_device,
                metadata_device,
            } => &[
                ("data_device", data_device),
                ("metadata_device", metadata_device),
            ],
            Storage::AdoptedPool => &[],
        };
        for (field, path) in paths {
            if !path.is_absolute() || path.as_os_str().as_encoded_bytes().contains(&0) {
                return Err(format!("storage {field} {path:?} is not an absolute path"));
            }
        }
        if let [(_, a), (_, b)] = paths {
            if a == b {
                return Err(format!("storage uses {a:?} for both data and metadata"));
            }
        }
        Ok(())
    }
}

/// The pool operation an open transaction is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TransactionOp {
    /// Creating device `device_id` as thin id `thin_id`.
    Create {
        /// The device being created.
        device_id: String,
        /// Its thin id.
        thin_id: u32,
    },
    /// Deleting device `device_id`, thin id `thin_id`.
    Delete {
        /// The device being deleted.
        device_id: String,
        /// Its thin id.
        thin_id: u32,
    },
    /// Creating the base device as thin id `thin_id`.
    BaseCreate {
        /// The base device's thin id.
        thin_id: u32,
    },
    /// Moving the pool's transaction id on after the intent journal was
    /// folded into the record files: no thin changes, so nothing to repair
    /// whether or not it committed.
    Fold,
    /// Not an operation: the device records continue in the intent journal.
    /// Recorded while the journal holds entries, so that a build that
    /// predates the journal cannot parse `transaction.json` and refuses the
    /// set instead of opening it without those records.
    Journal,
}

impl TransactionOp {
    /// The thin id the operation touches (none for a fold).
    pub fn thin_id(&self) -> Option<u32> {
        match self {
            TransactionOp::Create { thin_id, .. }
            | TransactionOp::Delete { thin_id, .. }
            | TransactionOp::BaseCreate { thin_id } => Some(*thin_id),
            TransactionOp::Fold | TransactionOp::Journal => None,
        }
    }

    /// The device the operation touches; `None` for the base device.
    pub fn device_id(&self) -> Option<&str> {
        match self {
            TransactionOp::Create { device_id, .. } | TransactionOp::Delete { device_id, .. } => {
                Some(device_id)
            }
            TransactionOp::BaseCreate { .. } | TransactionOp::Fold | TransactionOp::Journal => None,
        }
    }
}

/// What `transaction.json` holds: the committed pool transaction id and the
/// last transaction begun, which is committed once the pool's transaction id
/// equals its `open_transaction_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionState {
    /// The pool's transaction id after the last committed operation.
    pub committed_transaction_id: u64,
    /// The operation under way, if any.
    #[serde(default)]
    pub open: Option<TransactionRecord>,
}

/// An open pool transaction, kept in `transaction.json` between
/// [`MetadataStore::begin`](super::MetadataStore::begin) and
/// [`MetadataStore::commit`](super::MetadataStore::commit) or `MetadataStore::clear`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionRecord {
    /// The pool transaction id that will be set when the operation commits.
    pub open_transaction_id: u64,
    /// What the transaction does.
    pub op: TransactionOp,
}

impl TransactionRecord {
    /// Checks the values: thin id in range, device id valid.
    pub fn validate(&self, max_id_len: usize) -> Result<(), String> {
        if let Some(thin) = self.op.thin_id() {
            check_thin_id("thin_id", thin)?;
        }
        if let Some(id) = self.op.device_id() {
            validate_device_id(id, max_id_len).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

fn check_thin_id(field: &str, id: u32) -> Result<(), String> {
    if id > ThinId::MAX.get() {
        Err(format!(
            "{field} {id} is over the 24-bit limit {}",
            ThinId::MAX
        ))
    } else {
        Ok(())
    }
}

fn check_size(field: &str, size: u64) -> Result<(), String> {
    if size == 0 || size % SECTOR != 0 {
        Err(format!("{field} {size} is not a non-zero multiple of 512"))
    } else {
        Ok(())
    }
}

pub(super) fn to_json<T: Serialize>(value: &T, path: &Path) -> Result<Vec<u8>, StoreError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| StoreError::Serialize {
        path: path.to_path_buf(),
        source,
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

pub(super) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProblemReason> {
    use serde_json::error::Category;
    if bytes.is_empty() {
        return Err(ProblemReason::Empty);
    }
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        Category::Eof => ProblemReason::Truncated(e.to_string()),
        Category::Data => ProblemReason::WrongShape(e.to_string()),
        Category::Syntax | Category::Io => ProblemReason::NotJson(e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_classifies() {
        assert!(matches!(
            parse::<DeviceRecord>(b""),
            Err(ProblemReason::Empty)
        ));
        assert!(matches!(
            parse::<DeviceRecord>(b"{\"id\": \"a\""),
            Err(ProblemReason::Truncated(_))
        ));
        assert!(matches!(
            parse::<DeviceRecord>(b"\0\0\0"),
            Err(ProblemReason::NotJson(_))
        ));
        assert!(matches!(
            parse::<DeviceRecord>(b"{\"id\": 3}"),
            Err(ProblemReason::WrongShape(_))
        ));
    }

    #[test]
    fn record_validation() {
        let mut r = DeviceRecord::new("a", None, 1, 4096);
        assert!(r.validate(64).is_ok());
        r.size = 100;
        assert!(r.validate(64).unwrap_err().contains("size 100"));
        r.size = 4096;
        r.thin_id = ThinId::MAX.get() + 1;
        assert!(r.validate(64).unwrap_err().contains("24-bit"));
        r.thin_id = 1;
        r.parent = Some("a".into());
        assert!(r.validate(64).unwrap_err().contains("own parent"));
        r.parent = Some("../b".into());
        assert!(r.validate(64).unwrap_err().starts_with("parent:"));
    }

    #[test]
    fn fs_kind_names_round_trip() {
        for fs in [FsKind::Ext4, FsKind::Xfs] {
            assert_eq!(fs.as_str().parse::<FsKind>(), Ok(fs));
        }
        let err = "btrfs".parse::<FsKind>().unwrap_err();
        assert_eq!(err.to_string(), "'btrfs' is not ext4 or xfs");
        assert!("EXT4".parse::<FsKind>().is_err(), "names are exact");
    }
}
