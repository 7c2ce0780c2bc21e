//! The options of [`Control`](super::Control)'s commands.

use super::cookie::UdevFlags;
use super::names::NamePolicy;
use std::time::Duration;

/// Who makes `/dev/mapper/<name>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeMode {
    /// udev does, with every rule (symlinks, blkid, `/dev/disk/by-*`, its
    /// database), and we wait until udevd reports the event processed on its
    /// netlink monitor (at most `timeout`): no cookie semaphore, and no rule
    /// runs `dmsetup`, except on a device's first activation, whose uevent
    /// must carry the dm rule flags (see [`UdevFlags`]). The default when
    /// udev runs. A remove retries `EBUSY` (udev's probe after a write) as in
    /// `Udev`. Where uevents cannot be seen (a network namespace of its own),
    /// nothing is waited for and a warning is logged.
    UdevWatch {
        /// Longest wait for udev per operation.
        timeout: Duration,
    },
    /// udev does, and we wait for it through libdm's cookies (at most
    /// `timeout`): every uevent carries a SysV semaphore that the rules
    /// release through `dmsetup udevcomplete`. For hosts whose rules need
    /// the cookie (libdm-compatible).
    Udev {
        /// Longest wait for udev per operation.
        timeout: Duration,
    },
    /// We create and remove the nodes ourselves.
    Direct,
    /// Beside a running udev, without its sync: every uevent carries
    /// [`UdevFlags::BYPASS`], so the dm rules skip the device (no symlinks,
    /// no blkid, no inotify watch), and we make and remove the nodes as in
    /// `Direct`. No cookie is waited for; nothing of udev's can hold the
    /// device. For devices nothing else on the host needs to see through
    /// udev (container layers); `/dev/disk/by-*` links are not made.
    Bypass,
    /// Nobody: only `/dev/dm-<minor>` (devtmpfs) exists.
    None,
}

/// Settings for [`Control::open_with`](super::Control::open_with).
#[derive(Clone, Copy, Debug)]
pub struct ControlOptions {
    /// Node handling; `None` picks `UdevWatch` (30 s) when udev runs, `Direct` otherwise.
    pub nodes: Option<NodeMode>,
    /// Character rules for names and uuids.
    pub name_policy: NamePolicy,
}

impl Default for ControlOptions {
    fn default() -> Self {
        ControlOptions {
            nodes: None,
            name_policy: NamePolicy::UdevSafe,
        }
    }
}

/// Options for [`Control::create`](super::Control::create).
#[derive(Clone, Copy, Debug, Default)]
pub struct CreateOptions<'a> {
    /// Device uuid.
    pub uuid: Option<&'a str>,
    /// Ask for this minor number.
    pub minor: Option<u32>,
    /// Create it read-only.
    pub read_only: bool,
}

/// Options for [`Control::remove`](super::Control::remove).
#[derive(Clone, Copy, Debug, Default)]
pub struct RemoveOptions {
    /// If the device is open, remove it when the last opener closes.
    pub deferred: bool,
    /// udev rule flags for the remove event.
    pub udev_flags: UdevFlags,
}

/// Options for [`Control::suspend`](super::Control::suspend).
#[derive(Clone, Copy, Debug, Default)]
pub struct SuspendOptions {
    /// Keep queued I/O queued instead of flushing it.
    pub noflush: bool,
    /// Do not freeze the filesystem on top.
    pub skip_lockfs: bool,
}

/// What [`Control::table_status`](super::Control::table_status) returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StatusKind {
    /// Each target's status line (`dmsetup status`).
    #[default]
    Info,
    /// Each target's table line (`dmsetup table`).
    Table,
}

/// Options for [`Control::table_status`](super::Control::table_status).
#[derive(Clone, Copy, Debug, Default)]
pub struct StatusOptions {
    /// Status or table.
    pub kind: StatusKind,
    /// Report the inactive table instead of the live one.
    pub inactive: bool,
    /// Do not let the target flush (thin-pool: do not commit metadata first).
    pub noflush: bool,
}
