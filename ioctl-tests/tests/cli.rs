//! The `dmthin` CLI against the real kernel: every device-set subcommand,
//! cross-checked with dmsetup, plus `--help` everywhere.

mod common;
use common::*;

use std::process::Command;

#[test]
fn every_subcommand_has_help() {
    for sub in [
        "init",
        "create",
        "remove",
        "activate",
        "deactivate",
        "mount",
        "umount",
        "list",
        "status",
        "grow-pool",
        "shutdown",
    ] {
        let out = Command::new("dmthin")
            .args([sub, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{sub} --help");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("Usage: dmthin"), "{sub}: {text}");
    }
    let out = Command::new("dmthin").arg("bogus").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "unknown command is a usage error"
    );
}

#[test]
fn cli_drives_the_device_set() {
    let root = Root::new("cli");
    let r = root.0.as_path();
    let status = dmthin_ok(
        r,
        &[
            "init",
            "--data-size",
            "1G",
            "--metadata-size",
            "16M",
            "--base-size",
            "64M",
        ],
    );
    assert!(
        status.contains("Data space:") && status.contains("1.0 GiB"),
        "{status}"
    );
    let pool = format!("{}pool", dmthin::deviceset::name_prefix(r).unwrap());
    assert!(sh_ok("dmsetup ls").contains(&pool));

    dmthin_ok(r, &["create", "img"]);
    dmthin_ok(r, &["create", "ctr", "--from", "img"]);
    let mnt = root.mnt("ctr");
    let m = mnt.to_str().unwrap();
    dmthin_ok(r, &["mount", "ctr", m]);
    std::fs::write(mnt.join("f"), "cli").unwrap();
    sh_ok("sync");
    let list: serde_json::Value = serde_json::from_str(&dmthin_ok(r, &["list", "--json"])).unwrap();
    let arr = list.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    let ctr = arr.iter().find(|d| d["id"] == "ctr").unwrap();
    assert_eq!(ctr["parent"], "img");
    assert_eq!(ctr["active"], true);
    assert_eq!(ctr["mount_points"][0], m);
    let table = sh_ok(&format!(
        "dmsetup table {}ctr",
        dmthin::deviceset::name_prefix(r).unwrap()
    ));
    assert!(
        table.contains(" thin ") && table.trim().ends_with(&ctr["thin_id"].to_string()),
        "{table}"
    );
    let human = dmthin_ok(r, &["list"]);
    assert!(human.contains("64.0 MiB"), "human-readable sizes: {human}");

    // Refusals exit 1 with a message.
    let out = dmthin_cli(r, &["remove", "ctr"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mounted"));
    let out = dmthin_cli(r, &["create", "img"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists"));

    dmthin_ok(r, &["umount", "ctr", m]);
    let path = dmthin_ok(r, &["activate", "img"]);
    assert!(std::path::Path::new(path.trim()).exists(), "{path}");
    dmthin_ok(r, &["deactivate", "img"]);
    let st: serde_json::Value = serde_json::from_str(&dmthin_ok(r, &["status", "--json"])).unwrap();
    assert_eq!(st["data_total"], 1u64 << 30);
    dmthin_ok(r, &["grow-pool", "2G"]);
    let st: serde_json::Value = serde_json::from_str(&dmthin_ok(r, &["status", "--json"])).unwrap();
    assert_eq!(st["data_total"], 2u64 << 30);
    let dm = sh_ok(&format!("dmsetup table {pool}"));
    assert!(
        dm.starts_with(&format!("0 {} thin-pool", (2u64 << 30) / 512)),
        "{dm}"
    );
    let meta_before = st["metadata_total"].as_u64().unwrap();
    dmthin_ok(r, &["grow-pool", "--metadata", "24M"]);
    let st: serde_json::Value = serde_json::from_str(&dmthin_ok(r, &["status", "--json"])).unwrap();
    assert_eq!(st["metadata_total"], 24u64 << 20, "was {meta_before}");
    assert_eq!(st["data_total"], 2u64 << 30, "data untouched");
    let out = dmthin_cli(r, &["grow-pool", "--metadata", "4M"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("never shrinks"));
    let out = dmthin_cli(r, &["grow-pool", "--metadata", "32M", "3G"]);
    assert_eq!(out.status.code(), Some(2), "usage error");
    dmthin_ok(r, &["remove", "img"]);
    dmthin_ok(r, &["shutdown"]);
    assert!(!sh_ok("dmsetup ls").contains(&pool));
    // Everything comes back.
    dmthin_ok(r, &["mount", "ctr", m]);
    assert_eq!(std::fs::read_to_string(mnt.join("f")).unwrap(), "cli");
    dmthin_ok(r, &["umount", "ctr", m]);
    dmthin_ok(r, &["shutdown"]);
}

/// Thin ids in a stopped set's pool metadata (thin_dump through a loop device).
fn thin_ids_on_disk(root: &std::path::Path) -> Vec<String> {
    let meta = root.join("devicemapper/metadata");
    let dev = LoopDevice::attach(&meta);
    let (ok, xml) = sh(&format!("thin_dump {}", dev.path_str()));
    drop(dev);
    assert!(ok, "thin_dump: {xml}");
    xml.lines()
        .filter_map(|l| l.trim_start().strip_prefix("<device dev_id=\""))
        .filter_map(|rest| rest.split('"').next().map(str::to_string))
        .collect()
}

#[test]
fn remove_deferred_through_the_cli() {
    let root = Root::new("cli-deferred");
    let r = root.0.as_path();
    dmthin_ok(
        r,
        &[
            "init",
            "--data-size",
            "1G",
            "--metadata-size",
            "16M",
            "--base-size",
            "64M",
        ],
    );
    dmthin_ok(r, &["create", "held"]);
    dmthin_ok(r, &["create", "idle"]);
    let name = format!("{}held", dmthin::deviceset::name_prefix(r).unwrap());
    let path = dmthin_ok(r, &["activate", "held"]);
    let holder = std::fs::File::open(path.trim()).unwrap();
    // Held open: a plain remove is refused as busy...
    let out = dmthin_cli(r, &["remove", "held"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("busy"),
        "{out:?}"
    );
    // ... and a deferred one succeeds, leaving the kernel to finish it.
    let said = dmthin_ok(r, &["remove", "held", "--deferred"]);
    assert_eq!(said.trim(), "held is busy; it will be removed once closed");
    let info = sh_ok(&format!("dmsetup info {name}"));
    assert!(info.contains("DEFERRED REMOVE"), "{info}");
    let list: serde_json::Value = serde_json::from_str(&dmthin_ok(r, &["list", "--json"])).unwrap();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["idle"]);
    // The mark is durable (in the journal until a fold writes the file).
    let rec = durable_record(r, "held").expect("held's record");
    assert_eq!(rec["deferred_delete"], true, "{rec}");
    let out = dmthin_cli(r, &["create", "held"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("being removed"),
        "{out:?}"
    );
    // The holder closes: the kernel removes the device, and the next command
    // deletes it from the pool and drops its record.
    drop(holder);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!sh_ok("dmsetup ls").contains(&name));
    dmthin_ok(r, &["list"]);
    assert!(
        durable_record(r, "held").is_none(),
        "record left after the deferred delete"
    );
    dmthin_ok(r, &["create", "held"]);
    // A device nobody holds is removed at once.
    assert_eq!(
        dmthin_ok(r, &["remove", "idle", "--deferred"]).trim(),
        "removed idle"
    );
    let list: serde_json::Value = serde_json::from_str(&dmthin_ok(r, &["list", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    dmthin_ok(r, &["shutdown"]);
    // The pool holds the base and the new "held", nothing else.
    assert_eq!(thin_ids_on_disk(r).len(), 2);
}
