//! What the CLI prints: JSON, tables, human-readable sizes, and the two
//! streams they go to.
//!
//! Stdout: commands write to the `out: &mut dyn Write` they are given and
//! `?` turns a failed write into a [`CliError`]. A reader that went away
//! (EPIPE; Rust ignores SIGPIPE, so the write fails instead of killing us)
//! becomes [`CliError::BrokenPipe`]: the command stops quietly and exits 141.
//!
//! Stderr: [`err`]/[`errln`] never fail. If stderr is gone there is nowhere
//! left to report anything.

use std::fmt;
use std::io::{self, Write};

use dmthin::deviceset::{DeviceSummary, SetStatus, TrimReport};
use dmthin::loopdev::LoopStatus;

use crate::{CliError, CliResult};

impl From<io::Error> for CliError {
    /// Only writes to stdout produce `io::Error`s in the CLI.
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            CliError::BrokenPipe
        } else {
            CliError::Failed(format!("writing to stdout: {e}"))
        }
    }
}

/// Writes to stderr, ignoring failure.
pub(crate) fn err(args: fmt::Arguments) {
    let _ = io::stderr().write_fmt(args);
}

/// Writes a line to stderr, ignoring failure.
pub(crate) fn errln(args: fmt::Arguments) {
    err(format_args!("{args}\n"));
}

/// Turns a library error into [`CliError::Failed`].
pub(crate) fn failed(e: impl fmt::Display) -> CliError {
    CliError::Failed(e.to_string())
}

pub(crate) fn print_json<T: serde::Serialize>(out: &mut dyn Write, value: &T) -> CliResult {
    let s = serde_json::to_string_pretty(value).map_err(failed)?;
    Ok(writeln!(out, "{s}")?)
}

/// Human-readable bytes, in powers of 1024.
pub(crate) fn human(bytes: u64) -> String {
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

/// `dmthin loop list`: columns padded to their widest cell, the backing file
/// last and unpadded.
pub(crate) fn loop_table(out: &mut dyn Write, all: &[LoopStatus]) -> CliResult {
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
    let mut line = |cells: [&str; 7]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == 6 {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$} ", w = widths[i]));
            }
        }
        writeln!(out, "{s}")
    };
    line(header)?;
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5], &r[6]])?;
    }
    Ok(())
}

/// `dmthin list`.
pub(crate) fn device_table(out: &mut dyn Write, list: &[DeviceSummary]) -> CliResult {
    writeln!(
        out,
        "{:<24} {:<16} {:>6} {:>10} {:>10} {:<6} MOUNTED",
        "ID", "PARENT", "THIN", "SIZE", "MAPPED", "ACTIVE"
    )?;
    for d in list {
        writeln!(
            out,
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
        )?;
    }
    Ok(())
}

/// `dmthin trim`: each mount's trimmed bytes, then what the host got back.
pub(crate) fn trim_text(out: &mut dyn Write, r: &TrimReport) -> CliResult {
    if r.mounts.is_empty() {
        writeln!(out, "no mounted devices")?;
    }
    for m in &r.mounts {
        match (&m.trimmed, &m.error) {
            (Some(n), _) => writeln!(out, "{} {}: {} trimmed", m.id, m.path.display(), human(*n))?,
            (None, e) => writeln!(
                out,
                "{} {}: failed: {}",
                m.id,
                m.path.display(),
                e.as_deref().unwrap_or("?")
            )?,
        }
    }
    if let Some(n) = r.host_reclaimed {
        writeln!(out, "host got back {} ({} bytes)", human(n), n)?;
    }
    let failed = r.mounts.iter().filter(|m| m.error.is_some()).count();
    if failed > 0 {
        return Err(CliError::Failed(format!(
            "fstrim failed on {failed} of {} mounts",
            r.mounts.len()
        )));
    }
    Ok(())
}

/// `dmthin status` (and what `init` and `grow-pool` print).
pub(crate) fn status_text(out: &mut dyn Write, st: &SetStatus) -> CliResult {
    let pct = |used: u64, total: u64| {
        if total == 0 {
            0.0
        } else {
            used as f64 * 100.0 / total as f64
        }
    };
    writeln!(out, "Pool:            {}", st.pool_name)?;
    if let Some(d) = &st.data_source {
        writeln!(out, "Data:            {}", d.display())?;
    }
    if let Some(m) = &st.metadata_source {
        writeln!(out, "Metadata:        {}", m.display())?;
    }
    writeln!(
        out,
        "Data space:      {} of {} used ({:.1}%)",
        human(st.data_used),
        human(st.data_total),
        pct(st.data_used, st.data_total)
    )?;
    if let Some(a) = st.data_allocated {
        writeln!(out, "Data file:       {} allocated on the host", human(a))?;
    }
    writeln!(
        out,
        "Metadata space:  {} of {} used ({:.1}%)",
        human(st.metadata_used),
        human(st.metadata_total),
        pct(st.metadata_used, st.metadata_total)
    )?;
    writeln!(out, "Block size:      {}", human(st.data_block_size))?;
    writeln!(
        out,
        "Mode:            {}{}",
        st.mode,
        if st.needs_check { " (needs_check)" } else { "" }
    )?;
    writeln!(out, "Transaction id:  {}", st.transaction_id)?;
    writeln!(
        out,
        "Base:            {} {}",
        st.filesystem,
        human(st.base_size)
    )?;
    writeln!(out, "Devices:         {}", st.devices)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stdout whose every write fails with `errno`.
    struct Failing(i32);

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(self.0))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Stdout after the reader went away.
    fn closed_pipe() -> Failing {
        Failing(nix::libc::EPIPE)
    }

    #[test]
    fn a_closed_stdout_is_a_broken_pipe() {
        assert!(matches!(
            print_json(&mut closed_pipe(), &[1, 2, 3]),
            Err(CliError::BrokenPipe)
        ));
        assert!(matches!(
            loop_table(&mut closed_pipe(), &[]),
            Err(CliError::BrokenPipe)
        ));
        assert!(matches!(
            device_table(&mut closed_pipe(), &[]),
            Err(CliError::BrokenPipe)
        ));
        // Through a whole command: `dmthin --help | head -c1`.
        assert!(matches!(
            crate::run(&["--help".into()], &mut closed_pipe()),
            Err(CliError::BrokenPipe)
        ));
    }

    #[test]
    fn other_write_errors_fail() {
        match print_json(&mut Failing(nix::libc::ENOSPC), &"x") {
            Err(CliError::Failed(m)) => assert!(m.starts_with("writing to stdout: "), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1024), "1.0 KiB");
        assert_eq!(human(64 << 20), "64.0 MiB");
        assert_eq!(human(3 << 29), "1.5 GiB");
        assert_eq!(human(u64::MAX), "16384.0 PiB");
    }

    #[test]
    fn empty_loop_table_is_the_header() {
        let mut out = Vec::new();
        loop_table(&mut out, &[]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "DEVICE OFFSET SIZELIMIT RO AUTOCLEAR DIO BACKING-FILE\n"
        );
    }
}
