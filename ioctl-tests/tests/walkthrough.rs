//! The README's walkthrough, run in the kernel suite with the static `dmthin`
//! the runner ships (built for x86_64-unknown-linux-musl).

use std::path::PathBuf;

const SCRIPT: &str = include_str!("../walkthrough.sh");

fn on_path(name: &str) -> PathBuf {
    dmthin_ioctl_tests::find_on_path(name).unwrap_or_else(|| panic!("{name} is not on PATH"))
}

/// Whether an ELF executable asks for a dynamic loader (has a PT_INTERP header).
fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&elf[o..o + 8]);
        u64::from_le_bytes(b) as usize
    };
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not a 64-bit ELF");
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes([elf[at], elf[at + 1], elf[at + 2], elf[at + 3]]) == 3
    })
}

#[test]
fn walkthrough_runs_with_the_static_cli() {
    let exe = on_path("dmthin");
    let elf = std::fs::read(&exe).unwrap();
    assert!(
        !has_interpreter(&elf),
        "{} is dynamically linked",
        exe.display()
    );
    let (ok, text) = dmthin_ioctl_tests::bash_script("/tmp/dmthin-walkthrough.sh", SCRIPT);
    assert!(ok, "walkthrough failed:\n{text}");
    for expect in [
        "hello from the image layer",
        "new.txt is not there (isolated)",
        "written in container1",
        "walkthrough done",
    ] {
        assert!(
            text.contains(expect),
            "walkthrough output lacks {expect:?}:\n{text}"
        );
    }
}
