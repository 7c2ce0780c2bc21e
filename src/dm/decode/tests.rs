//! Tests of the reply decoders.

use super::*;
use crate::dm::encode::header;
use zerocopy::{FromZeros, IntoBytes};

fn line(start: u64, length: u64, tt: &str, params: &str) -> TableLine {
    TableLine::new(start, length, tt, params).unwrap()
}

#[test]
fn find_nul_matches_a_bytewise_search() {
    for len in 0..40 {
        for nul in 0..=len {
            for fill in [b'a', 0x01, 0x80, 0xff] {
                let mut b = vec![fill; len];
                if nul < len {
                    b[nul] = 0;
                }
                // A second NUL later must not be found first.
                if nul + 3 < len {
                    b[nul + 3] = 0;
                }
                // Every start offset, so the NUL sits at every word position.
                for off in 0..len.min(9) {
                    let s = &b[off..];
                    assert_eq!(find_nul(s), s.iter().position(|&c| c == 0), "{s:?}");
                }
            }
        }
    }
}

/// Appends a target spec covering `(sector_start, length)` with the given
/// `next` offset and target type, then `params`, to the payload `p`.
fn push_spec(p: &mut Vec<u8>, (start, length): (u64, u64), next: u32, tt: &[u8], params: &[u8]) {
    let mut s = DmTargetSpec::new_zeroed();
    s.sector_start = start;
    s.length = length;
    s.next = next;
    s.target_type[..tt.len()].copy_from_slice(tt);
    p.extend_from_slice(s.as_bytes());
    p.extend_from_slice(params);
}

#[test]
fn decodes_status_specs() {
    // Output specs: next counts from the payload start.
    let mut p = Vec::new();
    push_spec(&mut p, (0, 100), 48, b"thin", b"12 99\0\0\0");
    push_spec(&mut p, (100, 10), 0, b"error", b"\0\0\0\0\0\0\0\0");
    let lines = decode_specs(Command::TableStatus, &p, 2).unwrap();
    assert_eq!(
        lines,
        vec![line(0, 100, "thin", "12 99"), line(100, 10, "error", "")]
    );
    assert!(decode_specs(Command::TableStatus, &p, 3).is_err());
    assert!(decode_specs(Command::TableStatus, &p[..44], 1).is_err());
    let mut backwards = p.clone();
    backwards[20..24].copy_from_slice(&0u32.to_ne_bytes());
    assert!(decode_specs(Command::TableStatus, &backwards, 2).is_err());
}

#[test]
fn decodes_deps_and_versions() {
    let mut p = 2u32.to_ne_bytes().to_vec();
    p.extend_from_slice(&0u32.to_ne_bytes());
    p.extend_from_slice(&Dev::new(7, 0).huge_encode().to_ne_bytes());
    p.extend_from_slice(&Dev::new(7, 1).huge_encode().to_ne_bytes());
    assert_eq!(
        decode_deps(&p).unwrap(),
        vec![Dev::new(7, 0), Dev::new(7, 1)]
    );
    assert!(decode_deps(&p[..20]).is_err());

    let mut v = Vec::new();
    v.extend_from_slice(&24u32.to_ne_bytes());
    for x in [1u32, 22, 0] {
        v.extend_from_slice(&x.to_ne_bytes());
    }
    v.extend_from_slice(b"thin\0\0\0\0");
    v.extend_from_slice(&0u32.to_ne_bytes());
    for x in [1u32, 4, 0] {
        v.extend_from_slice(&x.to_ne_bytes());
    }
    v.extend_from_slice(b"linear\0\0");
    let vs = decode_versions(Command::ListVersions, &v).unwrap();
    assert_eq!(vs[0].name, "thin");
    assert_eq!(vs[0].version, Version::new(1, 22, 0));
    assert_eq!(vs[1].name, "linear");
    assert!(decode_versions(Command::ListVersions, &v[..10]).is_err());
}

#[test]
fn header_and_payload_bounds() {
    assert!(decode_header(Command::Version, &[0u8; 100]).is_err());
    let mut h = header(Command::Version, None, DmFlags::empty(), 0);
    h.data_size = 400;
    let buf = vec![0u8; 350];
    assert!(payload(Command::Version, &h, &buf).is_err());
    h.data_start = 10;
    assert!(payload(Command::Version, &h, &[0u8; 500]).is_err());
    // Found by the dm_reply fuzz target: data_start past both data_size
    // and the buffer must be an error, not a slice panic.
    h.data_start = 100_000;
    h.data_size = 320;
    assert!(payload(Command::Version, &h, &[0u8; 400]).is_err());
    // The kernel's "no payload": data_size 305 < data_start 312.
    h.data_start = 312;
    h.data_size = 305;
    assert_eq!(
        payload(Command::Version, &h, &[0u8; 400]).unwrap(),
        &[] as &[u8]
    );
}
