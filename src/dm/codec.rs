//! Encoding of requests and decoding of kernel replies.
//!
//! Decoders are pure functions over byte slices: any input, however malformed,
//! gives either a value or a [`DmError::Malformed`], never a panic or an
//! out-of-bounds read. The fuzz targets drive them directly.

use super::abi::{
    Command, Dev, DmFlags, DmIoctl, DmTargetDeps, DmTargetMsg, DmTargetSpec, DmTargetVersions,
    Version, HEADER_SIZE, MAX_TYPE_NAME, NAME_LEN, NAME_LIST_HAS_UUID, NAME_LIST_NAME_OFFSET,
    TARGET_SPEC_SIZE, UUID_LEN,
};
use super::error::{DmError, Result};
use crate::target::TableLine;
use std::borrow::Cow;
use std::mem::size_of;
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// How a request names the device it acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevId<'a> {
    /// By device name.
    Name(&'a str),
    /// By device uuid.
    Uuid(&'a str),
    /// By device number.
    Dev(Dev),
}

impl std::fmt::Display for DevId<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DevId::Name(n) => write!(f, "{n}"),
            DevId::Uuid(u) => write!(f, "uuid {u}"),
            DevId::Dev(d) => write!(f, "{d}"),
        }
    }
}

/// A NUL-padded fixed-size string as the kernel stores names and uuids.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FixedStr<const N: usize> {
    bytes: [u8; N],
}

impl<const N: usize> FixedStr<N> {
    fn from_field(field: &[u8; N]) -> Self {
        FixedStr { bytes: *field }
    }

    /// The string up to its first NUL; bytes that are not UTF-8 end it early.
    pub fn as_str(&self) -> &str {
        let end = self.bytes.iter().position(|&b| b == 0).unwrap_or(N);
        let raw = &self.bytes[..end];
        match std::str::from_utf8(raw) {
            Ok(s) => s,
            Err(e) => std::str::from_utf8(&raw[..e.valid_up_to()]).unwrap_or_default(),
        }
    }
}

impl<const N: usize> std::fmt::Debug for FixedStr<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// What the kernel reports about a device in a reply header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Device name.
    pub name: FixedStr<NAME_LEN>,
    /// Device uuid (empty when none).
    pub uuid: FixedStr<UUID_LEN>,
    /// Device number.
    pub dev: Dev,
    /// Number of openers.
    pub open_count: i32,
    /// Event counter.
    pub event_nr: u32,
    /// Number of targets in the table the reply describes.
    pub target_count: u32,
    /// Raw output flags.
    pub flags: DmFlags,
    /// The kernel's interface version, as written back into the header.
    pub kernel_version: Version,
}

impl DeviceInfo {
    /// Whether the device is suspended.
    pub fn suspended(&self) -> bool {
        self.flags.contains(DmFlags::SUSPEND)
    }

    /// Whether a live table is loaded.
    pub fn active_table(&self) -> bool {
        self.flags.contains(DmFlags::ACTIVE_PRESENT)
    }

    /// Whether an inactive table is loaded.
    pub fn inactive_table(&self) -> bool {
        self.flags.contains(DmFlags::INACTIVE_PRESENT)
    }

    /// Whether the device is read-only.
    pub fn read_only(&self) -> bool {
        self.flags.contains(DmFlags::READONLY)
    }
}

/// One entry of `DM_LIST_DEVICES`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceEntry {
    /// Device name.
    pub name: String,
    /// Device number.
    pub dev: Dev,
    /// Event counter (interface 4.38 and later).
    pub event_nr: Option<u32>,
    /// Uuid, when the kernel returned uuids and the device has one.
    pub uuid: Option<String>,
}

/// One entry of `DM_LIST_VERSIONS` / `DM_GET_TARGET_VERSION`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetVersion {
    /// Target type name.
    pub name: String,
    /// Target version.
    pub version: Version,
}

fn malformed<T>(command: Command, reason: impl Into<String>) -> Result<T> {
    Err(DmError::Malformed {
        command,
        reason: reason.into(),
    })
}

fn copy_str_into(dst: &mut [u8], s: &str) {
    let n = s.len().min(dst.len().saturating_sub(1));
    dst[..n].copy_from_slice(&s.as_bytes()[..n]);
}

/// Builds a request header.
pub fn header(command: Command, id: Option<DevId<'_>>, flags: DmFlags, event_nr: u32) -> DmIoctl {
    let mut h = DmIoctl::new_zeroed();
    let v = command.min_version();
    h.version = [v.major, v.minor, v.patch];
    h.data_start = HEADER_SIZE as u32;
    h.data_size = HEADER_SIZE as u32;
    h.flags = flags.bits();
    h.event_nr = event_nr;
    match id {
        Some(DevId::Name(n)) => copy_str_into(&mut h.name, n),
        Some(DevId::Uuid(u)) => copy_str_into(&mut h.uuid, u),
        Some(DevId::Dev(d)) => h.dev = d.huge_encode(),
        None => {}
    }
    h
}

/// Writes `hdr` and then `payload` into `buf`, growing it to at least `min_size`.
/// Returns the number of bytes the request occupies (`data_size`).
pub fn write_request(
    buf: &mut Vec<u8>,
    hdr: &mut DmIoctl,
    payload: &[u8],
    min_size: usize,
) -> usize {
    let needed = HEADER_SIZE + payload.len();
    let size = needed.max(min_size);
    if buf.len() < size {
        buf.resize(size, 0);
    }
    hdr.data_size = u32::try_from(size).unwrap_or(u32::MAX);
    buf[..HEADER_SIZE].copy_from_slice(hdr.as_bytes());
    buf[HEADER_SIZE..needed].copy_from_slice(payload);
    size
}

/// Encodes table lines as `TABLE_LOAD` wants them: each spec followed by its
/// NUL-terminated params, padded to 8 bytes, `next` relative to the spec.
pub fn encode_table(lines: &[TableLine], out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    if lines.is_empty() {
        return Err(DmError::InvalidArgument {
            what: "table",
            value: String::new(),
            reason: "a table needs at least one target line".into(),
        });
    }
    for line in lines {
        let tt = line.target_type.as_bytes();
        if tt.is_empty() || tt.len() >= MAX_TYPE_NAME || tt.contains(&0) {
            return Err(DmError::InvalidArgument {
                what: "target type",
                value: line.target_type.clone(),
                reason: format!("must be 1 to {} bytes without NUL", MAX_TYPE_NAME - 1),
            });
        }
        if line.params.as_bytes().contains(&0) {
            return Err(DmError::InvalidArgument {
                what: "target parameters",
                value: line.params.clone(),
                reason: "a NUL byte would truncate the line".into(),
            });
        }
        if line.length == 0 {
            return Err(DmError::InvalidArgument {
                what: "target length",
                value: format!("{} 0 {}", line.start, line.target_type),
                reason: "a target line must cover at least one sector".into(),
            });
        }
        let params_len = (line.params.len() + 1).next_multiple_of(8);
        let mut spec = DmTargetSpec::new_zeroed();
        spec.sector_start = line.start;
        spec.length = line.length;
        spec.next =
            u32::try_from(TARGET_SPEC_SIZE + params_len).map_err(|_| DmError::InvalidArgument {
                what: "target parameters",
                value: line.target_type.clone(),
                reason: "parameters longer than 4 GiB".into(),
            })?;
        spec.target_type[..tt.len()].copy_from_slice(tt);
        out.extend_from_slice(spec.as_bytes());
        let start = out.len();
        out.extend_from_slice(line.params.as_bytes());
        out.resize(start + params_len, 0);
    }
    Ok(())
}

/// Encodes a `dm_target_msg`: sector, then the NUL-terminated message.
pub fn encode_message(sector: u64, message: &str, out: &mut Vec<u8>) -> Result<()> {
    if message.is_empty() || message.as_bytes().contains(&0) {
        return Err(DmError::InvalidArgument {
            what: "target message",
            value: message.to_string(),
            reason: "must be non-empty and contain no NUL".into(),
        });
    }
    out.clear();
    out.extend_from_slice(DmTargetMsg { sector }.as_bytes());
    out.extend_from_slice(message.as_bytes());
    out.push(0);
    out.resize(out.len().next_multiple_of(8), 0);
    Ok(())
}

/// Encodes a NUL-terminated string payload (rename target, geometry), padded to 8.
pub fn encode_string(s: &str, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(s.as_bytes());
    out.push(0);
    out.resize(out.len().next_multiple_of(8), 0);
}

/// Decodes a reply header. The buffer must hold at least the 312-byte header.
pub fn decode_header(command: Command, buf: &[u8]) -> Result<DmIoctl> {
    match DmIoctl::read_from_prefix(buf) {
        Ok((h, _)) => Ok(h),
        Err(_) => malformed(
            command,
            format!("reply is {} bytes, shorter than the header", buf.len()),
        ),
    }
}

/// The device information carried by a reply header.
pub fn device_info(h: &DmIoctl) -> DeviceInfo {
    DeviceInfo {
        name: FixedStr::from_field(&h.name),
        uuid: FixedStr::from_field(&h.uuid),
        dev: Dev::huge_decode(h.dev),
        open_count: h.open_count,
        event_nr: h.event_nr,
        target_count: h.target_count,
        flags: DmFlags::from_bits_retain(h.flags),
        kernel_version: Version::new(h.version[0], h.version[1], h.version[2]),
    }
}

/// The payload a reply carries: `buf[data_start..data_size]`, bounds-checked.
pub fn payload<'a>(command: Command, h: &DmIoctl, buf: &'a [u8]) -> Result<&'a [u8]> {
    let start = h.data_start as usize;
    let end = h.data_size as usize;
    // With no payload the kernel reports data_size = 305 (offsetof data),
    // below data_start: that is an empty payload, not an error.
    if end <= start && start >= HEADER_SIZE && start <= buf.len() {
        return Ok(&buf[start..start]);
    }
    if start < HEADER_SIZE || start > end || end > buf.len() {
        return malformed(
            command,
            format!(
                "payload bounds {start}..{end} do not fit a {}-byte buffer after the header",
                buf.len()
            ),
        );
    }
    Ok(&buf[start..end])
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    let bytes = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes(bytes.try_into().ok()?))
}

fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    let bytes = b.get(at..at.checked_add(8)?)?;
    Some(u64::from_ne_bytes(bytes.try_into().ok()?))
}

/// Reads a NUL-terminated string starting at `at`; returns its bytes (without
/// the NUL) and the index of its NUL.
fn read_cstr_bytes(b: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = b.get(at..)?;
    let nul = find_nul(rest)?;
    Some((&rest[..nul], at + nul))
}

/// Index of the first NUL, eight bytes at a time (a name or uuid is found
/// in a few loads instead of one per byte; this matters under emulation).
fn find_nul(b: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut words = b.chunks_exact(8);
    let mut at = 0;
    for chunk in words.by_ref() {
        let w = u64::from_ne_bytes(chunk.try_into().ok()?);
        // Non-zero iff some byte is zero (the lowest flag is exact).
        if w.wrapping_sub(LO) & !w & HI != 0 {
            return chunk.iter().position(|&c| c == 0).map(|i| at + i);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&c| c == 0)
        .map(|i| at + i)
}

/// Reads a NUL-terminated string starting at `at`; returns it and the index of its NUL.
fn read_cstr(b: &[u8], at: usize) -> Option<(String, usize)> {
    read_cstr_bytes(b, at).map(|(s, nul)| (String::from_utf8_lossy(s).into_owned(), nul))
}

/// The bytes as a string, borrowed when they are UTF-8 (the common case,
/// checked by `from_utf8`'s fast path), else with U+FFFD for invalid sequences.
fn lossy(b: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(b),
    }
}

/// One entry of a `DM_LIST_DEVICES` reply, borrowed from the reply buffer.
///
/// The strings borrow the buffer; only a name or uuid that is not UTF-8 is
/// copied (invalid sequences become U+FFFD, as in [`DeviceEntry`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameListEntry<'a> {
    /// Device number.
    pub dev: Dev,
    /// Device name.
    pub name: Cow<'a, str>,
    /// Event counter (interface 4.38 and later).
    pub event_nr: Option<u32>,
    /// Uuid, when the kernel returned uuids and the device has one.
    pub uuid: Option<Cow<'a, str>>,
}

impl NameListEntry<'_> {
    /// The owned entry, as [`decode_name_list`] returns it.
    pub fn into_owned(self) -> DeviceEntry {
        DeviceEntry {
            name: self.name.into_owned(),
            dev: self.dev,
            event_nr: self.event_nr,
            uuid: self.uuid.map(Cow::into_owned),
        }
    }
}

/// A `DM_LIST_DEVICES` payload, decoded lazily: iterating it walks the
/// records in place, allocating nothing.
#[derive(Clone, Copy, Debug)]
pub struct NameList<'a> {
    payload: &'a [u8],
    with_trailer: bool,
}

impl<'a> NameList<'a> {
    /// Wraps a payload. `with_trailer` says whether the kernel (interface
    /// 4.38+) writes the event number and flags after each name.
    pub fn new(payload: &'a [u8], with_trailer: bool) -> Self {
        NameList {
            payload,
            with_trailer,
        }
    }

    /// The entries in kernel order. A malformed record yields one error,
    /// after the entries before it, and ends the iteration.
    pub fn iter(&self) -> NameListIter<'a> {
        NameListIter {
            records: self.records(),
        }
    }

    /// The records in kernel order, with nothing decoded but the device
    /// number: the cheapest walk, for callers that count devices or look at
    /// few names. Record bounds are checked here; a record's name and
    /// trailer are checked when [`NameRecord::name_bytes`] or
    /// [`NameRecord::entry`] reads them.
    pub fn records(&self) -> NameRecords<'a> {
        NameRecords {
            payload: self.payload,
            with_trailer: self.with_trailer,
            at: 0,
            state: IterState::Record,
        }
    }

    /// Every entry, owned; the first malformed record makes it an error.
    pub fn to_vec(&self) -> Result<Vec<DeviceEntry>> {
        self.iter()
            .map(|e| e.map(NameListEntry::into_owned))
            .collect()
    }
}

impl<'a> IntoIterator for NameList<'a> {
    type Item = Result<NameListEntry<'a>>;
    type IntoIter = NameListIter<'a>;
    fn into_iter(self) -> NameListIter<'a> {
        self.iter()
    }
}

impl<'a> IntoIterator for &NameList<'a> {
    type Item = Result<NameListEntry<'a>>;
    type IntoIter = NameListIter<'a>;
    fn into_iter(self) -> NameListIter<'a> {
        self.iter()
    }
}

#[derive(Clone, Copy, Debug)]
enum IterState {
    /// A record starts at `at`.
    Record,
    /// The record at `at` pointed `next` bytes ahead, outside the reply.
    BadNext { next: usize },
    /// Finished (last record, empty list or after an error).
    Done,
}

/// One record of a `DM_LIST_DEVICES` payload, not yet decoded; see
/// [`NameList::records`].
#[derive(Clone, Copy, Debug)]
pub struct NameRecord<'a> {
    /// The record's bytes, from its start to the next record (or the end).
    record: &'a [u8],
    /// Where the record starts in the payload (the trailer is 8-aligned there).
    at: usize,
    dev: u64,
    with_trailer: bool,
}

impl<'a> NameRecord<'a> {
    /// Device number.
    pub fn dev(&self) -> Dev {
        Dev::huge_decode(self.dev)
    }

    /// The name's bytes (without the NUL), borrowed from the reply.
    pub fn name_bytes(&self) -> Result<&'a [u8]> {
        self.name_and_nul().map(|(name, _)| name)
    }

    fn name_and_nul(&self) -> Result<(&'a [u8], usize)> {
        match read_cstr_bytes(self.record, NAME_LIST_NAME_OFFSET) {
            Some(found) => Ok(found),
            None => malformed(
                Command::ListDevices,
                format!("name of record at {} is not NUL-terminated", self.at),
            ),
        }
    }

    /// The whole entry: name, event number and uuid, borrowed from the reply.
    pub fn entry(&self) -> Result<NameListEntry<'a>> {
        let (at, record) = (self.at, self.record);
        let (name, nul) = self.name_and_nul()?;
        let mut entry = NameListEntry {
            dev: self.dev(),
            name: lossy(name),
            event_nr: None,
            uuid: None,
        };
        if self.with_trailer {
            // `nul` is relative to the record; the trailer is 8-aligned in the payload.
            let t = (at + nul + 1).next_multiple_of(8) - at;
            if let (Some(ev), Some(flags)) = (read_u32(record, t), read_u32(record, t + 4)) {
                entry.event_nr = Some(ev);
                if flags & NAME_LIST_HAS_UUID != 0 {
                    match read_cstr_bytes(record, t + 8) {
                        Some((uuid, _)) => entry.uuid = Some(lossy(uuid)),
                        None => {
                            return malformed(
                                Command::ListDevices,
                                format!("uuid of {:?} is not NUL-terminated", entry.name),
                            )
                        }
                    }
                }
                // NAME_LIST_NO_UUID, or neither flag: no uuid.
            }
        }
        Ok(entry)
    }
}

/// Iterator over the records of a `DM_LIST_DEVICES` payload; see
/// [`NameList::records`]. A record that is cut short or points outside the
/// reply yields one error and ends the iteration.
#[derive(Clone, Debug)]
pub struct NameRecords<'a> {
    payload: &'a [u8],
    with_trailer: bool,
    at: usize,
    state: IterState,
}

impl<'a> NameRecords<'a> {
    fn fail(&mut self, reason: String) -> Option<Result<NameRecord<'a>>> {
        self.state = IterState::Done;
        Some(malformed(Command::ListDevices, reason))
    }
}

impl<'a> Iterator for NameRecords<'a> {
    type Item = Result<NameRecord<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        let payload = self.payload;
        let at = self.at;
        match self.state {
            IterState::Record => {}
            IterState::BadNext { next } => {
                return self.fail(format!(
                    "record at {at} points to {next} bytes ahead, outside the reply"
                ));
            }
            IterState::Done => return None,
        }
        let Some(dev) = read_u64(payload, at) else {
            if at == 0 {
                // No devices: the kernel reports an empty payload.
                self.state = IterState::Done;
                return None;
            }
            return self.fail(format!("record at {at} is cut short"));
        };
        if dev == 0 && at == 0 {
            self.state = IterState::Done; // empty list
            return None;
        }
        let next = read_u32(payload, at + 8).unwrap_or(0) as usize;
        let end = if next == 0 {
            payload.len()
        } else {
            at.saturating_add(next).min(payload.len())
        };
        let record = NameRecord {
            record: &payload[at..end],
            at,
            dev,
            with_trailer: self.with_trailer,
        };
        self.state = if next == 0 {
            IterState::Done
        } else if next < 12 || at.saturating_add(next) >= payload.len() {
            IterState::BadNext { next }
        } else {
            self.at = at + next;
            IterState::Record
        };
        Some(Ok(record))
    }
}

impl std::iter::FusedIterator for NameRecords<'_> {}

/// Iterator over a `DM_LIST_DEVICES` payload; see [`NameList`].
#[derive(Clone, Debug)]
pub struct NameListIter<'a> {
    records: NameRecords<'a>,
}

impl<'a> Iterator for NameListIter<'a> {
    type Item = Result<NameListEntry<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        let entry = self.records.next()?.and_then(|r| r.entry());
        if entry.is_err() {
            self.records.state = IterState::Done;
        }
        Some(entry)
    }
}

impl std::iter::FusedIterator for NameListIter<'_> {}

/// Decodes a `DM_LIST_DEVICES` payload into owned entries (a collecting
/// wrapper over [`NameList`]). `with_trailer` says whether the kernel
/// (interface 4.38+) writes the event number and flags after each name.
pub fn decode_name_list(payload: &[u8], with_trailer: bool) -> Result<Vec<DeviceEntry>> {
    NameList::new(payload, with_trailer).to_vec()
}

/// Decodes the target specs of a `DM_TABLE_STATUS` or `DM_DEV_WAIT` reply.
/// Output `next` offsets count from the payload start.
pub fn decode_specs(command: Command, payload: &[u8], count: u32) -> Result<Vec<TableLine>> {
    let mut out = Vec::with_capacity(count.min(1024) as usize);
    let mut at = 0usize;
    for i in 0..count {
        let Some(spec_bytes) = payload.get(at..at + TARGET_SPEC_SIZE) else {
            return malformed(command, format!("target {i} at offset {at} is cut short"));
        };
        let Ok(spec) = DmTargetSpec::read_from_bytes(spec_bytes) else {
            return malformed(command, format!("target {i} at offset {at} is unreadable"));
        };
        let tt_end = spec
            .target_type
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(MAX_TYPE_NAME);
        let target_type = String::from_utf8_lossy(&spec.target_type[..tt_end]).into_owned();
        let Some((params, _)) = read_cstr(payload, at + TARGET_SPEC_SIZE) else {
            return malformed(
                command,
                format!("parameters of target {i} are not NUL-terminated"),
            );
        };
        out.push(TableLine {
            start: spec.sector_start,
            length: spec.length,
            target_type,
            params,
        });
        if i + 1 < count {
            let next = spec.next as usize;
            if next <= at || next >= payload.len() {
                return malformed(
                    command,
                    format!("target {i} points to offset {next}, not forward inside the reply"),
                );
            }
            at = next;
        }
    }
    Ok(out)
}

/// Decodes a `dm_target_deps` payload.
pub fn decode_deps(payload: &[u8]) -> Result<Vec<Dev>> {
    const CMD: Command = Command::TableDeps;
    let Ok((head, _)) = DmTargetDeps::read_from_prefix(payload) else {
        return malformed(CMD, "reply has no dependency count");
    };
    let count = head.count as usize;
    let available = payload.len().saturating_sub(size_of::<DmTargetDeps>()) / 8;
    if count > available {
        return malformed(
            CMD,
            format!("{count} dependencies claimed but only {available} fit the reply"),
        );
    }
    Ok((0..count)
        .filter_map(|i| read_u64(payload, size_of::<DmTargetDeps>() + i * 8))
        .map(Dev::huge_decode)
        .collect())
}

/// Decodes a `dm_target_versions` list.
pub fn decode_versions(command: Command, payload: &[u8]) -> Result<Vec<TargetVersion>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    loop {
        let Some(Ok((head, _))) = payload.get(at..).map(DmTargetVersions::read_from_prefix) else {
            return malformed(command, format!("version record at {at} is cut short"));
        };
        let Some((name, _)) = read_cstr(payload, at + size_of::<DmTargetVersions>()) else {
            return malformed(
                command,
                format!("target name at {at} is not NUL-terminated"),
            );
        };
        let [a, b, c] = head.version;
        let next = head.next;
        out.push(TargetVersion {
            name,
            version: Version::new(a, b, c),
        });
        if next == 0 {
            return Ok(out);
        }
        let next = next as usize;
        if next < 16 || at + next >= payload.len() {
            return malformed(
                command,
                format!("version record at {at} points {next} bytes ahead, outside the reply"),
            );
        }
        at += next;
    }
}

/// Decodes a target message reply: present only when the kernel set `DATA_OUT`.
pub fn decode_message_reply(h: &DmIoctl, payload: &[u8]) -> Option<String> {
    if DmFlags::from_bits_retain(h.flags).contains(DmFlags::DATA_OUT) {
        let nul = payload
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(payload.len());
        Some(String::from_utf8_lossy(&payload[..nul]).into_owned())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dm::abi::NAME_LIST_NO_UUID;

    fn line(start: u64, length: u64, tt: &str, params: &str) -> TableLine {
        TableLine {
            start,
            length,
            target_type: tt.into(),
            params: params.into(),
        }
    }

    #[test]
    fn golden_version_request() {
        let mut h = header(Command::Version, None, DmFlags::empty(), 0);
        let mut buf = Vec::new();
        let size = write_request(&mut buf, &mut h, &[], 16384);
        assert_eq!(size, 16384);
        let mut expected = vec![0u8; HEADER_SIZE];
        expected[0..4].copy_from_slice(&4u32.to_ne_bytes());
        expected[12..16].copy_from_slice(&16384u32.to_ne_bytes());
        expected[16..20].copy_from_slice(&312u32.to_ne_bytes());
        assert_eq!(&buf[..HEADER_SIZE], &expected[..]);
    }

    #[test]
    fn golden_create_request_with_name_uuid_and_minor() {
        let mut h = header(
            Command::DevCreate,
            Some(DevId::Name("pool")),
            DmFlags::PERSISTENT_DEV,
            0,
        );
        copy_str_into(&mut h.uuid, "DMTHIN-x");
        h.dev = Dev::new(0, 300).huge_encode();
        let mut buf = Vec::new();
        write_request(&mut buf, &mut h, &[], 0);
        assert_eq!(buf.len(), HEADER_SIZE);
        assert_eq!(&buf[12..16], &312u32.to_ne_bytes());
        assert_eq!(&buf[28..32], &8u32.to_ne_bytes());
        assert_eq!(
            &buf[40..48],
            &((300u64 & 0xff) | ((300u64 & !0xff) << 12)).to_ne_bytes()
        );
        assert_eq!(&buf[48..53], b"pool\0");
        assert_eq!(&buf[176..185], b"DMTHIN-x\0");
    }

    #[test]
    fn golden_table_encoding() {
        let mut out = Vec::new();
        encode_table(
            &[line(0, 2048, "linear", "7:0 0"), line(2048, 8, "zero", "")],
            &mut out,
        )
        .unwrap();
        // Spec 1: 40 bytes + "7:0 0\0" padded to 8.
        assert_eq!(out.len(), 40 + 8 + 40 + 8);
        assert_eq!(&out[0..8], &0u64.to_ne_bytes());
        assert_eq!(&out[8..16], &2048u64.to_ne_bytes());
        assert_eq!(&out[16..20], &0i32.to_ne_bytes());
        assert_eq!(&out[20..24], &48u32.to_ne_bytes());
        assert_eq!(&out[24..31], b"linear\0");
        assert_eq!(&out[40..48], b"7:0 0\0\0\0");
        assert_eq!(&out[48..56], &2048u64.to_ne_bytes());
        assert_eq!(&out[68..72], &48u32.to_ne_bytes());
        assert_eq!(&out[72..77], b"zero\0");
        assert_eq!(&out[88..96], &[0u8; 8]);
    }

    #[test]
    fn table_encoding_refuses_bad_lines() {
        let mut out = Vec::new();
        assert!(encode_table(&[], &mut out).is_err());
        assert!(encode_table(&[line(0, 1, "a-very-long-target-type", "")], &mut out).is_err());
        assert!(encode_table(&[line(0, 1, "linear", "7:0\u{0}0")], &mut out).is_err());
        assert!(encode_table(&[line(0, 0, "zero", "")], &mut out).is_err());
    }

    #[test]
    fn golden_headers_for_every_command() {
        let all = [
            Command::Version,
            Command::RemoveAll,
            Command::ListDevices,
            Command::DevCreate,
            Command::DevRemove,
            Command::DevRename,
            Command::DevSuspend,
            Command::DevStatus,
            Command::DevWait,
            Command::TableLoad,
            Command::TableClear,
            Command::TableDeps,
            Command::TableStatus,
            Command::ListVersions,
            Command::TargetMsg,
            Command::DevSetGeometry,
            Command::DevArmPoll,
            Command::GetTargetVersion,
        ];
        for (nr, cmd) in all.into_iter().enumerate() {
            assert_eq!(cmd.nr() as usize, nr);
            let mut h = header(cmd, Some(DevId::Name("dev0")), DmFlags::SKIP_LOCKFS, 7);
            let mut buf = Vec::new();
            write_request(&mut buf, &mut h, b"payload\0", 0);
            let v = cmd.min_version();
            let mut expected = vec![0u8; HEADER_SIZE + 8];
            expected[0..4].copy_from_slice(&v.major.to_ne_bytes());
            expected[4..8].copy_from_slice(&v.minor.to_ne_bytes());
            expected[12..16].copy_from_slice(&320u32.to_ne_bytes());
            expected[16..20].copy_from_slice(&312u32.to_ne_bytes());
            expected[28..32].copy_from_slice(&(1u32 << 10).to_ne_bytes());
            expected[32..36].copy_from_slice(&7u32.to_ne_bytes());
            expected[48..52].copy_from_slice(b"dev0");
            expected[312..320].copy_from_slice(b"payload\0");
            assert_eq!(buf, expected, "{cmd}");
        }
    }

    #[test]
    fn golden_rename_and_geometry_payloads() {
        let mut out = Vec::new();
        encode_string("new-name", &mut out);
        assert_eq!(out, b"new-name\0\0\0\0\0\0\0\0");
        encode_string("1 64 32 0", &mut out);
        assert_eq!(out, b"1 64 32 0\0\0\0\0\0\0\0");
        let mut h = header(
            Command::DevRemove,
            Some(DevId::Uuid("U-1")),
            DmFlags::DEFERRED_REMOVE,
            0,
        );
        let mut buf = Vec::new();
        write_request(&mut buf, &mut h, &[], 0);
        assert_eq!(&buf[28..32], &(1u32 << 17).to_ne_bytes());
        assert_eq!(
            &buf[48..52],
            &[0u8; 4],
            "name empty when addressing by uuid"
        );
        assert_eq!(&buf[176..180], b"U-1\0");
        let mut h = header(
            Command::DevStatus,
            Some(DevId::Dev(Dev::new(254, 3))),
            DmFlags::empty(),
            0,
        );
        write_request(&mut buf, &mut h, &[], 0);
        assert_eq!(&buf[40..48], &((254u64 << 8) | 3).to_ne_bytes());
    }

    #[test]
    fn golden_message() {
        let mut out = Vec::new();
        encode_message(0, "create_thin 5", &mut out).unwrap();
        assert_eq!(out.len(), 24);
        assert_eq!(&out[..8], &[0u8; 8]);
        assert_eq!(&out[8..22], b"create_thin 5\0");
        assert!(encode_message(0, "", &mut out).is_err());
    }

    fn name_record(dev: Dev, name: &str, trailer: Option<(u32, u32, Option<&str>)>) -> Vec<u8> {
        let head = crate::dm::abi::DmNameList {
            dev: dev.huge_encode(),
            next: 0,
            name_start: [0; 4],
        };
        let mut r = head.as_bytes()[..NAME_LIST_NAME_OFFSET].to_vec();
        r.extend_from_slice(name.as_bytes());
        r.push(0);
        r.resize(r.len().next_multiple_of(8), 0);
        if let Some((ev, flags, uuid)) = trailer {
            r.extend_from_slice(&ev.to_ne_bytes());
            r.extend_from_slice(&flags.to_ne_bytes());
            if let Some(u) = uuid {
                r.extend_from_slice(u.as_bytes());
                r.push(0);
                r.resize(r.len().next_multiple_of(8), 0);
            }
        }
        r
    }

    fn chain(records: Vec<Vec<u8>>) -> Vec<u8> {
        let mut out = Vec::new();
        let n = records.len();
        for (i, mut r) in records.into_iter().enumerate() {
            if i + 1 < n {
                let len = r.len() as u32;
                r[8..12].copy_from_slice(&len.to_ne_bytes());
            }
            out.extend_from_slice(&r);
        }
        out
    }

    #[test]
    fn decodes_name_lists() {
        let buf = chain(vec![
            name_record(
                Dev::new(253, 0),
                "pool",
                Some((3, NAME_LIST_HAS_UUID, Some("UUID-1"))),
            ),
            name_record(Dev::new(253, 1), "thin", Some((0, NAME_LIST_NO_UUID, None))),
        ]);
        let list = decode_name_list(&buf, true).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].name, "pool");
        assert_eq!(list[0].dev, Dev::new(253, 0));
        assert_eq!(list[0].event_nr, Some(3));
        assert_eq!(list[0].uuid.as_deref(), Some("UUID-1"));
        assert_eq!(list[1].uuid, None);
        // Old kernels: no trailer.
        let old = chain(vec![name_record(Dev::new(253, 2), "x", None)]);
        let list = decode_name_list(&old, false).unwrap();
        assert_eq!(list[0].event_nr, None);
        // Empty list.
        assert!(decode_name_list(&[0u8; 16], true).unwrap().is_empty());
    }

    #[test]
    fn malformed_name_lists_are_errors() {
        assert!(
            decode_name_list(&[], true).unwrap().is_empty(),
            "empty payload = no devices"
        );
        assert!(decode_name_list(&[1, 2, 3], true).unwrap().is_empty());
        let mut bad = name_record(Dev::new(253, 0), "abc", None);
        bad[8..12].copy_from_slice(&4u32.to_ne_bytes()); // next too small
        bad.extend_from_slice(&[0; 16]);
        assert!(decode_name_list(&bad, false).is_err());
        let mut unterminated = Dev::new(253, 0).huge_encode().to_ne_bytes().to_vec();
        unterminated.extend_from_slice(&[0, 0, 0, 0, b'a', b'b']);
        assert!(decode_name_list(&unterminated, false).is_err());
    }

    /// Two records exactly as a 4.38+ kernel writes them (native endian).
    fn golden_name_list() -> Vec<u8> {
        let mut g = Vec::new();
        // Record 0: 253:0 "pool", event 3, uuid "UUID-1"; 40 bytes.
        g.extend_from_slice(&0xfd00u64.to_ne_bytes());
        g.extend_from_slice(&40u32.to_ne_bytes());
        g.extend_from_slice(b"pool\0\0\0\0\0\0\0\0");
        g.extend_from_slice(&3u32.to_ne_bytes());
        g.extend_from_slice(&NAME_LIST_HAS_UUID.to_ne_bytes());
        g.extend_from_slice(b"UUID-1\0\0");
        // Record 1 (last, next 0): 253:1 "thin", event 0, no uuid; 32 bytes.
        g.extend_from_slice(&0xfd01u64.to_ne_bytes());
        g.extend_from_slice(&0u32.to_ne_bytes());
        g.extend_from_slice(b"thin\0\0\0\0\0\0\0\0");
        g.extend_from_slice(&0u32.to_ne_bytes());
        g.extend_from_slice(&NAME_LIST_NO_UUID.to_ne_bytes());
        g
    }

    fn reason(e: DmError) -> String {
        match e {
            DmError::Malformed { command, reason } => {
                assert_eq!(command, Command::ListDevices);
                reason
            }
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn borrowed_name_list_matches_golden_bytes() {
        let g = golden_name_list();
        assert_eq!(g.len(), 72);
        assert_eq!(
            g,
            chain(vec![
                name_record(
                    Dev::new(253, 0),
                    "pool",
                    Some((3, NAME_LIST_HAS_UUID, Some("UUID-1"))),
                ),
                name_record(Dev::new(253, 1), "thin", Some((0, NAME_LIST_NO_UUID, None))),
            ])
        );
        let list = NameList::new(&g, true);
        let entries: Vec<NameListEntry<'_>> = list.iter().map(|e| e.unwrap()).collect();
        assert_eq!(
            entries,
            vec![
                NameListEntry {
                    dev: Dev::new(253, 0),
                    name: Cow::Borrowed("pool"),
                    event_nr: Some(3),
                    uuid: Some(Cow::Borrowed("UUID-1")),
                },
                NameListEntry {
                    dev: Dev::new(253, 1),
                    name: Cow::Borrowed("thin"),
                    event_nr: Some(0),
                    uuid: None,
                },
            ]
        );
        // Borrowed from the payload, not copied.
        assert!(matches!(entries[0].name, Cow::Borrowed(_)));
        assert!(matches!(entries[0].uuid, Some(Cow::Borrowed(_))));
        assert_eq!(entries[0].name.as_ptr(), g[12..].as_ptr());
        assert_eq!(entries[1].name.as_ptr(), g[52..].as_ptr());
        // The owned decoder is the same walk, collected.
        let owned = decode_name_list(&g, true).unwrap();
        let converted: Vec<DeviceEntry> = entries.into_iter().map(|e| e.into_owned()).collect();
        assert_eq!(owned, converted);
        assert_eq!(list.to_vec().unwrap(), owned);
        // Without the trailer the same bytes give names only.
        let old: Vec<_> = NameList::new(&g, false)
            .into_iter()
            .map(|e| e.unwrap())
            .collect();
        assert_eq!(old.len(), 2);
        assert_eq!((old[0].event_nr, old[0].uuid.as_deref()), (None, None));
        assert_eq!(old[1].name, "thin");
        // Iterating twice gives the same entries; `&NameList` iterates too.
        assert_eq!((&list).into_iter().count(), 2);
        assert_eq!(list.iter().count(), 2);
    }

    #[test]
    fn borrowed_name_list_empty_replies() {
        for payload in [&[][..], &[1, 2, 3][..], &[0u8; 16][..], &[0u8; 8][..]] {
            for trailer in [true, false] {
                let mut it = NameList::new(payload, trailer).iter();
                assert!(it.next().is_none(), "{payload:?}");
                assert!(it.next().is_none());
                assert!(decode_name_list(payload, trailer).unwrap().is_empty());
            }
        }
    }

    #[test]
    fn borrowed_name_list_errors_name_the_fault() {
        let g = golden_name_list();
        // `next` of record 0 too small: the record (bounded by it) has no
        // room for its name.
        let mut bad = g.clone();
        bad[8..12].copy_from_slice(&4u32.to_ne_bytes());
        let mut it = NameList::new(&bad, true).iter();
        assert_eq!(
            reason(it.next().unwrap().unwrap_err()),
            "name of record at 0 is not NUL-terminated"
        );
        assert!(it.next().is_none(), "fused after an error");
        // `next` past the end: entry 0, then the error, then nothing.
        bad[8..12].copy_from_slice(&72u32.to_ne_bytes());
        let mut it = NameList::new(&bad, true).iter();
        assert_eq!(it.next().unwrap().unwrap().name, "pool");
        assert_eq!(
            reason(it.next().unwrap().unwrap_err()),
            "record at 0 points to 72 bytes ahead, outside the reply"
        );
        assert!(it.next().is_none());
        assert_eq!(
            reason(decode_name_list(&bad, true).unwrap_err()),
            "record at 0 points to 72 bytes ahead, outside the reply"
        );
        // Record 1 cut short: fewer than 8 bytes for its dev.
        let e = NameList::new(&g[..44], true).iter().nth(1).unwrap();
        assert_eq!(reason(e.unwrap_err()), "record at 40 is cut short");
        // Record 1's name without its NUL.
        let e = NameList::new(&g[..56], true).iter().nth(1).unwrap();
        assert_eq!(
            reason(e.unwrap_err()),
            "name of record at 40 is not NUL-terminated"
        );
        // Record 0's uuid without its NUL (the uuid fills the record).
        let mut bad = g.clone();
        bad[32..40].copy_from_slice(b"UUID-123");
        let mut it = NameList::new(&bad, true).iter();
        assert_eq!(
            reason(it.next().unwrap().unwrap_err()),
            "uuid of \"pool\" is not NUL-terminated"
        );
        assert!(it.next().is_none(), "fused after an error");
        // Without the trailer the uuid is not read, so not an error.
        assert_eq!(NameList::new(&bad, false).to_vec().unwrap().len(), 2);
    }

    #[test]
    fn borrowed_name_list_non_utf8_is_lossy_like_the_owned_decoder() {
        let r = name_record(
            Dev::new(253, 7),
            "ab\u{0}",
            Some((1, NAME_LIST_HAS_UUID, Some("u"))),
        );
        let mut r = r;
        r[12..14].copy_from_slice(&[0xff, b'x']); // name "\xffx"
        let e = NameList::new(&r, true).iter().next().unwrap().unwrap();
        assert_eq!(e.name, "\u{fffd}x");
        assert!(matches!(e.name, Cow::Owned(_)));
        assert_eq!(decode_name_list(&r, true).unwrap()[0].name, "\u{fffd}x");
    }

    #[test]
    fn record_walk_decodes_only_what_is_asked_for() {
        let g = golden_name_list();
        let list = NameList::new(&g, true);
        let records: Vec<NameRecord<'_>> = list.records().map(|r| r.unwrap()).collect();
        assert_eq!(
            records.iter().map(NameRecord::dev).collect::<Vec<_>>(),
            [Dev::new(253, 0), Dev::new(253, 1)]
        );
        assert_eq!(records[0].name_bytes().unwrap(), b"pool");
        assert_eq!(records[1].name_bytes().unwrap().as_ptr(), g[52..].as_ptr());
        let entries: Vec<_> = records.iter().map(|r| r.entry().unwrap()).collect();
        assert_eq!(entries, list.iter().map(|e| e.unwrap()).collect::<Vec<_>>());
        // A name without its NUL: the walk still counts the record (its
        // bounds are fine); reading the name says what is wrong.
        let mut bad = g.clone();
        bad[12..40].fill(b'x');
        let recs: Vec<_> = NameList::new(&bad, true).records().collect();
        assert_eq!(recs.len(), 2);
        let e = recs[0].as_ref().unwrap().name_bytes().unwrap_err();
        assert!(reason(e).contains("not NUL-terminated"));
        assert_eq!(recs[1].as_ref().unwrap().name_bytes().unwrap(), b"thin");
        // A `next` pointing outside the reply: one error after the record.
        let mut far = g.clone();
        far[8..12].copy_from_slice(&4000u32.to_ne_bytes());
        let mut recs: Vec<_> = NameList::new(&far, true).records().collect();
        assert_eq!(recs.len(), 2);
        assert!(recs[0].is_ok());
        assert!(reason(recs.pop().unwrap().unwrap_err()).contains("outside the reply"));
        // Empty replies have no records.
        assert_eq!(NameList::new(&[], true).records().count(), 0);
        assert_eq!(NameList::new(&[0u8; 16], true).records().count(), 0);
    }

    #[test]
    fn borrowed_and_owned_name_lists_agree_on_damaged_payloads() {
        let g = golden_name_list();
        let mut cases: Vec<Vec<u8>> = (0..=g.len()).map(|n| g[..n].to_vec()).collect();
        for i in 0..g.len() {
            for v in [0u8, 0x01, 0x28, 0xff] {
                let mut c = g.clone();
                c[i] = v;
                cases.push(c);
            }
        }
        for c in &cases {
            for trailer in [true, false] {
                let mut it = NameList::new(c, trailer).iter();
                let mut borrowed = Vec::new();
                let mut error = None;
                for e in it.by_ref() {
                    match e {
                        Ok(e) => borrowed.push(e.into_owned()),
                        Err(e) => {
                            error = Some(e.to_string());
                            break;
                        }
                    }
                }
                assert!(it.next().is_none(), "fused: {c:?}");
                // The record walk never yields fewer records than entries,
                // and every entry is its record's decode.
                let recs: Vec<_> = NameList::new(c, trailer)
                    .records()
                    .map_while(|r| r.ok())
                    .collect();
                assert!(recs.len() >= borrowed.len(), "{c:?}");
                for (r, e) in recs.iter().zip(&borrowed) {
                    assert_eq!(&r.entry().unwrap().into_owned(), e, "{c:?}");
                }
                match decode_name_list(c, trailer) {
                    Ok(owned) => assert_eq!((owned, None), (borrowed, error), "{c:?}"),
                    Err(e) => assert_eq!(Some(e.to_string()), error, "{c:?}"),
                }
            }
        }
    }

    #[test]
    fn find_nul_matches_a_bytewise_search() {
        for len in 0..40 {
            for nul in 0..=len {
                for fill in [b'a', 0x01, 0x80, 0xff] {
                    let mut b = vec![fill; len];
                    if nul < len {
                        b[nul] = 0;
                    }
                    // A second NUL later must not be found first.
                    if nul + 3 < len {
                        b[nul + 3] = 0;
                    }
                    // Every start offset, so the NUL sits at every word position.
                    for off in 0..len.min(9) {
                        let s = &b[off..];
                        assert_eq!(find_nul(s), s.iter().position(|&c| c == 0), "{s:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn decodes_status_specs() {
        // Output specs: next counts from the payload start.
        let mut p = Vec::new();
        let mut s = DmTargetSpec::new_zeroed();
        s.length = 100;
        s.next = 48;
        s.target_type[..4].copy_from_slice(b"thin");
        p.extend_from_slice(s.as_bytes());
        p.extend_from_slice(b"12 99\0\0\0");
        let mut s2 = DmTargetSpec::new_zeroed();
        s2.sector_start = 100;
        s2.length = 10;
        s2.target_type[..5].copy_from_slice(b"error");
        p.extend_from_slice(s2.as_bytes());
        p.extend_from_slice(b"\0\0\0\0\0\0\0\0");
        let lines = decode_specs(Command::TableStatus, &p, 2).unwrap();
        assert_eq!(
            lines,
            vec![line(0, 100, "thin", "12 99"), line(100, 10, "error", "")]
        );
        assert!(decode_specs(Command::TableStatus, &p, 3).is_err());
        assert!(decode_specs(Command::TableStatus, &p[..44], 1).is_err());
        let mut backwards = p.clone();
        backwards[20..24].copy_from_slice(&0u32.to_ne_bytes());
        assert!(decode_specs(Command::TableStatus, &backwards, 2).is_err());
    }

    #[test]
    fn decodes_deps_and_versions() {
        let mut p = 2u32.to_ne_bytes().to_vec();
        p.extend_from_slice(&0u32.to_ne_bytes());
        p.extend_from_slice(&Dev::new(7, 0).huge_encode().to_ne_bytes());
        p.extend_from_slice(&Dev::new(7, 1).huge_encode().to_ne_bytes());
        assert_eq!(
            decode_deps(&p).unwrap(),
            vec![Dev::new(7, 0), Dev::new(7, 1)]
        );
        assert!(decode_deps(&p[..20]).is_err());

        let mut v = Vec::new();
        v.extend_from_slice(&24u32.to_ne_bytes());
        for x in [1u32, 22, 0] {
            v.extend_from_slice(&x.to_ne_bytes());
        }
        v.extend_from_slice(b"thin\0\0\0\0");
        v.extend_from_slice(&0u32.to_ne_bytes());
        for x in [1u32, 4, 0] {
            v.extend_from_slice(&x.to_ne_bytes());
        }
        v.extend_from_slice(b"linear\0\0");
        let vs = decode_versions(Command::ListVersions, &v).unwrap();
        assert_eq!(vs[0].name, "thin");
        assert_eq!(vs[0].version, Version::new(1, 22, 0));
        assert_eq!(vs[1].name, "linear");
        assert!(decode_versions(Command::ListVersions, &v[..10]).is_err());
    }

    #[test]
    fn header_and_payload_bounds() {
        assert!(decode_header(Command::Version, &[0u8; 100]).is_err());
        let mut h = header(Command::Version, None, DmFlags::empty(), 0);
        h.data_size = 400;
        let buf = vec![0u8; 350];
        assert!(payload(Command::Version, &h, &buf).is_err());
        h.data_start = 10;
        assert!(payload(Command::Version, &h, &[0u8; 500]).is_err());
        // Found by the dm_reply fuzz target: data_start past both data_size
        // and the buffer must be an error, not a slice panic.
        h.data_start = 100_000;
        h.data_size = 320;
        assert!(payload(Command::Version, &h, &[0u8; 400]).is_err());
        // The kernel's "no payload": data_size 305 < data_start 312.
        h.data_start = 312;
        h.data_size = 305;
        assert_eq!(
            payload(Command::Version, &h, &[0u8; 400]).unwrap(),
            &[] as &[u8]
        );
    }
}
