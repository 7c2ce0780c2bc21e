//! Device nodes we make ourselves: `/dev/mapper/<name>` (and `/dev/dm-<minor>`
//! where /dev is not devtmpfs) when udev does not, as libdm does.

use super::abi::{Dev, MAPPER_DIR};
use super::encode::DevId;
use super::error::{DmError, Result};
use nix::errno::Errno;
use nix::sys::stat::{self, Mode, SFlag};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// Path of `/dev/mapper/<name>`.
pub(crate) fn mapper_path(name: &str) -> PathBuf {
    Path::new(MAPPER_DIR).join(name)
}

/// Path of `/dev/dm-<minor>`.
pub(crate) fn dm_node_path(dev: Dev) -> PathBuf {
    PathBuf::from(format!("/dev/dm-{}", dev.minor))
}

fn node_error(path: &Path, errno: Errno) -> DmError {
    DmError::Node {
        path: path.display().to_string(),
        errno,
    }
}

/// The device number behind `id` as the nodes tell it, without an ioctl:
/// `/dev/mapper/<name>` or `/dev/disk/by-id/dm-uuid-<uuid>` (udev's links, or
/// our nodes), confirmed by the device's name or uuid in sysfs. `None` when
/// there is no such node yet (or a stale one).
pub(crate) fn known_dev(id: DevId<'_>) -> Option<Dev> {
    use std::os::unix::fs::MetadataExt;
    let (path, attr, value) = match id {
        DevId::Dev(dev) => return Some(dev),
        DevId::Name(n) if !n.contains('/') => (mapper_path(n), "name", n),
        DevId::Uuid(u) if !u.contains('/') => (
            PathBuf::from(format!("/dev/disk/by-id/dm-uuid-{u}")),
            "uuid",
            u,
        ),
        _ => return None,
    };
    let meta = std::fs::metadata(path).ok()?;
    if !meta.file_type().is_block_device() {
        return None;
    }
    let dev = Dev::from_dev_t(meta.rdev());
    let sysfs = format!("/sys/dev/block/{}:{}/dm/{attr}", dev.major, dev.minor);
    let named = std::fs::read_to_string(sysfs).ok()?;
    (named.trim_end_matches('\n') == value).then_some(dev)
}

/// Makes sure `path` is a block node for `dev` (mode 0600), replacing a stale one.
pub(crate) fn ensure_block_node(path: &Path, dev: Dev) -> Result<()> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::MetadataExt;
        if meta.file_type().is_block_device() && Dev::from_dev_t(meta.rdev()) == dev {
            return Ok(());
        }
        if meta.file_type().is_symlink() {
            // udev's link; trust it when it points at the right device.
            if let Ok(target) = std::fs::metadata(path) {
                if target.file_type().is_block_device() && Dev::from_dev_t(target.rdev()) == dev {
                    return Ok(());
                }
            }
        }
        std::fs::remove_file(path)
            .map_err(|e| node_error(path, Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| node_error(parent, Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
    }
    stat::mknod(
        path,
        SFlag::S_IFBLK,
        Mode::from_bits_truncate(0o600),
        dev.to_dev_t(),
    )
    .map_err(|e| node_error(path, e))
}

/// Removes `/dev/mapper/<name>` if it exists; missing is fine.
pub(crate) fn remove_node(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(node_error(
            path,
            Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_helpers_create_and_replace() {
        let dir = std::env::temp_dir().join(format!("dmthin-node-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("n");
        ensure_block_node(&p, Dev::new(7, 200)).unwrap();
        ensure_block_node(&p, Dev::new(7, 201)).unwrap();
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&p).unwrap();
        assert!(meta.file_type().is_block_device());
        assert_eq!(Dev::from_dev_t(meta.rdev()), Dev::new(7, 201));
        remove_node(&p).unwrap();
        remove_node(&p).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
