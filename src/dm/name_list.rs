//! The `DM_LIST_DEVICES` reply: [`NameList`] (also at `dm::NameList`),
//! decoded lazily in place, and what it hands out: borrowed [`Entry`]s
//! ([`NameList::iter`]), undecoded [`Record`]s ([`NameList::records`]) and
//! owned [`DeviceEntry`]s ([`NameList::to_vec`], `Control::list_devices`).
//!
//! Each record is `dev: u64, next: u32`, the NUL-terminated name at offset
//! 12, and then, 8-aligned, a trailer that depends on the interface version
//! of the kernel that wrote it:
//!
//! - before 4.38: nothing;
//! - 4.38 to 4.44: `event_nr: u32` (the 4 bytes after it are padding the
//!   kernel does not write);
//! - 4.45 and later: `event_nr: u32, flags: u32` and, with
//!   `DM_NAME_LIST_FLAG_HAS_UUID`, the NUL-terminated uuid.
//!
//! Each field is read only from a kernel that writes it: bytes the kernel
//! leaves alone are whatever the buffer held before.

use super::abi::{Command, Dev, Version, NAME_LIST_HAS_UUID, NAME_LIST_NAME_OFFSET};
use super::decode::{lossy, malformed, read_cstr_bytes, read_u32, read_u64};
use super::error::Result;
use std::borrow::Cow;

/// First interface version that writes `event_nr` after each name.
const EVENT_NR_SINCE: Version = Version::new(4, 38, 0);
/// First interface version that writes the flags word (and uuids) after `event_nr`.
const UUID_SINCE: Version = Version::new(4, 45, 0);

/// What follows each name, by the interface version of the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trailer {
    /// Nothing (before 4.38).
    None,
    /// `event_nr` only (4.38 to 4.44).
    EventNr,
    /// `event_nr`, flags and the uuid (4.45 and later).
    EventNrAndUuid,
}

impl Trailer {
    fn of(version: Version) -> Trailer {
        if version.supports(UUID_SINCE) {
            Trailer::EventNrAndUuid
        } else if version.supports(EVENT_NR_SINCE) {
            Trailer::EventNr
        } else {
            Trailer::None
        }
    }
}

/// One entry of a `DM_LIST_DEVICES` reply, borrowed from the reply buffer.
///
/// The strings borrow the buffer; only a name or uuid that is not UTF-8 is
/// copied (invalid sequences become U+FFFD, as in [`DeviceEntry`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Device number.
    pub dev: Dev,
    /// Device name.
    pub name: Cow<'a, str>,
    /// Event counter (interface 4.38 and later).
    pub event_nr: Option<u32>,
    /// Uuid, when the kernel returns uuids (interface 4.45 and later) and the device has one.
    pub uuid: Option<Cow<'a, str>>,
}

impl Entry<'_> {
    /// The owned entry, as [`NameList::to_vec`] and `Control::list_devices` return it.
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
    trailer: Trailer,
}

impl<'a> NameList<'a> {
    /// Wraps a payload written by a kernel of interface `version`, which
    /// says what follows each name.
    pub(crate) fn new(payload: &'a [u8], version: Version) -> Self {
        NameList {
            payload,
            trailer: Trailer::of(version),
        }
    }

    /// The entries in kernel order. A malformed record yields one error,
    /// after the entries before it, and ends the iteration.
    pub fn iter(&self) -> Iter<'a> {
        Iter {
            records: self.records(),
        }
    }

    /// The records in kernel order, with nothing decoded but the device
    /// number: the cheapest walk, for callers that count devices or look at
    /// few names. Record bounds are checked here; a record's name and
    /// trailer are checked when [`Record::name_bytes`] or
    /// [`Record::entry`] reads them.
    pub fn records(&self) -> Records<'a> {
        Records {
            payload: self.payload,
            trailer: self.trailer,
            at: 0,
            state: IterState::Record,
        }
    }

    /// Every entry, owned; the first malformed record makes it an error.
    pub fn to_vec(&self) -> Result<Vec<DeviceEntry>> {
        self.iter().map(|e| e.map(Entry::into_owned)).collect()
    }
}

impl<'a> IntoIterator for NameList<'a> {
    type Item = Result<Entry<'a>>;
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl<'a> IntoIterator for &NameList<'a> {
    type Item = Result<Entry<'a>>;
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
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
pub struct Record<'a> {
    /// The record's bytes, from its start to the next record (or the end).
    record: &'a [u8],
    /// Where the record starts in the payload (the trailer is 8-aligned there).
    at: usize,
    dev: u64,
    trailer: Trailer,
}

impl<'a> Record<'a> {
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
    pub fn entry(&self) -> Result<Entry<'a>> {
        let (at, record) = (self.at, self.record);
        let (name, nul) = self.name_and_nul()?;
        let mut entry = Entry {
            dev: self.dev(),
            name: lossy(name),
            event_nr: None,
            uuid: None,
        };
        if self.trailer != Trailer::None {
            // `nul` is relative to the record; the trailer is 8-aligned in the payload.
            let t = (at + nul + 1).next_multiple_of(8) - at;
            if self.trailer == Trailer::EventNr {
                entry.event_nr = read_u32(record, t);
            } else if let (Some(ev), Some(flags)) = (read_u32(record, t), read_u32(record, t + 4)) {
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
pub struct Records<'a> {
    payload: &'a [u8],
    trailer: Trailer,
    at: usize,
    state: IterState,
}

impl<'a> Records<'a> {
    fn fail(&mut self, reason: String) -> Option<Result<Record<'a>>> {
        self.state = IterState::Done;
        Some(malformed(Command::ListDevices, reason))
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>>;

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
        let record = Record {
            record: &payload[at..end],
            at,
            dev,
            trailer: self.trailer,
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

impl std::iter::FusedIterator for Records<'_> {}

/// Iterator over a `DM_LIST_DEVICES` payload; see [`NameList`].
#[derive(Clone, Debug)]
pub struct Iter<'a> {
    records: Records<'a>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = Result<Entry<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        let entry = self.records.next()?.and_then(|r| r.entry());
        if entry.is_err() {
            self.records.state = IterState::Done;
        }
        Some(entry)
    }
}

impl std::iter::FusedIterator for Iter<'_> {}

/// One entry of `DM_LIST_DEVICES`, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceEntry {
    /// Device name.
    pub name: String,
    /// Device number.
    pub dev: Dev,
    /// Event counter (interface 4.38 and later).
    pub event_nr: Option<u32>,
    /// Uuid, when the kernel returns uuids (interface 4.45 and later) and the device has one.
    pub uuid: Option<String>,
}

#[cfg(test)]
mod tests;
