//! The floor: `struct dm_ioctl` requests encoded by hand into buffers that are
//! prepared before the timed loop, then issued with nothing but `ioctl(2)`.
//! No validation, no decoding beyond the header flags, no udev cookies, no
//! device nodes: the least work a program can do to get the same ioctls.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;

pub const HEADER: usize = 312;
const NAME_OFF: usize = 48;
const SPEC: usize = 40;

pub const VERSION: u8 = 0;
pub const LIST_DEVICES: u8 = 2;
pub const DEV_CREATE: u8 = 3;
pub const DEV_REMOVE: u8 = 4;
pub const DEV_SUSPEND: u8 = 6;
pub const TABLE_LOAD: u8 = 9;
pub const TABLE_STATUS: u8 = 12;
pub const TARGET_MSG: u8 = 14;

pub const FLAG_SUSPEND: u32 = 1 << 1;
pub const FLAG_BUFFER_FULL: u32 = 1 << 8;
pub const FLAG_UUID: u32 = 1 << 14;

/// `_IOWR(0xfd, nr, struct dm_ioctl)`.
fn request(nr: u8) -> libc::c_ulong {
    (3 << 30) | ((HEADER as libc::c_ulong) << 16) | (0xfd << 8) | nr as libc::c_ulong
}

/// One prepared request buffer.
#[derive(Clone)]
pub struct Req {
    pub nr: u8,
    pub buf: Vec<u8>,
}

fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn get_u32(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().unwrap())
}

fn align8(n: usize) -> usize {
    (n + 7) & !7
}

impl Req {
    /// A request with `payload` after the header and `out` bytes in total
    /// (at least header + payload).
    pub fn new(nr: u8, name: Option<&str>, flags: u32, payload: &[u8], out: usize) -> Req {
        let size = (HEADER + payload.len()).max(out);
        let mut buf = vec![0u8; size];
        put_u32(&mut buf, 0, 4); // version 4.0.0
        put_u32(&mut buf, 12, size as u32); // data_size
        put_u32(&mut buf, 16, HEADER as u32); // data_start
        put_u32(&mut buf, 28, flags);
        if let Some(n) = name {
            buf[NAME_OFF..NAME_OFF + n.len()].copy_from_slice(n.as_bytes());
        }
        buf[HEADER..HEADER + payload.len()].copy_from_slice(payload);
        Req { nr, buf }
    }

    pub fn message(pool: &str, msg: &str) -> Req {
        let mut p = vec![0u8; 8];
        p.extend_from_slice(msg.as_bytes());
        p.push(0);
        p.resize(align8(p.len()), 0);
        Req::new(TARGET_MSG, Some(pool), 0, &p, 0)
    }

    pub fn create(name: &str) -> Req {
        Req::new(DEV_CREATE, Some(name), 0, &[], 0)
    }

    pub fn load(name: &str, length: u64, target: &str, params: &str) -> Req {
        let plen = align8(params.len() + 1);
        let mut p = vec![0u8; SPEC + plen];
        p[8..16].copy_from_slice(&length.to_ne_bytes());
        put_u32(&mut p, 20, (SPEC + plen) as u32); // next
        p[24..24 + target.len()].copy_from_slice(target.as_bytes());
        p[SPEC..SPEC + params.len()].copy_from_slice(params.as_bytes());
        let mut r = Req::new(TABLE_LOAD, Some(name), 0, &p, 0);
        put_u32(&mut r.buf, 20, 1); // target_count
        r
    }

    pub fn resume(name: &str) -> Req {
        Req::new(DEV_SUSPEND, Some(name), 0, &[], 0)
    }

    pub fn suspend(name: &str) -> Req {
        Req::new(DEV_SUSPEND, Some(name), FLAG_SUSPEND, &[], 0)
    }

    pub fn remove(name: &str) -> Req {
        Req::new(DEV_REMOVE, Some(name), 0, &[], 0)
    }

    pub fn list(out: usize) -> Req {
        Req::new(LIST_DEVICES, None, FLAG_UUID, &[], out)
    }

    pub fn status(name: &str, out: usize) -> Req {
        Req::new(TABLE_STATUS, Some(name), 0, &[], out)
    }

    pub fn version() -> Req {
        Req::new(VERSION, None, 0, &[], 0)
    }

    /// The reply's flags word.
    pub fn flags(&self) -> u32 {
        get_u32(&self.buf, 28)
    }
}

pub struct Raw {
    file: File,
    pub ioctls: u64,
}

impl Raw {
    pub fn open() -> std::io::Result<Raw> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/mapper/control")?;
        Ok(Raw { file, ioctls: 0 })
    }

    /// Issues a prepared request; the kernel writes its reply into the buffer.
    #[inline]
    pub fn issue(&mut self, r: &mut Req) -> Result<(), std::io::Error> {
        self.ioctls += 1;
        // data_size in the header equals the buffer's length.
        crate::sys::dm_ioctl(self.file.as_raw_fd(), request(r.nr) as _, &mut r.buf)
    }

    /// Issues a request, panicking with context on failure.
    pub fn must(&mut self, r: &mut Req, what: &str) {
        if let Err(e) = self.issue(r) {
            panic!("raw ioctl {what}: {e}");
        }
    }
}
