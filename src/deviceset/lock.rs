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
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&path)
            .map_err(io_err("open lock file", &path))?;
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
        let pid = format!("{}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.write_all_at(pid.as_bytes(), 0))
            .map_err(io_err("write pid to lock file", &path))?;
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
