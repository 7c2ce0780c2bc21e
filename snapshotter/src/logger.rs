//! The snapshotter's logging: `dmthin-snapshotter: LEVEL: message` lines on
//! stderr (the library's [`StderrLogger`]). The level comes from
//! `--log-level`, else `DMTHIN_SNAPSHOTTER_LOG`, else `info`.

use dmthin::logger::{parse_level, StderrLogger, LEVEL_NAMES};
use log::LevelFilter;

static LOGGER: StderrLogger = StderrLogger::new("dmthin-snapshotter");

/// The level `flag` (else the environment) names; `info` when neither does.
fn level(flag: Option<&str>, env: Option<&str>) -> Result<LevelFilter, String> {
    match flag.or(env).filter(|s| !s.is_empty()) {
        Some(v) => parse_level(v).ok_or_else(|| format!("log level '{v}' is not {LEVEL_NAMES}")),
        None => Ok(LevelFilter::Info),
    }
}

/// Installs the logger at the level `flag` (or the environment) names.
pub fn init(flag: Option<&str>) -> Result<(), String> {
    let env = std::env::var("DMTHIN_SNAPSHOTTER_LOG").ok();
    let level = level(flag, env.as_deref())?;
    LOGGER.install(level).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_over_the_environment() {
        assert_eq!(level(None, None), Ok(LevelFilter::Info));
        assert_eq!(level(None, Some("")), Ok(LevelFilter::Info));
        assert_eq!(level(None, Some("debug")), Ok(LevelFilter::Debug));
        assert_eq!(level(Some("warning"), Some("debug")), Ok(LevelFilter::Warn));
        assert!(level(Some("loud"), None).unwrap_err().contains("'loud'"));
    }
}
