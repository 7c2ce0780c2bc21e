//! udev synchronisation (libdm's cookie protocol) and device nodes.
//!
//! With udev running, resume, remove and rename carry a cookie: a SysV
//! semaphore that udev's `95-dm-notify.rules` decrements once it has processed
//! the uevent. We wait for it with a timeout, so a dead udev costs a bounded
//! delay and an error, never a hang. Without udev we create and remove
//! `/dev/mapper/<name>` ourselves, as libdm does.

use super::abi::{Dev, MAPPER_DIR};
use super::error::{DmError, Result};
use bitflags::bitflags;
use nix::errno::Errno;
use nix::libc;
use nix::sys::stat::{self, Mode, SFlag};
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Socket whose presence means udev is running.
pub const UDEV_CONTROL: &str = "/run/udev/control";
/// libdm's cookie magic, the high 16 bits of every cookie semaphore key.
pub const COOKIE_MAGIC: u32 = 0x0D4D;

bitflags! {
    /// `DM_UDEV_*` flags carried in the high 16 bits of the cookie.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct UdevFlags: u16 {
        /// Skip the dm rules (no /dev/mapper symlink).
        const DISABLE_DM_RULES = 0x01;
        /// Skip subsystem rules (LVM and the like).
        const DISABLE_SUBSYSTEM_RULES = 0x02;
        /// Skip disk rules (blkid probing, by-id links).
        const DISABLE_DISK_RULES = 0x04;
        /// Skip all other rules.
        const DISABLE_OTHER_RULES = 0x08;
        /// Low-priority event: rules may skip it.
        const LOW_PRIORITY = 0x10;
        /// The caller will not create nodes itself; udev must.
        const DISABLE_LIBRARY_FALLBACK = 0x20;
        /// This event comes straight from the device's owner.
        const PRIMARY_SOURCE = 0x40;
    }
}

impl UdevFlags {
    /// Flags for a device nobody should probe or mount (a pool or an internal
    /// device): udev still creates its node but runs no blkid and no other rules,
    /// so its probes cannot hold the device open when we remove it.
    pub const PRIVATE: UdevFlags = UdevFlags::DISABLE_SUBSYSTEM_RULES
        .union(UdevFlags::DISABLE_DISK_RULES)
        .union(UdevFlags::DISABLE_OTHER_RULES);

    /// Flags for running beside udev without its sync
    /// ([`NodeMode::Bypass`](crate::dm::NodeMode::Bypass)): every dm rule set
    /// is told to skip the device (no /dev/mapper symlink, no blkid, no
    /// inotify watch), so the nodes are ours alone and no udev probe can
    /// hold the device.
    pub const BYPASS: UdevFlags = UdevFlags::DISABLE_DM_RULES.union(UdevFlags::PRIVATE);
}

/// Whether udev is running on this system.
pub fn udev_running() -> bool {
    Path::new(UDEV_CONTROL).exists()
}

/// Path of `/dev/mapper/<name>`.
pub fn mapper_path(name: &str) -> PathBuf {
    Path::new(MAPPER_DIR).join(name)
}

/// Path of `/dev/dm-<minor>`.
pub fn dm_node_path(dev: Dev) -> PathBuf {
    PathBuf::from(format!("/dev/dm-{}", dev.minor))
}

fn node_error(path: &Path, errno: Errno) -> DmError {
    DmError::Node {
        path: path.display().to_string(),
        errno,
    }
}

/// Makes sure `path` is a block node for `dev` (mode 0600), replacing a stale one.
pub fn ensure_block_node(path: &Path, dev: Dev) -> Result<()> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::MetadataExt;
        if meta.file_type().is_block_device() && Dev::from_dev_t(meta.rdev()) == dev {
            return Ok(());
        }
        if meta.file_type().is_symlink() {
            // udev's link; trust it when it points at the right device.
            if let Ok(target) = std::fs::metadata(path) {
                if target.file_type().is_block_device() && Dev::from_dev_t(target.rdev()) == dev {
                    return Ok(());
                }
            }
        }
        std::fs::remove_file(path)
            .map_err(|e| node_error(path, Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| node_error(parent, Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
    }
    stat::mknod(
        path,
        SFlag::S_IFBLK,
        Mode::from_bits_truncate(0o600),
        dev.to_dev_t(),
    )
    .map_err(|e| node_error(path, e))
}

/// Removes `/dev/mapper/<name>` if it exists; missing is fine.
pub fn remove_node(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(node_error(
            path,
            Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        )),
    }
}

/// A udev cookie: a SysV semaphore udev decrements once per processed uevent.
#[derive(Debug)]
pub struct Cookie {
    semid: i32,
    value: u32,
    removed: bool,
}

fn random_u16() -> u16 {
    let mut b = [0u8; 2];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok()
    {
        return u16::from_ne_bytes(b);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (t ^ std::process::id()) as u16
}

fn semop(
    semid: i32,
    op: i16,
    flags: i16,
    timeout: Option<Duration>,
) -> std::result::Result<(), Errno> {
    let mut sb = libc::sembuf {
        sem_num: 0,
        sem_op: op,
        sem_flg: flags,
    };
    let ts = timeout.map(|t| libc::timespec {
        // (`as _`: naming libc::time_t is deprecated on musl; the timeouts
        // are seconds, far below any time_t limit.)
        tv_sec: t.as_secs() as _,
        tv_nsec: t.subsec_nanos() as _,
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `sb` is a valid sembuf for one operation and `tsp` is null or points
    // to a live timespec; semtimedop (no libc wrapper in the libc crate) only
    // reads both during the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_semtimedop,
            semid,
            &mut sb as *mut libc::sembuf,
            1usize,
            tsp,
        )
    };
    if rc < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

impl Cookie {
    /// Creates a fresh cookie semaphore with value 1.
    pub fn create() -> Result<Cookie> {
        for _ in 0..64 {
            let low = random_u16();
            if low == 0 {
                continue;
            }
            let value = (COOKIE_MAGIC << 16) | u32::from(low);
            // SAFETY: semget takes plain integers and touches no memory of ours.
            let semid = unsafe {
                libc::semget(
                    value as libc::key_t,
                    1,
                    0o600 | libc::IPC_CREAT | libc::IPC_EXCL,
                )
            };
            if semid < 0 {
                let e = Errno::last();
                if e == Errno::EEXIST {
                    continue;
                }
                return Err(DmError::Udev(format!(
                    "cannot create cookie semaphore: {e} ({})",
                    e.desc()
                )));
            }
            // SAFETY: SETVAL takes an int argument; semid is the semaphore just created.
            let rc = unsafe { libc::semctl(semid, 0, libc::SETVAL, 1 as libc::c_int) };
            let mut cookie = Cookie {
                semid,
                value,
                removed: false,
            };
            if rc < 0 {
                let e = Errno::last();
                cookie.remove();
                return Err(DmError::Udev(format!(
                    "cannot initialise cookie semaphore: {e}"
                )));
            }
            return Ok(cookie);
        }
        Err(DmError::Udev("no free cookie value after 64 tries".into()))
    }

    /// The `event_nr` to send with the ioctl: flags in the high half, cookie in the low.
    pub fn event_nr(&self, flags: UdevFlags) -> u32 {
        (u32::from(flags.bits()) << 16) | (self.value & 0xffff)
    }

    /// The full cookie value (with the magic prefix).
    pub fn value(&self) -> u32 {
        self.value
    }

    /// Counts one more uevent to wait for; call before the ioctl.
    pub fn inc(&self) -> Result<()> {
        semop(self.semid, 1, 0, None)
            .map_err(|e| DmError::Udev(format!("cookie {:#x}: increment failed: {e}", self.value)))
    }

    /// Takes back one count (the ioctl failed or generated no uevent).
    pub fn dec(&self) -> Result<()> {
        semop(self.semid, -1, libc::IPC_NOWAIT as i16, None)
            .map_err(|e| DmError::Udev(format!("cookie {:#x}: decrement failed: {e}", self.value)))
    }

    /// Drops the initial count and waits until udev has processed every uevent,
    /// at most `timeout`. The semaphore is removed in every case.
    pub fn wait(mut self, timeout: Duration) -> Result<()> {
        let result = self.dec().and_then(|()| {
            let deadline = std::time::Instant::now() + timeout;
            loop {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match semop(self.semid, 0, 0, Some(left)) {
                    Ok(()) => return Ok(()),
                    Err(Errno::EINTR) if !left.is_zero() => continue,
                    Err(Errno::EAGAIN) | Err(Errno::EINTR) => {
                        return Err(DmError::Udev(format!(
                            "udev did not process the events of cookie {:#x} within {:?} (is udevd alive?)",
                            self.value, timeout
                        )))
                    }
                    Err(e) => return Err(DmError::Udev(format!("waiting on cookie {:#x}: {e}", self.value))),
                }
            }
        });
        self.remove();
        result
    }

    fn remove(&mut self) {
        if !self.removed {
            // SAFETY: IPC_RMID takes no argument pointer; semid is ours.
            unsafe { libc::semctl(self.semid, 0, libc::IPC_RMID) };
            self.removed = true;
        }
    }
}

impl Drop for Cookie {
    fn drop(&mut self) {
        self.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_counts_and_is_removed() {
        let cookie = match Cookie::create() {
            Ok(c) => c,
            Err(e) => panic!("SysV semaphores should work on the host: {e}"),
        };
        assert_eq!(cookie.value() >> 16, COOKIE_MAGIC);
        assert_eq!(cookie.event_nr(UdevFlags::PRIMARY_SOURCE) >> 16, 0x40);
        assert_eq!(cookie.event_nr(UdevFlags::empty()), cookie.value() & 0xffff);
        cookie.inc().unwrap();
        cookie.dec().unwrap(); // as if the ioctl generated no uevent
        let semid = cookie.semid;
        cookie.wait(Duration::from_millis(100)).unwrap();
        // SAFETY: querying a removed id only returns an error.
        let rc = unsafe { libc::semctl(semid, 0, libc::GETVAL) };
        assert!(rc < 0, "semaphore must be gone after wait");
    }

    #[test]
    fn wait_times_out_when_udev_never_answers() {
        let cookie = Cookie::create().unwrap();
        cookie.inc().unwrap(); // one uevent nobody will process
        let start = std::time::Instant::now();
        let err = cookie.wait(Duration::from_millis(200)).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(err.to_string().contains("did not process"), "{err}");
    }

    #[test]
    fn node_helpers_create_and_replace() {
        let dir = std::env::temp_dir().join(format!("dmthin-node-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("n");
        ensure_block_node(&p, Dev::new(7, 200)).unwrap();
        ensure_block_node(&p, Dev::new(7, 201)).unwrap();
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&p).unwrap();
        assert!(meta.file_type().is_block_device());
        assert_eq!(Dev::from_dev_t(meta.rdev()), Dev::new(7, 201));
        remove_node(&p).unwrap();
        remove_node(&p).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
