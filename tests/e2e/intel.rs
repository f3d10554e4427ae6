//! Domain intelligence (issue 4): discovery from web roots and real-looking
//! nginx/apache configs, site types and databases, activity, traffic and
//! trend over gen_fleet days, and the controller's plan following the
//! analysis. INT-1..INT-7.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cairn_agent::analysis;
use cairn_agent::config::Discovery;
use cairn_agent::discover::Site;
use cairn_controller::strategy::{self, Activity, SizeClass};
use cairn_repo::exclude::Excludes;
use cairn_tests::cluster::{bin, http_get, Cluster, ClusterOptions};
use cairn_tests::*;

/// gen_fleet.py's day 0 (checked against the script below).
const FLEET_EPOCH: i64 = 1_704_067_200;
const DAY: i64 = 86_400;

fn fleet_epoch_is_current() {
    let script = fs::read_to_string(gen_fleet_script()).unwrap();
    assert!(
        script.contains(&format!("EPOCH = {FLEET_EPOCH}")),
        "gen_fleet.py's EPOCH changed"
    );
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn defaults() -> Excludes {
    Excludes::with_defaults::<&str>(&[]).unwrap()
}

/// Included files (excludes applied) → (mtime, content hash).
fn included_files(root: &Path) -> BTreeMap<String, (i64, blake3::Hash)> {
    let ex = defaults();
    snapshot_tree(root, &|rel, dir| !ex.is_excluded(rel, dir))
        .into_iter()
        .filter_map(|(k, e)| match e {
            Entry::File { mtime, hash, .. } => Some((k, (mtime.0, hash))),
            _ => None,
        })
        .collect()
}

/// Files that are new or were rewritten between two looks.
fn changed(
    before: &BTreeMap<String, (i64, blake3::Hash)>,
    after: &BTreeMap<String, (i64, blake3::Hash)>,
) -> u64 {
    after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(v))
        .count() as u64
}

/// Shifts every mtime under `root` by `by` seconds: the fleet's simulated
/// days become the real last days, so a daemon analyzing "now" sees them.
fn shift_mtimes(root: &Path, by: i64) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let m = fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                stack.push(e.path());
            }
            if !m.file_type().is_symlink() {
                use std::os::unix::fs::MetadataExt;
                let t = filetime::FileTime::from_unix_time(m.mtime() + by, 0);
                filetime::set_file_mtime(e.path(), t).unwrap();
            }
        }
    }
}

/// A plugin update: `n` files rewritten now.
fn busy_day(root: &Path, n: usize) {
    let dir = root.join("wp-content/plugins/cairn-busy");
    fs::create_dir_all(&dir).unwrap();
    for i in 0..n {
        fs::write(
            dir.join(format!("part-{i}.php")),
            format!("<?php // v2 {i}\n"),
        )
        .unwrap();
    }
}

/// The database settings a fleet site's own config names: (engine, name, password).
fn fleet_db(root: &Path) -> (String, String, String) {
    let grab = |text: &str, pat: &str| {
        let i = text
            .find(pat)
            .unwrap_or_else(|| panic!("{pat} in {}", root.display()))
            + pat.len();
        text[i..].split(['\'', '\n']).next().unwrap().to_string()
    };
    if let Ok(wp) = fs::read_to_string(root.join("wp-config.php")) {
        let name = grab(&wp, "'DB_NAME', '");
        let pw = grab(&wp, "'DB_PASSWORD', '");
        ("mariadb".into(), name, pw)
    } else {
        let env = fs::read_to_string(root.join(".env")).unwrap();
        let name = grab(&env, "DB_DATABASE=");
        let pw = env
            .lines()
            .find_map(|l| l.strip_prefix("DB_PASSWORD="))
            .unwrap_or("")
            .to_string();
        ("mariadb".into(), name, pw)
    }
}

fn access_line(t: i64, host: &str) -> String {
    let ts = chrono::DateTime::from_timestamp(t, 0)
        .unwrap()
        .format("%d/%b/%Y:%H:%M:%S +0000");
    format!(
        "198.51.100.7 - - [{ts}] \"GET / HTTP/1.1\" 200 5120 \"https://{host}/\" \"Mozilla/5.0\"\n"
    )
}

/// Copies the fixture configs, filling in where this test's sites live.
fn install_fixtures(to: &Path, vars: &[(&str, String)]) {
    let from = workspace_root().join("tests/fixtures/webconf");
    let mut stack = vec![from.clone()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let dest = to.join(p.strip_prefix(&from).unwrap());
            if p.is_dir() {
                fs::create_dir_all(&dest).unwrap();
                stack.push(p);
            } else {
                let mut text = fs::read_to_string(&p).unwrap();
                for (k, v) in vars {
                    text = text.replace(k, v);
                }
                fs::write(dest, text).unwrap();
            }
        }
    }
}

fn row<'a>(list: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("domain {name} not listed: {list:#}"))
}

// INT-1, INT-3, INT-6: every domain found with its root, type and database;
// access logs (rotated, gzipped) counted; no password anywhere.
#[test]
fn discovery_finds_every_domain_with_root_type_and_database() {
    let c = Cluster::start(ClusterOptions::default());
    let fleet_dir = c.dir.join("fleet");
    gen_fleet(&fleet_dir, 4, 0.05);
    let www = fleet_dir.join("www");
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(fleet_dir.join(".genstate.json")).unwrap()).unwrap();
    let sites: Vec<(String, String)> = state["sites_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["domain"].as_str().unwrap().to_string(),
                s["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let of_kind = |k: &str| {
        sites
            .iter()
            .filter(|s| s.1 == k)
            .map(|s| s.0.clone())
            .collect::<Vec<_>>()
    };
    let (wp, lara) = (of_kind("wp"), of_kind("laravel"));
    assert!(wp.len() >= 2 && !lara.is_empty(), "fleet kinds: {sites:?}");
    let (site0, site1, site2) = (wp[0].clone(), lara[0].clone(), wp[1].clone());
    let site3 = sites
        .iter()
        .map(|s| s.0.clone())
        .find(|d| ![&site0, &site1, &site2].contains(&d))
        .unwrap();

    // Hand-made sites beside the fleet.
    let extra = c.dir.join("extra");
    fs::create_dir_all(extra.join("static.example/htdocs")).unwrap();
    fs::write(
        extra.join("static.example/htdocs/index.html"),
        "<h1>hi</h1>",
    )
    .unwrap();
    fs::create_dir_all(extra.join("app.example/src")).unwrap();
    fs::write(
        extra.join("app.example/composer.json"),
        "{\"name\":\"acme/app\"}",
    )
    .unwrap();
    let home = c.dir.join("home");
    let alice = home.join("alice");
    fs::create_dir_all(alice.join("public_html")).unwrap();
    fs::write(alice.join("public_html/wp-settings.php"), "<?php").unwrap();
    let alice_pw = "al1ce\"s-$ecret";
    fs::write(
        alice.join("wp-config.php"),
        format!(
            "<?php\n/** one level above the install */\ndefine( \"DB_NAME\", getenv('ALICE_DB') ?: \"alice_wp\" );\ndefine( \"DB_USER\", \"alice\" );\ndefine( \"DB_PASSWORD\", \"{}\" );\ndefine( \"DB_HOST\", \"localhost:/run/mysqld/mysqld.sock\" );\n$table_prefix = \"al_\";\n",
            alice_pw.replace('"', "\\\"").replace('$', "\\$")
        ),
    )
    .unwrap();

    // Access logs: the live one, yesterday's rotation and an older gzip.
    let logs = c.dir.join("logs");
    fs::create_dir_all(&logs).unwrap();
    let t = now();
    let live: String = (1..=40).map(|i| access_line(t - 60 * i, &site0)).collect();
    let rotated: String = (0..25)
        .map(|i| access_line(t - 20 * 3600 - 60 * i, &site0))
        .collect::<String>()
        + &access_line(t - 30 * 3600, &site0);
    fs::write(logs.join(format!("{site0}.access.log")), live).unwrap();
    fs::write(logs.join(format!("{site0}.access.log.1")), rotated).unwrap();
    {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let older: String = (0..7)
            .map(|i| access_line(t - 23 * 3600 - i, &site0))
            .collect::<String>()
            + &access_line(t - 50 * 3600, &site0);
        gz.write_all(older.as_bytes()).unwrap();
        fs::write(
            logs.join(format!("{site0}.access.log.2.gz")),
            gz.finish().unwrap(),
        )
        .unwrap();
    }
    let want_requests = 40 + 25 + 7;

    let conf = c.dir.join("etc");
    install_fixtures(
        &conf,
        &[
            ("@WWW@", www.display().to_string()),
            ("@SITE0@", site0.clone()),
            ("@SITE1@", site1.clone()),
            ("@SITE2@", site2.clone()),
            ("@LOGS@", logs.display().to_string()),
            ("@EXTRA@", extra.display().to_string()),
            ("@APACHE@", conf.join("apache").display().to_string()),
        ],
    );
    let agent_toml = format!(
        "[discovery]\nweb_roots = [{:?}, {:?}]\nnginx = [{:?}]\napache = [{:?}, \"/nonexistent/httpd.conf\"]\ninterval = \"1h\"\n[[domain]]\nname = \"override.example\"\npath = {:?}\n",
        format!("{}/*", www.display()),
        format!("{}/*/public_html", home.display()),
        conf.join("nginx/nginx.conf"),
        conf.join("apache/apache2.conf"),
        www.join(&site3),
    );
    let agent = c.add_agent_toml("web1", &agent_toml);

    let list = c.json(&["domains", "list"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    let mut want_names = vec![
        site0.as_str(),
        site1.as_str(),
        site2.as_str(),
        "override.example",
        "static.example",
        "app.example",
        "alice",
        "ghost.example",
    ];
    want_names.sort();
    let mut got = names.clone();
    got.sort();
    assert_eq!(got, want_names, "{list:#}");

    let expect = |name: &str, root: &Path, ty: &str, db: Option<String>| {
        let r = row(&list, name);
        assert_eq!(r["path"], root.to_str().unwrap(), "{name}: {r:#}");
        assert_eq!(r["site_type"], ty, "{name}: {r:#}");
        let dbs: Vec<String> = serde_json::from_value(r["databases"].clone()).unwrap();
        assert_eq!(dbs, db.into_iter().collect::<Vec<_>>(), "{name}: {r:#}");
        assert_eq!(r["root_missing"], false, "{name}");
    };
    let mut passwords = vec![alice_pw.to_string()];
    for (name, dir) in [
        (&site0, &site0),
        (&site1, &site1),
        (&site2, &site2),
        (&"override.example".to_string(), &site3),
    ] {
        let root = www.join(dir);
        let (engine, db, pw) = fleet_db(&root);
        if !pw.is_empty() {
            passwords.push(pw);
        }
        let ty = if root.join("wp-config.php").exists() {
            "wordpress"
        } else {
            "laravel"
        };
        expect(name, &root, ty, Some(format!("{engine}:{db}")));
    }
    expect(
        "static.example",
        &extra.join("static.example/htdocs"),
        "static",
        None,
    );
    expect("app.example", &extra.join("app.example"), "php", None);
    expect(
        "alice",
        &alice.join("public_html"),
        "wordpress",
        Some("mariadb:alice_wp".into()),
    );

    // Names and sources: aliases pooled, the config's domain wins.
    let r0 = row(&list, &site0);
    assert_eq!(r0["aliases"], serde_json::json!([format!("www.{site0}")]));
    assert!(
        r0["source"].as_str().unwrap().starts_with("nginx "),
        "{r0:#}"
    );
    let r2 = row(&list, &site2);
    assert_eq!(
        r2["aliases"],
        serde_json::json!([format!("www.{site2}"), format!("blog.{site2}")])
    );
    assert!(
        r2["source"].as_str().unwrap().starts_with("apache "),
        "{r2:#}"
    );
    assert_eq!(row(&list, "override.example")["source"], "config");
    assert_eq!(row(&list, "ghost.example")["root_missing"], true);
    assert!(
        fs::read_to_string(agent.log())
            .unwrap()
            .contains("ghost.example: root /srv/gone/ghost.example is missing"),
        "a missing root is logged"
    );

    // Traffic: only the last 24 hours, across live, rotated and gzipped logs.
    assert_eq!(r0["requests_24h"], want_requests, "{r0:#}");
    assert_eq!(
        row(&list, &site2)["requests_24h"],
        0,
        "its log does not exist; the fleet's own log is old"
    );
    assert_eq!(
        row(&list, "static.example")["requests_24h"],
        serde_json::Value::Null
    );

    // Every present domain has a plan, and the reasons say why.
    for r in list
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["root_missing"] == false)
    {
        let size = SizeClass::of(r["size_bytes"].as_u64().unwrap());
        let act = Activity::of(r["changes_24h"].as_u64().unwrap());
        let want = strategy::recommend(size, act);
        assert_eq!(r["strategy"], want.strategy.as_str(), "{r:#}");
        assert_eq!(r["reason"], want.reason.as_str(), "{r:#}");
        assert_eq!(r["size_class"], size.as_str());
    }
    let show = c.ok(&["domains", "show", &site0]);
    for want in [
        "wordpress",
        "mariadb:",
        "why ",
        "plan changes",
        &format!("www.{site0}"),
    ] {
        assert!(show.contains(want), "{want:?} in:\n{show}");
    }
    let unknown = c.ctl(&["domains", "show", "nope.example"]);
    assert_eq!(
        unknown.status.code(),
        Some(64),
        "an unknown domain is a usage error"
    );

    // No password in the inventory, the listings, the logs, the agent's or
    // the controller's state, or the agent's own report.
    let analyze = Command::new(bin("cairn-agent"))
        .arg("-c")
        .arg(agent.config())
        .args(["analyze", "--json"])
        .output()
        .unwrap();
    assert!(
        analyze.status.success(),
        "{}",
        String::from_utf8_lossy(&analyze.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&analyze.stdout).unwrap();
    assert_eq!(report.as_array().unwrap().len(), want_names.len());
    let mut texts = vec![
        String::from_utf8_lossy(&analyze.stdout).into_owned(),
        c.ok(&["domains", "list", "--json"]),
        c.ok(&["domains", "list"]),
        fs::read_to_string(agent.log()).unwrap(),
        fs::read_to_string(c.controller_log()).unwrap(),
    ];
    for n in &want_names {
        texts.push(c.ok(&["domains", "show", n]));
        texts.push(c.ok(&["domains", "show", n, "--json"]));
    }
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    for root in [agent.state(), c.dir.join("controller")] {
        for (rel, e) in snapshot_tree(&root, &|_, _| true) {
            if let Entry::File { .. } = e {
                blobs.push((rel.clone(), fs::read(root.join(&rel)).unwrap()));
            }
        }
    }
    for pw in &passwords {
        assert!(pw.len() >= 8, "fleet passwords are long enough to grep for");
        for t in &texts {
            assert!(!t.contains(pw.as_str()), "a database password leaked:\n{t}");
        }
        for (name, b) in &blobs {
            assert!(
                !b.windows(pw.len()).any(|w| w == pw.as_bytes()),
                "a database password is in {name}"
            );
        }
    }
}

/// Analyzes `site` as the daemon would, on a simulated day of the fleet.
fn analyze_on(site: &Site, state: &Path, day: i64) -> analysis::Report {
    analysis::analyze(
        site,
        &Discovery::default(),
        Some(state),
        FLEET_EPOCH + (day + 1) * DAY,
    )
}

// INT-2, INT-4: activity over gen_fleet days (mutate), with the history
// persisted in the state dir: changes counted exactly, trend from the days.
#[test]
fn activity_and_trend_follow_gen_fleet_days() {
    fleet_epoch_is_current();
    let tmp = tempfile::tempdir().unwrap();
    let fleet = tmp.path().join("fleet");
    let dirs = gen_fleet(&fleet, 1, 0.05);
    let state = tmp.path().join("state");
    let site = Site {
        name: "one.example".into(),
        aliases: Vec::new(),
        root: dirs[0].clone(),
        exclude: Vec::new(),
        access_logs: Vec::new(),
        source: "test".into(),
        root_missing: false,
    };

    let day0 = analyze_on(&site, &state, 0);
    let files0 = included_files(&site.root);
    assert_eq!(day0.changes_24h, 0, "generated files are older than day 0");
    assert_eq!(
        day0.files,
        files0.len() as u64,
        "the walk counts what a backup reads"
    );
    let bytes: u64 = snapshot_tree(&site.root, &|rel, dir| !defaults().is_excluded(rel, dir))
        .values()
        .map(|e| {
            if let Entry::File { len, .. } = e {
                *len
            } else {
                0
            }
        })
        .sum();
    assert_eq!(day0.size_bytes, bytes);
    assert_eq!(day0.trend.as_str(), "stable");
    assert!(
        day0.requests_24h.is_some(),
        "the site's logs/access.log is found"
    );

    mutate_fleet(&fleet, 1);
    let files1 = included_files(&site.root);
    let day1 = analyze_on(&site, &state, 1);
    let want1 = changed(&files0, &files1);
    assert!(want1 > 0, "mutate changed something");
    assert_eq!(day1.changes_24h, want1);
    // gen_fleet appends day 1's requests to the site's access log.
    assert!(day1.requests_24h.unwrap() > 0, "{:?}", day1.requests_24h);

    // Day 2: a plugin update on top of the day's churn.
    mutate_fleet(&fleet, 2);
    busy_day(&site.root, 150);
    let t2 = FLEET_EPOCH + 2 * DAY + 3600;
    for i in 0..150 {
        let p = site
            .root
            .join(format!("wp-content/plugins/cairn-busy/part-{i}.php"));
        filetime::set_file_mtime(&p, filetime::FileTime::from_unix_time(t2, 0)).unwrap();
    }
    let files2 = included_files(&site.root);
    let day2 = analyze_on(&site, &state, 2);
    assert_eq!(day2.changes_24h, changed(&files1, &files2));
    assert!(day2.changes_24h >= 150);
    assert_eq!(day2.trend.as_str(), "rising", "{:?}", day2.history);

    // Day 3 is an ordinary day again: activity falls back.
    mutate_fleet(&fleet, 3);
    let files3 = included_files(&site.root);
    let day3 = analyze_on(&site, &state, 3);
    assert_eq!(day3.changes_24h, changed(&files2, &files3));
    assert_eq!(day3.trend.as_str(), "falling", "{:?}", day3.history);
    // Day 0 had no changes.
    let mean = (want1 + day2.changes_24h + day3.changes_24h) as f64 / 4.0;
    assert!((day3.avg_daily_changes - mean).abs() < 1e-9);

    // A second analysis the same day replaces that day's sample; the
    // history survived on disk between analyses.
    let again = analyze_on(&site, &state, 3);
    assert_eq!(again.history.len(), 4);
    assert_eq!(
        again.history.iter().map(|s| s.changes).collect::<Vec<_>>(),
        vec![0, want1, day2.changes_24h, day3.changes_24h]
    );
}

// INT-2, INT-5, INT-7: a running agent re-analyzes on its interval, and the
// controller's plan follows the analysis, each change recorded with why.
#[test]
fn the_controllers_plan_follows_the_agents_analysis() {
    fleet_epoch_is_current();
    let c = Cluster::start(ClusterOptions::default());
    let fleet = c.dir.join("fleet");
    let dirs = gen_fleet(&fleet, 1, 0.05);
    let root = dirs[0].clone();
    let name = root.file_name().unwrap().to_str().unwrap().to_string();
    // A 120 MB archive among the uploads makes it a medium site (INT-4).
    let big = root.join("wp-content/uploads/site-archive.zip");
    fs::File::create(&big)
        .unwrap()
        .set_len(120_000_000)
        .unwrap();
    filetime::set_file_mtime(
        &big,
        filetime::FileTime::from_unix_time(FLEET_EPOCH - 9 * DAY, 0),
    )
    .unwrap();
    let toml = format!(
        "[discovery]\nweb_roots = [{:?}]\nnginx = []\napache = []\ninterval = \"1s\"\n",
        format!("{}/www/*", fleet.display())
    );
    let mut agent = c.add_agent_toml("web1", &toml);

    let wait_for = |what: &str, f: &dyn Fn(&serde_json::Value) -> bool| -> serde_json::Value {
        eventually(what, scaled(Duration::from_secs(30)), || {
            let d = c.json(&["domains", "show", &name]);
            f(&d).then_some(d)
        })
        .unwrap()
    };
    let plan_of = |d: &serde_json::Value| {
        strategy::recommend(
            SizeClass::of(d["size_bytes"].as_u64().unwrap()),
            Activity::of(d["changes_24h"].as_u64().unwrap()),
        )
    };
    let d0 = wait_for("first analysis", &|d| d["analyzed_at"].as_i64().is_some());
    assert_eq!(
        (d0["size_class"].as_str(), d0["activity"].as_str()),
        (Some("medium"), Some("low")),
        "{d0:#}"
    );
    assert_eq!(d0["strategy"], "full");
    assert_eq!(
        d0["changes"].as_array().unwrap().len(),
        1,
        "the first plan is recorded"
    );
    let mut plans = vec![plan_of(&d0)];

    // gen_fleet's next day, moved to the real last 24 hours. The agent is
    // stopped meanwhile so that no half-mutated tree is analyzed.
    agent.kill9();
    let before = included_files(&root);
    mutate_fleet(&fleet, 1);
    let want1 = changed(&before, &included_files(&root));
    shift_mtimes(&fleet.join("www"), now() - (FLEET_EPOCH + 2 * DAY));
    agent.start();
    let d1 = wait_for("day 1 analyzed", &|d| {
        d["changes_24h"].as_u64() == Some(want1)
    });
    assert_eq!(d1["activity"], Activity::of(want1).as_str());
    assert_eq!(d1["strategy"], plan_of(&d1).strategy.as_str());
    plans.push(plan_of(&d1));

    // A plugin update: 150 files more today. High activity on a medium
    // site: incremental every 6 hours plus a weekly full.
    agent.kill9();
    busy_day(&root, 150);
    agent.start();
    let d2 = wait_for("busy day analyzed", &|d| {
        d["changes_24h"].as_u64() == Some(want1 + 150)
    });
    assert_eq!(d2["activity"], "high");
    assert_eq!(d2["strategy"], "incremental");
    assert_eq!(
        d2["schedule"],
        serde_json::json!([{"cron": "0 */6 * * *", "kind": "incremental"}, {"cron": "0 3 * * 0", "kind": "full"}])
    );
    assert_eq!(
        d2["reason"],
        "medium, high activity → incremental every 6 hours + weekly full"
    );
    plans.push(plan_of(&d2));

    // One recorded change per actual change of plan, old → new and why.
    plans.dedup_by(|a, b| a.strategy == b.strategy && a.runs == b.runs);
    let changes = d2["changes"].as_array().unwrap();
    assert_eq!(changes.len(), plans.len(), "{changes:#?}");
    let last = changes.last().unwrap();
    assert_eq!(last["from"], "full (full 0 3 * * 0)");
    assert_eq!(
        last["to"],
        "incremental (incremental 0 */6 * * *, full 0 3 * * 0)"
    );
    assert_eq!(last["why"], d2["reason"]);
    let log = fs::read_to_string(c.controller_log()).unwrap();
    assert!(log.contains("domain plan changed"), "the change is logged");
    let page = http_get(&c.web_url());
    for cell in [
        "<td>wordpress</td>",
        "<td>high</td>",
        "<td>incremental</td>",
    ] {
        assert!(page.contains(cell), "the status page shows {cell}");
    }

    // The plan survives a controller restart.
    let mut c = c;
    c.stop_controller();
    c.start_controller();
    let after = c.json(&["domains", "show", &name]);
    assert_eq!(after["changes"], d2["changes"]);
    assert_eq!(after["strategy"], "incremental");
}
