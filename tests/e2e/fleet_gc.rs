//! Maintenance inside the controller while backups run: `cairnctl forget`
//! and `cairnctl gc` in a loop beside three agents backing up changing sites
//! (issue "the controller owns the fleet repository", step 4).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cairn_repo::exclude::Excludes;
use cairn_tests::cluster::{self, Cluster, ClusterOptions, PASSPHRASE};
use cairn_tests::*;

fn random(n: usize) -> Vec<u8> {
    (0..n).map(|_| rand::random()).collect()
}

/// One day of a site: edits, new files, a deletion, a file shared by every
/// site, and a file that flips between two contents (its blobs die when no
/// snapshot keeps them, then come back).
fn mutate(site: &Path, round: usize, flip: &[Vec<u8>; 2], shared: &[u8]) {
    fs::create_dir_all(site.join("uploads")).unwrap();
    for k in 0..3 {
        let size = 1000 + rand::random::<usize>() % 40_000;
        fs::write(site.join(format!("uploads/r{round}-{k}.bin")), random(size)).unwrap();
    }
    fs::write(site.join("index.php"), format!("<?php // round {round}")).unwrap();
    fs::write(site.join("flip.bin"), &flip[round % 2]).unwrap();
    fs::write(site.join("core.js"), shared).unwrap();
    // Old rounds go, so the site (and every saved copy of it) stays small
    // however many rounds a fast machine fits into the soak.
    if round >= 2 {
        let _ = fs::remove_file(site.join(format!("uploads/r{}-0.bin", round - 2)));
    }
    if round >= 4 {
        for k in 1..3 {
            let _ = fs::remove_file(site.join(format!("uploads/r{}-{k}.bin", round - 4)));
        }
    }
}

fn copy(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn gc_in_a_loop_beside_backing_up_agents_loses_nothing() {
    let soak = Duration::from_secs(
        std::env::var("CAIRN_TEST_SOAK_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(40),
    );
    let c = Cluster::start(ClusterOptions::default());
    let flip = [random(30_000), random(30_000)];
    let shared = random(60_000);
    let sites: Vec<(String, PathBuf)> = (0..3)
        .map(|i| (format!("site{i}.test"), c.dir.join(format!("site{i}"))))
        .collect();
    let mut agents = Vec::new();
    for (i, (domain, site)) in sites.iter().enumerate() {
        mutate(site, 0, &flip, &shared);
        agents.push(c.add_agent(&format!("a{i}"), &[(domain, site)]));
    }
    let saved = c.dir.join("saved");
    fs::create_dir_all(&saved).unwrap();
    // snapshot id → (domain, the site as it was backed up)
    let expected: Mutex<HashMap<String, (String, PathBuf)>> = Mutex::new(HashMap::new());
    // A dry run reports what it would delete and deletes nothing.
    let (domain, site) = &sites[0];
    let first = c.json(&["backup", domain, "--wait"]);
    fs::remove_dir_all(site.join("uploads")).unwrap();
    mutate(site, 1, &flip, &shared);
    let second = c.json(&["backup", domain, "--wait"]);
    c.json(&["forget", first["snapshot"].as_str().unwrap()]);
    let second = second["snapshot"].as_str().unwrap().to_string();
    copy(site, &saved.join(&second));
    expected
        .lock()
        .unwrap()
        .insert(second.clone(), (domain.clone(), saved.join(&second)));
    let before = files_below(&c.dir.join("repo/data"));
    let dry = c.json(&["gc", "--dry-run", "--grace", "0s"]);
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert!(dry["packs_deleted"].as_u64().unwrap() > 0, "{dry}");
    assert_eq!(
        files_below(&c.dir.join("repo/data")),
        before,
        "a dry run deleted packs"
    );
    let deadline = Instant::now() + soak;
    let (mut gcs, mut freed_packs) = (0, 0);
    std::thread::scope(|s| {
        for (i, (domain, site)) in sites.iter().enumerate() {
            let (c, expected, saved, flip, shared) = (&c, &expected, &saved, &flip, &shared);
            s.spawn(move || {
                let mut round = 1;
                while Instant::now() < deadline {
                    mutate(site, round, flip, shared);
                    let kind = if round % 4 == 0 {
                        "full"
                    } else {
                        "incremental"
                    };
                    let agent = format!("a{i}");
                    let j = c.json(&[
                        "backup", domain, "--agent", &agent, "--kind", kind, "--wait",
                    ]);
                    assert_eq!(j["state"], "succeeded", "a backup failed beside gc: {j}");
                    let id = j["snapshot"].as_str().unwrap().to_string();
                    let keep = saved.join(&id);
                    copy(site, &keep);
                    expected.lock().unwrap().insert(id, (domain.clone(), keep));
                    round += 1;
                }
            });
        }
        while Instant::now() < deadline {
            // Keep the newest two snapshots of each domain; forget the rest.
            let snaps = c.json(&["snapshots", "list"]);
            let mut by_domain: HashMap<String, Vec<(i64, String)>> = HashMap::new();
            // Only what the test has recorded, so both agree on what is kept.
            let recorded: Vec<String> = expected.lock().unwrap().keys().cloned().collect();
            for s in snaps
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| recorded.iter().any(|r| s["id"] == r.as_str()))
            {
                by_domain
                    .entry(s["domain"].as_str().unwrap().into())
                    .or_default()
                    .push((
                        s["time"].as_i64().unwrap_or(0),
                        s["id"].as_str().unwrap().into(),
                    ));
            }
            let mut old = Vec::new();
            for list in by_domain.values_mut() {
                list.sort();
                let n = list.len().saturating_sub(2);
                old.extend(list.drain(..n).map(|(_, id)| id));
            }
            if !old.is_empty() {
                let mut args = vec!["forget"];
                args.extend(old.iter().map(String::as_str));
                c.json(&args);
                let mut e = expected.lock().unwrap();
                for id in &old {
                    // A forgotten snapshot's saved tree is never compared again.
                    if let Some((_, tree)) = e.remove(id) {
                        fs::remove_dir_all(tree).unwrap();
                    }
                }
            }
            let r = c.json(&["gc", "--grace", "0s"]);
            gcs += 1;
            freed_packs += r["packs_deleted"].as_u64().unwrap();
        }
    });
    assert!(gcs >= 3, "gc ran {gcs} times");
    assert!(
        freed_packs > 0,
        "gc never deleted a pack: the test proves nothing"
    );

    let ctl = Ctl::new(c.dir.join("repo").to_str().unwrap(), PASSPHRASE);
    let out = ctl.ok(&["check", "--read-data"]);
    assert!(out.contains("no errors found"), "{out}");
    let expected = expected.into_inner().unwrap();
    let listed = c.json(&["snapshots", "list"]);
    let listed: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed.len(),
        expected.len(),
        "catalog and test disagree on what is kept"
    );
    for (id, (_, want)) in &expected {
        assert!(listed.contains(&id.as_str()), "snapshot {id} lost");
        let target = c.dir.join(format!("restored-{}", &id[..12]));
        let j = c.json(&[
            "restore",
            id,
            "--target",
            target.to_str().unwrap(),
            "--wait",
        ]);
        assert_eq!(j["state"], "succeeded", "{j}");
        assert_same_tree(
            want,
            &target,
            &Excludes::with_defaults::<&str>(&[]).unwrap(),
        );
    }
    drop(agents);
}

/// CAT-4: with the catalog deleted, `cairn-controller rebuild-catalog` gets
/// every fleet snapshot back from the repository alone, each under the agent
/// and domain that made it; it refuses while the controller runs.
#[test]
fn catalog_rebuilds_from_the_repository_alone() {
    let mut c = Cluster::start(ClusterOptions::default());
    let flip = [random(1000), random(1000)];
    let mut agents = Vec::new();
    for i in 0..2 {
        let site = c.dir.join(format!("site{i}"));
        mutate(&site, 0, &flip, b"shared");
        agents.push(c.add_agent(&format!("a{i}"), &[(&format!("site{i}.test"), &site)]));
        for _ in 0..2 {
            assert_eq!(c.backup(&format!("site{i}.test"))["state"], "succeeded");
        }
    }
    let rows = |c: &Cluster| {
        let mut v: Vec<(String, String, String)> = c
            .json(&["snapshots", "list"])
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let f = |k: &str| s[k].as_str().unwrap().to_string();
                (f("id"), f("domain"), f("agent"))
            })
            .collect();
        v.sort();
        v
    };
    let before = rows(&c);
    assert_eq!(before.len(), 4);
    let config = c.state.join("controller.toml");
    let rebuild = || {
        Command::new(cluster::bin("cairn-controller"))
            .args(["rebuild-catalog", "--config"])
            .arg(&config)
            .env_remove("CAIRN_PASSPHRASE")
            .output()
            .unwrap()
    };
    let running = rebuild();
    assert!(!running.status.success());
    assert!(String::from_utf8_lossy(&running.stderr).contains("stop it first"));

    c.stop_controller();
    fs::remove_dir_all(c.state.join("catalog")).unwrap();
    let out = rebuild();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 snapshots added"));
    c.start_controller();
    assert_eq!(rows(&c), before, "the rebuilt catalog differs");
    drop(agents);
}
