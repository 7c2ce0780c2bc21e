//! Shared helpers for dmthin's real-kernel test suite.
//!
//! The tests in `ioctl-tests/tests/*.rs` run inside the VM booted by
//! `ioctl-tests/run` (or on a host with device-mapper via `run --host`), one
//! test binary at a time with `--test-threads=1`: device-mapper and loop
//! devices are global kernel state. These helpers wrap the real command-line
//! tools (util-linux `losetup`, `dmsetup`, mkfs, ...) for fixtures and for
//! cross-checking dmthin against independent implementations.
//!
//! Environment set by the runner:
//! - `DMTHIN_TEST_VM=1` inside the VM, `DMTHIN_TEST_HOST=1` with `run --host`;
//! - `DMTHIN_TEST_UDEV=1` when systemd-udevd runs (`run --udev`);
//! - `DMTHIN_SCRATCH=/dev/vda` (and `DMTHIN_SCRATCH_DEVS`) with `run --scratch`.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

pub mod logwrites;
mod sys;
pub use sys::{block_device_geometry, poll_readable, set_thread_nice, Geometry};

/// `/dev/mapper/control`, the device-mapper control node.
pub const DM_CONTROL: &str = "/dev/mapper/control";

/// True inside the test VM.
pub fn in_vm() -> bool {
    env_flag("DMTHIN_TEST_VM")
}

/// True when systemd-udevd runs for this test run (`ioctl-tests/run --udev`).
pub fn udev_expected() -> bool {
    env_flag("DMTHIN_TEST_UDEV")
}

/// The persistent scratch disk (`ioctl-tests/run --scratch IMG`), if any.
pub fn scratch_device() -> Option<PathBuf> {
    std::env::var_os("DMTHIN_SCRATCH")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

/// Panics with a pointer to the runner when device-mapper is not there.
pub fn require_device_mapper() {
    if !Path::new(DM_CONTROL).exists() {
        panic!(
            "{DM_CONTROL} does not exist: these tests need a kernel with device-mapper; \
             run them with `ioctl-tests/run` (boots a VM)"
        );
    }
}

/// (major, minor) of a block or character device node.
pub fn node_major_minor(path: impl AsRef<Path>) -> io::Result<(u32, u32)> {
    let md = fs::metadata(path.as_ref())?;
    let ft = md.file_type();
    if !ft.is_block_device() && !ft.is_char_device() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a device node", path.as_ref().display()),
        ));
    }
    let rdev = md.rdev();
    Ok((
        nix::sys::stat::major(rdev) as u32,
        nix::sys::stat::minor(rdev) as u32,
    ))
}

/// `major:minor` of device node `path`, the way device-mapper tables name a
/// device. Panics naming the path when it is not a device node.
pub fn majmin(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    let (major, minor) =
        node_major_minor(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    format!("{major}:{minor}")
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Where `name` is on PATH, if anywhere.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

/// Writes `script` to `path` and runs it with bash; returns whether it
/// exited 0, and its stdout followed by its stderr.
pub fn bash_script(path: impl AsRef<Path>, script: &str) -> (bool, String) {
    let path = path.as_ref();
    fs::write(path, script).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    let out = output("bash", [path]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs a command and returns its output whatever the exit status.
/// Panics only when the program cannot be started.
pub fn output<I, S>(program: &str, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args);
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", describe(&cmd)))
}

/// Runs a command, panics (with its stdout and stderr) unless it exits 0,
/// and returns its stdout.
pub fn run<I, S>(program: &str, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args);
    checked(&mut cmd)
}

/// Runs a shell command line with `sh -c`; returns whether it exited 0 and
/// its stdout followed by its stderr. Panics only when `sh` cannot be started.
pub fn sh(script: &str) -> (bool, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("run sh");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// [`sh`] that panics (with the output) unless the command exits 0; returns
/// its stdout followed by its stderr.
pub fn sh_ok(script: &str) -> String {
    let (ok, text) = sh(script);
    assert!(ok, "`{script}` failed: {text}");
    text
}

fn checked(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", describe(cmd)));
    if !out.status.success() {
        panic!(
            "`{}` failed ({}):\n--- stdout\n{}--- stderr\n{}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A unique name for a test fixture: `dmthin-test-<pid>-<n>-<tag>`.
pub fn unique_name(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "dmthin-test-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A temporary directory, removed (recursively) on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A new directory with a unique name under the system's temp directory.
    pub fn new(tag: &str) -> TempDir {
        TempDir::create(std::env::temp_dir().join(unique_name(tag)))
    }

    /// A fresh directory at a fixed `path`: whatever a previous run left
    /// there is removed first.
    pub fn at(path: impl Into<PathBuf>) -> TempDir {
        let path = path.into();
        let _ = fs::remove_dir_all(&path);
        TempDir::create(path)
    }

    fn create(path: PathBuf) -> TempDir {
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Creates (or truncates) a sparse file of `size` bytes.
pub fn sparse_file(path: impl AsRef<Path>, size: u64) -> PathBuf {
    let path = path.as_ref();
    let f =
        fs::File::create(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    f.set_len(size)
        .unwrap_or_else(|e| panic!("cannot size {} to {size}: {e}", path.display()));
    path.to_path_buf()
}

/// A loop device attached with the real util-linux `losetup`, always
/// detached on drop (lazily by the kernel while something, a pool say,
/// still holds it); a backing file it made is removed then too. The one
/// loop fixture of the suites: use it for fixtures and cross-checks, not to
/// test dmthin's own loop code.
#[derive(Debug)]
pub struct LoopDevice {
    device: PathBuf,
    backing: PathBuf,
    /// The backing file was made for this device: removed on drop.
    owns_backing: bool,
}

impl LoopDevice {
    /// `losetup -f --show FILE` on the caller's file (left in place on drop).
    pub fn attach(backing: impl AsRef<Path>) -> LoopDevice {
        LoopDevice::attach_file(None, backing.as_ref().to_path_buf(), false)
    }

    /// `losetup --show DEVICE FILE`: the caller's file on the free loop
    /// device `device` (to hold that device number, say).
    pub fn attach_at(device: impl AsRef<Path>, backing: impl AsRef<Path>) -> LoopDevice {
        let device = device.as_ref().as_os_str();
        LoopDevice::attach_file(Some(device), backing.as_ref().to_path_buf(), false)
    }

    /// A new sparse file of `size` bytes with a unique name in the system's
    /// temp directory, attached.
    pub fn new(tag: &str, size: u64) -> LoopDevice {
        let file = std::env::temp_dir().join(format!("{}.img", unique_name(tag)));
        LoopDevice::attach_file(None, sparse_file(file, size), true)
    }

    /// A new sparse file `<dir>/<tag>.img` of `size` bytes, attached (for a
    /// file that must live in `dir`, on a scratch disk say).
    pub fn with_sparse_file(dir: &Path, tag: &str, size: u64) -> LoopDevice {
        let file = sparse_file(dir.join(format!("{tag}.img")), size);
        LoopDevice::attach_file(None, file, true)
    }

    /// `losetup --show` of `backing` on `device`, else on the first free one.
    fn attach_file(device: Option<&OsStr>, backing: PathBuf, owns_backing: bool) -> LoopDevice {
        let on = device.unwrap_or(OsStr::new("-f"));
        let out = run("losetup", [OsStr::new("--show"), on, backing.as_os_str()]);
        let device = PathBuf::from(out.trim());
        assert!(
            device.to_string_lossy().starts_with("/dev/loop"),
            "losetup printed {out:?}, not a loop device"
        );
        LoopDevice {
            device,
            backing,
            owns_backing,
        }
    }

    /// `/dev/loopN`.
    pub fn path(&self) -> &Path {
        &self.device
    }

    /// `/dev/loopN` as text, for command lines.
    pub fn path_str(&self) -> &str {
        self.device.to_str().expect("/dev/loopN is UTF-8")
    }

    /// The file behind it.
    pub fn backing_file(&self) -> &Path {
        &self.backing
    }

    /// `loopN`.
    pub fn kernel_name(&self) -> String {
        self.device
            .file_name()
            .expect("loop device path has a name")
            .to_string_lossy()
            .into_owned()
    }

    /// `major:minor` ([`majmin`]).
    pub fn majmin(&self) -> String {
        majmin(&self.device)
    }

    /// Size in 512-byte sectors, from sysfs.
    pub fn size_sectors(&self) -> u64 {
        sysfs_block_size_sectors(&self.kernel_name())
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let out = output("losetup", [OsStr::new("-d"), self.device.as_os_str()]);
        if !out.status.success() {
            eprintln!(
                "warning: losetup -d {} failed: {}",
                self.device.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if self.owns_backing {
            let _ = fs::remove_file(&self.backing);
        }
    }
}

/// `/sys/block/NAME/size` (512-byte sectors).
pub fn sysfs_block_size_sectors(kernel_name: &str) -> u64 {
    let p = format!("/sys/block/{kernel_name}/size");
    let s = fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {p}: {e}"));
    s.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{p}: bad size {s:?}: {e}"))
}

/// A device created with `dmsetup create`, removed (`dmsetup remove --retry`)
/// on drop. For fixtures and cross-checks with the reference implementation.
#[derive(Debug)]
pub struct DmsetupDevice {
    name: String,
}

impl DmsetupDevice {
    /// `dmsetup create NAME --table TABLE`.
    pub fn create(name: &str, table: &str) -> DmsetupDevice {
        run("dmsetup", ["create", name, "--table", table]);
        DmsetupDevice {
            name: name.to_string(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// (major, minor) as reported by `dmsetup info`.
    pub fn major_minor(&self) -> (u32, u32) {
        let out = run(
            "dmsetup",
            [
                "info",
                "-c",
                "--noheadings",
                "--separator",
                ":",
                "-o",
                "major,minor",
                &self.name,
            ],
        );
        let mut it = out.trim().split(':').map(|n| {
            n.trim()
                .parse::<u32>()
                .unwrap_or_else(|e| panic!("dmsetup info printed {out:?}: {e}"))
        });
        match (it.next(), it.next()) {
            (Some(ma), Some(mi)) => (ma, mi),
            _ => panic!("dmsetup info printed {out:?}"),
        }
    }

    /// `/dev/dm-N` (devtmpfs creates it; `/dev/mapper/NAME` needs udev or libdm).
    pub fn dm_node(&self) -> PathBuf {
        PathBuf::from(format!("/dev/dm-{}", self.major_minor().1))
    }

    /// `dmsetup status NAME`.
    pub fn status(&self) -> String {
        run("dmsetup", ["status", &self.name])
    }

    /// `dmsetup message NAME 0 MSG`.
    pub fn message(&self, msg: &str) -> String {
        run("dmsetup", ["message", &self.name, "0", msg])
    }
}

impl Drop for DmsetupDevice {
    fn drop(&mut self) {
        let out = output("dmsetup", ["remove", "--retry", &self.name]);
        if !out.status.success() {
            eprintln!(
                "warning: dmsetup remove {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// A filesystem mounted with the real `mount`, unmounted on drop.
#[derive(Debug)]
pub struct Mount {
    target: PathBuf,
}

impl Mount {
    /// `mount DEVICE TARGET` (the filesystem type is probed).
    pub fn new(device: impl AsRef<Path>, target: impl AsRef<Path>) -> Mount {
        let target = target.as_ref().to_path_buf();
        fs::create_dir_all(&target)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", target.display()));
        run("mount", [device.as_ref().as_os_str(), target.as_os_str()]);
        Mount { target }
    }

    pub fn path(&self) -> &Path {
        &self.target
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let out = output("umount", [self.target.as_os_str()]);
        if !out.status.success() {
            eprintln!(
                "warning: umount {} failed: {}",
                self.target.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Whether this run has systemd-udevd in the guest (`ioctl-tests/run --udev`).
pub fn udev_mode() -> bool {
    std::env::var_os("DMTHIN_TEST_UDEV").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majmin_of_a_device_node() {
        // /dev/null is 1:3 on every Linux.
        assert_eq!(majmin("/dev/null"), "1:3");
        assert!(node_major_minor("/").is_err(), "a directory is no device");
    }

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique_name("a"), unique_name("a"));
    }
}

/// SplitMix64: a small seeded generator, so a seeded test's workload is the
/// same for the same seed.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}
