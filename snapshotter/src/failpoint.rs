//! Named fail points for crash tests, like the device set's: with the
//! `failpoints` feature, `fail_point!("name")` aborts the process when
//! `DMTHIN_FAILPOINT` equals `name`; without it the macro is empty.

/// Every fail point of the snapshotter, in the order an operation meets them.
#[allow(dead_code)]
pub const FAIL_POINTS: &[&str] = &[
    "snap.create.after_intent",
    "snap.create.after_device",
    "snap.create.after_ready",
    "snap.commit.after_write",
    "snap.remove.after_intent",
    "snap.remove.after_device",
    "snap.template.after_device",
];

/// Aborts the process if `DMTHIN_FAILPOINT` names this point (tests only).
#[cfg(feature = "failpoints")]
macro_rules! fail_point {
    ($name:literal) => {{
        debug_assert!(
            $crate::failpoint::FAIL_POINTS.contains(&$name),
            "unknown fail point {}",
            $name
        );
        if std::env::var("DMTHIN_FAILPOINT").as_deref() == Ok($name) {
            eprintln!("dmthin-snapshotter: fail point {} reached, aborting", $name);
            std::process::abort();
        }
    }};
}

/// Fail points compile to nothing without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
macro_rules! fail_point {
    ($name:literal) => {{}};
}

pub(crate) use fail_point;
