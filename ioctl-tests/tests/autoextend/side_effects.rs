//! What the monitor must not cost or need of the host: a metadata commit
//! for every look at the pool; free space on the set's root to log a
//! growth.

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

/// Writes to `dir/fill` until its filesystem is full.
fn fill_up(dir: &Path) {
    let mut f = std::fs::File::create(dir.join("fill")).unwrap();
    let chunk = vec![0xA5u8; 64 << 10];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
    f.sync_all().unwrap();
}

#[test]
fn growth_needs_no_room_on_a_full_root() {
    // The set's root on a small tmpfs, its loop files on another with room
    // (`devicemapper/` mounted apart, as a host may put them on a bigger disk).
    let root = Root::new("ae-fullroot");
    let set_root = root.0.join("set");
    let files = set_root.join("devicemapper");
    std::fs::create_dir_all(&set_root).unwrap();
    sh_ok(&format!(
        "mount -t tmpfs -o size=2M,mode=0700 tmpfs {}",
        set_root.display()
    ));
    std::fs::create_dir(&files).unwrap();
    sh_ok(&format!(
        "mount -t tmpfs -o size=160M,mode=0700 tmpfs {}",
        files.display()
    ));
    let set = Arc::new(DeviceSet::open(&set_root, small(64 * MIB, 8 * MIB)).unwrap());
    // The monitor starts while the root has room: its log is made ready.
    let monitor = Monitor::for_set(set.clone(), None).unwrap();
    fill_up(&set_root);
    let probe = std::fs::write(set_root.join("probe"), [0u8; 4096]).unwrap_err();
    assert_eq!(probe.raw_os_error(), Some(nix::libc::ENOSPC), "{probe}");
    // A growth on the full root: data (and metadata) grown, and logged.
    let before = set.status().unwrap().data_total;
    let grown = set
        .autoextend(&AutoextendOptions {
            threshold_percent: 0,
            ..AutoextendOptions::default()
        })
        .unwrap();
    let st = set.status().unwrap();
    assert!(st.data_total > before, "{st:?}");
    let history = set.growth_history().unwrap();
    assert_eq!(history, grown, "every growth logged");
    assert!(
        grown
            .iter()
            .any(|g| g.target == GrowthTarget::Data && g.from == before),
        "{grown:?}"
    );
    say!(
        "autoextend on a full root: {} growths made and logged, data {} -> {} MiB",
        grown.len(),
        before / MIB,
        st.data_total / MIB
    );
    drop(monitor);
    std::fs::remove_file(set_root.join("fill")).unwrap();
    finish(&set, &set_root);
    drop(set);
    sh(&format!("umount {}", files.display()));
    sh(&format!("umount {}", set_root.display()));
}
