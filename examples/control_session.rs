//! A raw device-mapper session: list every device and read each thin pool's
//! status through [`dmthin::dm::Control`], with no device set involved.
//!
//! ```text
//! sudo cargo run --example control_session            # every device
//! sudo cargo run --example control_session -- POOL    # one pool by name
//! ```
//!
//! Needs root and the `dm_mod` module (`/dev/mapper/control`); it changes
//! nothing.

use dmthin::dm::{Control, DevId, StatusKind, StatusOptions};
use dmthin::target::{PoolStatus, TargetTable, ThinPoolTable};
use std::process::ExitCode;

fn main() -> ExitCode {
    let only = std::env::args().nth(1);
    match run(only.as_deref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("control_session: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(only: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    // One handle: it opens /dev/mapper/control and asks the kernel for its
    // interface version.
    let mut ctl = Control::open()?;
    println!("device-mapper interface {}", ctl.version());

    // DM_LIST_DEVICES: name, device number and (on newer kernels) uuid.
    let devices = ctl.list_devices()?;
    println!("{} device(s)", devices.len());
    for entry in &devices {
        println!(
            "  {:<40} {}  uuid {}",
            entry.name,
            entry.dev,
            entry.uuid.as_deref().unwrap_or("-")
        );
    }

    for entry in devices.iter().filter(|e| only.is_none_or(|n| n == e.name)) {
        let id = DevId::Name(&entry.name);
        // The live table says which targets the device has; a thin pool's
        // table also gives its data block size, needed to turn the status's
        // block counts into bytes.
        let table_opts = StatusOptions {
            kind: StatusKind::Table,
            ..StatusOptions::default()
        };
        let (_, table) = ctl.table_status(id, &table_opts)?;
        let Some(line) = table
            .iter()
            .find(|l| l.target_type() == ThinPoolTable::TARGET_TYPE)
        else {
            continue;
        };
        let pool = ThinPoolTable::from_line(line)?;

        // DM_TABLE_STATUS. `noflush`: do not make the pool commit its
        // metadata just to answer (a read-only look).
        let status_opts = StatusOptions {
            noflush: true,
            ..StatusOptions::default()
        };
        let (info, lines) = ctl.table_status(id, &status_opts)?;
        let Some(status_line) = lines.first() else {
            println!(
                "pool {}: no status (suspended: {})",
                entry.name,
                info.suspended()
            );
            continue;
        };
        match PoolStatus::parse(status_line.params())? {
            PoolStatus::Active(s) => {
                let bytes = s.usage_bytes(pool.block_size());
                println!(
                    "pool {}: transaction {}, data {}/{} blocks ({} of {} bytes), \
                     metadata {}/{} blocks, {}{}",
                    entry.name,
                    s.transaction_id,
                    s.used_data_blocks,
                    s.total_data_blocks,
                    bytes.used_data.unwrap_or(u64::MAX),
                    bytes.total_data.unwrap_or(u64::MAX),
                    s.used_metadata_blocks,
                    s.total_metadata_blocks,
                    s.mode.as_str(),
                    if s.needs_check { ", needs_check" } else { "" },
                );
            }
            other => println!("pool {}: {other}", entry.name),
        }
    }
    if let Some(name) = only {
        if !devices.iter().any(|e| e.name == name) {
            return Err(format!("no device named {name}").into());
        }
    }
    Ok(())
}
