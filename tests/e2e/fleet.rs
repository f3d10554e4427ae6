//! Generated fleet: backup, restore byte-identical, dedup, incremental kinds.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cairn_repo::exclude::Excludes;
use cairn_tests::*;

/// Adds what gen_fleet.py lacks: symlinks, an empty dir, odd modes, a hardlink.
pub fn add_edge_cases(site: &Path) {
    std::os::unix::fs::symlink("wp-config.php", site.join("config-link")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", site.join("absolute-link")).unwrap();
    fs::create_dir_all(site.join("empty/dir")).unwrap();
    fs::write(site.join("secret.txt"), b"only the owner").unwrap();
    fs::set_permissions(site.join("secret.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(site.join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(site.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(site.join("hard-a"), b"linked twice".repeat(1000)).unwrap();
    fs::hard_link(site.join("hard-a"), site.join("hard-b")).unwrap();
    let big: Vec<u8> = (0..6_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    fs::write(site.join("big.bin"), big).unwrap();
}

/// BKP-1, BKP-2, BKP-7, RST-1, VER-2: a fleet round-trips on a local repository.
#[test]
fn fleet_backs_up_and_restores_byte_identical_local() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = gen_fleet(&tmp.path().join("fleet"), 3, 0.05);
    add_edge_cases(&sites[0]);
    let ctl = Ctl::new(tmp.path().join("repo").to_str().unwrap(), "fleet pass");
    ctl.ok(&["init"]);
    round_trip(&ctl, &sites, tmp.path());
}

pub fn round_trip(ctl: &Ctl, sites: &[std::path::PathBuf], tmp: &Path) {
    let ex = Excludes::with_defaults::<&str>(&[]).unwrap();
    for site in sites {
        let domain = site.file_name().unwrap().to_str().unwrap();
        let snap = ctl.backup(domain, site, &[]);
        assert_eq!(snap["kind"], "full", "first backup of a domain is full");
        assert!(snap["stats"]["files"].as_u64().unwrap() > 50);
        let target = tmp.join("restore").join(domain);
        ctl.ok(&[
            "restore",
            "latest",
            "--domain",
            domain,
            "--target",
            target.to_str().unwrap(),
        ]);
        assert_same_tree(site, &target, &ex);
    }
    // Hardlinks come back as one inode.
    let first = tmp.join("restore").join(sites[0].file_name().unwrap());
    if first.join("hard-a").exists() {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            fs::metadata(first.join("hard-a")).unwrap().ino(),
            fs::metadata(first.join("hard-b")).unwrap().ino()
        );
    }
    let listed = ctl.json(&["snapshots"]);
    assert_eq!(listed.as_array().unwrap().len(), sites.len());
    let out = ctl.ok(&["check", "--read-data"]);
    assert!(out.contains("no errors found"), "{out}");
    let subset = ctl.json(&["check", "--read-data-subset", "50%"]);
    let (read, all) = (
        subset["packs_read"].as_u64().unwrap(),
        subset["packs"].as_u64().unwrap(),
    );
    assert!(
        read >= 1 && read < all.max(2),
        "50% of {all} packs read {read}"
    );
}

/// BKP-7: a second, identical site adds < 1% of its size to the repository.
#[test]
fn identical_second_site_is_deduplicated() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = gen_fleet(&tmp.path().join("fleet"), 1, 0.1);
    let copy = tmp.path().join("copy-of-site");
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(&sites[0])
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success());
    let repo = tmp.path().join("repo");
    let ctl = Ctl::new(repo.to_str().unwrap(), "p");
    ctl.ok(&["init"]);
    ctl.backup("one.example", &sites[0], &[]);
    let before = dir_size(&repo);
    let snap = ctl.backup("two.example", &copy, &[]);
    let added = dir_size(&repo) - before;
    let site_bytes = snap["stats"]["total_bytes"].as_u64().unwrap();
    assert!(
        site_bytes > 1_000_000,
        "site too small to judge: {site_bytes}"
    );
    assert!(
        (added as f64) < 0.01 * site_bytes as f64,
        "second identical site added {added} bytes to the repository, {:.2}% of its {site_bytes}",
        100.0 * added as f64 / site_bytes as f64
    );
}

/// BKP-1: incremental reads only changed files; differential compares with the last full.
#[test]
fn incremental_and_differential_reuse_unchanged_files() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = tmp.path().join("fleet");
    let sites = gen_fleet(&fleet, 1, 0.05);
    let ctl = Ctl::new(tmp.path().join("repo").to_str().unwrap(), "p");
    ctl.ok(&["init"]);
    let site = &sites[0];
    let full = ctl.backup("d", site, &["--kind", "full"]);
    let full_read = full["stats"]["bytes_read"].as_u64().unwrap();
    mutate_fleet(&fleet, 1);
    let inc = ctl.backup("d", site, &["--kind", "incremental"]);
    assert_eq!(inc["kind"], "incremental");
    assert_eq!(inc["parent"], full["id"]);
    let inc_read = inc["stats"]["bytes_read"].as_u64().unwrap();
    assert!(
        inc_read < full_read / 4,
        "incremental read {inc_read} of {full_read}"
    );
    mutate_fleet(&fleet, 2);
    let diff = ctl.backup("d", site, &["--kind", "differential"]);
    assert_eq!(diff["kind"], "differential");
    assert_eq!(
        diff["parent"], full["id"],
        "differential compares with the last full"
    );
    let restored = tmp.path().join("r");
    ctl.ok(&[
        "restore",
        diff["id"].as_str().unwrap(),
        "--target",
        restored.to_str().unwrap(),
    ]);
    assert_same_tree(
        site,
        &restored,
        &Excludes::with_defaults::<&str>(&[]).unwrap(),
    );
    // The diff between full and the latest names what mutate changed.
    let d = ctl.json(&[
        "diff",
        full["id"].as_str().unwrap(),
        diff["id"].as_str().unwrap(),
    ]);
    let changes = d["changes"].as_array().unwrap();
    assert!(changes.iter().any(|c| c["change"] == "modified"), "{d}");
    assert!(changes.iter().any(|c| c["change"] == "added"), "{d}");
}

/// BKP-2: default excludes and --exclude globs keep their files out.
#[test]
fn excludes_keep_files_out() {
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    for d in [
        "wp-content/cache/page",
        "logs",
        "node_modules/x",
        "keep/sub",
        "private",
    ] {
        fs::create_dir_all(site.join(d)).unwrap();
    }
    for f in [
        "wp-content/cache/page/a.html",
        "logs/access",
        "node_modules/x/i.js",
        "debug.log",
        "keep/sub/k.php",
        "private/p.txt",
        "keep/x.bak",
    ] {
        fs::write(site.join(f), f).unwrap();
    }
    let ctl = Ctl::new(tmp.path().join("repo").to_str().unwrap(), "p");
    ctl.ok(&["init"]);
    let snap = ctl.backup("d", &site, &["--exclude", "*.bak", "--exclude", "/private"]);
    let ls = ctl.ok(&["ls", snap["id"].as_str().unwrap()]);
    let paths: Vec<&str> = ls.lines().collect();
    assert!(paths.contains(&"/keep/sub/k.php"), "{ls}");
    for gone in [
        "/wp-content/cache",
        "/logs",
        "/node_modules",
        "/debug.log",
        "/private",
        "/keep/x.bak",
    ] {
        assert!(!paths.contains(&gone), "{gone} should be excluded: {ls}");
    }
}

/// BKP-6: a socket (which no restore can bring back) is a warning, not an
/// abort; a FIFO is kept and restored as a FIFO.
#[test]
fn sockets_are_warnings_and_fifos_are_kept() {
    use std::os::unix::fs::FileTypeExt;
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    fs::create_dir_all(&site).unwrap();
    fs::write(site.join("index.php"), b"<?php echo 1;").unwrap();
    let st = std::process::Command::new("mkfifo")
        .arg(site.join("pipe"))
        .status()
        .unwrap();
    assert!(st.success());
    let _socket = std::os::unix::net::UnixListener::bind(site.join("php-fpm.sock")).unwrap();
    let ctl = Ctl::new(tmp.path().join("repo").to_str().unwrap(), "p");
    ctl.ok(&["init"]);
    let snap = ctl.backup("d", &site, &[]);
    let warnings = snap["stats"]["warnings"]
        .as_array()
        .expect("warnings recorded");
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("php-fpm.sock")),
        "{snap}"
    );
    assert!(
        !warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("pipe")),
        "{snap}"
    );
    assert_eq!(snap["stats"]["files"], 1);
    let target = tmp.path().join("restored");
    ctl.ok(&[
        "restore",
        snap["id"].as_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
    ]);
    assert!(fs::symlink_metadata(target.join("pipe"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert!(!target.join("php-fpm.sock").exists());
}
