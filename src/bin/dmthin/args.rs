//! Command-line parsing, by hand (no parser dependency: the static binary
//! stays small).
//!
//! A command describes itself with a [`Spec`] (its switches, its options
//! that take a value, its help text); [`Spec::parse`] prints the help for
//! `-h`/`--help` and otherwise hands back the [`Parsed`] arguments.

use dmthin::size::parse_size;
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::Write;

use crate::CliError;

/// What a command accepts.
pub(crate) struct Spec {
    /// Switches (`--name`).
    pub switches: &'static [&'static str],
    /// Options with a value (`--name VALUE` or `--name=VALUE`).
    pub valued: &'static [&'static str],
    /// The help command suggested after a usage error.
    pub help: &'static str,
    /// What `-h`/`--help` prints.
    pub usage: &'static str,
}

impl Spec {
    /// Parses `args`; `None` when `-h`/`--help` was given (the usage is
    /// then written to `out` and the command has nothing left to do).
    pub fn parse(
        &self,
        args: &[OsString],
        out: &mut dyn Write,
    ) -> Result<Option<Parsed>, CliError> {
        let p = parse_args(args, self.switches, self.valued, self.help)?;
        if p.help {
            write!(out, "{}", self.usage)?;
            return Ok(None);
        }
        Ok(Some(p))
    }
}

/// A parsed command line: positionals, switches that were given, and options
/// with their values.
pub(crate) struct Parsed {
    pub positionals: Vec<OsString>,
    switches: HashSet<&'static str>,
    values: HashMap<&'static str, OsString>,
    help: bool,
    /// The help command suggested after a usage error.
    usage_help: &'static str,
}

impl Parsed {
    pub fn has(&self, switch: &str) -> bool {
        self.switches.contains(switch)
    }

    /// The value of option `opt`, if given.
    pub fn value(&self, opt: &str) -> Option<String> {
        self.values
            .get(opt)
            .map(|v| v.to_string_lossy().into_owned())
    }

    /// The value of option `opt` as a size, if given.
    pub fn size(&self, opt: &'static str) -> Result<Option<u64>, CliError> {
        self.value(opt)
            .map(|s| size_arg(&s, Some(opt), self.usage_help))
            .transpose()
    }

    /// The one positional argument, named `what` in the error when missing.
    pub fn one(&self, what: &str) -> Result<&OsString, CliError> {
        match self.positionals.as_slice() {
            [one] => Ok(one),
            [] => Err(self.usage(format!("missing {what}"))),
            [_, extra, ..] => Err(self.unexpected(extra, "")),
        }
    }

    /// Fails on any positional argument.
    pub fn none(&self) -> Result<(), CliError> {
        self.none_or("")
    }

    /// Fails on any positional argument, `hint` appended to the message.
    pub fn none_or(&self, hint: &str) -> Result<(), CliError> {
        match self.positionals.first() {
            None => Ok(()),
            Some(a) => Err(self.unexpected(a, hint)),
        }
    }

    /// A usage error suggesting this command's help.
    pub fn usage(&self, msg: String) -> CliError {
        CliError::Usage(msg, self.usage_help)
    }

    fn unexpected(&self, arg: &OsString, hint: &str) -> CliError {
        self.usage(format!(
            "unexpected argument '{}'{hint}",
            arg.to_string_lossy()
        ))
    }
}

/// Parse `args` against the allowed `switches` (`--name`) and `valued`
/// options (`--name VALUE` or `--name=VALUE`). `--` ends the options.
pub(crate) fn parse_args(
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
        usage_help: help,
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

/// A size argument; `opt` (the option it came with) prefixes the error.
pub(crate) fn size_arg(s: &str, opt: Option<&str>, help: &'static str) -> Result<u64, CliError> {
    parse_size(s).ok_or_else(|| {
        let msg = match opt {
            Some(opt) => format!("{opt}: '{s}' is not a size"),
            None => format!("'{s}' is not a size"),
        };
        CliError::Usage(msg, help)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn usage_msg(e: CliError) -> String {
        match e {
            CliError::Usage(m, "h") => m,
            other => panic!("not a usage error for 'h': {other:?}"),
        }
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
        assert_eq!(p.size("--bs").ok().unwrap(), Some(512));
        assert_eq!(p.size("--off").ok().unwrap(), Some(1 << 20));
        assert_eq!(p.positionals, os(&["f", "--x"]));
        assert!(parse_args(&os(&["--nope"]), &[], &[], "h").is_err());
        assert!(parse_args(&os(&["--bs"]), &[], &["--bs"], "h").is_err());
        assert!(parse_args(&os(&["--ro=1"]), &["--ro"], &[], "h").is_err());
        assert!(parse_args(&os(&["-h"]), &[], &[], "h").ok().unwrap().help);
    }

    #[test]
    fn positionals() {
        let p = |v: &[&str]| parse_args(&os(v), &[], &[], "h").ok().unwrap();
        assert_eq!(p(&["a"]).one("ID").unwrap(), "a");
        assert_eq!(usage_msg(p(&[]).one("ID").unwrap_err()), "missing ID");
        assert_eq!(
            usage_msg(p(&["a", "b", "c"]).one("ID").unwrap_err()),
            "unexpected argument 'b'"
        );
        assert!(p(&[]).none().is_ok());
        assert_eq!(
            usage_msg(p(&["a"]).none_or(" (hint)").unwrap_err()),
            "unexpected argument 'a' (hint)"
        );
    }

    #[test]
    fn help_prints_the_usage() {
        let spec = Spec {
            switches: &["--json"],
            valued: &[],
            help: "h",
            usage: "Usage: x\n",
        };
        let mut out = Vec::new();
        assert!(spec
            .parse(&os(&["--json", "-h"]), &mut out)
            .unwrap()
            .is_none());
        assert_eq!(out, b"Usage: x\n");
        // An unknown option wins over --help, as before.
        assert!(spec.parse(&os(&["--help", "--nope"]), &mut out).is_err());
        let p = spec.parse(&os(&["--json"]), &mut Vec::new()).unwrap();
        assert!(p.unwrap().has("--json"));
    }
}
