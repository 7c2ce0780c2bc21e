//! Named fail points for the crash-safety tests; compiled only with the
//! `failpoints` feature.
//!
//! `fail_point!("name")` aborts the process when the environment variable
//! `DMTHIN_FAILPOINT` equals `name`. Without the feature the macro (defined
//! in the parent module then) expands to nothing.

/// Every fail point in the device set, in the order an operation meets them.
pub const FAIL_POINTS: &[&str] = &[
    "init.after_begin",
    "init.after_create_thin",
    "init.after_set_transaction",
    "init.after_mkfs",
    "init.after_write_set",
    "add.after_begin",
    "add.after_suspend_parent",
    "add.after_create_snap",
    "add.after_write_record",
    "add.after_set_transaction",
    "remove.after_deactivate",
    "remove.after_begin",
    "remove.after_delete",
    "remove.after_set_transaction",
    "remove.after_remove_record",
    "activate.after_create",
    "activate.after_load",
    "deactivate.before_remove",
    "mount.after_activate",
    "mount.after_mount",
    "unmount.after_unmount",
    "grow_pool.after_grow_file",
    "grow_pool.after_reload",
    "grow_base.after_write_set",
    "grow_base.after_grow_fs",
];

/// Aborts the process if `DMTHIN_FAILPOINT` names this point (tests only).
macro_rules! fail_point {
    ($name:literal) => {{
        debug_assert!(
            $crate::deviceset::failpoint::FAIL_POINTS.contains(&$name),
            "unknown fail point {}",
            $name
        );
        if std::env::var("DMTHIN_FAILPOINT").as_deref() == Ok($name) {
            eprintln!("dmthin: fail point {} reached, aborting", $name);
            std::process::abort();
        }
    }};
}
pub(crate) use fail_point;
