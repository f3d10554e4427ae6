//! An unattended fleet (issue 11): weeks of schedules, retention, holds and
//! gc on a stepped clock, through the real controller, agents and cairnctl.
//! SCH-1..4, RET-1..4, FLT-5, BKP-5.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_repo::exclude::Excludes;
use cairn_tests::cluster::{Agent, Cluster, ClusterOptions};
use cairn_tests::*;
use chrono::{Datelike, TimeZone, Utc};

/// 2026-03-01 00:00 UTC, a Sunday.
const T0: i64 = 1_772_323_200;
const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;

const FLEET_POLICY: &str = r#"
name = "fleet"
order = 10
timezone = "UTC"
splay = "10m"
retries = 3
database = false
excludes = ["*.lock"]
[schedule]
incremental = "0 2 * * *"
full = "0 3 * * 0"
[retention]
keep_daily = 7
keep_weekly = 4
keep_monthly = 3
"#;

const BUSY_POLICY: &str = r#"
name = "busy"
order = 20
[select]
labels = { tier = "busy" }
[schedule]
incremental = "0 */6 * * *"
full = "0 3 * * 0"
[retention]
keep_last = 4
keep_daily = 3
keep_weekly = 2
[retention.full]
keep_last = 2
"#;

/// Sites whose database lives on the test's MariaDB (the others' configs
/// name servers that do not exist here, so their databases are off).
fn with_db_policy(domains: &[String]) -> String {
    format!("name = \"with-db\"\norder = 30\ndatabase = true\nverify_every = \"7d\"\n[select]\ndomains = {domains:?}\n")
}

/// Points a WordPress site at the test's MariaDB: its own DB_NAME, DB_USER
/// and DB_PASSWORD, created there, and DB_HOST on the server's socket.
/// Returns the config as written (rewritten after every generator day) and
/// the database name.
fn wire_database(site: &Path, maria: &dbserver::MariaDb) -> (String, String) {
    let cfg = fs::read_to_string(site.join("wp-config.php")).unwrap();
    let define = |k: &str| -> String {
        let at = cfg.find(&format!("'{k}'")).unwrap() + k.len() + 2;
        let rest = &cfg[at..];
        let start = rest.find('\'').unwrap() + 1;
        let end = start + rest[start..].find('\'').unwrap();
        rest[start..end].to_string()
    };
    let (name, user, pass) = (define("DB_NAME"), define("DB_USER"), define("DB_PASSWORD"));
    maria.sql(
        None,
        &format!(
            "CREATE DATABASE `{name}`; CREATE USER '{user}'@'localhost' IDENTIFIED BY '{pass}'; \
             GRANT ALL ON `{name}`.* TO '{user}'@'localhost'; \
             GRANT ALL ON `cairn\\_verify\\_%`.* TO '{user}'@'localhost';"
        ),
    );
    maria.sql(
        Some(&name),
        "CREATE TABLE wp_posts (ID INT PRIMARY KEY AUTO_INCREMENT, post_title VARCHAR(200), post_content MEDIUMTEXT);\
         CREATE TABLE wp_comments (comment_ID INT PRIMARY KEY AUTO_INCREMENT, comment_post_ID INT, comment_content TEXT);\
         INSERT INTO wp_posts (post_title, post_content) VALUES ('Hello world', REPEAT('lorem ipsum ', 500));",
    );
    let wired = cfg.replace(
        "'DB_HOST', 'localhost'",
        &format!("'DB_HOST', 'localhost:{}'", maria.socket.display()),
    );
    assert_ne!(
        wired, cfg,
        "the generator's wp-config names DB_HOST 'localhost'"
    );
    fs::write(site.join("wp-config.php"), &wired).unwrap();
    (wired, name)
}

/// The fleet, its clock, and what each site held on each simulated day.
pub(crate) struct Sim {
    pub(crate) c: Cluster,
    pub(crate) clock: PathBuf,
    pub(crate) now: i64,
}

impl Sim {
    fn metric(&self, name: &str) -> f64 {
        self.c.metric(name)
    }

    /// Moves the controller's clock to `t` and waits until the scheduler
    /// acted on it and every job it could start has ended.
    pub(crate) fn step(&mut self, t: i64) {
        assert!(t >= self.now, "the clock only moves forward");
        let tmp = self.clock.with_extension("tmp");
        fs::write(&tmp, t.to_string()).unwrap();
        fs::rename(&tmp, &self.clock).unwrap();
        self.now = t;
        eventually(
            "the scheduler passes the new time",
            Duration::from_secs(30),
            || (self.metric("cairn_scheduler_tick_timestamp_seconds") as i64 >= t).then_some(()),
        )
        .unwrap();
        self.settle();
    }

    /// Waits for two more scheduler passes (policies or labels just changed).
    fn two_ticks(&self) {
        let n = self.metric("cairn_scheduler_ticks_total");
        eventually("two scheduler passes", Duration::from_secs(30), || {
            (self.metric("cairn_scheduler_ticks_total") >= n + 2.0).then_some(())
        })
        .unwrap();
    }

    /// No job running, none that could start now, no maintenance running,
    /// all read from one scrape: read one by one, a job started between two
    /// reads would be in neither.
    fn settle(&self) {
        eventually("the fleet is idle", Duration::from_secs(300), || {
            let idle = self
                .c
                .metrics(&[
                    "cairn_maintenance_running",
                    "cairn_jobs_running",
                    "cairn_jobs_startable",
                ])
                .iter()
                .all(|v| *v == 0.0);
            idle.then_some(())
        })
        .unwrap();
    }

    fn jobs(&self) -> Vec<serde_json::Value> {
        self.c.json(&["jobs", "list"]).as_array().unwrap().clone()
    }
}

fn site_name(p: &Path) -> String {
    p.file_name().unwrap().to_str().unwrap().to_string()
}

/// The occurrences a domain's schedule has in `(from, to]`, with their kind.
fn expected_runs(busy: bool, from: i64, to: i64) -> BTreeMap<i64, &'static str> {
    let mut out = BTreeMap::new();
    let mut day = (from - T0).div_euclid(DAY);
    while T0 + day * DAY <= to {
        let start = T0 + day * DAY;
        let sunday = Utc.timestamp_opt(start, 0).unwrap().weekday() == chrono::Weekday::Sun;
        let hours: &[i64] = if busy { &[0, 6, 12, 18] } else { &[2] };
        for h in hours {
            out.insert(start + h * HOUR, "incremental");
        }
        if sunday {
            out.insert(start + 3 * HOUR, "full");
        }
        day += 1;
    }
    out.retain(|t, _| *t > from && *t <= to);
    out
}

/// Restic's and borg's rule, written again from its definition: keep the
/// `last` newest, and the newest snapshot of each of the `n` most recent
/// days, ISO weeks and months.
fn gfs(
    snaps: &[(String, i64)],
    last: usize,
    daily: usize,
    weekly: usize,
    monthly: usize,
) -> BTreeSet<String> {
    let mut s = snaps.to_vec();
    s.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
    let mut keep: BTreeSet<String> = s.iter().take(last).map(|x| x.0.clone()).collect();
    type Bucket = fn(i64) -> (i32, u32);
    let buckets: [(usize, Bucket); 3] = [
        (daily, |t| {
            let d = Utc.timestamp_opt(t, 0).unwrap();
            (d.year(), d.ordinal())
        }),
        (weekly, |t| {
            let w = Utc.timestamp_opt(t, 0).unwrap().iso_week();
            (w.year(), w.week())
        }),
        (monthly, |t| {
            let d = Utc.timestamp_opt(t, 0).unwrap();
            (d.year(), d.month())
        }),
    ];
    for (n, bucket) in buckets {
        let mut seen: Vec<(i32, u32)> = Vec::new();
        for (id, t) in &s {
            let b = bucket(*t);
            if !seen.contains(&b) {
                if seen.len() < n {
                    keep.insert(id.clone());
                }
                seen.push(b);
            }
        }
    }
    keep
}

/// Issue 11's acceptance on a stepped clock: weeks of schedules from policy
/// files with no manual backup; an agent away for hours (its runs wait and
/// then run) and for a day (its run fails visibly, the others go on); a
/// controller killed mid-run (no run lost or doubled); legal holds through
/// retention and gc; retention preview equal to what the next run forgets;
/// the kept set exactly the GFS set computed here; kept runs restore
/// byte-identical.
#[test]
fn a_fleet_protects_itself_for_weeks_on_a_stepped_clock() {
    let days: i64 = std::env::var("CAIRN_SIM_DAYS")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(30);
    assert!(days >= 14, "the events below need two weeks");
    let tmp = tempfile::tempdir().unwrap();
    let clock = tmp.path().join("clock");
    fs::write(&clock, (T0 - HOUR).to_string()).unwrap();
    let c = Cluster::start(ClusterOptions {
        clock_file: Some(clock.clone()),
        scheduler: Some(
            "agent_jobs = 2\nfleet_jobs = 64\noffline_give_up = \"6h\"\nmaintenance = \"0 5 * * *\"\ngc_grace = \"1s\"".into(),
        ),
        ..Default::default()
    });
    let fleet = tmp.path().join("fleet");
    let sites = gen_fleet(&fleet, 10, 0.03);
    let names: Vec<String> = sites.iter().map(|s| site_name(s)).collect();
    // One WordPress site of the busy agent and one of a3 keep their
    // database on a real MariaDB; every scheduled run dumps it.
    let maria = dbserver::MariaDb::start().unwrap();
    let is_wp = |i: &usize| sites[*i].join("wp-config.php").exists();
    let db_sites: Vec<usize> = [(0..3).find(is_wp), (6..10).find(is_wp)]
        .into_iter()
        .map(|i| i.expect("the generator makes WordPress sites"))
        .collect();
    let mut wired: HashMap<usize, (String, String)> = HashMap::new();
    for &i in &db_sites {
        wired.insert(i, wire_database(&sites[i], &maria));
    }
    let group = |range: std::ops::Range<usize>| -> Vec<(&str, &Path)> {
        range
            .map(|i| (names[i].as_str(), sites[i].as_path()))
            .collect()
    };
    let _a1 = c.add_agent("a1", &group(0..3));
    let a2 = c.add_agent("a2", &group(3..6));
    let mut a3: Agent = c.add_agent("a3", &group(6..10));
    let agent_of = |i: usize| match i {
        0..=2 => "a1",
        3..=5 => "a2",
        _ => "a3",
    };
    let mut sim = Sim {
        c,
        clock,
        now: T0 - HOUR,
    };
    eventually("10 domains reported", Duration::from_secs(60), || {
        (sim.c.json(&["domains", "list"]).as_array().unwrap().len() == 10).then_some(())
    })
    .unwrap();

    // Policies from files (FLT-5): a dry run shows the change and stores nothing.
    let fleet_file = tmp.path().join("fleet.toml");
    let busy_file = tmp.path().join("busy.toml");
    fs::write(&fleet_file, FLEET_POLICY).unwrap();
    fs::write(&busy_file, BUSY_POLICY).unwrap();
    let applied = sim
        .c
        .json(&["policy", "apply", "-f", fleet_file.to_str().unwrap()]);
    assert_eq!(applied["outcome"], "created");
    assert_eq!(
        applied["changes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["setting"] == "schedule")
            .count(),
        10,
        "every domain's schedule comes from the fleet policy now: {applied}"
    );
    sim.c.ok(&["agents", "label", "a1", "tier=busy"]);
    let dry = sim.c.json(&[
        "policy",
        "apply",
        "-f",
        busy_file.to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(
        (dry["outcome"].as_str(), dry["dry_run"].as_bool()),
        (Some("created"), Some(true))
    );
    let moved: BTreeSet<&str> = dry["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["agent"].as_str().unwrap())
        .collect();
    assert_eq!(
        moved,
        BTreeSet::from(["a1"]),
        "only the busy agent's domains change: {dry}"
    );
    assert_eq!(
        sim.c.json(&["policy", "list"]).as_array().unwrap().len(),
        1,
        "a dry run stores nothing"
    );
    sim.c
        .ok(&["policy", "apply", "-f", busy_file.to_str().unwrap()]);
    let db_file = tmp.path().join("with-db.toml");
    let db_names: Vec<String> = db_sites.iter().map(|i| names[*i].clone()).collect();
    fs::write(&db_file, with_db_policy(&db_names)).unwrap();
    sim.c
        .ok(&["policy", "apply", "-f", db_file.to_str().unwrap()]);
    let again = sim
        .c
        .json(&["policy", "apply", "-f", busy_file.to_str().unwrap()]);
    assert_eq!(again["outcome"], "unchanged");
    assert!(again["changes"].as_array().unwrap().is_empty());
    let shown = sim.c.json(&["domains", "show", &names[0]]);
    let setting = |name: &str| {
        shown["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(setting("schedule")["source"], "policy busy");
    assert_eq!(setting("timezone")["source"], "policy fleet");
    let mut applied_to_first = vec!["fleet", "busy"];
    if db_sites.contains(&0) {
        applied_to_first.push("with-db");
        assert_eq!(setting("database")["source"], "policy with-db");
    }
    assert_eq!(shown["policies"], serde_json::json!(applied_to_first));
    let bad = sim.c.ctl(&["policy", "apply", "-f", "/dev/stdin"]);
    assert_eq!(
        bad.status.code(),
        Some(64),
        "an empty document is refused as a usage error"
    );
    sim.two_ticks();
    let upcoming = sim.c.json(&["schedule", "--next", "24h"]);
    let first: Vec<&serde_json::Value> = upcoming
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["domain"] == names[0].as_str())
        .collect();
    assert_eq!(
        first.len(),
        5,
        "busy: 00, 06, 12, 18 and Sunday's full: {upcoming}"
    );

    // A legal hold on a whole domain, before its first run: every snapshot stays.
    let held_domain = names[4].clone();
    let h = sim.c.json(&[
        "hold",
        "add",
        "--domain",
        &held_domain,
        "--reason",
        "case 42",
    ]);
    assert_eq!(h["domain"], held_domain.as_str());

    // Day by day: the generator's activity, then the clock through the day.
    // The fleet policy's exclude reaches the agents: lock files stay out.
    let ex = Excludes::with_defaults(&["*.lock"]).unwrap();
    assert!(
        sites.iter().any(|s| s.join("composer.lock").exists()),
        "a site has a file the policy excludes"
    );
    let mut trees: HashMap<(String, i64), BTreeMap<String, Entry>> = HashMap::new();
    let mut db_sums: HashMap<(String, i64), Vec<(String, String)>> = HashMap::new();
    let end = T0 + days * DAY + 4 * HOUR;
    let held_snap_domain = names[5].clone();
    let mut held_snapshot = String::new();
    for day in 0..=days {
        if day > 0 {
            mutate_fleet(&fleet, day as u32);
            // The site's activity reaches its database too.
            for (&i, (cfg, db)) in &wired {
                fs::write(sites[i].join("wp-config.php"), cfg).unwrap();
                maria.sql(
                    Some(db),
                    &format!(
                        "INSERT INTO wp_posts (post_title, post_content) VALUES ('day {day}', REPEAT('text ', {})); \
                         UPDATE wp_posts SET post_title = CONCAT(post_title, '!') WHERE ID = 1; \
                         INSERT INTO wp_comments (comment_post_ID, comment_content) VALUES (1, 'comment {day}');",
                        100 + day * 7
                    ),
                );
            }
        }
        for (&i, (_, db)) in &wired {
            db_sums.insert((names[i].clone(), day), maria.checksums(db));
        }
        for (i, s) in sites.iter().enumerate() {
            trees.insert(
                (names[i].clone(), day),
                snapshot_tree(s, &|rel, dir| !ex.is_excluded(rel, dir)),
            );
        }
        let start = T0 + day * DAY;
        for hm in [
            15,
            2 * 60 + 15,
            3 * 60 + 15,
            5 * 60 + 15,
            6 * 60 + 15,
            12 * 60 + 15,
            18 * 60 + 15,
        ] {
            let t = start + hm * 60;
            if t > end {
                break;
            }
            match (day, hm) {
                // An agent away for two hours: its runs wait, then run.
                (5, 135) => {
                    a3.kill9();
                    sim.c.wait_online("a3", false);
                }
                (5, 195) => {
                    sim.step(t);
                    let waiting: Vec<serde_json::Value> = sim
                        .jobs()
                        .into_iter()
                        .filter(|j| {
                            j["agent"] == "a3" && j["state"] == "queued" && j["kind"] == "backup"
                        })
                        .collect();
                    assert_eq!(
                        waiting.len(),
                        5,
                        "a3's four sites and one database wait for it"
                    );
                    assert!(waiting
                        .iter()
                        .all(|j| j["step"].as_str().unwrap().contains("offline")));
                    a3.start();
                    sim.c.wait_online("a3", true);
                    sim.settle();
                    continue;
                }
                // An agent away for a day: its runs fail visibly.
                (12, 15) => {
                    a3.kill9();
                    sim.c.wait_online("a3", false);
                }
                (13, 15) => {
                    a3.start();
                    sim.c.wait_online("a3", true);
                }
                _ => {}
            }
            if (day, hm) == (9, 135) {
                // kill -9 of the controller while the 02:00 runs go: a2 is
                // stopped, so its runs are surely started and unfinished.
                unsafe_kill(a2.pid(), libc::SIGSTOP);
                fs::write(&sim.clock, t.to_string()).unwrap();
                sim.now = t;
                eventually("a2's runs start", Duration::from_secs(30), || {
                    let n = sim
                        .jobs()
                        .iter()
                        .filter(|j| j["agent"] == "a2" && j["state"] == "running")
                        .count();
                    (n == 2).then_some(())
                })
                .unwrap();
                sim.c.kill_controller();
                unsafe_kill(a2.pid(), libc::SIGCONT);
                sim.c.start_controller();
                for a in ["a1", "a2", "a3"] {
                    sim.c.wait_online(a, true);
                }
                sim.settle();
                continue;
            }
            sim.step(t);
            if (day, hm) == (2, 135) {
                let j = sim
                    .jobs()
                    .into_iter()
                    .find(|j| {
                        j["domain"] == held_snap_domain.as_str()
                            && j["scheduled_for"] == start + 2 * HOUR
                    })
                    .expect("the day-2 run of the held snapshot's domain");
                held_snapshot = j["snapshot"].as_str().unwrap().to_string();
                sim.c.ok(&[
                    "hold",
                    "add",
                    "--snapshot",
                    &held_snapshot[..12],
                    "--reason",
                    "ticket 7",
                ]);
                let refused = sim.c.ctl(&["forget", &held_snapshot]);
                assert!(!refused.status.success());
                assert!(String::from_utf8_lossy(&refused.stderr).contains("legal hold"));
            }
        }
    }
    sim.step(end);

    // Every scheduled occurrence ran exactly once (a3's day-12 one failed
    // visibly); nothing was started by hand.
    let all = sim.jobs();
    let (jobs, others): (Vec<_>, Vec<_>) = all.into_iter().partition(|j| j["kind"] == "backup");
    assert!(
        jobs.iter().all(|j| j["trigger"] == "schedule"),
        "every backup came from the scheduler"
    );
    // verify_every = 7d: the newest files and dump of each database site
    // were test-restored every week, and nothing else ran.
    assert!(
        others.iter().all(|j| j["trigger"] == "verify"),
        "only verifications besides backups: {others:?}"
    );
    for &i in &db_sites {
        for (database, step) in [
            (true, "test restore verified 2 tables"),
            (false, "test restore verified "),
        ] {
            let ok: Vec<_> = others
                .iter()
                .filter(|j| {
                    j["domain"] == names[i].as_str()
                        && j["state"] == "succeeded"
                        && (j["content"] == "database") == database
                })
                .collect();
            assert!(
                (3..=5).contains(&ok.len()),
                "{}: weekly test restores in 30 days: {others:?}",
                names[i]
            );
            assert!(
                ok.iter()
                    .all(|j| j["step"].as_str().unwrap().starts_with(step)),
                "{ok:?}"
            );
        }
    }
    // (snapshot, time, kind, content) of every successful run, per domain.
    let mut by_domain: HashMap<String, Vec<(String, i64, String, String)>> = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        let busy = i < 3;
        let want = expected_runs(busy, T0 - HOUR, end);
        let contents: &[&str] = if db_sites.contains(&i) {
            &["files", "database"]
        } else {
            &["files"]
        };
        for content in contents {
            let mut seen: BTreeMap<i64, Vec<&serde_json::Value>> = BTreeMap::new();
            for j in jobs
                .iter()
                .filter(|j| j["domain"] == name.as_str() && j["content"] == *content)
            {
                seen.entry(j["scheduled_for"].as_i64().unwrap())
                    .or_default()
                    .push(j);
            }
            assert_eq!(
                seen.keys().copied().collect::<Vec<_>>(),
                want.keys().copied().collect::<Vec<_>>(),
                "{name} ({content}): the runs its schedule names, no more, no fewer; failures: {:?}",
                jobs.iter()
                    .filter(|j| j["domain"] == name.as_str() && j["state"] != "succeeded")
                    .map(|j| (j["scheduled_for"].clone(), j["content"].clone(), j["error"].clone()))
                    .collect::<Vec<_>>()
            );
            for (t, js) in &seen {
                let ok: Vec<_> = js.iter().filter(|j| j["state"] == "succeeded").collect();
                let offline_day = agent_of(i) == "a3" && (*t - T0).div_euclid(DAY) == 12;
                if offline_day {
                    assert!(ok.is_empty());
                    assert!(
                        js.iter().any(|j| j["state"] == "failed"
                            && j["error"].as_str().unwrap().contains("offline")),
                        "{name} at {t}: {js:?}"
                    );
                    continue;
                }
                assert_eq!(
                    ok.len(),
                    1,
                    "{name} ({content}): occurrence {t} succeeded exactly once: {js:?}"
                );
                if *content == "files" {
                    assert_eq!(ok[0]["backup_kind"], want[t], "{name} at {t}");
                } else {
                    // The dump belongs to the files run of the same occurrence.
                    let run = ok[0]["run"].as_str().unwrap();
                    assert!(
                        jobs.iter().any(|f| f["id"] == run
                            && f["content"] == "files"
                            && f["scheduled_for"] == *t),
                        "{name} at {t}: the dump shares its run id with the files job"
                    );
                }
                let snap = ok[0]["snapshot"].as_str().unwrap().to_string();
                let at = ok[0]["finished_at"].as_i64().unwrap();
                by_domain.entry(name.clone()).or_default().push((
                    snap,
                    at,
                    want[t].to_string(),
                    content.to_string(),
                ));
            }
        }
    }
    assert!(sim.metric("cairn_jobs_total{kind=\"backup\",outcome=\"failed\"}") >= 4.0);
    // The controller's kill cost each run it interrupted one attempt.
    let interrupted = jobs
        .iter()
        .filter(|j| j["error"].as_str().is_some_and(|e| e.contains("restarted")))
        .count();
    assert!(interrupted >= 2, "the kill interrupted a2's two runs");

    // Retention preview equals what the next run forgets.
    let before: BTreeSet<String> = sim
        .c
        .json(&["snapshots", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let preview = sim.c.json(&["retention", "preview"]);
    let previewed: BTreeSet<String> = preview["forget"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect();
    let applied = sim.c.json(&["retention", "apply"]);
    let after: BTreeSet<String> = sim
        .c
        .json(&["snapshots", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        before.difference(&after).cloned().collect::<BTreeSet<_>>(),
        previewed
    );
    assert_eq!(
        applied["forgotten"].as_u64().unwrap() as usize,
        previewed.len()
    );

    // What is left is exactly the GFS set each policy names, plus holds.
    for (i, name) in names.iter().enumerate() {
        let mine = &by_domain[name];
        let pairs = |content: &str, kind: Option<&str>| -> Vec<(String, i64)> {
            mine.iter()
                .filter(|r| r.3 == content && kind.is_none_or(|k| r.2 == k))
                .map(|r| (r.0.clone(), r.1))
                .collect()
        };
        // Busy: per-kind rule for fulls; dumps are judged on their own.
        let mut want = if i < 3 {
            let mut k = gfs(&pairs("files", Some("incremental")), 4, 3, 2, 0);
            k.extend(gfs(&pairs("files", Some("full")), 2, 0, 0, 0));
            k.extend(gfs(&pairs("database", None), 4, 3, 2, 0));
            k
        } else {
            let mut k = gfs(&pairs("files", None), 0, 7, 4, 3);
            k.extend(gfs(&pairs("database", None), 0, 7, 4, 3));
            k
        };
        if *name == held_domain {
            want = mine.iter().map(|r| r.0.clone()).collect();
        }
        if *name == held_snap_domain {
            want.insert(held_snapshot.clone());
        }
        let have: BTreeSet<String> = mine
            .iter()
            .map(|r| r.0.clone())
            .filter(|s| after.contains(s))
            .collect();
        assert_eq!(have, want, "{name}: retention kept exactly its GFS set");
        assert!(
            have.len() < mine.len() || *name == held_domain,
            "{name}: retention forgot something"
        );
    }
    assert!(after.contains(&held_snapshot), "the held snapshot survived");

    // gc reclaimed what retention freed; nothing reclaimable is left.
    assert!(
        sim.metric("cairn_gc_deleted_packs_total") > 0.0,
        "gc deleted packs"
    );
    let gc = sim.c.json(&["gc", "--dry-run", "--grace", "1s"]);
    assert_eq!(gc["packs_deleted"], 0, "nothing left for gc: {gc}");

    // Kept runs restore byte-identical: each domain's oldest and newest.
    for (i, name) in names.iter().enumerate() {
        let mut kept: Vec<&(String, i64, String, String)> = by_domain[name]
            .iter()
            .filter(|r| after.contains(&r.0) && r.3 == "files")
            .collect();
        kept.sort_by_key(|r| r.1);
        for r in [kept[0], kept[kept.len() - 1]] {
            let day = (r.1 - T0).div_euclid(DAY);
            let target = tmp
                .path()
                .join("restore")
                .join(format!("{name}-{}", &r.0[..8]));
            let job = sim.c.json(&[
                "restore",
                &r.0,
                "--target",
                target.to_str().unwrap(),
                "--wait",
            ]);
            assert_eq!(job["state"], "succeeded", "{job}");
            let got = snapshot_tree(&target, &|_, _| true);
            assert_eq!(
                got,
                trees[&(name.clone(), day)],
                "{name}: snapshot of day {day} restores byte-identical (agent {})",
                agent_of(i)
            );
        }
    }

    // Kept dumps restore with every table's checksum as it was that day.
    let repo = Ctl::new(
        sim.c.dir.join("repo").to_str().unwrap(),
        cluster::PASSPHRASE,
    );
    for &i in &db_sites {
        let name = &names[i];
        let mut kept: Vec<&(String, i64, String, String)> = by_domain[name]
            .iter()
            .filter(|r| after.contains(&r.0) && r.3 == "database")
            .collect();
        kept.sort_by_key(|r| r.1);
        assert!(kept.len() >= 3, "{name}: dumps kept by retention");
        for (n, r) in [kept[0], kept[kept.len() - 1]].into_iter().enumerate() {
            let day = (r.1 - T0).div_euclid(DAY);
            let into = format!("check_{i}_{n}");
            let socket = maria.socket.display().to_string();
            repo.ok(&[
                "restore-db",
                &r.0,
                "--database",
                &into,
                "--db-socket",
                &socket,
                "--db-user",
                "root",
            ]);
            assert_eq!(
                maria.checksums(&into),
                db_sums[&(name.clone(), day)],
                "{name}: the dump of day {day} restores every table as it was"
            );
        }
    }
}

/// INT-7: with no policy, a domain runs its automatic plan, and an analysis
/// that changes the plan changes what runs next: a quiet small site is
/// backed up weekly; once it is busy, every six hours.
#[test]
fn the_automatic_plan_follows_each_new_analysis() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = tmp.path().join("clock");
    // T0 is a Sunday, 00:00 UTC; the test starts on the Monday.
    let start = T0 + DAY;
    fs::write(&clock, start.to_string()).unwrap();
    let c = Cluster::start(ClusterOptions {
        clock_file: Some(clock.clone()),
        scheduler: Some("maintenance = \"0 5 1 1 *\"".into()),
        ..Default::default()
    });
    let site = tmp.path().join("site");
    fs::create_dir_all(&site).unwrap();
    let month_ago =
        filetime::FileTime::from_unix_time(chrono::Utc::now().timestamp() - 30 * DAY, 0);
    for i in 0..5 {
        let p = site.join(format!("page{i}.php"));
        fs::write(&p, format!("<?php // page {i}")).unwrap();
        filetime::set_file_mtime(&p, month_ago).unwrap();
    }
    let mut agent = c.add_agent("a1", &[("quiet.test", &site)]);
    let mut sim = Sim {
        c,
        clock,
        now: start,
    };
    let runs_within = |sim: &Sim, horizon: &str| -> Vec<serde_json::Value> {
        sim.c
            .json(&["schedule", "--next", horizon])
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["domain"] == "quiet.test")
            .cloned()
            .collect()
    };
    // Quiet: one full backup a week, on Sunday at 03:00 (plus its splay).
    let quiet = eventually("the automatic plan", Duration::from_secs(60), || {
        let r = runs_within(&sim, "7d");
        (!r.is_empty()).then_some(r)
    })
    .unwrap();
    assert_eq!(quiet.len(), 1, "{quiet:?}");
    assert_eq!(quiet[0]["cron"], "0 3 * * 0", "{quiet:?}");
    assert_eq!(quiet[0]["source"], "automatic plan", "{quiet:?}");
    sim.two_ticks();
    sim.step(start + 7 * HOUR);
    assert!(sim.jobs().is_empty(), "nothing runs on a quiet Monday");

    // Busy: 150 files changed today. The agent's next analysis (at its
    // restart) makes it every six hours.
    for i in 0..150 {
        fs::write(site.join(format!("upload{i}.jpg")), vec![i as u8; 2000]).unwrap();
    }
    agent.kill9();
    sim.c.wait_online("a1", false);
    agent.start();
    sim.c.wait_online("a1", true);
    let busy = eventually("the new plan", Duration::from_secs(60), || {
        let r = runs_within(&sim, "24h");
        (r.len() >= 3).then_some(r)
    })
    .unwrap();
    assert!(busy.iter().all(|r| r["cron"] == "0 */6 * * *"), "{busy:?}");
    let shown = sim.c.json(&["domains", "show", "quiet.test"]);
    assert!(
        shown.to_string().contains("every 6 hours"),
        "the plan's reason says why: {shown}"
    );
    sim.two_ticks();
    sim.settle();
    // 06:00, already past when the plan changed, runs at once; then 12:00
    // and 18:00 (each plus the splay), one backup each.
    sim.step(start + 13 * HOUR);
    sim.step(start + 19 * HOUR);
    let jobs = sim.jobs();
    let ok: Vec<&serde_json::Value> = jobs
        .iter()
        .filter(|j| j["trigger"] == "schedule" && j["state"] == "succeeded")
        .collect();
    let times: BTreeSet<i64> = ok
        .iter()
        .map(|j| j["scheduled_for"].as_i64().unwrap())
        .collect();
    assert_eq!(
        times,
        BTreeSet::from([start + 6 * HOUR, start + 12 * HOUR, start + 18 * HOUR]),
        "{jobs:?}"
    );
    assert!(ok.iter().all(|j| j["backup_kind"] == "full"));
    drop(agent);
}
