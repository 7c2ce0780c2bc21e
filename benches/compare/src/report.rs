//! Markdown tables of the run that stand on their own: the paired
//! (in-process, alternated) table and the error list.

use std::collections::BTreeMap;

/// Per-operation medians and percentiles of one peer: (peer, median ms,
/// 10th percentile, 90th percentile).
pub type PairedRow = (String, f64, f64, f64);

/// The paired table, one row per workload (nothing when none ran).
pub fn print_paired(paired: &BTreeMap<String, Vec<PairedRow>>, ops: &BTreeMap<String, u32>) {
    if paired.is_empty() {
        return;
    }
    println!(
        "#### Paired: dmthin, floor and devicemapper crate in one process, operations alternated"
    );
    println!();
    println!("Median per-operation time in ms (10th–90th percentile); the ratio is of medians.");
    println!();
    println!("| workload | ops per peer | dmthin | floor | devicemapper crate | floor + dmthin's decoding | dmthin / floor | devicemapper / floor |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (w, rows) in paired {
        let get = |p: &str| rows.iter().find(|r| r.0 == p);
        let cell = |p: &str| {
            get(p).map_or("-".to_string(), |r| {
                format!("{:.3} ({:.3}–{:.3})", r.1, r.2, r.3)
            })
        };
        let ratio = |p: &str| match (get(p), get("floor")) {
            (Some(a), Some(f)) => format!("{:.3}x", a.1 / f.1),
            _ => "-".into(),
        };
        println!(
            "| {w} | {} | {} | {} | {} | {} | {} | {} |",
            ops.get(w.as_str()).copied().unwrap_or(0),
            cell("dmthin"),
            cell("floor"),
            cell("devicemapper"),
            cell("floor+decode"),
            ratio("dmthin"),
            ratio("devicemapper")
        );
    }
    println!();
}

/// Every error the peers reported, if any.
pub fn print_errors<'a>(errors: impl Iterator<Item = &'a String>) {
    let errors: Vec<&String> = errors.collect();
    if !errors.is_empty() {
        println!("Errors:");
        for e in errors {
            println!("- {}", e.replace('\n', " "));
        }
        println!();
    }
}
