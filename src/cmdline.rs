//! Command-line parsing for the programs built on this crate (the `dmthin`
//! CLI and the snapshotter), by hand: no parser dependency keeps their
//! static binaries small.
//!
//! A command lists what it takes in a [`Spec`]: switches (`--name`) and
//! options with a value (`--name VALUE` or `--name=VALUE`). [`Spec::parse`]
//! hands back the [`Args`], or an [`ArgError`] naming the argument that was
//! wrong. `-h`/`--help` is always taken; `--` ends the options.
//!
//! ```
//! use dmthin::cmdline::Spec;
//! const SPEC: Spec = Spec { switches: &["--json"], valued: &["--size"] };
//! let args = SPEC.parse(["--size=1G", "dev0", "--json"]).unwrap();
//! assert!(args.has("--json"));
//! assert_eq!(args.size("--size").unwrap(), Some(1 << 30));
//! assert_eq!(args.one("DEVICE").unwrap(), "dev0");
//! ```

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};

use crate::size::parse_size;

/// What a command takes.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Switches (`--name`).
    pub switches: &'static [&'static str],
    /// Options with a value (`--name VALUE` or `--name=VALUE`).
    pub valued: &'static [&'static str],
}

/// An argument a command does not take, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    /// An option that is not in the [`Spec`].
    #[error("unknown option '{0}'")]
    Unknown(String),
    /// An option given without its value.
    #[error("{0} needs a value")]
    NeedsValue(&'static str),
    /// A switch given a value (`--json=1`).
    #[error("{0} takes no value")]
    TakesNoValue(&'static str),
    /// A positional argument that is not there.
    #[error("missing {0}")]
    Missing(String),
    /// A positional argument too many; `hint` says what to do instead.
    #[error("unexpected argument '{arg}'{hint}")]
    Unexpected {
        /// The argument.
        arg: String,
        /// Appended to the message, as given.
        hint: String,
    },
    /// A value that is not a size (`64K`, `10G`).
    #[error("{}'{value}' is not a size", option.map(|o| format!("{o}: ")).unwrap_or_default())]
    NotASize {
        /// The option it came with, if any.
        option: Option<&'static str>,
        /// What was given.
        value: String,
    },
}

/// A parsed command line: positionals, the switches given, and options with
/// their values (the last one given of each).
#[derive(Debug, Clone, Default)]
pub struct Args {
    /// Arguments that are not options, in order (everything after `--` too).
    pub positionals: Vec<OsString>,
    /// `-h` or `--help` was given.
    pub help: bool,
    switches: HashSet<&'static str>,
    values: HashMap<&'static str, OsString>,
}

impl Spec {
    /// Parses `args` (the arguments after the command's name).
    pub fn parse<I, S>(&self, args: I) -> Result<Args, ArgError>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let mut p = Args::default();
        let mut it = args.into_iter().map(Into::into);
        while let Some(arg) = it.next() {
            let Some(s) = arg.to_str().filter(|s| s.starts_with('-') && s.len() > 1) else {
                p.positionals.push(arg);
                continue;
            };
            if s == "--" {
                p.positionals.extend(it);
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
            if let Some(&switch) = self.switches.iter().find(|&&sw| sw == name) {
                if inline.is_some() {
                    return Err(ArgError::TakesNoValue(switch));
                }
                p.switches.insert(switch);
            } else if let Some(&opt) = self.valued.iter().find(|&&o| o == name) {
                let value = match inline {
                    Some(v) => v,
                    None => it.next().ok_or(ArgError::NeedsValue(opt))?,
                };
                p.values.insert(opt, value);
            } else {
                return Err(ArgError::Unknown(s.to_string()));
            }
        }
        Ok(p)
    }
}

impl Args {
    /// Whether switch `switch` was given.
    pub fn has(&self, switch: &str) -> bool {
        self.switches.contains(switch)
    }

    /// The value of option `opt` as text (not UTF-8: replaced), if given.
    pub fn value(&self, opt: &str) -> Option<String> {
        self.value_os(opt).map(|v| v.to_string_lossy().into_owned())
    }

    /// The value of option `opt` as given (for a path), if given.
    pub fn value_os(&self, opt: &str) -> Option<&OsStr> {
        self.values.get(opt).map(OsString::as_os_str)
    }

    /// The value of option `opt` as a size, if given.
    pub fn size(&self, opt: &'static str) -> Result<Option<u64>, ArgError> {
        self.value(opt).map(|s| size_arg(&s, Some(opt))).transpose()
    }

    /// The one positional argument, named `what` in the error when missing.
    pub fn one(&self, what: &str) -> Result<&OsString, ArgError> {
        match self.positionals.as_slice() {
            [one] => Ok(one),
            [] => Err(ArgError::Missing(what.to_string())),
            [_, extra, ..] => Err(unexpected(extra, "")),
        }
    }

    /// Fails on any positional argument.
    pub fn none(&self) -> Result<(), ArgError> {
        self.none_or("")
    }

    /// Fails on any positional argument, `hint` appended to the message.
    pub fn none_or(&self, hint: &str) -> Result<(), ArgError> {
        match self.positionals.first() {
            None => Ok(()),
            Some(a) => Err(unexpected(a, hint)),
        }
    }
}

fn unexpected(arg: &OsStr, hint: &str) -> ArgError {
    ArgError::Unexpected {
        arg: arg.to_string_lossy().into_owned(),
        hint: hint.to_string(),
    }
}

/// `a` followed by `b`: a [`Spec`] list made of shared ones, in a const
/// (`N` is their total length; anything else fails the build).
pub const fn concat<const N: usize>(a: &[&'static str], b: &[&'static str]) -> [&'static str; N] {
    assert!(a.len() + b.len() == N, "N is not the total length");
    let mut all = [""; N];
    let mut i = 0;
    while i < N {
        all[i] = if i < a.len() { a[i] } else { b[i - a.len()] };
        i += 1;
    }
    all
}

/// A size argument (`64K`, `10G`); `option`, the one it came with, names it
/// in the error.
pub fn size_arg(s: &str, option: Option<&'static str>) -> Result<u64, ArgError> {
    parse_size(s).ok_or_else(|| ArgError::NotASize {
        option,
        value: s.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn parse(
        args: &[&str],
        switches: &'static [&'static str],
        valued: &'static [&'static str],
    ) -> Result<Args, ArgError> {
        Spec { switches, valued }.parse(args.iter().copied())
    }

    #[test]
    fn switches_values_and_positionals() {
        let p = parse(
            &["f", "--ro", "--bs=512", "--off", "1M", "--", "--x"],
            &["--ro"],
            &["--bs", "--off"],
        )
        .unwrap();
        assert!(p.has("--ro") && !p.help);
        assert_eq!(p.size("--bs").unwrap(), Some(512));
        assert_eq!(p.size("--off").unwrap(), Some(1 << 20));
        assert_eq!(p.value_os("--bs"), Some(OsStr::new("512")));
        assert_eq!(p.positionals, os(&["f", "--x"]));
        assert!(parse(&["-h"], &[], &[]).unwrap().help);
        let last = parse(&["--bs", "1", "--bs", "2"], &[], &["--bs"]).unwrap();
        assert_eq!(last.value("--bs").as_deref(), Some("2"));
    }

    #[test]
    fn errors_name_the_argument() {
        let err = |args: &[&str]| parse(args, &["--ro"], &["--bs"]).unwrap_err().to_string();
        assert_eq!(err(&["--nope"]), "unknown option '--nope'");
        assert_eq!(err(&["--bs"]), "--bs needs a value");
        assert_eq!(err(&["--ro=1"]), "--ro takes no value");
        let p = parse(&["--bs", "lots"], &[], &["--bs"]).unwrap();
        assert_eq!(
            p.size("--bs").unwrap_err().to_string(),
            "--bs: 'lots' is not a size"
        );
        assert_eq!(
            size_arg("x", None).unwrap_err().to_string(),
            "'x' is not a size"
        );
    }

    #[test]
    fn lists_concatenate() {
        const ALL: [&str; 3] = concat(&["-a"], &["-b", "-c"]);
        assert_eq!(ALL, ["-a", "-b", "-c"]);
    }

    #[test]
    fn positionals() {
        let p = |v: &[&str]| parse(v, &[], &[]).unwrap();
        assert_eq!(p(&["a"]).one("ID").unwrap(), "a");
        assert_eq!(p(&[]).one("ID").unwrap_err().to_string(), "missing ID");
        assert_eq!(
            p(&["a", "b", "c"]).one("ID").unwrap_err().to_string(),
            "unexpected argument 'b'"
        );
        assert!(p(&[]).none().is_ok());
        assert_eq!(
            p(&["a"]).none_or(" (hint)").unwrap_err().to_string(),
            "unexpected argument 'a' (hint)"
        );
    }
}
