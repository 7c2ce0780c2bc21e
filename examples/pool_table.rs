//! Builds a thin-pool table line, parses it back, and reads a pool status
//! line: the pure-text layer (`dmthin::target`), no kernel needed.
//!
//! ```text
//! cargo run --example pool_table
//! ```
//!
//! It checks its own results and exits non-zero if any is wrong (CI runs it).

use dmthin::target::{
    BlockSize, DeviceRef, PoolFeatures, PoolStatus, TableLine, TargetTable, ThinPoolTable,
};

fn main() -> Result<(), dmthin::target::TargetError> {
    // A pool over two loop devices: metadata on 7:1, data on 7:0, 64 KiB data
    // blocks, a dm event when fewer than 16 blocks are free, and no zeroing
    // of new blocks. Every constructor checks its values.
    let table = ThinPoolTable::new(
        DeviceRef::major_minor(7, 1)?,
        DeviceRef::major_minor(7, 0)?,
        BlockSize::from_bytes(64 * 1024)?,
        16,
    )?
    .with_features(PoolFeatures {
        skip_block_zeroing: true,
        ..PoolFeatures::default()
    })?;

    // The line covers the data device: 1 GiB is 2097152 sectors.
    let line = table.to_line(0, 2_097_152);
    let text = line.to_string();
    println!("table line:  {text}");
    assert_eq!(
        text,
        "0 2097152 thin-pool 7:1 7:0 128 16 1 skip_block_zeroing"
    );

    // Back from text (as `dmsetup table` prints it) to the typed table.
    let parsed = TableLine::parse(&text)?;
    let back = ThinPoolTable::from_line(&parsed)?;
    assert_eq!(back, table);
    println!(
        "parsed back: block size {} bytes, {} data blocks, low water mark {}",
        back.block_size().bytes(),
        back.data_blocks(parsed.length()),
        back.low_water_mark()
    );

    // A bad line gets an error that names the field and the rule.
    let err = TableLine::parse("0 2097152 thin-pool 7:1 7:0 100 16")
        .and_then(|l| ThinPoolTable::from_line(&l))
        .expect_err("a block size of 100 sectors is refused");
    println!("refused:     {err}");
    assert!(err.to_string().contains("block size"), "{err}");

    // A status line as the kernel reports it for this pool.
    let status =
        PoolStatus::parse("1 120/4161 34/16384 - rw discard_passdown queue_if_no_space - 1024")?;
    let active = status.active().expect("an active pool's status");
    let usage = active.usage_bytes(table.block_size());
    println!(
        "status:      transaction {}, data {} of {} bytes, metadata {} of {} bytes, mode {}",
        active.transaction_id,
        usage.used_data.unwrap_or(u64::MAX),
        usage.total_data.unwrap_or(u64::MAX),
        usage.used_metadata.unwrap_or(u64::MAX),
        usage.total_metadata.unwrap_or(u64::MAX),
        active.mode.as_str(),
    );
    assert_eq!(active.free_data_blocks(), 16384 - 34);
    assert_eq!(usage.used_data, Some(34 * 64 * 1024));
    Ok(())
}
