//! The `dmthin` command-line tool.
//!
//! Each top-level command has its own `*_cmd` function taking the arguments
//! after its name; `run` dispatches. Exit status: 0 success, 1 the operation
//! failed, 2 bad usage.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::PathBuf;

use dmthin::loopdev::{self, AttachOptions, LoopStatus};

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
  grow-pool  Grow the pool's data space
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
";

#[path = "set_cmds.rs"]
mod set_cli;

const LOOP_USAGE: &str = "\
Usage: dmthin loop <SUBCOMMAND> [ARGS...]

Subcommands:
  attach FILE [OPTIONS]  Bind FILE to a free loop device; prints the device
  detach DEV...          Detach loop devices
  list [--json]          List bound loop devices and their backing files
  find FILE [--json]     Loop devices bound to FILE (matched by device and inode)

Run 'dmthin loop SUBCOMMAND --help' for a subcommand's options.
";

const ATTACH_USAGE: &str = "\
Usage: dmthin loop attach FILE [OPTIONS]

Bind FILE to a free loop device and print the device path.

Options:
  --read-only        Bind read-only (needed for files that cannot be written)
  --autoclear        Detach on the last close. This command's own handle closes
                     when it exits, so the device stays only while another user
                     (a mount, a device-mapper table) holds it open.
  --direct-io        Use direct I/O where the filesystem allows it (a warning
                     says when it does not)
  --partscan         Scan the device for partitions
  --block-size N     Logical block size (512, 1024, 2048, 4096, ...)
  --offset N         Start N bytes into FILE
  --size-limit N     Make the device at most N bytes
  -h, --help         Show this help

Sizes take an optional K, M, G or T suffix (powers of 1024).
";

const DETACH_USAGE: &str = "\
Usage: dmthin loop detach DEV...

Detach each loop device. A device that other users still hold open is
detached by the kernel when they close it; this is reported as busy.

Options:
  -h, --help  Show this help
";

const LIST_USAGE: &str = "\
Usage: dmthin loop list [--json]

List bound loop devices with their backing files.

Options:
  --json      Print a JSON array
  -h, --help  Show this help
";

const FIND_USAGE: &str = "\
Usage: dmthin loop find FILE [--json]

Print the loop devices bound to FILE, matched by device and inode (so any name
of the file works). Exits 1 when there are none.

Options:
  --json      Print a JSON array
  -h, --help  Show this help
";

/// Why a command stopped.
enum CliError {
    /// Bad command line: message, and the help command to suggest.
    Usage(String, &'static str),
    /// The operation failed.
    Failed(String),
    /// Nothing to report, but exit 1 (e.g. `find` found nothing).
    Silent,
}

type CliResult = Result<(), CliError>;

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let code = match run(&args) {
        Ok(()) => 0,
        Err(CliError::Usage(msg, help)) => {
            eprintln!("dmthin: {msg}\nTry '{help}'.");
            2
        }
        Err(CliError::Failed(msg)) => {
            eprintln!("dmthin: {msg}");
            1
        }
        Err(CliError::Silent) => 1,
    };
    std::process::exit(code);
}

fn run(args: &[OsString]) -> CliResult {
    let mut args = args;
    let mut root = std::env::var_os("DMTHIN_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(set_cli::DEFAULT_ROOT));
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
        eprint!("{USAGE}");
        return Err(CliError::Usage("missing command".into(), "dmthin --help"));
    };
    let rest = &args[1..];
    match cmd.to_str() {
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            Ok(())
        }
        Some("-V" | "--version") => {
            println!("dmthin {VERSION}");
            Ok(())
        }
        Some("loop") => loop_cmd(rest),
        Some(name) if set_cli::is_set_command(name) => set_cli::set_cmd(root, name, rest),
        _ => Err(CliError::Usage(
            format!("unknown command '{}'", cmd.to_string_lossy()),
            "dmthin --help",
        )),
    }
}

// ---------------------------------------------------------------- arguments

/// A parsed command line: positionals, switches that were given, and options
/// with their values.
struct Parsed {
    positionals: Vec<OsString>,
    switches: HashSet<&'static str>,
    values: HashMap<&'static str, OsString>,
    help: bool,
}

impl Parsed {
    fn has(&self, switch: &str) -> bool {
        self.switches.contains(switch)
    }

    fn size(&self, opt: &'static str, help: &'static str) -> Result<Option<u64>, CliError> {
        self.values
            .get(opt)
            .map(|v| {
                let s = v.to_string_lossy();
                parse_size(&s)
                    .ok_or_else(|| CliError::Usage(format!("{opt}: '{s}' is not a size"), help))
            })
            .transpose()
    }
}

/// Parse `args` against the allowed `switches` (`--name`) and `valued`
/// options (`--name VALUE` or `--name=VALUE`). `--` ends the options.
fn parse_args(
    args: &[OsString],
    switches: &[&'static str],
    valued: &[&'static str],
    help: &'static str,
) -> Result<Parsed, CliError> {
    let mut p = Parsed {
        positionals: Vec::new(),
        switches: HashSet::new(),
        values: HashMap::new(),
        help: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let Some(s) = arg.to_str().filter(|s| s.starts_with('-') && s.len() > 1) else {
            p.positionals.push(arg.clone());
            continue;
        };
        if s == "--" {
            p.positionals.extend(it.cloned());
            break;
        }
        if s == "-h" || s == "--help" {
            p.help = true;
            continue;
        }
        let (name, inline) = match s.split_once('=') {
            Some((n, v)) => (n, Some(OsString::from(v))),
            None => (s, None),
        };
        if let Some(&sw) = switches.iter().find(|&&sw| sw == name) {
            if inline.is_some() {
                return Err(CliError::Usage(format!("{sw} takes no value"), help));
            }
            p.switches.insert(sw);
        } else if let Some(&opt) = valued.iter().find(|&&o| o == name) {
            let value = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| CliError::Usage(format!("{opt} needs a value"), help))?,
            };
            p.values.insert(opt, value);
        } else {
            return Err(CliError::Usage(format!("unknown option '{s}'"), help));
        }
    }
    Ok(p)
}

/// `123`, `64K`, `10M`, `2G`, `1T` (powers of 1024; a trailing `iB`/`B` is allowed).
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s
        .strip_suffix("iB")
        .or_else(|| s.strip_suffix('B'))
        .unwrap_or(s);
    let (num, shift) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 10),
        'm' | 'M' => (&s[..s.len() - 1], 20),
        'g' | 'G' => (&s[..s.len() - 1], 30),
        't' | 'T' => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    num.parse::<u64>().ok()?.checked_mul(1u64 << shift)
}

fn one_positional(p: &Parsed, what: &str, help: &'static str) -> Result<PathBuf, CliError> {
    match p.positionals.as_slice() {
        [one] => Ok(PathBuf::from(one)),
        [] => Err(CliError::Usage(format!("missing {what}"), help)),
        [_, extra, ..] => Err(CliError::Usage(
            format!("unexpected argument '{}'", extra.to_string_lossy()),
            help,
        )),
    }
}

fn no_positionals(p: &Parsed, help: &'static str) -> CliResult {
    match p.positionals.first() {
        None => Ok(()),
        Some(a) => Err(CliError::Usage(
            format!("unexpected argument '{}'", a.to_string_lossy()),
            help,
        )),
    }
}

fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::Failed(e.to_string())
}

fn print_json<T: serde::Serialize>(value: &T) -> CliResult {
    let s = serde_json::to_string_pretty(value).map_err(failed)?;
    println!("{s}");
    Ok(())
}

// ---------------------------------------------------------------- dmthin loop

fn loop_cmd(args: &[OsString]) -> CliResult {
    const HELP: &str = "dmthin loop --help";
    let Some(sub) = args.first() else {
        eprint!("{LOOP_USAGE}");
        return Err(CliError::Usage("missing subcommand".into(), HELP));
    };
    let rest = &args[1..];
    match sub.to_str() {
        Some("-h" | "--help" | "help") => {
            print!("{LOOP_USAGE}");
            Ok(())
        }
        Some("attach") => loop_attach(rest),
        Some("detach") => loop_detach(rest),
        Some("list") => loop_list(rest),
        Some("find") => loop_find(rest),
        _ => Err(CliError::Usage(
            format!("unknown loop subcommand '{}'", sub.to_string_lossy()),
            HELP,
        )),
    }
}

fn loop_attach(args: &[OsString]) -> CliResult {
    const HELP: &str = "dmthin loop attach --help";
    let p = parse_args(
        args,
        &["--read-only", "--autoclear", "--direct-io", "--partscan"],
        &["--block-size", "--offset", "--size-limit"],
        HELP,
    )?;
    if p.help {
        print!("{ATTACH_USAGE}");
        return Ok(());
    }
    let file = one_positional(&p, "FILE", HELP)?;
    let mut opts = AttachOptions::new()
        .read_only(p.has("--read-only"))
        .autoclear(p.has("--autoclear"))
        .direct_io(p.has("--direct-io"))
        .partscan(p.has("--partscan"))
        .offset(p.size("--offset", HELP)?.unwrap_or(0))
        .size_limit(p.size("--size-limit", HELP)?.unwrap_or(0));
    if let Some(bs) = p.size("--block-size", HELP)? {
        let bs = u32::try_from(bs)
            .map_err(|_| CliError::Usage(format!("--block-size {bs} is too large"), HELP))?;
        opts = opts.block_size(bs);
    }
    let dev = loopdev::attach(&file, &opts).map_err(failed)?;
    if opts.direct_io && !dev.direct_io() {
        eprintln!(
            "dmthin: warning: direct I/O is not available for {}; {} uses buffered I/O",
            file.display(),
            dev.path().display()
        );
    }
    println!("{}", dev.path().display());
    Ok(())
}

fn loop_detach(args: &[OsString]) -> CliResult {
    const HELP: &str = "dmthin loop detach --help";
    let p = parse_args(args, &[], &[], HELP)?;
    if p.help {
        print!("{DETACH_USAGE}");
        return Ok(());
    }
    if p.positionals.is_empty() {
        return Err(CliError::Usage("missing DEV".into(), HELP));
    }
    let mut first_error = None;
    for dev in &p.positionals {
        if let Err(e) = loopdev::detach(PathBuf::from(dev)) {
            if first_error.is_some() {
                eprintln!("dmthin: {e}");
            } else {
                first_error = Some(failed(e));
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn loop_list(args: &[OsString]) -> CliResult {
    const HELP: &str = "dmthin loop list --help";
    let p = parse_args(args, &["--json"], &[], HELP)?;
    if p.help {
        print!("{LIST_USAGE}");
        return Ok(());
    }
    no_positionals(&p, HELP)?;
    let all = loopdev::list().map_err(failed)?;
    if p.has("--json") {
        print_json(&all)
    } else {
        print_table(&all);
        Ok(())
    }
}

fn loop_find(args: &[OsString]) -> CliResult {
    const HELP: &str = "dmthin loop find --help";
    let p = parse_args(args, &["--json"], &[], HELP)?;
    if p.help {
        print!("{FIND_USAGE}");
        return Ok(());
    }
    let file = one_positional(&p, "FILE", HELP)?;
    let found = loopdev::find_all_by_file(&file).map_err(failed)?;
    if p.has("--json") {
        print_json(&found)?;
    } else {
        for s in &found {
            println!("{}", s.device.display());
        }
    }
    if found.is_empty() {
        Err(CliError::Silent)
    } else {
        Ok(())
    }
}

fn print_table(all: &[LoopStatus]) {
    let yes = |b: bool| if b { "1" } else { "0" };
    let rows: Vec<[String; 7]> = all
        .iter()
        .map(|s| {
            [
                s.device.display().to_string(),
                s.offset.to_string(),
                s.size_limit.to_string(),
                yes(s.read_only()).to_string(),
                yes(s.autoclear()).to_string(),
                yes(s.direct_io()).to_string(),
                s.backing_file.display().to_string(),
            ]
        })
        .collect();
    let header = [
        "DEVICE",
        "OFFSET",
        "SIZELIMIT",
        "RO",
        "AUTOCLEAR",
        "DIO",
        "BACKING-FILE",
    ];
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: [&str; 7]| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == 6 {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$} ", w = widths[i]));
            }
        }
        println!("{out}");
    };
    line(header);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5], &r[6]]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("64K"), Some(64 << 10));
        assert_eq!(parse_size("10M"), Some(10 << 20));
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("1t"), Some(1 << 40));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("99999999999T"), None);
    }

    #[test]
    fn args() {
        let p = parse_args(
            &os(&["f", "--ro", "--bs=512", "--off", "1M", "--", "--x"]),
            &["--ro"],
            &["--bs", "--off"],
            "h",
        )
        .ok()
        .unwrap();
        assert!(p.has("--ro"));
        assert_eq!(p.size("--bs", "h").ok().unwrap(), Some(512));
        assert_eq!(p.size("--off", "h").ok().unwrap(), Some(1 << 20));
        assert_eq!(p.positionals, os(&["f", "--x"]));
        assert!(parse_args(&os(&["--nope"]), &[], &[], "h").is_err());
        assert!(parse_args(&os(&["--bs"]), &[], &["--bs"], "h").is_err());
        assert!(parse_args(&os(&["--ro=1"]), &["--ro"], &[], "h").is_err());
        assert!(parse_args(&os(&["-h"]), &[], &[], "h").ok().unwrap().help);
    }
}
