//! `dmthin usage`: space per device, largest exclusive use first.

use std::io::Write;

use dmthin::deviceset::{DeviceUsage, SetUsage};

use crate::output::{human, print_json};
use crate::{CliError, CliResult};

/// The rows `ids` name (every device, the base and untracked thin devices
/// when empty), largest exclusive use first.
pub(crate) fn usage_rows<'a>(
    u: &'a SetUsage,
    ids: &[String],
) -> Result<Vec<&'a DeviceUsage>, CliError> {
    let all: Vec<&DeviceUsage> = std::iter::once(&u.base)
        .chain(&u.devices)
        .chain(&u.untracked)
        .collect();
    let mut rows = if ids.is_empty() {
        all
    } else {
        ids.iter()
            .map(|id| {
                all.iter()
                    .find(|d| d.id == *id)
                    .copied()
                    .ok_or_else(|| CliError::Failed(format!("no device {id:?} in the set")))
            })
            .collect::<Result<_, _>>()?
    };
    rows.sort_by(|a, b| {
        (b.space.exclusive_bytes)
            .cmp(&a.space.exclusive_bytes)
            .then_with(|| a.id.cmp(&b.id))
    });
    Ok(rows)
}

/// `dmthin usage [ID...] [--json]`: with IDs, JSON is the list of their
/// rows; without, the whole [`SetUsage`].
pub(crate) fn print_usage(
    out: &mut dyn Write,
    u: &SetUsage,
    ids: &[String],
    json: bool,
) -> CliResult {
    let rows = usage_rows(u, ids)?;
    if json {
        return if ids.is_empty() {
            print_json(out, u)
        } else {
            print_json(out, &rows)
        };
    }
    let w = rows.iter().map(|d| d.id.len()).max().unwrap_or(0).max(2);
    writeln!(
        out,
        "{:<w$} {:>8} {:>10} {:>10} {:>10}",
        "ID", "THIN", "MAPPED", "EXCLUSIVE", "SHARED"
    )?;
    for d in &rows {
        writeln!(
            out,
            "{:<w$} {:>8} {:>10} {:>10} {:>10}",
            d.id,
            d.space.thin_id,
            human(d.space.mapped_bytes),
            human(d.space.exclusive_bytes),
            human(d.space.shared_bytes)
        )?;
    }
    writeln!(
        out,
        "Pool: {} mapped, {} exclusive, {} shared; {} allocated but unmapped; {} of {} allocated{}",
        human(u.mapped_bytes),
        human(u.exclusive_bytes),
        human(u.shared_bytes),
        human(u.unmapped_allocated_bytes),
        human(u.allocated_bytes),
        human(u.data_total_bytes),
        if u.from_snapshot {
            ""
        } else {
            " (read-only pool, read live)"
        }
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmthin::thinmeta::ThinUsage;

    fn dev(id: &str, thin_id: u32, mapped: u64, exclusive: u64) -> DeviceUsage {
        DeviceUsage {
            id: id.into(),
            space: ThinUsage {
                thin_id,
                mapped_blocks: mapped >> 16,
                exclusive_blocks: exclusive >> 16,
                mapped_bytes: mapped,
                exclusive_bytes: exclusive,
                shared_bytes: mapped - exclusive,
            },
        }
    }

    fn sample() -> SetUsage {
        SetUsage {
            base: dev("base", 0, 4 << 20, 1 << 20),
            devices: vec![dev("a", 1, 4 << 20, 0), dev("b", 2, 8 << 20, 5 << 20)],
            untracked: vec![dev("#9", 9, 64 << 10, 64 << 10)],
            data_block_size: 64 << 10,
            data_total_bytes: 1 << 30,
            allocated_bytes: 10 << 20,
            mapped_bytes: 16 << 20,
            exclusive_bytes: 6 << 20,
            shared_bytes: 10 << 20,
            unmapped_allocated_bytes: 0,
            from_snapshot: true,
            transaction_id: 3,
        }
    }

    #[test]
    fn rows_sort_by_exclusive_bytes_and_pick_ids() {
        let u = sample();
        let ids = |ids: &[&str]| {
            let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
            usage_rows(&u, &ids).map(|r| r.iter().map(|d| d.id.clone()).collect::<Vec<_>>())
        };
        assert_eq!(ids(&[]).unwrap(), ["b", "base", "#9", "a"]);
        assert_eq!(ids(&["a", "base"]).unwrap(), ["base", "a"]);
        assert!(matches!(ids(&["nope"]), Err(CliError::Failed(m)) if m.contains("nope")));
    }

    #[test]
    fn table_has_human_sizes_and_a_pool_line() {
        let mut out = Vec::new();
        print_usage(&mut out, &sample(), &[], false).unwrap();
        let s = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 6, "{s}");
        assert!(
            lines[0].starts_with("ID ") && lines[0].ends_with("SHARED"),
            "{s}"
        );
        assert!(
            lines[1].starts_with("b ") && lines[1].contains("5.0 MiB"),
            "{s}"
        );
        assert!(lines[5].starts_with("Pool: 16.0 MiB mapped"), "{s}");
        let mut out = Vec::new();
        print_usage(&mut out, &sample(), &["a".into()], true).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[0]["id"], "a");
        assert_eq!(v[0]["shared_bytes"], 4 << 20);
        let keys: Vec<&String> = v[0].as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "exclusive_bytes",
                "id",
                "mapped_bytes",
                "shared_bytes",
                "thin_id"
            ],
            "the same fields as ever, no block counts"
        );
        let text = String::from_utf8(out).unwrap();
        let at = |key: &str| text.find(&format!("\"{key}\"")).unwrap();
        assert!(at("id") < at("thin_id") && at("thin_id") < at("mapped_bytes"));
    }
}
