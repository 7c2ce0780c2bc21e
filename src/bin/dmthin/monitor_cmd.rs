//! `dmthin monitor`: grows the set's loop-file pool before it fills, in the
//! foreground, logging to stderr (journald-friendly), until SIGTERM or SIGINT.

use crate::args::Spec;
use crate::output::{failed, human};
use crate::{CliError, CliResult};
use dmthin::deviceset::{AutoextendOptions, DeviceSet, Monitor};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use std::ffi::OsString;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

const USAGE: &str = "\
Usage: dmthin monitor [--threshold PCT] [--extend PCT] [--max-size SIZE]
                      [--max-metadata-size SIZE] [--interval SECS]

Watches the set's pool and grows its loop files before they fill: when data
or metadata use reaches the threshold, that file grows by the given
percentage (up to its maximum and the host filesystem's free space) and the
pool takes the new space at once. Woken by the kernel's low-water event on
the pool, with a check every --interval seconds as the fallback. Pools on
block devices are not grown: a warning at the threshold, an error at 95%.

Runs in the foreground and logs to stderr (info level unless DMTHIN_LOG says
otherwise); SIGTERM or SIGINT stops it. The set's lock is taken only while
growing, so other dmthin commands work meanwhile. The options given are
remembered for the set; omitted ones keep the remembered (or default) value.

Options:
  --threshold PCT          grow at this use, 0 to 99 (default 80)
  --extend PCT             grow by this percentage, 1 to 1000 (default 20)
  --max-size SIZE          never grow the data file past SIZE (default: no cap)
  --max-metadata-size SIZE never grow the metadata file past SIZE
                           (default: the ~15.9G a thin-pool can use)
  --interval SECS          fallback check interval (default 10)
";

const SPEC: Spec = Spec {
    switches: &[],
    valued: &[
        "--threshold",
        "--extend",
        "--max-size",
        "--max-metadata-size",
        "--interval",
    ],
    help: "dmthin monitor --help",
    usage: USAGE,
};

/// A whole-number option, named in the error when it is not one.
fn number(p: &crate::args::Parsed, opt: &str) -> Result<Option<u32>, CliError> {
    p.value(opt)
        .map(|v| {
            v.trim()
                .trim_end_matches('%')
                .parse::<u32>()
                .map_err(|_| p.usage(format!("{opt}: '{v}' is not a whole number")))
        })
        .transpose()
}

/// Runs `dmthin monitor` on the set at `root`.
pub(crate) fn run(root: &Path, args: &[OsString], out: &mut dyn Write) -> CliResult {
    let Some(p) = SPEC.parse(args, out)? else {
        return Ok(());
    };
    p.none()?;
    let threshold = number(&p, "--threshold")?;
    let extend = number(&p, "--extend")?;
    let interval = number(&p, "--interval")?.unwrap_or(10);
    if interval == 0 {
        return Err(p.usage("--interval: must be at least 1 second".into()));
    }
    let max_data = p.size("--max-size")?;
    let max_meta = p.size("--max-metadata-size")?;
    // Out-of-range percentages are usage errors, before the set is looked at.
    let d = AutoextendOptions::default();
    AutoextendOptions {
        threshold_percent: threshold.unwrap_or(d.threshold_percent),
        extend_percent: extend.unwrap_or(d.extend_percent),
        ..d
    }
    .validate()
    .map_err(|e| p.usage(e.to_string()))?;
    let Some(mut set_options) = DeviceSet::recorded_options(root).map_err(failed)? else {
        return Err(CliError::Failed(format!(
            "no device set at {}; run 'dmthin --root {} init' first",
            root.display(),
            root.display()
        )));
    };
    set_options.udev_sync = std::env::var_os("DMTHIN_UDEV_SYNC").is_none_or(|v| v != "0");
    if std::env::var_os("DMTHIN_LOG").is_none() {
        log::set_max_level(log::LevelFilter::Info);
    }
    // SIGTERM and SIGINT arrive on a signalfd the monitor polls beside the
    // control fd: blocked first, so neither kills the process mid-growth.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    mask.thread_block().map_err(failed)?;
    let signals = SignalFd::new(&mask).map_err(failed)?;
    let given = threshold.is_some() || extend.is_some() || max_data.is_some() || max_meta.is_some();
    let options = if given {
        let set = DeviceSet::open(root, set_options.clone()).map_err(failed)?;
        let mut o = set
            .autoextend_options()
            .map_err(failed)?
            .unwrap_or_default();
        drop(set);
        o.threshold_percent = threshold.unwrap_or(o.threshold_percent);
        o.extend_percent = extend.unwrap_or(o.extend_percent);
        o.max_data_size = max_data.or(o.max_data_size);
        o.max_metadata_size = max_meta.or(o.max_metadata_size);
        o.validate().map_err(failed)?;
        Some(o)
    } else {
        None
    };
    let mut monitor = Monitor::open(root, set_options, options).map_err(failed)?;
    monitor.set_fallback_interval(Duration::from_secs(interval.into()));
    let o = *monitor.options();
    let cap = |c: Option<u64>| c.map_or("none".to_string(), human);
    log::info!(
        "monitoring {}: grow by {}% at {}% use; data cap {}, metadata cap {}; fallback check every {interval} s",
        root.display(),
        o.extend_percent,
        o.threshold_percent,
        cap(o.max_data_size),
        cap(o.max_metadata_size)
    );
    monitor.run(signals.as_fd()).map_err(failed)?;
    if let Ok(Some(sig)) = signals.read_signal() {
        log::info!("stopped by signal {}", sig.ssi_signo);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage_error(args: &[&str]) -> String {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let root = Path::new("/nonexistent/dmthin-monitor-test");
        match run(root, &args, &mut Vec::new()) {
            Err(CliError::Usage(msg, "dmthin monitor --help")) => msg,
            other => panic!("not a usage error: {other:?}"),
        }
    }

    #[test]
    fn bad_values_are_usage_errors_naming_the_option() {
        assert!(usage_error(&["--threshold", "high"]).starts_with("--threshold:"));
        assert!(usage_error(&["--threshold", "100"]).contains("autoextend threshold"));
        assert!(usage_error(&["--extend", "0"]).contains("autoextend percent"));
        assert!(usage_error(&["--max-size", "lots"]).starts_with("--max-size:"));
        assert!(usage_error(&["--interval", "0"]).starts_with("--interval:"));
        assert_eq!(usage_error(&["extra"]), "unexpected argument 'extra'");
    }

    #[test]
    fn help_and_a_missing_set() {
        let mut out = Vec::new();
        run(Path::new("/"), &[OsString::from("--help")], &mut out).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .starts_with("Usage: dmthin monitor"));
        let root = Path::new("/nonexistent/dmthin-monitor-test");
        match run(root, &[OsString::from("--threshold=70%")], &mut Vec::new()) {
            Err(CliError::Failed(msg)) => assert!(msg.starts_with("no device set at"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }
}
