//! What a caller chooses when opening a set: [`Options`] and [`StorageOptions`].

use super::error::{DeviceSetError, Result};
use super::store::{FsKind, SetRecord, Storage};
use crate::dm::SECTOR_SIZE;
use crate::target::BlockSize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const GIB: u64 = 1 << 30;

/// Where the pool's data and metadata live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageOptions {
    /// Sparse files `<root>/devicemapper/{data,metadata}` on loop devices.
    LoopFiles {
        /// Size of the data file in bytes (grown, never shrunk).
        data_size: u64,
        /// Size of the metadata file in bytes (grown, never shrunk).
        metadata_size: u64,
    },
    /// Existing block devices.
    BlockDevices {
        /// The data device.
        data: PathBuf,
        /// The metadata device.
        metadata: PathBuf,
    },
    /// A pool that already exists, by its device-mapper name. It must be
    /// empty (transaction id 0) the first time the set uses it.
    AdoptPool {
        /// The pool's name.
        name: String,
    },
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions::LoopFiles {
            data_size: 100 * GIB,
            metadata_size: 2 * GIB,
        }
    }
}

/// A progress callback for long steps (mkfs, growing).
pub type Progress = Arc<dyn Fn(&str) + Send + Sync>;

/// Settings for [`DeviceSet::open`](super::DeviceSet::open).
#[derive(Clone)]
pub struct Options {
    /// Pool storage.
    pub storage: StorageOptions,
    /// Pool data block size in bytes (64 KiB to 1 GiB, a multiple of 64 KiB).
    pub data_block_size: u64,
    /// Low water mark in data blocks; `None` picks 1% of the pool (at least 1).
    pub low_water_mark: Option<u64>,
    /// Size of the base device in bytes. Growing it later grows the base filesystem.
    pub base_size: u64,
    /// Filesystem of the base device.
    pub filesystem: FsKind,
    /// Extra mkfs arguments.
    pub mkfs_options: Vec<String>,
    /// Mount options (xfs always gets `nouuid`).
    pub mount_options: Vec<String>,
    /// Try the `discard` mount option (dropped where the filesystem refuses it).
    pub mount_discard: bool,
    /// Refuse `add_device` when free data or metadata space is below this percentage.
    pub min_free_space_percent: u32,
    /// Zero newly provisioned blocks (safe: a new layer never sees an old one's data).
    pub block_zeroing: bool,
    /// Longest wait for udev per device-mapper operation.
    pub udev_timeout: Duration,
    /// With udev running: let udev run every rule and wait until udevd
    /// reports each event processed (`true`, the default;
    /// [`NodeMode::UdevWatch`](crate::dm::NodeMode::UdevWatch)), or bypass it
    /// ([`NodeMode::Bypass`](crate::dm::NodeMode::Bypass): the dm rules skip
    /// our devices and the set makes `/dev/mapper` nodes itself, no
    /// `/dev/disk/by-*` links). Not recorded, so every open picks.
    pub udev_sync: bool,
    /// How often a busy device's deactivation is retried before giving up.
    pub busy_retries: u32,
    /// A device that stays busy (held open elsewhere, say by a mount in
    /// another namespace) is removed with the kernel's deferred removal
    /// instead of failing: `remove_device` and `deactivate_device` then
    /// succeed and the kernel removes it at its last close (moby's
    /// `dm.use_deferred_removal`).
    pub deferred_removal: bool,
    /// A thin the pool cannot delete yet (still open) is marked for deletion
    /// and deleted by a later call or open instead of failing (moby's
    /// `dm.use_deferred_deletion`).
    pub deferred_deletion: bool,
    /// Discard a device's blocks before deleting it, so the pool passes the
    /// discards down and a loop-file pool's sparse data file gets its space
    /// back (moby's `dm.blkdiscard`). `None`: on for loop-file pools, off
    /// elsewhere. Remembered by the set.
    pub remove_discard: Option<bool>,
    /// Called with a line of text before long steps.
    pub progress: Option<Progress>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("storage", &self.storage)
            .field("data_block_size", &self.data_block_size)
            .field("base_size", &self.base_size)
            .field("filesystem", &self.filesystem)
            .finish_non_exhaustive()
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            storage: StorageOptions::default(),
            data_block_size: 64 * 1024,
            low_water_mark: None,
            base_size: 10 * GIB,
            filesystem: FsKind::Ext4,
            mkfs_options: Vec::new(),
            mount_options: Vec::new(),
            mount_discard: true,
            min_free_space_percent: 10,
            block_zeroing: true,
            udev_timeout: Duration::from_secs(30),
            udev_sync: true,
            busy_retries: 20,
            deferred_removal: false,
            deferred_deletion: false,
            remove_discard: None,
            progress: None,
        }
    }
}

impl Options {
    /// Checks the values that need no set: returns the pool's block size.
    pub(crate) fn validate(&self) -> Result<BlockSize> {
        let block_size = BlockSize::from_bytes(self.data_block_size)?;
        if self.min_free_space_percent > 99 {
            return Err(DeviceSetError::InvalidOption {
                option: "min_free_space",
                reason: format!("{}% is not below 100%", self.min_free_space_percent),
            });
        }
        if self.base_size < 16 << 20 || self.base_size % SECTOR_SIZE != 0 {
            return Err(DeviceSetError::InvalidOption {
                option: "base_size",
                reason: format!(
                    "{} bytes: must be at least 16 MiB and a multiple of 512",
                    self.base_size
                ),
            });
        }
        Ok(block_size)
    }

    /// The options a set was created with, from its record; loop file
    /// sizes are the files' current sizes.
    pub(crate) fn from_record(set: &SetRecord) -> Options {
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let storage = match &set.storage {
            Storage::LoopFiles {
                data_file,
                metadata_file,
            } => StorageOptions::LoopFiles {
                data_size: size(data_file),
                metadata_size: size(metadata_file),
            },
            Storage::BlockDevices {
                data_device,
                metadata_device,
            } => StorageOptions::BlockDevices {
                data: data_device.clone(),
                metadata: metadata_device.clone(),
            },
            Storage::AdoptedPool => StorageOptions::AdoptPool {
                name: set.pool_name.clone(),
            },
        };
        Options {
            storage,
            data_block_size: set.data_block_size,
            base_size: set.base_size,
            filesystem: set.filesystem,
            mkfs_options: set.mkfs_options.clone(),
            mount_options: set.mount_options.clone(),
            min_free_space_percent: set
                .min_free_space_percent
                .unwrap_or(Options::default().min_free_space_percent),
            block_zeroing: set.block_zeroing.unwrap_or(true),
            mount_discard: set.mount_discard.unwrap_or(true),
            deferred_removal: set.deferred_removal.unwrap_or(false),
            deferred_deletion: set.deferred_deletion.unwrap_or(false),
            remove_discard: set.remove_discard,
            ..Options::default()
        }
    }
}

/// When and how far `dmthin monitor` (and [`Monitor`](super::Monitor)) grows a
/// loop-file pool: moby's `dm.thinp_autoextend_threshold` and
/// `dm.thinp_autoextend_percent`, plus caps. Remembered per set (its
/// `metadata/autoextend.json`) so a later `dmthin monitor` without options
/// keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AutoextendOptions {
    /// Grow once data or metadata use reaches this percentage (0 to 99;
    /// 0 grows at every check, for tests). Default 80.
    pub threshold_percent: u32,
    /// Grow by this percentage of the current size (1 to 1000). Default 20.
    pub extend_percent: u32,
    /// The data file never grows past this many bytes; `None`: only the host
    /// filesystem's free space limits it.
    pub max_data_size: Option<u64>,
    /// The metadata file never grows past this many bytes; `None`: the most
    /// a thin-pool can use ([`MAX_METADATA_BYTES`](super::MAX_METADATA_BYTES)).
    pub max_metadata_size: Option<u64>,
}

impl Default for AutoextendOptions {
    fn default() -> Self {
        AutoextendOptions {
            threshold_percent: 80,
            extend_percent: 20,
            max_data_size: None,
            max_metadata_size: None,
        }
    }
}

impl AutoextendOptions {
    /// Refuses percentages out of range, naming the option.
    pub fn validate(&self) -> Result<()> {
        if self.threshold_percent > 99 {
            return Err(DeviceSetError::InvalidOption {
                option: "autoextend threshold",
                reason: format!("{}% is not below 100%", self.threshold_percent),
            });
        }
        if !(1..=1000).contains(&self.extend_percent) {
            return Err(DeviceSetError::InvalidOption {
                option: "autoextend percent",
                reason: format!("{}% is not between 1% and 1000%", self.extend_percent),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deviceset::store::FORMAT_VERSION;

    #[test]
    fn validate_refuses_bad_sizes_and_percentages() {
        assert_eq!(
            Options::default().validate().unwrap(),
            BlockSize::from_bytes(64 * 1024).unwrap()
        );
        let refused = |o: Options| match o.validate() {
            Err(DeviceSetError::InvalidOption { option, .. }) => option,
            other => panic!("{other:?}"),
        };
        let with = |f: fn(&mut Options)| {
            let mut o = Options::default();
            f(&mut o);
            o
        };
        assert_eq!(
            refused(with(|o| o.min_free_space_percent = 100)),
            "min_free_space"
        );
        assert_eq!(refused(with(|o| o.base_size = 8 << 20)), "base_size");
        assert_eq!(refused(with(|o| o.base_size = (16 << 20) + 1)), "base_size");
        assert!(with(|o| o.data_block_size = 1000).validate().is_err());
    }

    #[test]
    fn autoextend_options_default_and_range() {
        let d = AutoextendOptions::default();
        assert_eq!((d.threshold_percent, d.extend_percent), (80, 20));
        assert!(d.validate().is_ok());
        let bad = |o: AutoextendOptions| match o.validate() {
            Err(DeviceSetError::InvalidOption { option, .. }) => option,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            bad(AutoextendOptions {
                threshold_percent: 100,
                ..d
            }),
            "autoextend threshold"
        );
        assert_eq!(
            bad(AutoextendOptions {
                extend_percent: 0,
                ..d
            }),
            "autoextend percent"
        );
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<AutoextendOptions>(&json).unwrap(), d);
    }

    #[test]
    fn recorded_options_come_from_the_set_record() {
        let set = SetRecord {
            format_version: FORMAT_VERSION,
            base_thin_id: 0,
            base_size: 32 << 20,
            base_fs_uuid: None,
            filesystem: FsKind::Xfs,
            mkfs_options: vec!["-m".into()],
            mount_options: vec!["noatime".into()],
            data_block_size: 128 * 1024,
            pool_name: "somepool".into(),
            pool_owned: false,
            storage: Storage::AdoptedPool,
            next_thin_id: 0,
            name_prefix: None,
            min_free_space_percent: None,
            block_zeroing: None,
            mount_discard: None,
            deferred_removal: None,
            deferred_deletion: None,
            remove_discard: None,
        };
        let o = Options::from_record(&set);
        assert_eq!(
            o.storage,
            StorageOptions::AdoptPool {
                name: "somepool".into()
            }
        );
        assert_eq!(
            (o.base_size, o.data_block_size, o.filesystem),
            (32 << 20, 128 * 1024, FsKind::Xfs)
        );
        assert_eq!(
            (o.mkfs_options, o.mount_options),
            (set.mkfs_options.clone(), set.mount_options.clone())
        );
        assert_eq!(o.busy_retries, Options::default().busy_retries);
        assert_eq!(
            (o.min_free_space_percent, o.block_zeroing, o.mount_discard),
            (10, true, true),
            "a set from before these were recorded keeps the defaults"
        );
        let remembered = SetRecord {
            min_free_space_percent: Some(95),
            block_zeroing: Some(false),
            mount_discard: Some(false),
            ..set
        };
        let o = Options::from_record(&remembered);
        assert_eq!(
            (o.min_free_space_percent, o.block_zeroing, o.mount_discard),
            (95, false, false)
        );
    }
}
