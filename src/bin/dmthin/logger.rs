//! The CLI's logging: the library's messages on stderr as
//! `dmthin: warning: ...` lines (the library's [`StderrLogger`]).
//!
//! The level comes from `DMTHIN_LOG` (`error`, `warn`, `info`, `debug` or
//! `trace`). The default, `warn`, shows what a user must know about: repairs
//! after an interrupted operation ("recovering interrupted ...", "removing
//! half-made device ..."), records skipped as damaged, a pool that needs a
//! check. `info` adds progress (printed by the CLI's own progress callback
//! below that level) and fallbacks such as mounting without discard; `debug`
//! adds the library's internal detail.

use dmthin::logger::{parse_level, StderrLogger, LEVEL_NAMES};
use log::LevelFilter;

/// The level when `DMTHIN_LOG` is unset or empty.
const DEFAULT: LevelFilter = LevelFilter::Warn;

static LOGGER: StderrLogger = StderrLogger::new("dmthin");

/// Installs the logger at the level `DMTHIN_LOG` asks for.
pub(crate) fn init() {
    let value = std::env::var("DMTHIN_LOG").unwrap_or_default();
    let level = parse_level(&value);
    // Only fails when a logger is installed already, which keeps working.
    let _ = LOGGER.install(level.unwrap_or(DEFAULT));
    if level.is_none() && !value.trim().is_empty() {
        log::warn!("DMTHIN_LOG: '{value}' is not {LEVEL_NAMES}; using warn");
    }
}
