//! The CLI's `log` backend: the library's messages on stderr as
//! `dmthin: warning: ...` lines.
//!
//! The level comes from `DMTHIN_LOG` (`error`, `warn`, `info` or `debug`).
//! The default, `warn`, shows what a user must know about: repairs after an
//! interrupted operation ("recovering interrupted ...", "removing half-made
//! device ..."), records skipped as damaged, a pool that needs a check.
//! `info` adds progress (printed by the CLI's own progress callback below
//! that level) and fallbacks such as mounting without discard; `debug` adds
//! the library's internal detail.

use std::io::{self, Write};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// The level when `DMTHIN_LOG` is unset or empty.
const DEFAULT: LevelFilter = LevelFilter::Warn;

struct StderrLogger;

static LOGGER: StderrLogger = StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            // Nowhere to report a failed write to stderr.
            let _ = io::stderr().write_all(line(record.level(), record.args()).as_bytes());
        }
    }

    fn flush(&self) {}
}

/// One message as written to stderr.
fn line(level: Level, args: &std::fmt::Arguments) -> String {
    let label = match level {
        Level::Error => "error",
        Level::Warn => "warning",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    };
    format!("dmthin: {label}: {args}\n")
}

/// The level `DMTHIN_LOG=value` asks for; `None` for an unknown value.
fn parse_level(value: &str) -> Option<LevelFilter> {
    [
        ("error", LevelFilter::Error),
        ("warn", LevelFilter::Warn),
        ("info", LevelFilter::Info),
        ("debug", LevelFilter::Debug),
    ]
    .into_iter()
    .find(|(name, _)| value.trim().eq_ignore_ascii_case(name))
    .map(|(_, level)| level)
}

/// Installs the logger at the level `DMTHIN_LOG` asks for.
pub(crate) fn init() {
    let value = std::env::var("DMTHIN_LOG").unwrap_or_default();
    let level = parse_level(&value);
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level.unwrap_or(DEFAULT));
    }
    if level.is_none() && !value.trim().is_empty() {
        log::warn!("DMTHIN_LOG: '{value}' is not error, warn, info or debug; using warn");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(parse_level("error"), Some(LevelFilter::Error));
        assert_eq!(parse_level("warn"), Some(LevelFilter::Warn));
        assert_eq!(parse_level(" INFO "), Some(LevelFilter::Info));
        assert_eq!(parse_level("debug"), Some(LevelFilter::Debug));
        assert_eq!(parse_level("loud"), None);
        assert_eq!(parse_level(""), None);
    }

    #[test]
    fn lines() {
        assert_eq!(
            line(
                Level::Warn,
                &format_args!("skipping damaged record {}", "x.json")
            ),
            "dmthin: warning: skipping damaged record x.json\n"
        );
        assert_eq!(line(Level::Error, &format_args!("e")), "dmthin: error: e\n");
        assert_eq!(line(Level::Info, &format_args!("i")), "dmthin: info: i\n");
    }
}
