//! `dmthin --root DIR <subcommand>`: the device set on the command line.
//!
//! Every invocation opens the set (repairing anything a crash interrupted),
//! does one thing and exits without tearing the set down: devices and mounts
//! stay, the next invocation picks them up. `shutdown` tears it down.

use super::{failed, parse_args, parse_size, print_json, CliError, CliResult, Parsed};
use dmthin::deviceset::{DeviceSet, FsKind, Options, RemoveOutcome, StorageOptions};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

/// Default root of a device set.
pub const DEFAULT_ROOT: &str = "/var/lib/dmthin";

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
                          device may see data of a deleted one)
  --json                  Print the status as JSON
  -h, --help              Show this help

Sizes take a K, M, G or T suffix (powers of 1024).
";

const CREATE_USAGE: &str = "\
Usage: dmthin [--root DIR] create ID [--from PARENT]

Create device ID as a thin snapshot of PARENT, or of the base device.
IDs use [A-Za-z0-9_.:-]; a 64-character sha256 id fits.
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

const GROW_USAGE: &str = "\
Usage: dmthin [--root DIR] grow-pool SIZE
       dmthin [--root DIR] grow-pool --metadata SIZE

Grow the pool's data space (or, with --metadata, its metadata device) to
SIZE. Loop files are grown in place; block devices must already be that big.
A pool that ran out of metadata space is writable again after --metadata.
";

const SHUTDOWN_USAGE: &str = "\
Usage: dmthin [--root DIR] shutdown

Unmount what the set mounted, deactivate every device and remove the pool
(unless it was adopted). Data stays; 'init' or any command brings it back.
";

/// Whether `name` is a device-set subcommand.
pub fn is_set_command(name: &str) -> bool {
    matches!(
        name,
        "init"
            | "create"
            | "remove"
            | "activate"
            | "deactivate"
            | "mount"
            | "umount"
            | "list"
            | "status"
            | "grow-pool"
            | "shutdown"
    )
}

/// Human-readable bytes, in powers of 1024.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn progress() -> dmthin::deviceset::Progress {
    Arc::new(|msg: &str| eprintln!("dmthin: {msg}..."))
}

fn open(root: &PathBuf, fresh: Option<Options>) -> Result<DeviceSet, CliError> {
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
    options.progress = Some(progress());
    options.udev_sync = std::env::var_os("DMTHIN_UDEV_SYNC").is_none_or(|v| v != "0");
    DeviceSet::open(root, options).map_err(failed)
}

fn one(p: &Parsed, what: &str, help: &'static str) -> Result<String, CliError> {
    match p.positionals.as_slice() {
        [one] => Ok(one.to_string_lossy().into_owned()),
        [] => Err(CliError::Usage(format!("missing {what}"), help)),
        [_, extra, ..] => Err(CliError::Usage(
            format!("unexpected argument '{}'", extra.to_string_lossy()),
            help,
        )),
    }
}

fn value(p: &Parsed, opt: &str) -> Option<String> {
    p.values.get(opt).map(|v| v.to_string_lossy().into_owned())
}

/// Runs a device-set subcommand against the set at `root`.
pub fn set_cmd(root: PathBuf, cmd: &str, args: &[OsString]) -> CliResult {
    match cmd {
        "init" => init(root, args),
        "create" => {
            let p = parse_args(args, &[], &["--from"], "dmthin create --help")?;
            if p.help {
                print!("{CREATE_USAGE}");
                return Ok(());
            }
            let id = one(&p, "ID", "dmthin create --help")?;
            let set = open(&root, None)?;
            set.add_device(&id, value(&p, "--from").as_deref())
                .map_err(failed)?;
            println!("{id}");
            Ok(())
        }
        "remove" => {
            let p = parse_args(args, &["--deferred"], &[], "dmthin remove --help")?;
            if p.help {
                print!("{REMOVE_USAGE}");
                return Ok(());
            }
            let id = one(&p, "ID", "dmthin remove --help")?;
            let set = open(&root, None)?;
            if p.has("--deferred") {
                match set.remove_device_deferred(&id).map_err(failed)? {
                    RemoveOutcome::Removed => println!("removed {id}"),
                    RemoveOutcome::Deferred => {
                        println!("{id} is busy; it will be removed once closed")
                    }
                }
            } else {
                set.remove_device(&id).map_err(failed)?;
                println!("removed {id}");
            }
            Ok(())
        }
        "activate" | "deactivate" => {
            let p = parse_args(args, &[], &[], "dmthin activate --help")?;
            if p.help {
                print!("{ID_USAGE}");
                return Ok(());
            }
            let id = one(&p, "ID", "dmthin activate --help")?;
            let set = open(&root, None)?;
            if cmd == "activate" {
                println!("{}", set.activate_device(&id).map_err(failed)?.display());
            } else {
                set.deactivate_device(&id).map_err(failed)?;
            }
            Ok(())
        }
        "mount" | "umount" => {
            let p = parse_args(
                args,
                &["--read-only", "--keep-active"],
                &[],
                "dmthin mount --help",
            )?;
            if p.help {
                print!("{MOUNT_USAGE}");
                return Ok(());
            }
            let [id, path] = p.positionals.as_slice() else {
                return Err(CliError::Usage(
                    "expected ID and PATH".into(),
                    "dmthin mount --help",
                ));
            };
            let id = id.to_string_lossy();
            let path = PathBuf::from(path);
            let set = open(&root, None)?;
            if cmd == "mount" {
                set.mount_device(&id, &path, p.has("--read-only"))
                    .map_err(failed)?;
            } else {
                set.unmount_device(&id, &path, !p.has("--keep-active"))
                    .map_err(failed)?;
            }
            Ok(())
        }
        "list" => {
            let p = parse_args(args, &["--json"], &[], "dmthin list --help")?;
            if p.help {
                print!("{LIST_USAGE}");
                return Ok(());
            }
            let set = open(&root, None)?;
            let list = set.list().map_err(failed)?;
            if p.has("--json") {
                return print_json(&list);
            }
            println!(
                "{:<24} {:<16} {:>6} {:>10} {:>10} {:<6} MOUNTED",
                "ID", "PARENT", "THIN", "SIZE", "MAPPED", "ACTIVE"
            );
            for d in list {
                println!(
                    "{:<24} {:<16} {:>6} {:>10} {:>10} {:<6} {}",
                    d.id,
                    d.parent.as_deref().unwrap_or("(base)"),
                    d.thin_id,
                    human(d.size),
                    d.mapped_bytes.map(human).unwrap_or_else(|| "-".into()),
                    if d.active { "yes" } else { "no" },
                    d.mount_points
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                );
            }
            Ok(())
        }
        "status" => {
            let p = parse_args(args, &["--json"], &[], "dmthin status --help")?;
            if p.help {
                print!("{LIST_USAGE}");
                return Ok(());
            }
            let set = open(&root, None)?;
            print_status(&set, p.has("--json"))
        }
        "grow-pool" => {
            let p = parse_args(args, &[], &["--metadata"], "dmthin grow-pool --help")?;
            if p.help {
                print!("{GROW_USAGE}");
                return Ok(());
            }
            let size_of = |s: String| {
                parse_size(&s).ok_or_else(|| {
                    CliError::Usage(format!("'{s}' is not a size"), "dmthin grow-pool --help")
                })
            };
            if let Some(m) = value(&p, "--metadata") {
                if let Some(extra) = p.positionals.first() {
                    return Err(CliError::Usage(
                        format!(
                            "unexpected argument '{}' (grow data and metadata in two calls)",
                            extra.to_string_lossy()
                        ),
                        "dmthin grow-pool --help",
                    ));
                }
                let size = size_of(m)?;
                let set = open(&root, None)?;
                eprintln!("dmthin: growing the pool's metadata to {}...", human(size));
                set.grow_pool_metadata(size).map_err(failed)?;
                return print_status(&set, false);
            }
            let size = size_of(one(&p, "SIZE", "dmthin grow-pool --help")?)?;
            let set = open(&root, None)?;
            eprintln!("dmthin: growing the pool to {}...", human(size));
            set.grow_pool(size).map_err(failed)?;
            print_status(&set, false)
        }
        "shutdown" => {
            let p = parse_args(args, &[], &[], "dmthin shutdown --help")?;
            if p.help {
                print!("{SHUTDOWN_USAGE}");
                return Ok(());
            }
            let set = open(&root, None)?;
            set.shutdown().map_err(failed)
        }
        _ => Err(CliError::Usage(
            format!("unknown command '{cmd}'"),
            "dmthin --help",
        )),
    }
}

fn print_status(set: &DeviceSet, json: bool) -> CliResult {
    let st = set.status().map_err(failed)?;
    if json {
        return print_json(&st);
    }
    let pct = |used: u64, total: u64| {
        if total == 0 {
            0.0
        } else {
            used as f64 * 100.0 / total as f64
        }
    };
    println!("Pool:            {}", st.pool_name);
    if let Some(d) = &st.data_source {
        println!("Data:            {}", d.display());
    }
    if let Some(m) = &st.metadata_source {
        println!("Metadata:        {}", m.display());
    }
    println!(
        "Data space:      {} of {} used ({:.1}%)",
        human(st.data_used),
        human(st.data_total),
        pct(st.data_used, st.data_total)
    );
    println!(
        "Metadata space:  {} of {} used ({:.1}%)",
        human(st.metadata_used),
        human(st.metadata_total),
        pct(st.metadata_used, st.metadata_total)
    );
    println!("Block size:      {}", human(st.data_block_size));
    println!(
        "Mode:            {}{}",
        st.mode,
        if st.needs_check { " (needs_check)" } else { "" }
    );
    println!("Transaction id:  {}", st.transaction_id);
    println!("Base:            {} {}", st.filesystem, human(st.base_size));
    println!("Devices:         {}", st.devices);
    Ok(())
}

fn init(root: PathBuf, args: &[OsString]) -> CliResult {
    const HELP: &str = "dmthin init --help";
    let p = parse_args(
        args,
        &["--no-zeroing", "--json"],
        &[
            "--data-size",
            "--metadata-size",
            "--data-dev",
            "--metadata-dev",
            "--pool",
            "--block-size",
            "--base-size",
            "--fs",
            "--mkfs-options",
            "--mount-options",
            "--min-free",
        ],
        HELP,
    )?;
    if p.help {
        print!("{INIT_USAGE}");
        return Ok(());
    }
    if let Some(extra) = p.positionals.first() {
        return Err(CliError::Usage(
            format!("unexpected argument '{}'", extra.to_string_lossy()),
            HELP,
        ));
    }
    let recorded = DeviceSet::recorded_options(&root).map_err(failed)?;
    let mut o = recorded.clone().unwrap_or_default();
    let storage = match (
        value(&p, "--data-dev"),
        value(&p, "--metadata-dev"),
        value(&p, "--pool"),
    ) {
        (Some(d), Some(m), None) => Some(StorageOptions::BlockDevices {
            data: d.into(),
            metadata: m.into(),
        }),
        (None, None, Some(name)) => Some(StorageOptions::AdoptPool { name }),
        (None, None, None) => None,
        _ => {
            return Err(CliError::Usage(
                "give both --data-dev and --metadata-dev, or --pool, or neither".into(),
                HELP,
            ))
        }
    };
    if let Some(s) = storage {
        o.storage = s;
    }
    let data = p.size("--data-size", HELP)?;
    let meta = p.size("--metadata-size", HELP)?;
    if data.is_some() || meta.is_some() {
        let StorageOptions::LoopFiles {
            data_size,
            metadata_size,
        } = &mut o.storage
        else {
            return Err(CliError::Usage(
                "--data-size and --metadata-size are for loop files".into(),
                HELP,
            ));
        };
        // A new set takes the sizes as given; existing files only ever grow.
        let existing = recorded.is_some();
        let pick = |have: u64, want: u64| if existing { have.max(want) } else { want };
        if let Some(d) = data {
            *data_size = pick(*data_size, d);
        }
        if let Some(m) = meta {
            *metadata_size = pick(*metadata_size, m);
        }
    }
    if let Some(bs) = p.size("--block-size", HELP)? {
        o.data_block_size = bs;
    }
    if let Some(bs) = p.size("--base-size", HELP)? {
        o.base_size = bs;
    }
    if let Some(fs) = value(&p, "--fs") {
        o.filesystem = match fs.as_str() {
            "ext4" => FsKind::Ext4,
            "xfs" => FsKind::Xfs,
            other => {
                return Err(CliError::Usage(
                    format!("--fs: '{other}' is not ext4 or xfs"),
                    HELP,
                ))
            }
        };
    }
    if let Some(m) = value(&p, "--mkfs-options") {
        o.mkfs_options = m.split_whitespace().map(str::to_string).collect();
    }
    if let Some(m) = value(&p, "--mount-options") {
        o.mount_options = m
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
    }
    if let Some(m) = value(&p, "--min-free") {
        o.min_free_space_percent = m
            .trim_end_matches('%')
            .parse()
            .map_err(|_| CliError::Usage(format!("--min-free: '{m}' is not a percentage"), HELP))?;
    }
    if p.has("--no-zeroing") {
        o.block_zeroing = false;
    }
    // Loop files already there are grown, never shrunk: pass the larger size.
    let grow_to = match (&recorded, &o.storage) {
        (Some(_), StorageOptions::LoopFiles { data_size, .. }) => Some(*data_size),
        _ => None,
    };
    let set = open(&root, Some(o))?;
    if let Some(size) = grow_to {
        let st = set.status().map_err(failed)?;
        if size > st.data_total {
            eprintln!("dmthin: growing the pool to {}...", human(size));
            set.grow_pool(size).map_err(failed)?;
        }
    }
    print_status(&set, p.has("--json"))
}
