//! What the monitor must not cost the host: a metadata commit for every
//! look at the pool.

use super::*;

/// Write requests the block device `maj:min` has completed (the fifth field
/// of its `/sys/dev/block/<maj>:<min>/stat`).
fn writes_completed(majmin: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/sys/dev/block/{majmin}/stat")).unwrap();
    stat.split_whitespace().nth(4).unwrap().parse().unwrap()
}

/// The `maj:min` of pool `pool`'s metadata device, from its live table.
fn metadata_majmin(ctl: &mut Control, pool: &str) -> String {
    pool_table(ctl, pool).metadata_dev().to_string()
}

/// The metadata device's write count once it stays the same for a second
/// (the pool's periodic commit has run and nothing is left to commit).
fn settled_writes(majmin: &str) -> u64 {
    let mut last = writes_completed(majmin);
    for _ in 0..30 {
        thread::sleep(Duration::from_millis(1100));
        let now = writes_completed(majmin);
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the metadata device of {majmin} never went quiet");
}

#[test]
fn monitor_checks_commit_no_metadata() {
    let root = Root::new("ae-noflush");
    let r = root.0.as_path();
    let set = Arc::new(DeviceSet::open(r, small(64 * MIB, 8 * MIB)).unwrap());
    // A thin device made: the pool is in service, so a commit writes its
    // superblock even with nothing changed.
    set.add_device("a", None).unwrap();
    let pool = set.pool_name().to_string();
    let mut monitor = Monitor::for_set(set.clone(), None).unwrap();
    let mut ctl = Control::open().unwrap();
    let meta = metadata_majmin(&mut ctl, &pool);
    // The control: a status read without noflush commits (this kernel).
    let before_plain = settled_writes(&meta);
    ctl.table_status(DevId::Name(&pool), &StatusOptions::default())
        .unwrap();
    let plain = writes_completed(&meta) - before_plain;
    assert!(
        plain > 0,
        "a plain status wrote nothing: the test cannot see a commit"
    );
    let quiet = settled_writes(&meta);
    for _ in 0..20 {
        let c = monitor.check().unwrap();
        assert!(c.growths.is_empty(), "{c:?}");
    }
    let after_checks = writes_completed(&meta);
    assert_eq!(
        after_checks,
        quiet,
        "20 monitor checks wrote the metadata device {} times",
        after_checks - quiet
    );
    say!("autoextend checks: a plain status cost {plain} metadata writes, 20 monitor checks 0");
    drop(monitor);
    finish(&set, r);
}
