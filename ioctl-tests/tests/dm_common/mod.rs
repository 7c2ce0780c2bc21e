//! Fixtures of the dm kernel suites (`dm`, `dm_events`, `dm_errors`,
//! `udev_watch`): a control handle, table lines, devices and loop devices
//! removed on drop.
#![allow(dead_code)]

use dmthin::dm::{Control, DevId, RemoveOptions};
use dmthin::target::TableLine;
use dmthin_ioctl_tests::sh_ok;
use std::path::PathBuf;
use std::process::Command;

pub const PREFIX: &str = "dmthin-test-";

pub fn ctl() -> Control {
    Control::open().expect("open /dev/mapper/control")
}

pub fn line(start: u64, length: u64, tt: &str, params: &str) -> TableLine {
    TableLine::new(start, length, tt, params).expect("valid table line")
}

/// Removes the named devices when dropped, whatever the test did.
pub struct Cleanup(pub Vec<String>);

impl Cleanup {
    pub fn new(names: &[&str]) -> Self {
        Cleanup(names.iter().map(|s| s.to_string()).collect())
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(mut c) = Control::open() {
            for n in self.0.iter().rev() {
                let _ = c.remove(DevId::Name(n), &RemoveOptions::default());
            }
        }
    }
}

/// A loop device over a sparse file, detached on drop.
pub struct Loop {
    pub dev: String,
    pub file: PathBuf,
}

impl Loop {
    pub fn new(tag: &str, mib: u64) -> Loop {
        let file = PathBuf::from(format!("/tmp/{tag}.img"));
        let f = std::fs::File::create(&file).unwrap();
        f.set_len(mib << 20).unwrap();
        let dev = sh_ok(&format!("losetup -f --show {}", file.display()))
            .trim()
            .to_string();
        Loop { dev, file }
    }

    pub fn majmin(&self) -> String {
        use std::os::unix::fs::MetadataExt;
        let rdev = std::fs::metadata(&self.dev).unwrap().rdev();
        format!(
            "{}:{}",
            nix::sys::stat::major(rdev),
            nix::sys::stat::minor(rdev)
        )
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
        let _ = std::fs::remove_file(&self.file);
    }
}

pub fn zero(name: &str, sectors: u64) -> Vec<TableLine> {
    let _ = name;
    vec![line(0, sectors, "zero", "")]
}
