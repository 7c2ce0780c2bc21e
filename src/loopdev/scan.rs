//! What is bound: loop devices found through sysfs (or `/dev` without it).

use std::collections::HashSet;
use std::fs::{self, File};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::device::LoopDevice;
use super::error::{stat_error, sys as sys_err, LoopError, Result};
use super::options::LoopStatus;
use super::sys;

/// Every bound loop device with its backing file, by device number.
pub fn list() -> Result<Vec<LoopStatus>> {
    let sysfs = Path::new("/sys/block").is_dir();
    let mut out = Vec::new();
    for n in loop_numbers() {
        // Skip unbound devices without opening them: sysfs shows `loop/` only
        // while a file is bound.
        if sysfs && !Path::new(&format!("/sys/block/loop{n}/loop")).exists() {
            continue;
        }
        let device = PathBuf::from(format!("/dev/loop{n}"));
        let Ok(file) = File::open(&device) else {
            continue;
        };
        match sys::loop_get_status64(file.as_fd()) {
            Ok(info) => out.push(LoopStatus::from_info(device, &info)),
            Err(Errno::ENXIO) => {}
            Err(e) => return Err(sys_err("LOOP_GET_STATUS64", device, e)),
        }
    }
    Ok(out)
}

/// Every bound loop device whose backing file is `file` (same device and inode,
/// whatever name it was attached under).
pub fn find_all_by_file(file: impl AsRef<Path>) -> Result<Vec<LoopStatus>> {
    let path = file.as_ref();
    let meta = fs::metadata(path).map_err(|e| stat_error(path, &e))?;
    let (dev, ino) = (meta.dev(), meta.ino());
    Ok(list()?
        .into_iter()
        .filter(|s| s.backing_device == dev && s.backing_inode == ino)
        .collect())
}

/// The first bound loop device whose backing file is `file`, opened.
pub fn find_by_file(file: impl AsRef<Path>) -> Result<Option<LoopDevice>> {
    let path = file.as_ref();
    for status in find_all_by_file(path)? {
        let dev = match LoopDevice::open(&status.device) {
            Ok(d) => d,
            Err(LoopError::NotBound { .. } | LoopError::DeviceNotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        // It may have been rebound to another file in between.
        if let Ok(now) = dev.status() {
            if now.backing_device == status.backing_device
                && now.backing_inode == status.backing_inode
            {
                return Ok(Some(dev));
            }
        }
    }
    Ok(None)
}

/// Numbers N of existing loop devices, from `/sys/block` (or `/dev` without sysfs).
pub(super) fn loop_numbers() -> Vec<u32> {
    let parse = |dir: &str| -> Option<Vec<u32>> {
        let rd = fs::read_dir(dir).ok()?;
        Some(
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()?
                        .strip_prefix("loop")?
                        .parse::<u32>()
                        .ok()
                })
                .collect(),
        )
    };
    let mut v = parse("/sys/block")
        .or_else(|| parse("/dev"))
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// An existing device, not in `skip`, that sysfs shows unbound.
pub(super) fn other_unbound(skip: &HashSet<u32>) -> Option<u32> {
    if !Path::new("/sys/block").is_dir() {
        return None;
    }
    loop_numbers()
        .into_iter()
        .find(|n| !skip.contains(n) && !Path::new(&format!("/sys/block/loop{n}/loop")).exists())
}

/// `major:minor` of loopN from sysfs.
pub(super) fn sysfs_dev(number: u32) -> Option<(u64, u64)> {
    let s = fs::read_to_string(format!("/sys/block/loop{number}/dev")).ok()?;
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The backing file path sysfs shows while loopN is bound.
pub(super) fn sysfs_backing_file(number: u32) -> Option<PathBuf> {
    let mut b = fs::read(format!("/sys/block/loop{number}/loop/backing_file")).ok()?;
    if b.last() == Some(&b'\n') {
        b.pop();
    }
    (!b.is_empty())
        .then(|| PathBuf::from(std::ffi::OsString::from(std::ffi::OsStr::from_bytes(&b))))
}
