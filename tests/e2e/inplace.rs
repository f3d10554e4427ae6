//! Restores over a live, hacked site (RST-6, RST-4, RST-1; issue 13): a
//! safety backup first, then the run restored beside the site, verified and
//! swapped in at once; a preview before; rollback after; a killed agent
//! never leaves a mixed site or a stage behind.

use std::collections::BTreeSet;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_tests::cluster::{Cluster, ClusterOptions};
use cairn_tests::dbserver::MariaDb;
use cairn_tests::*;

use crate::fleet_db::site;

const PAGES: usize = 120;

/// Every page names the site's version: a reader must never see two at once.
fn write_pages(root: &Path, version: &str, size: usize) {
    fs::create_dir_all(root.join("wp-content/pages")).unwrap();
    for i in 0..PAGES {
        fs::write(
            root.join(format!("wp-content/pages/p{i:03}.php")),
            [
                format!("<?php // {version}\n").into_bytes(),
                noise(size + i * 31, i as u64),
            ]
            .concat(),
        )
        .unwrap();
    }
}

struct Seen {
    passes: u64,
    versions: BTreeSet<String>,
    /// Passes that saw more than one version, or could not read the site.
    faults: Vec<String>,
}

/// Loops over the site as a web server would while it is restored: each
/// pass opens the site's directory once and reads every page through that
/// handle (`/proc/self/fd/N/...`), so a pass sees one tree however the
/// path is renamed meanwhile.
fn reader(
    root: PathBuf,
    stop: Arc<AtomicBool>,
    passes: Arc<AtomicU64>,
) -> std::thread::JoinHandle<Seen> {
    std::thread::spawn(move || {
        let mut seen = Seen {
            passes: 0,
            versions: BTreeSet::new(),
            faults: Vec::new(),
        };
        while !stop.load(Ordering::Relaxed) {
            let dir = match fs::File::open(&root) {
                Ok(d) => d,
                Err(e) => {
                    seen.faults.push(format!("the site was missing: {e}"));
                    continue;
                }
            };
            let base = format!("/proc/self/fd/{}/wp-content/pages", dir.as_raw_fd());
            let mut versions = BTreeSet::new();
            for i in 0..PAGES {
                match fs::read(format!("{base}/p{i:03}.php")) {
                    Ok(b) => {
                        let first = b.split(|&c| c == b'\n').next().unwrap_or_default();
                        versions.insert(String::from_utf8_lossy(first).into_owned());
                    }
                    Err(e) => seen.faults.push(format!("page {i}: {e}")),
                }
            }
            if versions.len() > 1 {
                seen.faults.push(format!("one pass saw {versions:?}"));
            }
            seen.versions.extend(versions);
            seen.passes += 1;
            passes.fetch_add(1, Ordering::Relaxed);
        }
        seen
    })
}

fn leftovers(parent: &Path, mark: &str) -> Vec<String> {
    fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(mark))
        .collect()
}

#[test]
fn a_hacked_site_is_restored_in_place_atomically_and_rolled_back() {
    let maria = MariaDb::start().unwrap();
    let c = Cluster::start(ClusterOptions::default());
    let www = c.dir.join("www");
    let root = www.join("shop");
    site(&root, &maria);
    write_pages(&root, "good", 2_000);
    let _agent = c.add_agent("web1", &[("shop.test", &root)]);
    let run = c.json(&["backup", "shop.test", "--wait"]);
    assert_eq!(run["state"], "succeeded", "{run}");
    let run_id = run["run"].as_str().unwrap().to_string();
    let good = snapshot_tree(&root, &|_, _| true);
    let good_sums = maria.checksums("shop");

    // The hack: every page rewritten, a web shell, spam rows, a defaced post.
    write_pages(&root, "hacked", 2_000);
    fs::write(
        root.join("wp-content/uploads/shell.php"),
        "<?php eval($_GET[1]);",
    )
    .unwrap();
    maria.sql(
        Some("shop"),
        "INSERT INTO wp_comments (comment_post_ID, comment_content) VALUES (1, 'buy pills'), (2, 'casino'); \
         UPDATE wp_posts SET post_title = 'pwned' WHERE ID = 1; \
         CREATE TABLE wp_backdoor (k VARCHAR(20)); INSERT INTO wp_backdoor VALUES ('admin2');",
    );
    let hacked = snapshot_tree(&root, &|_, _| true);
    let hacked_sums = maria.checksums("shop");
    assert_ne!(hacked_sums, good_sums);

    // A preview names what would change and writes nothing.
    let preview = c.json(&["restore", &run_id, "--dry-run"]);
    assert_eq!(preview["state"], "succeeded", "{preview}");
    let report = &preview["report"];
    assert_eq!(report["removed"]["entries"], 1, "{preview}");
    assert_eq!(report["changed"]["entries"], PAGES as u64, "{preview}");
    assert_eq!(report["added"]["entries"], 0, "{preview}");
    assert!(
        report["paths"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "- wp-content/uploads/shell.php"),
        "{preview}"
    );
    let text = c.ok(&["restore", &run_id, "--dry-run"]);
    assert!(
        text.contains("would add 0 entries") && text.contains("- wp-content/uploads/shell.php"),
        "{text}"
    );
    assert_eq!(
        snapshot_tree(&root, &|_, _| true),
        hacked,
        "a dry run writes nothing"
    );

    // In place, with a reader looping over the site all along.
    let stop = Arc::new(AtomicBool::new(false));
    let passes = Arc::new(AtomicU64::new(0));
    let looping = reader(root.clone(), stop.clone(), passes.clone());
    let restored = c.json(&["restore", &run_id, "--in-place", "--wait"]);
    assert_eq!(restored["state"], "succeeded", "{restored}");
    let after = passes.load(Ordering::Relaxed);
    eventually(
        "the reader passes over the restored site",
        scaled(Duration::from_secs(30)),
        || (passes.load(Ordering::Relaxed) >= after + 3).then_some(()),
    )
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let seen = looping.join().unwrap();
    assert!(
        seen.faults.is_empty(),
        "{:?}",
        &seen.faults[..seen.faults.len().min(5)]
    );
    assert_eq!(
        seen.versions,
        BTreeSet::from(["<?php // good".to_string(), "<?php // hacked".to_string()]),
        "the reader saw the site before and after ({} passes)",
        seen.passes
    );
    assert_eq!(
        snapshot_tree(&root, &|_, _| true),
        good,
        "the injected files are gone"
    );
    assert_eq!(
        maria.checksums("shop"),
        good_sums,
        "the database is the backed-up one"
    );
    let tables = maria.sql(Some("shop"), "SHOW TABLES");
    assert!(
        !tables.contains("wp_backdoor"),
        "the injected table is gone: {tables}"
    );
    let db_step = restored["jobs"][1]["step"].as_str().unwrap();
    assert!(db_step.contains("swapped them in at once"), "{restored}");
    let dbs = maria.sql(None, "SHOW DATABASES");
    assert!(
        !dbs.contains("cairn_verify"),
        "scratch databases left: {dbs}"
    );
    assert!(leftovers(&www, ".cairn-stage.").is_empty());
    assert_eq!(leftovers(&www, ".cairn-rollback.").len(), 1);

    // What was there was backed up first.
    let jobs = c.json(&["jobs", "list", "--domain", "shop.test"]);
    let safety: Vec<&serde_json::Value> = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["trigger"] == "safety")
        .collect();
    assert_eq!(safety.len(), 2, "files and database: {jobs}");
    assert!(safety.iter().all(|j| j["state"] == "succeeded"), "{jobs}");
    let files_restore = restored["jobs"][0]["id"].as_str().unwrap().to_string();
    let job = &restored["jobs"][0];
    assert!(
        job["bytes"].as_u64().unwrap() > 0 && job["total_bytes"] == job["bytes"],
        "the restore reported its progress against the snapshot's size: {job}"
    );
    assert!(
        restored["jobs"][0]["after"].as_array().unwrap().len() == 2,
        "{restored}"
    );

    // Rollback brings the hacked state back, files and database.
    let back = c.json(&["rollback", &files_restore, "--wait"]);
    assert_eq!(back["state"], "succeeded", "{back}");
    assert_eq!(snapshot_tree(&root, &|_, _| true), hacked, "byte for byte");
    assert_eq!(maria.checksums("shop"), hacked_sums);
    assert!(leftovers(&www, ".cairn-rollback.").is_empty());

    // Once only; and a restore that was not in place has nothing to undo.
    let again = c.ctl(&["rollback", &files_restore, "--wait", "--json"]);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    let j: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    let err = j["jobs"][0]["error"].as_str().unwrap_or_default();
    assert!(err.contains("no rollback point"), "{j}");
    let plain = c.ctl(&["rollback", safety[0]["id"].as_str().unwrap()]);
    assert!(!plain.status.success(), "{plain:?}");
    assert!(
        String::from_utf8_lossy(&plain.stderr).contains("not an in-place restore"),
        "{plain:?}"
    );

    // A view (the site's own: its user defined it) cannot be renamed
    // between databases: the database is then loaded table by table, and
    // the job says so.
    maria.sql(
        Some("shop"),
        "CREATE DEFINER = 'shop_user'@'localhost' VIEW wp_titles AS SELECT post_title FROM wp_posts",
    );
    let run = c.json(&["backup", "shop.test", "--wait"]);
    assert_eq!(run["state"], "succeeded", "{run}");
    let sums = maria.checksums("shop");
    maria.sql(Some("shop"), "DELETE FROM wp_comments");
    let again = c.json(&[
        "restore",
        run["run"].as_str().unwrap(),
        "--in-place",
        "--wait",
    ]);
    assert_eq!(again["state"], "succeeded", "{again}");
    let step = again["jobs"][1]["step"].as_str().unwrap();
    assert!(
        step.contains("table by table") && step.contains("view shop.wp_titles"),
        "{again}"
    );
    assert_eq!(maria.checksums("shop"), sums);
    let dbs = maria.sql(None, "SHOW DATABASES");
    assert!(
        !dbs.contains("cairn_verify"),
        "scratch databases left: {dbs}"
    );
}

#[test]
fn a_killed_agent_leaves_the_site_old_or_new_and_no_stage() {
    let c = Cluster::start(ClusterOptions::default());
    let www = c.dir.join("www");
    let root = www.join("big.test");
    write_pages(&root, "good", 200_000);
    let mut agent = c.add_agent("web1", &[("big.test", &root)]);
    let snap = c.backup("big.test");
    let snap = snap["snapshot"].as_str().unwrap().to_string();
    let good = snapshot_tree(&root, &|_, _| true);
    write_pages(&root, "hacked", 200_000);
    let hacked = snapshot_tree(&root, &|_, _| true);

    // Kill the agent while it stages (the stage has appeared), at a random
    // moment, and just after the swap (the rollback tree has appeared).
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("random kill point seeded with {seed}");
    for round in ["staging", "random", "swapped"] {
        let out = c.ctl(&["restore", &snap, "--in-place", "--json"]);
        assert!(out.status.success(), "{out:?}");
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let id = j["id"].as_str().unwrap().to_string();
        let mark = match round {
            "staging" => ".cairn-stage.",
            "swapped" => ".cairn-rollback.",
            _ => "",
        };
        if mark.is_empty() {
            eventually("the restore runs", scaled(Duration::from_secs(60)), || {
                (c.job(&id)["state"] != "queued").then_some(())
            })
            .unwrap();
            std::thread::sleep(Duration::from_millis(seed % 1500));
        } else {
            let mut polls = 0u64;
            while leftovers(&www, mark).is_empty() {
                polls += 1;
                assert!(polls < 20_000_000, "{round}: {mark} never appeared");
                std::hint::spin_loop();
            }
        }
        agent.kill9();
        let now = snapshot_tree(&root, &|_, _| true);
        assert!(
            now == good || now == hacked,
            "{round}: a mixed site after the kill"
        );
        agent.start();
        c.wait_online("web1", true);
        let ended = c.wait_job_end(&id);
        // At start the agent finished or undid the swap before anything else.
        assert!(
            leftovers(&www, ".cairn-stage.").is_empty(),
            "{round}: {ended}"
        );
        let now = snapshot_tree(&root, &|_, _| true);
        let new = now == good;
        assert!(new || now == hacked, "{round}: a mixed site after recovery");
        match round {
            "staging" => assert!(!new, "killed while staging: the site is untouched"),
            "swapped" => assert!(new, "killed after the swap: the restore stands"),
            _ => {}
        }
        // The controller failed the job when the session broke; the agent
        // tells it what it did at start.
        // Killed after the swap, the agent may have reported the restore
        // done first (then there is nothing to tell); otherwise it says the
        // restore stands, whether the swap or only its record was left.
        let told = match round {
            "staging" => "restore interrupted before its swap",
            "swapped" if ended["state"] != "succeeded" => "restore completed",
            _ => "",
        };
        if !told.is_empty() {
            let step = eventually(
                "the agent's word on the job",
                scaled(Duration::from_secs(30)),
                || {
                    let step = c.job(&id)["step"].as_str().unwrap_or_default().to_string();
                    step.starts_with("after the agent restarted:")
                        .then_some(step)
                },
            )
            .unwrap();
            assert!(step.contains(told), "{round}: {step}");
        }
        if new {
            // Back to the hacked site for the next round (the agent says
            // whether its swap happened, whatever the job's state).
            let rolled = c.json(&["rollback", &id, "--wait"]);
            assert_eq!(rolled["state"], "succeeded", "{rolled}");
            assert_eq!(snapshot_tree(&root, &|_, _| true), hacked);
        }
        eprintln!(
            "{round}: the site is {} ({})",
            if new { "new" } else { "old" },
            ended["state"]
        );
    }
    assert!(leftovers(&www, ".cairn-stage.").is_empty());

    // A test restore (VER-3) checks every byte in a scratch copy it removes.
    let t = c.json(&["restore", &snap, "--test", "--wait"]);
    assert_eq!(t["state"], "succeeded", "{t}");
    let step = t["step"].as_str().unwrap();
    assert!(
        step.starts_with(&format!("test restore verified {PAGES} files")),
        "{t}"
    );
    assert_eq!(t["report"]["verified_files"], PAGES as u64, "{t}");
    let scratch = agent.state().join("verify");
    assert!(
        files_below(&scratch).is_empty(),
        "scratch copy left in {}",
        scratch.display()
    );
    assert_eq!(
        snapshot_tree(&root, &|_, _| true),
        hacked,
        "the live site is untouched"
    );

    // The runbook (DR-2) names the measured time, and its commands for a
    // restore without the controller work as printed.
    let book = c.ok(&["runbook", "big.test", "--format", "md"]);
    assert!(book.starts_with("# Restore runbook: big.test"), "{book}");
    assert!(book.contains("Measured recovery time: "), "{book}");
    let repo = c.dir.join("repo");
    assert!(
        book.contains(&format!("export CAIRN_REPO={}", repo.display())),
        "{book}"
    );
    let line = book
        .lines()
        .find(|l| l.starts_with("cairnctl repo restore "))
        .unwrap_or_else(|| panic!("{book}"));
    let mut args: Vec<String> = line.split_whitespace().skip(2).map(String::from).collect();
    // The newest copy: the last safety backup, of the site as it stands.
    let listed = c.json(&["snapshots", "list", "--domain", "big.test"]);
    let newest = listed
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|s| s["time"].as_i64())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(newest, snap);
    assert_eq!(
        args,
        ["restore", &newest, "--target", root.to_str().unwrap()],
        "{line}"
    );
    let elsewhere = c.dir.join("dr");
    args[3] = elsewhere.to_str().unwrap().to_string();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = c.repo_command(&args).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(snapshot_tree(&elsewhere, &|_, _| true), hacked);
}
