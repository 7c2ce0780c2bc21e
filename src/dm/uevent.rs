//! Waiting for udev without a cookie ([`NodeMode::UdevWatch`]): udev's
//! netlink monitor.
//!
//! Before a command that makes a uevent, [`Monitor::open`] binds two
//! `NETLINK_KOBJECT_UEVENT` sockets: group 1 gets the kernel's uevents, group
//! 2 the events udevd has finished (rules run, symlinks and database written,
//! `RUN` programs done), each with the kernel's `SEQNUM`. After the ioctl the
//! kernel's uevent is already queued on the first socket (it is sent inside
//! the ioctl), which gives its sequence number; [`Monitor::wait`] then reads
//! the second until udev reports that same number, at most `timeout`. No
//! semaphore, and no rule has to run a program to tell us.
//!
//! [`NodeMode::UdevWatch`]: super::NodeMode::UdevWatch

use super::abi::Dev;
use super::cookie::UdevFlags;
use super::error::{DmError, Result};
use nix::errno::Errno;
use nix::sys::socket::{
    bind, recv, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::TimeVal;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

/// Multicast group of the kernel's uevents.
const GROUP_KERNEL: u32 = 1;
/// Multicast group of the events udevd has processed (libudev's "udev" monitor).
const GROUP_UDEV: u32 = 2;
/// Prefix of a message from udevd (libudev's monitor header).
const UDEV_PREFIX: &[u8; 8] = b"libudev\0";
/// The header's magic, big-endian on the wire.
const UDEV_MAGIC: u32 = 0xfeed_cafe;
/// Receive buffer asked for (udevd's own is 128 MiB); less is fine.
const RCVBUF: usize = 4 << 20;
/// udevd's flag file: present while events are queued or running.
const UDEV_QUEUE: &str = "/run/udev/queue";

/// One uevent, as much of it as we match on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Uevent {
    pub(crate) action: String,
    pub(crate) dev: Option<Dev>,
    pub(crate) devname: String,
    pub(crate) seqnum: u64,
}

fn parse_props<'a>(props: impl Iterator<Item = &'a [u8]>) -> Option<Uevent> {
    let (mut action, mut major, mut minor, mut devname, mut seqnum) =
        (None, None, None, None, None);
    for kv in props {
        let Ok(kv) = std::str::from_utf8(kv) else {
            continue;
        };
        match kv.split_once('=') {
            Some(("ACTION", v)) => action = Some(v.to_string()),
            Some(("MAJOR", v)) => major = v.parse().ok(),
            Some(("MINOR", v)) => minor = v.parse().ok(),
            Some(("DEVNAME", v)) => devname = Some(v.trim_start_matches("/dev/").to_string()),
            Some(("SEQNUM", v)) => seqnum = v.parse().ok(),
            _ => {}
        }
    }
    Some(Uevent {
        action: action?,
        dev: major.zip(minor).map(|(a, i)| Dev::new(a, i)),
        devname: devname.unwrap_or_default(),
        seqnum: seqnum?,
    })
}

/// A kernel uevent: `ACTION@DEVPATH\0` then `KEY=VALUE\0` pairs.
pub(crate) fn parse_kernel(msg: &[u8]) -> Option<Uevent> {
    if msg.starts_with(UDEV_PREFIX) {
        return None;
    }
    let mut parts = msg.split(|&b| b == 0);
    let head = parts.next()?;
    if !head.contains(&b'@') {
        return None;
    }
    parse_props(parts.filter(|p| !p.is_empty()))
}

/// A udevd message: libudev's header (`"libudev\0"`, magic, header size,
/// properties offset and length, filter hashes) and the properties as
/// `KEY=VALUE\0` pairs.
pub(crate) fn parse_udev(msg: &[u8]) -> Option<Uevent> {
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(msg.get(at..at + 4)?.try_into().ok()?))
    };
    if !msg.starts_with(UDEV_PREFIX) || word(8).map(u32::from_be) != Some(UDEV_MAGIC) {
        return None;
    }
    let off = word(16)? as usize;
    let len = word(20)? as usize;
    let props = msg.get(off..off.checked_add(len)?)?;
    parse_props(props.split(|&b| b == 0).filter(|p| !p.is_empty()))
}

/// The `DM_UDEV_*_FLAG` properties udev has recorded for `dev` (its database
/// entry `/run/udev/data/b<major>:<minor>`), or `None` without an entry.
/// These are what the dm rules import for an event that carries no cookie.
pub(crate) fn recorded_flags(dev: Dev) -> Option<UdevFlags> {
    let db =
        std::fs::read_to_string(format!("/run/udev/data/b{}:{}", dev.major, dev.minor)).ok()?;
    Some(flags_from_db(&db))
}

fn flags_from_db(db: &str) -> UdevFlags {
    const NAMES: [(&str, UdevFlags); 7] = [
        ("DISABLE_DM_RULES", UdevFlags::DISABLE_DM_RULES),
        (
            "DISABLE_SUBSYSTEM_RULES",
            UdevFlags::DISABLE_SUBSYSTEM_RULES,
        ),
        ("DISABLE_DISK_RULES", UdevFlags::DISABLE_DISK_RULES),
        ("DISABLE_OTHER_RULES", UdevFlags::DISABLE_OTHER_RULES),
        ("LOW_PRIORITY", UdevFlags::LOW_PRIORITY),
        (
            "DISABLE_LIBRARY_FALLBACK",
            UdevFlags::DISABLE_LIBRARY_FALLBACK,
        ),
        ("PRIMARY_SOURCE", UdevFlags::PRIMARY_SOURCE),
    ];
    let mut flags = UdevFlags::empty();
    for line in db.lines() {
        let Some(name) = line
            .strip_prefix("E:DM_UDEV_")
            .and_then(|l| l.strip_suffix("_FLAG=1"))
        else {
            continue;
        };
        if let Some((_, f)) = NAMES.iter().find(|(n, _)| *n == name) {
            flags |= *f;
        }
    }
    flags
}

fn open_group(group: u32) -> Result<OwnedFd> {
    let fail = |what: &str, e: Errno| DmError::Udev(format!("udev monitor: {what}: {e}"));
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkKObjectUEvent,
    )
    .map_err(|e| fail("socket", e))?;
    if setsockopt(&fd, sockopt::RcvBufForce, &RCVBUF).is_err() {
        let _ = setsockopt(&fd, sockopt::RcvBuf, &RCVBUF);
    }
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, group)).map_err(|e| fail("bind", e))?;
    Ok(fd)
}

/// The two sockets, bound before the command.
#[derive(Debug)]
pub(crate) struct Monitor {
    kernel: OwnedFd,
    udev: OwnedFd,
}

impl Monitor {
    /// Binds both sockets; call before the ioctl.
    pub(crate) fn open() -> Result<Monitor> {
        Ok(Monitor {
            kernel: open_group(GROUP_KERNEL)?,
            udev: open_group(GROUP_UDEV)?,
        })
    }

    /// The sequence numbers of the kernel's `action` uevents for dm devices
    /// (for `dev` when known) sent since [`Monitor::open`].
    fn kernel_seqnums(&self, action: &str, dev: Option<Dev>) -> Vec<u64> {
        let mut buf = vec![0u8; 8192];
        let mut found = Vec::new();
        loop {
            match recv(self.kernel.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => {
                    if let Some(ev) = parse_kernel(&buf[..n]) {
                        let ours = match dev {
                            Some(d) => ev.dev == Some(d),
                            None => ev.devname.starts_with("dm-"),
                        };
                        if ev.action == action && ours {
                            found.push(ev.seqnum);
                        }
                    }
                }
                Err(Errno::EINTR) | Err(Errno::ENOBUFS) => continue,
                Err(_) => return found,
            }
        }
    }

    /// Waits until udevd has processed the kernel's first `action` uevent
    /// for `dev` (every dm device's, when `dev` is unknown) sent since
    /// [`Monitor::open`], at most `timeout`.
    pub(crate) fn wait(&self, action: &str, dev: Option<Dev>, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut pending = self.kernel_seqnums(action, dev);
        if dev.is_some() {
            // dm's own uevent comes first; a remove is followed by the disk's
            // (del_gendisk), which finds the links and the database entry
            // gone already. The first is the one libdm's cookie covers.
            pending.sort_unstable();
            pending.truncate(1);
        }
        if pending.is_empty() {
            // The uevent did not reach this socket (another network namespace
            // sees none): nothing to match udev's reports against.
            log::warn!("no {action} uevent seen for {dev:?}; not waiting for udev");
            return Ok(());
        }
        let mut buf = vec![0u8; 16384];
        let timed_out = || {
            DmError::Udev(format!(
                "udev did not process the {action} event of {} within {timeout:?} (is udevd alive?)",
                dev.map_or_else(|| "a dm device".to_string(), |d| d.to_string())
            ))
        };
        while !pending.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out());
            }
            let tv = TimeVal::new(left.as_secs() as _, left.subsec_micros().max(1) as _);
            let _ = setsockopt(&self.udev, sockopt::ReceiveTimeout, &tv);
            match recv(self.udev.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(n) => {
                    if let Some(ev) = parse_udev(&buf[..n]) {
                        pending.retain(|&s| s != ev.seqnum);
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return Err(timed_out()),
                Err(Errno::ENOBUFS) => {
                    // Reports were dropped, ours maybe: wait for udevd's
                    // queue to drain instead.
                    return wait_queue_empty(deadline).map_err(|()| timed_out());
                }
                Err(e) => return Err(DmError::Udev(format!("udev monitor: recv: {e}"))),
            }
        }
        Ok(())
    }
}

fn wait_queue_empty(deadline: Instant) -> std::result::Result<(), ()> {
    while Path::new(UDEV_QUEUE).exists() {
        if Instant::now() >= deadline {
            return Err(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
