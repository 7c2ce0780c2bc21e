//! Set options as an operator writes them on a command line:
//! [`OptionFlags`], the one reading of `--data-size 1G`, `--min-free 10%`,
//! `--fs xfs` and the rest, shared by `dmthin init` and the snapshotter.

use std::path::PathBuf;

use super::options::{Options, StorageOptions};
use super::store::FsKind;
use crate::cmdline::Args;
use crate::size::parse_size;

/// A flag given with a value it cannot take, or flags that do not go
/// together. The message names the flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    /// `flag` got `value`, which is not what it takes (`expected`).
    #[error("{flag}: '{value}' is not {expected}")]
    BadValue {
        /// The flag, `--min-free` say.
        flag: String,
        /// What was given.
        value: String,
        /// What it takes: `a size`, `a percentage`, ...
        expected: &'static str,
    },
    /// A switch given a value.
    #[error("{0} takes no value")]
    NoValueTaken(String),
    /// An option given without its value.
    #[error("{0} needs a value")]
    ValueNeeded(String),
    /// Not one of [`OptionFlags::VALUED`] or [`OptionFlags::SWITCHES`].
    #[error("unknown option '{0}'")]
    Unknown(String),
    /// Flags that do not go together.
    #[error("{0}")]
    Conflict(&'static str),
}

/// The set options a command line gave, each `None` where not given, laid
/// over the recorded options of an existing set or the defaults by
/// [`OptionFlags::options`].
///
/// ```
/// use dmthin::deviceset::{OptionFlags, StorageOptions};
/// let mut flags = OptionFlags::default();
/// flags.set("--data-size", Some("1G")).unwrap();
/// flags.set("--min-free", Some("5%")).unwrap();
/// let o = flags.options(None).unwrap();
/// assert_eq!(o.min_free_space_percent, 5);
/// assert!(matches!(o.storage, StorageOptions::LoopFiles { data_size: 0x4000_0000, .. }));
/// ```
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OptionFlags {
    data_size: Option<u64>,
    metadata_size: Option<u64>,
    data_dev: Option<PathBuf>,
    metadata_dev: Option<PathBuf>,
    pool: Option<String>,
    block_size: Option<u64>,
    base_size: Option<u64>,
    filesystem: Option<FsKind>,
    mkfs_options: Option<Vec<String>>,
    mount_options: Option<Vec<String>>,
    min_free_percent: Option<u32>,
    block_zeroing: Option<bool>,
    deferred_removal: Option<bool>,
    deferred_deletion: Option<bool>,
    remove_discard: Option<bool>,
}

impl OptionFlags {
    /// The flags that take a value (`--name VALUE`).
    pub const VALUED: &'static [&'static str] = &[
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
    ];

    /// The switches: on/off pairs, of which off wins when both are given.
    pub const SWITCHES: &'static [&'static str] = &[
        "--zeroing",
        "--no-zeroing",
        "--deferred-removal",
        "--no-deferred-removal",
        "--deferred-deletion",
        "--no-deferred-deletion",
        "--discard-on-remove",
        "--no-discard-on-remove",
    ];

    /// The set flags among parsed command-line arguments: each of
    /// [`VALUED`](Self::VALUED) and [`SWITCHES`](Self::SWITCHES) that `args`
    /// holds (what its [`Spec`](crate::cmdline::Spec) let through).
    pub fn from_args(args: &Args) -> Result<OptionFlags, FlagError> {
        let mut flags = OptionFlags::default();
        for &switch in Self::SWITCHES.iter().filter(|s| args.has(s)) {
            flags.set(switch, None)?;
        }
        for &opt in Self::VALUED {
            if let Some(value) = args.value(opt) {
                flags.set(opt, Some(&value))?;
            }
        }
        Ok(flags)
    }

    /// Takes flag `flag` (one of [`VALUED`](Self::VALUED), with its value,
    /// or of [`SWITCHES`](Self::SWITCHES), with `None`).
    pub fn set(&mut self, flag: &str, value: Option<&str>) -> Result<(), FlagError> {
        let setting = match flag {
            "--zeroing" | "--no-zeroing" => Some(&mut self.block_zeroing),
            "--deferred-removal" | "--no-deferred-removal" => Some(&mut self.deferred_removal),
            "--deferred-deletion" | "--no-deferred-deletion" => Some(&mut self.deferred_deletion),
            "--discard-on-remove" | "--no-discard-on-remove" => Some(&mut self.remove_discard),
            _ => None,
        };
        if let Some(setting) = setting {
            if value.is_some() {
                return Err(FlagError::NoValueTaken(flag.to_string()));
            }
            // Off wins over on, whatever their order.
            let on = !flag.starts_with("--no-");
            if !on || *setting != Some(false) {
                *setting = Some(on);
            }
            return Ok(());
        }
        if !Self::VALUED.contains(&flag) {
            return Err(FlagError::Unknown(flag.to_string()));
        }
        let value = value.ok_or_else(|| FlagError::ValueNeeded(flag.to_string()))?;
        let bad = |expected| FlagError::BadValue {
            flag: flag.to_string(),
            value: value.to_string(),
            expected,
        };
        let size = || parse_size(value).ok_or_else(|| bad("a size"));
        match flag {
            "--data-size" => self.data_size = Some(size()?),
            "--metadata-size" => self.metadata_size = Some(size()?),
            "--block-size" => self.block_size = Some(size()?),
            "--base-size" => self.base_size = Some(size()?),
            "--data-dev" => self.data_dev = Some(value.into()),
            "--metadata-dev" => self.metadata_dev = Some(value.into()),
            "--pool" => self.pool = Some(value.to_string()),
            "--fs" => self.filesystem = Some(value.parse().map_err(|_| bad("ext4 or xfs"))?),
            "--mkfs-options" => {
                self.mkfs_options = Some(value.split_whitespace().map(str::to_string).collect())
            }
            "--mount-options" => {
                let opts = value.split(',').filter(|s| !s.is_empty());
                self.mount_options = Some(opts.map(str::to_string).collect())
            }
            "--min-free" => {
                let percent = value.strip_suffix('%').unwrap_or(value);
                self.min_free_percent = Some(percent.parse().map_err(|_| bad("a percentage"))?)
            }
            other => return Err(FlagError::Unknown(other.to_string())),
        }
        Ok(())
    }

    /// The options to open a set with: `recorded` (an existing set's, from
    /// [`DeviceSet::recorded_options`](super::DeviceSet::recorded_options))
    /// or the defaults, with every flag given laid over them. An existing
    /// set's loop files only grow: a smaller size keeps the one it has.
    pub fn options(&self, recorded: Option<Options>) -> Result<Options, FlagError> {
        let existing = recorded.is_some();
        let mut o = recorded.unwrap_or_default();
        match (&self.data_dev, &self.metadata_dev, &self.pool) {
            (Some(data), Some(metadata), None) => {
                o.storage = StorageOptions::BlockDevices {
                    data: data.clone(),
                    metadata: metadata.clone(),
                }
            }
            (None, None, Some(name)) => {
                o.storage = StorageOptions::AdoptPool { name: name.clone() }
            }
            (None, None, None) => {}
            _ => {
                return Err(FlagError::Conflict(
                    "give both --data-dev and --metadata-dev, or --pool, or neither",
                ))
            }
        }
        if self.data_size.is_some() || self.metadata_size.is_some() {
            let StorageOptions::LoopFiles {
                data_size,
                metadata_size,
            } = &mut o.storage
            else {
                return Err(FlagError::Conflict(
                    "--data-size and --metadata-size are for loop files",
                ));
            };
            let pick = |have: u64, want: u64| if existing { have.max(want) } else { want };
            if let Some(d) = self.data_size {
                *data_size = pick(*data_size, d);
            }
            if let Some(m) = self.metadata_size {
                *metadata_size = pick(*metadata_size, m);
            }
        }
        let given = |value: &mut u64, flag: Option<u64>| *value = flag.unwrap_or(*value);
        given(&mut o.data_block_size, self.block_size);
        given(&mut o.base_size, self.base_size);
        o.filesystem = self.filesystem.unwrap_or(o.filesystem);
        if let Some(m) = &self.mkfs_options {
            o.mkfs_options = m.clone();
        }
        if let Some(m) = &self.mount_options {
            o.mount_options = m.clone();
        }
        o.min_free_space_percent = self.min_free_percent.unwrap_or(o.min_free_space_percent);
        o.block_zeroing = self.block_zeroing.unwrap_or(o.block_zeroing);
        o.deferred_removal = self.deferred_removal.unwrap_or(o.deferred_removal);
        o.deferred_deletion = self.deferred_deletion.unwrap_or(o.deferred_deletion);
        o.remove_discard = self.remove_discard.or(o.remove_discard);
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[(&str, Option<&str>)]) -> Result<OptionFlags, FlagError> {
        let mut f = OptionFlags::default();
        for (flag, value) in args {
            f.set(flag, *value)?;
        }
        Ok(f)
    }

    #[test]
    fn values_are_read_as_operators_write_them() {
        let o = flags(&[
            ("--data-size", Some("1G")),
            ("--metadata-size", Some("16M")),
            ("--block-size", Some("128K")),
            ("--base-size", Some("2G")),
            ("--fs", Some("xfs")),
            ("--mkfs-options", Some(" -m  crc=1 ")),
            ("--mount-options", Some("noatime,,ro")),
            ("--min-free", Some("7%")),
        ])
        .unwrap()
        .options(None)
        .unwrap();
        assert_eq!(
            o.storage,
            StorageOptions::LoopFiles {
                data_size: 1 << 30,
                metadata_size: 16 << 20
            }
        );
        assert_eq!(
            (o.data_block_size, o.base_size, o.filesystem),
            (128 << 10, 2 << 30, FsKind::Xfs)
        );
        assert_eq!(o.mkfs_options, ["-m", "crc=1"]);
        assert_eq!(o.mount_options, ["noatime", "ro"]);
        assert_eq!(o.min_free_space_percent, 7);
        let plain = flags(&[("--min-free", Some("12"))]).unwrap();
        assert_eq!(plain.options(None).unwrap().min_free_space_percent, 12);
    }

    #[test]
    fn every_listed_flag_is_taken() {
        let mut f = OptionFlags::default();
        for flag in OptionFlags::VALUED {
            let value = if *flag == "--fs" { "xfs" } else { "1" };
            f.set(flag, Some(value)).unwrap();
        }
        for flag in OptionFlags::SWITCHES {
            f.set(flag, None).unwrap();
        }
    }

    #[test]
    fn bad_values_name_the_flag() {
        let err = |flag, value| flags(&[(flag, value)]).unwrap_err().to_string();
        assert_eq!(
            err("--min-free", Some("ten")),
            "--min-free: 'ten' is not a percentage"
        );
        assert_eq!(
            err("--data-size", Some("lots")),
            "--data-size: 'lots' is not a size"
        );
        assert_eq!(
            err("--fs", Some("btrfs")),
            "--fs: 'btrfs' is not ext4 or xfs"
        );
        assert_eq!(err("--pool", None), "--pool needs a value");
        assert_eq!(err("--zeroing", Some("1")), "--zeroing takes no value");
        assert_eq!(err("--json", None), "unknown option '--json'");
        let mix = flags(&[("--data-dev", Some("/dev/x"))]).unwrap();
        assert!(matches!(mix.options(None), Err(FlagError::Conflict(_))));
        let both = flags(&[("--data-dev", Some("/dev/x")), ("--pool", Some("p"))]).unwrap();
        assert!(matches!(both.options(None), Err(FlagError::Conflict(_))));
        let sized = flags(&[("--pool", Some("p")), ("--data-size", Some("1G"))]).unwrap();
        assert_eq!(
            sized.options(None).unwrap_err().to_string(),
            "--data-size and --metadata-size are for loop files"
        );
    }

    #[test]
    fn storage_choices() {
        let o = flags(&[("--data-dev", Some("/d")), ("--metadata-dev", Some("/m"))])
            .unwrap()
            .options(None)
            .unwrap();
        assert_eq!(
            o.storage,
            StorageOptions::BlockDevices {
                data: "/d".into(),
                metadata: "/m".into()
            }
        );
        let o = flags(&[("--pool", Some("p"))])
            .unwrap()
            .options(None)
            .unwrap();
        assert_eq!(o.storage, StorageOptions::AdoptPool { name: "p".into() });
    }

    #[test]
    fn off_wins_over_on_and_unset_keeps_the_recorded_value() {
        let f = flags(&[
            ("--no-zeroing", None),
            ("--zeroing", None),
            ("--deferred-removal", None),
            ("--discard-on-remove", None),
            ("--no-discard-on-remove", None),
        ])
        .unwrap();
        let recorded = Options {
            deferred_deletion: true,
            ..Options::default()
        };
        let o = f.options(Some(recorded)).unwrap();
        assert!(!o.block_zeroing && o.deferred_removal && o.deferred_deletion);
        assert_eq!(o.remove_discard, Some(false));
        let none = OptionFlags::default().options(None).unwrap();
        assert_eq!(none.remove_discard, None);
        assert!(none.block_zeroing);
    }

    #[test]
    fn an_existing_sets_loop_files_only_grow() {
        let recorded = Options {
            storage: StorageOptions::LoopFiles {
                data_size: 4 << 30,
                metadata_size: 1 << 30,
            },
            base_size: 1 << 30,
            filesystem: FsKind::Xfs,
            ..Options::default()
        };
        let f = flags(&[
            ("--data-size", Some("1G")),
            ("--metadata-size", Some("2G")),
            ("--base-size", Some("2G")),
        ])
        .unwrap();
        let o = f.options(Some(recorded)).unwrap();
        assert_eq!(
            o.storage,
            StorageOptions::LoopFiles {
                data_size: 4 << 30,
                metadata_size: 2 << 30
            }
        );
        assert_eq!((o.base_size, o.filesystem), (2 << 30, FsKind::Xfs));
        let new = f.options(None).unwrap();
        assert!(matches!(
            new.storage,
            StorageOptions::LoopFiles {
                data_size: 0x4000_0000,
                ..
            }
        ));
    }
}
