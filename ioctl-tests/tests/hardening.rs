//! Holes found by trying the CLI as a new user would (issue #17): options
//! that must be remembered, mount flags, a root whose device number changes,
//! and a closed stdout.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

fn init(root: &Path, extra: &[&str]) {
    let mut args = SMALL_INIT.to_vec();
    args.extend_from_slice(extra);
    dmthin_ok(root, &args);
}

fn pool_table(root: &Path) -> String {
    let pool = format!("{}pool", dmthin::deviceset::name_prefix(root).unwrap());
    sh_ok(&format!("dmsetup table {pool}"))
}

#[test]
fn init_options_are_remembered_by_later_commands() {
    let r = Root::new("remember");
    init(&r.0, &["--min-free", "99", "--no-zeroing"]);
    assert!(pool_table(&r.0).contains("skip_block_zeroing"));
    // The base filesystem alone uses more than 1% of a 256 MiB pool, so a
    // remembered --min-free 99 refuses the next create.
    let out = dmthin_cli(&r.0, &["create", "a"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "create ignored --min-free 99");
    assert!(err.contains("free"), "{err}");
    // Still remembered after the pool was taken down and set up again.
    dmthin_ok(&r.0, &["shutdown"]);
    dmthin_ok(&r.0, &["list"]);
    assert!(
        pool_table(&r.0).contains("skip_block_zeroing"),
        "--no-zeroing forgotten: {}",
        pool_table(&r.0)
    );
    // Changed later by init on the existing set, and remembered again.
    init(&r.0, &["--min-free", "5"]);
    dmthin_ok(&r.0, &["create", "a"]);
    dmthin_ok(&r.0, &["remove", "a"]);
    dmthin_ok(&r.0, &["shutdown"]);
}

#[test]
fn standard_mount_options_become_mount_flags() {
    let r = Root::new("mountflags");
    init(&r.0, &["--mount-options", "nosuid,nodev,noexec,noatime"]);
    dmthin_ok(&r.0, &["create", "a"]);
    let mnt = r.mnt("a");
    std::fs::create_dir_all(&mnt).unwrap();
    dmthin_ok(&r.0, &["mount", "a", mnt.to_str().unwrap()]);
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == mnt.to_str())
        .unwrap_or_else(|| panic!("{} not mounted:\n{mounts}", mnt.display()));
    let opts: Vec<&str> = line.split(' ').nth(3).unwrap().split(',').collect();
    for flag in ["nosuid", "nodev", "noexec", "noatime"] {
        assert!(opts.contains(&flag), "{flag} missing in {line}");
    }
    dmthin_ok(&r.0, &["umount", "a", mnt.to_str().unwrap()]);
    dmthin_ok(&r.0, &["shutdown"]);
}

#[test]
fn kernel_names_survive_a_new_device_number_for_the_root() {
    let r = Root::new("stdev");
    let img = r.0.join("fs.img");
    let top = r.0.join("top");
    std::fs::create_dir_all(&top).unwrap();
    sh_ok(&format!(
        "truncate -s 600M {img} && mkfs.ext4 -q -F {img}",
        img = img.display()
    ));
    let first = LoopDevice::attach(&img);
    sh_ok(&format!("mount {} {}", first.path_str(), top.display()));
    let root = top.join("set");
    init(&root, &[]);
    dmthin_ok(&root, &["create", "a"]);
    let before = dmthin::deviceset::name_prefix(&root).unwrap();
    dmthin_ok(&root, &["shutdown"]);
    sh_ok(&format!("umount {}", top.display()));
    // Free the first loop device and hold it with another file, so the
    // image comes back on another one.
    let first_path = first.path().to_path_buf();
    drop(first);
    let hold_file = dmthin_ioctl_tests::sparse_file(r.0.join("hold.img"), MIB);
    let _hold = LoopDevice::attach_at(&first_path, hold_file);
    let second = LoopDevice::attach(&img);
    assert_ne!(first_path, second.path());
    sh_ok(&format!("mount {} {}", second.path_str(), top.display()));
    let after = dmthin::deviceset::name_prefix(&root).unwrap();
    assert_ne!(before, after, "the root's device number did not change");
    let list = dmthin_ok(&root, &["list"]);
    assert!(list.contains('a'), "{list}");
    let pool_then = format!("{before}pool");
    let tables = sh_ok("dmsetup ls");
    assert!(tables.contains(&pool_then), "pool renamed: {tables}");
    dmthin_ok(&root, &["activate", "a"]);
    assert!(sh_ok("dmsetup ls").contains(&format!("{before}a")));
    dmthin_ok(&root, &["create", "b", "--from", "a"]);
    dmthin_ok(&root, &["shutdown"]);
    sh_ok(&format!("umount {}", top.display()));
}

#[test]
fn a_closed_stdout_ends_the_cli_quietly() {
    let r = Root::new("pipe");
    init(&r.0, &[]);
    for i in 0..40 {
        dmthin_ok(&r.0, &["create", &format!("layer-{i:02}")]);
    }
    // The reader is gone before dmthin writes: always EPIPE.
    let out = sh_ok(&format!(
        "{{ sleep 0.5; dmthin --root {} list --json 2>/tmp/pipe-err; echo \"rc=$?\" >/tmp/pipe-rc; }} | true; \
         cat /tmp/pipe-rc /tmp/pipe-err",
        r.0.display()
    ));
    assert!(out.contains("rc=141"), "{out}");
    assert!(
        !out.contains("panicked") && !out.contains("Broken pipe"),
        "{out}"
    );
    dmthin_ok(&r.0, &["shutdown"]);
}

#[test]
fn a_planted_link_under_the_root_is_refused_and_its_target_untouched() {
    let r = Root::new("planted");
    let victim = std::path::PathBuf::from("/tmp/dmthin-victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::fs::create_dir_all(r.0.join("devicemapper")).unwrap();
    std::os::unix::fs::symlink(&victim, r.0.join("devicemapper/data")).unwrap();
    let out = dmthin_cli(
        &r.0,
        &["init", "--data-size", "256M", "--metadata-size", "16M"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "init followed the planted link");
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_eq!(std::fs::metadata(&victim).unwrap().len(), 8);
    std::fs::remove_file(&victim).unwrap();
}

#[test]
fn a_root_others_can_write_to_is_refused() {
    let r = Root::new("open-root");
    init(&r.0, &[]);
    dmthin_ok(&r.0, &["shutdown"]);
    // Owned by another user: dmthin's chmod cannot fix it, so it refuses.
    std::os::unix::fs::chown(&r.0, Some(1000), None).unwrap();
    let out = dmthin_cli(&r.0, &["list"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a root owned by uid 1000 was trusted"
    );
    assert!(err.contains("owned by uid 1000"), "{err}");
    std::os::unix::fs::chown(&r.0, Some(0), None).unwrap();
    dmthin_ok(&r.0, &["list"]);
    dmthin_ok(&r.0, &["shutdown"]);
}

#[test]
fn the_metadata_file_is_fully_allocated() {
    let r = Root::new("fallocate");
    init(&r.0, &[]);
    let meta = std::fs::metadata(r.0.join("devicemapper/metadata")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert!(
        meta.blocks() * 512 >= meta.len(),
        "metadata file is sparse: {} of {} bytes allocated",
        meta.blocks() * 512,
        meta.len()
    );
    dmthin_ok(&r.0, &["shutdown"]);
}

/// A set whose root is its own small ext4 filesystem (on a loop device),
/// so the test can fill it or make it read-only, with device `a` mounted
/// outside it. With `block_devices` the pool sits on two loop devices over
/// files elsewhere, so nothing on the root's filesystem stays open for
/// writing and it can be remounted read-only under a running set.
fn set_on_own_filesystem(r: &Root, tag: &str, block_devices: bool) -> (PathBuf, Vec<LoopDevice>) {
    let attach =
        |name: &str, size: u64| LoopDevice::with_sparse_file(&r.0, &format!("{tag}-{name}"), size);
    let fs_dev = attach("fs", 400 * MIB);
    let top = r.0.join(tag);
    std::fs::create_dir_all(&top).unwrap();
    sh_ok(&format!(
        "mkfs.ext4 -q -F {fs} && mount {fs} {}",
        top.display(),
        fs = fs_dev.path_str()
    ));
    let root = top.join("set");
    let mut loops = vec![fs_dev];
    if block_devices {
        let (data, meta) = (attach("data", 256 * MIB), attach("meta", 16 * MIB));
        let args = [
            "init",
            "--base-size",
            "64M",
            "--data-dev",
            data.path_str(),
            "--metadata-dev",
            meta.path_str(),
        ];
        dmthin_ok(&root, &args);
        loops.extend([data, meta]);
    } else {
        init(&root, &[]);
    }
    dmthin_ok(&root, &["create", "a"]);
    let mnt = r.mnt(&format!("{tag}-a"));
    std::fs::create_dir_all(&mnt).unwrap();
    dmthin_ok(&root, &["mount", "a", mnt.to_str().unwrap()]);
    (root, loops)
}

/// Unmounts the root's filesystem and detaches the loop devices
/// in the reverse order of attaching (the filesystem's last).
fn teardown_own_filesystem(root: &Path, loops: Vec<LoopDevice>) {
    sh(&format!("umount {}", root.parent().unwrap().display()));
    loops.into_iter().rev().for_each(drop);
}

#[test]
fn a_full_root_filesystem_still_lists_unmounts_and_shuts_down() {
    let r = Root::new("fullroot");
    let (root, loops) = set_on_own_filesystem(&r, "full", false);
    let top = root.parent().unwrap().to_path_buf();
    let (_, out) = sh(&format!(
        "dd if=/dev/zero of={}/filler bs=1M",
        top.display()
    ));
    assert!(
        out.contains("No space left"),
        "the filesystem did not fill: {out}"
    );
    let list = dmthin_ok(&root, &["list"]);
    assert!(list.contains('a'), "{list}");
    dmthin_ok(&root, &["status"]);
    let mnt = r.mnt("full-a");
    dmthin_ok(&root, &["umount", "a", mnt.to_str().unwrap()]);
    dmthin_ok(&root, &["shutdown"]);
    teardown_own_filesystem(&root, loops);
}

#[test]
fn a_read_only_root_filesystem_still_lists_unmounts_and_shuts_down() {
    let r = Root::new("roroot");
    let (root, loops) = set_on_own_filesystem(&r, "ro", true);
    let top = root.parent().unwrap().to_path_buf();
    sh_ok(&format!("mount -o remount,ro {}", top.display()));
    let list = dmthin_ok(&root, &["list"]);
    assert!(list.contains('a'), "{list}");
    dmthin_ok(&root, &["status"]);
    let mnt = r.mnt("ro-a");
    dmthin_ok(&root, &["umount", "a", mnt.to_str().unwrap()]);
    dmthin_ok(&root, &["shutdown"]);
    teardown_own_filesystem(&root, loops);
}

/// The kernel name of device `id` of the set at `root`.
fn kernel_name(root: &Path, id: &str) -> String {
    format!("{}{id}", dmthin::deviceset::name_prefix(root).unwrap())
}

/// Holds `path` open in a child process until it is killed.
fn hold_open(path: &str) -> std::process::Child {
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("exec 3<{path}; echo held; exec sleep 120"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    child
}

#[test]
fn deferred_removal_and_deletion_are_set_options() {
    let r = Root::new("deferred-opts");
    init(&r.0, &["--deferred-removal", "--deferred-deletion"]);
    let rec = std::fs::read_to_string(r.0.join("metadata/set.json")).unwrap();
    assert!(rec.contains("\"deferred_removal\": true"), "{rec}");

    // Deferred removal: a device held open elsewhere is removed at its last close.
    dmthin_ok(&r.0, &["create", "held"]);
    dmthin_ok(&r.0, &["activate", "held"]);
    let name = kernel_name(&r.0, "held");
    let mut holder = hold_open(&format!("/dev/mapper/{name}"));
    let removed = dmthin_cli(&r.0, &["remove", "held"]);
    assert!(
        removed.status.success(),
        "remove of a busy device failed despite --deferred-removal: {}",
        String::from_utf8_lossy(&removed.stderr)
    );
    assert!(!dmthin_ok(&r.0, &["list"]).contains("held"));
    holder.kill().unwrap();
    holder.wait().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    dmthin_ok(&r.0, &["list"]);
    assert!(durable_record(&r.0, "held").is_none());
    assert!(!sh_ok("dmsetup ls").contains(&name));

    // Deferred deletion: a thin another tool keeps open in the pool is
    // deleted later, not refused.
    dmthin_ok(&r.0, &["create", "shared"]);
    let rec = durable_record(&r.0, "shared").expect("shared's record");
    let thin_id = rec["thin_id"].as_u64().unwrap();
    let pool = kernel_name(&r.0, "pool");
    sh_ok(&format!(
        "dmsetup create dmthin-test-foreign --table '0 2048 thin /dev/mapper/{pool} {thin_id}'"
    ));
    dmthin_ok(&r.0, &["remove", "shared"]);
    assert!(!dmthin_ok(&r.0, &["list"]).contains("shared"));
    assert!(
        durable_record(&r.0, "shared").is_some_and(|r| r["deferred_delete"] == true),
        "deleted too early"
    );
    sh_ok("dmsetup remove dmthin-test-foreign");
    dmthin_ok(&r.0, &["list"]);
    assert!(durable_record(&r.0, "shared").is_none(), "never deleted");

    // And turned off again by init.
    init(&r.0, &["--no-deferred-removal"]);
    let rec = std::fs::read_to_string(r.0.join("metadata/set.json")).unwrap();
    assert!(rec.contains("\"deferred_removal\": false"), "{rec}");
    dmthin_ok(&r.0, &["shutdown"]);
}
