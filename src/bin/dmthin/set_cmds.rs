//! `dmthin --root DIR <subcommand>`: the device set on the command line.
//!
//! Every invocation opens the set (repairing anything a crash interrupted),
//! does one thing and exits without tearing the set down: devices and mounts
//! stay, the next invocation picks them up. `shutdown` tears it down.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dmthin::deviceset::{DeviceSet, OptionFlags, Options, RemoveOutcome, StorageOptions};

use crate::args::Spec;
use crate::look::{open_to_look, SetLook};
use crate::output::{device_table, errln, failed, human, print_json, status_text};
use crate::usage_out::print_usage;
use crate::{CliError, CliResult};

/// Default root of a device set.
pub(crate) const DEFAULT_ROOT: &str = "/var/lib/dmthin";

const INIT_USAGE: &str = "\
Usage: dmthin [--root DIR] init [OPTIONS]

Create a device set: a thin pool (on sparse loop files under DIR unless
block devices or an existing pool are given) and a base device with a
filesystem. On an existing set, checks it and applies a larger --base-size
or --data-size.

Options:
  --data-size SIZE        Loop data file size (100G)
  --metadata-size SIZE    Loop metadata file size (2G)
  --data-dev DEV          Use block device DEV for data (with --metadata-dev)
  --metadata-dev DEV      Use block device DEV for metadata
  --pool NAME             Adopt the existing, empty pool NAME
  --block-size SIZE       Pool data block size (64K)
  --base-size SIZE        Base device size (10G); can grow later, never shrink
  --fs ext4|xfs           Base filesystem (ext4)
  --mkfs-options 'ARGS'   Extra mkfs arguments, space separated
  --mount-options OPTS    Mount options, comma separated
  --min-free PERCENT      Refuse new devices below this free space (10)
  --no-zeroing            Skip zeroing new pool blocks (faster, but a new
                          device may see data of a deleted one; --zeroing
                          turns it back on)
  --deferred-removal      Remove a busy device when its last user closes it
                          instead of failing (--no-deferred-removal: off)
  --deferred-deletion     Delete a thin still open in the pool later instead
                          of failing (--no-deferred-deletion: off)
  --discard-on-remove     Discard a device's blocks before deleting it, so a
                          loop data file shrinks (the default on loop files;
                          --no-discard-on-remove: off)
  --json                  Print the status as JSON
  -h, --help              Show this help

Sizes take a K, M, G or T suffix (powers of 1024).
";

const CREATE_USAGE: &str = "\
Usage: dmthin [--root DIR] create ID [--from PARENT] [--size SIZE]

Create device ID as a thin snapshot of PARENT, or of the base device.
IDs use [A-Za-z0-9_.:-]; a 64-character sha256 id fits.
With --size the device is SIZE bytes (K, M, G, T suffixes), at least its
parent's size, and its filesystem is grown to fill it.
";

const REMOVE_USAGE: &str = "\
Usage: dmthin [--root DIR] remove ID [--deferred]

Deactivate ID and delete it from the pool, freeing its space and thin id.
A device that stays busy (held open elsewhere) is refused; with --deferred
the kernel removes it once it is closed and the pool entry goes on a later
call.
";

const ID_USAGE: &str = "\
Usage: dmthin [--root DIR] activate|deactivate ID
";

const MOUNT_USAGE: &str = "\
Usage: dmthin [--root DIR] mount ID PATH [--read-only]
       dmthin [--root DIR] umount ID PATH [--keep-active]

mount activates ID and mounts its filesystem at PATH (created if missing).
umount unmounts it and deactivates ID unless --keep-active is given.
";

const LIST_USAGE: &str = "\
Usage: dmthin [--root DIR] list [--json]
       dmthin [--root DIR] status [--json]
";

const USAGE_USAGE: &str = "\
Usage: dmthin [--root DIR] usage [ID...] [--json]

Space each device uses, read from a metadata snapshot of the pool: MAPPED
bytes, EXCLUSIVE bytes (no other device maps them: removing the device
frees them) and SHARED bytes, largest exclusive use first, then the pool's
totals and the allocated bytes no device maps. IDs pick devices ('base' is
the base device); without them every device is listed. --json prints the
whole report (with IDs: their rows).
";

const GROW_USAGE: &str = "\
Usage: dmthin [--root DIR] grow-pool SIZE
       dmthin [--root DIR] grow-pool --metadata SIZE

Grow the pool's data space (or, with --metadata, its metadata device) to
SIZE. Loop files are grown in place; block devices must already be that big.
A pool that ran out of metadata space is writable again after --metadata.
";

const TRIM_USAGE: &str = "\
Usage: dmthin [--root DIR] trim [--json]

Run fstrim on every mounted device of the set: the filesystems discard
their free blocks, the pool passes the discards down, and a loop data file
punches holes. Prints what each mount trimmed and the bytes the host got
back (the data file's allocation before minus after).
";

const SHUTDOWN_USAGE: &str = "\
Usage: dmthin [--root DIR] shutdown

Unmount what the set mounted, deactivate every device and remove the pool
(unless it was adopted). Data stays; 'init' or any command brings it back.
";

/// `init`'s switches: the set's on/off flags ([`OptionFlags::SWITCHES`]) and `--json`.
const INIT_SWITCHES: [&str; OptionFlags::SWITCHES.len() + 1] =
    dmthin::cmdline::concat(OptionFlags::SWITCHES, &["--json"]);

const INIT: Spec = Spec {
    switches: &INIT_SWITCHES,
    valued: OptionFlags::VALUED,
    help: "dmthin init --help",
    usage: INIT_USAGE,
};

const CREATE: Spec = Spec {
    switches: &[],
    valued: &["--from", "--size"],
    help: "dmthin create --help",
    usage: CREATE_USAGE,
};

const REMOVE: Spec = Spec {
    switches: &["--deferred"],
    valued: &[],
    help: "dmthin remove --help",
    usage: REMOVE_USAGE,
};

/// `activate` and `deactivate`.
const ID: Spec = Spec {
    switches: &[],
    valued: &[],
    help: "dmthin activate --help",
    usage: ID_USAGE,
};

/// `mount` and `umount`.
const MOUNT: Spec = Spec {
    switches: &["--read-only", "--keep-active"],
    valued: &[],
    help: "dmthin mount --help",
    usage: MOUNT_USAGE,
};

const LIST: Spec = Spec {
    switches: &["--json"],
    valued: &[],
    help: "dmthin list --help",
    usage: LIST_USAGE,
};

const STATUS: Spec = Spec {
    help: "dmthin status --help",
    ..LIST
};

const USAGE: Spec = Spec {
    help: "dmthin usage --help",
    usage: USAGE_USAGE,
    ..LIST
};

const GROW: Spec = Spec {
    switches: &[],
    valued: &["--metadata"],
    help: "dmthin grow-pool --help",
    usage: GROW_USAGE,
};

const TRIM: Spec = Spec {
    help: "dmthin trim --help",
    usage: TRIM_USAGE,
    ..LIST
};

const SHUTDOWN: Spec = Spec {
    switches: &[],
    valued: &[],
    help: "dmthin shutdown --help",
    usage: SHUTDOWN_USAGE,
};

/// What device-set command `name` accepts; `None`: there is no such command.
fn spec(name: &str) -> Option<&'static Spec> {
    Some(match name {
        "init" => &INIT,
        "create" => &CREATE,
        "remove" => &REMOVE,
        "activate" | "deactivate" => &ID,
        "mount" | "umount" => &MOUNT,
        "list" => &LIST,
        "status" => &STATUS,
        "usage" => &USAGE,
        "grow-pool" => &GROW,
        "trim" => &TRIM,
        "shutdown" => &SHUTDOWN,
        _ => return None,
    })
}

/// Runs device-set command `cmd` against the set at `root`.
pub(crate) fn run(root: PathBuf, cmd: &OsStr, args: &[OsString], out: &mut dyn Write) -> CliResult {
    let Some((cmd, spec)) = cmd.to_str().and_then(|c| Some((c, spec(c)?))) else {
        return Err(CliError::Usage(
            format!("unknown command '{}'", cmd.to_string_lossy()),
            "dmthin --help",
        ));
    };
    let Some(p) = spec.parse(args, out)? else {
        return Ok(());
    };
    match cmd {
        "init" => init(&root, &p, out),
        "create" => {
            let id = p.one("ID")?.to_string_lossy();
            let size = p.size("--size")?;
            let set = open(&root, None)?;
            set.add_device_sized(&id, p.value("--from").as_deref(), size)
                .map_err(failed)?;
            Ok(writeln!(out, "{id}")?)
        }
        "remove" => {
            let id = p.one("ID")?.to_string_lossy();
            let set = open(&root, None)?;
            if p.has("--deferred") {
                match set.remove_device_deferred(&id).map_err(failed)? {
                    RemoveOutcome::Removed => writeln!(out, "removed {id}")?,
                    RemoveOutcome::Deferred => {
                        writeln!(out, "{id} is busy; it will be removed once closed")?
                    }
                }
            } else {
                set.remove_device(&id).map_err(failed)?;
                writeln!(out, "removed {id}")?;
            }
            Ok(())
        }
        "activate" => {
            let id = p.one("ID")?.to_string_lossy();
            let set = open(&root, None)?;
            let path = set.activate_device(&id).map_err(failed)?;
            Ok(writeln!(out, "{}", path.display())?)
        }
        "deactivate" => {
            let id = p.one("ID")?.to_string_lossy();
            let set = open(&root, None)?;
            set.deactivate_device(&id).map_err(failed)
        }
        "mount" | "umount" => {
            let [id, path] = p.positionals.as_slice() else {
                return Err(p.usage("expected ID and PATH".into()));
            };
            let id = id.to_string_lossy();
            let path = PathBuf::from(path);
            let set = open(&root, None)?;
            if cmd == "mount" {
                set.mount_device(&id, &path, p.has("--read-only"))
            } else {
                set.unmount_device(&id, &path, !p.has("--keep-active"))
            }
            .map_err(failed)
        }
        "list" => {
            let set = open_to_look(&root, || open_raw(&root, None))?;
            let list = set.list().map_err(failed)?;
            if p.has("--json") {
                print_json(out, &list)
            } else {
                device_table(out, &list)
            }
        }
        "status" => {
            let set = open_to_look(&root, || open_raw(&root, None))?;
            print_status(out, set.as_ref(), p.has("--json"))
        }
        "usage" => {
            let ids: Vec<String> = p
                .positionals
                .iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect();
            let set = open_to_look(&root, || open_raw(&root, None))?;
            let usage = set.usage_all().map_err(failed)?;
            print_usage(out, &usage, &ids, p.has("--json"))
        }
        "grow-pool" => {
            let size = |s: String| p.size_arg(&s);
            let set;
            if let Some(m) = p.value("--metadata") {
                p.none_or(" (grow data and metadata in two calls)")?;
                let size = size(m)?;
                set = open(&root, None)?;
                errln(format_args!(
                    "dmthin: growing the pool's metadata to {}...",
                    human(size)
                ));
                set.grow_pool_metadata(size).map_err(failed)?;
            } else {
                let size = size(p.one("SIZE")?.to_string_lossy().into_owned())?;
                set = open(&root, None)?;
                grow_pool(&set, size)?;
            }
            print_status(out, &set, false)
        }
        "trim" => {
            p.none()?;
            let report = open(&root, None)?.trim().map_err(failed)?;
            if p.has("--json") {
                print_json(out, &report)
            } else {
                crate::output::trim_text(out, &report)
            }
        }
        _ => open(&root, None)?.shutdown().map_err(failed),
    }
}

/// Progress of long steps (mkfs, growing) on stderr.
fn progress() -> dmthin::deviceset::Progress {
    Arc::new(|msg: &str| errln(format_args!("dmthin: {msg}...")))
}

/// Opens the set at `root`: a new one with `fresh`, else the recorded one.
fn open(root: &Path, fresh: Option<Options>) -> Result<DeviceSet, CliError> {
    open_raw(root, fresh)?.map_err(failed)
}

/// [`open`], the set's own error kept apart (the outer one is the CLI's).
fn open_raw(
    root: &Path,
    fresh: Option<Options>,
) -> Result<dmthin::deviceset::Result<DeviceSet>, CliError> {
    let mut options = match fresh {
        Some(o) => o,
        None => match DeviceSet::recorded_options(root).map_err(failed)? {
            Some(o) => o,
            None => {
                return Err(CliError::Failed(format!(
                    "no device set at {}; run 'dmthin --root {} init' first",
                    root.display(),
                    root.display()
                )))
            }
        },
    };
    // The library also logs each progress message at info: with DMTHIN_LOG
    // at info or beyond the logger shows them, so do not print them twice.
    options.progress = (log::max_level() < log::LevelFilter::Info).then(progress);
    options.udev_sync = std::env::var_os("DMTHIN_UDEV_SYNC").is_none_or(|v| v != "0");
    Ok(DeviceSet::open(root, options))
}

fn grow_pool(set: &DeviceSet, size: u64) -> CliResult {
    errln(format_args!(
        "dmthin: growing the pool to {}...",
        human(size)
    ));
    set.grow_pool(size).map_err(failed)
}

fn print_status(out: &mut dyn Write, set: &dyn SetLook, json: bool) -> CliResult {
    let st = set.status().map_err(failed)?;
    if json {
        print_json(out, &st)
    } else {
        status_text(out, &st)
    }
}

fn init(root: &Path, p: &crate::args::Parsed, out: &mut dyn Write) -> CliResult {
    p.none()?;
    let recorded = DeviceSet::recorded_options(root).map_err(failed)?;
    let existing = recorded.is_some();
    let o = OptionFlags::from_args(p)
        .and_then(|flags| flags.options(recorded))
        .map_err(|e| p.usage(e.to_string()))?;
    // Loop files already there are grown, never shrunk: pass the larger size.
    let grow_to = match &o.storage {
        StorageOptions::LoopFiles { data_size, .. } if existing => Some(*data_size),
        _ => None,
    };
    let set = open(root, Some(o))?;
    if let Some(size) = grow_to {
        let st = set.status().map_err(failed)?;
        if size > st.data_total {
            grow_pool(&set, size)?;
        }
    }
    print_status(out, &set, p.has("--json"))
}
