//! Decoding of kernel replies: the header, its payload bounds, and the
//! payloads of `TABLE_STATUS`/`DEV_WAIT`, `TABLE_DEPS`, `LIST_VERSIONS` and
//! `TARGET_MSG` (`LIST_DEVICES` is [`super::name_list`]).
//!
//! Decoders are pure functions over byte slices: any input, however malformed,
//! gives either a value or a [`DmError::Malformed`], never a panic or an
//! out-of-bounds read. The fuzz targets drive them directly.

use super::abi::{
    Command, Dev, DmFlags, DmIoctl, DmTargetDeps, DmTargetSpec, DmTargetVersions, Version,
    HEADER_SIZE, MAX_TYPE_NAME, NAME_LEN, TARGET_SPEC_SIZE, UUID_LEN,
};
use super::error::{DmError, Result};
use super::table_line::TableLine;
use std::borrow::Cow;
use std::mem::size_of;
use zerocopy::FromBytes;

/// A NUL-padded fixed-size string as the kernel stores names and uuids.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FixedStr<const N: usize> {
    bytes: [u8; N],
}

impl<const N: usize> FixedStr<N> {
    pub(crate) fn from_field(field: &[u8; N]) -> Self {
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

/// One entry of `DM_LIST_VERSIONS` / `DM_GET_TARGET_VERSION`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetVersion {
    /// Target type name.
    pub name: String,
    /// Target version.
    pub version: Version,
}

pub(super) fn malformed<T>(command: Command, reason: impl Into<String>) -> Result<T> {
    Err(DmError::Malformed {
        command,
        reason: reason.into(),
    })
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

pub(super) fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    let bytes = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes(bytes.try_into().ok()?))
}

pub(super) fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    let bytes = b.get(at..at.checked_add(8)?)?;
    Some(u64::from_ne_bytes(bytes.try_into().ok()?))
}

/// Reads a NUL-terminated string starting at `at`; returns its bytes (without
/// the NUL) and the index of its NUL.
pub(super) fn read_cstr_bytes(b: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = b.get(at..)?;
    let nul = find_nul(rest)?;
    Some((&rest[..nul], at + nul))
}

/// Index of the first NUL, eight bytes at a time (a name or uuid is found
/// in a few loads instead of one per byte; this matters under emulation).
pub(super) fn find_nul(b: &[u8]) -> Option<usize> {
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
pub(super) fn lossy(b: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(b),
    }
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
        // As the kernel reports it: not our validation's business.
        out.push(TableLine::new_unchecked(
            spec.sector_start,
            spec.length,
            target_type,
            params,
        ));
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
mod tests;
