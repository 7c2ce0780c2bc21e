//! Named fail points for crash and error tests, like the device set's: with
//! the `failpoints` feature, `fail_point!("name")` evaluates to
//! `Result<(), Error>`. `DMTHIN_FAILPOINT=name` (or `name:abort`) aborts the
//! process there; `name:error` makes it an injected `Internal` error naming
//! the point, which the step that follows handles as its own failure (its
//! undo runs). Host tests arm a point for the calling thread with [`arm`].
//! Without the feature the macro is `Ok(())`.

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

/// What an armed point does.
#[cfg(feature = "failpoints")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Abort the process (a crash).
    Abort,
    /// Return an injected error.
    Error,
}

#[cfg(all(feature = "failpoints", test))]
thread_local! {
    static ARMED: std::cell::Cell<Option<(&'static str, Mode)>> = const { std::cell::Cell::new(None) };
}

/// Arms `point` for the calling thread (`None` disarms); it overrides
/// `DMTHIN_FAILPOINT` there.
#[cfg(all(feature = "failpoints", test))]
pub fn arm(point: Option<(&'static str, Mode)>) {
    if let Some((name, _)) = point {
        assert!(FAIL_POINTS.contains(&name), "unknown fail point {name}");
    }
    ARMED.with(|a| a.set(point));
}

#[cfg(feature = "failpoints")]
fn armed(name: &str) -> Option<Mode> {
    #[cfg(test)]
    if let Some((point, mode)) = ARMED.with(|a| a.get()) {
        return (point == name).then_some(mode);
    }
    let var = std::env::var("DMTHIN_FAILPOINT").ok()?;
    let (point, mode) = var.split_once(':').unwrap_or((&var, "abort"));
    (point == name).then_some(if mode == "error" {
        Mode::Error
    } else {
        Mode::Abort
    })
}

/// Reaching fail point `name`: aborts, or returns the injected error, when armed.
#[cfg(feature = "failpoints")]
pub fn reached(name: &'static str) -> crate::error::Result<()> {
    debug_assert!(FAIL_POINTS.contains(&name), "unknown fail point {name}");
    match armed(name) {
        None => Ok(()),
        Some(Mode::Abort) => {
            eprintln!("dmthin-snapshotter: fail point {name} reached, aborting");
            std::process::abort();
        }
        Some(Mode::Error) => {
            log::warn!("fail point {name} reached, returning an injected error");
            Err(crate::error::Error::internal(format!(
                "injected failure at fail point {name}"
            )))
        }
    }
}

/// `Err` (an injected error) or an abort when the point is armed, else `Ok(())`.
#[cfg(feature = "failpoints")]
macro_rules! fail_point {
    ($name:literal) => {
        $crate::failpoint::reached($name)
    };
}

/// Fail points are `Ok(())` without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
macro_rules! fail_point {
    ($name:literal) => {
        $crate::error::Result::<()>::Ok(())
    };
}

pub(crate) use fail_point;
