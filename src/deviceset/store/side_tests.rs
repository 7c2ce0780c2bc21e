//! Side files: rewritten in place of their spare, whole after a crash at
//! any step, and rewritable on a full filesystem.

use super::*;
use crate::testutil::Scratch;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::MetadataExt;

const NAME: &str = "log.json";

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Log {
    n: u32,
    text: String,
}

fn log(n: u32) -> Log {
    Log {
        n,
        text: format!("version {n}"),
    }
}

fn read(store: &MetadataStore) -> Log {
    store.read_side_file(NAME).unwrap().unwrap()
}

fn ino(path: &Path) -> u64 {
    fs::symlink_metadata(path).unwrap().ino()
}

/// Names in the metadata directory, sorted.
fn names(store: &MetadataStore) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(&store.meta_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn a_rewrite_swaps_with_the_spare_and_makes_no_new_file() {
    let s = Scratch::new("side-swap");
    let store = MetadataStore::open(s.path(), 64).unwrap();
    assert!(!store.side_file_ready(NAME));
    store.write_side_file(NAME, &log(1)).unwrap();
    assert!(store.side_file_ready(NAME));
    assert_eq!(read(&store), log(1));
    let (file, spare) = (store.side_path(NAME), store.spare_path(NAME));
    assert_eq!(fs::metadata(&file).unwrap().len(), SIDE_FILE_BYTES as u64);
    let (a, b) = (ino(&file), ino(&spare));
    store.write_side_file(NAME, &log(2)).unwrap();
    assert_eq!(read(&store), log(2));
    assert_eq!((ino(&file), ino(&spare)), (b, a), "the names swapped");
    store.write_side_file(NAME, &log(3)).unwrap();
    assert_eq!(read(&store), log(3));
    assert_eq!((ino(&file), ino(&spare)), (a, b));
    // Nothing else made: no temp file left, no third file.
    assert_eq!(names(&store), ["devices", "log.json", "log.json.spare"]);
}

#[test]
fn a_crash_between_the_halves_leaves_the_old_version_whole() {
    let s = Scratch::new("side-crash");
    let store = MetadataStore::open(s.path(), 64).unwrap();
    store.write_side_file(NAME, &log(1)).unwrap();
    store.write_side_file(NAME, &log(2)).unwrap();
    // Crash after the spare was filled, before the swap.
    let json = to_json(&log(3), Path::new(NAME)).unwrap();
    store.fill_spare(NAME, &padded(&json)).unwrap();
    assert_eq!(read(&store), log(2));
    // Crash in the middle of filling it: a torn spare is never read.
    let mut torn = padded(&json);
    torn.truncate(10);
    store.fill_spare(NAME, &torn).unwrap();
    assert_eq!(read(&store), log(2));
    // The next write goes through whole.
    store.write_side_file(NAME, &log(4)).unwrap();
    assert_eq!(read(&store), log(4));
    assert!(store.side_file_ready(NAME));
}

#[test]
fn an_unpadded_file_from_before_is_read_then_rewritten_padded() {
    let s = Scratch::new("side-old");
    let store = MetadataStore::open(s.path(), 64).unwrap();
    let file = store.side_path(NAME);
    fs::write(&file, serde_json::to_vec(&log(1)).unwrap()).unwrap();
    assert_eq!(read(&store), log(1));
    assert!(!store.side_file_ready(NAME));
    store.write_side_file(NAME, &log(2)).unwrap();
    assert_eq!(read(&store), log(2));
    assert!(store.side_file_ready(NAME));
}

#[test]
fn a_value_too_big_for_its_slot_is_written_the_ordinary_way() {
    let s = Scratch::new("side-big");
    let store = MetadataStore::open(s.path(), 64).unwrap();
    store.write_side_file(NAME, &log(1)).unwrap();
    let big = Log {
        n: 2,
        text: "x".repeat(SIDE_FILE_BYTES),
    };
    store.write_side_file(NAME, &big).unwrap();
    assert_eq!(read(&store), big);
    assert!(!store.side_file_ready(NAME));
    // Back to a small one: padded again, and the swaps resume.
    store.write_side_file(NAME, &log(3)).unwrap();
    assert_eq!(read(&store), log(3));
    assert!(store.side_file_ready(NAME));
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted when dropped
/// (then the directory is removed with its scratch directory).
struct Tmpfs {
    mnt: PathBuf,
    _scratch: Scratch,
}

impl Tmpfs {
    /// `None` (and says so) where this process may not mount.
    fn mount(size: &str) -> Option<Tmpfs> {
        use nix::mount::{mount, MsFlags};
        let s = Scratch::new("side-tmpfs");
        let dir = s.path().join("mnt");
        fs::create_dir(&dir).unwrap();
        let data = format!("size={size},mode=0700");
        match mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            MsFlags::empty(),
            Some(data.as_str()),
        ) {
            Ok(()) => Some(Tmpfs {
                mnt: dir,
                _scratch: s,
            }),
            Err(e) => {
                eprintln!("skipped: cannot mount a tmpfs ({e}; needs root)");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Writes to `dir/fill` until the filesystem is full; returns the bytes written.
fn fill(dir: &Path) -> u64 {
    let mut f = fs::File::create(dir.join("fill")).unwrap();
    let chunk = [0xA5u8; 4096];
    let mut written = 0;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
    let _ = f.sync_all();
    written
}

#[test]
fn a_full_filesystem_still_takes_a_rewrite() {
    let Some(fs) = Tmpfs::mount("512k") else {
        return;
    };
    let store = MetadataStore::open(&fs.mnt, 64).unwrap();
    store.write_side_file(NAME, &log(1)).unwrap();
    let filled = fill(&fs.mnt);
    assert!(filled > 0);
    // Full: the ordinary write (a new temp file) fails ...
    let e = store.write_side_file("other.json", &log(9)).unwrap_err();
    assert!(
        matches!(&e, StoreError::Io { source, .. } if source.raw_os_error() == Some(nix::libc::ENOSPC)),
        "{e}"
    );
    // ... and leaves no temp file behind to read.
    assert!(!names(&store).iter().any(|n| n.starts_with(".tmp~")));
    // A rewrite of the prepared side file needs no new block.
    for n in 2..6 {
        store.write_side_file(NAME, &log(n)).unwrap();
        assert_eq!(read(&store), log(n));
    }
}
