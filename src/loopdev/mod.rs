//! Loop devices through the `LOOP_*` ioctls.
//!
//! - [`create_sparse_file`] makes (or grows, never shrinks) a sparse backing file.
//! - [`LoopControl::attach`] / [`attach`] bind a file to a free loop device with
//!   `LOOP_CTL_GET_FREE` + `LOOP_CONFIGURE` (falling back to `LOOP_SET_FD` +
//!   `LOOP_SET_STATUS64` on kernels without it), retrying when another process
//!   takes the device first.
//! - [`LoopDevice`] is an open handle on a bound device: [`LoopDevice::status`],
//!   [`LoopDevice::set_capacity`], [`LoopDevice::detach`].
//! - [`list`], [`find_by_file`] and [`find_all_by_file`] look at what is bound;
//!   files are matched by device and inode, never by the 64-byte name field.
//!
//! A [`LoopDevice`] keeps the device open. Dropping it closes the descriptor
//! and does not detach, except that an autoclear device is detached by the
//! kernel when its last user closes it.

mod error;
pub mod sys;

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bitflags::bitflags;
use nix::errno::Errno;
use nix::sys::stat::{major, makedev, mknod, Mode, SFlag};
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use error::{io_errno, sys as sys_err};
pub use error::{LoopError, Result};
use sys::{LoopConfig, LoopInfo64};

/// Where the loop control device lives.
pub const LOOP_CONTROL: &str = "/dev/loop-control";

/// How long [`LoopDevice::detach`] waits for other users to close the device.
pub const DEFAULT_DETACH_GRACE: Duration = Duration::from_secs(1);

/// How many devices [`LoopControl::attach`] tries before giving up.
const MAX_ATTACH_ATTEMPTS: u32 = 256;

/// After this many `EBUSY`s from one device within one attach, stop taking it
/// from `LOOP_CTL_GET_FREE` (the device may be unbound yet refuse binding
/// because someone holds it exclusively) and use another unbound device,
/// creating one only when there is none.
const STUCK_AFTER: u32 = 3;

/// Set once a kernel has shown it lacks `LOOP_CONFIGURE`.
static NO_CONFIGURE: AtomicBool = AtomicBool::new(false);

bitflags! {
    /// `LO_FLAGS_*` of a bound device.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct LoopFlags: u32 {
        /// The device refuses writes.
        const READ_ONLY = 1;
        /// The device is detached when its last user closes it.
        const AUTOCLEAR = 4;
        /// The kernel scans the device for partitions.
        const PARTSCAN = 8;
        /// The device reads and writes its backing file with direct I/O.
        const DIRECT_IO = 16;
    }
}

/// Create `path` as a sparse file of exactly `size` bytes, or grow it to
/// `size` if it is smaller. Never shrinks; returns the file's size afterwards.
///
/// A new file gets mode 0600; missing parent directories are created with
/// mode 0700 (existing ones are left as they are).
pub fn create_sparse_file(path: impl AsRef<Path>, size: u64) -> Result<u64> {
    let path = path.as_ref();
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if fs::symlink_metadata(parent).is_err() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| sys_err("mkdir", parent, io_errno(&e)))?;
        }
    }
    if let Ok(meta) = fs::metadata(path) {
        if meta.is_dir() {
            return Err(LoopError::IsDirectory { path: path.into() });
        }
        if !meta.is_file() {
            return Err(LoopError::NotAFile { path: path.into() });
        }
    }
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| open_error(path, &e, true))?;
    let len = file
        .metadata()
        .map_err(|e| sys_err("fstat", path, io_errno(&e)))?
        .len();
    if len < size {
        file.set_len(size)
            .map_err(|e| sys_err("ftruncate", path, io_errno(&e)))?;
    }
    Ok(len.max(size))
}

/// Options for [`LoopControl::attach`]. Build with [`AttachOptions::new`] and
/// the setters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttachOptions {
    /// Bind read-only: the backing file is opened read-only and the device
    /// refuses writes.
    pub read_only: bool,
    /// Detach automatically when the last user closes the device.
    pub autoclear: bool,
    /// Ask for direct I/O on the backing file. Where the filesystem or the
    /// offset does not allow it the device uses buffered I/O instead; see
    /// [`LoopDevice::direct_io`].
    pub direct_io: bool,
    /// Let the kernel scan the device for partitions.
    pub partscan: bool,
    /// Logical block size (power of two, 512..=65536), `None` for the default.
    pub block_size: Option<u32>,
    /// Byte offset of the device's start in the backing file.
    pub offset: u64,
    /// Maximum size of the device in bytes, 0 for "up to the end of the file".
    pub size_limit: u64,
}

impl AttachOptions {
    /// Default options: read-write, no autoclear, buffered I/O, whole file.
    pub fn new() -> Self {
        Self::default()
    }
    /// Set [`AttachOptions::read_only`].
    pub fn read_only(mut self, on: bool) -> Self {
        self.read_only = on;
        self
    }
    /// Set [`AttachOptions::autoclear`].
    pub fn autoclear(mut self, on: bool) -> Self {
        self.autoclear = on;
        self
    }
    /// Set [`AttachOptions::direct_io`].
    pub fn direct_io(mut self, on: bool) -> Self {
        self.direct_io = on;
        self
    }
    /// Set [`AttachOptions::partscan`].
    pub fn partscan(mut self, on: bool) -> Self {
        self.partscan = on;
        self
    }
    /// Set [`AttachOptions::block_size`].
    pub fn block_size(mut self, size: u32) -> Self {
        self.block_size = Some(size);
        self
    }
    /// Set [`AttachOptions::offset`].
    pub fn offset(mut self, offset: u64) -> Self {
        self.offset = offset;
        self
    }
    /// Set [`AttachOptions::size_limit`].
    pub fn size_limit(mut self, limit: u64) -> Self {
        self.size_limit = limit;
        self
    }

    fn flags(&self) -> LoopFlags {
        let mut f = LoopFlags::empty();
        f.set(LoopFlags::READ_ONLY, self.read_only);
        f.set(LoopFlags::AUTOCLEAR, self.autoclear);
        f.set(LoopFlags::PARTSCAN, self.partscan);
        f.set(LoopFlags::DIRECT_IO, self.direct_io);
        f
    }

    fn validate(&self, path: &Path) -> Result<()> {
        if let Some(bs) = self.block_size {
            if !bs.is_power_of_two() || !(512..=65536).contains(&bs) {
                return Err(LoopError::InvalidOption {
                    path: path.into(),
                    reason: format!("block size {bs} is not a power of two between 512 and 65536"),
                });
            }
        }
        Ok(())
    }
}

/// Status of a bound loop device, read with `LOOP_GET_STATUS64`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoopStatus {
    /// N of `/dev/loopN`.
    pub number: u32,
    /// The device node.
    pub device: PathBuf,
    /// Full path of the backing file as the kernel reports it in sysfs (ends in
    /// " (deleted)" if the file was unlinked), or the name field where sysfs
    /// is unavailable.
    pub backing_file: PathBuf,
    /// The 64-byte name field set at attach time (may be truncated).
    pub file_name: String,
    /// `st_dev` of the backing file.
    pub backing_device: u64,
    /// Inode of the backing file.
    pub backing_inode: u64,
    /// Byte offset into the backing file.
    pub offset: u64,
    /// Size limit in bytes, 0 for none.
    pub size_limit: u64,
    /// Flags in force.
    pub flags: LoopFlags,
}

impl LoopStatus {
    fn from_info(device: PathBuf, info: &LoopInfo64) -> Self {
        let file_name = String::from_utf8_lossy(info.file_name()).into_owned();
        let backing_file = sysfs_backing_file(info.lo_number)
            .unwrap_or_else(|| PathBuf::from(std::ffi::OsStr::from_bytes(info.file_name())));
        LoopStatus {
            number: info.lo_number,
            device,
            backing_file,
            file_name,
            backing_device: info.lo_device,
            backing_inode: info.lo_inode,
            offset: info.lo_offset,
            size_limit: info.lo_sizelimit,
            flags: LoopFlags::from_bits_retain(info.lo_flags),
        }
    }

    /// The device refuses writes.
    pub fn read_only(&self) -> bool {
        self.flags.contains(LoopFlags::READ_ONLY)
    }
    /// The device is detached on its last close.
    pub fn autoclear(&self) -> bool {
        self.flags.contains(LoopFlags::AUTOCLEAR)
    }
    /// The device uses direct I/O.
    pub fn direct_io(&self) -> bool {
        self.flags.contains(LoopFlags::DIRECT_IO)
    }
    /// The kernel scans the device for partitions.
    pub fn partscan(&self) -> bool {
        self.flags.contains(LoopFlags::PARTSCAN)
    }
}

impl Serialize for LoopStatus {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("LoopStatus", 12)?;
        st.serialize_field("number", &self.number)?;
        st.serialize_field("device", &self.device.to_string_lossy())?;
        st.serialize_field("backing_file", &self.backing_file.to_string_lossy())?;
        st.serialize_field("file_name", &self.file_name)?;
        st.serialize_field("backing_device", &self.backing_device)?;
        st.serialize_field("backing_inode", &self.backing_inode)?;
        st.serialize_field("offset", &self.offset)?;
        st.serialize_field("size_limit", &self.size_limit)?;
        st.serialize_field("read_only", &self.read_only())?;
        st.serialize_field("autoclear", &self.autoclear())?;
        st.serialize_field("direct_io", &self.direct_io())?;
        st.serialize_field("partscan", &self.partscan())?;
        st.end()
    }
}

/// An open handle on `/dev/loop-control`.
#[derive(Debug)]
pub struct LoopControl {
    ctl: OwnedFd,
    dev_dir: PathBuf,
    use_configure: bool,
}

/// Result of one attach attempt on one device.
enum Attempt {
    /// The device was taken, or went away, under us: try another.
    Retry { busy: bool },
    /// Give up.
    Fatal(LoopError),
}

impl From<LoopError> for Attempt {
    fn from(e: LoopError) -> Self {
        Attempt::Fatal(e)
    }
}

/// The backing file, opened for the kernel to take a reference on.
struct Backing {
    file: File,
    given: PathBuf,
    name: PathBuf,
}

impl LoopControl {
    /// Open [`LOOP_CONTROL`]; device nodes are looked for in `/dev`.
    pub fn open() -> Result<Self> {
        let ctl = OpenOptions::new()
            .read(true)
            .write(true)
            .open(LOOP_CONTROL)
            .map_err(|e| LoopError::ControlUnavailable {
                path: LOOP_CONTROL.into(),
                errno: io_errno(&e),
            })?;
        Ok(LoopControl {
            ctl: ctl.into(),
            dev_dir: PathBuf::from("/dev"),
            use_configure: true,
        })
    }

    /// Look for (and create, when missing) device nodes `loopN` in `dir`
    /// instead of `/dev`.
    pub fn with_dev_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dev_dir = dir.into();
        self
    }

    /// Bind with `LOOP_SET_FD` + `LOOP_SET_STATUS64` even where the kernel has
    /// `LOOP_CONFIGURE` (the path taken on kernels before 5.8; for testing it).
    pub fn without_configure(mut self) -> Self {
        self.use_configure = false;
        self
    }

    /// Path of device N's node.
    pub fn device_path(&self, number: u32) -> PathBuf {
        self.dev_dir.join(format!("loop{number}"))
    }

    /// `LOOP_CTL_GET_FREE`: the number of a device that is unbound right now
    /// (the kernel creates one if none is). Nothing reserves it.
    pub fn get_free(&self) -> Result<u32> {
        sys::loop_ctl_get_free(self.ctl.as_fd()).map_err(|errno| LoopError::NoFreeDevice {
            reason: format!("LOOP_CTL_GET_FREE on {LOOP_CONTROL} failed: {errno}"),
        })
    }

    /// `LOOP_CTL_ADD`: create device `number`.
    pub fn add(&self, number: u32) -> Result<u32> {
        sys::loop_ctl_add(self.ctl.as_fd(), number)
            .map_err(|e| sys_err("LOOP_CTL_ADD", self.device_path(number), e))
    }

    /// `LOOP_CTL_REMOVE`: remove device `number`; [`LoopError::DeviceBusy`]
    /// while it is bound or open.
    pub fn remove(&self, number: u32) -> Result<()> {
        let device = self.device_path(number);
        match sys::loop_ctl_remove(self.ctl.as_fd(), number) {
            Ok(()) => Ok(()),
            Err(Errno::EBUSY) => Err(LoopError::DeviceBusy {
                device,
                reason: "it is bound or open".into(),
            }),
            Err(Errno::ENODEV) => Err(LoopError::DeviceNotFound { device }),
            Err(e) => Err(sys_err("LOOP_CTL_REMOVE", device, e)),
        }
    }

    /// Bind `file` to a free loop device.
    ///
    /// Takes a device from `LOOP_CTL_GET_FREE`; when another process binds
    /// that device first (`EBUSY`), takes the next free one, a bounded number
    /// of times. Fails with [`LoopError::NoFreeDevice`] when every try lost.
    pub fn attach(&self, file: impl AsRef<Path>, opts: &AttachOptions) -> Result<LoopDevice> {
        let path = file.as_ref();
        opts.validate(path)?;
        let backing = open_backing(path, opts.read_only)?;
        let mut busy_counts: HashMap<u32, u32> = HashMap::new();
        let mut stuck: HashSet<u32> = HashSet::new();
        for attempt in 0..MAX_ATTACH_ATTEMPTS {
            let mut number = self.get_free()?;
            if stuck.contains(&number) {
                number = match other_unbound(&stuck) {
                    Some(n) => n,
                    None => self.add_fresh()?,
                };
            }
            match self.try_attach(number, &backing, opts) {
                Ok(dev) => return Ok(dev),
                Err(Attempt::Retry { busy }) => {
                    log::debug!(
                        "loop{number}: taken by another user while attaching {}, retrying",
                        path.display()
                    );
                    if busy {
                        let count = busy_counts.entry(number).or_default();
                        *count += 1;
                        if *count >= STUCK_AFTER {
                            stuck.insert(number);
                        }
                    }
                    backoff(attempt);
                }
                Err(Attempt::Fatal(e)) => return Err(e),
            }
        }
        Err(LoopError::NoFreeDevice {
            reason: format!(
                "every free loop device was taken by another user first \
                 ({MAX_ATTACH_ATTEMPTS} attempts to attach {})",
                path.display()
            ),
        })
    }

    /// Bind `file` to device `number` exactly; [`LoopError::DeviceBusy`] if it
    /// is bound or held exclusively by another user.
    pub fn attach_at(
        &self,
        number: u32,
        file: impl AsRef<Path>,
        opts: &AttachOptions,
    ) -> Result<LoopDevice> {
        let path = file.as_ref();
        opts.validate(path)?;
        let backing = open_backing(path, opts.read_only)?;
        match self.try_attach(number, &backing, opts) {
            Ok(dev) => Ok(dev),
            Err(Attempt::Retry { .. }) => Err(LoopError::DeviceBusy {
                device: self.device_path(number),
                reason: "it is bound, being detached, or held exclusively by another user".into(),
            }),
            Err(Attempt::Fatal(e)) => Err(e),
        }
    }

    /// Create a device with a number above every existing one.
    fn add_fresh(&self) -> Result<u32> {
        let start = loop_numbers().into_iter().max().map_or(0, |n| n + 1);
        for n in start..start.saturating_add(64) {
            match sys::loop_ctl_add(self.ctl.as_fd(), n) {
                Ok(n) => return Ok(n),
                Err(Errno::EEXIST) => continue,
                Err(e) => {
                    return Err(LoopError::NoFreeDevice {
                        reason: format!("LOOP_CTL_ADD {n} failed: {e}"),
                    })
                }
            }
        }
        Err(LoopError::NoFreeDevice {
            reason: format!("LOOP_CTL_ADD found no unused number from {start}"),
        })
    }

    fn try_attach(
        &self,
        number: u32,
        backing: &Backing,
        opts: &AttachOptions,
    ) -> std::result::Result<LoopDevice, Attempt> {
        let path = self.ensure_node(number)?;
        let dev = match open_device_rw(&path) {
            Ok(f) => f,
            // Being removed or run down by someone else, or gone already.
            Err(e) if matches!(io_errno(&e), Errno::ENXIO | Errno::ENODEV | Errno::ENOENT) => {
                return Err(Attempt::Retry { busy: false })
            }
            Err(e) => return Err(device_open_error(&path, &e).into()),
        };
        let fd: OwnedFd = dev.into();
        configure(fd.as_fd(), &path, backing, opts, self.use_configure)?;
        let info = match sys::loop_get_status64(fd.as_fd()) {
            Ok(info) => info,
            Err(e) => {
                let _ = sys::loop_clr_fd(fd.as_fd());
                return Err(sys_err("LOOP_GET_STATUS64", path, e).into());
            }
        };
        let flags = LoopFlags::from_bits_retain(info.lo_flags);
        Ok(LoopDevice {
            fd,
            number,
            path,
            backing_file: backing.name.clone(),
            direct_io: flags.contains(LoopFlags::DIRECT_IO),
            read_only: flags.contains(LoopFlags::READ_ONLY),
        })
    }

    /// Make sure `loopN` has a node in the device directory, creating it with
    /// the numbers sysfs reports (block 7:N without sysfs) when missing.
    fn ensure_node(&self, number: u32) -> std::result::Result<PathBuf, Attempt> {
        let path = self.device_path(number);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_block_device() => return Ok(path),
            Ok(_) => return Err(LoopError::NotALoopDevice { device: path }.into()),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(sys_err("stat", path, io_errno(&e)).into()),
        }
        let (maj, min) = match sysfs_dev(number) {
            Some(mm) => mm,
            // sysfs is there but the device is not: it was removed under us.
            None if Path::new("/sys/block").is_dir() => return Err(Attempt::Retry { busy: false }),
            None => (sys::LOOP_MAJOR, u64::from(number)),
        };
        log::debug!("creating missing node {} ({maj}:{min})", path.display());
        match mknod(
            &path,
            SFlag::S_IFBLK,
            Mode::from_bits_truncate(0o660),
            makedev(maj, min),
        ) {
            Ok(()) | Err(Errno::EEXIST) => Ok(path),
            Err(e) => Err(sys_err("mknod", path, e).into()),
        }
    }
}

/// Apply `opts` to the unbound device `dev`: `LOOP_CONFIGURE`, or on kernels
/// without it `LOOP_SET_FD` + `LOOP_SET_STATUS64` (+ block size, direct I/O).
fn configure(
    dev: BorrowedFd<'_>,
    device: &Path,
    backing: &Backing,
    opts: &AttachOptions,
    use_configure: bool,
) -> std::result::Result<(), Attempt> {
    let mut info = LoopInfo64 {
        lo_offset: opts.offset,
        lo_sizelimit: opts.size_limit,
        lo_flags: opts.flags().bits(),
        ..LoopInfo64::default()
    };
    info.set_file_name(backing.name.as_os_str().as_bytes());
    let backing_fd = backing.file.as_fd();

    let mut configure_refused = false;
    if use_configure && !NO_CONFIGURE.load(Ordering::Relaxed) {
        let mut cfg = LoopConfig {
            fd: u32::try_from(std::os::fd::AsRawFd::as_raw_fd(&backing_fd))
                .map_err(|_| Attempt::Fatal(sys_err("LOOP_CONFIGURE", device, Errno::EBADF)))?,
            block_size: opts.block_size.unwrap_or(0),
            info,
            ..LoopConfig::default()
        };
        let mut result = sys::loop_configure(dev, &cfg);
        if result == Err(Errno::EINVAL) && opts.direct_io {
            // Some kernels refuse direct I/O outright instead of falling back.
            cfg.info.lo_flags &= !LoopFlags::DIRECT_IO.bits();
            result = sys::loop_configure(dev, &cfg);
        }
        match result {
            Ok(()) => {
                if opts.direct_io {
                    enable_direct_io(dev, device);
                }
                return Ok(());
            }
            Err(Errno::EBUSY) => return Err(Attempt::Retry { busy: true }),
            // Unknown loop ioctls answer EINVAL; take the old path, which also
            // tells which setting the kernel refuses.
            Err(Errno::EINVAL) | Err(Errno::ENOTTY) => configure_refused = true,
            Err(e) => return Err(configure_error(device, backing, e).into()),
        }
    }

    match sys::loop_set_fd(dev, backing_fd) {
        Ok(()) => {}
        Err(Errno::EBUSY) => return Err(Attempt::Retry { busy: true }),
        Err(e) => return Err(configure_error(device, backing, e).into()),
    }
    let undo = |e: LoopError| {
        let _ = sys::loop_clr_fd(dev);
        Attempt::Fatal(e)
    };
    // READ_ONLY follows from the backing descriptor's mode; DIRECT_IO has its
    // own ioctl.
    info.lo_flags &= (LoopFlags::AUTOCLEAR | LoopFlags::PARTSCAN).bits();
    match while_busy(|| sys::loop_set_status64(dev, &info)) {
        Ok(()) => {}
        Err(Errno::EINVAL) => {
            return Err(undo(LoopError::InvalidOption {
                path: backing.given.clone(),
                reason: format!(
                    "offset {} / size limit {} refused by the loop driver",
                    opts.offset, opts.size_limit
                ),
            }))
        }
        Err(Errno::EBUSY | Errno::EAGAIN) => return Err(undo(busy_configuring(device))),
        Err(e) => return Err(undo(sys_err("LOOP_SET_STATUS64", device, e))),
    }
    if let Some(bs) = opts.block_size {
        match while_busy(|| sys::loop_set_block_size(dev, bs)) {
            Ok(()) => {}
            Err(Errno::EINVAL) => {
                return Err(undo(LoopError::InvalidOption {
                    path: backing.given.clone(),
                    reason: format!("block size {bs} refused by the loop driver"),
                }))
            }
            Err(Errno::EBUSY) => return Err(undo(busy_configuring(device))),
            Err(e) => return Err(undo(sys_err("LOOP_SET_BLOCK_SIZE", device, e))),
        }
    }
    if opts.direct_io {
        enable_direct_io(dev, device);
    }
    // CONFIGURE refused what the old ioctls accepted: the kernel lacks it.
    if configure_refused && !NO_CONFIGURE.swap(true, Ordering::Relaxed) {
        log::debug!("LOOP_CONFIGURE unavailable, using LOOP_SET_FD + LOOP_SET_STATUS64");
    }
    Ok(())
}

/// Repeat `op` while it fails with `EBUSY`/`EAGAIN`, for up to about a second.
///
/// On a device we have just bound, these come from someone holding it open
/// exclusively for a moment (newer kernels claim the device for
/// `LOOP_SET_BLOCK_SIZE`/`LOOP_SET_DIRECT_IO`) or, on older kernels, from
/// `LOOP_SET_STATUS64` finding cached pages it could not drop.
fn while_busy(
    mut op: impl FnMut() -> std::result::Result<(), Errno>,
) -> std::result::Result<(), Errno> {
    let start = Instant::now();
    let mut delay = Duration::from_micros(200);
    loop {
        match op() {
            Err(Errno::EBUSY | Errno::EAGAIN) if start.elapsed() < Duration::from_secs(1) => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

fn busy_configuring(device: &Path) -> LoopError {
    LoopError::DeviceBusy {
        device: device.into(),
        reason: "held exclusively by another user while it was being configured".into(),
    }
}

/// Switch direct I/O on if it is not on yet; where the backing filesystem (or
/// the offset) does not allow it, the device stays on buffered I/O.
fn enable_direct_io(dev: BorrowedFd<'_>, device: &Path) {
    let on = sys::loop_get_status64(dev)
        .map(|i| i.lo_flags & LoopFlags::DIRECT_IO.bits() != 0)
        .unwrap_or(false);
    if !on {
        if let Err(e) = while_busy(|| sys::loop_set_direct_io(dev, true)) {
            log::debug!(
                "{}: direct I/O not available ({e}), using buffered I/O",
                device.display()
            );
        }
    }
}

fn configure_error(device: &Path, backing: &Backing, e: Errno) -> LoopError {
    match e {
        Errno::EINVAL | Errno::EBADF => LoopError::InvalidBackingFile {
            path: backing.given.clone(),
            errno: e,
        },
        Errno::EPERM | Errno::EACCES => LoopError::PermissionDenied {
            path: device.into(),
        },
        e => sys_err("LOOP_CONFIGURE", device, e),
    }
}

/// An open handle on a bound loop device.
///
/// Dropping it closes the descriptor; that detaches the device only if it is
/// autoclear and this was its last user.
#[derive(Debug)]
pub struct LoopDevice {
    fd: OwnedFd,
    number: u32,
    path: PathBuf,
    backing_file: PathBuf,
    direct_io: bool,
    read_only: bool,
}

impl LoopDevice {
    /// Open the bound loop device at `device` (e.g. `/dev/loop3`).
    pub fn open(device: impl AsRef<Path>) -> Result<Self> {
        let path = device.as_ref();
        let file = match open_device_rw(path) {
            Ok(f) => f,
            Err(e) if io_errno(&e) == Errno::ENXIO => {
                return Err(LoopError::NotBound {
                    device: path.into(),
                })
            }
            Err(e) => return Err(device_open_error(path, &e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| sys_err("fstat", path, io_errno(&e)))?;
        if !meta.file_type().is_block_device() || major(meta.rdev()) != sys::LOOP_MAJOR {
            return Err(LoopError::NotALoopDevice {
                device: path.into(),
            });
        }
        let fd: OwnedFd = file.into();
        let info = match sys::loop_get_status64(fd.as_fd()) {
            Ok(info) => info,
            Err(Errno::ENXIO) => {
                return Err(LoopError::NotBound {
                    device: path.into(),
                })
            }
            Err(Errno::ENOTTY | Errno::EINVAL) => {
                return Err(LoopError::NotALoopDevice {
                    device: path.into(),
                })
            }
            Err(e) => return Err(sys_err("LOOP_GET_STATUS64", path, e)),
        };
        let status = LoopStatus::from_info(path.into(), &info);
        Ok(LoopDevice {
            fd,
            number: info.lo_number,
            path: path.into(),
            backing_file: status.backing_file.clone(),
            direct_io: status.direct_io(),
            read_only: status.read_only(),
        })
    }

    /// N of `/dev/loopN`.
    pub fn number(&self) -> u32 {
        self.number
    }
    /// The device node.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The backing file (absolute path at attach time).
    pub fn backing_file(&self) -> &Path {
        &self.backing_file
    }
    /// Whether direct I/O was on when the handle was made (an attach that asked
    /// for direct I/O on a filesystem refusing it ends up with `false`).
    pub fn direct_io(&self) -> bool {
        self.direct_io
    }
    /// Whether the device refuses writes.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Current status from `LOOP_GET_STATUS64`.
    pub fn status(&self) -> Result<LoopStatus> {
        sys::loop_get_status64(self.fd.as_fd())
            .map(|info| LoopStatus::from_info(self.path.clone(), &info))
            .map_err(|e| self.map_errno("LOOP_GET_STATUS64", e))
    }

    /// `LOOP_SET_CAPACITY`: take up the backing file's new size.
    pub fn set_capacity(&self) -> Result<()> {
        sys::loop_set_capacity(self.fd.as_fd()).map_err(|e| self.map_errno("LOOP_SET_CAPACITY", e))
    }

    /// Size of the device in bytes (`BLKGETSIZE64`).
    pub fn size(&self) -> Result<u64> {
        sys::blk_get_size64(self.fd.as_fd()).map_err(|e| self.map_errno("BLKGETSIZE64", e))
    }

    /// Whether the block layer marks the device read-only (`BLKROGET`).
    pub fn is_read_only(&self) -> Result<bool> {
        sys::blk_ro_get(self.fd.as_fd()).map_err(|e| self.map_errno("BLKROGET", e))
    }

    /// Detach, waiting up to [`DEFAULT_DETACH_GRACE`] for other users to close
    /// the device. See [`LoopDevice::detach_within`].
    pub fn detach(self) -> Result<()> {
        self.detach_within(DEFAULT_DETACH_GRACE)
    }

    /// Detach (`LOOP_CLR_FD`). The kernel finishes a detach when the last user
    /// closes the device; if other users still hold it after `grace`, this
    /// returns [`LoopError::DeviceBusy`] and the device will be detached when
    /// they close it. [`LoopError::NotBound`] if nothing is bound.
    pub fn detach_within(self, grace: Duration) -> Result<()> {
        let start = Instant::now();
        // Hold the device exclusively while detaching: binding needs an
        // exclusive claim, so no one can bind it between our LOOP_CLR_FD and
        // the checks below (kernels before 6.x clear synchronously inside
        // LOOP_CLR_FD, leaving our descriptor on an unbound device that
        // another attach could take). A concurrent attach that opened the
        // device before we bound it holds such a claim for a moment only.
        let mut delay = Duration::from_micros(100);
        let exclusive = loop {
            match self.reopen_exclusive() {
                Ok(f) => break Some(OwnedFd::from(f)),
                Err(Errno::EBUSY) if start.elapsed() < grace => {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_millis(20));
                }
                Err(Errno::EBUSY) => break None,
                Err(Errno::ENXIO) => return Err(LoopError::NotBound { device: self.path }),
                Err(e) => return Err(sys_err("open O_EXCL", self.path, e)),
            }
        };
        let LoopDevice { fd, path, .. } = self;
        let Some(exclusive) = exclusive else {
            // Held exclusively (mounted, in a device-mapper table, ...): the
            // binding is ours, so ask for the detach on its last close.
            return match sys::loop_clr_fd(fd.as_fd()) {
                Ok(()) => Err(LoopError::DeviceBusy {
                    device: path,
                    reason: "held exclusively by another user (mounted or in use by \
                             device-mapper?); it will be detached when released"
                        .into(),
                }),
                Err(Errno::ENXIO) => Err(LoopError::NotBound { device: path }),
                Err(e) => Err(sys_err("LOOP_CLR_FD", path, e)),
            };
        };
        drop(fd);
        let fd = exclusive.as_fd();
        match sys::loop_clr_fd(fd) {
            Ok(()) => {}
            Err(Errno::ENXIO) => return Err(LoopError::NotBound { device: path }),
            Err(e) => return Err(sys_err("LOOP_CLR_FD", path, e)),
        }
        let mut delay = Duration::from_micros(200);
        loop {
            // With our descriptor the only one left, LOOP_CLR_FD has detached
            // the device or put it into rundown (finished when `exclusive` is
            // dropped), and status reads ENXIO. Otherwise other users hold it
            // open and the kernel has set autoclear.
            match sys::loop_get_status64(fd) {
                Err(Errno::ENXIO) => return Ok(()),
                Err(e) => return Err(sys_err("LOOP_GET_STATUS64", path, e)),
                Ok(_) => {}
            }
            let waited = start.elapsed();
            if waited >= grace {
                return Err(LoopError::DeviceBusy {
                    device: path,
                    reason: "held open by another user; it will be detached \
                             when the last user closes it"
                        .into(),
                });
            }
            std::thread::sleep(delay.min(grace - waited));
            delay = (delay * 2).min(Duration::from_millis(50));
            // Still ours: no one can have bound it while we hold the claim.
            match sys::loop_clr_fd(fd) {
                Ok(()) | Err(Errno::ENXIO) => {}
                Err(e) => return Err(sys_err("LOOP_CLR_FD", path, e)),
            }
        }
    }

    /// A second, exclusive descriptor on the same device: through
    /// `/proc/self/fd` (the same inode even if the node was renamed), or the
    /// path where /proc is not mounted.
    fn reopen_exclusive(&self) -> std::result::Result<File, Errno> {
        let via_proc = PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&self.fd)
        ));
        let path = if via_proc.exists() {
            via_proc
        } else {
            self.path.clone()
        };
        let open = |write: bool| {
            OpenOptions::new()
                .read(true)
                .write(write)
                .custom_flags(nix::libc::O_EXCL)
                .open(&path)
        };
        match open(true) {
            Err(e) if matches!(io_errno(&e), Errno::EROFS | Errno::EACCES | Errno::EPERM) => {
                open(false)
            }
            r => r,
        }
        .map_err(|e| io_errno(&e))
    }

    fn map_errno(&self, op: &'static str, e: Errno) -> LoopError {
        match e {
            Errno::ENXIO => LoopError::NotBound {
                device: self.path.clone(),
            },
            e => sys_err(op, self.path.clone(), e),
        }
    }
}

impl AsFd for LoopDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Bind `file` to a free loop device (opens [`LoopControl`] for one call).
pub fn attach(file: impl AsRef<Path>, opts: &AttachOptions) -> Result<LoopDevice> {
    LoopControl::open()?.attach(file, opts)
}

/// Detach the loop device at `device`; [`LoopError::NotBound`] if nothing is
/// bound to it.
pub fn detach(device: impl AsRef<Path>) -> Result<()> {
    LoopDevice::open(device)?.detach()
}

/// Every bound loop device with its backing file, by device number.
pub fn list() -> Result<Vec<LoopStatus>> {
    let sysfs = Path::new("/sys/block").is_dir();
    let mut out = Vec::new();
    for n in loop_numbers() {
        // Skip unbound devices without opening them: sysfs shows `loop/` only
        // while a file is bound.
        if sysfs && !Path::new(&format!("/sys/block/loop{n}/loop")).exists() {
            continue;
        }
        let device = PathBuf::from(format!("/dev/loop{n}"));
        let Ok(file) = File::open(&device) else {
            continue;
        };
        match sys::loop_get_status64(file.as_fd()) {
            Ok(info) => out.push(LoopStatus::from_info(device, &info)),
            Err(Errno::ENXIO) => {}
            Err(e) => return Err(sys_err("LOOP_GET_STATUS64", device, e)),
        }
    }
    Ok(out)
}

/// Every bound loop device whose backing file is `file` (same device and inode,
/// whatever name it was attached under).
pub fn find_all_by_file(file: impl AsRef<Path>) -> Result<Vec<LoopStatus>> {
    let path = file.as_ref();
    let meta = fs::metadata(path).map_err(|e| stat_error(path, &e))?;
    let (dev, ino) = (meta.dev(), meta.ino());
    Ok(list()?
        .into_iter()
        .filter(|s| s.backing_device == dev && s.backing_inode == ino)
        .collect())
}

/// The first bound loop device whose backing file is `file`, opened.
pub fn find_by_file(file: impl AsRef<Path>) -> Result<Option<LoopDevice>> {
    let path = file.as_ref();
    for status in find_all_by_file(path)? {
        let dev = match LoopDevice::open(&status.device) {
            Ok(d) => d,
            Err(LoopError::NotBound { .. } | LoopError::DeviceNotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        // It may have been rebound to another file in between.
        if let Ok(now) = dev.status() {
            if now.backing_device == status.backing_device
                && now.backing_inode == status.backing_inode
            {
                return Ok(Some(dev));
            }
        }
    }
    Ok(None)
}

/// Numbers N of existing loop devices, from `/sys/block` (or `/dev` without sysfs).
fn loop_numbers() -> Vec<u32> {
    let parse = |dir: &str| -> Option<Vec<u32>> {
        let rd = fs::read_dir(dir).ok()?;
        Some(
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()?
                        .strip_prefix("loop")?
                        .parse::<u32>()
                        .ok()
                })
                .collect(),
        )
    };
    let mut v = parse("/sys/block")
        .or_else(|| parse("/dev"))
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// An existing device, not in `skip`, that sysfs shows unbound.
fn other_unbound(skip: &HashSet<u32>) -> Option<u32> {
    if !Path::new("/sys/block").is_dir() {
        return None;
    }
    loop_numbers()
        .into_iter()
        .find(|n| !skip.contains(n) && !Path::new(&format!("/sys/block/loop{n}/loop")).exists())
}

/// `major:minor` of loopN from sysfs.
fn sysfs_dev(number: u32) -> Option<(u64, u64)> {
    let s = fs::read_to_string(format!("/sys/block/loop{number}/dev")).ok()?;
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The backing file path sysfs shows while loopN is bound.
fn sysfs_backing_file(number: u32) -> Option<PathBuf> {
    let mut b = fs::read(format!("/sys/block/loop{number}/loop/backing_file")).ok()?;
    if b.last() == Some(&b'\n') {
        b.pop();
    }
    (!b.is_empty())
        .then(|| PathBuf::from(std::ffi::OsString::from(std::ffi::OsStr::from_bytes(&b))))
}

fn open_device_rw(path: &Path) -> std::io::Result<File> {
    match OpenOptions::new().read(true).write(true).open(path) {
        Err(e) if matches!(io_errno(&e), Errno::EROFS | Errno::EACCES | Errno::EPERM) => {
            File::open(path)
        }
        r => r,
    }
}

fn device_open_error(path: &Path, e: &std::io::Error) -> LoopError {
    match io_errno(e) {
        Errno::ENOENT | Errno::ENODEV => LoopError::DeviceNotFound {
            device: path.into(),
        },
        Errno::ENXIO => LoopError::NotBound {
            device: path.into(),
        },
        Errno::EACCES | Errno::EPERM => LoopError::PermissionDenied { path: path.into() },
        e => sys_err("open", path, e),
    }
}

fn stat_error(path: &Path, e: &std::io::Error) -> LoopError {
    match io_errno(e) {
        Errno::ENOENT | Errno::ENOTDIR => LoopError::FileNotFound { path: path.into() },
        Errno::EACCES | Errno::EPERM => LoopError::PermissionDenied { path: path.into() },
        e => sys_err("stat", path, e),
    }
}

fn open_error(path: &Path, e: &std::io::Error, writing: bool) -> LoopError {
    match io_errno(e) {
        Errno::ENOENT | Errno::ENOTDIR => LoopError::FileNotFound { path: path.into() },
        Errno::EISDIR => LoopError::IsDirectory { path: path.into() },
        errno @ (Errno::EACCES | Errno::EPERM | Errno::EROFS | Errno::ETXTBSY)
            if writing && File::open(path).is_ok() =>
        {
            LoopError::ReadOnlyFile {
                path: path.into(),
                errno,
            }
        }
        Errno::EACCES | Errno::EPERM | Errno::EROFS => {
            LoopError::PermissionDenied { path: path.into() }
        }
        e => sys_err("open", path, e),
    }
}

fn open_backing(path: &Path, read_only: bool) -> Result<Backing> {
    let meta = fs::metadata(path).map_err(|e| stat_error(path, &e))?;
    if meta.is_dir() {
        return Err(LoopError::IsDirectory { path: path.into() });
    }
    if !meta.is_file() && !meta.file_type().is_block_device() {
        return Err(LoopError::NotAFile { path: path.into() });
    }
    let file = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(path)
        .map_err(|e| open_error(path, &e, !read_only))?;
    let name = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(Backing {
        file,
        given: path.into(),
        name,
    })
}

/// Pause between attach attempts: none after the first loss, then growing
/// sleeps with jitter so racing callers spread out.
fn backoff(attempt: u32) {
    if attempt == 0 {
        return;
    }
    if attempt < 4 {
        std::thread::yield_now();
        return;
    }
    let jitter = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0),
    ) % 200;
    let base = u64::from(attempt.min(50)) * 20;
    std::thread::sleep(Duration::from_micros(base + jitter));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_size_validation() {
        let p = Path::new("/x");
        assert!(AttachOptions::new().block_size(4096).validate(p).is_ok());
        assert!(AttachOptions::new().block_size(512).validate(p).is_ok());
        for bad in [0, 256, 1000, 131072] {
            assert!(matches!(
                AttachOptions::new().block_size(bad).validate(p),
                Err(LoopError::InvalidOption { .. })
            ));
        }
    }

    #[test]
    fn flags_from_options() {
        let o = AttachOptions::new().read_only(true).autoclear(true);
        assert_eq!(o.flags(), LoopFlags::READ_ONLY | LoopFlags::AUTOCLEAR);
        assert_eq!(
            AttachOptions::new().direct_io(true).flags(),
            LoopFlags::DIRECT_IO
        );
    }

    #[test]
    fn status_serializes_flags_as_booleans() {
        let s = LoopStatus {
            number: 3,
            device: "/dev/loop3".into(),
            backing_file: "/tmp/f".into(),
            file_name: "/tmp/f".into(),
            backing_device: 1,
            backing_inode: 2,
            offset: 0,
            size_limit: 0,
            flags: LoopFlags::AUTOCLEAR,
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["device"], "/dev/loop3");
        assert_eq!(v["autoclear"], true);
        assert_eq!(v["read_only"], false);
    }

    #[test]
    fn sparse_file_grows_never_shrinks() {
        let dir = std::env::temp_dir().join(format!("dmthin-sparse-{}", std::process::id()));
        let f = dir.join("sub/file");
        assert_eq!(create_sparse_file(&f, 1 << 20).unwrap(), 1 << 20);
        assert_eq!(create_sparse_file(&f, 4096).unwrap(), 1 << 20);
        assert_eq!(create_sparse_file(&f, 2 << 20).unwrap(), 2 << 20);
        let meta = fs::metadata(&f).unwrap();
        assert_eq!(meta.len(), 2 << 20);
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(dir.join("sub")).unwrap().mode() & 0o777, 0o700);
        assert!(
            meta.blocks() < 64,
            "file is not sparse: {} blocks",
            meta.blocks()
        );
        assert!(matches!(
            create_sparse_file(dir.join("sub"), 1),
            Err(LoopError::IsDirectory { .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
