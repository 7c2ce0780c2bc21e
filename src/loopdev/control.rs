//! `/dev/loop-control`: free-device lookup, device creation and removal, and
//! attaching a file with the retry that racing attachers need.

use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};

use super::backing::{open_backing, Backing};
use super::configure::configure;
use super::device::{open_device_rw, LoopDevice};
use super::error::{device_open_error, io_errno, sys as sys_err, LoopError, Result};
use super::options::{AttachOptions, LoopFlags};
use super::scan::{loop_numbers, other_unbound, sysfs_dev};
use super::sys;

/// Where the loop control device lives.
pub const LOOP_CONTROL: &str = "/dev/loop-control";

/// How many devices [`LoopControl::attach`] tries before giving up.
const MAX_ATTACH_ATTEMPTS: u32 = 256;

/// After this many `EBUSY`s from one device within one attach, stop taking it
/// from `LOOP_CTL_GET_FREE` (the device may be unbound yet refuse binding
/// because someone holds it exclusively) and use another unbound device,
/// creating one only when there is none.
const STUCK_AFTER: u32 = 3;

/// An open handle on `/dev/loop-control`.
#[derive(Debug)]
pub struct LoopControl {
    ctl: OwnedFd,
    dev_dir: PathBuf,
    use_configure: bool,
}

/// Result of one attach attempt on one device.
pub(super) enum Attempt {
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

/// Pause between attach attempts: none after the first loss, then growing
/// sleeps with jitter so racing callers spread out.
///
/// Not [`crate::retry::Backoff`]: that paces retries of one busy device in
/// milliseconds, while each attempt here takes another free device, so the
/// pause only has to break a tie between racing attachers (a yield, then
/// tens of microseconds with jitter).
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
