//! Format stability: a repository written by format v1 (and v1.1) must always read back.
//! `tests/fixtures/golden-v1/` holds that repository (passphrase `golden`) and
//! `source.tar`, the tree it was made from. A format change that breaks this
//! test breaks every user's backups.

use std::path::PathBuf;
use std::process::Command;

use cairn_repo::exclude::Excludes;
use cairn_tests::*;

/// The fixture's directory, and a copy of its repository in a temp dir:
/// nothing may touch the fixture.
fn copy_of(name: &str) -> (PathBuf, tempfile::TempDir, PathBuf) {
    let fixture = workspace_root().join("tests/fixtures").join(name);
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    assert!(Command::new("cp")
        .arg("-r")
        .arg(fixture.join("repo"))
        .arg(&repo)
        .status()
        .unwrap()
        .success());
    (fixture, tmp, repo)
}

#[test]
fn golden_v1_repository_restores_and_checks() {
    let (fixture, tmp, repo) = copy_of("golden-v1");
    let source = tmp.path().join("source");
    std::fs::create_dir_all(&source).unwrap();
    assert!(Command::new("tar")
        .arg("-xpf")
        .arg(fixture.join("source.tar"))
        .arg("-C")
        .arg(&source)
        .status()
        .unwrap()
        .success());
    let ctl = Ctl::new(repo.to_str().unwrap(), "golden");
    let snaps = ctl.json(&["snapshots"]);
    let s = &snaps.as_array().unwrap()[0];
    assert_eq!(
        s["id"],
        "c8554fea6e92ea0ca68fca6082f8606281fdea1809e9c7c2190e7dd09b67a15f"
    );
    assert_eq!(s["domain"], "golden.example");
    assert_eq!(s["host"], "fixture");
    assert_eq!(s["kind"], "full");
    assert_eq!(s["stats"]["files"], 3);
    let out = ctl.ok(&["check", "--read-data"]);
    assert!(out.contains("no errors found"), "{out}");
    let r = tmp.path().join("restored");
    ctl.ok(&["restore", "c8554fea", "--target", r.to_str().unwrap()]);
    assert_same_tree(&source, &r, &Excludes::new::<&str>(&[]).unwrap());
    assert_eq!(
        Ctl::new(repo.to_str().unwrap(), "not golden")
            .run(&["snapshots"])
            .status
            .code(),
        Some(3)
    );
}

/// Format v1.1: `tests/fixtures/golden-v1.1/` holds a repository (passphrase
/// `golden`) with two MariaDB dumps stored by `cairnctl repo backup-db
/// --from-file` (host `fixture`, domain `golden.example`): `shop.sql`, its
/// small chunks in groups, then the next day's (`next_day`: 16 rental rows
/// changed, one added), whose blob list is stored as edits of the first dump's. Both must
/// read back byte for byte, the second also once the first is forgotten.
#[test]
fn golden_v1_1_grouped_and_edited_dumps_restore_and_check() {
    let (fixture, tmp, repo) = copy_of("golden-v1.1");
    let ctl = Ctl::new(repo.to_str().unwrap(), "golden");
    let snaps = ctl.json(&["snapshots"]);
    let ids: Vec<&str> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "2cf2ea51c5fae62abfdcea7ebbd7ef5215b56ba861e2f6184fc2ce76836cd379",
            "675c088a9e7b9a3451447da5f19d43f3758e2f878435a1e7f4b25c4647852cb1"
        ]
    );
    assert_eq!(snaps[0]["content"], "database");
    assert_eq!(snaps[0]["stats"]["blobs_new"], 183);
    assert_eq!(snaps[1]["stats"]["blobs_new"], 24);
    let out = ctl.ok(&["check", "--read-data"]);
    assert!(out.contains("no errors found"), "{out}");
    let restored = |snap: &str, dir: &str| {
        let r = tmp.path().join(dir);
        ctl.ok(&["restore", snap, "--target", r.to_str().unwrap()]);
        std::fs::read(r.join("db/shop.sql")).unwrap()
    };
    let shop = std::fs::read_to_string(fixture.join("shop.sql")).unwrap();
    let second = next_day(&shop).into_bytes();
    assert_eq!(restored("2cf2ea51", "first"), shop.as_bytes());
    assert_eq!(restored("675c088a", "second"), second);
    ctl.ok(&["forget", "2cf2ea51"]);
    let gc = ctl.json(&["gc", "--grace", "0s"]);
    // The chunks only the first dump listed are dead (too few to repack
    // their packs); the tree the second's list is edited from is live.
    assert!(
        gc["blobs_live"].as_u64().unwrap() < 183 + 24,
        "the first dump's own chunks are not live: {gc}"
    );
    let out = ctl.ok(&["check", "--read-data"]);
    assert!(out.contains("no errors found"), "{out}");
    assert_eq!(restored("675c088a", "after-gc"), second);
}

/// The v1.1 fixture's second dump: `shop.sql` with every 97th rental from
/// the 6th moved from 2021 to 2022, and one rental added.
fn next_day(shop: &str) -> String {
    let rentals = |l: &str| {
        l.strip_prefix("INSERT INTO `rental` VALUES (")?
            .strip_suffix(");")
            .map(str::to_string)
    };
    let lines: Vec<String> = shop
        .split('\n')
        .map(|l| match rentals(l) {
            Some(rows) => {
                let mut rows: Vec<String> = rows.split("),(").map(str::to_string).collect();
                for r in rows.iter_mut().skip(5).step_by(97) {
                    *r = r.replacen("'2021-", "'2022-", 1);
                }
                let (id, rest) = rows.last().unwrap().split_once(',').unwrap();
                let added = format!("{id}0,{rest}");
                rows.push(added);
                format!("INSERT INTO `rental` VALUES ({});", rows.join("),("))
            }
            None => l.to_string(),
        })
        .collect();
    lines.join("\n")
}
