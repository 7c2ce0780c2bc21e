//! udev synchronisation: libdm's cookie protocol.
//!
//! With udev running, resume, remove and rename carry a cookie: a SysV
//! semaphore that udev's `95-dm-notify.rules` decrements once it has processed
//! the uevent. We wait for it with a timeout, so a dead udev costs a bounded
//! delay and an error, never a hang. The semaphore calls are in [`super::sys`].

use super::error::{DmError, Result};
use super::sys;
use bitflags::bitflags;
use nix::errno::Errno;
use nix::libc;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

/// Socket whose presence means udev is running.
pub(crate) const UDEV_CONTROL: &str = "/run/udev/control";
/// libdm's cookie magic, the high 16 bits of every cookie semaphore key.
pub(crate) const COOKIE_MAGIC: u32 = 0x0D4D;

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
pub(crate) fn udev_running() -> bool {
    Path::new(UDEV_CONTROL).exists()
}

/// A udev cookie: a SysV semaphore udev decrements once per processed uevent.
#[derive(Debug)]
pub(crate) struct Cookie {
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

impl Cookie {
    /// Creates a fresh cookie semaphore with value 1.
    pub(crate) fn create() -> Result<Cookie> {
        for _ in 0..64 {
            let low = random_u16();
            if low == 0 {
                continue;
            }
            let value = (COOKIE_MAGIC << 16) | u32::from(low);
            let semid = match sys::sem_create(value) {
                Ok(id) => id,
                Err(Errno::EEXIST) => continue,
                Err(e) => {
                    return Err(DmError::Udev(format!(
                        "cannot create cookie semaphore: {e} ({})",
                        e.desc()
                    )))
                }
            };
            let mut cookie = Cookie {
                semid,
                value,
                removed: false,
            };
            if let Err(e) = sys::sem_set(semid, 1) {
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
    pub(crate) fn event_nr(&self, flags: UdevFlags) -> u32 {
        (u32::from(flags.bits()) << 16) | (self.value & 0xffff)
    }

    /// The full cookie value (with the magic prefix).
    #[cfg(test)]
    fn value(&self) -> u32 {
        self.value
    }

    /// Counts one more uevent to wait for; call before the ioctl.
    pub(crate) fn inc(&self) -> Result<()> {
        sys::sem_op(self.semid, 1, 0, None)
            .map_err(|e| DmError::Udev(format!("cookie {:#x}: increment failed: {e}", self.value)))
    }

    /// Takes back one count (the ioctl failed or generated no uevent).
    pub(crate) fn dec(&self) -> Result<()> {
        sys::sem_op(self.semid, -1, libc::IPC_NOWAIT as i16, None)
            .map_err(|e| DmError::Udev(format!("cookie {:#x}: decrement failed: {e}", self.value)))
    }

    /// Drops the initial count and waits until udev has processed every uevent,
    /// at most `timeout`. The semaphore is removed in every case.
    pub(crate) fn wait(mut self, timeout: Duration) -> Result<()> {
        let result = self.dec().and_then(|()| {
            let deadline = std::time::Instant::now() + timeout;
            loop {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match sys::sem_op(self.semid, 0, 0, Some(left)) {
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
            // Nothing to do if it fails: the id is ours and goes unused.
            let _ = sys::sem_remove(self.semid);
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
        assert!(
            sys::sem_get(semid).is_err(),
            "semaphore must be gone after wait"
        );
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
}
