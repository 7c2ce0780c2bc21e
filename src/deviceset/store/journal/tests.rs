use super::*;
use crate::deviceset::store::MetadataStore;
use crate::testutil::Scratch;
use std::collections::BTreeMap;

fn rec(id: &str, thin: u32) -> DeviceRecord {
    DeviceRecord::new(id, None, thin, 1 << 20)
}

fn store() -> (Scratch, MetadataStore) {
    let dir = Scratch::new("journal");
    let store = MetadataStore::open(dir.path(), 64).unwrap();
    (dir, store)
}

fn journal_bytes(dir: &Scratch) -> Vec<u8> {
    std::fs::read(dir.path().join("metadata").join(JOURNAL_FILE)).unwrap()
}

#[test]
fn marked_intents_resolve_and_unmarked_ones_do_not() {
    let (_dir, store) = store();
    let (mut j, replay) = store.open_journal().unwrap();
    assert_eq!(replay, Replay::default());
    let a = j.intend_create(&rec("a", 1)).unwrap();
    j.done(a, false).unwrap();
    let b = j.intend_create(&rec("b", 2)).unwrap();
    j.cancel(b).unwrap();
    let mut a2 = rec("a", 1);
    a2.initialized = true;
    j.update(&a2).unwrap();
    let d = j.intend_delete("old", 7, None).unwrap();
    j.done(d, false).unwrap();
    // Interrupted: intent durable, no marker.
    j.intend_create(&rec("c", 3)).unwrap();
    j.intend_delete("x", 9, None).unwrap();
    drop(j);

    let (j, replay) = store.open_journal().unwrap();
    assert_eq!(replay.entries, 9);
    assert_eq!(replay.torn_bytes, 0);
    assert_eq!(replay.changes.get("a"), Some(&Some(a2.clone())));
    assert_eq!(replay.changes.get("old"), Some(&None));
    assert!(
        !replay.changes.contains_key("b"),
        "a cancelled create changes nothing"
    );
    assert!(!replay.changes.contains_key("c"));
    assert_eq!(
        replay.unresolved,
        vec![
            Unresolved::Create {
                seq: replay.unresolved[0].seq(),
                record: rec_like(&replay, "c")
            },
            Unresolved::Delete {
                seq: replay.unresolved[1].seq(),
                device_id: "x".into(),
                thin_id: 9,
                identity: None
            }
        ]
    );
    assert_eq!(
        j.touched().iter().map(String::as_str).collect::<Vec<_>>(),
        ["a", "b", "c", "old", "x"]
    );
    let mut devices = BTreeMap::from([("old".to_string(), rec("old", 7))]);
    replay.apply(&mut devices);
    assert_eq!(devices.keys().collect::<Vec<_>>(), ["a"]);
    assert!(devices["a"].initialized);
}

/// The unresolved create's record as written (its created_at is the clock's).
fn rec_like(replay: &Replay, id: &str) -> DeviceRecord {
    replay
        .unresolved
        .iter()
        .find_map(|u| match u {
            Unresolved::Create { record, .. } if record.id == id => Some(record.clone()),
            _ => None,
        })
        .unwrap()
}

#[test]
fn sequence_numbers_continue_after_a_reopen() {
    let (_dir, store) = store();
    let (mut j, _) = store.open_journal().unwrap();
    let a = j.intend_create(&rec("a", 1)).unwrap();
    j.done(a, false).unwrap();
    drop(j);
    let (mut j, _) = store.open_journal().unwrap();
    let b = j.intend_create(&rec("b", 2)).unwrap();
    assert!(b > a, "{b} after {a}");
    // A marker for the new intent must not resolve the old one.
    j.cancel(b).unwrap();
    drop(j);
    let (_, replay) = store.open_journal().unwrap();
    assert!(replay.unresolved.is_empty());
    assert!(replay.changes.contains_key("a") && !replay.changes.contains_key("b"));
}

#[test]
fn settled_intents_stay_settled_behind_later_entries() {
    let (_dir, store) = store();
    let (mut j, _) = store.open_journal().unwrap();
    // Two intents whose outcome the set did not learn, then later work.
    let made = j.intend_create(&rec("made", 1)).unwrap();
    let gone = j.intend_delete("gone", 2, None).unwrap();
    let never = j.intend_create(&rec("never", 3)).unwrap();
    let later = j.intend_create(&rec("later", 4)).unwrap();
    j.done(later, false).unwrap();
    drop(j);
    let (mut j, replay) = store.open_journal().unwrap();
    let seqs: Vec<u64> = replay.unresolved.iter().map(Unresolved::seq).collect();
    assert_eq!(seqs, [made, gone, never]);
    assert_eq!(replay.unresolved[1].device_id(), "gone");
    // Settled against the pool: the create and the delete happened, the
    // other create did not.
    j.settle(&[(made, true), (gone, true), (never, false)])
        .unwrap();
    drop(j);
    let (_, replay) = store.open_journal().unwrap();
    assert!(replay.unresolved.is_empty(), "{:?}", replay.unresolved);
    assert!(replay.changes["made"].is_some());
    assert_eq!(replay.changes["gone"], None);
    assert!(!replay.changes.contains_key("never"));
    assert!(replay.changes["later"].is_some());
}
/// The written part of the journal (the rest is zero padding).
fn written(dir: &Scratch) -> Vec<u8> {
    let bytes = journal_bytes(dir);
    let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    bytes[..end].to_vec()
}

#[test]
fn a_torn_last_append_is_cleared_and_appends_go_on_after_it() {
    let (dir, store) = store();
    let (mut j, _) = store.open_journal().unwrap();
    let a = j.intend_create(&rec("a", 1)).unwrap();
    j.done(a, false).unwrap();
    drop(j);
    assert_eq!(journal_bytes(&dir).len() as u64, PREALLOC, "preallocated");
    let mut good = written(&dir);
    for torn in [
        &b"0123456789abcdef {\"op\":\"cre"[..], // no newline
        &b"0123456789abcdef {\"op\":\"done\",\"seq\":1}\n"[..], // bad sum
        &b"\0\0\0\0garbage after a lost sector\n"[..], // zeros, then bytes
    ] {
        let path = dir.path().join("metadata").join(JOURNAL_FILE);
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(torn, good.len() as u64).unwrap();
        drop(f);
        let (mut j, replay) = store.open_journal().unwrap();
        let data = torn.iter().rposition(|b| *b != 0).unwrap() + 1;
        assert_eq!(replay.torn_bytes, data as u64);
        assert_eq!(written(&dir), good, "cleared back to the good prefix");
        assert_eq!(replay.entries, 2);
        let b = j.intend_create(&rec("b", 2)).unwrap();
        j.cancel(b).unwrap();
        drop(j);
        let (mut j, replay) = store.open_journal().unwrap();
        assert_eq!(replay.torn_bytes, 0);
        assert_eq!(replay.entries, 4);
        j.clear().unwrap();
        assert!(written(&dir).is_empty());
        assert_eq!(
            journal_bytes(&dir).len() as u64,
            PREALLOC,
            "preallocated again"
        );
        let a = j.intend_create(&rec("a", 1)).unwrap();
        j.done(a, false).unwrap();
        // The same entries again (sequence numbers go on, of one length here).
        assert_eq!(written(&dir).len(), good.len());
        good = written(&dir);
    }
}

#[test]
fn a_torn_marker_before_a_good_unsynced_intent_is_the_tail() {
    // A power cut while an intent's sync was under way: the marker before
    // it (unsynced) lost a sector, the intent's own sector landed. Neither
    // was acknowledged: both are the torn tail.
    let (dir, store) = store();
    let (mut j, _) = store.open_journal().unwrap();
    let a = j.intend_create(&rec("a", 1)).unwrap();
    let intent_end = written(&dir).len();
    j.done(a, false).unwrap();
    j.intend_create(&rec("b", 2)).unwrap();
    drop(j);
    let path = dir.path().join("metadata").join(JOURNAL_FILE);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(b"\0\0\0", intent_end as u64).unwrap();
    drop(f);
    let (_, replay) = store.open_journal().unwrap();
    assert_eq!(replay.entries, 1);
    assert!(replay.torn_bytes > 0);
    assert!(
        matches!(&replay.unresolved[..], [Unresolved::Create { record, .. }] if record.id == "a")
    );
}

#[test]
fn damage_far_from_the_end_refuses_the_open() {
    let (dir, store) = store();
    let (mut j, _) = store.open_journal().unwrap();
    let a = j.intend_create(&rec("a", 1)).unwrap();
    j.done(a, false).unwrap();
    // More entries after it than a torn tail could hold.
    while written(&dir).len() < TORN_WINDOW + 1000 {
        j.update(&rec("a", 1)).unwrap();
    }
    drop(j);
    let path = dir.path().join("metadata").join(JOURNAL_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 0x20; // inside the first line's JSON
    std::fs::write(&path, &bytes).unwrap();
    let e = store.open_journal().unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{msg}");
    assert!(msg.contains("journal line at byte 0 is damaged"), "{msg}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "a damaged journal is left as it is"
    );
}

#[test]
fn clear_empties_it_and_touched() {
    let (dir, store) = store();
    let (mut j, _) = store.open_journal().unwrap();
    j.update(&rec("a", 1)).unwrap();
    assert_eq!((j.len(), j.is_empty()), (1, false));
    j.clear().unwrap();
    assert!(j.is_empty() && j.touched().is_empty());
    assert!(written(&dir).is_empty());
    drop(j);
    assert_eq!(store.open_journal().unwrap().1, Replay::default());
}

#[test]
fn write_records_puts_and_removes_in_one_batch() {
    let (_dir, store) = store();
    store.write_device(&rec("gone", 4)).unwrap();
    let (a, b) = (rec("a", 1), rec("b", 2));
    store.write_records(&[&a, &b], &["gone", "never"]).unwrap();
    let report = store.load_all().unwrap();
    assert_eq!(report.devices.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(report.devices["b"], b);
    let mut bad = rec("c", 3);
    bad.size = 3;
    let e = store.write_records(&[&bad], &[]).unwrap_err();
    assert!(e.to_string().contains("size 3"), "{e}");
}

#[test]
fn encode_round_trips_every_entry_kind() {
    let entries = [
        Entry::Create {
            seq: 1,
            record: rec("a", 1),
        },
        Entry::Delete {
            seq: 2,
            device_id: "a".into(),
            thin_id: 1,
            identity: None,
        },
        Entry::Delete {
            seq: 3,
            device_id: "c".into(),
            thin_id: 4,
            identity: Some(ThinIdentity {
                creation_time: 7,
                snapshotted_time: 9,
                transaction_id: 3,
                mapped_blocks: 1 << 40,
            }),
        },
        Entry::Update {
            record: rec("b", 2),
        },
        Entry::Done { seq: 1 },
        Entry::Cancel { seq: 2 },
    ];
    let bytes: Vec<u8> = entries.iter().flat_map(encode).collect();
    let (back, good, end) = parse(&bytes).unwrap();
    assert_eq!(back, entries);
    assert_eq!((good, end), (bytes.len(), bytes.len()));
}
