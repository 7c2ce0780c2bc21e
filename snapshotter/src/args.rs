//! Command-line options.

use dmthin::deviceset::{OptionFlags, Options};
use std::path::PathBuf;

/// Default device set root.
pub const DEFAULT_ROOT: &str = "/var/lib/dmthin-snapshotter";
/// Default socket.
pub const DEFAULT_SOCKET: &str = "/run/dmthin-snapshotter/snapshotter.sock";

/// The usage text.
pub const USAGE: &str = "\
Usage: dmthin-snapshotter [OPTIONS]

A containerd snapshotter (proxy plugin) on a dmthin device set. Serves
containerd.services.snapshots.v1 on a unix socket until SIGTERM or SIGINT.

Options:
  --root DIR              Device set root (/var/lib/dmthin-snapshotter); a set
                          made there with 'dmthin init' is adopted with its
                          recorded options
  --socket PATH           Socket to serve (/run/dmthin-snapshotter/snapshotter.sock)
  --data-size SIZE        New set: loop data file size (100G)
  --metadata-size SIZE    New set: loop metadata file size (2G)
  --data-dev DEV          New set: data block device (with --metadata-dev)
  --metadata-dev DEV      New set: metadata block device
  --pool NAME             New set: adopt the existing, empty pool NAME
  --block-size SIZE       New set: pool data block size (64K)
  --base-size SIZE        Base device size (10G); a larger one grows it
  --fs ext4|xfs           New set: base filesystem (ext4)
  --mkfs-options 'ARGS'   New set: extra mkfs arguments
  --min-free PERCENT      Refuse new snapshots below this free pool space (10)
  --no-zeroing            Do not zero newly provisioned blocks
  --discard-on-remove     Discard a layer's blocks before deleting it, so a
                          loop data file gives them back to the host (each
                          Remove then takes about twice as long; remembered)
  --no-discard-on-remove  Do not (the default for a new set, as containerd's
                          devmapper discard_blocks; the pool reuses the blocks)
  --udev-sync             With udev running, wait for it through cookies (its
                          rules then probe every layer and make /dev/disk links)
  --no-udev-sync          Keep udev out of the way (default: the dm rules skip
                          our devices, dmthin makes the /dev/mapper nodes;
                          several times faster per layer under udev)
  --autoextend            Grow a loop-file pool before it fills, in this
                          process (the thresholds 'dmthin monitor' remembered
                          for the set, else 80% use and 20% growth)
  --teardown-on-exit      On SIGTERM also deactivate every device and remove
                          the pool (for tests; never while containers run)
  --log-level LEVEL       error, warn, info (default), debug or trace
                          (also DMTHIN_SNAPSHOTTER_LOG)
  -h, --help              Show this help
  -V, --version           Show the version

Sizes take a K, M, G or T suffix (powers of 1024).
";

/// Parsed options.
#[derive(Debug, Default)]
pub struct Args {
    /// `--root`.
    pub root: PathBuf,
    /// `--socket`.
    pub socket: PathBuf,
    /// Pool and set options given on the command line.
    pub set: SetArgs,
    /// `--udev-sync` / `--no-udev-sync`.
    pub udev_sync: bool,
    /// `--teardown-on-exit`.
    pub teardown: bool,
    /// `--autoextend`.
    pub autoextend: bool,
    /// `--log-level`.
    pub log_level: Option<String>,
    /// `--help`.
    pub help: bool,
    /// `--version`.
    pub version: bool,
}

/// The set options given on the command line, read as `dmthin init`
/// reads them ([`OptionFlags`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SetArgs(OptionFlags);

/// Whether `flag` is one of [`OptionFlags::VALUED`] the snapshotter takes:
/// all but `--mount-options` (containerd mounts the snapshots, with its own).
fn set_flag_with_value(flag: &str) -> bool {
    OptionFlags::VALUED.contains(&flag) && flag != "--mount-options"
}

/// The switches of [`OptionFlags`] the snapshotter takes.
const SET_SWITCHES: &[&str] = &[
    "--no-zeroing",
    "--discard-on-remove",
    "--no-discard-on-remove",
];

/// Parses the arguments after the program name.
pub fn parse(argv: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        root: DEFAULT_ROOT.into(),
        socket: DEFAULT_SOCKET.into(),
        udev_sync: false,
        ..Args::default()
    };
    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let value = |it: &mut dyn Iterator<Item = String>| -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it.next().ok_or_else(|| format!("{name} needs a value")),
            }
        };
        match name.as_str() {
            "-h" | "--help" => a.help = true,
            "-V" | "--version" => a.version = true,
            "--root" => a.root = value(&mut it)?.into(),
            "--socket" => a.socket = value(&mut it)?.into(),
            flag if set_flag_with_value(flag) => {
                let v = value(&mut it)?;
                a.set.0.set(flag, Some(&v)).map_err(|e| e.to_string())?
            }
            flag if SET_SWITCHES.contains(&flag) => a
                .set
                .0
                .set(flag, inline.as_deref())
                .map_err(|e| e.to_string())?,
            "--udev-sync" => a.udev_sync = true,
            "--no-udev-sync" => a.udev_sync = false,
            "--teardown-on-exit" => a.teardown = true,
            "--autoextend" => a.autoextend = true,
            "--log-level" => a.log_level = Some(value(&mut it)?),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(a)
}

impl SetArgs {
    /// The options to open the set with: the recorded ones of an existing set
    /// (options given here override them; the device set refuses changes it
    /// cannot make), else defaults with the options given here.
    pub fn options(&self, recorded: Option<Options>) -> Result<Options, String> {
        let new_set = recorded.is_none();
        let mut o = self.0.options(recorded).map_err(|e| e.to_string())?;
        // A new set does not discard on remove unless asked, as containerd's
        // devmapper snapshotter (discard_blocks = false); a set made with
        // `dmthin init` keeps what it recorded.
        if new_set {
            o.remove_discard.get_or_insert(false);
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmthin::deviceset::{FsKind, StorageOptions};

    fn p(args: &[&str]) -> Result<Args, String> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_and_values() {
        let a = p(&[]).unwrap();
        assert_eq!(a.root, PathBuf::from(DEFAULT_ROOT));
        assert_eq!(a.socket, PathBuf::from(DEFAULT_SOCKET));
        assert!(!a.udev_sync && !a.teardown && !a.autoextend);
        assert!(p(&["--autoextend"]).unwrap().autoextend);
        assert!(!p(&["--udev-sync", "--no-udev-sync"]).unwrap().udev_sync);
        let a = p(&[
            "--root=/r",
            "--socket",
            "/s",
            "--udev-sync",
            "--data-size",
            "1G",
        ])
        .unwrap();
        assert_eq!(
            (a.root.to_str(), a.socket.to_str()),
            (Some("/r"), Some("/s"))
        );
        assert!(a.udev_sync);
        let o = a.set.options(None).unwrap();
        assert_eq!(
            o.storage,
            StorageOptions::LoopFiles {
                data_size: 1 << 30,
                metadata_size: 2 << 30
            }
        );
    }

    #[test]
    fn errors() {
        assert!(p(&["--bogus"]).unwrap_err().contains("unknown option"));
        assert!(p(&["--root"]).unwrap_err().contains("needs a value"));
        assert!(p(&["--data-size", "lots"])
            .unwrap_err()
            .contains("not a size"));
        assert!(p(&["--fs", "btrfs"]).is_err());
        let a = p(&["--data-dev", "/dev/x"]).unwrap();
        assert!(a.set.options(None).is_err(), "data without metadata device");
        let a = p(&["--pool", "p", "--data-size", "1G"]).unwrap();
        assert!(a.set.options(None).is_err());
    }

    #[test]
    fn recorded_options_are_kept_unless_given() {
        let recorded = Options {
            base_size: 1 << 30,
            filesystem: FsKind::Xfs,
            ..Options::default()
        };
        let a = p(&["--base-size", "2G"]).unwrap();
        let o = a.set.options(Some(recorded)).unwrap();
        assert_eq!((o.base_size, o.filesystem), (2 << 30, FsKind::Xfs));
    }

    #[test]
    fn discard_on_remove_is_off_for_a_new_set_unless_asked() {
        let new = |args: &[&str]| p(args).unwrap().set.options(None).unwrap();
        assert_eq!(new(&[]).remove_discard, Some(false));
        assert_eq!(new(&["--discard-on-remove"]).remove_discard, Some(true));
        let on = Options {
            remove_discard: Some(true),
            ..Options::default()
        };
        let a = p(&[]).unwrap();
        let kept = a.set.options(Some(on.clone())).unwrap();
        assert_eq!(kept.remove_discard, Some(true), "a recorded choice is kept");
        let a = p(&["--no-discard-on-remove"]).unwrap();
        let off = a.set.options(Some(on)).unwrap();
        assert_eq!(off.remove_discard, Some(false));
        let a = p(&[]).unwrap();
        let unset = a.set.options(Some(Options::default())).unwrap();
        assert_eq!(
            unset.remove_discard, None,
            "an adopted set's default stays its own"
        );
    }

    #[test]
    fn set_flags_are_read_as_dmthin_init_reads_them() {
        let o = |args: &[&str]| p(args).unwrap().set.options(None).unwrap();
        assert_eq!(o(&["--min-free", "5%"]).min_free_space_percent, 5);
        assert_eq!(o(&["--min-free=7"]).min_free_space_percent, 7);
        assert!(!o(&["--no-zeroing"]).block_zeroing);
        assert_eq!(
            p(&["--min-free", "many"]).unwrap_err(),
            "--min-free: 'many' is not a percentage"
        );
        assert!(p(&["--no-zeroing=1"])
            .unwrap_err()
            .contains("takes no value"));
        assert!(
            p(&["--mount-options", "ro"])
                .unwrap_err()
                .contains("unknown option"),
            "only the flags the usage lists"
        );
    }
}
