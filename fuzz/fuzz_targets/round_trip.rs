//! Structured round trip: build configurations from fuzz input through the
//! validated constructors, format them, parse them back, and compare.
#![no_main]

use arbitrary::Arbitrary;
use dmthin::target::{
    BlockSize, CorruptBioByte, DelayClass, DelayTable, DeviceRef, Direction, DiscardMode,
    FlakeyFeatures, FlakeyTable, LinearTable, NoSpacePolicy, PoolFeatures, PoolMessage, PoolMode,
    PoolStatus, TableLine, Target, ThinId, ThinPoolStatus, ThinPoolTable, ThinStatus, ThinTable,
    ThinUsage,
};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Dev {
    Num(u32, u32),
    Path(String),
}

impl Dev {
    /// The reference, if the constructors accept it; invalid ones must be refused.
    fn build(&self) -> Option<DeviceRef> {
        match self {
            Dev::Num(a, b) => {
                let r = DeviceRef::major_minor(*a, *b);
                assert_eq!(r.is_ok(), *a <= 4095 && *b <= 1_048_575);
                r.ok()
            }
            Dev::Path(p) => {
                let r = DeviceRef::path(p.clone());
                if r.is_ok() {
                    assert!(
                        !p.is_empty() && !p.chars().any(|c| c.is_whitespace() || c.is_control())
                    );
                    assert!(!p.contains('\\'));
                }
                r.ok()
            }
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Pool {
    meta: Dev,
    data: Dev,
    block_size: u32,
    low_water: u64,
    features: [bool; 5],
}

#[derive(Debug, Arbitrary)]
struct Flakey {
    dev: Dev,
    offset: u64,
    up: u32,
    down: u32,
    error_reads: bool,
    writes: Option<bool>,
    corrupt: Option<(u32, bool, u8, u32)>,
    random_read: Option<u32>,
    random_write: Option<u32>,
}

#[derive(Debug, Arbitrary)]
enum Config {
    Pool(Pool),
    Thin {
        pool: Dev,
        id: u32,
        origin: Option<Dev>,
    },
    Linear {
        dev: Dev,
        offset: u64,
    },
    Flakey(Flakey),
    Delay {
        classes: Vec<(Dev, u64, u32)>,
    },
    PoolStatus {
        tid: u64,
        meta: (u64, u64),
        data: (u64, u64),
        held: Option<u64>,
        mode: u8,
        discard: u8,
        no_space: bool,
        needs_check: bool,
        lwm: Option<u64>,
        block_size: u32,
    },
    ThinStatus {
        mapped: u64,
        highest: Option<u64>,
        form: u8,
    },
    Message {
        kind: u8,
        a: u32,
        b: u32,
        c: u64,
        d: u64,
    },
}

fn check_target(t: Target, start: u64, len: u64) {
    let params = t.to_string();
    assert_eq!(
        Target::parse(t.target_type(), &params).as_ref(),
        Ok(&t),
        "{params:?}"
    );
    let line = t.to_line(start, len);
    if line.validate().is_ok() {
        let text = line.to_string();
        let back: TableLine = text.parse().expect("valid line parses");
        assert_eq!(back, line);
        assert_eq!(Target::from_line(&back), Ok(t));
    }
}

fn build(c: &Config) -> Option<()> {
    match c {
        Config::Pool(p) => {
            let bs = BlockSize::new(p.block_size);
            let valid_bs = (128..=2_097_152).contains(&p.block_size) && p.block_size % 128 == 0;
            assert_eq!(bs.is_ok(), valid_bs, "block size {}", p.block_size);
            let (meta, data) = (p.meta.build()?, p.data.build()?);
            let t = ThinPoolTable::new(meta.clone(), data.clone(), bs.ok()?, p.low_water);
            assert_eq!(t.is_ok(), meta != data);
            let f = p.features;
            let features = PoolFeatures {
                skip_block_zeroing: f[0],
                ignore_discard: f[1],
                no_discard_passdown: f[2],
                read_only: f[3],
                error_if_no_space: f[4],
            };
            let t = t.ok()?.with_features(features);
            assert_eq!(t.is_ok(), features.count() <= 4);
            check_target(Target::ThinPool(t.ok()?), 0, u64::from(p.block_size));
        }
        Config::Thin { pool, id, origin } => {
            let id = ThinId::new(*id);
            let pool = pool.build()?;
            let mut t = ThinTable::new(pool.clone(), id.ok()?).ok()?;
            if let Some(o) = origin {
                let o = o.build()?;
                let r = t.with_external_origin(o.clone());
                assert_eq!(r.is_ok(), o != pool);
                t = r.ok()?;
            }
            check_target(Target::Thin(t), 0, 1);
        }
        Config::Linear { dev, offset } => {
            check_target(
                Target::Linear(LinearTable::new(dev.build()?, *offset).ok()?),
                7,
                8,
            );
        }
        Config::Flakey(f) => {
            let features = FlakeyFeatures {
                error_reads: f.error_reads,
                writes: f.writes.map(|d| {
                    if d {
                        dmthin::target::WriteFault::Drop
                    } else {
                        dmthin::target::WriteFault::Error
                    }
                }),
                corrupt_bio_byte: f.corrupt.map(|(nth_byte, w, value, flags)| CorruptBioByte {
                    nth_byte,
                    direction: if w { Direction::Write } else { Direction::Read },
                    value,
                    flags,
                }),
                random_read_corrupt: f.random_read,
                random_write_corrupt: f.random_write,
            };
            let t = FlakeyTable::new(f.dev.build()?, f.offset, f.up, f.down).ok()?;
            let t = t.with_features(features).ok()?;
            check_target(Target::Flakey(t), 0, 1);
        }
        Config::Delay { classes } => {
            let mut cs = Vec::new();
            for (d, off, ms) in classes.iter().take(3) {
                cs.push(DelayClass {
                    device: d.build()?,
                    offset: *off,
                    delay_ms: *ms,
                });
            }
            let mut it = cs.into_iter();
            let mut t = DelayTable::new(it.next()?).ok()?;
            if let Some(w) = it.next() {
                t = t.with_write(w).ok()?;
            }
            if let Some(fl) = it.next() {
                t = t.with_flush(fl).ok()?;
            }
            check_target(Target::Delay(t), 0, 1);
        }
        Config::PoolStatus {
            tid,
            meta,
            data,
            held,
            mode,
            discard,
            no_space,
            needs_check,
            lwm,
            block_size,
        } => {
            let s = ThinPoolStatus {
                transaction_id: *tid,
                used_metadata_blocks: meta.0.min(meta.1),
                total_metadata_blocks: meta.0.max(meta.1),
                used_data_blocks: data.0.min(data.1),
                total_data_blocks: data.0.max(data.1),
                held_metadata_root: *held,
                mode: [
                    PoolMode::ReadWrite,
                    PoolMode::ReadOnly,
                    PoolMode::OutOfDataSpace,
                ][usize::from(*mode % 3)],
                discard: [
                    DiscardMode::Passdown,
                    DiscardMode::NoPassdown,
                    DiscardMode::Ignore,
                ][usize::from(*discard % 3)],
                no_space: if *no_space {
                    NoSpacePolicy::Error
                } else {
                    NoSpacePolicy::Queue
                },
                needs_check: *needs_check,
                metadata_low_watermark: *lwm,
            };
            let text = format!("{s} ");
            assert_eq!(
                PoolStatus::parse(&text),
                Ok(PoolStatus::Active(s)),
                "{text:?}"
            );
            if let Ok(bs) = BlockSize::new(*block_size) {
                let u = s.usage_bytes(bs);
                assert_eq!(
                    u.used_data,
                    s.used_data_blocks.checked_mul(u64::from(*block_size) * 512)
                );
                assert_eq!(u.total_metadata, s.total_metadata_blocks.checked_mul(4096));
            }
        }
        Config::ThinStatus {
            mapped,
            highest,
            form,
        } => {
            let s = match form % 4 {
                0 => ThinStatus::Active(ThinUsage {
                    mapped_sectors: *mapped,
                    highest_mapped_sector: *highest,
                }),
                1 => ThinStatus::Unavailable,
                2 => ThinStatus::Fail,
                _ => ThinStatus::Error,
            };
            assert_eq!(ThinStatus::parse(&format!("{s} ")), Ok(s));
        }
        Config::Message { kind, a, b, c, d } => {
            let in_range = |x: u32| x <= 0xFF_FFFF;
            let m = match kind % 6 {
                0 => {
                    let r = PoolMessage::create_thin(*a);
                    assert_eq!(r.is_ok(), in_range(*a));
                    r.ok()?
                }
                1 => {
                    let r = PoolMessage::create_snap(*a, *b);
                    assert_eq!(r.is_ok(), in_range(*a) && in_range(*b));
                    r.ok()?
                }
                2 => PoolMessage::delete(*a).ok()?,
                3 => PoolMessage::SetTransactionId {
                    current: *c,
                    new: *d,
                },
                4 => PoolMessage::ReserveMetadataSnap,
                _ => PoolMessage::ReleaseMetadataSnap,
            };
            assert_eq!(m.to_string().parse::<PoolMessage>(), Ok(m));
        }
    }
    Some(())
}

fuzz_target!(|c: Config| {
    let _ = build(&c);
});
