//! The control handle on `/dev/mapper/control` and every DM command.

mod steps;
mod sync;

use super::abi::{Command, Dev, DmFlags, DmIoctl, Version, CONTROL_PATH, HEADER_SIZE};
use super::cookie::{self, UdevFlags};
use super::decode::{self, DeviceInfo, TargetVersion};
use super::encode::{self, DevId};
use super::error::{DmError, ErrorKind, Result};
use super::name_list::{DeviceEntry, NameList};
use super::names::{validate_name, validate_uuid, NamePolicy};
use super::node;
use super::options::{
    ControlOptions, CreateOptions, NodeMode, RemoveOptions, StatusKind, StatusOptions,
    SuspendOptions,
};
use super::sys::{self, IoctlError};
use super::table_line::TableLine;
use super::{MAX_NAME_LEN, MAX_UUID_LEN};
use crate::retry::Backoff;
use nix::errno::Errno;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

/// Initial ioctl buffer size (libdm's choice); doubled on `BUFFER_FULL`.
pub(crate) const INITIAL_BUFFER: usize = 16 * 1024;
/// The buffer never grows past this.
pub(crate) const MAX_BUFFER: usize = 64 * 1024 * 1024;

/// One ioctl to issue; see [`Control::run_ext`].
struct Req<'a> {
    command: Command,
    id: Option<DevId<'a>>,
    flags: DmFlags,
    event_nr: u32,
    /// Offer the whole buffer for output and handle `BUFFER_FULL`.
    output: bool,
    /// On `BUFFER_FULL`, grow and repeat (false: grow, but fail this call).
    retry_full: bool,
    /// Context added to the error if the ioctl fails.
    detail: Option<&'a dyn Fn() -> String>,
    /// Last-moment changes to the header (uuid, dev, target count).
    customize: &'a dyn Fn(&mut DmIoctl),
}

impl<'a> Req<'a> {
    fn new(
        command: Command,
        id: Option<DevId<'a>>,
        flags: DmFlags,
        event_nr: u32,
        customize: &'a dyn Fn(&mut DmIoctl),
    ) -> Self {
        Req {
            command,
            id,
            flags,
            event_nr,
            output: false,
            retry_full: true,
            detail: None,
            customize,
        }
    }
}

/// An open handle on `/dev/mapper/control`.
///
/// The kernel's interface version is read once, on open. One ioctl buffer is
/// kept and reused: a call in steady state allocates no buffer.
#[derive(Debug)]
pub struct Control {
    file: File,
    version: Version,
    buf: Vec<u8>,
    /// How far the last request or reply may have written into `buf`: the
    /// next request zeroes what lies past its own bytes up to there.
    stale: usize,
    payload: Vec<u8>,
    ioctls: u64,
    nodes: NodeMode,
    name_policy: NamePolicy,
    /// `/dev` is devtmpfs, which makes `/dev/dm-<minor>` for every disk.
    dev_is_devtmpfs: bool,
}

/// `DEVTMPFS_MAGIC` from linux/magic.h.
const DEVTMPFS_MAGIC: nix::sys::statfs::FsType = nix::sys::statfs::FsType(0x1373);

fn not_found_hint(e: Errno) -> &'static str {
    match e {
        Errno::ENOENT => "; is the dm-mod module loaded?",
        Errno::EACCES | Errno::EPERM => "; device-mapper needs root (CAP_SYS_ADMIN)",
        _ => "",
    }
}

impl Control {
    /// Opens the control node with default options.
    pub fn open() -> Result<Control> {
        Control::open_with(ControlOptions::default())
    }

    /// Opens the control node and reads the kernel's interface version.
    pub fn open_with(options: ControlOptions) -> Result<Control> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(CONTROL_PATH)
            .map_err(|e| {
                let errno = Errno::from_raw(e.raw_os_error().unwrap_or(0));
                DmError::Open {
                    path: CONTROL_PATH.into(),
                    errno,
                    hint: not_found_hint(errno),
                }
            })?;
        let nodes = options.nodes.unwrap_or_else(|| {
            if cookie::udev_running() {
                NodeMode::UdevWatch {
                    timeout: Duration::from_secs(30),
                }
            } else {
                NodeMode::Direct
            }
        });
        let mut ctl = Control {
            file,
            version: Version::new(4, 0, 0),
            buf: vec![0; INITIAL_BUFFER],
            stale: 0,
            payload: Vec::with_capacity(1024),
            ioctls: 0,
            nodes,
            name_policy: options.name_policy,
            dev_is_devtmpfs: nix::sys::statfs::statfs("/dev")
                .is_ok_and(|st| st.filesystem_type() == DEVTMPFS_MAGIC),
        };
        let h = ctl.run(Command::Version, None, DmFlags::empty(), 0, false, None)?;
        ctl.version = Version::new(h.version[0], h.version[1], h.version[2]);
        Ok(ctl)
    }

    /// The kernel's device-mapper interface version, read when the handle opened.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Number of ioctls this handle has issued (the version check included).
    pub fn ioctl_count(&self) -> u64 {
        self.ioctls
    }

    /// How this handle manages device nodes.
    pub fn node_mode(&self) -> NodeMode {
        self.nodes
    }

    /// Changes node handling (e.g. a shorter udev timeout).
    pub fn set_node_mode(&mut self, mode: NodeMode) {
        self.nodes = mode;
    }

    /// Current size of the reusable ioctl buffer.
    pub fn buffer_size(&self) -> usize {
        self.buf.len()
    }

    fn check_supported(&self, command: Command, needed: Version) -> Result<()> {
        if self.version.supports(needed) {
            Ok(())
        } else {
            Err(DmError::Unsupported {
                command,
                needed,
                kernel: self.version,
            })
        }
    }

    fn check_lookup(id: DevId<'_>) -> Result<()> {
        let (what, value, max) = match id {
            DevId::Name(n) => ("device name", n, MAX_NAME_LEN),
            DevId::Uuid(u) => ("device uuid", u, MAX_UUID_LEN),
            DevId::Dev(_) => return Ok(()),
        };
        if value.is_empty() || value.len() > max || value.contains('\0') {
            return Err(DmError::InvalidArgument {
                what,
                value: value.to_string(),
                reason: format!("must be 1 to {max} bytes without NUL"),
            });
        }
        Ok(())
    }

    /// Issues one ioctl. The request payload is `self.payload`. With `output`,
    /// the whole buffer is offered and `BUFFER_FULL` grows it and retries
    /// (`retry_full` false: the buffer grows for next time but the call fails).
    fn run_ext(&mut self, req: Req<'_>) -> Result<DmIoctl> {
        let Req {
            command,
            id,
            flags,
            event_nr,
            output,
            retry_full,
            detail,
            customize,
        } = req;
        if command != Command::Version {
            self.check_supported(command, command.min_version())?;
        }
        if let Some(id) = id {
            Self::check_lookup(id)?;
        }
        loop {
            let mut hdr = encode::header(command, id, flags, event_nr);
            customize(&mut hdr);
            let min = if output { self.buf.len() } else { 0 };
            let prior = self.stale;
            let size = encode::write_request(&mut self.buf, &mut hdr, &self.payload, min, prior);
            // Old bytes past this request stay where they were; until the
            // reply says how much it wrote, assume all of the request.
            let beyond = if prior > size { prior } else { 0 };
            self.stale = size.max(beyond);
            self.ioctls += 1;
            match sys::dm_ioctl(self.file.as_fd(), command, &mut self.buf[..size]) {
                Ok(()) => {}
                Err(IoctlError::Kernel(errno)) => {
                    return Err(DmError::Ioctl {
                        command,
                        device: id.map_or_else(|| "-".to_string(), |i| i.to_string()),
                        errno,
                        kind: ErrorKind::from_errno(errno),
                        detail: detail.map(|d| d()),
                    });
                }
                Err(IoctlError::Oversized { data_size, buffer }) => {
                    return Err(DmError::InvalidArgument {
                        what: "ioctl request",
                        value: format!("{command} of {data_size} bytes"),
                        reason: format!("it does not fit the {buffer}-byte buffer"),
                    });
                }
            }
            let out = decode::decode_header(command, &self.buf[..size])?;
            let full = DmFlags::from_bits_retain(out.flags).contains(DmFlags::BUFFER_FULL);
            if !full {
                // The reply is `data_size` bytes; our request's own bytes
                // (header and payload) may reach further.
                let written = HEADER_SIZE + self.payload.len();
                self.stale = written.max(out.data_size as usize).min(size).max(beyond);
            }
            if output && full {
                let grown = (self.buf.len() * 2).min(MAX_BUFFER);
                if grown == self.buf.len() {
                    return Err(DmError::Malformed {
                        command,
                        reason: format!("reply does not fit even {MAX_BUFFER} bytes"),
                    });
                }
                self.buf.resize(grown, 0);
                if retry_full {
                    continue;
                }
                return Err(DmError::Malformed {
                    command,
                    reason: "reply did not fit the buffer; it has been enlarged, but the request is not repeated".into(),
                });
            }
            return Ok(out);
        }
    }

    fn run(
        &mut self,
        command: Command,
        id: Option<DevId<'_>>,
        flags: DmFlags,
        event_nr: u32,
        output: bool,
        detail: Option<&dyn Fn() -> String>,
    ) -> Result<DmIoctl> {
        self.run_ext(Req {
            command,
            id,
            flags,
            event_nr,
            output,
            retry_full: true,
            detail,
            customize: &|_| {},
        })
    }

    /// A command with no payload in or out; returns the device state.
    fn simple(&mut self, command: Command, id: DevId<'_>, flags: DmFlags) -> Result<DeviceInfo> {
        self.payload.clear();
        let h = self.run(command, Some(id), flags, 0, false, None)?;
        Ok(decode::device_info(&h))
    }

    fn reply_payload(&self, command: Command, h: &DmIoctl) -> Result<&[u8]> {
        decode::payload(command, h, &self.buf)
    }

    // ----- commands -----

    /// `DM_VERSION`: asks the kernel again (the handle caches it from open).
    pub fn query_version(&mut self) -> Result<Version> {
        self.payload.clear();
        let h = self.run(Command::Version, None, DmFlags::empty(), 0, false, None)?;
        self.version = Version::new(h.version[0], h.version[1], h.version[2]);
        Ok(self.version)
    }

    /// `DM_REMOVE_ALL`: removes every unused device (deferred: the open ones later).
    pub fn remove_all(&mut self, deferred: bool) -> Result<()> {
        self.payload.clear();
        let flags = if deferred {
            DmFlags::DEFERRED_REMOVE
        } else {
            DmFlags::empty()
        };
        if deferred {
            self.check_supported(Command::RemoveAll, Version::new(4, 27, 0))?;
        }
        self.run(Command::RemoveAll, None, flags, 0, false, None)?;
        Ok(())
    }

    /// `DM_LIST_DEVICES`: every device with its number, event count and uuid.
    pub fn list_devices(&mut self) -> Result<Vec<DeviceEntry>> {
        self.list_devices_view()?.to_vec()
    }

    /// `DM_LIST_DEVICES` without copying: the entries are decoded lazily from
    /// this handle's buffer, which the view borrows until it is dropped.
    /// Iterating allocates nothing (only a name or uuid that is not UTF-8 is
    /// copied); a malformed record yields an error and ends the iteration.
    /// One ioctl, more only while the reply outgrows the buffer (which then
    /// stays grown).
    ///
    /// ```no_run
    /// # fn main() -> dmthin::dm::Result<()> {
    /// let mut ctl = dmthin::dm::Control::open()?;
    /// for entry in ctl.list_devices_view()? {
    ///     let entry = entry?;
    ///     println!("{} {}", entry.dev, entry.name);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn list_devices_view(&mut self) -> Result<NameList<'_>> {
        self.payload.clear();
        let h = self.run(Command::ListDevices, None, DmFlags::UUID, 0, true, None)?;
        let version = self.version;
        let payload = self.reply_payload(Command::ListDevices, &h)?;
        Ok(NameList::new(payload, version))
    }

    /// `DM_DEV_CREATE`: a new device with no table.
    pub fn create(&mut self, name: &str, options: &CreateOptions<'_>) -> Result<DeviceInfo> {
        validate_name(name, self.name_policy)?;
        if let Some(uuid) = options.uuid {
            validate_uuid(uuid, self.name_policy)?;
        }
        self.payload.clear();
        let mut flags = DmFlags::empty();
        if options.minor.is_some() {
            flags |= DmFlags::PERSISTENT_DEV;
        }
        if options.read_only {
            flags |= DmFlags::READONLY;
        }
        let uuid = options.uuid;
        let minor = options.minor;
        let set_uuid_and_minor = |h: &mut DmIoctl| {
            if let Some(u) = uuid {
                encode::copy_str_into(&mut h.uuid, u);
            }
            if let Some(m) = minor {
                h.dev = Dev::new(0, m).huge_encode();
            }
        };
        let h = self.run_ext(Req::new(
            Command::DevCreate,
            Some(DevId::Name(name)),
            flags,
            0,
            &set_uuid_and_minor,
        ))?;
        let info = decode::device_info(&h);
        if let Err(e) = self.after_create(&info) {
            let _ = self.remove(DevId::Name(name), &RemoveOptions::default());
            return Err(e);
        }
        Ok(info)
    }

    /// `DM_DEV_REMOVE`: removes a device (EBUSY while open, unless deferred).
    pub fn remove(&mut self, id: DevId<'_>, options: &RemoveOptions) -> Result<()> {
        let name = match id {
            DevId::Name(n) => Some(n.to_string()),
            _ if self.makes_nodes() => Some(self.info(id)?.name.as_str().to_string()),
            _ => None,
        };
        let mut flags = DmFlags::empty();
        if options.deferred {
            self.check_supported(Command::DevRemove, Version::new(4, 27, 0))?;
            flags |= DmFlags::DEFERRED_REMOVE;
        }
        // With udev running, closing a device that was written to makes udev
        // probe it (its inotify watch), which holds it open for a moment: an
        // EBUSY then is usually udev's, so retry briefly, as libdm's
        // dm_task_retry_remove does. A device really held open still fails.
        let backoff = if self.waits_for_udev() && !options.deferred {
            Backoff::BUSY
        } else {
            Backoff::BUSY.with_tries(1)
        };
        backoff.run(
            |_| self.run_with_cookie(Command::DevRemove, id, flags, options.udev_flags, &|_| {}),
            DmError::is_busy,
        )?;
        if self.makes_nodes() {
            if let Some(name) = name {
                let gone = !options.deferred
                    || self
                        .info(DevId::Name(&name))
                        .is_err_and(|e| e.is_not_found());
                if gone {
                    node::remove_node(&node::mapper_path(&name))?;
                }
            }
        }
        Ok(())
    }

    /// `DM_DEV_RENAME`: gives the device a new name.
    pub fn rename(&mut self, id: DevId<'_>, new_name: &str) -> Result<()> {
        validate_name(new_name, self.name_policy)?;
        let old = match id {
            DevId::Name(n) => Some(n.to_string()),
            _ if self.makes_nodes() => Some(self.info(id)?.name.as_str().to_string()),
            _ => None,
        };
        encode::encode_string(new_name, &mut self.payload);
        let h = self.run_with_cookie(
            Command::DevRename,
            id,
            DmFlags::empty(),
            UdevFlags::empty(),
            &|_| {},
        )?;
        if self.makes_nodes() {
            if let Some(old) = old {
                node::remove_node(&node::mapper_path(&old))?;
            }
            let info = decode::device_info(&h);
            let dev = if info.dev == Dev::default() {
                self.info(DevId::Name(new_name))?.dev
            } else {
                info.dev
            };
            node::ensure_block_node(&node::mapper_path(new_name), dev)?;
        }
        Ok(())
    }

    /// `DM_DEV_RENAME` with `DM_UUID_FLAG`: sets the uuid of a device that has none.
    pub fn set_uuid(&mut self, id: DevId<'_>, uuid: &str) -> Result<()> {
        validate_uuid(uuid, self.name_policy)?;
        self.check_supported(Command::DevRename, Version::new(4, 19, 0))?;
        encode::encode_string(uuid, &mut self.payload);
        self.run_with_cookie(
            Command::DevRename,
            id,
            DmFlags::UUID,
            UdevFlags::empty(),
            &|_| {},
        )?;
        Ok(())
    }

    /// `DM_DEV_SUSPEND` with `SUSPEND`: stops I/O to the device.
    pub fn suspend(&mut self, id: DevId<'_>, options: &SuspendOptions) -> Result<DeviceInfo> {
        let mut flags = DmFlags::SUSPEND;
        if options.noflush {
            flags |= DmFlags::NOFLUSH;
        }
        if options.skip_lockfs {
            flags |= DmFlags::SKIP_LOCKFS;
        }
        self.simple(Command::DevSuspend, id, flags)
    }

    /// `DM_DEV_SUSPEND` without `SUSPEND`: resumes, making a loaded inactive table live.
    pub fn resume(&mut self, id: DevId<'_>, udev_flags: UdevFlags) -> Result<DeviceInfo> {
        let h = self.run_with_cookie(
            Command::DevSuspend,
            id,
            DmFlags::empty(),
            udev_flags,
            &|_| {},
        )?;
        let info = decode::device_info(&h);
        self.after_resume(&info)?;
        Ok(info)
    }

    /// `DM_DEV_STATUS`: the device's state.
    pub fn info(&mut self, id: DevId<'_>) -> Result<DeviceInfo> {
        self.simple(Command::DevStatus, id, DmFlags::empty())
    }

    /// `DM_DEV_WAIT`: blocks until the device's event counter passes `event_nr`,
    /// then returns its state and target status lines.
    pub fn wait_event(
        &mut self,
        id: DevId<'_>,
        event_nr: u32,
    ) -> Result<(DeviceInfo, Vec<TableLine>)> {
        self.payload.clear();
        let h = self.run(
            Command::DevWait,
            Some(id),
            DmFlags::empty(),
            event_nr,
            true,
            None,
        )?;
        let lines = decode::decode_specs(
            Command::DevWait,
            self.reply_payload(Command::DevWait, &h)?,
            h.target_count,
        )?;
        Ok((decode::device_info(&h), lines))
    }

    /// `DM_TABLE_LOAD`: loads `lines` as the device's inactive table.
    /// A refused table comes back with the lines in the error.
    pub fn table_load(
        &mut self,
        id: DevId<'_>,
        lines: &[TableLine],
        read_only: bool,
    ) -> Result<DeviceInfo> {
        encode::encode_table(lines, &mut self.payload)?;
        let flags = if read_only {
            DmFlags::READONLY
        } else {
            DmFlags::empty()
        };
        let count = lines.len() as u32;
        let detail = || {
            let table: Vec<String> = lines
                .iter()
                .map(|l| {
                    let (start, length) = (l.start(), l.length());
                    format!("{start} {length} {} {}", l.target_type(), l.params())
                })
                .collect();
            format!("table refused: {}", table.join(" | "))
        };
        let set_count = |h: &mut DmIoctl| h.target_count = count;
        let h = self.run_ext(Req {
            detail: Some(&detail),
            ..Req::new(Command::TableLoad, Some(id), flags, 0, &set_count)
        })?;
        Ok(decode::device_info(&h))
    }

    /// `DM_TABLE_CLEAR`: drops the inactive table.
    pub fn table_clear(&mut self, id: DevId<'_>) -> Result<DeviceInfo> {
        self.simple(Command::TableClear, id, DmFlags::empty())
    }

    /// `DM_TABLE_DEPS`: the devices the table uses.
    pub fn table_deps(&mut self, id: DevId<'_>, inactive: bool) -> Result<Vec<Dev>> {
        self.payload.clear();
        let flags = if inactive {
            DmFlags::QUERY_INACTIVE_TABLE
        } else {
            DmFlags::empty()
        };
        let h = self.run(Command::TableDeps, Some(id), flags, 0, true, None)?;
        decode::decode_deps(self.reply_payload(Command::TableDeps, &h)?)
    }

    /// `DM_TABLE_STATUS`: each target's status or table line.
    pub fn table_status(
        &mut self,
        id: DevId<'_>,
        options: &StatusOptions,
    ) -> Result<(DeviceInfo, Vec<TableLine>)> {
        self.payload.clear();
        let mut flags = DmFlags::empty();
        if options.kind == StatusKind::Table {
            flags |= DmFlags::STATUS_TABLE;
        }
        if options.inactive {
            flags |= DmFlags::QUERY_INACTIVE_TABLE;
        }
        if options.noflush {
            flags |= DmFlags::NOFLUSH;
        }
        let h = self.run(Command::TableStatus, Some(id), flags, 0, true, None)?;
        let lines = decode::decode_specs(
            Command::TableStatus,
            self.reply_payload(Command::TableStatus, &h)?,
            h.target_count,
        )?;
        Ok((decode::device_info(&h), lines))
    }

    /// `DM_LIST_VERSIONS`: every loaded target type with its version.
    pub fn list_versions(&mut self) -> Result<Vec<TargetVersion>> {
        self.payload.clear();
        let h = self.run(Command::ListVersions, None, DmFlags::empty(), 0, true, None)?;
        decode::decode_versions(
            Command::ListVersions,
            self.reply_payload(Command::ListVersions, &h)?,
        )
    }

    /// `DM_GET_TARGET_VERSION`: one target type's version (loads its module if needed).
    pub fn get_target_version(&mut self, target_type: &str) -> Result<TargetVersion> {
        self.payload.clear();
        let h = self.run(
            Command::GetTargetVersion,
            Some(DevId::Name(target_type)),
            DmFlags::empty(),
            0,
            true,
            None,
        )?;
        let mut list = decode::decode_versions(
            Command::GetTargetVersion,
            self.reply_payload(Command::GetTargetVersion, &h)?,
        )?;
        if list.is_empty() {
            return Err(DmError::Malformed {
                command: Command::GetTargetVersion,
                reason: "no version record in the reply".into(),
            });
        }
        Ok(list.swap_remove(0))
    }

    /// `DM_TARGET_MSG`: sends `message` to the target at `sector`; returns its reply, if any.
    /// The message is never sent twice, even when its reply overflows the buffer.
    pub fn target_message(
        &mut self,
        id: DevId<'_>,
        sector: u64,
        message: &str,
    ) -> Result<Option<String>> {
        encode::encode_message(sector, message, &mut self.payload)?;
        let detail = || format!("message {message:?}");
        let h = self.run_ext(Req {
            output: true,
            retry_full: false,
            detail: Some(&detail),
            ..Req::new(Command::TargetMsg, Some(id), DmFlags::empty(), 0, &|_| {})
        })?;
        let payload = self.reply_payload(Command::TargetMsg, &h)?;
        Ok(decode::decode_message_reply(&h, payload))
    }

    /// `DM_TARGET_MSG` for messages that return nothing (every thin-pool
    /// message): the request carries only the message, so the kernel copies
    /// and allocates a few hundred bytes instead of the reply buffer
    /// [`target_message`](Self::target_message) offers. A reply the target
    /// sends anyway does not fit and is dropped (logged); the message itself
    /// has taken effect.
    ///
    /// Returns the device's event number as the kernel wrote it back after
    /// the message (and whatever the target did for it, such as a thin
    /// pool's commit) had run: compared with an earlier reply's, it tells
    /// whether the target raised an event meanwhile, e.g. a pool changing
    /// mode.
    pub fn send_message(&mut self, id: DevId<'_>, sector: u64, message: &str) -> Result<u32> {
        encode::encode_message(sector, message, &mut self.payload)?;
        let detail = || format!("message {message:?}");
        let h = self.run_ext(Req {
            detail: Some(&detail),
            ..Req::new(Command::TargetMsg, Some(id), DmFlags::empty(), 0, &|_| {})
        })?;
        if DmFlags::from_bits_retain(h.flags).contains(DmFlags::BUFFER_FULL) {
            log::warn!("message {message:?} to {id}: the target's reply was dropped");
        }
        Ok(h.event_nr)
    }

    /// `DM_DEV_SET_GEOMETRY`: sets the reported disk geometry.
    pub fn set_geometry(
        &mut self,
        id: DevId<'_>,
        cylinders: u64,
        heads: u64,
        sectors: u64,
        start: u64,
    ) -> Result<()> {
        encode::encode_string(
            &format!("{cylinders} {heads} {sectors} {start}"),
            &mut self.payload,
        );
        self.run(
            Command::DevSetGeometry,
            Some(id),
            DmFlags::empty(),
            0,
            false,
            None,
        )?;
        Ok(())
    }

    /// `DM_DEV_ARM_POLL`: re-arms `poll()` on the control fd for the next event.
    pub fn arm_poll(&mut self) -> Result<()> {
        self.payload.clear();
        self.run(Command::DevArmPoll, None, DmFlags::empty(), 0, false, None)?;
        Ok(())
    }

    /// The raw control fd, for `poll()` after [`Control::arm_poll`].
    pub fn as_raw_fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    // ----- helpers -----

    /// Create, load and resume: a live device in exactly three ioctls.
    /// If any step fails the device is removed again.
    pub fn create_with_table(
        &mut self,
        name: &str,
        options: &CreateOptions<'_>,
        lines: &[TableLine],
        udev_flags: UdevFlags,
    ) -> Result<DeviceInfo> {
        self.create_with_table_steps(name, options, lines, udev_flags, || Ok(()), || Ok(()))
    }

    /// Replaces a live device's table: load, suspend, resume. On failure the
    /// old table stays live and the device is not left suspended.
    pub fn reload_table(
        &mut self,
        id: DevId<'_>,
        lines: &[TableLine],
        udev_flags: UdevFlags,
    ) -> Result<DeviceInfo> {
        self.reload_table_steps(id, lines, udev_flags, || Ok(()))
    }

    /// Whether a device with this name exists.
    pub fn exists(&mut self, name: &str) -> Result<bool> {
        match self.info(DevId::Name(name)) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The control fd, for `poll()` after [`Control::arm_poll`].
impl AsFd for Control {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }
}
