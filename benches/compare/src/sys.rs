//! The bench's only unsafe code: the raw dm ioctl of the floor peer, the
//! strace markers, sync(2), and the ptrace loop that reads a child's peak
//! memory.
#![allow(unsafe_code)]

use std::os::fd::RawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A getppid() system call, which the strace runs use as a marker around a
/// timed loop (see c/libdm_peer.c).
pub fn strace_marker() {
    // SAFETY: getppid has no preconditions.
    unsafe {
        libc::getppid();
    }
}

/// sync(2): flushes every filesystem's dirty data.
pub fn sync() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Issues dm ioctl `request` on `fd` with `buf` as its `struct dm_ioctl`.
/// The caller keeps the header's data_size equal to `buf.len()`.
pub fn dm_ioctl(fd: RawFd, request: libc::c_ulong, buf: &mut [u8]) -> std::io::Result<()> {
    // SAFETY: the buffer is valid for buf.len() bytes and its header's
    // data_size says no more, so the kernel stays inside it.
    let rc = unsafe { libc::ioctl(fd, request as _, buf.as_mut_ptr()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs CMD and returns its peak resident memory in KiB, its wall time and
/// whether it succeeded.
///
/// The peak is VmHWM from /proc/PID/status, read at PTRACE_EVENT_EXIT, when
/// the process has finished but its memory is still mapped. (wait4's
/// ru_maxrss is no good here: execve folds the pre-exec image's high-water
/// mark, i.e. this bench's own RSS, into it.)
pub fn peak_rss(cmd: &str, args: &[String]) -> (i64, Duration, bool) {
    use std::os::unix::process::CommandExt;
    let t0 = Instant::now();
    let mut c = Command::new(cmd);
    c.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only async-signal-safe ptrace() between fork and exec.
    unsafe {
        c.pre_exec(|| {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // Reaped below by waitpid(), which also sees the ptrace stops.
    #[allow(clippy::zombie_processes)]
    let child = c.spawn().unwrap_or_else(|e| panic!("spawn {cmd}: {e}"));
    let pid = child.id() as libc::pid_t;
    let mut hwm_kib: i64 = -1;
    let mut ok = false;
    let mut first = true;
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own traced child.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(rc, pid, "waitpid");
        if libc::WIFEXITED(status) {
            ok = libc::WEXITSTATUS(status) == 0;
            break;
        }
        if libc::WIFSIGNALED(status) {
            break;
        }
        let mut sig = 0;
        if libc::WIFSTOPPED(status) {
            let stop = libc::WSTOPSIG(status);
            let event = (status >> 16) & 0xff;
            if first && stop == libc::SIGTRAP {
                // The stop after execve: from now on, stop again at exit.
                first = false;
                // SAFETY: setting options on our own traced, stopped child.
                unsafe {
                    libc::ptrace(
                        libc::PTRACE_SETOPTIONS,
                        pid,
                        0,
                        libc::PTRACE_O_TRACEEXIT as libc::c_long,
                    );
                }
            } else if event == libc::PTRACE_EVENT_EXIT {
                hwm_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find(|l| l.starts_with("VmHWM:"))
                            .and_then(|l| l.split_whitespace().nth(1))
                            .and_then(|v| v.parse().ok())
                    })
                    .unwrap_or(-1);
            } else if stop != libc::SIGTRAP {
                sig = stop;
            }
        }
        // SAFETY: resuming our own traced child.
        unsafe {
            libc::ptrace(libc::PTRACE_CONT, pid, 0, sig as libc::c_long);
        }
    }
    (hwm_kib, t0.elapsed(), ok)
}
