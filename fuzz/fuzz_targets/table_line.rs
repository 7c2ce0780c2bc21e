//! Table-line parsing from arbitrary bytes.
//!
//! The first byte picks what the rest is fed to: a whole table (one line per
//! text line), or the parameters of one target type. Whatever parses must
//! format back to text that parses to the same value.
#![no_main]

use dmthin::target::{TableLine, Target};
use libfuzzer_sys::fuzz_target;

const TYPES: [&str; 7] = [
    "thin-pool",
    "thin",
    "linear",
    "zero",
    "error",
    "flakey",
    "delay",
];

fn check_target(t: &Target) {
    let params = t.to_string();
    let again = Target::parse(t.target_type(), &params).expect("formatted params must parse");
    assert_eq!(&again, t, "params round trip: {params:?}");
    // A formatted target is always one line of single-space-separated tokens.
    assert!(!params.contains(['\n', '\r', '\0', '\t']), "{params:?}");
    let line = t.to_line(0, 1);
    line.validate().expect("a typed target makes a valid line");
    let text = line.to_string();
    let back: TableLine = text.parse().expect("formatted line must parse");
    assert_eq!(back, line, "line round trip: {text:?}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match TYPES.get(usize::from(sel) % (TYPES.len() + 1)) {
        Some(ty) => {
            if let Ok(t) = Target::parse(ty, &text) {
                check_target(&t);
            }
        }
        None => {
            if let Ok(lines) = TableLine::parse_table(&text) {
                for l in &lines {
                    l.validate().expect("parsed lines are valid");
                    let again: TableLine =
                        l.to_string().parse().expect("formatted line must parse");
                    assert_eq!(&again, l);
                    if let Ok(t) = Target::from_line(l) {
                        check_target(&t);
                    }
                }
            }
        }
    }
});
