//! A `log` backend on stderr: `dmthin-snapshotter: LEVEL: message` lines.
//! The level comes from `--log-level`, else `DMTHIN_SNAPSHOTTER_LOG`, else `info`.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;

struct Stderr;

static LOGGER: Stderr = Stderr;

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            let label = match record.level() {
                Level::Error => "error",
                Level::Warn => "warning",
                Level::Info => "info",
                Level::Debug => "debug",
                Level::Trace => "trace",
            };
            let line = format!("dmthin-snapshotter: {label}: {}\n", record.args());
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

/// The level a name asks for.
fn parse_level(value: &str) -> Option<LevelFilter> {
    match value.trim().to_ascii_lowercase().as_str() {
        "error" => Some(LevelFilter::Error),
        "warn" | "warning" => Some(LevelFilter::Warn),
        "info" => Some(LevelFilter::Info),
        "debug" => Some(LevelFilter::Debug),
        "trace" => Some(LevelFilter::Trace),
        _ => None,
    }
}

/// Installs the logger at the level `flag` (or the environment) names.
pub fn init(flag: Option<&str>) -> Result<(), String> {
    let env = std::env::var("DMTHIN_SNAPSHOTTER_LOG").ok();
    let level = match flag.or(env.as_deref()).filter(|s| !s.is_empty()) {
        Some(v) => parse_level(v).ok_or_else(|| format!("unknown log level {v:?}"))?,
        None => LevelFilter::Info,
    };
    log::set_logger(&LOGGER).map_err(|e| e.to_string())?;
    log::set_max_level(level);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn levels_parse() {
        assert_eq!(super::parse_level("DEBUG"), Some(log::LevelFilter::Debug));
        assert_eq!(super::parse_level("warning"), Some(log::LevelFilter::Warn));
        assert_eq!(super::parse_level("loud"), None);
    }
}
