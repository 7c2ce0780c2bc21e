//! Embedding a device set: open (or create) a thin pool on loop files, add a
//! thin snapshot of the base filesystem, activate it, list the set, remove
//! the snapshot and shut the set down.
//!
//! ```text
//! sudo cargo run --example device_set -- /var/lib/dmthin-example
//! ```
//!
//! Needs root, the `dm_mod` and `dm_thin_pool` modules, loop devices and
//! `mkfs.ext4`. The first run creates 1 GiB (sparse) of loop files under the
//! directory; later runs reuse them. Remove the directory to start over.

use dmthin::deviceset::{DeviceSet, Options, StorageOptions};
use std::process::ExitCode;
use std::sync::Arc;

const MIB: u64 = 1 << 20;

fn main() -> ExitCode {
    let root = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/var/lib/dmthin-example".to_owned());
    match run(&root) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("device_set: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(root: &str) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(root).map_err(|e| format!("creating {root}: {e}"))?;

    // The options matter on the first open, which creates the pool and the
    // base filesystem; later opens take the set's recorded ones (sizes only
    // grow).
    let options = Options {
        storage: StorageOptions::LoopFiles {
            data_size: 1024 * MIB,
            metadata_size: 64 * MIB,
        },
        base_size: 256 * MIB,
        // Long steps (mkfs, growing) say what they are doing.
        progress: Some(Arc::new(|step: &str| eprintln!("device_set: {step}"))),
        ..Options::default()
    };
    // Open takes the set's lock (one process at a time) and repairs whatever
    // a crash left half done.
    let set = DeviceSet::open(root, options)?;
    println!("pool {} at {}", set.pool_name(), set.root().display());

    // A thin snapshot of the base filesystem, then a snapshot of that one.
    set.add_device("layer1", None)?;
    set.add_device("layer2", Some("layer1"))?;
    let path = set.activate_device("layer2")?;
    println!("layer2 is active at {}", path.display());

    for dev in set.list()? {
        println!(
            "  {:<8} parent {:<8} thin id {:>3}  {} bytes  active {}",
            dev.id,
            dev.parent.as_deref().unwrap_or("(base)"),
            dev.thin_id,
            dev.size,
            dev.active
        );
    }
    let status = set.status()?;
    println!(
        "data {} of {} bytes used, {} device(s), mode {}",
        status.data_used, status.data_total, status.devices, status.mode
    );

    // Remove deactivates the device (retrying while it is busy) and deletes
    // it from the pool.
    set.remove_device("layer2")?;
    set.remove_device("layer1")?;

    // Deactivates every device and removes the pool this set created; the
    // files stay, and the next open brings the pool back.
    set.shutdown()?;
    Ok(())
}
