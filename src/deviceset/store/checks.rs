//! Checks across records, made once every record has loaded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::{LoadReport, ProblemReason, RecordProblem};

/// Moves every device record that shares its thin id with another record, or
/// with the set record's base device, from `report.devices` to
/// `report.problems`, each naming the other claimants.
///
/// Which claimant is right cannot be told from the records, and acting on a
/// wrong one destroys data: removing it deletes the thin the other uses, and
/// writing to it writes into the other. So none of them is used, and nothing
/// is deleted or rewritten: the files stay for the operator to fix.
/// `record_path` gives the file of a device id.
pub(super) fn refuse_shared_thin_ids(
    report: &mut LoadReport,
    set_path: &Path,
    record_path: impl Fn(&str) -> PathBuf,
) {
    let mut claims: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for record in report.devices.values() {
        claims
            .entry(record.thin_id)
            .or_default()
            .push(record.id.clone());
    }
    let base_thin_id = report.set.as_ref().map(|s| s.base_thin_id);
    let mut found = false;
    for (thin_id, ids) in claims {
        let base = (base_thin_id == Some(thin_id)).then(|| set_path.to_path_buf());
        if ids.len() < 2 && base.is_none() {
            continue;
        }
        found = true;
        let files: Vec<PathBuf> = ids.iter().map(|id| record_path(id)).collect();
        for (id, path) in ids.iter().zip(&files) {
            report.devices.remove(id);
            let others = files.iter().filter(|p| *p != path).cloned().collect();
            report.problems.push(RecordProblem {
                path: path.clone(),
                reason: ProblemReason::SharedThinId {
                    thin_id,
                    others,
                    base: base.clone(),
                },
            });
        }
    }
    if found {
        report.problems.sort_by(|a, b| a.path.cmp(&b.path));
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::super::{DeviceRecord, MetadataStore, ProblemReason, SetRecord, StoreError};
    use crate::testutil::Scratch;

    fn set_record(base_thin_id: u32) -> SetRecord {
        SetRecord {
            base_thin_id,
            ..super::super::tests::set_record()
        }
    }

    fn dev(id: &str, thin_id: u32) -> DeviceRecord {
        DeviceRecord::new(id, None, thin_id, 1 << 30)
    }

    fn open(s: &Scratch) -> MetadataStore {
        MetadataStore::open(s.path(), 100).unwrap()
    }

    #[test]
    fn records_sharing_a_thin_id_are_all_refused_and_kept() {
        let s = Scratch::new("shared-thin");
        let store = open(&s);
        store.write_set(&set_record(0)).unwrap();
        for (id, thin) in [("a", 7), ("b", 7), ("c", 7), ("ok", 8), ("on-base", 0)] {
            store.write_device(&dev(id, thin)).unwrap();
        }
        let before: Vec<Vec<u8>> = ["a", "b", "c", "on-base"]
            .iter()
            .map(|id| fs::read(store.device_path(id).unwrap()).unwrap())
            .collect();
        let report = store.load_all().unwrap();
        assert_eq!(report.devices.keys().collect::<Vec<_>>(), ["ok"]);
        let named: Vec<String> = report
            .problems
            .iter()
            .map(|p| p.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(named, ["a.json", "b.json", "c.json", "on-base.json"]);
        for p in &report.problems {
            let ProblemReason::SharedThinId {
                thin_id,
                others,
                base,
            } = &p.reason
            else {
                panic!("{p}");
            };
            let text = p.to_string();
            if p.path.ends_with("on-base.json") {
                assert_eq!(*thin_id, 0);
                assert!(others.is_empty());
                assert_eq!(base.as_deref(), Some(store.set_path().as_path()));
                assert!(text.contains("set.json (the base device)"), "{text}");
            } else {
                assert_eq!(*thin_id, 7);
                assert!(base.is_none());
                // Each names the two other files, never itself.
                assert_eq!(others.len(), 2, "{text}");
                assert!(!others.contains(&p.path), "{text}");
                for o in others {
                    assert!(text.contains(&o.display().to_string()), "{text}");
                }
                assert!(text.contains("thin id 7"), "{text}");
            }
        }
        // Nothing was deleted or rewritten; a second load finds the same.
        let after: Vec<Vec<u8>> = ["a", "b", "c", "on-base"]
            .iter()
            .map(|id| fs::read(store.device_path(id).unwrap()).unwrap())
            .collect();
        assert_eq!(before, after);
        let again = store.load_all().unwrap();
        assert_eq!(again.devices.len(), 1);
        assert_eq!(again.problems.len(), 4);
        // Fixing one of the three leaves the other two refused.
        store.write_device(&dev("c", 9)).unwrap();
        let fixed = store.load_all().unwrap();
        assert_eq!(fixed.devices.keys().collect::<Vec<_>>(), ["c", "ok"]);
        assert_eq!(fixed.problems.len(), 3);
    }

    #[test]
    fn a_new_set_has_no_base_to_share_with() {
        let s = Scratch::new("shared-thin-noset");
        let store = open(&s);
        store.write_device(&dev("zero", 0)).unwrap();
        let report = store.load_all().unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert!(report.devices.contains_key("zero"));
    }

    #[test]
    fn records_named_pool_or_base_are_refused_at_load_and_never_written() {
        let s = Scratch::new("reserved-ids");
        let store = open(&s);
        store.write_set(&set_record(0)).unwrap();
        store.write_device(&dev("ok", 1)).unwrap();
        let ok = fs::read_to_string(store.device_path("ok").unwrap()).unwrap();
        for (i, id) in ["pool", "base"].into_iter().enumerate() {
            let e = store.write_device(&dev(id, 10 + i as u32)).unwrap_err();
            assert!(
                matches!(&e, StoreError::InvalidRecord { reason, .. } if reason.contains("reserved")),
                "{e}"
            );
            // Written by hand: found, refused, left in place.
            let text = ok
                .replace("\"ok\"", &format!("\"{id}\""))
                .replace("\"thin_id\": 1", &format!("\"thin_id\": {}", 10 + i));
            fs::write(store.devices_dir().join(format!("{id}.json")), text).unwrap();
        }
        // Near misses are ordinary ids.
        store.write_device(&dev("pool2", 20)).unwrap();
        store.write_device(&dev("Base", 21)).unwrap();
        let report = store.load_all().unwrap();
        assert_eq!(
            report.devices.keys().collect::<Vec<_>>(),
            ["Base", "ok", "pool2"]
        );
        assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
        for (p, id) in report.problems.iter().zip(["base", "pool"]) {
            assert!(p.path.ends_with(format!("{id}.json")), "{p}");
            assert!(
                matches!(&p.reason, ProblemReason::InvalidValue(v) if v.contains("reserved")),
                "{p}"
            );
            assert!(
                p.to_string().contains(&format!("{id:?} is reserved")),
                "{p}"
            );
            assert!(p.path.exists());
        }
    }
}
