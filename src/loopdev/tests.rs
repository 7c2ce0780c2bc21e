//! Unit tests of the loop layer that need no loop device (the ones that do
//! are in `tests/loopdev.rs`).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use zerocopy::IntoBytes;

use super::sys::{LoopConfig, LoopInfo64};
use super::*;

#[test]
fn block_size_validation() {
    let p = Path::new("/x");
    assert!(AttachOptions::new().block_size(4096).validate(p).is_ok());
    assert!(AttachOptions::new().block_size(512).validate(p).is_ok());
    for bad in [0, 256, 1000, 131072] {
        assert!(matches!(
            AttachOptions::new().block_size(bad).validate(p),
            Err(LoopError::InvalidOption { .. })
        ));
    }
}

#[test]
fn flags_from_options() {
    let o = AttachOptions::new().read_only(true).autoclear(true);
    assert_eq!(o.flags(), LoopFlags::READ_ONLY | LoopFlags::AUTOCLEAR);
    assert_eq!(
        AttachOptions::new().direct_io(true).flags(),
        LoopFlags::DIRECT_IO
    );
}

#[test]
fn status_serializes_flags_as_booleans() {
    let s = LoopStatus {
        number: 3,
        device: "/dev/loop3".into(),
        backing_file: "/tmp/f".into(),
        file_name: "/tmp/f".into(),
        backing_device: 1,
        backing_inode: 2,
        offset: 0,
        size_limit: 0,
        flags: LoopFlags::AUTOCLEAR,
    };
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["device"], "/dev/loop3");
    assert_eq!(v["autoclear"], true);
    assert_eq!(v["read_only"], false);
}

#[test]
fn sparse_file_grows_never_shrinks() {
    let dir = std::env::temp_dir().join(format!("dmthin-sparse-{}", std::process::id()));
    let f = dir.join("sub/file");
    assert_eq!(create_sparse_file(&f, 1 << 20).unwrap(), 1 << 20);
    assert_eq!(create_sparse_file(&f, 4096).unwrap(), 1 << 20);
    assert_eq!(create_sparse_file(&f, 2 << 20).unwrap(), 2 << 20);
    let meta = fs::metadata(&f).unwrap();
    assert_eq!(meta.len(), 2 << 20);
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(fs::metadata(dir.join("sub")).unwrap().mode() & 0o777, 0o700);
    assert!(
        meta.blocks() < 64,
        "file is not sparse: {} blocks",
        meta.blocks()
    );
    assert!(matches!(
        create_sparse_file(dir.join("sub"), 1),
        Err(LoopError::IsDirectory { .. })
    ));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn file_name_is_truncated_and_nul_terminated() {
    let mut info = LoopInfo64::default();
    info.set_file_name(&[b'a'; 100]);
    assert_eq!(info.file_name().len(), 63);
    assert_eq!(info.lo_file_name[63], 0);
    info.set_file_name(b"/tmp/x");
    assert_eq!(info.file_name(), b"/tmp/x");
}

#[test]
fn config_bytes_layout() {
    let cfg = LoopConfig {
        fd: 3,
        block_size: 4096,
        info: LoopInfo64 {
            lo_offset: 0x1122_3344_5566_7788,
            lo_flags: 5,
            ..LoopInfo64::default()
        },
        ..LoopConfig::default()
    };
    let b = cfg.as_bytes();
    assert_eq!(b.len(), 304);
    assert_eq!(&b[0..4], &3u32.to_ne_bytes());
    assert_eq!(&b[4..8], &4096u32.to_ne_bytes());
    assert_eq!(&b[8 + 24..8 + 32], &0x1122_3344_5566_7788u64.to_ne_bytes());
    assert_eq!(&b[8 + 52..8 + 56], &5u32.to_ne_bytes());
    assert!(b[240..].iter().all(|&x| x == 0));
}
