//! Command-line parsing: the library's [`cmdline`] (shared with the
//! snapshotter), with each command's help.
//!
//! A command describes itself with a [`Spec`] (its switches, its options
//! that take a value, its help text); [`Spec::parse`] prints the help for
//! `-h`/`--help` and otherwise hands back the [`Parsed`] arguments. Every
//! argument error is a usage error that points at the command's help.

use std::ffi::OsString;
use std::io::Write;
use std::ops::Deref;

use dmthin::cmdline::{self, ArgError};

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
        let spec = cmdline::Spec {
            switches: self.switches,
            valued: self.valued,
        };
        let usage = |e: ArgError| CliError::Usage(e.to_string(), self.help);
        let args = spec.parse(args.iter().cloned()).map_err(usage)?;
        if args.help {
            write!(out, "{}", self.usage)?;
            return Ok(None);
        }
        Ok(Some(Parsed {
            args,
            usage_help: self.help,
        }))
    }
}

/// A command's parsed arguments: [`cmdline::Args`] (`has`, `value`,
/// `positionals` through `Deref`), whose fallible look-ups here return
/// usage errors.
pub(crate) struct Parsed {
    args: cmdline::Args,
    /// The help command suggested after a usage error.
    usage_help: &'static str,
}

impl Deref for Parsed {
    type Target = cmdline::Args;

    fn deref(&self) -> &cmdline::Args {
        &self.args
    }
}

impl Parsed {
    /// The value of option `opt` as a size, if given.
    pub fn size(&self, opt: &'static str) -> Result<Option<u64>, CliError> {
        self.args.size(opt).map_err(|e| self.arg_error(e))
    }

    /// The one positional argument, named `what` in the error when missing.
    pub fn one(&self, what: &str) -> Result<&OsString, CliError> {
        self.args.one(what).map_err(|e| self.arg_error(e))
    }

    /// Fails on any positional argument.
    pub fn none(&self) -> Result<(), CliError> {
        self.none_or("")
    }

    /// Fails on any positional argument, `hint` appended to the message.
    pub fn none_or(&self, hint: &str) -> Result<(), CliError> {
        self.args.none_or(hint).map_err(|e| self.arg_error(e))
    }

    /// A size argument that came without an option (a positional).
    pub fn size_arg(&self, s: &str) -> Result<u64, CliError> {
        cmdline::size_arg(s, None).map_err(|e| self.arg_error(e))
    }

    /// A usage error suggesting this command's help.
    pub fn usage(&self, msg: String) -> CliError {
        CliError::Usage(msg, self.usage_help)
    }

    fn arg_error(&self, e: ArgError) -> CliError {
        self.usage(e.to_string())
    }
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

    const SPEC: Spec = Spec {
        switches: &["--json"],
        valued: &["--size"],
        help: "h",
        usage: "Usage: x\n",
    };

    #[test]
    fn help_prints_the_usage() {
        let mut out = Vec::new();
        assert!(SPEC
            .parse(&os(&["--json", "-h"]), &mut out)
            .unwrap()
            .is_none());
        assert_eq!(out, b"Usage: x\n");
        // An unknown option wins over --help, as before.
        assert!(SPEC.parse(&os(&["--help", "--nope"]), &mut out).is_err());
        let p = SPEC.parse(&os(&["--json"]), &mut Vec::new()).unwrap();
        assert!(p.unwrap().has("--json"));
    }

    #[test]
    fn argument_errors_are_usage_errors_naming_the_help() {
        let parse = |v: &[&str]| SPEC.parse(&os(v), &mut Vec::new());
        let err = |v: &[&str]| usage_msg(parse(v).err().unwrap());
        assert_eq!(err(&["--nope"]), "unknown option '--nope'");
        assert_eq!(err(&["--size"]), "--size needs a value");
        let p = parse(&["--size", "lots", "a", "b"]).unwrap().unwrap();
        assert_eq!(
            usage_msg(p.size("--size").unwrap_err()),
            "--size: 'lots' is not a size"
        );
        assert_eq!(
            usage_msg(p.one("ID").unwrap_err()),
            "unexpected argument 'b'"
        );
        assert_eq!(usage_msg(p.none().unwrap_err()), "unexpected argument 'a'");
        assert_eq!(usage_msg(p.size_arg("x").unwrap_err()), "'x' is not a size");
        assert_eq!(p.positionals, os(&["a", "b"]));
    }
}
