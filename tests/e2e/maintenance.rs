//! Keys, forget and gc, export, ls.

use std::fs;
use std::process::Stdio;

use cairn_repo::exclude::Excludes;
use cairn_tests::*;

/// SEC-3: add, list, change and remove passphrases; old ones stop working.
#[test]
fn key_management() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let one = Ctl::new(repo.to_str().unwrap(), "first");
    one.ok(&["init"]);
    // Without a new passphrase: a usage error.
    assert_eq!(one.run(&["key", "add"]).status.code(), Some(64));
    one.clone()
        .with_env("CAIRN_NEW_PASSPHRASE", "second")
        .ok(&["key", "add"]);
    let keys = one.json(&["key", "list"]);
    assert_eq!(keys.as_array().unwrap().len(), 2);
    let two = Ctl::new(repo.to_str().unwrap(), "second");
    two.ok(&["snapshots"]);
    // The key in use cannot be removed; the other one can.
    let current = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        one.run(&["key", "remove", &current]).status.code(),
        Some(64)
    );
    two.ok(&["key", "remove", &current[..12]]);
    assert_eq!(
        one.run(&["snapshots"]).status.code(),
        Some(3),
        "removed key must stop working"
    );
    // passwd: the new passphrase works, the old one does not.
    let pf = tmp.path().join("newpass");
    fs::write(&pf, "third\n").unwrap();
    let mut perms = fs::metadata(&pf).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    fs::set_permissions(&pf, perms.clone()).unwrap();
    two.ok(&[
        "key",
        "passwd",
        "--new-passphrase-file",
        pf.to_str().unwrap(),
    ]);
    assert_eq!(two.run(&["snapshots"]).status.code(), Some(3));
    let three = Ctl {
        repo: repo.to_str().unwrap().into(),
        env: vec![("CAIRN_PASSPHRASE_FILE".into(), pf.to_str().unwrap().into())],
    };
    three.ok(&["snapshots"]);
    assert_eq!(three.json(&["key", "list"]).as_array().unwrap().len(), 1);
    // A world-readable passphrase file is refused.
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    fs::set_permissions(&pf, perms.clone()).unwrap();
    assert_eq!(three.run(&["snapshots"]).status.code(), Some(64));
}

/// RET-3, RET-4: forget + gc reclaim space; dry run changes nothing; the rest restores.
#[test]
fn forget_and_gc_reclaim_space_safely() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let ctl = Ctl::new(repo.to_str().unwrap(), "p");
    ctl.ok(&["init"]);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for (d, n) in [(&a, 30), (&b, 10)] {
        fs::create_dir_all(d).unwrap();
        for i in 0..n {
            fs::write(
                d.join(format!("f{i}")),
                (0..100_000)
                    .map(|_| rand::random::<u8>())
                    .collect::<Vec<u8>>(),
            )
            .unwrap();
        }
    }
    fs::copy(b.join("f0"), a.join("shared-with-b")).unwrap();
    let sa = ctl.backup("a", &a, &[]);
    ctl.backup("b", &b, &[]);
    ctl.ok(&["forget", &sa["id"].as_str().unwrap()[..8]]);
    // Young packs are protected by the grace period.
    let r = ctl.json(&["gc"]);
    assert_eq!(r["packs_deleted"].as_array().unwrap().len(), 0, "{r}");
    let size_before = dir_size(&repo);
    let dry = ctl.json(&["gc", "--dry-run", "--grace", "0s"]);
    assert!(
        !dry["packs_deleted"].as_array().unwrap().is_empty(),
        "{dry}"
    );
    assert_eq!(
        dir_size(&repo),
        size_before,
        "dry run must not change the repository"
    );
    let done = ctl.json(&["gc", "--grace", "0s"]);
    assert_eq!(done["packs_deleted"], dry["packs_deleted"]);
    // a's pack also held the blob b deduplicated against: copied out, not lost.
    assert_eq!(
        done["packs_repacked"].as_array().unwrap().len(),
        1,
        "{done}"
    );
    let size_after = dir_size(&repo);
    assert!(
        size_after < size_before / 2,
        "gc freed too little: {size_before} -> {size_after}"
    );
    let out = ctl.ok(&["check", "--read-data"]);
    assert!(out.contains("no errors found"), "{out}");
    let r = tmp.path().join("r");
    ctl.ok(&[
        "restore",
        "latest",
        "--domain",
        "b",
        "--target",
        r.to_str().unwrap(),
    ]);
    assert_same_tree(&b, &r, &Excludes::new::<&str>(&[]).unwrap());
    // A snapshot id that matches nothing deletes nothing.
    assert_eq!(ctl.run(&["forget", "ffffffff"]).status.code(), Some(1));
}

/// RST-8, RST-3: tar export matches a restore; ls and single-path restore.
#[test]
fn export_ls_and_partial_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = gen_fleet(&tmp.path().join("fleet"), 1, 0.03);
    let site = &sites[0];
    crate::fleet::add_edge_cases(site);
    // A site user's file name that would rewrite the operator's terminal.
    fs::write(site.join("x\x1b]0;owned\x07\x1b[2J.txt"), b"x").unwrap();
    let ctl = Ctl::new(tmp.path().join("repo").to_str().unwrap(), "p");
    ctl.ok(&["init"]);
    let snap = ctl.backup("d", site, &[]);
    let id = snap["id"].as_str().unwrap();
    let tarfile = tmp.path().join("site.tar");
    let st = ctl
        .command(&["export", id])
        .stdout(fs::File::create(&tarfile).unwrap())
        .stderr(Stdio::inherit())
        .status()
        .unwrap();
    assert!(st.success());
    let untar = tmp.path().join("untar");
    fs::create_dir_all(&untar).unwrap();
    let st = std::process::Command::new("tar")
        .arg("-xpf")
        .arg(&tarfile)
        .arg("-C")
        .arg(&untar)
        .status()
        .unwrap();
    assert!(st.success());
    let restored = tmp.path().join("restored");
    ctl.ok(&["restore", id, "--target", restored.to_str().unwrap()]);
    // tar keeps whole-second mtimes; compare contents, modes and links.
    let strip = |m: std::collections::BTreeMap<String, Entry>| -> Vec<(String, String)> {
        m.into_iter()
            .map(|(k, v)| {
                let v = match v {
                    Entry::File {
                        mode, hash, len, ..
                    } => format!("file {mode:o} {hash} {len}"),
                    other => format!("{other:?}"),
                };
                (k, v)
            })
            .collect()
    };
    assert_eq!(
        strip(snapshot_tree(&untar, &|_, _| true)),
        strip(snapshot_tree(&restored, &|_, _| true))
    );
    // ls names files; a single path restores alone.
    let ls = ctl.ok(&["ls", id]);
    assert!(ls.lines().any(|l| l == "/wp-config.php"), "{ls}");
    assert!(
        ls.lines()
            .any(|l| l == "/x\\u{1b}]0;owned\\u{7}\\u{1b}[2J.txt"),
        "{ls}"
    );
    let long = ctl.ok(&["ls", "-l", id]);
    for out in [&ls, &long] {
        assert!(
            !out.chars().any(|c| c.is_control() && c != '\n'),
            "control characters reached the terminal"
        );
    }
    let one = tmp.path().join("one");
    ctl.ok(&[
        "restore",
        id,
        "--target",
        one.to_str().unwrap(),
        "--path",
        "/wp-config.php",
    ]);
    assert_eq!(
        fs::read(one.join("wp-config.php")).unwrap(),
        fs::read(site.join("wp-config.php")).unwrap()
    );
    assert_eq!(fs::read_dir(&one).unwrap().count(), 1);
    assert_eq!(
        ctl.run(&[
            "restore",
            id,
            "--target",
            one.to_str().unwrap(),
            "--path",
            "/nope"
        ])
        .status
        .code(),
        Some(1)
    );
    assert_eq!(
        ctl.run(&[
            "restore",
            id,
            "--target",
            one.to_str().unwrap(),
            "--path",
            "../x"
        ])
        .status
        .code(),
        Some(64)
    );
}
