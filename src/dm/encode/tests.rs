//! Golden-byte tests of the request encoders.

use super::*;
use crate::dm::abi::HEADER_SIZE;

/// A line as given: the encoder must refuse the invalid ones itself.
fn line(start: u64, length: u64, tt: &str, params: &str) -> TableLine {
    TableLine::new_unchecked(start, length, tt, params)
}

#[test]
fn golden_version_request() {
    let mut h = header(Command::Version, None, DmFlags::empty(), 0);
    let mut buf = Vec::new();
    let size = write_request(&mut buf, &mut h, &[], 16384, 0);
    assert_eq!(size, 16384);
    let mut expected = vec![0u8; HEADER_SIZE];
    expected[0..4].copy_from_slice(&4u32.to_ne_bytes());
    expected[12..16].copy_from_slice(&16384u32.to_ne_bytes());
    expected[16..20].copy_from_slice(&312u32.to_ne_bytes());
    assert_eq!(&buf[..HEADER_SIZE], &expected[..]);
}

#[test]
fn golden_create_request_with_name_uuid_and_minor() {
    let mut h = header(
        Command::DevCreate,
        Some(DevId::Name("pool")),
        DmFlags::PERSISTENT_DEV,
        0,
    );
    copy_str_into(&mut h.uuid, "DMTHIN-x");
    h.dev = Dev::new(0, 300).huge_encode();
    let mut buf = Vec::new();
    write_request(&mut buf, &mut h, &[], 0, 0);
    assert_eq!(buf.len(), HEADER_SIZE);
    assert_eq!(&buf[12..16], &312u32.to_ne_bytes());
    assert_eq!(&buf[28..32], &8u32.to_ne_bytes());
    assert_eq!(
        &buf[40..48],
        &((300u64 & 0xff) | ((300u64 & !0xff) << 12)).to_ne_bytes()
    );
    assert_eq!(&buf[48..53], b"pool\0");
    assert_eq!(&buf[176..185], b"DMTHIN-x\0");
}

#[test]
fn golden_table_encoding() {
    let mut out = Vec::new();
    encode_table(
        &[line(0, 2048, "linear", "7:0 0"), line(2048, 8, "zero", "")],
        &mut out,
    )
    .unwrap();
    // Spec 1: 40 bytes + "7:0 0\0" padded to 8.
    assert_eq!(out.len(), 40 + 8 + 40 + 8);
    assert_eq!(&out[0..8], &0u64.to_ne_bytes());
    assert_eq!(&out[8..16], &2048u64.to_ne_bytes());
    assert_eq!(&out[16..20], &0i32.to_ne_bytes());
    assert_eq!(&out[20..24], &48u32.to_ne_bytes());
    assert_eq!(&out[24..31], b"linear\0");
    assert_eq!(&out[40..48], b"7:0 0\0\0\0");
    assert_eq!(&out[48..56], &2048u64.to_ne_bytes());
    assert_eq!(&out[68..72], &48u32.to_ne_bytes());
    assert_eq!(&out[72..77], b"zero\0");
    assert_eq!(&out[88..96], &[0u8; 8]);
}

#[test]
fn table_encoding_refuses_bad_lines() {
    let mut out = Vec::new();
    assert!(encode_table(&[], &mut out).is_err());
    assert!(encode_table(&[line(0, 1, "a-very-long-target-type", "")], &mut out).is_err());
    assert!(encode_table(&[line(0, 1, "linear", "7:0\u{0}0")], &mut out).is_err());
    assert!(encode_table(&[line(0, 0, "zero", "")], &mut out).is_err());
}

#[test]
fn golden_headers_for_every_command() {
    let all = [
        Command::Version,
        Command::RemoveAll,
        Command::ListDevices,
        Command::DevCreate,
        Command::DevRemove,
        Command::DevRename,
        Command::DevSuspend,
        Command::DevStatus,
        Command::DevWait,
        Command::TableLoad,
        Command::TableClear,
        Command::TableDeps,
        Command::TableStatus,
        Command::ListVersions,
        Command::TargetMsg,
        Command::DevSetGeometry,
        Command::DevArmPoll,
        Command::GetTargetVersion,
    ];
    for (nr, cmd) in all.into_iter().enumerate() {
        assert_eq!(cmd.nr() as usize, nr);
        let mut h = header(cmd, Some(DevId::Name("dev0")), DmFlags::SKIP_LOCKFS, 7);
        let mut buf = Vec::new();
        write_request(&mut buf, &mut h, b"payload\0", 0, 0);
        let v = cmd.min_version();
        let mut expected = vec![0u8; HEADER_SIZE + 8];
        expected[0..4].copy_from_slice(&v.major.to_ne_bytes());
        expected[4..8].copy_from_slice(&v.minor.to_ne_bytes());
        expected[12..16].copy_from_slice(&320u32.to_ne_bytes());
        expected[16..20].copy_from_slice(&312u32.to_ne_bytes());
        expected[28..32].copy_from_slice(&(1u32 << 10).to_ne_bytes());
        expected[32..36].copy_from_slice(&7u32.to_ne_bytes());
        expected[48..52].copy_from_slice(b"dev0");
        expected[312..320].copy_from_slice(b"payload\0");
        assert_eq!(buf, expected, "{cmd}");
    }
}

#[test]
fn golden_rename_and_geometry_payloads() {
    let mut out = Vec::new();
    encode_string("new-name", &mut out);
    assert_eq!(out, b"new-name\0\0\0\0\0\0\0\0");
    encode_string("1 64 32 0", &mut out);
    assert_eq!(out, b"1 64 32 0\0\0\0\0\0\0\0");
    let mut h = header(
        Command::DevRemove,
        Some(DevId::Uuid("U-1")),
        DmFlags::DEFERRED_REMOVE,
        0,
    );
    let mut buf = Vec::new();
    write_request(&mut buf, &mut h, &[], 0, 0);
    assert_eq!(&buf[28..32], &(1u32 << 17).to_ne_bytes());
    assert_eq!(
        &buf[48..52],
        &[0u8; 4],
        "name empty when addressing by uuid"
    );
    assert_eq!(&buf[176..180], b"U-1\0");
    let mut h = header(
        Command::DevStatus,
        Some(DevId::Dev(Dev::new(254, 3))),
        DmFlags::empty(),
        0,
    );
    write_request(&mut buf, &mut h, &[], 0, 0);
    assert_eq!(&buf[40..48], &((254u64 << 8) | 3).to_ne_bytes());
}

#[test]
fn golden_message() {
    let mut out = Vec::new();
    encode_message(0, "create_thin 5", &mut out).unwrap();
    assert_eq!(out.len(), 24);
    assert_eq!(&out[..8], &[0u8; 8]);
    assert_eq!(&out[8..22], b"create_thin 5\0");
    assert!(encode_message(0, "", &mut out).is_err());
}

/// Issue #17: what an earlier request or reply left in the buffer is zeroed
/// before the next ioctl, but only up to where it was written.
#[test]
fn write_request_zeroes_stale_bytes_up_to_where_they_were_written() {
    let mut buf = vec![0xaau8; 4096];
    let mut h = header(Command::ListDevices, None, DmFlags::UUID, 0);
    let size = write_request(&mut buf, &mut h, b"12345678", 4096, 1000);
    assert_eq!(size, 4096);
    assert_eq!(&buf[HEADER_SIZE..HEADER_SIZE + 8], b"12345678");
    assert!(buf[HEADER_SIZE + 8..1000].iter().all(|&b| b == 0));
    // Past the stale mark nothing was written, so nothing is cleared.
    assert!(buf[1000..].iter().all(|&b| b == 0xaa));
    // A stale mark past the request's size clears only inside the request.
    let mut buf = vec![0xaau8; 1024];
    let mut h = header(
        Command::DevStatus,
        Some(DevId::Name("x")),
        DmFlags::empty(),
        0,
    );
    let size = write_request(&mut buf, &mut h, &[], 400, 1024);
    assert_eq!(size, 400);
    assert!(buf[HEADER_SIZE..400].iter().all(|&b| b == 0));
    assert!(buf[400..].iter().all(|&b| b == 0xaa));
    // Nothing stale: the bytes after the request are left as they are.
    let mut buf = vec![0xaau8; 1024];
    write_request(&mut buf, &mut h, &[], 1024, 0);
    assert!(buf[HEADER_SIZE..].iter().all(|&b| b == 0xaa));
}
