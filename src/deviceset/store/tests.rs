//! Tests of the metadata store on real files (moved from the old
//! `tests/deviceset_store.rs`): layout, round trips, damaged records,
//! records set aside, transactions, concurrency, the record cache.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::cache::{CACHE_FILE, CACHE_SETTLE_SECS};
use super::{
    DeviceRecord, FsKind, MetadataStore, ProblemReason, SetRecord, Storage, StoreError,
    TransactionOp, TransactionRecord, FORMAT_VERSION,
};
use crate::dm::abi::NAME_LEN;
use crate::target::ThinId;
use crate::testutil::Scratch;

const THIN_ID_MAX: u32 = ThinId::MAX.get();
const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
/// The limit for the longest prefix the set can have.
const MAX_ID: usize = NAME_LEN - 1 - 50;

/// A valid set record (base thin id 0); other modules' tests use it too.
pub(crate) fn set_record() -> SetRecord {
    SetRecord {
        format_version: FORMAT_VERSION,
        base_thin_id: 0,
        base_size: 10 << 30,
        base_fs_uuid: Some("0b7c8a0e-7a4e-4f2e-9d7b-2f1c3e5a6b7c".into()),
        filesystem: FsKind::Ext4,
        mkfs_options: vec!["-E".into(), "nodiscard".into()],
        mount_options: vec!["noatime".into()],
        data_block_size: 64 << 10,
        pool_name: "dmthin-8:1-1234-pool".into(),
        pool_owned: true,
        storage: Storage::LoopFiles {
            data_file: "/var/lib/dmthin/data".into(),
            metadata_file: "/var/lib/dmthin/metadata".into(),
        },
        next_thin_id: 1,
        name_prefix: None,
        min_free_space_percent: None,
        block_zeroing: None,
        mount_discard: None,
        deferred_removal: None,
        deferred_deletion: None,
        remove_discard: None,
    }
}

fn dev(id: &str, thin_id: u32) -> DeviceRecord {
    DeviceRecord::new(id, None, thin_id, 10 << 30)
}

fn open(s: &Scratch) -> MetadataStore {
    MetadataStore::open(s.path(), MAX_ID).unwrap()
}

#[test]
fn valid_ids_stay_inside_the_devices_dir() {
    let s = Scratch::new("prop-id");
    let store = open(&s);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(2000));
    // Arbitrary printable text, and strings built from the id alphabet plus '/'.
    let ids = prop_oneof!["\\PC{0,80}", "[A-Za-z0-9_.:/-]{0,8}"];
    runner
        .run(&ids, |id| {
            match store.device_path(&id) {
                Ok(path) => {
                    prop_assert_eq!(path.parent(), Some(store.devices_dir()));
                    prop_assert!(!id.contains('/') && id != "." && id != "..");
                    prop_assert!(id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c)));
                }
                Err(StoreError::InvalidId(_)) => {}
                Err(e) => prop_assert!(false, "unexpected {}", e),
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn round_trips_and_layout() {
    let s = Scratch::new("roundtrip");
    let store = open(&s);
    let meta = s.path().join("metadata");
    assert_eq!(
        fs::metadata(&meta).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        fs::metadata(meta.join("devices"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );

    let empty = store.load_all().unwrap();
    assert!(empty.set.is_none() && empty.devices.is_empty() && empty.problems.is_empty());

    let set = set_record();
    store.write_set(&set).unwrap();
    assert_eq!(store.read_set().unwrap(), Some(set.clone()));

    let mut a = dev(SHA, 1);
    let mut b = DeviceRecord::new("b", Some(SHA.into()), 2, 4096);
    b.initialized = true;
    store.write_device(&a).unwrap();
    store.write_device(&b).unwrap();
    a.deferred_delete = true;
    store.write_device(&a).unwrap(); // replace

    let path = store.device_path(SHA).unwrap();
    assert_eq!(path, meta.join("devices").join(format!("{SHA}.json")));
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("\n  \"thin_id\": 1,\n"),
        "pretty JSON: {text}"
    );
    assert!(text.contains("\"parent\": null"), "{text}");

    let rep = store.load_all().unwrap();
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
    assert_eq!(rep.set, Some(set));
    assert_eq!(rep.devices.len(), 2);
    assert_eq!(rep.devices[SHA], a);
    assert_eq!(rep.devices["b"], b);
    assert_eq!(store.read_device("b").unwrap(), Some(b));
    assert_eq!(store.read_device("nope").unwrap(), None);

    assert!(store.remove_device_record("b").unwrap());
    assert!(!store.remove_device_record("b").unwrap());
    let rep = store.load_all().unwrap();
    assert_eq!(rep.devices.keys().collect::<Vec<_>>(), vec![SHA]);

    // A second store on the same root sees the same thing.
    let again = MetadataStore::open(s.path(), MAX_ID).unwrap();
    assert_eq!(again.load_all().unwrap().devices.len(), 1);
}

#[test]
fn every_storage_kind_round_trips() {
    let s = Scratch::new("storage");
    let store = open(&s);
    for storage in [
        Storage::BlockDevices {
            data_device: "/dev/vdb".into(),
            metadata_device: "/dev/vdc".into(),
        },
        Storage::AdoptedPool,
    ] {
        let mut set = set_record();
        set.storage = storage;
        set.filesystem = FsKind::Xfs;
        set.base_fs_uuid = None;
        store.write_set(&set).unwrap();
        assert_eq!(store.read_set().unwrap(), Some(set));
    }
    let text = fs::read_to_string(store.set_path()).unwrap();
    assert!(text.contains("\"kind\": \"adopted-pool\""), "{text}");
    assert!(text.contains("\"filesystem\": \"xfs\""), "{text}");
}

#[test]
fn writes_refuse_invalid_records() {
    let s = Scratch::new("invalid");
    let store = open(&s);
    let err = store.write_device(&dev("../evil", 1)).unwrap_err();
    assert!(matches!(err, StoreError::InvalidId(_)), "{err}");
    let mut r = dev("ok", THIN_ID_MAX + 1);
    let err = store.write_device(&r).unwrap_err();
    assert!(err.to_string().contains("ok.json"), "{err}");
    assert!(err.to_string().contains("24-bit"), "{err}");
    r.thin_id = 1;
    r.size = 0;
    assert!(store.write_device(&r).is_err());
    let mut set = set_record();
    set.data_block_size = 4096;
    let err = store.write_set(&set).unwrap_err();
    assert!(err.to_string().contains("data_block_size"), "{err}");
    set = set_record();
    set.storage = Storage::LoopFiles {
        data_file: "relative".into(),
        metadata_file: "/x".into(),
    };
    assert!(store.write_set(&set).is_err());
    assert!(store.load_all().unwrap().devices.is_empty());
    assert!(!store.devices_dir().join("ok.json").exists());
}

#[test]
fn one_write_touches_one_file() {
    let s = Scratch::new("o1");
    let store = open(&s);
    store.write_device(&dev("a", 1)).unwrap();
    let before = fs::metadata(store.device_path("a").unwrap()).unwrap();
    store.write_device(&dev("b", 2)).unwrap();
    store.remove_device_record("b").unwrap();
    let after = fs::metadata(store.device_path("a").unwrap()).unwrap();
    assert_eq!(before.ino(), after.ino());
    assert_eq!(before.mtime_nsec(), after.mtime_nsec());
    // No temp files stay behind.
    let names: Vec<_> = fs::read_dir(store.devices_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["a.json"]);
}

#[test]
fn leftover_temp_files_are_removed_and_never_applied() {
    let s = Scratch::new("tmp");
    let store = open(&s);
    let old = dev("a", 1);
    store.write_device(&old).unwrap();
    store.write_set(&set_record()).unwrap();
    // An interrupted write of a newer "a" (and of the set): the temp file was
    // written but never renamed, so the old content must be what loads.
    let mut newer = old.clone();
    newer.thin_id = 9;
    let tmp_dev = store.devices_dir().join(".tmp~4242-17a-0~3");
    fs::write(&tmp_dev, serde_json::to_vec(&newer).unwrap()).unwrap();
    let tmp_half = store.devices_dir().join(".tmp~4242-17a-0~4");
    fs::write(&tmp_half, b"{\"id\": \"a\", \"thin").unwrap();
    let tmp_set = store.metadata_dir().join(".tmp~4242-17a-0~5");
    fs::write(&tmp_set, b"garbage").unwrap();

    let rep = store.load_all().unwrap();
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
    assert_eq!(rep.devices["a"], old);
    assert_eq!(rep.set, Some(set_record()));
    let mut removed = rep.removed_temp_files.clone();
    removed.sort();
    let mut want = vec![tmp_dev.clone(), tmp_half.clone(), tmp_set.clone()];
    want.sort();
    assert_eq!(removed, want);
    assert!(!tmp_dev.exists() && !tmp_half.exists() && !tmp_set.exists());
    assert!(store.load_all().unwrap().removed_temp_files.is_empty());
}

#[test]
fn damaged_records_are_reported_and_the_rest_load() {
    let s = Scratch::new("corrupt");
    let store = open(&s);
    for (i, id) in ["good1", "good2", "good3"].iter().enumerate() {
        store.write_device(&dev(id, i as u32 + 1)).unwrap();
    }
    let d = store.devices_dir().to_path_buf();
    let full = serde_json::to_vec_pretty(&dev("trunc", 10)).unwrap();
    fs::write(d.join("trunc.json"), &full[..full.len() / 2]).unwrap();
    fs::write(d.join("empty.json"), b"").unwrap();
    fs::write(d.join("zeros.json"), [0u8; 200]).unwrap();
    fs::write(d.join("garbage.json"), [0xffu8, 0xfe, 0x00, 0x41, 0x7b]).unwrap();
    fs::write(d.join("array.json"), b"[1, 2, 3]").unwrap();
    fs::write(
        d.join("shape.json"),
        br#"{"id": "shape", "thin_id": "seven"}"#,
    )
    .unwrap();
    fs::write(
        d.join("misnamed.json"),
        serde_json::to_vec(&dev("other", 11)).unwrap(),
    )
    .unwrap();
    let mut bad = dev("range", 12);
    bad.thin_id = THIN_ID_MAX + 1;
    fs::write(d.join("range.json"), serde_json::to_vec(&bad).unwrap()).unwrap();
    fs::write(d.join("has space.json"), b"{}").unwrap();
    fs::write(d.join("README"), b"hello").unwrap();
    fs::create_dir(d.join("dir.json")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", d.join("link.json")).unwrap();
    fs::write(d.join("huge.json"), vec![b' '; (1 << 20) + 1]).unwrap();
    // Deep nesting in an unknown field: skipped without recursion, then the
    // missing fields are reported.
    let deep = format!("{{\"x\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    fs::write(d.join("deep.json"), deep).unwrap();
    // Unknown fields are fine (forward compatibility).
    fs::write(
        d.join("future.json"),
        br#"{"id":"future","thin_id":20,"size":512,"initialized":true,
            "created_at":1,"new_field":{"x":[1]}}"#,
    )
    .unwrap();

    let rep = store.load_all().unwrap();
    let loaded: Vec<_> = rep.devices.keys().map(String::as_str).collect();
    assert_eq!(loaded, ["future", "good1", "good2", "good3"]);
    let by_name = |name: &str| {
        rep.problems
            .iter()
            .find(|p| p.path == d.join(name))
            .unwrap_or_else(|| panic!("no problem reported for {name}: {:?}", rep.problems))
    };
    type Check = fn(&ProblemReason) -> bool;
    let expect: &[(&str, Check)] = &[
        ("trunc.json", |r| matches!(r, ProblemReason::Truncated(_))),
        ("empty.json", |r| matches!(r, ProblemReason::Empty)),
        ("zeros.json", |r| matches!(r, ProblemReason::NotJson(_))),
        ("garbage.json", |r| matches!(r, ProblemReason::NotJson(_))),
        ("array.json", |r| matches!(r, ProblemReason::WrongShape(_))),
        ("shape.json", |r| matches!(r, ProblemReason::WrongShape(_))),
        ("misnamed.json", |r| {
            matches!(r, ProblemReason::NameMismatch { file_id, record_id }
                if file_id == "misnamed" && record_id == "other")
        }),
        ("range.json", |r| {
            matches!(r, ProblemReason::InvalidValue(_))
        }),
        ("has space.json", |r| {
            matches!(r, ProblemReason::BadFileName(_))
        }),
        ("README", |r| matches!(r, ProblemReason::BadFileName(_))),
        ("dir.json", |r| matches!(r, ProblemReason::NotRegularFile)),
        ("link.json", |r| matches!(r, ProblemReason::NotRegularFile)),
        ("huge.json", |r| matches!(r, ProblemReason::TooLarge { .. })),
        (
            "deep.json",
            |r| matches!(r, ProblemReason::WrongShape(m) if m.contains("missing field")),
        ),
    ];
    assert_eq!(rep.problems.len(), expect.len(), "{:#?}", rep.problems);
    for (name, check) in expect {
        let p = by_name(name);
        assert!(check(&p.reason), "{name}: {:?}", p.reason);
        let msg = p.to_string();
        assert!(msg.contains(&d.join(name).display().to_string()), "{msg}");
        println!("{msg}");
    }
    // Nothing was deleted or rewritten.
    assert_eq!(
        fs::read(d.join("trunc.json")).unwrap(),
        &full[..full.len() / 2]
    );
    assert!(d.join("empty.json").exists());
    // A direct read of a damaged record is a typed error naming the file.
    let err = store.read_device("trunc").unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }));
    assert!(err.to_string().contains("trunc.json"), "{err}");
}

#[test]
fn records_set_aside_by_hand_are_skipped() {
    let s = Scratch::new("quarantine");
    let store = open(&s);
    store.write_set(&set_record()).unwrap();
    let d = store.devices_dir().to_path_buf();
    fs::write(d.join("x.json"), b"{broken").unwrap();
    let rep = store.load_all().unwrap();
    assert_eq!(rep.problems.len(), 1);
    // What the module documentation tells an operator to do.
    let moved = d.join("x.json.corrupt");
    fs::rename(&rep.problems[0].path, &moved).unwrap();
    fs::write(d.join("x.json"), b"{broken again").unwrap();
    fs::rename(d.join("x.json"), d.join("x.json.corrupt.1")).unwrap();
    fs::write(d.join("y.json.corrupt.x"), b"{").unwrap();
    let rep = store.load_all().unwrap();
    assert_eq!(rep.quarantined.len(), 2, "{:?}", rep.quarantined);
    assert_eq!(
        rep.problems.len(),
        1,
        "not a set-aside name: {:?}",
        rep.problems
    );
    assert_eq!(fs::read(&moved).unwrap(), b"{broken");
    fs::remove_file(d.join("y.json.corrupt.x")).unwrap();
    // The id can be used again.
    store.write_device(&dev("x", 3)).unwrap();
    assert_eq!(store.load_all().unwrap().devices.len(), 1);
}

#[test]
fn damaged_set_or_transaction_record_is_an_error() {
    let s = Scratch::new("setcorrupt");
    let store = open(&s);
    store.write_device(&dev("a", 1)).unwrap();
    let set_path = store.set_path();
    for (content, want) in [
        (&b""[..], "empty file"),
        (b"{\"format_version\": 1, \"base_thin", "truncated"),
        (b"\x00\x00", "not valid JSON"),
        (b"{\"format_version\": 1}", "not a valid record"),
    ] {
        fs::write(&set_path, content).unwrap();
        let err = store.load_all().unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{msg}");
        assert!(msg.contains(&set_path.display().to_string()), "{msg}");
        assert!(msg.contains(want), "{msg}");
    }
    let mut future = serde_json::to_value(set_record()).unwrap();
    future["format_version"] = (FORMAT_VERSION + 1).into();
    future["something_new"] = true.into();
    fs::write(&set_path, serde_json::to_vec(&future).unwrap()).unwrap();
    let err = store.load_all().unwrap_err();
    assert!(
        matches!(err, StoreError::UnsupportedVersion { found, .. } if found == FORMAT_VERSION + 1),
        "{err}"
    );
    let mut bad_uuid = set_record();
    bad_uuid.base_fs_uuid = Some("not/a uuid".into());
    fs::write(&set_path, serde_json::to_vec(&bad_uuid).unwrap()).unwrap();
    let msg = store.load_all().unwrap_err().to_string();
    assert!(msg.contains("base_fs_uuid"), "{msg}");

    store.write_set(&set_record()).unwrap();
    let txn_path = store.transaction_path();
    fs::write(
        &txn_path,
        b"{\"open_transaction_id\": 3, \"op\": {\"kind\": \"create\"",
    )
    .unwrap();
    let err = store.load_all().unwrap_err();
    assert!(err.to_string().contains("transaction.json"), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
    fs::write(
        &txn_path,
        br#"{"committed_transaction_id": 2, "open": {"open_transaction_id": 3, "op": {"kind": "create", "device_id": "../x", "thin_id": 1}}}"#,
    )
    .unwrap();
    let err = store.pending().unwrap_err();
    assert!(err.to_string().contains("invalid value"), "{err}");
    // Both files were left as they were.
    assert!(txn_path.exists());
}

#[test]
fn transaction_begin_pending_clear() {
    let s = Scratch::new("txn");
    let store = open(&s);
    assert_eq!(store.pending().unwrap(), None);
    let txn = TransactionRecord {
        open_transaction_id: 7,
        op: TransactionOp::Create {
            device_id: SHA.into(),
            thin_id: 5,
        },
    };
    store.begin(&txn).unwrap();
    assert_eq!(store.pending().unwrap(), Some(txn.clone()));
    assert_eq!(store.load_all().unwrap().transaction, Some(txn.clone()));
    let text = fs::read_to_string(store.transaction_path()).unwrap();
    assert!(text.contains("\"kind\": \"create\""), "{text}");

    // A transaction with the same id (or a lower one) was never committed
    // as far as the store can tell: refused.
    let same = TransactionRecord {
        open_transaction_id: 7,
        op: TransactionOp::BaseCreate { thin_id: 0 },
    };
    let err = store.begin(&same).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::TransactionPending {
                open_transaction_id: Some(7),
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("open id 7"), "{err}");
    assert_eq!(store.pending().unwrap(), Some(txn.clone()));
    // The next id replaces it: transaction 7 committed when the pool reached 7,
    // so no commit write is needed in between.
    let other = TransactionRecord {
        open_transaction_id: 8,
        op: TransactionOp::BaseCreate { thin_id: 0 },
    };
    store.begin(&other).unwrap();
    assert_eq!(store.pending().unwrap(), Some(other.clone()));
    assert_eq!(store.committed().unwrap(), Some(7));
    store.clear().unwrap();
    let txn9 = TransactionRecord {
        open_transaction_id: 9,
        ..txn.clone()
    };
    store.begin(&txn9).unwrap();

    assert!(store.clear().unwrap());
    assert!(!store.clear().unwrap());
    assert_eq!(store.pending().unwrap(), None);
    let other = TransactionRecord {
        open_transaction_id: 10,
        ..other
    };
    store.begin(&other).unwrap();
    assert_eq!(store.pending().unwrap(), Some(other.clone()));
    assert_eq!(other.op.thin_id(), Some(0));
    assert_eq!(other.op.device_id(), None);
    store.clear().unwrap();
    let del = TransactionRecord {
        open_transaction_id: 11,
        op: TransactionOp::Delete {
            device_id: "d".into(),
            thin_id: THIN_ID_MAX,
        },
    };
    store.begin(&del).unwrap();
    assert_eq!(store.pending().unwrap(), Some(del));
    // No temp files stay behind.
    let names: Vec<_> = fs::read_dir(store.metadata_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(names, ["devices", "transaction.json"]);
}

#[test]
fn concurrent_writers_and_loader() {
    let s = Scratch::new("threads");
    let store = open(&s);
    std::thread::scope(|sc| {
        for t in 0..8u32 {
            let store = &store;
            sc.spawn(move || {
                for i in 0..25u32 {
                    store
                        .write_device(&dev(&format!("t{t}-{i}"), t * 100 + i))
                        .unwrap();
                }
            });
        }
        // A load in the middle must not disturb the writers' temp files.
        sc.spawn(|| {
            for _ in 0..5 {
                let rep = store.load_all().unwrap();
                assert!(rep.problems.is_empty(), "{:?}", rep.problems);
                assert!(rep.removed_temp_files.is_empty());
            }
        });
    });
    assert_eq!(store.load_all().unwrap().devices.len(), 200);
}

#[test]
fn opening_ten_thousand_records() {
    let s = Scratch::new("10k");
    let store = open(&s);
    for i in 0..10_000u32 {
        let r = dev(&format!("{i:064x}"), i + 1);
        // Seeding without fsync; load_all reads them the same way.
        fs::write(
            store.device_path(&r.id).unwrap(),
            serde_json::to_vec_pretty(&r).unwrap(),
        )
        .unwrap();
    }
    let t = Instant::now();
    let store = open(&s);
    let rep = store.load_all().unwrap();
    let took = t.elapsed();
    println!("open + load_all of 10,000 records: {took:?}");
    assert_eq!(rep.devices.len(), 10_000);
    assert!(rep.problems.is_empty());
    // Generous for unoptimized builds; the release figure is in the bench.
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn transaction_file_remembers_the_committed_id() {
    let dir = Scratch::new("committed");
    let store = open(&dir);
    assert_eq!(store.committed().unwrap(), None);
    let txn = TransactionRecord {
        open_transaction_id: 5,
        op: TransactionOp::BaseCreate { thin_id: 0 },
    };
    store.begin(&txn).unwrap();
    assert_eq!(
        store.committed().unwrap(),
        Some(4),
        "before the first commit: open - 1"
    );
    store.commit(5).unwrap();
    assert_eq!(store.committed().unwrap(), Some(5));
    assert_eq!(store.pending().unwrap(), None);
    let next = TransactionRecord {
        open_transaction_id: 6,
        op: TransactionOp::Create {
            device_id: "a".into(),
            thin_id: 1,
        },
    };
    store.begin(&next).unwrap();
    assert_eq!(store.pending().unwrap(), Some(next));
    assert!(store.clear().unwrap(), "roll back");
    assert_eq!(
        store.committed().unwrap(),
        Some(5),
        "a roll back keeps the committed id"
    );
    assert!(!store.clear().unwrap());
    let text = fs::read_to_string(store.transaction_path()).unwrap();
    assert!(text.contains("\"committed_transaction_id\": 5"), "{text}");
}

#[test]
fn record_cache_is_used_only_where_each_file_still_matches() {
    let s = Scratch::new("cache");
    let store = open(&s);
    let n = 100u32;
    for i in 0..n {
        let mut r = DeviceRecord::new(format!("d{i:03}"), None, i + 1, 1 << 30);
        // Every flag goes through the cache too.
        r.grow_pending = i % 7 == 0;
        r.deferred_delete = i % 5 == 0;
        store.write_device(&r).unwrap();
    }
    let cache = store.metadata_dir().join(CACHE_FILE);
    // Every record old enough to cache, but one written just now: files
    // younger than the settle time are never cached.
    std::thread::sleep(Duration::from_secs(CACHE_SETTLE_SECS as u64 + 1));
    store
        .write_device(&DeviceRecord::new("young", None, n + 1, 1 << 30))
        .unwrap();
    let mut first = store.load_all().unwrap();
    assert_eq!((first.cache_hits, first.cache_misses), (0, n as usize + 1));
    let cached = fs::read_to_string(&cache).expect("enough misses: the cache is written");
    assert!(!cached.contains("young.json"), "a young file was cached");
    assert_eq!(
        cached.lines().count(),
        n as usize + 1,
        "header and every old file"
    );
    assert!(store.remove_device_record("young").unwrap());
    first.devices.remove("young");
    let third = store.load_all().unwrap();
    assert_eq!((third.cache_hits, third.cache_misses), (n as usize, 0));
    assert_eq!(
        third.devices, first.devices,
        "the cache gives the same records"
    );

    // Our own rewrite makes a new inode; a hand edit in place changes ctime;
    // a removed file is gone whatever the cache says.
    let mut changed = DeviceRecord::new("d001", None, 9999, 2 << 30);
    changed.initialized = true;
    changed.grow_pending = true;
    store.write_device(&changed).unwrap();
    fs::write(store.device_path("d002").unwrap(), b"{ garbage").unwrap();
    assert!(store.remove_device_record("d003").unwrap());
    let fourth = store.load_all().unwrap();
    assert_eq!(fourth.devices["d001"], changed);
    assert!(!fourth.devices.contains_key("d002"));
    assert_eq!(fourth.problems.len(), 1, "{:?}", fourth.problems);
    assert!(fourth.problems[0].path.ends_with("d002.json"));
    assert!(!fourth.devices.contains_key("d003"));
    assert_eq!(fourth.devices.len(), n as usize - 2);
    assert_eq!(fourth.cache_hits, n as usize - 3);

    // A cache cut mid-line: the lines before the cut are used, the rest of
    // the records are read from their files.
    let text = fs::read_to_string(&cache).unwrap();
    assert!(text.starts_with("dmthin-record-cache 3\n"), "{text:.80}");
    let cut = text.len() / 2;
    fs::write(&cache, &text.as_bytes()[..cut]).unwrap();
    let partial = store.load_all().unwrap();
    assert_eq!(partial.devices, fourth.devices);
    assert!(
        partial.cache_hits > 10 && partial.cache_misses > 10,
        "{} hits, {} misses",
        partial.cache_hits,
        partial.cache_misses
    );
    // A damaged cache only costs time.
    fs::write(&cache, b"\0\0\0 not a cache").unwrap();
    let fifth = store.load_all().unwrap();
    assert_eq!(fifth.devices, fourth.devices);
    assert_eq!(fifth.cache_hits, 0);
    assert_eq!(fifth.problems.len(), 1);
    let text = fs::read_to_string(store.device_path("d004").unwrap()).unwrap();
    assert!(
        text.contains("\"d004\""),
        "records stay human-readable JSON: {text}"
    );
}

#[test]
fn set_record_checks_the_recorded_prefix_and_free_space() {
    let mut set = set_record();
    assert!(set.validate().is_ok());
    set.name_prefix = Some("dmthin-8:1-1234-".into());
    set.min_free_space_percent = Some(99);
    assert!(set.validate().is_ok());
    for bad in ["other-", "dmthin-../x", "dmthin-a b", "dmthin-\u{0}"] {
        set.name_prefix = Some(bad.into());
        assert!(
            set.validate().unwrap_err().starts_with("name_prefix"),
            "{bad:?} accepted"
        );
    }
    set.name_prefix = Some(format!("dmthin-{}", "x".repeat(130)));
    assert!(set.validate().unwrap_err().starts_with("name_prefix"));
    set.name_prefix = None;
    set.min_free_space_percent = Some(100);
    assert!(set
        .validate()
        .unwrap_err()
        .contains("min_free_space_percent 100"));
}

#[test]
fn set_records_from_before_the_remembered_options_still_load() {
    let mut json = serde_json::to_value(set_record()).unwrap();
    let obj = json.as_object_mut().unwrap();
    for key in [
        "name_prefix",
        "min_free_space_percent",
        "block_zeroing",
        "mount_discard",
        "deferred_removal",
        "deferred_deletion",
    ] {
        assert!(obj.remove(key).is_none(), "{key} written while None");
    }
    let back: SetRecord = serde_json::from_value(json).unwrap();
    assert_eq!(back, set_record());
}

#[test]
fn read_only_store_reads_beside_a_writer_and_changes_nothing() {
    let s = Scratch::new("ro");
    let missing = s.path().join("none");
    assert!(MetadataStore::open_read_only(&missing, MAX_ID).is_err());
    assert!(!missing.exists(), "a read-only open created the root");
    let writer = open(&s);
    writer.write_set(&set_record()).unwrap();
    // Another process's write in flight: a reader must leave it alone.
    let foreign = writer.devices_dir().join(".tmp~4242-17a-0~3");
    fs::write(&foreign, b"{\"id\": \"a\"").unwrap();
    let reader = MetadataStore::open_read_only(s.path(), MAX_ID).unwrap();
    std::thread::scope(|sc| {
        sc.spawn(|| {
            for i in 0..200u32 {
                let r = dev(&format!("d{}", i % 7), i + 1);
                writer.write_device(&r).unwrap();
                if i % 3 == 0 {
                    writer.remove_device_record(&r.id).unwrap();
                }
            }
        });
        for _ in 0..50 {
            let rep = reader.load_all().unwrap();
            // Whole records only, never a torn or vanished one.
            assert!(rep.problems.is_empty(), "{:?}", rep.problems);
            assert!(rep.removed_temp_files.is_empty());
            assert_eq!(rep.set, Some(set_record()));
            for (id, r) in &rep.devices {
                assert_eq!(id, &r.id);
                assert!(r.thin_id >= 1 && r.thin_id <= 200, "{r:?}");
            }
        }
    });
    assert!(foreign.exists());
    let final_ids: BTreeSet<String> = writer.load_all().unwrap().devices.into_keys().collect();
    let read: BTreeSet<String> = reader.load_all().unwrap().devices.into_keys().collect();
    assert_eq!(read, final_ids);
    assert!(!writer.metadata_dir().join(CACHE_FILE).exists());
    let e = reader.write_device(&dev("x", 300)).unwrap_err();
    assert!(e.to_string().contains("read-only"), "{e}");
    assert!(reader.remove_device_record("d1").is_err());
    assert!(reader.write_set(&set_record()).is_err());
    assert!(!writer.devices_dir().join("x.json").exists());
}
