//! Format stability: a repository written by format v1 (and v1.1, v1.2,
//! v1.3) must always read back.
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
    grouped_and_edited_dumps_restore_and_check(
        "golden-v1.1",
        [
            "2cf2ea51c5fae62abfdcea7ebbd7ef5215b56ba861e2f6184fc2ce76836cd379",
            "675c088a9e7b9a3451447da5f19d43f3758e2f878435a1e7f4b25c4647852cb1",
        ],
        [183, 24],
    );
}

/// Format v1.2: `tests/fixtures/golden-v1.2/` holds the same two dumps (the
/// first is `golden-v1.1/shop.sql`) written with group records: a pack's
/// header names a group once, its members only inside it.
#[test]
fn golden_v1_2_group_records_restore_and_check() {
    let (store, packs) = fixture_packs("golden-v1.2");
    let (mut records, mut members) = (0, 0);
    for (pack, _, header) in &packs {
        records += header
            .iter()
            .filter(|h| matches!(h, cairn_repo::pack::HeaderEntry::Group { .. }))
            .count();
        let named = store.index().pack(pack).unwrap().to_vec();
        members += named.iter().filter(|e| e.grouped).count();
        assert!(named.len() > header.len() || named.iter().all(|e| !e.grouped));
    }
    assert!(
        records > 0 && members > 2 * records,
        "{records} records, {members} members"
    );
    grouped_and_edited_dumps_restore_and_check(
        "golden-v1.2",
        [
            "fa228df8d9166b83e9950fb966b01093e5bb846097234cba01b3c1ebac6cc577",
            "c0dd8430963c75a0cd6dc30810ac56725fe8443637411d99ef28920c7acaf10f",
        ],
        [213, 22],
    );
}

/// Format v1.3: `tests/fixtures/golden-v1.3/` holds the same two dumps
/// written with their groups' rows laid out by column (`columns`).
#[test]
fn golden_v1_3_rows_by_column_restore_and_check() {
    let (store, packs) = fixture_packs("golden-v1.3");
    let (mut groups, mut by_column) = (0, 0);
    for (_, bytes, header) in &packs {
        for h in header {
            if let cairn_repo::pack::HeaderEntry::Group { offset, length, .. } = *h {
                let env = &bytes[offset as usize..(offset + length) as usize];
                let g = cairn_repo::group::open(store.key(), env, &"group").unwrap();
                groups += 1;
                by_column += usize::from(g.by_column);
            }
        }
    }
    assert!(
        by_column > 0 && by_column * 2 >= groups,
        "{by_column} of {groups} groups by column"
    );
    grouped_and_edited_dumps_restore_and_check(
        "golden-v1.3",
        [
            "ffae5cbcdaf8bbb6ebe6db77d8da2eb1229b48025a888202cf59dd849040dc8d",
            "dbe3da10ebf1182c4dee35caf5bf349165b860e9c5856173aba9e788bcb20027",
        ],
        [216, 22],
    );
}

type Header = Vec<cairn_repo::pack::HeaderEntry>;

/// A fixture's repository opened with its index loaded, and each of its packs
/// with its bytes and parsed header.
fn fixture_packs(
    name: &str,
) -> (
    cairn_repo::Repository,
    Vec<(cairn_repo::Id, Vec<u8>, Header)>,
) {
    let (_, _tmp, repo) = copy_of(name);
    let store = cairn_repo::Repository::open(
        std::sync::Arc::new(cairn_repo::storage::LocalStorage::new(&repo)),
        b"golden",
    )
    .unwrap();
    store.load_index().unwrap();
    let packs: Vec<cairn_repo::Id> = store.index().pack_ids().copied().collect();
    let packs = packs
        .into_iter()
        .map(|pack| {
            let bytes = std::fs::read(repo.join(cairn_repo::pack::key_of(&pack))).unwrap();
            let header =
                cairn_repo::pack::parse_header(store.key(), &pack, &bytes, bytes.len() as u64)
                    .unwrap()
                    .unwrap();
            (pack, bytes, header)
        })
        .collect();
    (store, packs)
}

fn grouped_and_edited_dumps_restore_and_check(name: &str, ids: [&str; 2], blobs_new: [u64; 2]) {
    let (_, tmp, repo) = copy_of(name);
    let ctl = Ctl::new(repo.to_str().unwrap(), "golden");
    let snaps = ctl.json(&["snapshots"]);
    let snap_ids: Vec<&str> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(snap_ids, ids);
    assert_eq!(snaps[0]["content"], "database");
    assert_eq!(snaps[0]["stats"]["blobs_new"], blobs_new[0]);
    assert_eq!(snaps[1]["stats"]["blobs_new"], blobs_new[1]);
    let out = ctl.ok(&["check", "--read-data"]);
    assert!(out.contains("no errors found"), "{out}");
    let restored = |snap: &str, dir: &str| {
        let r = tmp.path().join(dir);
        ctl.ok(&["restore", snap, "--target", r.to_str().unwrap()]);
        std::fs::read(r.join("db/shop.sql")).unwrap()
    };
    let first = workspace_root().join("tests/fixtures/golden-v1.1/shop.sql");
    let shop = std::fs::read_to_string(first).unwrap();
    let second = next_day(&shop).into_bytes();
    assert_eq!(restored(&ids[0][..8], "first"), shop.as_bytes());
    assert_eq!(restored(&ids[1][..8], "second"), second);
    ctl.ok(&["forget", &ids[0][..8]]);
    let gc = ctl.json(&["gc", "--grace", "0s"]);
    // The chunks only the first dump listed are dead (too few to repack
    // their packs); the tree the second's list is edited from is live.
    assert!(
        gc["blobs_live"].as_u64().unwrap() < blobs_new[0] + blobs_new[1],
        "the first dump's own chunks are not live: {gc}"
    );
    let out = ctl.ok(&["check", "--read-data"]);
    assert!(out.contains("no errors found"), "{out}");
    assert_eq!(restored(&ids[1][..8], "after-gc"), second);
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
