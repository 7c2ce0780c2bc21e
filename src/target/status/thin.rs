//! The `thin` status line.

use std::fmt;

use super::super::args::{parse_u64, Args};
use super::super::error::Result;

/// A thin device's usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ThinUsage {
    /// Sectors mapped (provisioned) in the thin device.
    pub mapped_sectors: u64,
    /// Last sector of the highest mapped block; `None` when nothing is mapped.
    pub highest_mapped_sector: Option<u64>,
}

/// A `thin` status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThinStatus {
    /// `<mapped_sectors> <highest_mapped_sector|->`.
    Active(ThinUsage),
    /// `-`: the thin device is not open in the pool.
    Unavailable,
    /// `Fail`: the pool is in fail mode.
    Fail,
    /// `Error`: the kernel could not read the thin device's metadata.
    Error,
}

const THIN: &str = "thin status";

impl ThinStatus {
    /// Parses a `thin` status line.
    pub fn parse(s: &str) -> Result<Self> {
        let mut it = Args::new(s, THIN);
        let first = it.first()?;
        let status = match first {
            "Fail" => ThinStatus::Fail,
            "Error" => ThinStatus::Error,
            "-" => ThinStatus::Unavailable,
            _ => {
                let mapped_sectors = parse_u64("thin status mapped sectors", first)?;
                let h = it.required("thin status highest mapped sector")?;
                let highest_mapped_sector = if h == "-" {
                    None
                } else {
                    Some(parse_u64("thin status highest mapped sector", h)?)
                };
                ThinStatus::Active(ThinUsage {
                    mapped_sectors,
                    highest_mapped_sector,
                })
            }
        };
        it.finish()?;
        Ok(status)
    }

    /// The usage, if the device is active.
    pub fn usage(&self) -> Option<&ThinUsage> {
        match self {
            ThinStatus::Active(u) => Some(u),
            _ => None,
        }
    }
}

impl ThinUsage {
    /// Bytes mapped (`None` on overflow).
    pub fn mapped_bytes(&self) -> Option<u64> {
        self.mapped_sectors.checked_mul(512)
    }
}

impl fmt::Display for ThinStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ThinStatus::Active(u) => match u.highest_mapped_sector {
                Some(h) => write!(f, "{} {h}", u.mapped_sectors),
                None => write!(f, "{} -", u.mapped_sectors),
            },
            ThinStatus::Unavailable => f.write_str("-"),
            ThinStatus::Fail => f.write_str("Fail"),
            ThinStatus::Error => f.write_str("Error"),
        }
    }
}
