//! Command-line options.

use dmthin::cmdline::{concat, Spec};
use dmthin::deviceset::{OptionFlags, Options};
use std::ffi::OsString;
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
  --mount-options OPTS    Mount options of the set's own mounts (the
                          template); containerd's mounts get their own
  --min-free PERCENT      Refuse new snapshots below this free pool space (10)
  --no-zeroing            Do not zero newly provisioned blocks (--zeroing: do)
  --deferred-removal      Remove a busy device when its last user closes it
                          (--no-deferred-removal: off, the default)
  --deferred-deletion     Delete a thin still open in the pool later
                          (--no-deferred-deletion: off, the default)
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

/// The snapshotter's own switches.
const OWN_SWITCHES: &[&str] = &[
    "-V",
    "--version",
    "--udev-sync",
    "--no-udev-sync",
    "--teardown-on-exit",
    "--autoextend",
];

/// The snapshotter's own options with a value.
const OWN_VALUED: &[&str] = &["--root", "--socket", "--log-level"];

/// What the snapshotter takes: its own options and every set option
/// `dmthin init` takes ([`OptionFlags`]).
const SPEC: Spec = Spec {
    switches: &concat::<{ OWN_SWITCHES.len() + OptionFlags::SWITCHES.len() }>(
        OWN_SWITCHES,
        OptionFlags::SWITCHES,
    ),
    valued: &concat::<{ OWN_VALUED.len() + OptionFlags::VALUED.len() }>(
        OWN_VALUED,
        OptionFlags::VALUED,
    ),
};

/// Parses the arguments after the program name.
pub fn parse<I, S>(argv: I) -> Result<Args, String>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let p = SPEC.parse(argv).map_err(|e| e.to_string())?;
    p.none().map_err(|e| e.to_string())?;
    let path = |opt, default: &str| p.value_os(opt).map_or(default.into(), PathBuf::from);
    Ok(Args {
        root: path("--root", DEFAULT_ROOT),
        socket: path("--socket", DEFAULT_SOCKET),
        set: SetArgs(OptionFlags::from_args(&p).map_err(|e| e.to_string())?),
        // Off wins over on, as for the set's switches.
        udev_sync: p.has("--udev-sync") && !p.has("--no-udev-sync"),
        teardown: p.has("--teardown-on-exit"),
        autoextend: p.has("--autoextend"),
        log_level: p.value("--log-level"),
        help: p.help,
        version: p.has("-V") || p.has("--version"),
    })
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
        assert_eq!(p(&["extra"]).unwrap_err(), "unexpected argument 'extra'");
        assert!(p(&["-V"]).unwrap().version && p(&["--help"]).unwrap().help);
        assert!(p(&["--autoextend=1"])
            .unwrap_err()
            .contains("takes no value"));
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
        let every = o(&[
            "--zeroing",
            "--deferred-deletion",
            "--mount-options",
            "noatime",
        ]);
        assert!(every.block_zeroing && every.deferred_deletion);
        assert_eq!(every.mount_options, ["noatime"]);
        for flag in OptionFlags::VALUED.iter().chain(OptionFlags::SWITCHES) {
            assert!(USAGE.contains(flag), "the usage lists {flag}");
        }
    }
}
