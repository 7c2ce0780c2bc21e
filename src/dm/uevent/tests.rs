use super::*;

fn udev_msg(props: &[&str]) -> Vec<u8> {
    let mut body = Vec::new();
    for p in props {
        body.extend_from_slice(p.as_bytes());
        body.push(0);
    }
    let mut msg = Vec::new();
    msg.extend_from_slice(UDEV_PREFIX);
    msg.extend_from_slice(&UDEV_MAGIC.to_be_bytes());
    msg.extend_from_slice(&40u32.to_ne_bytes()); // header size
    msg.extend_from_slice(&40u32.to_ne_bytes()); // properties offset
    msg.extend_from_slice(&(body.len() as u32).to_ne_bytes());
    msg.extend_from_slice(&[0u8; 16]); // filter hashes and tag bloom
    msg.extend_from_slice(&body);
    msg
}

#[test]
fn kernel_uevents_are_parsed() {
    let msg = b"change@/devices/virtual/block/dm-3\0ACTION=change\0DEVPATH=/devices/virtual/block/dm-3\0SUBSYSTEM=block\0MAJOR=253\0MINOR=3\0DEVNAME=dm-3\0DEVTYPE=disk\0DISKSEQ=12\0SEQNUM=4711\0";
    assert_eq!(
        parse_kernel(msg),
        Some(Uevent {
            action: "change".into(),
            dev: Some(Dev::new(253, 3)),
            devname: "dm-3".into(),
            seqnum: 4711,
        })
    );
    // No SEQNUM, no header, or udevd's format: not a kernel uevent.
    assert_eq!(parse_kernel(b"change@/x\0ACTION=change\0"), None);
    assert_eq!(parse_kernel(b"ACTION=change\0SEQNUM=1\0"), None);
    assert_eq!(parse_kernel(&udev_msg(&["ACTION=add", "SEQNUM=1"])), None);
}

#[test]
fn udev_reports_are_parsed() {
    let msg = udev_msg(&[
        "ACTION=remove",
        "DEVNAME=/dev/dm-0",
        "MAJOR=253",
        "MINOR=0",
        "SEQNUM=99",
        "DM_NAME=x",
    ]);
    assert_eq!(
        parse_udev(&msg),
        Some(Uevent {
            action: "remove".into(),
            dev: Some(Dev::new(253, 0)),
            devname: "dm-0".into(),
            seqnum: 99,
        })
    );
    let mut bad_magic = msg.clone();
    bad_magic[8] ^= 1;
    assert_eq!(parse_udev(&bad_magic), None);
    // Properties past the end of the message.
    assert_eq!(parse_udev(&msg[..msg.len() - 3]), None);
    assert_eq!(parse_udev(b"add@/devices/x\0SEQNUM=1\0"), None);
}

#[test]
fn recorded_flags_come_from_the_database_entry() {
    let db = "S:mapper/x\nE:DM_UDEV_PRIMARY_SOURCE_FLAG=1\nE:DM_UDEV_DISABLE_LIBRARY_FALLBACK_FLAG=1\nE:DM_UDEV_DISABLE_DISK_RULES_FLAG=0\nE:DM_UDEV_RULES_VSN=2\nE:DM_NAME=x\n";
    assert_eq!(
        flags_from_db(db),
        UdevFlags::PRIMARY_SOURCE | UdevFlags::DISABLE_LIBRARY_FALLBACK
    );
    let added = "E:DM_UDEV_DISABLE_SUBSYSTEM_RULES_FLAG=1\nE:DM_UDEV_DISABLE_DISK_RULES_FLAG=1\nE:DM_UDEV_DISABLE_OTHER_RULES_FLAG=1\n";
    assert_eq!(flags_from_db(added), UdevFlags::PRIVATE);
    assert_eq!(flags_from_db(""), UdevFlags::empty());
}
