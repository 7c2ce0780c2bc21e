//! `dmthin loop <subcommand>`: attach, detach, list and find loop devices.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use dmthin::loopdev::{self, AttachOptions};

use crate::args::Spec;
use crate::output::{errln, failed, loop_table, print_json};
use crate::{CliError, CliResult};

const LOOP_USAGE: &str = "\
Usage: dmthin loop <SUBCOMMAND> [ARGS...]

Subcommands:
  attach FILE [OPTIONS]  Bind FILE to a free loop device; prints the device
  detach DEV...          Detach loop devices
  list [--json]          List bound loop devices and their backing files
  find FILE [--json]     Loop devices bound to FILE (matched by device and inode)

Run 'dmthin loop SUBCOMMAND --help' for a subcommand's options.
";

const ATTACH: Spec = Spec {
    switches: &["--read-only", "--autoclear", "--direct-io", "--partscan"],
    valued: &["--block-size", "--offset", "--size-limit"],
    help: "dmthin loop attach --help",
    usage: "\
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
",
};

const DETACH: Spec = Spec {
    switches: &[],
    valued: &[],
    help: "dmthin loop detach --help",
    usage: "\
Usage: dmthin loop detach DEV...

Detach each loop device. A device that other users still hold open is
detached by the kernel when they close it; this is reported as busy.

Options:
  -h, --help  Show this help
",
};

const LIST: Spec = Spec {
    switches: &["--json"],
    valued: &[],
    help: "dmthin loop list --help",
    usage: "\
Usage: dmthin loop list [--json]

List bound loop devices with their backing files.

Options:
  --json      Print a JSON array
  -h, --help  Show this help
",
};

const FIND: Spec = Spec {
    switches: &["--json"],
    valued: &[],
    help: "dmthin loop find --help",
    usage: "\
Usage: dmthin loop find FILE [--json]

Print the loop devices bound to FILE, matched by device and inode (so any name
of the file works). Exits 1 when there are none.

Options:
  --json      Print a JSON array
  -h, --help  Show this help
",
};

/// `dmthin loop ARGS...`.
pub(crate) fn run(args: &[OsString], out: &mut dyn Write) -> CliResult {
    const HELP: &str = "dmthin loop --help";
    let Some(sub) = args.first() else {
        crate::output::err(format_args!("{LOOP_USAGE}"));
        return Err(CliError::Usage("missing subcommand".into(), HELP));
    };
    let rest = &args[1..];
    match sub.to_str() {
        Some("-h" | "--help" | "help") => Ok(write!(out, "{LOOP_USAGE}")?),
        Some("attach") => attach(rest, out),
        Some("detach") => detach(rest, out),
        Some("list") => list(rest, out),
        Some("find") => find(rest, out),
        _ => Err(CliError::Usage(
            format!("unknown loop subcommand '{}'", sub.to_string_lossy()),
            HELP,
        )),
    }
}

fn attach(args: &[OsString], out: &mut dyn Write) -> CliResult {
    let Some(p) = ATTACH.parse(args, out)? else {
        return Ok(());
    };
    let file = PathBuf::from(p.one("FILE")?);
    let mut opts = AttachOptions::new()
        .read_only(p.has("--read-only"))
        .autoclear(p.has("--autoclear"))
        .direct_io(p.has("--direct-io"))
        .partscan(p.has("--partscan"))
        .offset(p.size("--offset")?.unwrap_or(0))
        .size_limit(p.size("--size-limit")?.unwrap_or(0));
    if let Some(bs) = p.size("--block-size")? {
        let bs =
            u32::try_from(bs).map_err(|_| p.usage(format!("--block-size {bs} is too large")))?;
        opts = opts.block_size(bs);
    }
    let dev = loopdev::attach(&file, &opts).map_err(failed)?;
    if opts.direct_io && !dev.direct_io() {
        log::warn!(
            "direct I/O is not available for {}; {} uses buffered I/O",
            file.display(),
            dev.path().display()
        );
    }
    Ok(writeln!(out, "{}", dev.path().display())?)
}

fn detach(args: &[OsString], out: &mut dyn Write) -> CliResult {
    let Some(p) = DETACH.parse(args, out)? else {
        return Ok(());
    };
    if p.positionals.is_empty() {
        return Err(p.usage("missing DEV".into()));
    }
    let mut first_error = None;
    for dev in &p.positionals {
        if let Err(e) = loopdev::detach(PathBuf::from(dev)) {
            if first_error.is_some() {
                errln(format_args!("dmthin: {e}"));
            } else {
                first_error = Some(failed(e));
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn list(args: &[OsString], out: &mut dyn Write) -> CliResult {
    let Some(p) = LIST.parse(args, out)? else {
        return Ok(());
    };
    p.none()?;
    let all = loopdev::list().map_err(failed)?;
    if p.has("--json") {
        print_json(out, &all)
    } else {
        loop_table(out, &all)
    }
}

fn find(args: &[OsString], out: &mut dyn Write) -> CliResult {
    let Some(p) = FIND.parse(args, out)? else {
        return Ok(());
    };
    let file = PathBuf::from(p.one("FILE")?);
    let found = loopdev::find_all_by_file(&file).map_err(failed)?;
    if p.has("--json") {
        print_json(out, &found)?;
    } else {
        for s in &found {
            writeln!(out, "{}", s.device.display())?;
        }
    }
    if found.is_empty() {
        Err(CliError::Silent)
    } else {
        Ok(())
    }
}
