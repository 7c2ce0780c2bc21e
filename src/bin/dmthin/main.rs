//! The `dmthin` command-line tool.
//!
//! `run` dispatches the top-level command to [`loop_cmds`] or [`set_cmds`];
//! each command parses its own arguments ([`args`]) and writes what it prints
//! to the `out` it is given ([`output`]), so a closed stdout is an error like
//! any other instead of a panic. Warnings from the library reach stderr
//! through [`logger`].
//!
//! Exit status: 0 success, 1 the operation failed, 2 bad usage, 141 stdout
//! was closed early (a reader such as `head` went away; 128 + SIGPIPE, what
//! a shell reports for a command killed by SIGPIPE).

mod args;
mod logger;
mod look;
mod loop_cmds;
mod monitor_cmd;
mod output;
mod set_cmds;
mod usage_out;

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::PathBuf;

const VERSION: &str = env!("CARGO_PKG_VERSION");

const USAGE: &str = "\
Usage: dmthin [--root DIR] <COMMAND> [ARGS...]

Device set (a thin pool, a base filesystem, one snapshot per id):
  init       Create the set (or check an existing one)
  create     Snapshot the base or another device under a new id
  remove     Delete a device from the pool
  activate   Activate a device
  deactivate Deactivate a device
  mount      Mount a device (activating it)
  umount     Unmount a device (and deactivate it)
  list       List the devices
  status     Pool usage and mode
  usage      Space each device uses: mapped, exclusive, shared
  grow-pool  Grow the pool's data space
  trim       Run fstrim on the mounted devices: the host gets space back
  monitor    Grow a loop-file pool before it fills (foreground, until SIGTERM)
  shutdown   Unmount, deactivate everything and remove the pool

Loop devices:
  loop       Attach, detach, list and find loop devices

Options:
  --root DIR     The device set's directory ($DMTHIN_ROOT, else /var/lib/dmthin)
  -h, --help     Show this help (or a command's, after its name)
  -V, --version  Show the version

Environment:
  DMTHIN_ROOT         Default for --root
  DMTHIN_UDEV_SYNC=0  With udev running, do not wait for it: udev's dm rules
                      skip dmthin's devices and dmthin makes /dev/mapper nodes
                      itself (faster; no /dev/disk/by-* links)
  DMTHIN_LOG=LEVEL    Which of the library's messages reach stderr: error,
                      warn (the default: includes repairs after a crash and
                      damaged records skipped), info (adds progress and
                      fallbacks) or debug
";

/// Why a command stopped.
#[derive(Debug)]
enum CliError {
    /// Bad command line: message, and the help command to suggest.
    Usage(String, &'static str),
    /// The operation failed.
    Failed(String),
    /// Nothing to report, but exit 1 (e.g. `find` found nothing).
    Silent,
    /// Stdout was closed (EPIPE): stop quietly, exit 141.
    BrokenPipe,
}

type CliResult = Result<(), CliError>;

/// Exit status for a closed stdout: 128 + SIGPIPE (13).
const EXIT_BROKEN_PIPE: i32 = 141;

fn main() {
    logger::init();
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let result = run(&args, &mut out).and_then(|()| Ok(out.flush()?));
    report(&result);
    std::process::exit(exit_code(&result));
}

/// Reports how a command ended on stderr (a closed stdout ends quietly).
fn report(result: &CliResult) {
    match result {
        Err(CliError::Usage(msg, help)) => {
            output::errln(format_args!("dmthin: {msg}\nTry '{help}'."));
        }
        Err(CliError::Failed(msg)) => output::errln(format_args!("dmthin: {msg}")),
        Ok(()) | Err(CliError::Silent | CliError::BrokenPipe) => {}
    }
}

fn exit_code(result: &CliResult) -> i32 {
    match result {
        Ok(()) => 0,
        Err(CliError::Usage(..)) => 2,
        Err(CliError::Failed(_) | CliError::Silent) => 1,
        Err(CliError::BrokenPipe) => EXIT_BROKEN_PIPE,
    }
}

fn run(args: &[OsString], out: &mut dyn Write) -> CliResult {
    let mut args = args;
    let mut root = std::env::var_os("DMTHIN_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(set_cmds::DEFAULT_ROOT));
    while let Some(first) = args.first().and_then(|a| a.to_str()) {
        if first == "--root" {
            let Some(dir) = args.get(1) else {
                return Err(CliError::Usage(
                    "--root needs a directory".into(),
                    "dmthin --help",
                ));
            };
            root = PathBuf::from(dir);
            args = &args[2..];
        } else if let Some(dir) = first.strip_prefix("--root=") {
            root = PathBuf::from(dir);
            args = &args[1..];
        } else {
            break;
        }
    }
    let Some(cmd) = args.first() else {
        output::err(format_args!("{USAGE}"));
        return Err(CliError::Usage("missing command".into(), "dmthin --help"));
    };
    let rest = &args[1..];
    match cmd.to_str() {
        Some("-h" | "--help" | "help") => Ok(write!(out, "{USAGE}")?),
        Some("-V" | "--version") => Ok(writeln!(out, "dmthin {VERSION}")?),
        Some("loop") => loop_cmds::run(rest, out),
        Some("monitor") => monitor_cmd::run(&root, rest, out),
        _ => set_cmds::run(root, cmd, rest, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(&Ok(())), 0);
        assert_eq!(exit_code(&Err(CliError::Usage("m".into(), "h"))), 2);
        assert_eq!(exit_code(&Err(CliError::Failed("m".into()))), 1);
        assert_eq!(exit_code(&Err(CliError::Silent)), 1);
        assert_eq!(exit_code(&Err(CliError::BrokenPipe)), EXIT_BROKEN_PIPE);
    }

    #[test]
    fn help_and_version_go_to_out() {
        let mut out = Vec::new();
        run(&[OsString::from("--help")], &mut out).unwrap();
        assert_eq!(out, USAGE.as_bytes());
        let mut out = Vec::new();
        run(&[OsString::from("-V")], &mut out).unwrap();
        assert_eq!(out, format!("dmthin {VERSION}\n").as_bytes());
        let mut out = Vec::new();
        let bogus = run(&[OsString::from("bogus")], &mut out);
        assert!(
            matches!(bogus, Err(CliError::Usage(m, "dmthin --help")) if m == "unknown command 'bogus'")
        );
    }
}
