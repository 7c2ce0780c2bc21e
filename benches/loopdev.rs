//! Cost of one loop attach+detach cycle: dmthin's library (LOOP_CONFIGURE and
//! the LOOP_SET_FD fallback), dmthin's CLI, and util-linux
//! `losetup -f --show FILE` + `losetup -d DEV`, measured in the same run.
//!
//! Needs root and /dev/loop-control; skips otherwise. After criterion's
//! groups, an interleaved head-to-head loop prints the median cycle of each
//! and the ratios (skipped with `--test`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::Criterion;
use dmthin::loopdev::{create_sparse_file, AttachOptions, LoopControl};

const CYCLES: usize = 200;

fn losetup() -> Option<PathBuf> {
    ["/usr/sbin/losetup", "/sbin/losetup", "/usr/bin/losetup"]
        .iter()
        .map(PathBuf::from)
        .find(|p| {
            Command::new(p)
                .arg("--version")
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("util-linux"))
        })
}

fn run(cmd: &Path, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect("spawn");
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        cmd.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One cycle through a command-line tool (`losetup` or `dmthin loop`).
fn tool_cycle(tool: &Path, attach: &[&str], detach: &[&str], file: &str) {
    let mut a = attach.to_vec();
    a.push(file);
    let dev = run(tool, &a);
    let mut d = detach.to_vec();
    d.push(&dev);
    run(tool, &d);
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .is_err()
    {
        eprintln!("loopdev bench skipped: /dev/loop-control cannot be opened (needs root)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("dmthin-loop-bench-{}", std::process::id()));
    let file = dir.join("backing");
    create_sparse_file(&file, 64 << 20).unwrap();
    let file_s = file.to_str().unwrap().to_string();
    let losetup = losetup();
    let cli = option_env!("CARGO_BIN_EXE_dmthin").map(PathBuf::from);
    let ctl = LoopControl::open().unwrap();
    let legacy = LoopControl::open().unwrap().without_configure();
    let opts = AttachOptions::new();
    let lib_cycle = |ctl: &LoopControl| ctl.attach(&file, &opts).unwrap().detach().unwrap();

    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    {
        let mut g = c.benchmark_group("loop_attach_detach");
        g.bench_function("dmthin_lib", |b| b.iter(|| lib_cycle(&ctl)));
        g.bench_function("dmthin_lib_set_fd", |b| b.iter(|| lib_cycle(&legacy)));
        if let Some(cli) = &cli {
            g.bench_function("dmthin_cli", |b| {
                b.iter(|| tool_cycle(cli, &["loop", "attach"], &["loop", "detach"], &file_s))
            });
        }
        if let Some(losetup) = &losetup {
            g.bench_function("losetup", |b| {
                b.iter(|| tool_cycle(losetup, &["-f", "--show"], &["-d"], &file_s))
            });
        }
        g.finish();
    }
    c.final_summary();

    let test_mode = std::env::args().any(|a| a == "--test" || a == "--list");
    if !test_mode {
        // Interleaved so that both see the same machine state.
        let (mut lib, mut lib_legacy, mut via_cli, mut util) = (vec![], vec![], vec![], vec![]);
        for _ in 0..CYCLES {
            let t = Instant::now();
            lib_cycle(&ctl);
            lib.push(t.elapsed());
            let t = Instant::now();
            lib_cycle(&legacy);
            lib_legacy.push(t.elapsed());
            if let Some(cli) = &cli {
                let t = Instant::now();
                tool_cycle(cli, &["loop", "attach"], &["loop", "detach"], &file_s);
                via_cli.push(t.elapsed());
            }
            if let Some(losetup) = &losetup {
                let t = Instant::now();
                tool_cycle(losetup, &["-f", "--show"], &["-d"], &file_s);
                util.push(t.elapsed());
            }
        }
        let lib = median(lib);
        println!("head-to-head, median of {CYCLES} interleaved attach+detach cycles:");
        println!(
            "  dmthin library (LOOP_CONFIGURE)      {:>10.1} us",
            us(lib)
        );
        println!(
            "  dmthin library (LOOP_SET_FD path)    {:>10.1} us",
            us(median(lib_legacy))
        );
        let cli_m = (!via_cli.is_empty()).then(|| median(via_cli));
        if let Some(m) = cli_m {
            println!("  dmthin CLI (2 processes)             {:>10.1} us", us(m));
        }
        if !util.is_empty() {
            let u = median(util);
            println!("  losetup -f --show + losetup -d       {:>10.1} us", us(u));
            println!(
                "  ratio losetup / dmthin library:      {:>10.1}x",
                us(u) / us(lib)
            );
            if let Some(m) = cli_m {
                println!(
                    "  ratio losetup / dmthin CLI:          {:>10.2}x",
                    us(u) / us(m)
                );
            }
        } else {
            println!("  (no util-linux losetup: no comparison)");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
