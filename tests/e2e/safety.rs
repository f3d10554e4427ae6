//! Nothing leaked, nothing lost: passphrases, markers, corruption, hostile snapshots.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::Path;
use std::sync::Arc;

use cairn_repo::pack::BlobType;
use cairn_repo::saver::BlobSaver;
use cairn_repo::snapshot::{Kind, Snapshot, Stats};
use cairn_repo::tree::{Node, NodeKind, Tree};
use cairn_repo::Repository;
use cairn_tests::*;

fn repo_state(repo: &Path) -> BTreeMap<String, blake3::Hash> {
    let mut out = BTreeMap::new();
    let mut stack = vec![repo.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(repo).unwrap().display().to_string(),
                    blake3::hash(&fs::read(&p).unwrap()),
                );
            }
        }
    }
    out
}

/// SEC-1: a wrong passphrase exits 3 and changes nothing.
#[test]
fn wrong_passphrase_exits_3_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let site = tmp.path().join("site");
    fs::create_dir_all(&site).unwrap();
    fs::write(site.join("a.txt"), b"hello").unwrap();
    let good = Ctl::new(repo.to_str().unwrap(), "right one");
    good.ok(&["init"]);
    good.backup("d", &site, &[]);
    let before = repo_state(&repo);
    let bad = Ctl::new(repo.to_str().unwrap(), "wrong one");
    for args in [
        vec!["snapshots"],
        vec!["backup", "--domain", "d", site.to_str().unwrap()],
        vec![
            "restore",
            "latest",
            "--target",
            tmp.path().join("r").to_str().unwrap(),
        ],
        vec!["gc"],
        vec!["check"],
    ] {
        let out = bad.run(&args);
        assert_eq!(
            out.status.code(),
            Some(3),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("wrong passphrase"));
    }
    assert_eq!(
        repo_state(&repo),
        before,
        "a wrong passphrase must change nothing"
    );
    assert!(!tmp.path().join("r").exists());
    // Usage errors are 64, not 1 or 2.
    assert_eq!(good.run(&["backup", "--bogus"]).status.code(), Some(64));
    assert_eq!(
        good.run(&["backup", "--domain", "d", "/no/such/dir"])
            .status
            .code(),
        Some(64)
    );
    let nopass = Ctl {
        repo: repo.to_str().unwrap().into(),
        env: vec![],
    };
    assert_eq!(nopass.run(&["snapshots"]).status.code(), Some(64));
}

/// SEC-1, SEC-3: no plaintext marker, passphrase or key material in any repository object.
#[test]
fn marker_in_sources_appears_in_no_object() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = gen_fleet(&tmp.path().join("fleet"), 1, 0.05);
    let marker = "CAIRN-MARKER-7f3a9c1e-do-not-leak";
    // Plant it in many text files, compressible and not.
    let mut planted = 0;
    let mut stack = vec![sites[0].clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "php") && planted < 200 {
                let mut c = fs::read(&p).unwrap();
                c.extend_from_slice(format!("\n// {marker}\n").as_bytes());
                fs::write(&p, c).unwrap();
                planted += 1;
            }
        }
    }
    assert!(planted > 10);
    fs::write(sites[0].join(format!("{marker}.txt")), marker.repeat(1000)).unwrap();
    let repo = tmp.path().join("repo");
    let pass = "passphrase-that-must-not-appear";
    let ctl = Ctl::new(repo.to_str().unwrap(), pass);
    ctl.ok(&["init"]);
    ctl.backup("d", &sites[0], &[]);
    let mut objects = 0;
    for (rel, _) in repo_state(&repo) {
        let bytes = fs::read(repo.join(&rel)).unwrap();
        objects += 1;
        for needle in [marker.as_bytes(), pass.as_bytes(), b"do-not-leak"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{rel} contains {:?}",
                String::from_utf8_lossy(needle)
            );
        }
    }
    assert!(objects > 3);
}

/// VER-2: one flipped byte in a pack is named with the snapshots and files it breaks;
/// everything else still restores.
#[test]
fn flipped_byte_is_named_and_the_rest_restores() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let ctl = Ctl::new(repo.to_str().unwrap(), "p");
    ctl.ok(&["init"]);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for (dir, tag) in [(&a, "alpha"), (&b, "beta")] {
        fs::create_dir_all(dir).unwrap();
        for i in 0..20 {
            // Incompressible, so data packs are far larger than tree packs.
            let mut data = format!("{tag} file {i} ").into_bytes();
            data.extend((0..5000).map(|_| rand::random::<u8>()));
            fs::write(dir.join(format!("{tag}-{i}.bin")), data).unwrap();
        }
    }
    let sa = ctl.backup("alpha.example", &a, &[]);
    let sb = ctl.backup("beta.example", &b, &[]);
    // Each backup wrote one data pack (~100 KB) and one small tree pack.
    let alpha_pack = repo_state(&repo)
        .into_keys()
        .find(|k| k.starts_with("data/") && fs::metadata(repo.join(k)).unwrap().len() > 50_000)
        .expect("a data pack");
    let path = repo.join(&alpha_pack);
    let mut bytes = fs::read(&path).unwrap();
    bytes[100] ^= 0x01;
    fs::write(&path, bytes).unwrap();
    let out = ctl.run(&["check", "--read-data"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let pack_id = alpha_pack.rsplit('/').next().unwrap();
    assert!(
        stdout.contains(pack_id),
        "check must name the pack:\n{stdout}"
    );
    // Whichever snapshot that pack served is named, with files.
    let (hit, other, other_dir, other_snap) = if stdout.contains(&sa["id"].as_str().unwrap()[..8]) {
        ("alpha", "beta", &b, &sb)
    } else {
        ("beta", "alpha", &a, &sa)
    };
    assert!(
        stdout.contains(&format!("/{hit}-")),
        "check must name affected files:\n{stdout}"
    );
    assert!(
        !stdout.contains(&format!("/{other}-")),
        "{other} is not affected:\n{stdout}"
    );
    // The other snapshot restores in full.
    let r = tmp.path().join("r");
    ctl.ok(&[
        "restore",
        other_snap["id"].as_str().unwrap(),
        "--target",
        r.to_str().unwrap(),
    ]);
    assert_same_tree(
        other_dir,
        &r,
        &cairn_repo::exclude::Excludes::new::<&str>(&[]).unwrap(),
    );
}

fn file_node(name: &str, content: Vec<cairn_repo::Id>, size: u64) -> Node {
    // The name is set raw: forged snapshots carry names set_name would never write.
    Node {
        name: name.into(),
        mode: 0o644,
        inode: 1,
        device: 1,
        size,
        content,
        ..Node::new(std::ffi::OsStr::new("x"), NodeKind::File)
    }
}

fn forge_snapshot(repo: &Repository, tree: Tree) -> String {
    let saver = BlobSaver::new(repo, HashSet::new());
    let data = saver.save(BlobType::Data, b"pwned").unwrap();
    let mut tree = tree;
    for n in &mut tree.nodes {
        if n.kind == NodeKind::File {
            n.content = vec![data];
            n.size = 5;
        }
    }
    let root = saver
        .save(BlobType::Tree, &serde_json::to_vec(&tree).unwrap())
        .unwrap();
    saver.finish().unwrap();
    let snap = Snapshot {
        time: chrono_now(),
        domain: "evil".into(),
        host: "h".into(),
        kind: Kind::Full,
        content: Default::default(),
        parent: None,
        tree: root,
        source: "/".into(),
        tags: vec![],
        excludes: vec![],
        stats: Stats::default(),
        tool_version: "forged".into(),
        agent: None,
        job: None,
        run: None,
    };
    repo.save_snapshot(&snap).unwrap().to_hex()
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

/// RST-5, DESIGN §7: hostile snapshot paths are refused; nothing lands outside the target.
#[test]
fn hostile_snapshots_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    let ctl = Ctl::new(repo_dir.to_str().unwrap(), "p");
    ctl.ok(&["init"]);
    let storage = cairn_repo::storage::open(repo_dir.to_str().unwrap()).unwrap();
    let repo = Repository::open(Arc::clone(&storage), b"p").unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    for bad in ["..", "../outside/pwned", "/tmp/pwned-abs"] {
        let id = forge_snapshot(
            &repo,
            Tree {
                nodes: vec![file_node(bad, vec![], 0)],
            },
        );
        let target = tmp.path().join("target");
        let out = ctl.run(&["restore", &id, "--target", target.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{bad:?} must be refused");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("hostile"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!outside.join("pwned").exists() && !Path::new("/tmp/pwned-abs").exists());
    }
    // A symlink already in the target where the snapshot has a directory.
    let mut dir = file_node("a", vec![], 0);
    dir.kind = NodeKind::Dir;
    let saver = BlobSaver::new(&repo, HashSet::new());
    let data = saver.save(BlobType::Data, b"pwned").unwrap();
    let sub = saver
        .save(
            BlobType::Tree,
            &Tree {
                nodes: vec![file_node("pwned", vec![data], 5)],
            }
            .to_bytes(),
        )
        .unwrap();
    saver.finish().unwrap();
    dir.subtree = Some(sub);
    let id = forge_snapshot(&repo, Tree { nodes: vec![dir] });
    let target = tmp.path().join("target2");
    fs::create_dir_all(&target).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("a")).unwrap();
    let out = ctl.run(&["restore", &id, "--target", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("symlink"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !outside.join("pwned").exists(),
        "restore wrote through a symlink"
    );
}
