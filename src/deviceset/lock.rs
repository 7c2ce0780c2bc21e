//! One owner per set root: an exclusive `flock` on `<root>/lock`.
//!
//! The kernel drops a `flock` when the holder's last descriptor closes, so a
//! lock file left behind by a dead process never blocks a new owner. The file
//! holds the owner's pid, for the error a second opener gets; it is never
//! removed (removing it would let two processes lock two different inodes).

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
    #[error("device set is in use: {path} is locked by {}", holder(*.pid))]
    Held {
        /// The lock file.
        path: PathBuf,
        /// The holder's pid, when the lock file names a live process.
        pid: Option<u32>,
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

fn holder(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("process {pid}"),
        None => "another process (pid unknown)".to_owned(),
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
                let pid = read_live_pid(file);
                return Err(LockError::Held { path, pid });
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
            let pid = format!("{}\n", std::process::id());
            if let Err(e) = file
                .set_len(0)
                .and_then(|()| file.write_all_at(pid.as_bytes(), 0))
            {
                log::warn!("{}: could not record our pid: {e}", path.display());
            }
        }
        Ok(SetLock { file })
    }
}

impl Drop for SetLock {
    fn drop(&mut self) {
        // Clear our pid so that a later holder that writes none (say, the
        // flock(1) tool) is not reported as us. The lock itself is released
        // when the Flock field drops, right after this.
        let _ = self.file.set_len(0);
    }
}

/// The pid in a held lock file, if it parses and that process exists.
fn read_live_pid(mut file: File) -> Option<u32> {
    let mut buf = String::new();
    (&mut file).take(32).read_to_string(&mut buf).ok()?;
    let pid: u32 = buf.trim().parse().ok()?;
    let raw = i32::try_from(pid).ok().filter(|&p| p > 0)?;
    match kill(Pid::from_raw(raw), None) {
        Ok(()) | Err(Errno::EPERM) => Some(pid),
        Err(_) => None,
    }
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
        let lock = SetLock::acquire(&root).unwrap();
        assert_eq!(
            fs::read_to_string(root.join("lock")).unwrap(),
            format!("{}\n", std::process::id())
        );
        let err = SetLock::acquire(&root).unwrap_err();
        match &err {
            LockError::Held { path, pid } => {
                assert_eq!(path, &root.join("lock"));
                assert_eq!(*pid, Some(std::process::id()));
            }
            other => panic!("{other}"),
        }
        assert_eq!(
            err.to_string(),
            format!(
                "device set is in use: {} is locked by process {}",
                root.join("lock").display(),
                std::process::id()
            )
        );
        drop(lock);
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
        assert!(
            err.to_string()
                .ends_with(&format!("is locked by process {}", child.id())),
            "{err}"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        // The lock file is still there, naming the dead process; the lock is free.
        assert_eq!(
            fs::read_to_string(root.join("lock")).unwrap(),
            format!("{}\n", child.id())
        );
        let _lock = SetLock::acquire(&root).unwrap();
        assert_eq!(
            fs::read_to_string(root.join("lock")).unwrap(),
            format!("{}\n", std::process::id())
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
