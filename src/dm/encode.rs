//! Encoding of requests: the `dm_ioctl` header and the payloads of
//! `TABLE_LOAD`, `TARGET_MSG`, `DEV_RENAME` and `DEV_SET_GEOMETRY`.

use super::abi::{
    Command, Dev, DmFlags, DmIoctl, DmTargetMsg, DmTargetSpec, HEADER_SIZE, TARGET_SPEC_SIZE,
};
use super::error::{DmError, Result};
use super::table_line::TableLine;
use zerocopy::{FromZeros, IntoBytes};

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

/// Copies `s` into a NUL-padded field, cut to leave room for the NUL.
pub(crate) fn copy_str_into(dst: &mut [u8], s: &str) {
    let n = s.len().min(dst.len().saturating_sub(1));
    dst[..n].copy_from_slice(&s.as_bytes()[..n]);
}

/// Builds a request header.
pub(crate) fn header(
    command: Command,
    id: Option<DevId<'_>>,
    flags: DmFlags,
    event_nr: u32,
) -> DmIoctl {
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
///
/// `stale` is how far an earlier request or reply may have written into
/// `buf`: the bytes from the end of this request up to there (within
/// `data_size`) are zeroed, so what the kernel does not write in its reply
/// (padding, fields of newer interfaces) reads as zero, never as old data.
/// Only that stretch is cleared, not the whole buffer.
pub(crate) fn write_request(
    buf: &mut Vec<u8>,
    hdr: &mut DmIoctl,
    payload: &[u8],
    min_size: usize,
    stale: usize,
) -> usize {
    let needed = HEADER_SIZE + payload.len();
    let size = needed.max(min_size);
    if buf.len() < size {
        buf.resize(size, 0);
    }
    hdr.data_size = u32::try_from(size).unwrap_or(u32::MAX);
    buf[..HEADER_SIZE].copy_from_slice(hdr.as_bytes());
    buf[HEADER_SIZE..needed].copy_from_slice(payload);
    if let Some(old) = buf.get_mut(needed..stale.min(size)) {
        old.fill(0);
    }
    size
}

/// Encodes table lines as `TABLE_LOAD` wants them: each spec followed by its
/// NUL-terminated params, padded to 8 bytes, `next` relative to the spec.
pub(crate) fn encode_table(lines: &[TableLine], out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    if lines.is_empty() {
        return Err(DmError::InvalidArgument {
            what: "table",
            value: String::new(),
            reason: "a table needs at least one target line".into(),
        });
    }
    for line in lines {
        line.validate().map_err(|e| DmError::InvalidArgument {
            what: "table line",
            value: line.to_string(),
            reason: e.to_string(),
        })?;
        let tt = line.target_type().as_bytes();
        let params_len = (line.params().len() + 1).next_multiple_of(8);
        let mut spec = DmTargetSpec::new_zeroed();
        spec.sector_start = line.start();
        spec.length = line.length();
        spec.next =
            u32::try_from(TARGET_SPEC_SIZE + params_len).map_err(|_| DmError::InvalidArgument {
                what: "target parameters",
                value: line.target_type().to_string(),
                reason: "parameters longer than 4 GiB".into(),
            })?;
        spec.target_type[..tt.len()].copy_from_slice(tt);
        out.extend_from_slice(spec.as_bytes());
        let start = out.len();
        out.extend_from_slice(line.params().as_bytes());
        out.resize(start + params_len, 0);
    }
    Ok(())
}

/// Encodes a `dm_target_msg`: sector, then the NUL-terminated message.
pub(crate) fn encode_message(sector: u64, message: &str, out: &mut Vec<u8>) -> Result<()> {
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
pub(crate) fn encode_string(s: &str, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(s.as_bytes());
    out.push(0);
    out.resize(out.len().next_multiple_of(8), 0);
}

#[cfg(test)]
mod tests;
