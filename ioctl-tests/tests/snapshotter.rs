//! containerd's snapshotter conformance suite (`snapshots/testsuite`,
//! containerd 1.6.20 from Debian) against `dmthin-snapshotter`, through
//! containerd's proxy client: the Go test binary the runner builds from
//! `snapshotter/conformance/` starts one daemon on a fresh loop-file pool
//! per subtest. Every subtest must pass; the suite itself skips `Rename`
//! for every snapshotter.

use std::path::{Path, PathBuf};
use std::process::Command;

fn on_path(name: &str) -> PathBuf {
    dmthin_ioctl_tests::find_on_path(name).unwrap_or_else(|| {
        panic!(
            "{name} is not on PATH: run this test with `ioctl-tests/run --test snapshotter`, \
                 which builds and ships it (the Go suite needs Debian's golang-go and \
                 golang-github-containerd-containerd-dev)"
        )
    })
}

/// Runs the Go suite with `args`; returns its output, panicking on failure.
fn conformance(args: &[&str], env: &[(&str, &str)]) -> String {
    dmthin_ioctl_tests::require_device_mapper();
    let suite = on_path("dmthin-conformance.test");
    let daemon = on_path("dmthin-snapshotter");
    let mut cmd = Command::new(&suite);
    cmd.args(["-test.v", "-test.timeout", "40m"])
        .args(args)
        .env("DMTHIN_SNAPSHOTTER", &daemon)
        .current_dir(Path::new("/tmp"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let t0 = std::time::Instant::now();
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The per-subtest results, for the log.
    for line in text.lines() {
        let l = line.trim_start();
        if l.starts_with("--- ")
            || l.starts_with("ok")
            || l.starts_with("FAIL")
            || l.contains("BENCH")
        {
            println!("{line}");
        }
    }
    println!("conformance wall time: {:.1} s", t0.elapsed().as_secs_f64());
    assert!(out.status.success(), "conformance suite failed:\n{text}");
    text
}

#[test]
fn containerd_conformance_suite() {
    let text = conformance(&["-test.run", "^TestSnapshotterSuite$"], &[]);
    for expected in [
        "--- PASS: TestSnapshotterSuite/Basic",
        "--- PASS: TestSnapshotterSuite/128LayersMount",
        "--- PASS: TestSnapshotterSuite/DmthinUsage",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    let passed = text.matches("--- PASS: TestSnapshotterSuite/").count();
    let skipped: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("--- SKIP: TestSnapshotterSuite/"))
        .collect();
    println!("{passed} subtests passed, skipped: {skipped:?}");
    // 20 of containerd's 21 plus our usage check; Rename is skipped by the
    // suite itself (for every snapshotter, devmapper included).
    assert_eq!(passed, 21, "{text}");
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0].contains("/Rename"), "{skipped:?}");
}

/// With `--env DMTHIN_BENCH=1 --udev`: containerd's overlayfs snapshotter
/// (a floor: no devices) and devmapper snapshotter on the same suite (and
/// pools), Prepare+Commit / Remove per layer for dmthin and devmapper
/// (medians over 100 layers), and `ctr image import` + unpack for both, for
/// the README's comparison.
#[test]
fn comparison_with_containerds_devmapper() {
    if std::env::var("DMTHIN_BENCH").as_deref() != Ok("1") {
        println!("skipped: run with --env DMTHIN_BENCH=1 --udev for the devmapper comparison");
        return;
    }
    assert!(
        dmthin_ioctl_tests::udev_expected(),
        "containerd's devmapper snapshotter needs udev: add --udev"
    );
    let bench = [("DMTHIN_BENCH", "1")];
    // The floor: overlayfs makes no devices; the suite's own work remains.
    conformance(&["-test.run", "^TestOverlaySuite$"], &bench);
    conformance(&["-test.run", "^TestDevmapperSuite$"], &bench);
    // dmthin on the pool features devmapper's test (and containerd's docs)
    // give its pool: no zeroing of newly provisioned blocks. (The suite
    // test above runs dmthin's default, which zeroes them.)
    conformance(
        &["-test.run", "^TestSnapshotterSuite$"],
        &[(
            "DMTHIN_POOL_ARGS",
            "--data-size 1G --metadata-size 64M --base-size 16M --no-zeroing",
        )],
    );
    conformance(&["-test.run", "^TestLayerTimes$"], &bench);
    let text = containerd_script("/tmp/dmthin-import-bench.sh", IMPORT_BENCH_SCRIPT);
    assert!(text.contains("import bench done"), "{text}");
}

const COMMON_SCRIPT: &str = include_str!("snapshotter/common.sh");
const CONTAINERD_SCRIPT: &str = include_str!("snapshotter/containerd.sh");
const IMPORT_BENCH_SCRIPT: &str = include_str!("snapshotter/import_bench.sh");

/// Runs `script` after `common.sh` as one bash script written to `path`;
/// prints and returns its output, panicking when it fails.
fn containerd_script(path: &str, script: &str) -> String {
    let (ok, text) = dmthin_ioctl_tests::bash_script(path, &format!("{COMMON_SCRIPT}\n{script}"));
    println!("{text}");
    assert!(ok, "{path} failed:\n{text}");
    text
}

/// Real containerd (Debian's 1.6.20) with dmthin-snapshotter as its proxy
/// plugin: see `snapshotter/containerd.sh`.
#[test]
fn real_containerd_imports_and_runs_a_layered_image() {
    dmthin_ioctl_tests::require_device_mapper();
    for tool in [
        "containerd",
        "ctr",
        "containerd-shim-runc-v2",
        "runc",
        "dmthin-snapshotter",
    ] {
        on_path(tool);
    }
    let text = containerd_script("/tmp/dmthin-containerd.sh", CONTAINERD_SCRIPT);
    assert!(text.contains("containerd test done"), "{text}");
}
