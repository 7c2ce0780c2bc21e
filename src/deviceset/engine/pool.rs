//! The pool: its table, its backing devices, its status, growing it.

use super::{sectors, Config, State};
use crate::deviceset::error::{DeviceSetError, Result};
use crate::deviceset::fail_point;
use crate::deviceset::options::StorageOptions;
use crate::deviceset::report::SetStatus;
use crate::deviceset::store::Storage;
use crate::deviceset::trust;
use crate::dm::SECTOR_SIZE;
use crate::dm::{Control, CreateOptions, Dev, DevId, StatusKind, StatusOptions, UdevFlags};
use crate::loopdev::{self, AttachOptions};
use crate::target::{
    DeviceRef, PoolFeatures, PoolMode, PoolStatus, TableLine, TargetTable, ThinPoolStatus,
    ThinPoolTable,
};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The most metadata a thin-pool uses: 255 × (2^14 − 64) blocks of 4 KiB
/// (the kernel's DM_SM_METADATA_MAX_BLOCKS); the rest of a bigger device is
/// ignored.
pub const MAX_METADATA_BYTES: u64 = 255 * ((1 << 14) - 64) * 4096;

/// Which of the pool's two backing devices.
#[derive(Clone, Copy)]
pub(crate) enum Backing {
    Data,
    Metadata,
}

impl Backing {
    fn option(self) -> &'static str {
        match self {
            Backing::Data => "data size",
            Backing::Metadata => "metadata size",
        }
    }
}

fn block_device_size(path: &Path) -> Result<u64> {
    use std::io::Seek;
    let mut f = std::fs::File::open(path).map_err(|e| DeviceSetError::InvalidOption {
        option: "storage",
        reason: format!("cannot open {}: {e}", path.display()),
    })?;
    f.seek(std::io::SeekFrom::End(0))
        .map_err(|e| DeviceSetError::InvalidOption {
            option: "storage",
            reason: format!("cannot size {}: {e}", path.display()),
        })
}

fn dev_of(path: &Path) -> Result<Dev> {
    let meta = std::fs::metadata(path).map_err(|e| DeviceSetError::InvalidOption {
        option: "storage",
        reason: format!("{}: {e}", path.display()),
    })?;
    use std::os::unix::fs::FileTypeExt;
    if !meta.file_type().is_block_device() {
        return Err(DeviceSetError::InvalidOption {
            option: "storage",
            reason: format!("{} is not a block device", path.display()),
        });
    }
    Ok(Dev::from_dev_t(meta.rdev()))
}

/// Pool `pool`'s first table line (`Table`) or status line (`Info`), with
/// its event number: the one fetch every look at a pool goes through (the
/// engine's and the monitor's).
pub(crate) fn pool_first_line(
    ctl: &mut Control,
    pool: &str,
    kind: StatusKind,
) -> Result<(u32, TableLine)> {
    // noflush: a thin-pool's status otherwise commits its metadata first,
    // a whole commit for what the in-core counters already say.
    let (info, lines) = ctl.table_status(
        DevId::Name(pool),
        &StatusOptions {
            kind,
            noflush: true,
            ..Default::default()
        },
    )?;
    let line = lines
        .into_iter()
        .next()
        .ok_or_else(|| DeviceSetError::PoolUnusable {
            pool: pool.to_string(),
            reason: "the pool has no table".into(),
        })?;
    Ok((info.event_nr, line))
}

/// Pool `pool`'s status, whatever its state, read without a metadata
/// commit (see [`pool_first_line`]).
pub(crate) fn pool_status(ctl: &mut Control, pool: &str) -> Result<PoolStatus> {
    let (_, line) = pool_first_line(ctl, pool, StatusKind::Info)?;
    Ok(PoolStatus::parse(line.params())?)
}

impl Config {
    /// Refuses a metadata size beyond what a thin-pool can use.
    pub(crate) fn check_metadata_size(new_metadata_size: u64) -> Result<()> {
        if new_metadata_size > MAX_METADATA_BYTES {
            return Err(DeviceSetError::InvalidOption {
                option: "metadata size",
                reason: format!(
                    "{new_metadata_size} bytes is more than the {MAX_METADATA_BYTES} bytes a thin-pool can use"
                ),
            });
        }
        Ok(())
    }

    /// The pool's data loop file.
    pub(crate) fn data_file(&self) -> PathBuf {
        self.root.join("devicemapper").join("data")
    }

    /// The pool's metadata loop file.
    pub(crate) fn metadata_file(&self) -> PathBuf {
        self.root.join("devicemapper").join("metadata")
    }

    /// The low water mark in blocks for a pool of `data_sectors`.
    pub(crate) fn low_water_mark(&self, data_sectors: u64) -> u64 {
        let blocks = data_sectors / u64::from(self.block_size.sectors());
        self.options.low_water_mark.unwrap_or((blocks / 100).max(1))
    }

    /// The table line of a new pool on these devices.
    pub(crate) fn pool_table(&self, meta: Dev, data: Dev, data_bytes: u64) -> Result<TableLine> {
        let bs = u64::from(self.block_size.sectors());
        let len = sectors(data_bytes) / bs * bs;
        if len == 0 {
            return Err(DeviceSetError::InvalidOption {
                option: "data size",
                reason: format!("{data_bytes} bytes is smaller than one data block"),
            });
        }
        let features = PoolFeatures {
            skip_block_zeroing: !self.options.block_zeroing,
            // Fail writes at once when full: queueing hangs writers (XFS retries forever).
            error_if_no_space: true,
            ..PoolFeatures::default()
        };
        let table = ThinPoolTable::new(
            DeviceRef::MajorMinor(meta.major, meta.minor),
            DeviceRef::MajorMinor(data.major, data.minor),
            self.block_size,
            self.low_water_mark(len),
        )?
        .with_features(features)?;
        Ok(table.to_line(0, len))
    }

    /// The pool's first table line (`Table`) or status line (`Info`), with
    /// the pool's event number (see [`pool_first_line`]).
    fn pool_first_line(&self, state: &mut State, kind: StatusKind) -> Result<(u32, TableLine)> {
        pool_first_line(&mut state.ctl, &self.pool_name, kind)
    }

    /// The pool's live table line.
    pub(crate) fn pool_line(&self, state: &mut State) -> Result<TableLine> {
        Ok(self.pool_first_line(state, StatusKind::Table)?.1)
    }

    /// The pool's status, whatever its state.
    pub(crate) fn any_pool_status(&self, state: &mut State) -> Result<PoolStatus> {
        Ok(self.pool_status_event(state)?.1)
    }

    /// The pool's status with its event number.
    fn pool_status_event(&self, state: &mut State) -> Result<(u32, PoolStatus)> {
        let (event, line) = self.pool_first_line(state, StatusKind::Info)?;
        Ok((event, PoolStatus::parse(line.params())?))
    }

    /// Makes the pool's data or metadata backing at least `size` bytes: a
    /// loop file is extended and its loop device told; a block device must
    /// already be that big; an adopted pool is refused.
    pub(crate) fn grow_backing(&self, state: &State, which: Backing, size: u64) -> Result<()> {
        let option = which.option();
        match &state.set.storage {
            Storage::LoopFiles {
                data_file,
                metadata_file,
            } => {
                let file = match which {
                    Backing::Data => data_file,
                    Backing::Metadata => metadata_file,
                };
                trust::prepare_backing_file(file, size, matches!(which, Backing::Metadata))?;
                match loopdev::find_by_file(file)? {
                    Some(d) => Ok(d.set_capacity()?),
                    None => Err(DeviceSetError::PoolUnusable {
                        pool: self.pool_name.clone(),
                        reason: format!("no loop device is bound to {}", file.display()),
                    }),
                }
            }
            Storage::BlockDevices {
                data_device,
                metadata_device,
            } => {
                let device = match which {
                    Backing::Data => data_device,
                    Backing::Metadata => metadata_device,
                };
                let have = block_device_size(device)?;
                if have < size {
                    return Err(DeviceSetError::InvalidOption {
                        option,
                        reason: format!("{} holds only {have} bytes", device.display()),
                    });
                }
                Ok(())
            }
            Storage::AdoptedPool => Err(DeviceSetError::InvalidOption {
                option,
                reason: "an adopted pool is grown by its owner".into(),
            }),
        }
    }

    /// The status of a pool that can take changes; a pool read-only, failed
    /// or wanting a check is refused at once, naming its mode.
    pub(crate) fn writable_pool(&self, state: &mut State) -> Result<ThinPoolStatus> {
        let unusable = |reason: String| DeviceSetError::PoolUnusable {
            pool: self.pool_name.clone(),
            reason,
        };
        state.writable_at_event = None;
        let (event, status) = self.pool_status_event(state)?;
        let s = match status {
            PoolStatus::Active(s) => s,
            PoolStatus::Fail => {
                return Err(unusable(
                    "mode fail, needs_check (run thin_check, then thin_repair)".into(),
                ))
            }
            PoolStatus::Error => {
                return Err(unusable("mode error (its status is unreadable)".into()))
            }
        };
        if s.mode != PoolMode::ReadWrite || s.needs_check {
            let hint = if s.needs_check {
                ", needs_check (run thin_check)"
            } else if out_of_metadata_space(&s) {
                " (grow it with grow-pool --metadata)"
            } else {
                ""
            };
            return Err(unusable(format!("mode {}{hint}", mode_name(&s))));
        }
        state.writable_at_event = Some(event);
        Ok(s)
    }

    /// Whether the pool takes no writes (read-only, out of metadata space,
    /// failed): its metadata can then be read live, with no writer racing.
    pub(crate) fn pool_takes_no_writes(&self, state: &mut State) -> Result<bool> {
        Ok(match self.any_pool_status(state)? {
            PoolStatus::Active(s) => s.mode == PoolMode::ReadOnly,
            PoolStatus::Fail => true,
            PoolStatus::Error => false,
        })
    }

    /// Why the pool cannot take changes now (read-only, out of space,
    /// needs_check, failed), or `None` when it can: the set then runs
    /// degraded, reads and teardown working, changes refused.
    pub(crate) fn degraded(&self, state: &mut State) -> Result<Option<String>> {
        match self.writable_pool(state) {
            Ok(_) => Ok(None),
            Err(DeviceSetError::PoolUnusable { reason, .. }) => Ok(Some(reason)),
            Err(e) => Err(e),
        }
    }

    /// Makes `file` at least `size` bytes and binds a loop device to it (or
    /// takes the one bound already); the loop device is held in the state.
    pub(crate) fn attach_loop(&self, state: &mut State, file: &Path, size: u64) -> Result<Dev> {
        // The metadata file is reserved in full: a pool metadata write must
        // never meet a full host filesystem.
        let reserve = file == self.metadata_file();
        trust::prepare_backing_file(file, size, reserve)?;
        let dev = match loopdev::find_by_file(file)? {
            Some(d) => {
                // Grown since it was attached: let the device see the new size.
                if d.size()? < size {
                    d.set_capacity()?;
                }
                d
            }
            None => loopdev::attach(file, &AttachOptions::new().autoclear(true))?,
        };
        let meta = std::fs::metadata(dev.path()).map_err(|e| DeviceSetError::InvalidOption {
            option: "storage",
            reason: format!("{}: {e}", dev.path().display()),
        })?;
        let d = Dev::from_dev_t(meta.rdev());
        state.loops.push(dev);
        Ok(d)
    }

    /// Creates the pool (or finds it), checks its block size, and reads its
    /// transaction id.
    pub(crate) fn setup_pool(&self, state: &mut State, has_set: bool) -> Result<()> {
        let exists = state.ctl.exists(&self.pool_name)? && self.revive_pool(state)?;
        if !exists {
            let (meta, data, data_bytes, storage) = match &self.options.storage {
                StorageOptions::AdoptPool { name } => {
                    return Err(DeviceSetError::InvalidOption {
                        option: "pool",
                        reason: format!("no device-mapper device named {name:?} to adopt"),
                    })
                }
                StorageOptions::LoopFiles {
                    data_size,
                    metadata_size,
                } => {
                    if *metadata_size < 2 << 20 {
                        return Err(DeviceSetError::InvalidOption {
                            option: "metadata size",
                            reason: format!("{metadata_size} bytes is below the 2 MiB minimum"),
                        });
                    }
                    let dir = self.root.join("devicemapper");
                    std::fs::create_dir_all(&dir).map_err(|e| DeviceSetError::InvalidOption {
                        option: "root",
                        reason: format!("cannot create {}: {e}", dir.display()),
                    })?;
                    let _ = std::fs::set_permissions(
                        &dir,
                        std::os::unix::fs::PermissionsExt::from_mode(0o700),
                    );
                    let data_size = (*data_size).max(
                        std::fs::metadata(self.data_file())
                            .map(|m| m.len())
                            .unwrap_or(0),
                    );
                    let meta = self.attach_loop(state, &self.metadata_file(), *metadata_size)?;
                    let data = self.attach_loop(state, &self.data_file(), data_size)?;
                    let storage = Storage::LoopFiles {
                        data_file: self.data_file(),
                        metadata_file: self.metadata_file(),
                    };
                    (meta, data, data_size, storage)
                }
                StorageOptions::BlockDevices { data, metadata } => {
                    let storage = Storage::BlockDevices {
                        data_device: data.clone(),
                        metadata_device: metadata.clone(),
                    };
                    (
                        dev_of(metadata)?,
                        dev_of(data)?,
                        block_device_size(data)?,
                        storage,
                    )
                }
            };
            let line = self.pool_table(meta, data, data_bytes)?;
            state.ctl.create_with_table(
                &self.pool_name,
                &CreateOptions::default(),
                &[line],
                UdevFlags::PRIVATE,
            )?;
            state.set.storage = storage;
        } else if let StorageOptions::LoopFiles { .. } = self.options.storage {
            state.set.storage = Storage::LoopFiles {
                data_file: self.data_file(),
                metadata_file: self.metadata_file(),
            };
            // Hold the loop devices so a later shutdown frees them.
            for f in [self.metadata_file(), self.data_file()] {
                if let Some(d) = loopdev::find_by_file(&f)? {
                    state.loops.push(d);
                }
            }
        } else if let StorageOptions::BlockDevices { data, metadata } = &self.options.storage {
            state.set.storage = Storage::BlockDevices {
                data_device: data.clone(),
                metadata_device: metadata.clone(),
            };
        }
        state.pool_dev = state.ctl.info(DevId::Name(&self.pool_name))?.dev;
        // The pool's table must match our block size.
        let line = self.pool_line(state)?;
        let pool_table = ThinPoolTable::from_line(&line)?;
        if pool_table.block_size() != self.block_size {
            return Err(DeviceSetError::OptionMismatch {
                option: "data block size",
                recorded: format!("{} sectors (the pool's)", pool_table.block_size().sectors()),
                given: format!("{} sectors", self.block_size.sectors()),
            });
        }
        let status = match self.any_pool_status(state)? {
            PoolStatus::Active(s) => s,
            other => {
                // A failed pool has no transaction id to read: the records'
                // stands, and the set opens degraded.
                state.transaction_id = state.store.committed()?.unwrap_or(0);
                log::warn!(
                    "pool {} is in {} mode; changes will be refused",
                    self.pool_name,
                    other.to_string().to_lowercase()
                );
                return Ok(());
            }
        };
        state.transaction_id = status.transaction_id;
        // A first init that failed after moving the pool's transaction id
        // (mkfs refused its options) recorded where it left the pool: the
        // pool is ours, and init runs again.
        let moved_by_us = state.store.committed()? == Some(status.transaction_id);
        if !has_set
            && state.store.pending()?.is_none()
            && status.transaction_id != 0
            && !moved_by_us
        {
            return Err(DeviceSetError::Inconsistent {
                pool: self.pool_name.clone(),
                root: self.root.clone(),
                reason: format!(
                    "the pool has transaction id {} but the set has no records; a pool must be empty (transaction id 0) when a set first uses it",
                    status.transaction_id
                ),
            });
        }
        if status.needs_check {
            log::warn!(
                "pool {} needs a check (thin_check); changes will be refused",
                self.pool_name
            );
        }
        Ok(())
    }

    /// Pool usage and mode.
    pub(crate) fn status(&self, state: &mut State) -> Result<SetStatus> {
        let parsed = self.any_pool_status(state)?;
        let (data_source, metadata_source) = match &state.set.storage {
            Storage::LoopFiles {
                data_file,
                metadata_file,
            } => (Some(data_file.clone()), Some(metadata_file.clone())),
            Storage::BlockDevices {
                data_device,
                metadata_device,
            } => (Some(data_device.clone()), Some(metadata_device.clone())),
            Storage::AdoptedPool => (None, None),
        };
        let bs = self.block_size;
        let (usage, mode, needs_check, txn) = match parsed {
            PoolStatus::Active(s) => (
                Some(s.usage_bytes(bs)),
                mode_name(&s).to_string(),
                s.needs_check,
                s.transaction_id,
            ),
            PoolStatus::Fail => (None, "fail".to_string(), true, state.transaction_id),
            PoolStatus::Error => (None, "error".to_string(), true, state.transaction_id),
        };
        let u = |f: fn(&crate::target::PoolUsageBytes) -> Option<u64>| {
            usage.as_ref().and_then(f).unwrap_or(0)
        };
        Ok(SetStatus {
            pool_name: self.pool_name.clone(),
            data_source,
            metadata_source,
            data_block_size: self.options.data_block_size,
            data_used: u(|x| x.used_data),
            data_allocated: self.data_allocated(state),
            data_total: u(|x| x.total_data),
            metadata_used: u(|x| x.used_metadata),
            metadata_total: u(|x| x.total_metadata),
            mode,
            needs_check,
            transaction_id: txn,
            devices: state
                .devices
                .values()
                .filter(|r| !r.deferred_delete)
                .count(),
            filesystem: state.set.filesystem.as_str().to_string(),
            base_size: state.set.base_size,
            base_thin_id: state.set.base_thin_id,
        })
    }

    /// Grows the pool's data space to `new_data_size` bytes (loop files are
    /// grown; block devices must already be that large). Never shrinks.
    pub(crate) fn grow_pool(&self, state: &mut State, new_data_size: u64) -> Result<()> {
        let line = self.pool_line(state)?;
        let current = line.length() * SECTOR_SIZE;
        if new_data_size < current {
            return Err(DeviceSetError::InvalidOption {
                option: "data size",
                reason: format!("{new_data_size} bytes is smaller than the pool's {current} bytes; pools never shrink"),
            });
        }
        self.grow_backing(state, Backing::Data, new_data_size)?;
        fail_point!("grow_pool.after_grow_file")?;
        let pool_table = ThinPoolTable::from_line(&line)?;
        let bs = u64::from(self.block_size.sectors());
        let len = sectors(new_data_size) / bs * bs;
        let new_line = pool_table.to_line(0, len);
        state.ctl.reload_table_steps(
            DevId::Name(&self.pool_name),
            &[new_line],
            UdevFlags::PRIVATE,
            || fail_point!("grow_pool.after_suspend"),
        )?;
        fail_point!("grow_pool.after_reload")?;
        Ok(())
    }

    /// Grows the pool's metadata device to `new_metadata_size` bytes: a loop
    /// file is extended in place, a block device must already be that big.
    /// The pool is then reloaded (suspend, resume) so the kernel takes the
    /// new space; a pool that had run out of metadata space (`ro`, without
    /// `needs_check`) becomes writable again. Shrinking is refused, and so is
    /// more than the kernel can use ([`MAX_METADATA_BYTES`], ~15.9 GiB).
    pub(crate) fn grow_pool_metadata(
        &self,
        state: &mut State,
        new_metadata_size: u64,
    ) -> Result<()> {
        let line = self.pool_line(state)?;
        if let Storage::LoopFiles { metadata_file, .. } = &state.set.storage {
            let current = std::fs::metadata(metadata_file)
                .map_err(|e| DeviceSetError::PoolUnusable {
                    pool: self.pool_name.clone(),
                    reason: format!("cannot stat {}: {e}", metadata_file.display()),
                })?
                .len();
            if new_metadata_size < current {
                return Err(DeviceSetError::InvalidOption {
                    option: "metadata size",
                    reason: format!(
                        "{new_metadata_size} bytes is smaller than the metadata device's {current} bytes; metadata never shrinks"
                    ),
                });
            }
        }
        self.grow_backing(state, Backing::Metadata, new_metadata_size)?;
        fail_point!("grow_pool_metadata.after_grow_file")?;
        // The same table: the pool re-reads its metadata device's size on
        // resume (pool_preresume), and a reload lets it leave read-only mode.
        state.ctl.reload_table_steps(
            DevId::Name(&self.pool_name),
            &[line],
            UdevFlags::PRIVATE,
            || fail_point!("grow_pool_metadata.after_suspend"),
        )?;
        fail_point!("grow_pool_metadata.after_reload")?;
        Ok(())
    }
}

/// Whether a pool is read-only because its metadata is full: the kernel
/// reports `ro` and counts its metadata reserve as used, so used == total.
fn out_of_metadata_space(s: &ThinPoolStatus) -> bool {
    s.mode == PoolMode::ReadOnly
        && s.total_metadata_blocks > 0
        && s.used_metadata_blocks >= s.total_metadata_blocks
}

/// The pool's mode as the set reports it (see [`SetStatus::mode`]).
fn mode_name(s: &ThinPoolStatus) -> &'static str {
    if out_of_metadata_space(s) {
        "out_of_metadata_space"
    } else {
        s.mode.as_str()
    }
}
