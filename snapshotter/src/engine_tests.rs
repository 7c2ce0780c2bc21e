use super::*;
use crate::devices::DevError;
use crate::fake::Fake;
use std::sync::Arc;

struct Rig {
    dir: tempfile::TempDir,
    fake: Arc<Fake>,
    e: Engine<Arc<Fake>>,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let fake = Arc::new(Fake::default());
        let e = Engine::open(fake.clone(), dir.path()).unwrap();
        Rig { dir, fake, e }
    }
    /// A restart: a new engine over the same records and devices.
    fn reopen(self) -> Rig {
        let Rig { dir, fake, e } = self;
        drop(e);
        let e = Engine::open(fake.clone(), dir.path()).unwrap();
        Rig { dir, fake, e }
    }
    fn store(&self) -> Store {
        Store::open(&self.dir.path().join("snapshots")).unwrap()
    }
    fn prepare(&self, key: &str, parent: &str) -> Result<Vec<Mount>> {
        self.e.create(Kind::Active, key, parent, HashMap::new())
    }
    fn view(&self, key: &str, parent: &str) -> Result<Vec<Mount>> {
        self.e.create(Kind::View, key, parent, HashMap::new())
    }
    fn commit(&self, name: &str, key: &str) -> Result<()> {
        self.e.commit(name, key, HashMap::new())
    }
    /// Devices other than the template.
    fn snap_devices(&self) -> Vec<String> {
        self.fake
            .all_ids()
            .into_iter()
            .filter(|i| i != TEMPLATE)
            .collect()
    }
    fn code<T: std::fmt::Debug>(r: Result<T>) -> Code {
        r.unwrap_err().code
    }
}

fn lbl(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn device_ids_are_counters_never_keys() {
    assert_eq!(snap_number("snap-12"), Some(12));
    for bad in [
        "snap-base",
        "snap-",
        "snap-01",
        "snap-1x",
        "other-1",
        "snap--1",
    ] {
        assert_eq!(snap_number(bad), None, "{bad}");
    }
    let r = Rig::new();
    let key = "default/7/sha256:../../etc/passwd";
    let mounts = r.prepare(key, "").unwrap();
    assert_eq!(mounts[0].source, "/dev/fake/snap-1");
    assert_eq!(mounts[0].fs_type, "ext4");
    assert!(mounts[0].options.is_empty());
    let files: Vec<_> = std::fs::read_dir(r.dir.path().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files, vec!["snap-1.json"]);
    // The parentless snapshot comes from the template.
    assert_eq!(
        r.fake.s.lock().unwrap().devices["snap-1"].0.as_deref(),
        Some(TEMPLATE)
    );
}

#[test]
fn lifecycle_kinds_parents_and_errors() {
    let r = Rig::new();
    r.prepare("a", "").unwrap();
    assert_eq!(Rig::code(r.prepare("a", "")), Code::AlreadyExists);
    assert_eq!(Rig::code(r.view("a", "")), Code::AlreadyExists);
    assert_eq!(Rig::code(r.prepare("b", "a")), Code::InvalidArgument);
    assert_eq!(Rig::code(r.prepare("b", "nope")), Code::NotFound);
    assert_eq!(Rig::code(r.commit("a", "a")), Code::AlreadyExists);
    r.commit("c1", "a").unwrap();
    assert_eq!(Rig::code(r.e.stat("a")), Code::NotFound);
    assert!(!r.fake.active("snap-1"), "committed device deactivated");
    let c1 = r.e.stat("c1").unwrap();
    assert_eq!((c1.kind, c1.parent.as_str()), (Kind::Committed, ""));
    assert_eq!(Rig::code(r.e.mounts_of("c1")), Code::FailedPrecondition);
    assert_eq!(Rig::code(r.commit("c2", "c1")), Code::FailedPrecondition);
    let m = r.view("v", "c1").unwrap();
    assert_eq!(m[0].options, vec!["ro"]);
    assert_eq!(r.e.mounts_of("v").unwrap(), m);
    assert_eq!(Rig::code(r.commit("c2", "v")), Code::FailedPrecondition);
    r.prepare("b", "c1").unwrap();
    assert_eq!(r.e.stat("b").unwrap().parent, "c1");
    let err = r.e.remove("c1").unwrap_err();
    assert_eq!(err.code, Code::FailedPrecondition);
    assert!(err.msg.contains("remove"), "{}", err.msg);
    r.e.remove("v").unwrap();
    r.e.remove("b").unwrap();
    r.e.remove("c1").unwrap();
    assert_eq!(Rig::code(r.e.remove("c1")), Code::NotFound);
    assert!(r.snap_devices().is_empty());
    // Keys can be reused after removal and commit.
    r.prepare("a", "").unwrap();
    r.commit("c1", "a").unwrap();
    r.prepare("a", "c1").unwrap();
}

#[test]
fn hostile_input_is_refused_and_changes_nothing() {
    let r = Rig::new();
    assert_eq!(Rig::code(r.prepare("", "")), Code::InvalidArgument);
    assert_eq!(Rig::code(r.prepare("a\0b", "")), Code::InvalidArgument);
    assert_eq!(
        Rig::code(r.prepare(&"k".repeat(MAX_KEY + 1), "")),
        Code::InvalidArgument
    );
    let huge = lbl(&[("k", &"v".repeat(MAX_LABEL))]);
    let err = r.e.create(Kind::Active, "a", "", huge.clone()).unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument);
    let many: HashMap<String, String> = (0..100)
        .map(|i| (format!("k{i}"), "v".repeat(1000)))
        .collect();
    assert_eq!(
        Rig::code(r.e.create(Kind::Active, "a", "", many)),
        Code::InvalidArgument
    );
    r.prepare("a", "").unwrap();
    assert_eq!(Rig::code(r.e.commit("c", "a", huge)), Code::InvalidArgument);
    assert_eq!(Rig::code(r.commit("c\0", "a")), Code::InvalidArgument);
    assert_eq!(r.e.stat("a").unwrap().kind, Kind::Active);
    assert_eq!(r.snap_devices(), vec!["snap-1"]);
    assert_eq!(r.e.walk(&[]).unwrap().len(), 1);
}

#[test]
fn update_follows_containerd_storage() {
    let r = Rig::new();
    let gc = ("containerd.io/gc.root", "t");
    r.e.create(Kind::Active, "a", "", lbl(&[gc])).unwrap();
    let mut st = r.e.stat("a").unwrap();
    assert_eq!(st.created, st.updated);
    st.parent = "doesnotexist".into();
    st.labels = lbl(&[("l1", "v1"), ("l2", "v2"), ("l3", "v3"), gc]);
    let st = r.e.update(st, &[]).unwrap();
    assert_eq!(st.parent, "");
    assert_eq!(st.labels.len(), 4);
    assert!(st.updated >= st.created);
    let mut st2 = st.clone();
    st2.labels = lbl(&[("l1", "updated"), ("l4", "v4")]);
    let paths = ["labels.l1".to_string(), "labels.l2".to_string()];
    let st2 = r.e.update(st2, &paths).unwrap();
    assert_eq!(st2.labels, lbl(&[("l1", "updated"), ("l3", "v3"), gc]));
    let mut st3 = st2.clone();
    st3.labels = lbl(&[("l4", "v4"), gc]);
    let st3 = r.e.update(st3, &["labels".to_string()]).unwrap();
    assert_eq!(st3.labels, lbl(&[("l4", "v4"), gc]));
    let err =
        r.e.update(st3.clone(), &["parent".to_string()])
            .unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument);
    assert_eq!(
        r.e.stat("a").unwrap().labels,
        st3.labels,
        "a refused update changes nothing"
    );
    let mut gone = st3;
    gone.name = "nope".into();
    assert_eq!(Rig::code(r.e.update(gone, &[])), Code::NotFound);
    // Labels survive a restart.
    let r = r.reopen();
    assert_eq!(r.e.stat("a").unwrap().labels, lbl(&[("l4", "v4"), gc]));
}

#[test]
fn walk_with_the_suites_filters() {
    let r = Rig::new();
    let gc = ("containerd.io/gc.root", "check-walk");
    let l = |v| lbl(&[gc, ("l", v)]);
    r.e.create(Kind::Active, "a-np", "", lbl(&[gc])).unwrap();
    r.e.create(Kind::Active, "p-tmp", "", lbl(&[gc])).unwrap();
    r.e.commit("p", "p-tmp", lbl(&[gc])).unwrap();
    r.e.create(Kind::Active, "a", "p", lbl(&[gc])).unwrap();
    r.e.create(Kind::View, "v", "p", lbl(&[gc])).unwrap();
    r.e.create(Kind::Active, "p-wl-tmp", "", lbl(&[gc]))
        .unwrap();
    r.e.commit("p-wl", "p-wl-tmp", l("1")).unwrap();
    r.e.create(Kind::Active, "a-wl", "p-wl", l("2")).unwrap();
    r.e.create(Kind::View, "v-wl", "p-wl", l("3")).unwrap();
    r.e.create(Kind::Active, "a-np-wl", "", l("2")).unwrap();
    let names = |f: &[&str]| -> Vec<String> {
        let f: Vec<String> = f.iter().map(|s| s.to_string()).collect();
        r.e.walk(&f).unwrap().into_iter().map(|i| i.name).collect()
    };
    assert_eq!(
        names(&[r#"labels."containerd.io/gc.root"==check-walk"#]),
        ["a", "a-np", "a-np-wl", "a-wl", "p", "p-wl", "v", "v-wl"]
    );
    assert_eq!(
        names(&[r#"kind==committed,labels."containerd.io/gc.root"==check-walk"#]),
        ["p", "p-wl"]
    );
    assert_eq!(names(&["name==p", "name==a-np-wl"]), ["a-np-wl", "p"]);
    assert_eq!(names(&["parent==p"]), ["a", "v"]);
    assert_eq!(names(&["labels.l==2"]), ["a-np-wl", "a-wl"]);
    let err = r.e.walk(&["name=".to_string()]).unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument);
}

#[test]
fn failed_device_calls_roll_back() {
    let r = Rig::new();
    r.fake.fail_next("create", DevErrorKind::NoSpace);
    assert_eq!(Rig::code(r.prepare("a", "")), Code::ResourceExhausted);
    r.fake.fail_next("activate", DevErrorKind::Other);
    assert_eq!(Rig::code(r.prepare("a", "")), Code::Internal);
    assert!(r.snap_devices().is_empty(), "half-made device removed");
    assert!(r.store().load().unwrap().0.is_empty(), "intent removed");
    assert_eq!(Rig::code(r.e.stat("a")), Code::NotFound);
    r.prepare("a", "").unwrap();
    r.fake.fail_next("remove", DevErrorKind::Busy);
    assert_eq!(Rig::code(r.e.remove("a")), Code::FailedPrecondition);
    assert_eq!(r.e.stat("a").unwrap().kind, Kind::Active, "restored");
    let (recs, _) = r.store().load().unwrap();
    assert_eq!(recs[0].state, State::Ready);
    r.fake.fail_next("deactivate", DevErrorKind::Other);
    r.commit("c", "a").unwrap();
    assert_eq!(
        r.e.stat("c").unwrap().kind,
        Kind::Committed,
        "deactivation is best effort"
    );
    r.e.remove("c").unwrap();
}

#[test]
fn restart_reconciles_every_interrupted_step() {
    let r = Rig::new();
    r.prepare("keep", "").unwrap();
    r.commit("base", "keep").unwrap();
    r.prepare("child", "base").unwrap();
    let store = r.store();
    let rec = |dev: &str, key: &str, state| Record {
        format: FORMAT,
        device: dev.into(),
        key: key.into(),
        kind: Kind::Active,
        parent: None,
        labels: BTreeMap::new(),
        created: Stamp::now(),
        updated: Stamp::now(),
        state,
        mapped_bytes: None,
    };
    // Crash after the intent, before the device: no device.
    store
        .write(&rec("snap-10", "c-intent", State::Creating))
        .unwrap();
    // Crash after the device, before ready.
    store
        .write(&rec("snap-11", "c-device", State::Creating))
        .unwrap();
    r.fake.add("snap-11");
    // Crash during a removal, device still there / already gone.
    store
        .write(&rec("snap-12", "r-device", State::Removing))
        .unwrap();
    r.fake.add("snap-12");
    store
        .write(&rec("snap-13", "r-gone", State::Removing))
        .unwrap();
    // A ready record whose device someone deleted.
    store.write(&rec("snap-14", "lost", State::Ready)).unwrap();
    // A device no record names (e.g. a crash inside a rollback).
    r.fake.add("snap-15");
    // Not ours: left alone.
    r.fake.add("operator-dev");
    // A torn temp file from a crash in the middle of a write.
    std::fs::write(r.dir.path().join("snapshots/snap-16.json.tmp"), b"{").unwrap();
    let r = r.reopen();
    assert_eq!(r.snap_devices(), vec!["operator-dev", "snap-1", "snap-2"]);
    let (recs, bad) = r.store().load().unwrap();
    assert!(bad.is_empty());
    let keys: Vec<_> = recs.iter().map(|r| (r.key.as_str(), r.state)).collect();
    assert_eq!(keys, [("base", State::Ready), ("child", State::Ready)]);
    assert_eq!(r.e.stat("child").unwrap().parent, "base");
    assert_eq!(Rig::code(r.e.stat("lost")), Code::NotFound);
    // New ids continue after every id seen.
    r.prepare("new", "").unwrap();
    assert!(r.fake.has("snap-16"));
}

#[test]
fn a_degraded_start_keeps_snapshots_the_set_cannot_confirm() {
    let r = Rig::new();
    r.prepare("a", "").unwrap();
    r.commit("committed", "a").unwrap();
    r.prepare("creating", "committed").unwrap();
    let device_of = |r: &Rig, key: &str| {
        let (recs, _) = r.store().load().unwrap();
        recs.into_iter().find(|x| x.key == key).unwrap().device
    };
    let (committed, creating) = (device_of(&r, "committed"), device_of(&r, "creating"));
    // Put `creating` back in its interrupted state.
    let mut rec = r
        .store()
        .load()
        .unwrap()
        .0
        .into_iter()
        .find(|x| x.key == "creating")
        .unwrap();
    rec.state = State::Creating;
    r.store().write(&rec).unwrap();
    // The set opened degraded: the adds of both devices have outcomes the
    // pool has not confirmed, so it lists neither; a third unsettled add
    // (an interrupted prepare whose record is gone) holds a higher number.
    {
        let mut s = r.fake.s.lock().unwrap();
        for d in [&committed, &creating] {
            s.devices.remove(d.as_str());
            s.unsettled.insert(d.clone());
        }
        s.unsettled.insert("snap-9".into());
    }
    let r = r.reopen();
    assert_eq!(r.e.stat("committed").unwrap().name, "committed");
    let (recs, _) = r.store().load().unwrap();
    let kept: Vec<_> = recs.iter().map(|x| (x.key.as_str(), x.state)).collect();
    assert_eq!(
        kept,
        [("committed", State::Ready), ("creating", State::Creating)],
        "nothing the set cannot confirm is dropped"
    );
    // A new snapshot never takes an unsettled device's number.
    r.prepare("new", "").unwrap();
    assert_eq!(device_of(&r, "new"), "snap-10");
    // The pool heals: both adds turn out finished. The interrupted prepare
    // is rolled back, the committed snapshot stays.
    {
        let mut s = r.fake.s.lock().unwrap();
        s.unsettled.clear();
        for d in [&committed, &creating] {
            s.devices.insert(d.clone(), (None, false, 0));
        }
    }
    let r = r.reopen();
    assert_eq!(r.e.stat("committed").unwrap().name, "committed");
    assert_eq!(Rig::code(r.e.stat("creating")), Code::NotFound);
    assert!(
        !r.fake.has(&creating),
        "the rolled-back prepare's device is removed"
    );
    // A set that cannot answer fails the start rather than drop records.
    r.fake.fail_next("presence", DevErrorKind::Other);
    let Rig { dir, fake, e } = r;
    drop(e);
    assert!(Engine::open(fake.clone(), dir.path()).is_err());
    let e = Engine::open(fake.clone(), dir.path()).unwrap();
    assert_eq!(e.stat("committed").unwrap().name, "committed");
}

#[test]
fn damaged_records_keep_their_devices() {
    let r = Rig::new();
    r.prepare("a", "").unwrap();
    std::fs::write(r.dir.path().join("snapshots/snap-1.json"), b"not json").unwrap();
    let r = r.reopen();
    assert_eq!(r.snap_devices(), vec!["snap-1"]);
    assert_eq!(Rig::code(r.e.stat("a")), Code::NotFound);
    r.prepare("b", "").unwrap();
    assert!(r.fake.has("snap-2"), "no id reuse");
}

#[test]
fn template_is_made_once_and_remade_when_unfinished() {
    let r = Rig::new();
    assert!(r.fake.has(TEMPLATE));
    let r = r.reopen();
    assert!(r.fake.has(TEMPLATE));
    // A crash between making the template and its marker.
    std::fs::remove_file(r.dir.path().join("template.json")).unwrap();
    r.fake.fail_next("template", DevErrorKind::Other);
    let Rig { dir, fake, e } = r;
    drop(e);
    assert!(Engine::open(fake.clone(), dir.path()).is_err());
    assert!(!fake.has(TEMPLATE), "the unfinished template was removed");
    Engine::open(fake.clone(), dir.path()).unwrap();
    assert!(fake.has(TEMPLATE));
}

#[test]
fn cleanup_removes_only_unreferenced_snapshot_devices() {
    let r = Rig::new();
    r.prepare("a", "").unwrap();
    r.fake.add("snap-99");
    r.fake.add("mine");
    r.e.cleanup().unwrap();
    assert_eq!(r.snap_devices(), vec!["mine", "snap-1"]);
    assert!(r.fake.has(TEMPLATE));
}

#[test]
fn usage_is_own_mapped_bytes_less_the_parents() {
    let r = Rig::new();
    r.prepare("a", "").unwrap();
    r.fake.set_mapped("snap-1", 1000);
    assert_eq!(r.e.usage("a").unwrap(), (1000, 0));
    r.commit("c", "a").unwrap();
    assert_eq!(r.e.usage("c").unwrap(), (1000, 0), "recorded at commit");
    r.prepare("b", "c").unwrap();
    r.fake.set_mapped("snap-2", 1500);
    assert_eq!(r.e.usage("b").unwrap(), (500, 0));
    r.view("v", "c").unwrap();
    assert_eq!(r.e.usage("v").unwrap(), (0, 0));
    assert_eq!(Rig::code(r.e.usage("x")), Code::NotFound);
}

#[test]
fn mounted_committed_devices_stay_active() {
    let r = Rig::new();
    r.prepare("a", "").unwrap();
    r.fake.s.lock().unwrap().mounted.insert("snap-1".into());
    r.commit("c", "a").unwrap();
    assert!(r.fake.active("snap-1"));
    r.prepare("b", "c").unwrap();
}

#[test]
fn a_busy_snapshot_refuses_a_second_change() {
    let r = Rig::new();
    r.prepare("a", "").unwrap();
    let dev = r.e.tables().claim("a").unwrap().0;
    assert_eq!(Rig::code(r.e.remove("a")), Code::Unavailable);
    assert_eq!(Rig::code(r.commit("c", "a")), Code::Unavailable);
    assert_eq!(r.e.stat("a").unwrap().name, "a", "reads still work");
    r.prepare("other", "").unwrap();
    r.e.tables().release(&dev, None);
    r.e.remove("a").unwrap();
}

#[test]
fn parallel_calls_on_different_keys() {
    let r = Arc::new(Rig::new());
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let r = r.clone();
            std::thread::spawn(move || {
                for j in 0..20 {
                    let k = format!("k{i}/{j}");
                    r.prepare(&k, "").unwrap();
                    r.commit(&format!("c{i}/{j}"), &k).unwrap();
                    r.e.remove(&format!("c{i}/{j}")).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(r.snap_devices().is_empty());
    assert!(r.store().load().unwrap().0.is_empty());
}

#[test]
fn errors_map_to_grpc_codes() {
    let s: tonic::Status = Error::not_found("k").into();
    assert_eq!(s.code(), tonic::Code::NotFound);
    for (c, g) in [
        (Code::AlreadyExists, tonic::Code::AlreadyExists),
        (Code::FailedPrecondition, tonic::Code::FailedPrecondition),
        (Code::InvalidArgument, tonic::Code::InvalidArgument),
        (Code::Unavailable, tonic::Code::Unavailable),
        (Code::ResourceExhausted, tonic::Code::ResourceExhausted),
        (Code::Internal, tonic::Code::Internal),
    ] {
        assert_eq!(tonic::Status::from(Error::new(c, "x")).code(), g);
    }
    let dev = |kind| {
        Error::from(DevError {
            kind,
            msg: "m".into(),
        })
        .code
    };
    assert_eq!(dev(DevErrorKind::NotFound), Code::NotFound);
    assert_eq!(dev(DevErrorKind::Exists), Code::AlreadyExists);
    assert_eq!(dev(DevErrorKind::Busy), Code::FailedPrecondition);
    assert_eq!(dev(DevErrorKind::NoSpace), Code::ResourceExhausted);
    assert_eq!(dev(DevErrorKind::Other), Code::Internal);
}

/// Every fail point in error mode: the call fails (or, past the point of no
/// return, completes) with records and devices agreeing, and again after a
/// restart; the call retried succeeds.
#[cfg(feature = "failpoints")]
#[test]
fn injected_errors_at_every_fail_point_leave_records_and_devices_agreeing() {
    use crate::failpoint::{arm, Mode, FAIL_POINTS};
    fn agree(r: &Rig) {
        let (recs, bad) = r.store().load().unwrap();
        assert!(bad.is_empty());
        let mut devs: Vec<String> = recs.iter().map(|r| r.device.clone()).collect();
        devs.sort();
        assert_eq!(devs, r.snap_devices(), "records and devices differ");
        assert!(recs.iter().all(|r| r.state == State::Ready), "{recs:?}");
    }
    for &point in FAIL_POINTS {
        let armed = || arm(Some((point, Mode::Error)));
        let r = Rig::new();
        if point != "snap.create.after_intent" && !point.starts_with("snap.template") {
            r.prepare("a", "").unwrap();
        }
        let r = match point {
            "snap.template.after_device" => {
                let dir = tempfile::tempdir().unwrap();
                let fake = Arc::new(Fake::default());
                armed();
                let opened = Engine::open(fake.clone(), dir.path());
                arm(None);
                let err = opened.err().expect("open fails at the point");
                assert!(err.msg.contains(point), "{}", err.msg);
                // The retry is the next start: the template is remade.
                let e = Engine::open(fake.clone(), dir.path()).unwrap();
                Rig { dir, fake, e }
            }
            p if p.starts_with("snap.create.") => {
                armed();
                let err = r.prepare("b", "").unwrap_err();
                arm(None);
                assert!(err.msg.contains(point), "{point}: {}", err.msg);
                assert_eq!(Rig::code(r.e.stat("b")), Code::NotFound);
                agree(&r);
                r.prepare("b", "").unwrap();
                r
            }
            "snap.commit.after_write" => {
                armed();
                let err = r.commit("c", "a").unwrap_err();
                arm(None);
                assert!(err.msg.contains(point), "{}", err.msg);
                assert_eq!(r.e.stat("a").unwrap().kind, Kind::Active);
                assert_eq!(Rig::code(r.e.stat("c")), Code::NotFound);
                agree(&r);
                let r = r.reopen();
                assert_eq!(r.e.stat("a").unwrap().kind, Kind::Active, "undone on disk");
                r.commit("c", "a").unwrap();
                r
            }
            "snap.remove.after_intent" => {
                armed();
                let err = r.e.remove("a").unwrap_err();
                arm(None);
                assert!(err.msg.contains(point), "{}", err.msg);
                assert_eq!(r.e.stat("a").unwrap().kind, Kind::Active);
                agree(&r);
                r.e.remove("a").unwrap();
                r
            }
            "snap.remove.after_device" => {
                // Past the device's removal: the call completes, the record
                // stays `removing` until the next start finishes it.
                armed();
                r.e.remove("a").unwrap();
                arm(None);
                assert_eq!(Rig::code(r.e.stat("a")), Code::NotFound);
                assert!(r.snap_devices().is_empty());
                let (recs, _) = r.store().load().unwrap();
                assert_eq!(recs.len(), 1);
                assert_eq!(recs[0].state, State::Removing);
                r.reopen()
            }
            other => panic!("no scenario for fail point {other}"),
        };
        agree(&r);
        let r = r.reopen();
        agree(&r);
    }
}
