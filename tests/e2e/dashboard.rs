//! The dashboard (MON-1, MON-6, CAT-3) in a real headless Chromium: a fleet
//! of 3 agents and 10 domains backed up daily for 30 simulated days, one
//! agent then lost; the fleet page shows health, the alerts and the storage
//! chart, a domain page its size history and runs. Screenshots are saved
//! under target/screenshots/. With `web_token_file`, every page but
//! /healthz asks for the token.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cairn_tests::cluster::{http_get_status, http_get_with, Cluster, ClusterOptions};
use cairn_tests::*;

use crate::schedule::Sim;

/// 2026-03-02, a Monday, 00:00 UTC.
const T0: i64 = 1_772_409_600;
const DAY: i64 = 86_400;

const DAILY: &str = r#"
name = "daily"
splay = "0s"
[schedule]
incremental = "0 2 * * *"
"#;

/// Loads `url` in headless Chromium: its DOM after load, and a screenshot.
fn chromium(url: &str, shot: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let base = |c: &mut Command| {
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()));
    };
    let mut dump = Command::new("chromium");
    base(&mut dump);
    let out = dump
        .args(["--dump-dom", url])
        .output()
        .expect("chromium (Debian's package)");
    assert!(out.status.success(), "chromium --dump-dom: {out:?}");
    let mut snap = Command::new("chromium");
    base(&mut snap);
    let s = snap
        .arg(format!("--screenshot={}", shot.display()))
        .args(["--window-size=1280,2200", url])
        .output()
        .unwrap();
    assert!(
        s.status.success() && shot.exists(),
        "chromium --screenshot: {s:?}"
    );
    String::from_utf8(out.stdout).unwrap()
}

fn screenshots() -> PathBuf {
    let d = workspace_root().join("target/screenshots");
    fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn the_dashboard_shows_a_month_of_fleet_in_a_real_browser() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = tmp.path().join("clock");
    fs::write(&clock, (T0 - 3600).to_string()).unwrap();
    let c = Cluster::start(ClusterOptions {
        clock_file: Some(clock.clone()),
        scheduler: Some("maintenance = \"0 5 1 1 *\"\nagent_jobs = 4".into()),
        ..Default::default()
    });
    let mut sites = Vec::new();
    for i in 0..10 {
        let dir = c.dir.join(format!("site{i}"));
        fs::create_dir_all(dir.join("wp-content/uploads")).unwrap();
        fs::write(dir.join("index.php"), format!("<?php // site {i}\n")).unwrap();
        fs::write(
            dir.join("wp-content/theme.css"),
            "body{}".repeat(2_000 + 500 * i),
        )
        .unwrap();
        sites.push((format!("site{i}.test"), dir));
    }
    let group = |r: std::ops::Range<usize>| -> Vec<(&str, &Path)> {
        sites[r]
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_path()))
            .collect()
    };
    let _a1 = c.add_agent("a1", &group(0..4));
    let _a2 = c.add_agent("a2", &group(4..7));
    let mut a3 = c.add_agent("a3", &group(7..10));
    eventually("10 domains reported", Duration::from_secs(60), || {
        (c.json(&["domains", "list"]).as_array().unwrap().len() == 10).then_some(())
    })
    .unwrap();
    let policy = tmp.path().join("daily.toml");
    fs::write(&policy, DAILY).unwrap();
    c.ok(&["policy", "apply", "-f", policy.to_str().unwrap()]);
    let mut sim = Sim {
        c,
        clock,
        now: T0 - 3600,
    };

    // 30 days: each site gains an upload a day; a3 is lost on day 27.
    for day in 0..30i64 {
        for (i, (_, dir)) in sites.iter().enumerate() {
            let upload = dir.join(format!("wp-content/uploads/day{day}.jpg"));
            fs::write(
                upload,
                vec![(day as usize * 7 + i) as u8; 20_000 + 3_000 * i],
            )
            .unwrap();
        }
        if day == 27 {
            a3.kill9();
            sim.c.wait_online("a3", false);
        }
        sim.step(T0 + day * DAY + 2 * 3600 + 60);
    }
    sim.step(T0 + 29 * DAY + 12 * 3600);
    let c = &sim.c;
    let snaps = c.json(&["snapshots", "list"]);
    let n = snaps.as_array().unwrap().len();
    // The policy's first 02:00 is taken as already passed when it is first
    // seen, so each site has a backup a day from the second day on.
    assert!(n >= 7 * 29 + 3 * 26, "30 days of the fleet: {n} snapshots");

    let fleet_dom = chromium(
        &format!("{}/", c.web_url()),
        &screenshots().join("fleet.png"),
    );
    assert!(fleet_dom.contains("id=\"fleet-health\""), "{fleet_dom}");
    assert!(fleet_dom.contains("id=\"fleet-health-bar\""));
    // a3's three domains are overdue and a3 is offline: alerts and critical health.
    let alert_rows = fleet_dom.matches("<tr class=\"alert\">").count();
    assert!(
        alert_rows >= 4,
        "agent_offline and 3 overdue domains: {alert_rows}"
    );
    assert!(fleet_dom.contains(">agent_offline<"));
    assert!(fleet_dom.contains(">backup_overdue<"));
    assert_eq!(fleet_dom.matches("<tr class=\"domain\">").count(), 10);
    assert!(
        fleet_dom.contains("class=\"badge critical\""),
        "a3's sites are critical"
    );
    // The others are backed up on time but never test-restored: the
    // verification quarter of the score is missing, so they stay "warning".
    assert_eq!(
        fleet_dom.matches("class=\"badge warning\"").count(),
        7,
        "{fleet_dom}"
    );
    let storage = fleet_dom.split("id=\"storage-growth\"").nth(1).unwrap();
    let bars = storage
        .split("</svg>")
        .next()
        .unwrap()
        .matches("class=\"bar\"")
        .count();
    assert!(bars >= 28, "a bar per day of the last 30: {bars}");

    let site = "site2.test";
    let dom = chromium(
        &format!("{}/domain/a1/{site}", c.web_url()),
        &screenshots().join("domain.png"),
    );
    assert!(dom.contains("id=\"domain-health\""), "{dom}");
    let sizes = dom.split("id=\"size-history\"").nth(1).unwrap();
    let bars = sizes
        .split("</svg>")
        .next()
        .unwrap()
        .matches("class=\"bar\"")
        .count();
    let of_site = snaps
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["domain"] == site)
        .count();
    assert!(of_site >= 29, "{of_site}");
    assert_eq!(bars, of_site, "one bar per daily backup");
    assert!(dom.matches("<tr class=\"run\">").count() >= 29);
    assert!(dom.contains("recent backup"), "the score explains itself");

    // The same figures as /metrics and the API; a missing domain is a 404.
    let score = c.metric(&format!(
        "cairn_domain_health{{agent=\"a1\",domain=\"{site}\"}}"
    ));
    assert!(
        dom.contains(&format!(">{}</b>", score as u32)),
        "page and metrics agree on {score}"
    );
    let (status, _) = http_get_status(&format!("{}/domain/a1/nope.test", c.web_url()));
    assert_eq!(status, 404);
}

#[test]
fn the_web_listener_asks_for_its_token() {
    let mut c = Cluster::start(ClusterOptions::default());
    c.stop_controller();
    let token = "f3b1c0ffee5ecret7a1b2c3d4e5f60718";
    let file = c.dir.join("web.token");
    fs::write(&file, format!("{token}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = c.state.join("controller.toml");
    let text = fs::read_to_string(&cfg).unwrap();
    fs::write(
        &cfg,
        format!("web_token_file = {:?}\n{text}", file.display().to_string()),
    )
    .unwrap();
    c.start_controller();
    let web = c.web_url();

    for path in ["/", "/metrics", "/api/status", "/domain/a1/x.test"] {
        let (status, head, body) = http_get_with(&format!("{web}{path}"), &[]);
        assert_eq!(status, 401, "{path} without the token: {body}");
        assert!(
            head.contains("WWW-Authenticate") || head.contains("www-authenticate"),
            "{head}"
        );
        let (status, _, _) = http_get_with(
            &format!("{web}{path}"),
            &[("Authorization", "Bearer not-the-token-at-all-000000000")],
        );
        assert_eq!(status, 401, "{path} with a wrong token");
    }
    assert_eq!(
        http_get_status(&format!("{web}/healthz")).0,
        200,
        "health checks need no token"
    );
    let bearer = format!("Bearer {token}");
    let (status, _, page) = http_get_with(&format!("{web}/"), &[("Authorization", &bearer)]);
    assert_eq!(status, 200);
    assert!(
        page.contains("Fleet") && !page.contains(token),
        "the page never shows the token"
    );
    let (status, _, metrics) =
        http_get_with(&format!("{web}/metrics"), &[("Authorization", &bearer)]);
    assert_eq!(status, 200);
    assert!(metrics.contains("cairn_agents_enrolled"));

    // Opened once as /?token=…: a cookie, and the address loses the token.
    let (status, head, _) = http_get_with(&format!("{web}/?token={token}"), &[]);
    assert_eq!(status, 303, "{head}");
    let cookie = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .unwrap_or_else(|| panic!("no cookie: {head}"));
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    let (status, _, _) = http_get_with(&format!("{web}/"), &[("Cookie", pair)]);
    assert_eq!(status, 200, "the cookie opens the pages");
    let (status, _, _) = http_get_with(&format!("{web}/?token=wrong"), &[]);
    assert_eq!(status, 401);
}
