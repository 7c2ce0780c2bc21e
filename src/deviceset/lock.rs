//! One owner per set root: an exclusive `flock` on `<root>/lock`.
//!
//! The kernel drops a `flock` when the holder's last descriptor closes, so a
//! lock file left behind by a dead process never blocks a new owner. The file
//! holds the owner's pid and program name (`<pid>\n<program>\n`), for the
//! error a second opener gets; it is never removed (removing it would let two
//! processes lock two different inodes). Readers that only look
//! ([`DeviceSet::open_read_only`](super::DeviceSet::open_read_only)) take no
//! lock; [`SetLock::holder`] names the owner for them.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// Name of the lock file inside a set root.
pub const LOCK_FILE: &str = "lock";

/// Why the set's lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process, or another open in this process, holds the lock.
    #[error("device set is in use: {path} is locked by {}", holder(*.pid, .program.as_deref()))]
    Held {
        /// The lock file.
        path: PathBuf,
        /// The holder's pid, when the lock file names a live process.
        pid: Option<u32>,
        /// The holder's program name (`dmthin`, `dmthin-snapshotter`), when known.
        program: Option<String>,
    },
    /// A file system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

fn holder(pid: Option<u32>, program: Option<&str>) -> String {
    match (pid, program) {
        (Some(pid), Some(program)) => format!("{program} (pid {pid})"),
        (Some(pid), None) => format!("process {pid}"),
        (None, _) => "another process (pid unknown)".to_owned(),
    }
}

/// Who holds a set's lock, as its lock file and `/proc` tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    /// The holder's pid.
    pub pid: u32,
    /// Its program name, when known.
    pub program: Option<String>,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&holder(Some(self.pid), self.program.as_deref()))
    }
}

/// The exclusive lock on a set root, released when dropped (or when the
/// process dies).
#[derive(Debug)]
pub struct SetLock {
    file: Flock<File>,
}

impl SetLock {
    /// Takes the lock on `root`, creating `root` (mode 0700) and the lock file
    /// (mode 0600) if needed. Never waits: a held lock is
    /// [`LockError::Held`] at once.
    pub fn acquire(root: &Path) -> Result<SetLock, LockError> {
        let io_err = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| LockError::Io { op, path, source }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(io_err("create directory", root))?;
        let path = root.join(LOCK_FILE);
        let open = |write: bool| {
            OpenOptions::new()
                .read(true)
                .write(write)
                .create(write)
                .truncate(false)
                .mode(0o600)
                .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
                .open(&path)
        };
        // On a read-only root the lock still works (flock needs no write
        // access); only the holder's pid goes unrecorded.
        let (file, writable) = match open(true) {
            Err(e) if e.raw_os_error() == Some(Errno::EROFS as i32) => (open(false), false),
            other => (other, true),
        };
        let file = file.map_err(io_err("open lock file", &path))?;
        let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(f) => f,
            Err((file, Errno::EWOULDBLOCK)) => {
                let (pid, program) = match read_holder(file) {
                    Some(h) => (Some(h.pid), h.program),
                    None => (None, None),
                };
                return Err(LockError::Held { path, pid, program });
            }
            Err((_, errno)) => {
                return Err(LockError::Io {
                    op: "flock",
                    path,
                    source: io::Error::from(errno),
                })
            }
        };
        if writable {
            // The pid only names the holder in the error others get; a full
            // root filesystem must not cost the lock.
            let mut owner = format!("{}\n", std::process::id());
            if let Some(name) = own_program() {
                owner = format!("{owner}{name}\n");
            }
            if let Err(e) = file
                .set_len(0)
                .and_then(|()| file.write_all_at(owner.as_bytes(), 0))
            {
                log::warn!("{}: could not record our pid: {e}", path.display());
            }
        }
        Ok(SetLock { file })
    }

    /// Who holds the lock on `root`, as its lock file says, without
    /// touching the lock (a probe could make a starting owner fail): `None`
    /// when the file names no live process (free, released, or a holder
    /// that wrote no pid). Never creates or changes anything.
    pub fn holder(root: &Path) -> Option<LockHolder> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(root.join(LOCK_FILE))
            .ok()?;
        read_holder(file)
    }
}

/// This program's name, for the lock file: the executable's file name.
fn own_program() -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    let name = exe.file_name()?.to_str()?;
    // One line, printable: it is shown in other processes' errors.
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_graphic())).then(|| name.to_owned())
}

impl Drop for SetLock {
    fn drop(&mut self) {
        // Clear our pid so that a later holder that writes none (say, the
        // flock(1) tool) is not reported as us. The lock itself is released
        // when the Flock field drops, right after this.
        let _ = self.file.set_len(0);
    }
}

/// The holder a held lock file names, if its pid parses and that process
/// exists. The recorded program name is kept only while the process's
/// `comm` (the kernel's name for it, cut to 15 bytes) still matches it, so a
/// reused pid is not given a stale name; else `comm` itself names it.
fn read_holder(mut file: File) -> Option<LockHolder> {
    let mut buf = String::new();
    (&mut file).take(320).read_to_string(&mut buf).ok()?;
    let mut lines = buf.lines();
    let pid: u32 = lines.next()?.trim().parse().ok()?;
    let raw = i32::try_from(pid).ok().filter(|&p| p > 0)?;
    match kill(Pid::from_raw(raw), None) {
        Ok(()) | Err(Errno::EPERM) => {}
        Err(_) => return None,
    }
    let recorded = lines.next().map(str::trim).filter(|n| !n.is_empty());
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok();
    let comm = comm.as_deref().map(str::trim_end).filter(|c| !c.is_empty());
    let program = match (recorded, comm) {
        (Some(name), Some(comm)) if name.starts_with(comm) => Some(name.to_owned()),
        (Some(name), None) => Some(name.to_owned()),
        (_, Some(comm)) => Some(comm.to_owned()),
        (None, None) => None,
    };
    Some(LockHolder { pid, program })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::testutil::Scratch;

    const CHILD_ENV: &str = "DMTHIN_TEST_LOCK_ROOT";
    const CHILD_MARK: &str = "DMTHIN-CHILD-HOLDS-LOCK";

    /// Not a test on its own: run by `lock_of_dead_process_is_free` as a child
    /// process that takes the lock and waits to be killed.
    #[test]
    fn lock_holder_child() {
        let Some(root) = std::env::var_os(CHILD_ENV) else {
            return;
        };
        let _lock = SetLock::acquire(Path::new(&root)).unwrap();
        println!("\n{CHILD_MARK}");
        std::thread::sleep(Duration::from_secs(120));
    }

    #[test]
    fn second_open_in_process_is_refused() {
        let s = Scratch::new("lock1");
        let root = s.path().join("set");
        assert_eq!(SetLock::holder(&root), None);
        let lock = SetLock::acquire(&root).unwrap();
        let me = own_program().unwrap();
        assert_eq!(
            fs::read_to_string(root.join("lock")).unwrap(),
            format!("{}\n{me}\n", std::process::id())
        );
        let err = SetLock::acquire(&root).unwrap_err();
        match &err {
            LockError::Held { path, pid, program } => {
                assert_eq!(path, &root.join("lock"));
                assert_eq!(*pid, Some(std::process::id()));
                assert_eq!(program.as_deref(), Some(me.as_str()));
            }
            other => panic!("{other}"),
        }
        assert_eq!(
            err.to_string(),
            format!(
                "device set is in use: {} is locked by {me} (pid {})",
                root.join("lock").display(),
                std::process::id()
            )
        );
        let holder = SetLock::holder(&root).unwrap();
        assert_eq!(holder.pid, std::process::id());
        assert_eq!(
            holder.to_string(),
            format!("{me} (pid {})", std::process::id())
        );
        drop(lock);
        assert_eq!(SetLock::holder(&root), None);
        let again = SetLock::acquire(&root).unwrap();
        drop(again);
        // The pid is cleared on release, so a holder that writes none is unknown.
        assert_eq!(fs::read_to_string(root.join("lock")).unwrap(), "");
    }

    #[test]
    fn lock_of_dead_process_is_free() {
        let s = Scratch::new("lock2");
        let root = s.path().join("set");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "deviceset::lock::tests::lock_holder_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &root)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            assert_ne!(out.read_line(&mut line).unwrap(), 0, "child exited early");
            if line.contains(CHILD_MARK) {
                break;
            }
        }
        let err = SetLock::acquire(&root).unwrap_err();
        assert!(
            matches!(&err, LockError::Held { pid: Some(p), .. } if *p == child.id()),
            "{err:?}"
        );
        let me = own_program().unwrap();
        assert!(
            err.to_string()
                .ends_with(&format!("is locked by {me} (pid {})", child.id())),
            "{err}"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        // The lock file is still there, naming the dead process; the lock is
        // free, and a reader is told no one holds it.
        assert_eq!(
            fs::read_to_string(root.join("lock")).unwrap(),
            format!("{}\n{me}\n", child.id())
        );
        assert_eq!(SetLock::holder(&root), None);
        let _lock = SetLock::acquire(&root).unwrap();
        assert_eq!(
            fs::read_to_string(root.join("lock")).unwrap(),
            format!("{}\n{me}\n", std::process::id())
        );
    }

    #[test]
    fn lock_held_by_foreign_tool_has_unknown_pid() {
        if !Path::new("/usr/bin/flock").exists() {
            eprintln!("flock(1) not installed; skipping");
            return;
        }
        let s = Scratch::new("lock3");
        let root = s.path().join("set");
        fs::create_dir_all(&root).unwrap();
        // Garbage in the file: a holder that did not write a pid.
        fs::write(root.join("lock"), b"not a pid").unwrap();
        // -o: only flock(1) itself holds the lock, not the command it runs. Its
        // own process group, so that the whole group can be killed by id.
        let mut child = Command::new("/usr/bin/flock")
            .args(["-n", "-x", "-o"])
            .arg(root.join("lock"))
            .args(["-c", "echo held; exec sleep 120"])
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line, "held\n");
        let err = SetLock::acquire(&root).unwrap_err();
        assert!(matches!(err, LockError::Held { pid: None, .. }), "{err:?}");
        assert!(err.to_string().ends_with("(pid unknown)"), "{err}");
        let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL).unwrap();
        child.wait().unwrap();
        let t = Instant::now();
        loop {
            match SetLock::acquire(&root) {
                Ok(_) => break,
                Err(LockError::Held { .. }) if t.elapsed() < Duration::from_secs(5) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
}
