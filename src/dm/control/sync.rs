//! udev synchronisation and our own device nodes around the commands that
//! make, rename or remove a device.

use super::{Control, Req};
use crate::dm::abi::{Command, Dev, DmFlags, DmIoctl};
use crate::dm::cookie::{Cookie, UdevFlags};
use crate::dm::decode::{self, DeviceInfo};
use crate::dm::encode::DevId;
use crate::dm::error::Result;
use crate::dm::node;
use crate::dm::options::NodeMode;
use crate::dm::uevent::{self, Monitor};
use std::time::Duration;

impl Control {
    /// Runs a command that may generate a uevent, under a udev cookie when udev runs.
    pub(super) fn run_with_cookie(
        &mut self,
        command: Command,
        id: DevId<'_>,
        flags: DmFlags,
        udev_flags: UdevFlags,
        customize: &dyn Fn(&mut DmIoctl),
    ) -> Result<DmIoctl> {
        self.payload_keep_or_clear(command);
        if let NodeMode::UdevWatch { timeout } = self.nodes {
            return self.run_watched(command, id, flags, udev_flags, timeout, customize);
        }
        let NodeMode::Udev { timeout } = self.nodes else {
            // No udev sync, but the rule flags still travel (cookie value 0).
            let mut rule_flags = udev_flags | UdevFlags::PRIMARY_SOURCE;
            if self.nodes == NodeMode::Bypass {
                rule_flags |= UdevFlags::BYPASS;
            }
            let ev = u32::from(rule_flags.bits()) << 16;
            return self.run_ext(Req::new(command, Some(id), flags, ev, customize));
        };
        let cookie = Cookie::create()?;
        cookie.inc()?;
        let ev = cookie
            .event_nr(udev_flags | UdevFlags::PRIMARY_SOURCE | UdevFlags::DISABLE_LIBRARY_FALLBACK);
        let result = self.run_ext(Req::new(command, Some(id), flags, ev, customize));
        let generated = matches!(&result, Ok(h) if DmFlags::from_bits_retain(h.flags).contains(DmFlags::UEVENT_GENERATED));
        if !generated {
            // No uevent will decrement it: take our count back so the wait ends.
            let _ = cookie.dec();
        }
        let waited = cookie.wait(timeout);
        let h = result?;
        waited?;
        Ok(h)
    }

    /// [`NodeMode::UdevWatch`]: the command under udev's netlink monitor.
    ///
    /// An event without a cookie makes the dm rules take the device's rule
    /// flags from udev's database (the flags of its last event: the kernel's
    /// `add` event leaves "disabled" ones, which would skip blkid and the
    /// `/dev/disk` links). So a change event carries the flags (a cookie of
    /// value 0: no semaphore, but the rules run `dmsetup udevflags` and
    /// `udevcomplete`) unless the database already holds exactly these
    /// flags, as after the device's first activation; a remove event never
    /// does (no rule reads flags on remove).
    fn run_watched(
        &mut self,
        command: Command,
        id: DevId<'_>,
        flags: DmFlags,
        udev_flags: UdevFlags,
        timeout: Duration,
        customize: &dyn Fn(&mut DmIoctl),
    ) -> Result<DmIoctl> {
        let remove = command == Command::DevRemove;
        let known = node::known_dev(id);
        let wanted = udev_flags | UdevFlags::PRIMARY_SOURCE | UdevFlags::DISABLE_LIBRARY_FALLBACK;
        let ev = if remove || known.and_then(uevent::recorded_flags) == Some(wanted) {
            0
        } else {
            u32::from(wanted.bits()) << 16
        };
        let monitor = Monitor::open()?;
        let h = self.run_ext(Req::new(command, Some(id), flags, ev, customize))?;
        if DmFlags::from_bits_retain(h.flags).contains(DmFlags::UEVENT_GENERATED) {
            let replied = decode::device_info(&h).dev;
            let dev = if remove || replied == Dev::default() {
                known
            } else {
                Some(replied)
            };
            let action = if remove { "remove" } else { "change" };
            monitor.wait(action, dev, timeout)?;
        }
        Ok(h)
    }

    /// Whether this handle waits for udev (cookies or its monitor).
    pub(super) fn waits_for_udev(&self) -> bool {
        matches!(
            self.nodes,
            NodeMode::Udev { .. } | NodeMode::UdevWatch { .. }
        )
    }

    /// Whether this handle makes and removes `/dev/mapper` nodes itself.
    pub(super) fn makes_nodes(&self) -> bool {
        matches!(self.nodes, NodeMode::Direct | NodeMode::Bypass)
    }

    fn payload_keep_or_clear(&mut self, command: Command) {
        if command != Command::DevRename {
            self.payload.clear();
        }
    }

    /// Nodes after create: `/dev/mapper/<name>` when we manage nodes. The
    /// kernel registers the disk (and devtmpfs its `/dev/dm-<minor>`) only on
    /// the first table load, so nothing else is made here: a node made now
    /// would not be devtmpfs's and would outlive the device.
    pub(super) fn after_create(&self, info: &DeviceInfo) -> Result<()> {
        if self.makes_nodes() {
            node::ensure_block_node(&node::mapper_path(info.name.as_str()), info.dev)?;
        }
        Ok(())
    }

    /// Nodes after resume: the mapper node, and `/dev/dm-<minor>` only where
    /// /dev is not devtmpfs (checked once, on open) and nobody made it.
    pub(super) fn after_resume(&self, info: &DeviceInfo) -> Result<()> {
        self.after_create(info)?;
        if !self.dev_is_devtmpfs {
            let dm_node = node::dm_node_path(info.dev);
            if !dm_node.exists() {
                node::ensure_block_node(&dm_node, info.dev)?;
            }
        }
        Ok(())
    }
}
