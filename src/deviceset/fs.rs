//! Filesystem work for the device set: mkfs, superblock uuids, growing, mounts.

use super::store::FsKind;
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use super::mount_flags::MountOptions;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A failure in filesystem work.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// An external tool (mkfs, resize2fs, xfs_growfs) failed or was missing.
    #[error("{tool} on {target} failed: {detail}")]
    Tool {
        /// The program.
        tool: String,
        /// What it ran on.
        target: String,
        /// Its exit status and output, or why it could not start.
        detail: String,
    },
    /// mount(2) or umount(2) failed.
    #[error("{op} {device} on {path}: {errno} ({desc})", desc = errno.desc())]
    Mount {
        /// "mount" or "umount".
        op: &'static str,
        /// The device.
        device: String,
        /// The mount point.
        path: String,
        /// Why.
        errno: Errno,
    },
    /// The device holds no filesystem we recognise.
    #[error("{device}: no {kind} superblock found")]
    NoSuperblock {
        /// The device read.
        device: String,
        /// The filesystem expected.
        kind: &'static str,
    },
    /// Reading the device failed.
    #[error("reading {device}: {source}")]
    Io {
        /// The device read.
        device: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Runs a tool, turning a failure into an [`FsError::Tool`] with its output.
pub fn run_tool(tool: &str, args: &[&str], target: &str) -> Result<(), FsError> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .map_err(|e| FsError::Tool {
            tool: tool.to_string(),
            target: target.to_string(),
            detail: format!("cannot run it: {e}"),
        })?;
    if out.status.success() {
        return Ok(());
    }
    let mut detail = format!("{}: ", out.status);
    detail.push_str(String::from_utf8_lossy(&out.stderr).trim());
    if detail.len() < 8 {
        detail.push_str(String::from_utf8_lossy(&out.stdout).trim());
    }
    Err(FsError::Tool {
        tool: tool.to_string(),
        target: target.to_string(),
        detail,
    })
}

/// Makes a filesystem on `device`. Discards are skipped: a thin device is all zeroes already.
pub fn mkfs(kind: FsKind, device: &Path, extra: &[String]) -> Result<(), FsError> {
    let dev = device.to_string_lossy().into_owned();
    let mut args: Vec<&str> = match kind {
        FsKind::Ext4 => vec![
            "-q",
            "-F",
            "-E",
            "nodiscard,lazy_itable_init=0,lazy_journal_init=0",
        ],
        FsKind::Xfs => vec!["-q", "-f", "-K"],
    };
    args.extend(extra.iter().map(String::as_str));
    args.push(&dev);
    run_tool(kind.mkfs_tool(), &args, &dev)
}

impl FsKind {
    /// The mkfs program for this filesystem.
    pub fn mkfs_tool(self) -> &'static str {
        match self {
            FsKind::Ext4 => "mkfs.ext4",
            FsKind::Xfs => "mkfs.xfs",
        }
    }
}

fn format_uuid(b: &[u8; 16]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// What the device set reads from a filesystem's superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// The filesystem uuid.
    pub uuid: String,
    /// The bytes the filesystem spans.
    pub size: u64,
}

/// Reads the superblock straight from `device`: ext4 at 1024 (magic 0xEF53
/// at +56, uuid at +104, block count and size at +4 and +24), xfs at 0
/// ("XFSB", block size at 4, block count at 8, uuid at 32).
pub fn read_superblock(kind: FsKind, device: &Path) -> Result<Superblock, FsError> {
    let dev = device.display().to_string();
    let io = |source| FsError::Io {
        device: dev.clone(),
        source,
    };
    let mut f = std::fs::File::open(device).map_err(io)?;
    let mut sb = [0u8; 2048];
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    f.read_exact(&mut sb).map_err(io)?;
    let le32 = |at: usize| {
        u64::from(u32::from_le_bytes([
            sb[at],
            sb[at + 1],
            sb[at + 2],
            sb[at + 3],
        ]))
    };
    let mut uuid = [0u8; 16];
    let size = match kind {
        FsKind::Ext4 => {
            if sb[1024 + 56..1024 + 58] != [0x53, 0xEF] {
                return Err(FsError::NoSuperblock {
                    device: dev,
                    kind: "ext4",
                });
            }
            uuid.copy_from_slice(&sb[1024 + 104..1024 + 120]);
            let log = le32(1024 + 24).min(16);
            let mut blocks = le32(1024 + 4);
            // INCOMPAT_64BIT: the high half of the block count is valid.
            if le32(1024 + 0x60) & 0x80 != 0 {
                blocks |= le32(1024 + 0x150) << 32;
            }
            blocks.saturating_mul(1024 << log)
        }
        FsKind::Xfs => {
            if &sb[0..4] != b"XFSB" {
                return Err(FsError::NoSuperblock {
                    device: dev,
                    kind: "xfs",
                });
            }
            uuid.copy_from_slice(&sb[32..48]);
            let bs = u64::from(u32::from_be_bytes([sb[4], sb[5], sb[6], sb[7]]));
            let mut d = [0u8; 8];
            d.copy_from_slice(&sb[8..16]);
            u64::from_be_bytes(d).saturating_mul(bs)
        }
    };
    Ok(Superblock {
        uuid: format_uuid(&uuid),
        size,
    })
}

/// How a device set mount is made: the user's options split into mount(2)
/// flags and filesystem data (see [`MountOptions`]), plus `nouuid` for xfs
/// (snapshots share their parent's uuid) and `discard` when asked.
pub fn mount_options(kind: FsKind, options: &[String], discard: bool) -> MountOptions {
    let mut parsed = MountOptions::parse(options);
    if kind == FsKind::Xfs && !parsed.has_data("nouuid") {
        parsed.data.push("nouuid".into());
    }
    if discard && !parsed.has_data("discard") {
        parsed.data.push("discard".into());
    }
    parsed
}

/// Mounts `device` on `path`. When `discard` is refused, mounts without it.
/// Returns whether discard ended up on.
pub fn mount(
    kind: FsKind,
    device: &Path,
    path: &Path,
    read_only: bool,
    options: &[String],
    discard: bool,
) -> Result<bool, FsError> {
    let try_mount = |discard: bool| {
        let opts = mount_options(kind, options, discard);
        let mut flags = opts.flags;
        if read_only {
            flags |= MsFlags::MS_RDONLY;
        }
        let data = opts.data.join(",");
        nix::mount::mount(
            Some(device),
            path,
            Some(kind.as_str()),
            flags,
            Some(data.as_str()),
        )
    };
    match try_mount(discard) {
        Ok(()) => Ok(discard),
        Err(Errno::EINVAL | Errno::EOPNOTSUPP) if discard => {
            log::info!("{}: discard refused, mounting without it", device.display());
            try_mount(false).map(|()| false)
        }
        Err(e) => Err(e),
    }
    .map_err(|errno| FsError::Mount {
        op: "mount",
        device: device.display().to_string(),
        path: path.display().to_string(),
        errno,
    })
}

/// Unmounts `path`; if it stays busy, detaches it lazily so the device frees
/// once the last user leaves.
pub fn unmount(path: &Path) -> Result<(), FsError> {
    let err = |errno| FsError::Mount {
        op: "umount",
        device: String::from("-"),
        path: path.display().to_string(),
        errno,
    };
    for _ in 0..10 {
        match nix::mount::umount2(path, MntFlags::empty()) {
            Ok(()) => return Ok(()),
            Err(Errno::EBUSY) => std::thread::sleep(std::time::Duration::from_millis(50)),
            Err(Errno::EINVAL) => return Ok(()), // not mounted
            Err(e) => return Err(err(e)),
        }
    }
    nix::mount::umount2(path, MntFlags::MNT_DETACH).map_err(err)
}

/// Grows the filesystem on `device` to the device's size. ext4 grows offline
/// after a forced check; xfs must be mounted, so it is mounted on `scratch`.
pub fn grow(
    kind: FsKind,
    device: &Path,
    scratch: &Path,
    mount_options: &[String],
) -> Result<(), FsError> {
    grow_with(kind, device, scratch, mount_options, || Ok(()))
}

/// [`grow`] with `mid` run in the middle: for ext4 between the check and
/// resize2fs, for xfs between the scratch mount and xfs_growfs (the xfs
/// mount is undone whatever `mid` returns). Its error stops the growth.
pub fn grow_with<E: From<FsError>>(
    kind: FsKind,
    device: &Path,
    scratch: &Path,
    mount_options: &[String],
    mid: impl FnOnce() -> Result<(), E>,
) -> Result<(), E> {
    let dev = device.display().to_string();
    match kind {
        FsKind::Ext4 => {
            // e2fsck exits 1 when it fixed something; resize2fs insists on a fresh check.
            let _ = Command::new("e2fsck").args(["-f", "-y", &dev]).output();
            mid()?;
            Ok(run_tool("resize2fs", &[&dev], &dev)?)
        }
        FsKind::Xfs => {
            std::fs::create_dir_all(scratch).map_err(|source| FsError::Io {
                device: scratch.display().to_string(),
                source,
            })?;
            mount(kind, device, scratch, false, mount_options, false)?;
            let result = mid()
                .and_then(|()| Ok(run_tool("xfs_growfs", &[&scratch.to_string_lossy()], &dev)?));
            let unmounted = unmount(scratch);
            result?;
            Ok(unmounted?)
        }
    }
}

/// Whether `path` is a mount point of this mount namespace.
pub fn is_mounted(path: &Path) -> bool {
    mounts().iter().any(|m| m.path == path)
}

/// Discards all `size` bytes of the block device `device` with
/// `BLKDISCARD`, `chunk` bytes a call, `each` told the bytes done after
/// each call. Opened exclusively: a device someone holds is refused (EBUSY).
pub fn discard(
    device: &Path,
    size: u64,
    chunk: u64,
    mut each: impl FnMut(u64),
) -> Result<(), FsError> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| FsError::Io {
        device: device.display().to_string(),
        source,
    };
    let f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_EXCL)
        .open(device)
        .map_err(io)?;
    let chunk = chunk.max(1 << 20);
    let mut done = 0;
    while done < size {
        let len = chunk.min(size - done);
        super::sys::blkdiscard(f.as_fd(), done, len).map_err(|e| io(std::io::Error::from(e)))?;
        done += len;
        each(done);
    }
    Ok(())
}

/// Runs fstrim (`FITRIM`) on the filesystem mounted at `path`; returns the
/// bytes the filesystem says it discarded.
pub fn trim(path: &Path) -> Result<u64, FsError> {
    use std::os::fd::AsFd;
    let io = |source| FsError::Io {
        device: path.display().to_string(),
        source,
    };
    let dir = std::fs::File::open(path).map_err(io)?;
    super::sys::fitrim(dir.as_fd()).map_err(|e| io(std::io::Error::from(e)))
}

/// One line of `/proc/self/mountinfo` that matters to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Device number of the mounted block device.
    pub dev: (u32, u32),
    /// Mount point.
    pub path: PathBuf,
}

fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let _id = f.next()?;
            let _parent = f.next()?;
            let (maj, min) = f.next()?.split_once(':')?;
            let _root = f.next()?;
            let mp = f.next()?;
            Some(MountEntry {
                dev: (maj.parse().ok()?, min.parse().ok()?),
                path: PathBuf::from(unescape_octal(mp)),
            })
        })
        .collect()
}

/// The current mounts of this process's mount namespace.
pub fn mounts() -> Vec<MountEntry> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_parsing() {
        let text = "36 35 253:3 / /var/lib/x\\040y rw,relatime shared:1 - ext4 /dev/dm-3 rw\n\
                    garbage line\n\
                    37 35 0:22 / /proc rw - proc proc rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].dev, (253, 3));
        assert_eq!(m[0].path, PathBuf::from("/var/lib/x y"));
    }

    #[test]
    fn mount_options_add_nouuid_for_xfs_only_and_split_flags() {
        let xfs = mount_options(FsKind::Xfs, &[], false);
        assert_eq!(
            (xfs.flags, xfs.data.join(",")),
            (MsFlags::empty(), "nouuid".into())
        );
        let ext4 = mount_options(
            FsKind::Ext4,
            &["noatime,nosuid,nodev".into(), "data=ordered".into()],
            true,
        );
        assert_eq!(
            ext4.flags,
            MsFlags::MS_NOATIME | MsFlags::MS_NOSUID | MsFlags::MS_NODEV
        );
        assert_eq!(ext4.data.join(","), "data=ordered,discard");
    }

    fn superblock_of(name: &str, image: &[u8], kind: FsKind) -> Result<Superblock, FsError> {
        let dir = std::env::temp_dir().join(format!("dmthin-fs-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("sb");
        std::fs::write(&img, image).unwrap();
        let sb = read_superblock(kind, &img);
        std::fs::remove_dir_all(&dir).unwrap();
        sb
    }

    #[test]
    fn uuid_from_ext4_superblock() {
        let mut sb = vec![0u8; 4096];
        sb[1024 + 56] = 0x53;
        sb[1024 + 57] = 0xEF;
        for i in 0..16 {
            sb[1024 + 104 + i] = i as u8;
        }
        // 1000 blocks of 1024 << 2 bytes.
        sb[1024 + 4..1024 + 8].copy_from_slice(&1000u32.to_le_bytes());
        sb[1024 + 24] = 2;
        assert_eq!(
            superblock_of("ext4", &sb, FsKind::Ext4).unwrap(),
            Superblock {
                uuid: "00010203-0405-0607-0809-0a0b0c0d0e0f".into(),
                size: 1000 * 4096,
            }
        );
        assert!(matches!(
            superblock_of("ext4-as-xfs", &sb, FsKind::Xfs),
            Err(FsError::NoSuperblock { .. })
        ));
    }

    #[test]
    fn size_from_xfs_superblock() {
        let mut sb = vec![0u8; 4096];
        sb[0..4].copy_from_slice(b"XFSB");
        sb[4..8].copy_from_slice(&4096u32.to_be_bytes());
        sb[8..16].copy_from_slice(&((1u64 << 33) + 5).to_be_bytes());
        sb[32] = 0xab;
        let got = superblock_of("xfs", &sb, FsKind::Xfs).unwrap();
        assert_eq!(got.size, ((1u64 << 33) + 5) * 4096);
        assert_eq!(got.uuid, "ab000000-0000-0000-0000-000000000000");
        assert!(matches!(
            superblock_of("xfs-as-ext4", &sb, FsKind::Ext4),
            Err(FsError::NoSuperblock { .. })
        ));
    }
}
