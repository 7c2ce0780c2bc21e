//! Tests of the `DM_LIST_DEVICES` decoder.

use super::*;
use crate::dm::abi::NAME_LIST_NO_UUID;
use crate::dm::error::DmError;
use zerocopy::IntoBytes;

/// A kernel that writes event numbers, flags and uuids.
const NEW: Version = Version::new(4, 45, 0);
/// A kernel that writes event numbers only (such as 5.10's 4.43).
const MID: Version = Version::new(4, 43, 0);
/// A kernel that writes names only.
const OLD: Version = Version::new(4, 37, 0);

/// The owned decode of a payload, as `Control::list_devices` does it.
fn decode_name_list(payload: &[u8], version: Version) -> Result<Vec<DeviceEntry>> {
    NameList::new(payload, version).to_vec()
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
    let list = decode_name_list(&buf, NEW).unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].name, "pool");
    assert_eq!(list[0].dev, Dev::new(253, 0));
    assert_eq!(list[0].event_nr, Some(3));
    assert_eq!(list[0].uuid.as_deref(), Some("UUID-1"));
    assert_eq!(list[1].uuid, None);
    // Old kernels: no trailer.
    let old = chain(vec![name_record(Dev::new(253, 2), "x", None)]);
    let list = decode_name_list(&old, OLD).unwrap();
    assert_eq!(list[0].event_nr, None);
    // Empty list.
    assert!(decode_name_list(&[0u8; 16], NEW).unwrap().is_empty());
}

#[test]
fn malformed_name_lists_are_errors() {
    assert!(
        decode_name_list(&[], NEW).unwrap().is_empty(),
        "empty payload = no devices"
    );
    assert!(decode_name_list(&[1, 2, 3], NEW).unwrap().is_empty());
    let mut bad = name_record(Dev::new(253, 0), "abc", None);
    bad[8..12].copy_from_slice(&4u32.to_ne_bytes()); // next too small
    bad.extend_from_slice(&[0; 16]);
    assert!(decode_name_list(&bad, OLD).is_err());
    let mut unterminated = Dev::new(253, 0).huge_encode().to_ne_bytes().to_vec();
    unterminated.extend_from_slice(&[0, 0, 0, 0, b'a', b'b']);
    assert!(decode_name_list(&unterminated, OLD).is_err());
}

/// Two records exactly as a 4.45+ kernel writes them (native endian).
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
    let list = NameList::new(&g, NEW);
    let entries: Vec<Entry<'_>> = list.iter().map(|e| e.unwrap()).collect();
    assert_eq!(
        entries,
        vec![
            Entry {
                dev: Dev::new(253, 0),
                name: Cow::Borrowed("pool"),
                event_nr: Some(3),
                uuid: Some(Cow::Borrowed("UUID-1")),
            },
            Entry {
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
    let owned = decode_name_list(&g, NEW).unwrap();
    let converted: Vec<DeviceEntry> = entries.into_iter().map(|e| e.into_owned()).collect();
    assert_eq!(owned, converted);
    assert_eq!(list.to_vec().unwrap(), owned);
    // Without the trailer the same bytes give names only.
    let old: Vec<_> = NameList::new(&g, OLD)
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
        for version in [NEW, MID, OLD] {
            let mut it = NameList::new(payload, version).iter();
            assert!(it.next().is_none(), "{payload:?}");
            assert!(it.next().is_none());
            assert!(decode_name_list(payload, version).unwrap().is_empty());
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
    let mut it = NameList::new(&bad, NEW).iter();
    assert_eq!(
        reason(it.next().unwrap().unwrap_err()),
        "name of record at 0 is not NUL-terminated"
    );
    assert!(it.next().is_none(), "fused after an error");
    // `next` past the end: entry 0, then the error, then nothing.
    bad[8..12].copy_from_slice(&72u32.to_ne_bytes());
    let mut it = NameList::new(&bad, NEW).iter();
    assert_eq!(it.next().unwrap().unwrap().name, "pool");
    assert_eq!(
        reason(it.next().unwrap().unwrap_err()),
        "record at 0 points to 72 bytes ahead, outside the reply"
    );
    assert!(it.next().is_none());
    assert_eq!(
        reason(decode_name_list(&bad, NEW).unwrap_err()),
        "record at 0 points to 72 bytes ahead, outside the reply"
    );
    // Record 1 cut short: fewer than 8 bytes for its dev.
    let e = NameList::new(&g[..44], NEW).iter().nth(1).unwrap();
    assert_eq!(reason(e.unwrap_err()), "record at 40 is cut short");
    // Record 1's name without its NUL.
    let e = NameList::new(&g[..56], NEW).iter().nth(1).unwrap();
    assert_eq!(
        reason(e.unwrap_err()),
        "name of record at 40 is not NUL-terminated"
    );
    // Record 0's uuid without its NUL (the uuid fills the record).
    let mut bad = g.clone();
    bad[32..40].copy_from_slice(b"UUID-123");
    let mut it = NameList::new(&bad, NEW).iter();
    assert_eq!(
        reason(it.next().unwrap().unwrap_err()),
        "uuid of \"pool\" is not NUL-terminated"
    );
    assert!(it.next().is_none(), "fused after an error");
    // Without the trailer the uuid is not read, so not an error.
    assert_eq!(NameList::new(&bad, OLD).to_vec().unwrap().len(), 2);
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
    let e = NameList::new(&r, NEW).iter().next().unwrap().unwrap();
    assert_eq!(e.name, "\u{fffd}x");
    assert!(matches!(e.name, Cow::Owned(_)));
    assert_eq!(decode_name_list(&r, NEW).unwrap()[0].name, "\u{fffd}x");
}

#[test]
fn record_walk_decodes_only_what_is_asked_for() {
    let g = golden_name_list();
    let list = NameList::new(&g, NEW);
    let records: Vec<Record<'_>> = list.records().map(|r| r.unwrap()).collect();
    assert_eq!(
        records.iter().map(Record::dev).collect::<Vec<_>>(),
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
    let recs: Vec<_> = NameList::new(&bad, NEW).records().collect();
    assert_eq!(recs.len(), 2);
    let e = recs[0].as_ref().unwrap().name_bytes().unwrap_err();
    assert!(reason(e).contains("not NUL-terminated"));
    assert_eq!(recs[1].as_ref().unwrap().name_bytes().unwrap(), b"thin");
    // A `next` pointing outside the reply: one error after the record.
    let mut far = g.clone();
    far[8..12].copy_from_slice(&4000u32.to_ne_bytes());
    let mut recs: Vec<_> = NameList::new(&far, NEW).records().collect();
    assert_eq!(recs.len(), 2);
    assert!(recs[0].is_ok());
    assert!(reason(recs.pop().unwrap().unwrap_err()).contains("outside the reply"));
    // Empty replies have no records.
    assert_eq!(NameList::new(&[], NEW).records().count(), 0);
    assert_eq!(NameList::new(&[0u8; 16], NEW).records().count(), 0);
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
        for version in [NEW, MID, OLD] {
            let mut it = NameList::new(c, version).iter();
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
            let recs: Vec<_> = NameList::new(c, version)
                .records()
                .map_while(|r| r.ok())
                .collect();
            assert!(recs.len() >= borrowed.len(), "{c:?}");
            for (r, e) in recs.iter().zip(&borrowed) {
                assert_eq!(&r.entry().unwrap().into_owned(), e, "{c:?}");
            }
            match decode_name_list(c, version) {
                Ok(owned) => assert_eq!((owned, None), (borrowed, error), "{c:?}"),
                Err(e) => assert_eq!(Some(e.to_string()), error, "{c:?}"),
            }
        }
    }
}

/// Issue #17: a 4.43 kernel (Linux 5.10) writes `event_nr` after each name
/// and leaves the next 4 bytes alone. Stale bytes there (from an earlier,
/// longer reply in the same buffer) must not read as a flags word with
/// `HAS_UUID`, nor the bytes after it as a uuid.
#[test]
fn event_nr_only_layout_ignores_stale_bytes_after_it() {
    // Record 0: 253:0 "pool", event 3, then 4 stale bytes of padding;
    // record 1 (last): 253:1 "thin", event 9, then stale bytes to the end.
    let mut g = Vec::new();
    g.extend_from_slice(&0xfd00u64.to_ne_bytes());
    g.extend_from_slice(&32u32.to_ne_bytes());
    g.extend_from_slice(b"pool\0\0\0\0\0\0\0\0");
    g.extend_from_slice(&3u32.to_ne_bytes());
    g.extend_from_slice(&[0xff; 4]); // stale: every flag bit set
    g.extend_from_slice(&0xfd01u64.to_ne_bytes());
    g.extend_from_slice(&0u32.to_ne_bytes());
    g.extend_from_slice(b"thin\0\0\0\0\0\0\0\0");
    g.extend_from_slice(&9u32.to_ne_bytes());
    g.extend_from_slice(&NAME_LIST_HAS_UUID.to_ne_bytes()); // stale
    g.extend_from_slice(b"0 8 zero 12 99 garbage without a NUL");
    let want = vec![
        DeviceEntry {
            name: "pool".into(),
            dev: Dev::new(253, 0),
            event_nr: Some(3),
            uuid: None,
        },
        DeviceEntry {
            name: "thin".into(),
            dev: Dev::new(253, 1),
            event_nr: Some(9),
            uuid: None,
        },
    ];
    assert_eq!(decode_name_list(&g, MID).unwrap(), want);
    for minor in [38, 44] {
        assert_eq!(
            decode_name_list(&g, Version::new(4, minor, 0)).unwrap(),
            want
        );
    }
    // The record walk agrees, and names still borrow the payload.
    let list = NameList::new(&g, MID);
    assert_eq!(list.records().count(), 2);
    assert!(list
        .iter()
        .all(|e| matches!(e.unwrap().name, Cow::Borrowed(_))));
    // Read as a 4.45 layout the same bytes are what the bug report saw.
    let e = decode_name_list(&g, NEW).unwrap_err();
    assert!(reason(e).contains("is not NUL-terminated"));
    // Before 4.38 there is no event number either.
    let old = decode_name_list(&g, OLD).unwrap();
    assert_eq!((old[0].event_nr, old[1].event_nr), (None, None));
}

#[test]
fn trailer_fields_follow_the_interface_version() {
    assert_eq!(Trailer::of(Version::new(4, 37, 0)), Trailer::None);
    assert_eq!(Trailer::of(Version::new(4, 38, 0)), Trailer::EventNr);
    assert_eq!(Trailer::of(Version::new(4, 44, 9)), Trailer::EventNr);
    assert_eq!(Trailer::of(Version::new(4, 45, 0)), Trailer::EventNrAndUuid);
    assert_eq!(Trailer::of(Version::new(4, 50, 0)), Trailer::EventNrAndUuid);
    assert_eq!(Trailer::of(Version::new(5, 0, 0)), Trailer::None);
}
