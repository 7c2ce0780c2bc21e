// Loop-device tests against the running kernel. They run on the host (loop
// devices are real there) and, through `include!`, in the VM kernel suite
// (ioctl-tests/tests/loopdev.rs), so this file uses only std, dmthin and nix
// (a dependency of both crates) and has no inner attributes.
//
// Other test binaries may use loop devices at the same time: no test assumes a
// device number, and no test detaches a device it did not attach. Every test
// keeps its backing files in a `Scratch` directory whose Drop detaches any
// device still bound to one of its files (matched by inode), even when an
// assertion failed.

#[path = "loopdev/sys.rs"]
mod sys;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use dmthin::loopdev::{
    self, create_sparse_file, AttachOptions, LoopControl, LoopDevice, LoopError, LoopStatus,
};

const MIB: u64 = 1 << 20;

/// Loop devices usable here? Tests return early (and say so) when not.
fn loop_available() -> bool {
    let ok = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .is_ok();
    if !ok {
        eprintln!("skipped: /dev/loop-control cannot be opened (needs root and the loop driver)");
    }
    ok
}

/// A private directory of backing files; Drop detaches every device still
/// bound to one of them, then removes the directory.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "dmthin-loop-{}-{}-{}",
            std::process::id(),
            name,
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch { dir }
    }

    fn file(&self, name: &str, size: u64) -> PathBuf {
        let p = self.dir.join(name);
        create_sparse_file(&p, size).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(meta) = fs::symlink_metadata(&p) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            clear_immutable(&p);
            detach_ours(&p, meta.dev(), meta.ino());
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Detach every device bound to the file with this device/inode.
fn detach_ours(path: &Path, dev: u64, ino: u64) {
    for s in loopdev::find_all_by_file(path).unwrap_or_default() {
        if let Ok(d) = LoopDevice::open(&s.device) {
            match d.status() {
                Ok(now) if now.backing_device == dev && now.backing_inode == ino => {
                    eprintln!("cleanup: detaching leftover {}", s.device.display());
                    let _ = d.detach_within(Duration::from_secs(5));
                }
                _ => {}
            }
        }
    }
}

/// Bound devices backed by `file`, polled until `want` of them remain (the
/// kernel finishes a detach on the last close, which may be another thread's).
fn wait_bound_count(file: &Path, want: usize) -> Vec<LoopStatus> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = loopdev::find_all_by_file(file).unwrap();
        if v.len() == want || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn ino(p: &Path) -> (u64, u64) {
    let m = fs::metadata(p).unwrap();
    (m.dev(), m.ino())
}

const O_EXCL: i32 = 0o200;
fn clear_immutable(p: &Path) {
    let _ = sys::set_immutable(p, false);
}

/// Hold an unbound device with an exclusive open, so no one can bind it while
/// the test looks at it. Returns its number and the claim.
fn claim_unbound_device(ctl: &LoopControl) -> (u32, File) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        // The free device, then any other that sysfs shows unbound: under
        // load from other tests, others may bind each first.
        let mut candidates = vec![ctl.get_free().unwrap()];
        if let Ok(rd) = fs::read_dir("/sys/block") {
            candidates.extend(rd.flatten().filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let n = name.strip_prefix("loop")?.parse::<u32>().ok()?;
                (!e.path().join("loop").exists()).then_some(n)
            }));
        }
        for n in candidates {
            let Ok(claim) = OpenOptions::new()
                .read(true)
                .custom_flags(O_EXCL)
                .open(ctl.device_path(n))
            else {
                continue;
            };
            if let Err(LoopError::NotBound { .. }) = LoopDevice::open(ctl.device_path(n)) {
                return (n, claim);
            }
            // Bound by someone else in between: let it go.
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("could not claim an unbound loop device");
}

#[test]
fn concurrent_attach_detach() {
    if !loop_available() {
        return;
    }
    concurrent_cycles(LoopControl::open().unwrap(), "LOOP_CONFIGURE");
}

#[test]
fn concurrent_attach_detach_without_configure() {
    if !loop_available() {
        return;
    }
    concurrent_cycles(
        LoopControl::open().unwrap().without_configure(),
        "LOOP_SET_FD",
    );
}

/// 8 threads attach and detach 50 times each through `ctl`; no error may
/// surface and nothing may stay bound.
fn concurrent_cycles(ctl: LoopControl, label: &str) {
    const THREADS: usize = 8;
    const CYCLES: usize = 50;
    let scratch = Scratch::new("concurrent");
    let files: Vec<PathBuf> = (0..THREADS)
        .map(|t| scratch.file(&format!("f{t}"), MIB))
        .collect();
    let max_number = AtomicU32::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for file in &files {
            let (ctl, max_number) = (&ctl, &max_number);
            s.spawn(move || {
                let (dev, ino) = ino(file);
                for i in 0..CYCLES {
                    let d = ctl
                        .attach(file, &AttachOptions::new())
                        .unwrap_or_else(|e| panic!("attach {} cycle {i}: {e}", file.display()));
                    max_number.fetch_max(d.number(), Ordering::Relaxed);
                    let st = d.status().unwrap();
                    assert_eq!((st.backing_device, st.backing_inode), (dev, ino));
                    assert_eq!(d.size().unwrap(), MIB);
                    // Another thread's attach may hold the device open for a
                    // moment; detach waits that out.
                    d.detach()
                        .unwrap_or_else(|e| panic!("detach {} cycle {i}: {e}", file.display()));
                }
            });
        }
    });
    eprintln!(
        "{label}: {} attach+detach cycles on {THREADS} threads in {:?}; highest device: loop{}",
        THREADS * CYCLES,
        start.elapsed(),
        max_number.load(Ordering::Relaxed)
    );
    for f in &files {
        assert_eq!(
            wait_bound_count(f, 0),
            vec![],
            "{} still bound",
            f.display()
        );
    }
}

#[test]
fn autoclear_frees_device_on_last_close() {
    if !loop_available() {
        return;
    }
    let scratch = Scratch::new("autoclear");
    let f = scratch.file("f", MIB);
    let d = loopdev::attach(&f, &AttachOptions::new().autoclear(true)).unwrap();
    assert!(d.status().unwrap().autoclear());
    assert_eq!(wait_bound_count(&f, 1)[0].number, d.number());

    // A second user keeps it alive after the first handle closes.
    let second = LoopDevice::open(d.path()).unwrap();
    drop(d);
    assert_eq!(wait_bound_count(&f, 1).len(), 1);
    drop(second);
    assert_eq!(wait_bound_count(&f, 0), vec![]);
}

#[test]
fn find_by_file_survives_reopen_and_rename() {
    if !loop_available() {
        return;
    }
    let scratch = Scratch::new("find");
    // Longer than the 64-byte name field, so a name comparison could not work.
    let long = format!("{}-backing-file", "x".repeat(80));
    let f = scratch.file(&long, MIB);
    let d = loopdev::attach(&f, &AttachOptions::new()).unwrap();
    assert_eq!(d.backing_file(), fs::canonicalize(&f).unwrap());
    let st = d.status().unwrap();
    assert_eq!(st.file_name.len(), 63, "name field is cut to 63 bytes");

    // Reopen the file under other names: a rename, a hard link, a symlink.
    let renamed = scratch.dir.join("renamed");
    fs::rename(&f, &renamed).unwrap();
    let _reopened = File::open(&renamed).unwrap();
    let hard = scratch.dir.join("hardlink");
    fs::hard_link(&renamed, &hard).unwrap();
    let sym = scratch.dir.join("symlink");
    std::os::unix::fs::symlink(&renamed, &sym).unwrap();
    for name in [&renamed, &hard, &sym] {
        let found = loopdev::find_by_file(name)
            .unwrap()
            .unwrap_or_else(|| panic!("no device found for {}", name.display()));
        assert_eq!(found.number(), d.number());
        assert_eq!(found.path(), d.path());
    }
    // sysfs follows the rename; the name field does not.
    let listed = loopdev::list().unwrap();
    let entry = listed.iter().find(|s| s.number == d.number()).unwrap();
    assert_eq!(entry.backing_file, fs::canonicalize(&renamed).unwrap());

    let other = scratch.file("other", MIB);
    assert!(loopdev::find_by_file(&other).unwrap().is_none());
    d.detach().unwrap();
    assert!(wait_bound_count(&hard, 0).is_empty());
}

#[test]
fn growing_the_file_shows_the_new_size() {
    if !loop_available() {
        return;
    }
    let scratch = Scratch::new("grow");
    let f = scratch.file("f", 4 * MIB);
    let d = loopdev::attach(&f, &AttachOptions::new()).unwrap();
    assert_eq!(d.size().unwrap(), 4 * MIB);
    // Never shrinks.
    assert_eq!(create_sparse_file(&f, MIB).unwrap(), 4 * MIB);
    assert_eq!(create_sparse_file(&f, 10 * MIB).unwrap(), 10 * MIB);
    d.set_capacity().unwrap();
    assert_eq!(d.size().unwrap(), 10 * MIB);
    assert_eq!(fs::metadata(&f).unwrap().len(), 10 * MIB);
    d.detach().unwrap();
}

#[test]
fn offset_and_size_limit() {
    if !loop_available() {
        return;
    }
    let scratch = Scratch::new("offset");
    let f = scratch.file("f", 4 * MIB);
    {
        let mut w = OpenOptions::new().write(true).open(&f).unwrap();
        w.seek(SeekFrom::Start(MIB)).unwrap();
        w.write_all(b"at one mebibyte").unwrap();
    }
    let opts = AttachOptions::new().offset(MIB).size_limit(2 * MIB);
    let d = loopdev::attach(&f, &opts).unwrap();
    assert_eq!(d.size().unwrap(), 2 * MIB);
    let st = d.status().unwrap();
    assert_eq!((st.offset, st.size_limit), (MIB, 2 * MIB));
    let mut buf = [0u8; 15];
    File::open(d.path()).unwrap().read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"at one mebibyte");
    d.detach().unwrap();
}

#[test]
fn writes_reach_the_backing_file() {
    if !loop_available() {
        return;
    }
    let scratch = Scratch::new("rw");
    let f = scratch.file("f", MIB);
    let d = loopdev::attach(&f, &AttachOptions::new().block_size(4096)).unwrap();
    {
        let mut w = OpenOptions::new().write(true).open(d.path()).unwrap();
        w.seek(SeekFrom::Start(8192)).unwrap();
        w.write_all(&[0xAB; 4096]).unwrap();
        w.sync_all().unwrap();
    }
    d.detach().unwrap();
    let mut buf = vec![0u8; 4096];
    let mut r = File::open(&f).unwrap();
    r.seek(SeekFrom::Start(8192)).unwrap();
    r.read_exact(&mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0xAB));
}

#[test]
fn read_only_refuses_writes() {
    if !loop_available() {
        return;
    }
    let scratch = Scratch::new("ro");
    let f = scratch.file("f", MIB);
    fs::write(&f, [0x5A; 4096]).unwrap();
    create_sparse_file(&f, MIB).unwrap();
    let d = loopdev::attach(&f, &AttachOptions::new().read_only(true)).unwrap();
    assert!(d.read_only());
    assert!(d.status().unwrap().read_only());
    assert!(d.is_read_only().unwrap());
    // Reads work.
    let mut buf = [0u8; 4096];
    File::open(d.path()).unwrap().read_exact(&mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0x5A));
    // Writes do not: either the open or the write is refused.
    let refused = match OpenOptions::new().write(true).open(d.path()) {
        Err(_) => true,
        Ok(mut w) => w.write_all(&[0; 4096]).and_then(|_| w.sync_all()).is_err(),
    };
    assert!(refused, "a read-only loop device accepted a write");
    let mut back = [0u8; 4096];
    File::open(&f).unwrap().read_exact(&mut back).unwrap();
    assert!(back.iter().all(|&b| b == 0x5A));
    d.detach().unwrap();
}

#[test]
fn direct_io_is_used_or_falls_back_cleanly() {
    if !loop_available() {
        return;
    }
    let scratch = Scratch::new("dio");
    let f = scratch.file("f", 4 * MIB);
    let d = loopdev::attach(&f, &AttachOptions::new().direct_io(true)).unwrap();
    assert_eq!(d.direct_io(), d.status().unwrap().direct_io());
    eprintln!("direct I/O on {}: {}", f.display(), d.direct_io());
    d.detach().unwrap();

    // An offset that is not sector-aligned rules direct I/O out everywhere.
    let d = loopdev::attach(&f, &AttachOptions::new().direct_io(true).offset(100)).unwrap();
    assert!(!d.direct_io(), "direct I/O at a misaligned offset");
    assert!(!d.status().unwrap().direct_io());
    let mut buf = [0u8; 512];
    File::open(d.path()).unwrap().read_exact(&mut buf).unwrap();
    d.detach().unwrap();
}

#[test]
fn options_through_set_fd_and_set_status() {
    if !loop_available() {
        return;
    }
    let scratch = Scratch::new("legacy");
    let f = scratch.file("f", 4 * MIB);
    let ctl = LoopControl::open().unwrap().without_configure();
    let opts = AttachOptions::new()
        .autoclear(true)
        .offset(MIB)
        .size_limit(2 * MIB)
        .block_size(4096);
    let d = ctl.attach(&f, &opts).unwrap();
    let st = d.status().unwrap();
    assert!(st.autoclear() && !st.read_only());
    assert_eq!((st.offset, st.size_limit), (MIB, 2 * MIB));
    assert_eq!(d.size().unwrap(), 2 * MIB);
    assert_eq!(
        fs::read_to_string(format!(
            "/sys/block/loop{}/queue/logical_block_size",
            d.number()
        ))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "4096".into()),
        "4096"
    );
    drop(d); // autoclear
    assert_eq!(wait_bound_count(&f, 0), vec![]);

    let d = ctl
        .attach(&f, &AttachOptions::new().read_only(true))
        .unwrap();
    assert!(d.read_only() && d.is_read_only().unwrap());
    d.detach().unwrap();

    let d = ctl
        .attach(&f, &AttachOptions::new().direct_io(true).offset(100))
        .unwrap();
    assert!(!d.direct_io());
    d.detach().unwrap();
}

#[test]
fn missing_device_node_is_created() {
    if !loop_available() {
        return;
    }
    let scratch = Scratch::new("mknod");
    let f = scratch.file("f", MIB);
    let nodes = scratch.dir.join("dev");
    fs::create_dir(&nodes).unwrap();
    let ctl = LoopControl::open().unwrap().with_dev_dir(&nodes);
    let d = ctl.attach(&f, &AttachOptions::new()).unwrap();
    assert!(d.path().starts_with(&nodes));
    let meta = fs::metadata(d.path()).unwrap();
    assert!(meta.file_type().is_block_device());
    let sys_dev = fs::read_to_string(format!("/sys/block/loop{}/dev", d.number()));
    if let Ok(s) = sys_dev {
        let rdev = meta.rdev();
        let (maj, min) = ((rdev >> 8) & 0xfff, (rdev & 0xff) | ((rdev >> 12) & !0xff));
        assert_eq!(s.trim(), format!("{maj}:{min}"));
    }
    assert_eq!(d.size().unwrap(), MIB);
    // The node in /dev and ours are the same device.
    assert_eq!(
        loopdev::find_by_file(&f).unwrap().unwrap().number(),
        d.number()
    );
    d.detach().unwrap();
}

#[test]
fn bad_inputs_get_typed_errors() {
    if !loop_available() {
        return;
    }
    let scratch = Scratch::new("errors");
    let opts = AttachOptions::new();

    let missing = scratch.dir.join("missing");
    let e = loopdev::attach(&missing, &opts).unwrap_err();
    assert!(matches!(e, LoopError::FileNotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("missing"), "{e}");
    let e = loopdev::find_by_file(&missing).unwrap_err();
    assert!(matches!(e, LoopError::FileNotFound { .. }), "{e:?}");

    let e = loopdev::attach(&scratch.dir, &opts).unwrap_err();
    assert!(matches!(e, LoopError::IsDirectory { .. }), "{e:?}");
    assert!(e.to_string().contains(scratch.dir.to_str().unwrap()), "{e}");
    let e = create_sparse_file(&scratch.dir, MIB).unwrap_err();
    assert!(matches!(e, LoopError::IsDirectory { .. }), "{e:?}");

    let e = loopdev::attach("/dev/null", &opts).unwrap_err();
    assert!(matches!(e, LoopError::NotAFile { .. }), "{e:?}");

    let f = scratch.file("f", MIB);
    let e = loopdev::attach(&f, &AttachOptions::new().block_size(1000)).unwrap_err();
    assert!(matches!(e, LoopError::InvalidOption { .. }), "{e:?}");
    assert!(e.to_string().contains("block size 1000"), "{e}");

    let e = LoopDevice::open("/dev/null").unwrap_err();
    assert!(matches!(e, LoopError::NotALoopDevice { .. }), "{e:?}");
    let e = LoopDevice::open(scratch.dir.join("loop999999")).unwrap_err();
    assert!(matches!(e, LoopError::DeviceNotFound { .. }), "{e:?}");
}

#[test]
fn file_we_may_only_read_needs_read_only() {
    if !loop_available() {
        return;
    }
    let scratch = Scratch::new("immutable");
    let f = scratch.file("f", MIB);
    if !sys::set_immutable(&f, true) {
        eprintln!(
            "skipped: the filesystem of {} has no immutable flag",
            f.display()
        );
        return;
    }
    let e = loopdev::attach(&f, &AttachOptions::new()).unwrap_err();
    assert!(matches!(e, LoopError::ReadOnlyFile { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("only a read-only attach is possible"), "{msg}");
    assert!(msg.contains(f.to_str().unwrap()), "{msg}");
    let d = loopdev::attach(&f, &AttachOptions::new().read_only(true)).unwrap();
    assert!(d.read_only());
    d.detach().unwrap();
    clear_immutable(&f);
}

#[test]
fn unbound_and_busy_devices() {
    if !loop_available() {
        return;
    }
    let scratch = Scratch::new("busy");
    let f = scratch.file("f", MIB);
    let ctl = LoopControl::open().unwrap();

    // An unbound device we hold exclusively, so nobody binds it meanwhile.
    let (n, claim) = claim_unbound_device(&ctl);
    let path = ctl.device_path(n);
    let e = loopdev::detach(&path).unwrap_err();
    assert!(matches!(e, LoopError::NotBound { .. }), "{e:?}");
    assert!(e.to_string().contains(path.to_str().unwrap()), "{e}");
    let e = ctl.attach_at(n, &f, &AttachOptions::new()).unwrap_err();
    assert!(matches!(e, LoopError::DeviceBusy { .. }), "{e:?}");
    // attach() steps past the device that refuses binding.
    let d = ctl.attach(&f, &AttachOptions::new()).unwrap();
    assert_ne!(d.number(), n);
    drop(claim);

    // Held open by another user: detach reports it busy, and the kernel
    // finishes the detach when that user closes.
    let other = LoopDevice::open(d.path()).unwrap();
    let e = d.detach_within(Duration::from_millis(50)).unwrap_err();
    assert!(matches!(e, LoopError::DeviceBusy { .. }), "{e:?}");
    assert_eq!(wait_bound_count(&f, 1).len(), 1);
    drop(other);
    assert_eq!(wait_bound_count(&f, 0), vec![]);
}

/// util-linux `losetup` with `--show` (busybox's has none), if there is one.
fn losetup() -> Option<PathBuf> {
    ["/usr/sbin/losetup", "/sbin/losetup", "/usr/bin/losetup"]
        .iter()
        .map(PathBuf::from)
        .find(|p| {
            std::process::Command::new(p)
                .arg("--version")
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("util-linux"))
        })
}

fn run_ok(cmd: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        cmd.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn agrees_with_losetup() {
    if !loop_available() {
        return;
    }
    let Some(losetup) = losetup() else {
        eprintln!("skipped: no util-linux losetup");
        return;
    };
    let scratch = Scratch::new("losetup");
    let f = scratch.file("f", 4 * MIB);
    let fs_ = f.to_str().unwrap();

    // Attached by dmthin, seen by losetup.
    let d = loopdev::attach(&f, &AttachOptions::new().offset(4096).read_only(true)).unwrap();
    let seen = run_ok(&losetup, &["-n", "-O", "NAME,OFFSET,RO", "-j", fs_]);
    let cols: Vec<&str> = seen.split_whitespace().collect();
    assert_eq!(cols, [d.path().to_str().unwrap(), "4096", "1"], "{seen}");
    d.detach().unwrap();
    assert_eq!(wait_bound_count(&f, 0), vec![]);

    // Attached by losetup, found, listed and detached by dmthin.
    // losetup itself does not retry when the free device it picked is being
    // run down by a concurrent detach (ENXIO), which the other tests in this
    // binary cause on the host; give it a few tries.
    let dev = (0..20)
        .find_map(|_| {
            let out = std::process::Command::new(&losetup)
                .args(["-f", "--show", fs_])
                .output()
                .unwrap();
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
        .expect("losetup -f --show kept failing");
    let found = loopdev::find_by_file(&f)
        .unwrap()
        .expect("losetup's device");
    assert_eq!(found.path(), Path::new(&dev));
    let listed = loopdev::list().unwrap();
    let entry = listed.iter().find(|s| s.device == Path::new(&dev)).unwrap();
    assert_eq!(entry.backing_file, fs::canonicalize(&f).unwrap());
    found.detach().unwrap();
    assert_eq!(wait_bound_count(&f, 0), vec![]);
    assert_eq!(run_ok(&losetup, &["-n", "-j", fs_]).trim(), "");
}

/// The dmthin binary: cargo's for the main crate's tests, the guest's in the VM.
fn cli_bin() -> Option<PathBuf> {
    option_env!("CARGO_BIN_EXE_dmthin")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("DMTHIN_BIN").map(PathBuf::from))
        .or_else(|| Some(PathBuf::from("/usr/local/bin/dmthin")).filter(|p| p.exists()))
}

#[test]
fn cli_attach_find_list_detach() {
    let Some(bin) = cli_bin() else {
        eprintln!("skipped: no dmthin binary");
        return;
    };
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&bin)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("dmthin "), "{out}");
    for help in [&["loop", "--help"][..], &["loop", "attach", "--help"]] {
        let (code, out, _) = run(help);
        assert_eq!(code, 0);
        assert!(out.contains("Usage"), "{out}");
    }
    let (code, _, err) = run(&["loop", "attach"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(&["loop", "attach", "x", "--bogus"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--bogus"), "{err}");

    if !loop_available() {
        return;
    }
    let scratch = Scratch::new("cli");
    let missing = scratch.dir.join("missing");
    let (code, _, err) = run(&["loop", "attach", missing.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("does not exist"), "{err}");

    let f = scratch.file("f", 2 * MIB);
    let fs_ = f.to_str().unwrap();
    let (code, out, err) = run(&["loop", "attach", fs_, "--size-limit", "1M"]);
    assert_eq!(code, 0, "{err}");
    let dev = out.trim().to_string();
    assert!(dev.starts_with("/dev/loop"), "{out}");
    let d = LoopDevice::open(&dev).unwrap();
    assert_eq!(d.size().unwrap(), MIB);
    drop(d);

    let (code, out, _) = run(&["loop", "find", fs_]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), dev);
    let compact = |s: String| s.split_whitespace().collect::<String>();
    let (code, out, _) = run(&["loop", "find", fs_, "--json"]);
    assert_eq!(code, 0);
    let out = compact(out);
    assert!(out.starts_with('['), "{out}");
    assert!(out.contains(&format!("\"device\":\"{dev}\"")), "{out}");
    let (code, out, _) = run(&["loop", "list", "--json"]);
    assert_eq!(code, 0);
    assert!(
        compact(out.clone()).contains(&format!("\"device\":\"{dev}\"")),
        "{out}"
    );
    let (code, out, _) = run(&["loop", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains(&dev) && out.contains(fs_), "{out}");

    let (code, _, err) = run(&["loop", "detach", &dev]);
    assert_eq!(code, 0, "{err}");
    assert!(wait_bound_count(&f, 0).is_empty());
    let (code, out, _) = run(&["loop", "find", fs_]);
    assert_eq!((code, out.as_str()), (1, ""));
}
