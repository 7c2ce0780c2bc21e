//! Space use per device (issue #14): the pool's metadata, read in-process
//! from a metadata snapshot with [`crate::thinmeta`].
//!
//! The kernel writes the metadata device through dm-bufio, as bios that
//! bypass the block device's page cache, so a buffered read could return
//! stale pages. The device is read with `O_DIRECT` (as `thin_ls` does),
//! each block into a 4 KiB-aligned buffer.
//!
//! The trees read are the held snapshot's, which the kernel keeps intact
//! until it is released. The data space map is the live one (the snapshot
//! does not keep it), so a commit racing the read can make a block of it
//! fail its checks: such a read is tried again.

use super::{Config, State};
use crate::deviceset::error::{DeviceSetError, Result};
use crate::deviceset::store::{Storage, ThinIdentity};
use crate::deviceset::usage_report::{DeviceUsage, SetUsage};
use crate::dm::{Dev, DmError, ErrorKind};
use crate::retry::Backoff;
use crate::target::{DeviceRef, PoolMessage, TargetTable, ThinPoolTable};
use crate::thinmeta::{self, Metadata, PoolUsage, ReadAt, Source, ThinUsage};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Alignment of `O_DIRECT` buffers, offsets and lengths (a metadata block;
/// at least any logical block size).
const ALIGN: usize = 4096;

/// Tries of a read that met a block the kernel rewrote meanwhile.
const READ_TRIES: Backoff = Backoff::new(4, 20, 20, 100);

/// Tries of a live read beside the set's owner (a read-only open), which
/// may commit many times while a busy owner works.
const LIVE_TRIES: Backoff = Backoff::new(12, 10, 20, 200);

/// Why a live read beside a writer is tried again.
enum LiveRead {
    /// A block failed its checks (rewritten under the read).
    Meta(thinmeta::Error),
    /// The superblock changed during the read: the pool committed, and
    /// blocks read may belong to different transactions.
    Committed,
}

/// A block device read with `O_DIRECT`.
pub(crate) struct DirectReader(File);

impl DirectReader {
    pub(crate) fn open(path: &Path) -> std::io::Result<DirectReader> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_DIRECT.bits())
            .open(path)?;
        Ok(DirectReader(f))
    }
}

impl ReadAt for DirectReader {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        // Widen the range to aligned bounds, read into an aligned slice of a
        // larger allocation, copy out the part asked for.
        let head = (offset % ALIGN as u64) as usize;
        let len = (head + buf.len()).div_ceil(ALIGN) * ALIGN;
        let mut raw = vec![0u8; len + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN);
        let aligned = raw
            .get_mut(start..start + len)
            .ok_or_else(|| std::io::Error::other("cannot align a read buffer"))?;
        FileExt::read_exact_at(&self.0, aligned, offset - head as u64)?;
        buf.copy_from_slice(&aligned[head..head + buf.len()]);
        Ok(())
    }

    fn size(&self) -> std::io::Result<u64> {
        self.0.size()
    }
}

/// Runs `read` between `reserve` and `release`: `release` runs whatever
/// `read` returns, also when it panics. A failed release after a good read
/// is the call's error; after a failed read, the read's error wins.
pub(crate) fn while_held<S, T, E>(
    s: &mut S,
    reserve: impl FnOnce(&mut S) -> std::result::Result<(), E>,
    release: impl FnMut(&mut S) -> std::result::Result<(), E>,
    read: impl FnOnce() -> std::result::Result<T, E>,
) -> std::result::Result<T, E> {
    struct Guard<'a, S, F: FnMut(&mut S) -> std::result::Result<(), E>, E> {
        s: &'a mut S,
        release: Option<F>,
        _e: std::marker::PhantomData<E>,
    }
    impl<S, F: FnMut(&mut S) -> std::result::Result<(), E>, E> Drop for Guard<'_, S, F, E> {
        fn drop(&mut self) {
            if let Some(mut release) = self.release.take() {
                let _ = release(self.s);
            }
        }
    }
    reserve(s)?;
    let mut guard = Guard {
        s,
        release: Some(release),
        _e: std::marker::PhantomData,
    };
    let r = read();
    let mut release = guard.release.take().expect("release is taken once");
    let released = release(guard.s);
    let value = r?;
    released.map(|()| value)
}

/// The node of the block device `dev`: the storage record's path, or the
/// kernel's name for it under /dev.
fn device_node(storage: &Storage, dev: Dev) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Storage::BlockDevices {
        metadata_device, ..
    } = storage
    {
        candidates.push(metadata_device.clone());
    }
    let sys = format!("/sys/dev/block/{}:{}/uevent", dev.major, dev.minor);
    if let Ok(uevent) = std::fs::read_to_string(sys) {
        if let Some(name) = uevent.lines().find_map(|l| l.strip_prefix("DEVNAME=")) {
            candidates.push(Path::new("/dev").join(name));
        }
    }
    candidates.push(PathBuf::from(format!(
        "/dev/block/{}:{}",
        dev.major, dev.minor
    )));
    candidates.into_iter().find(|p| {
        std::fs::metadata(p)
            .is_ok_and(|m| m.file_type().is_block_device() && Dev::from_dev_t(m.rdev()) == dev)
    })
}

/// A thin device's figures under the set's name for it.
fn named(id: String, thin_id: u32, usage: &BTreeMap<u32, ThinUsage>) -> DeviceUsage {
    DeviceUsage {
        id,
        space: usage.get(&thin_id).copied().unwrap_or(ThinUsage {
            thin_id,
            ..ThinUsage::default()
        }),
    }
}

impl Config {
    /// The pool's metadata device, from its live table.
    fn metadata_device(&self, state: &mut State) -> Result<PathBuf> {
        let line = self.pool_line(state)?;
        let table = ThinPoolTable::from_line(&line)?;
        let dev = match table.metadata_dev().clone() {
            DeviceRef::MajorMinor(major, minor) => Dev::new(major, minor),
            DeviceRef::Path(p) => return Ok(PathBuf::from(p)),
        };
        device_node(&state.set.storage, dev).ok_or_else(|| DeviceSetError::PoolUnusable {
            pool: self.pool_name.clone(),
            reason: format!("no device node for its metadata device {dev}"),
        })
    }

    /// Reads the pool's usage from `device`, trying again when a block of
    /// the live space map changed under the read.
    fn read_usage(&self, device: &Path, source: Source) -> Result<(PoolUsage, u64)> {
        self.read_metadata(device, source, source != Source::Live, |md| {
            Ok((md.usage()?, md.transaction_id()))
        })
    }

    /// Runs `read` on the metadata at `device` opened as `source`, trying
    /// again when `racing` and a block changed under the read.
    fn read_metadata<T>(
        &self,
        device: &Path,
        source: Source,
        racing: bool,
        read: impl Fn(&Metadata<&DirectReader>) -> thinmeta::Result<T>,
    ) -> Result<T> {
        let failed = |source| DeviceSetError::Metadata {
            pool: self.pool_name.clone(),
            device: device.to_path_buf(),
            source,
        };
        let reader = DirectReader::open(device).map_err(|e| {
            failed(thinmeta::Error::Read {
                block: 0,
                source: e,
            })
        })?;
        READ_TRIES
            .run(
                |_| read(&Metadata::open(&reader, source)?),
                |e| racing && matches!(e, thinmeta::Error::Corrupt { .. }),
            )
            .map_err(failed)
    }

    /// The pool's usage read live while the set's owner (another process)
    /// may be committing: a read counts only if the superblock is the same
    /// before and after it. Until a commit, the kernel never overwrites a
    /// block the committed superblock reaches (it shadows them), so an
    /// unchanged superblock means every block read was of that one
    /// transaction. Sends no message to the pool.
    fn read_usage_beside_owner(&self, device: &Path) -> Result<(PoolUsage, u64)> {
        let failed = |source| DeviceSetError::Metadata {
            pool: self.pool_name.clone(),
            device: device.to_path_buf(),
            source,
        };
        let read_failed = |e| {
            failed(thinmeta::Error::Read {
                block: 0,
                source: e,
            })
        };
        let reader = DirectReader::open(device).map_err(read_failed)?;
        let superblock = || -> std::result::Result<Vec<u8>, LiveRead> {
            let mut b = vec![0u8; ALIGN];
            reader.read_exact_at(&mut b, 0).map_err(|e| {
                LiveRead::Meta(thinmeta::Error::Read {
                    block: 0,
                    source: e,
                })
            })?;
            Ok(b)
        };
        let r = LIVE_TRIES.run(
            |_| {
                let before = superblock()?;
                let md = Metadata::open(&reader, Source::Live).map_err(LiveRead::Meta)?;
                let read = (md.usage().map_err(LiveRead::Meta)?, md.transaction_id());
                let after = superblock()?;
                if before != after {
                    log::debug!(
                        "pool {}: committed during a live read; reading again",
                        self.pool_name
                    );
                    return Err(LiveRead::Committed);
                }
                Ok(read)
            },
            |e| {
                matches!(
                    e,
                    LiveRead::Committed | LiveRead::Meta(thinmeta::Error::Corrupt { .. })
                )
            },
        );
        r.map_err(|e| match e {
            LiveRead::Meta(e) => failed(e),
            LiveRead::Committed => DeviceSetError::PoolUnusable {
                pool: self.pool_name.clone(),
                reason: format!(
                    "its metadata changed during each of {} reads (the set's owner is busy); try again",
                    LIVE_TRIES.tries()
                ),
            },
        })
    }

    /// The identity of every thin the pool holds, by thin id (see
    /// [`ThinIdentity`]): read from a metadata snapshot reserved for the
    /// read and always released; live when the pool takes no writes, or
    /// when another tool holds the snapshot (tried again if a commit races
    /// the read).
    pub(crate) fn pool_thin_identities(
        &self,
        state: &mut State,
    ) -> Result<BTreeMap<u32, ThinIdentity>> {
        let device = self.metadata_device(state)?;
        let ids = |md: &Metadata<&DirectReader>| {
            Ok(md
                .devices()
                .iter()
                .map(|d| {
                    let identity = ThinIdentity {
                        creation_time: d.creation_time,
                        snapshotted_time: d.snapshotted_time,
                        transaction_id: d.transaction_id,
                        mapped_blocks: d.mapped_blocks,
                    };
                    (d.thin_id, identity)
                })
                .collect::<BTreeMap<u32, ThinIdentity>>())
        };
        if self.pool_takes_no_writes(state)? {
            return self.read_metadata(&device, Source::Live, false, ids);
        }
        let reserve = |state: &mut State| -> Result<()> {
            self.message(state, PoolMessage::ReserveMetadataSnap)
                .map_err(|e| self.reserve_failed(e))
        };
        let release = |state: &mut State| -> Result<()> {
            Ok(self.message(state, PoolMessage::ReleaseMetadataSnap)?)
        };
        let v = match while_held(state, reserve, release, || {
            self.read_metadata(&device, Source::Snapshot, true, ids)
        }) {
            Ok(v) => v,
            Err(DeviceSetError::PoolUnusable { reason, .. }) => {
                log::warn!(
                    "pool {}: {reason}; reading its live metadata",
                    self.pool_name
                );
                self.read_metadata(&device, Source::Live, true, ids)?
            }
            Err(e) => return Err(e),
        };
        Ok(v)
    }

    /// The pool's usage: from a metadata snapshot reserved for the read and
    /// always released; a read-only pool (which takes no messages and no
    /// writes) is read live, and so is any pool by a read-only open (see
    /// [`Config::read_usage_beside_owner`]).
    fn pool_usage(&self, state: &mut State) -> Result<(PoolUsage, u64, bool)> {
        let device = self.metadata_device(state)?;
        if self.read_only {
            let (u, txn) = self.read_usage_beside_owner(&device)?;
            return Ok((u, txn, false));
        }
        if self.pool_takes_no_writes(state)? {
            let (u, txn) = self.read_usage(&device, Source::Live)?;
            return Ok((u, txn, false));
        }
        let reserve = |state: &mut State| -> Result<()> {
            match self.message(state, PoolMessage::ReserveMetadataSnap) {
                Ok(()) => Ok(()),
                Err(e) => Err(self.reserve_failed(e)),
            }
        };
        let release = |state: &mut State| -> Result<()> {
            self.message(state, PoolMessage::ReleaseMetadataSnap)
                .map_err(|e| {
                    log::warn!("pool {}: release_metadata_snap: {e}", self.pool_name);
                    e.into()
                })
        };
        let r = while_held(state, reserve, release, || {
            self.read_usage(&device, Source::Snapshot)
        });
        match r {
            Ok((u, txn)) => Ok((u, txn, true)),
            // The pool went read-only between the status and the reserve.
            Err(DeviceSetError::PoolUnusable { .. }) if self.pool_takes_no_writes(state)? => {
                let (u, txn) = self.read_usage(&device, Source::Live)?;
                Ok((u, txn, false))
            }
            Err(e) => Err(e),
        }
    }

    /// Why `reserve_metadata_snap` failed, as the set reports it.
    fn reserve_failed(&self, e: DmError) -> DeviceSetError {
        let hint = if e.kind() == Some(ErrorKind::Busy) {
            format!(
                " (a metadata snapshot is held already, by thin_ls or another tool; \
                 `dmsetup message {} 0 release_metadata_snap` drops it)",
                self.pool_name
            )
        } else {
            String::new()
        };
        DeviceSetError::PoolUnusable {
            pool: self.pool_name.clone(),
            reason: format!("cannot reserve a metadata snapshot: {e}{hint}"),
        }
    }

    /// Space used by the base and every device of the set, and the pool's totals.
    pub(crate) fn usage_all(&self, state: &mut State) -> Result<SetUsage> {
        let (pool, transaction_id, from_snapshot) = self.pool_usage(state)?;
        let by_thin: BTreeMap<u32, ThinUsage> =
            pool.devices.iter().map(|d| (d.thin_id, *d)).collect();
        let base_thin = state.set.base_thin_id;
        let base = named("base".into(), base_thin, &by_thin);
        let devices: Vec<DeviceUsage> = state
            .devices
            .values()
            .filter(|r| !r.deferred_delete)
            .map(|r| named(r.id.clone(), r.thin_id, &by_thin))
            .collect();
        let untracked = by_thin
            .keys()
            .filter(|&&t| t != base_thin && !devices.iter().any(|d| d.space.thin_id == t))
            .map(|&t| named(format!("#{t}"), t, &by_thin))
            .collect();
        Ok(SetUsage {
            base,
            devices,
            untracked,
            data_block_size: pool.data_block_bytes,
            data_total_bytes: pool.data_blocks.saturating_mul(pool.data_block_bytes),
            allocated_bytes: pool.allocated_blocks.saturating_mul(pool.data_block_bytes),
            mapped_bytes: pool.mapped_bytes(),
            exclusive_bytes: pool.exclusive_bytes(),
            shared_bytes: pool.shared_bytes(),
            unmapped_allocated_bytes: pool.unmapped_allocated_bytes(),
            from_snapshot,
            transaction_id,
        })
    }

    /// Space used by device `id` (`base`: the base device).
    pub(crate) fn usage(&self, state: &mut State, id: &str) -> Result<DeviceUsage> {
        if id != "base" {
            self.record(state, id)?;
        }
        let all = self.usage_all(state)?;
        std::iter::once(all.base)
            .chain(all.devices)
            .find(|d| d.id == id)
            .ok_or_else(|| DeviceSetError::UnknownDevice(id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(
        l: &mut Vec<&'static str>,
        step: &'static str,
    ) -> std::result::Result<(), &'static str> {
        l.push(step);
        Ok(())
    }

    #[test]
    fn released_after_a_good_read_a_failed_read_and_a_panic() {
        let mut log = Vec::new();
        let r: std::result::Result<u32, &str> = while_held(
            &mut log,
            |l| step(l, "reserve"),
            |l| step(l, "release"),
            || Ok(7),
        );
        assert_eq!(r, Ok(7));
        assert_eq!(log, ["reserve", "release"]);

        let mut log = Vec::new();
        let r: std::result::Result<u32, &str> = while_held(
            &mut log,
            |l| step(l, "reserve"),
            |l| step(l, "release"),
            || Err("corrupt"),
        );
        assert_eq!(r, Err("corrupt"));
        assert_eq!(log, ["reserve", "release"]);

        let mut log = Vec::new();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _: std::result::Result<u32, &str> = while_held(
                &mut log,
                |l| step(l, "reserve"),
                |l| step(l, "release"),
                || panic!("reader bug"),
            );
        }));
        assert!(caught.is_err());
        assert_eq!(log, ["reserve", "release"]);
    }

    #[test]
    fn no_release_without_a_reserve_and_a_failed_release_is_reported() {
        let mut log = Vec::new();
        let r: std::result::Result<u32, &str> =
            while_held(&mut log, |_| Err("busy"), |l| step(l, "release"), || Ok(1));
        assert_eq!(r, Err("busy"));
        assert!(log.is_empty());

        let mut n = 0;
        let r: std::result::Result<u32, &str> =
            while_held(&mut n, |_| Ok(()), |_| Err("gone"), || Ok(1));
        assert_eq!(r, Err("gone"));
        let r: std::result::Result<u32, &str> =
            while_held(&mut n, |_| Ok(()), |_| Err("gone"), || Err("corrupt"));
        assert_eq!(r, Err("corrupt"));
    }

    #[test]
    fn direct_reader_reads_unaligned_ranges() {
        let dir = std::env::temp_dir().join(format!("dmthin-direct-{}", std::process::id()));
        let bytes: Vec<u8> = (0..3 * ALIGN).map(|i| (i % 251) as u8).collect();
        std::fs::write(&dir, &bytes).unwrap();
        // tmpfs refuses O_DIRECT: read through a plain handle there.
        let r =
            DirectReader::open(&dir).unwrap_or_else(|_| DirectReader(File::open(&dir).unwrap()));
        let mut buf = vec![0u8; ALIGN];
        r.read_exact_at(&mut buf, ALIGN as u64).unwrap();
        assert_eq!(buf, bytes[ALIGN..2 * ALIGN]);
        let mut buf = vec![0u8; 100];
        r.read_exact_at(&mut buf, 4000).unwrap();
        assert_eq!(buf, bytes[4000..4100]);
        let e = r.read_exact_at(&mut buf, 3 * ALIGN as u64).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        let _ = std::fs::remove_file(&dir);
    }
}
