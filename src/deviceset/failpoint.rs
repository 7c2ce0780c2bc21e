//! Named fail points for the crash-safety and error-injection tests;
//! compiled only with the `failpoints` feature.
//!
//! `fail_point!("name")` evaluates to a `Result<(), DeviceSetError>`; call
//! sites write `fail_point!("name")?` (or chain it into the step that
//! follows, so that step's undo runs). A point is armed by the environment
//! variable `DMTHIN_FAILPOINT=name` (abort the process there) or
//! `DMTHIN_FAILPOINT=name:error` (the step returns an injected EIO naming
//! the point), or in-process by [`set`], which takes precedence. Without
//! the feature the macro (defined in the parent module then) is `Ok(())`.

use super::error::DeviceSetError;
use std::sync::Mutex;

/// Every fail point in the device set, in the order an operation meets them.
/// The part before the first dot names the operation.
pub const FAIL_POINTS: &[&str] = &[
    "init.after_begin",
    "init.after_create_thin",
    "init.after_set_transaction",
    "init.after_mkfs",
    "init.after_write_set",
    "add.after_intent",
    "add.after_suspend_parent",
    "add.commit_check",
    "add.after_create_snap",
    "add.after_done",
    "add_sized.after_commit",
    "add_sized.mid_grow",
    "add_sized.after_grow_fs",
    "remove.after_deactivate",
    "remove.after_discard",
    "remove.after_intent",
    "remove.commit_check",
    "remove.after_delete",
    "remove.after_done",
    "remove_deferred.after_deactivate",
    "remove_deferred.after_write_record",
    "cleanup_deferred.before_delete",
    "activate.after_create",
    "activate.after_load",
    "deactivate.before_remove",
    "mount.after_activate",
    "mount.after_mount",
    "unmount.after_unmount",
    "set_initialized.before_write",
    "set_initialized.after_write",
    "grow_pool.after_grow_file",
    "grow_pool.after_suspend",
    "grow_pool.after_reload",
    "grow_pool_metadata.after_grow_file",
    "grow_pool_metadata.after_suspend",
    "grow_pool_metadata.after_reload",
    "autoextend.after_intent",
    "autoextend.after_grow_file",
    "autoextend.after_suspend",
    "autoextend.after_reload",
    "grow_base.after_write_set",
    "grow_base.after_grow_fs",
    "fold.after_write_records",
    "fold.after_clear",
    "fold.after_set_transaction",
    "resolve.before_fold",
];

/// What an armed fail point does when reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Abort the process (a crash).
    Abort,
    /// Make the step return [`DeviceSetError::Injected`] (an EIO).
    Error,
}

/// The point armed in-process, if any (see [`set`]).
static ARMED: Mutex<Option<(&'static str, Mode)>> = Mutex::new(None);

/// Arms one fail point in this process (`None` disarms): it overrides
/// `DMTHIN_FAILPOINT` until disarmed. Panics on a name not in [`FAIL_POINTS`].
pub fn set(point: Option<(&str, Mode)>) {
    let armed = point.map(|(name, mode)| {
        let known = FAIL_POINTS
            .iter()
            .find(|p| **p == name)
            .unwrap_or_else(|| panic!("unknown fail point {name}"));
        (*known, mode)
    });
    *ARMED.lock().unwrap_or_else(|e| e.into_inner()) = armed;
}

/// The mode `name` is armed with, if it is: in-process first, else from
/// `DMTHIN_FAILPOINT` (`name` or `name:abort` aborts, `name:error` errs).
fn armed(name: &str) -> Option<Mode> {
    if let Some((point, mode)) = *ARMED.lock().unwrap_or_else(|e| e.into_inner()) {
        return (point == name).then_some(mode);
    }
    let var = std::env::var("DMTHIN_FAILPOINT").ok()?;
    let (point, mode) = var.split_once(':').unwrap_or((&var, "abort"));
    if point != name {
        return None;
    }
    match mode {
        "error" => Some(Mode::Error),
        _ => Some(Mode::Abort),
    }
}

/// Reaching fail point `name`: aborts, or returns the injected error, when armed.
pub(crate) fn reached(name: &'static str) -> Result<(), DeviceSetError> {
    debug_assert!(FAIL_POINTS.contains(&name), "unknown fail point {name}");
    match armed(name) {
        None => Ok(()),
        Some(Mode::Abort) => {
            eprintln!("dmthin: fail point {name} reached, aborting");
            std::process::abort();
        }
        Some(Mode::Error) => {
            log::warn!("fail point {name} reached, returning an injected error");
            Err(DeviceSetError::Injected {
                point: name,
                source: std::io::Error::from_raw_os_error(nix::libc::EIO),
            })
        }
    }
}

/// Evaluates to `Err` (an injected EIO) or aborts when the point is armed, else `Ok(())`.
macro_rules! fail_point {
    ($name:literal) => {
        $crate::deviceset::failpoint::reached($name)
    };
}
pub(crate) use fail_point;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn armed_in_process_point_returns_an_injected_eio_naming_it() {
        set(Some(("set_initialized.after_write", Mode::Error)));
        let hit = fail_point!("set_initialized.after_write");
        let other = fail_point!("set_initialized.before_write");
        set(None);
        let after = fail_point!("set_initialized.after_write");
        match hit {
            Err(e @ DeviceSetError::Injected { point, .. }) => {
                assert_eq!(point, "set_initialized.after_write");
                let msg = e.to_string();
                assert!(msg.contains("set_initialized.after_write"), "{msg}");
                let source = std::error::Error::source(&e).unwrap().to_string();
                assert!(source.contains("Input/output error"), "{source}");
            }
            other => panic!("not injected: {other:?}"),
        }
        assert!(other.is_ok() && after.is_ok());
    }

    #[test]
    #[should_panic(expected = "unknown fail point")]
    fn arming_an_unknown_point_panics() {
        set(Some(("no.such_point", Mode::Abort)));
    }

    #[test]
    fn fail_point_names_are_unique_and_name_their_operation() {
        let mut seen = std::collections::BTreeSet::new();
        for p in FAIL_POINTS {
            assert!(seen.insert(*p), "{p} twice");
            let (op, step) = p.split_once('.').expect("op.step");
            assert!(!op.is_empty() && !step.is_empty(), "{p}");
        }
    }
}
