//! Fixtures of the dm kernel suites (`dm`, `dm_events`, `dm_errors`,
//! `udev_watch`): a control handle, table lines, devices removed on drop
//! (loop devices: the crate's `LoopDevice`).
#![allow(dead_code)]

use dmthin::dm::{Control, DevId, RemoveOptions};
use dmthin::target::TableLine;

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

pub fn zero(name: &str, sectors: u64) -> Vec<TableLine> {
    let _ = name;
    vec![line(0, sectors, "zero", "")]
}
