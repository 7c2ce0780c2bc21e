//! The only unsafe code of the dm layer: the DM ioctl itself and the SysV
//! semaphore calls behind udev cookies. Everything else in `dm` is safe code
//! calling these.
#![allow(unsafe_code)]

use super::abi::{Command, HEADER_SIZE};
use nix::errno::Errno;
use nix::libc;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

/// Why [`dm_ioctl`] did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IoctlError {
    /// The request's `data_size` does not fit the buffer (or the buffer has
    /// no room for the header): refused before the kernel could see it.
    Oversized {
        /// `data_size` of the request header (0 when the header is cut short).
        data_size: usize,
        /// The buffer's length.
        buffer: usize,
    },
    /// The kernel refused the ioctl.
    Kernel(Errno),
}

/// Issues `command` on the control node `fd` with the request in `buf`.
///
/// The request header's `data_size` (bytes 12..16) tells the kernel how much
/// of the buffer it may read and write; it is checked against `buf.len()`
/// here, so the kernel never touches memory outside `buf`.
pub(super) fn dm_ioctl(
    fd: BorrowedFd<'_>,
    command: Command,
    buf: &mut [u8],
) -> Result<(), IoctlError> {
    let data_size = buf
        .get(12..16)
        .and_then(|b| b.try_into().ok())
        .map_or(0, |b| u32::from_ne_bytes(b) as usize);
    if buf.len() < HEADER_SIZE || data_size < HEADER_SIZE || data_size > buf.len() {
        return Err(IoctlError::Oversized {
            data_size,
            buffer: buf.len(),
        });
    }
    // SAFETY: `buf` is a live, exclusively borrowed buffer of at least
    // `data_size` bytes (checked above) and at least a whole header; the
    // header's `data_size` says how much of it the kernel may read and write,
    // so it stays inside `buf`. `fd` is a borrowed open descriptor.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), command.request() as _, buf.as_mut_ptr()) };
    if rc < 0 {
        Err(IoctlError::Kernel(Errno::last()))
    } else {
        Ok(())
    }
}

/// `semget(key, 1, 0600 | IPC_CREAT | IPC_EXCL)`: a fresh one-semaphore set.
pub(super) fn sem_create(key: u32) -> Result<i32, Errno> {
    // SAFETY: semget takes plain integers and touches no memory of ours.
    let semid = unsafe {
        libc::semget(
            key as libc::key_t,
            1,
            0o600 | libc::IPC_CREAT | libc::IPC_EXCL,
        )
    };
    if semid < 0 {
        Err(Errno::last())
    } else {
        Ok(semid)
    }
}

/// `semctl(semid, 0, SETVAL, value)`.
pub(super) fn sem_set(semid: i32, value: i32) -> Result<(), Errno> {
    // SAFETY: SETVAL takes an int argument (passed by value); no memory of
    // ours is read or written.
    let rc = unsafe { libc::semctl(semid, 0, libc::SETVAL, value as libc::c_int) };
    if rc < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// `semctl(semid, 0, GETVAL)`: the semaphore's value.
#[cfg(test)]
pub(super) fn sem_get(semid: i32) -> Result<i32, Errno> {
    // SAFETY: GETVAL takes no argument; querying any id (even a removed one)
    // only returns a value or an error.
    let rc = unsafe { libc::semctl(semid, 0, libc::GETVAL) };
    if rc < 0 {
        Err(Errno::last())
    } else {
        Ok(rc)
    }
}

/// `semctl(semid, 0, IPC_RMID)`: removes the set.
pub(super) fn sem_remove(semid: i32) -> Result<(), Errno> {
    // SAFETY: IPC_RMID takes no argument pointer; no memory of ours is touched.
    let rc = unsafe { libc::semctl(semid, 0, libc::IPC_RMID) };
    if rc < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// `semtimedop` of one operation `op` on semaphore 0, with `flags`
/// (`IPC_NOWAIT`...), waiting at most `timeout` (`None`: no limit).
pub(super) fn sem_op(
    semid: i32,
    op: i16,
    flags: i16,
    timeout: Option<Duration>,
) -> Result<(), Errno> {
    let mut sb = libc::sembuf {
        sem_num: 0,
        sem_op: op,
        sem_flg: flags,
    };
    let ts = timeout.map(|t| libc::timespec {
        // (`as _`: naming libc::time_t is deprecated on musl; the timeouts
        // are seconds, far below any time_t limit.)
        tv_sec: t.as_secs() as _,
        tv_nsec: t.subsec_nanos() as _,
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `sb` is a valid sembuf for one operation and `tsp` is null or points
    // to a live timespec; semtimedop (no libc wrapper in the libc crate) only
    // reads both during the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_semtimedop,
            semid,
            &mut sb as *mut libc::sembuf,
            1usize,
            tsp,
        )
    };
    if rc < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn ioctl_refuses_a_data_size_past_the_buffer() {
        let f = std::fs::File::open("/dev/null").unwrap();
        let mut buf = vec![0u8; HEADER_SIZE];
        buf[12..16].copy_from_slice(&(HEADER_SIZE as u32 + 1).to_ne_bytes());
        assert_eq!(
            dm_ioctl(f.as_fd(), Command::Version, &mut buf),
            Err(IoctlError::Oversized {
                data_size: HEADER_SIZE + 1,
                buffer: HEADER_SIZE
            })
        );
        let mut short = vec![0u8; 100];
        assert!(matches!(
            dm_ioctl(f.as_fd(), Command::Version, &mut short),
            Err(IoctlError::Oversized { buffer: 100, .. })
        ));
        // A fitting request reaches the kernel (which refuses it on /dev/null).
        buf[12..16].copy_from_slice(&(HEADER_SIZE as u32).to_ne_bytes());
        assert!(matches!(
            dm_ioctl(f.as_fd(), Command::Version, &mut buf),
            Err(IoctlError::Kernel(_))
        ));
    }
}
