//! A `log` backend on stderr, for the programs built on this crate (the
//! `dmthin` CLI and the snapshotter): each message one line,
//! `PROGRAM: LEVEL: message`, with `warning` for [`Level::Warn`].
//!
//! The library itself only logs through `log`; it never installs a logger.

use std::fmt::Arguments;
use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record, SetLoggerError};

/// The level names [`parse_level`] takes, for messages about a bad one.
pub const LEVEL_NAMES: &str = "error, warn, info, debug or trace";

/// The level `name` asks for: `error`, `warn` (or `warning`), `info`,
/// `debug` or `trace`, in any case, blanks around it ignored; `None` for
/// anything else.
pub fn parse_level(name: &str) -> Option<LevelFilter> {
    match name.trim().to_ascii_lowercase().as_str() {
        "error" => Some(LevelFilter::Error),
        "warn" | "warning" => Some(LevelFilter::Warn),
        "info" => Some(LevelFilter::Info),
        "debug" => Some(LevelFilter::Debug),
        "trace" => Some(LevelFilter::Trace),
        _ => None,
    }
}

/// Writes each message at or above the `log` crate's maximum level to
/// stderr as one line naming the program.
///
/// ```no_run
/// use dmthin::logger::StderrLogger;
/// static LOGGER: StderrLogger = StderrLogger::new("my-tool");
/// LOGGER.install(log::LevelFilter::Info).expect("no other logger yet");
/// log::warn!("disk nearly full"); // "my-tool: warning: disk nearly full"
/// ```
#[derive(Debug)]
pub struct StderrLogger {
    program: &'static str,
}

impl StderrLogger {
    /// A logger whose lines start with `program`.
    pub const fn new(program: &'static str) -> StderrLogger {
        StderrLogger { program }
    }

    /// Makes this the process's logger, showing `level` and above. Fails
    /// when a logger was installed already.
    pub fn install(&'static self, level: LevelFilter) -> Result<(), SetLoggerError> {
        log::set_logger(self)?;
        log::set_max_level(level);
        Ok(())
    }

    /// One message as written to stderr, newline included.
    fn line(&self, level: Level, args: &Arguments) -> String {
        let label = match level {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        };
        format!("{}: {label}: {args}\n", self.program)
    }
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            // Nowhere to report a failed write to stderr.
            let line = self.line(record.level(), record.args());
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_names() {
        assert_eq!(parse_level("error"), Some(LevelFilter::Error));
        assert_eq!(parse_level("warn"), Some(LevelFilter::Warn));
        assert_eq!(parse_level("warning"), Some(LevelFilter::Warn));
        assert_eq!(parse_level(" INFO "), Some(LevelFilter::Info));
        assert_eq!(parse_level("Debug"), Some(LevelFilter::Debug));
        assert_eq!(parse_level("trace"), Some(LevelFilter::Trace));
        assert_eq!(parse_level("loud"), None);
        assert_eq!(parse_level(""), None);
    }

    #[test]
    fn lines_name_the_program_and_level() {
        let l = StderrLogger::new("dmthin");
        assert_eq!(
            l.line(Level::Warn, &format_args!("skipping {}", "x.json")),
            "dmthin: warning: skipping x.json\n"
        );
        assert_eq!(
            l.line(Level::Error, &format_args!("e")),
            "dmthin: error: e\n"
        );
        let s = StderrLogger::new("dmthin-snapshotter");
        assert_eq!(
            s.line(Level::Info, &format_args!("i")),
            "dmthin-snapshotter: info: i\n"
        );
    }
}
