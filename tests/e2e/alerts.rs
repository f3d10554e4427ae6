//! Alerts (MON-3, VER-4) on a stepped clock: a failed dump and an agent
//! away too long each fire one alert, stay one alert while they last, and
//! resolve by themselves; acknowledging records who did it. A repository
//! past its capacity and a certificate near its end are told too.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use cairn_tests::cluster::{Cluster, ClusterOptions};
use cairn_tests::dbserver::MariaDb;
use cairn_tests::*;

/// A Monday, 00:00 UTC: no automatic plan runs that day before 03:00.
pub(crate) const START: i64 = 1_772_323_200 + 86_400;

pub(crate) struct Clock {
    pub(crate) file: PathBuf,
    pub(crate) now: i64,
}

impl Clock {
    /// A clock file in `dir` reading [`START`].
    pub(crate) fn at_start(dir: &std::path::Path) -> Clock {
        let file = dir.join("clock");
        fs::write(&file, START.to_string()).unwrap();
        Clock { file, now: START }
    }

    /// Moves the controller's clock and waits for a scheduler pass (which
    /// evaluates the alert rules) at the new time.
    pub(crate) fn step(&mut self, c: &Cluster, by: i64) {
        self.now += by;
        let tmp = self.file.with_extension("tmp");
        fs::write(&tmp, self.now.to_string()).unwrap();
        fs::rename(&tmp, &self.file).unwrap();
        let n = c.metric("cairn_scheduler_ticks_total");
        eventually("two scheduler passes", Duration::from_secs(30), || {
            (c.metric("cairn_scheduler_tick_timestamp_seconds") as i64 >= self.now
                && c.metric("cairn_scheduler_ticks_total") >= n + 2.0)
                .then_some(())
        })
        .unwrap();
    }
}

pub(crate) fn alerts(c: &Cluster, all: bool) -> Vec<serde_json::Value> {
    let mut args = vec!["alerts", "list"];
    if all {
        args.push("--all");
    }
    c.json(&args).as_array().unwrap().clone()
}

pub(crate) fn of_rule<'a>(list: &'a [serde_json::Value], rule: &str) -> Vec<&'a serde_json::Value> {
    list.iter().filter(|a| a["rule"] == rule).collect()
}

#[test]
fn alerts_fire_once_and_resolve_by_themselves() {
    let tmp = tempfile::tempdir().unwrap();
    let mut clock = Clock::at_start(tmp.path());
    let c = Cluster::start(ClusterOptions {
        clock_file: Some(clock.file.clone()),
        scheduler: Some("maintenance = \"0 5 1 1 *\"".into()),
        ..Default::default()
    });
    let mut maria = MariaDb::start().unwrap();
    let shop = c.dir.join("shop");
    crate::fleet_db::site(&shop, &maria);
    let quiet = c.dir.join("quiet");
    fs::create_dir_all(&quiet).unwrap();
    fs::write(quiet.join("index.html"), "hello").unwrap();
    let _a1 = c.add_agent("a1", &[("shop.test", &shop)]);
    let mut a2 = c.add_agent("a2", &[("quiet.test", &quiet)]);
    clock.step(&c, 60);
    assert!(alerts(&c, true).is_empty(), "a healthy fleet has no alerts");

    // The database server dies: the run's dump fails, its files succeed.
    maria.kill();
    let out = c.ctl(&["backup", "shop.test", "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    clock.step(&c, 60);
    let firing = alerts(&c, false);
    let dump = of_rule(&firing, "dump_failed");
    assert_eq!(dump.len(), 1, "{firing:?}");
    assert_eq!(dump[0]["domain"], "shop.test");
    assert!(
        dump[0]["message"].as_str().unwrap().contains("mariadb"),
        "the alert names the cause: {}",
        dump[0]["message"]
    );
    assert!(of_rule(&firing, "backup_failed").is_empty(), "{firing:?}");
    let id = dump[0]["id"].as_str().unwrap().to_string();

    // Still failing a minute later: the same alert, not a second one.
    clock.step(&c, 60);
    let again = alerts(&c, false);
    assert_eq!(of_rule(&again, "dump_failed").len(), 1);
    assert_eq!(of_rule(&again, "dump_failed")[0]["id"], id.as_str());
    let acked = c.json(&["alerts", "ack", &id]);
    assert_eq!(acked["acked_by"], "admin (admin)", "{acked}");
    assert_eq!(c.metric("cairn_alerts_firing{rule=\"dump_failed\"}"), 1.0);

    // The server is back and a dump succeeds: the alert resolves.
    maria.restart().unwrap();
    let ok = c.json(&["backup", "shop.test", "--db-only", "--wait"]);
    assert_eq!(ok["state"], "succeeded", "{ok}");
    clock.step(&c, 60);
    assert!(of_rule(&alerts(&c, false), "dump_failed").is_empty());
    let all = alerts(&c, true);
    let resolved = of_rule(&all, "dump_failed");
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0]["state"], "resolved");
    assert!(
        resolved[0]["resolved_at"].as_i64().unwrap() > resolved[0]["fired_at"].as_i64().unwrap()
    );

    // An agent away longer than 15 minutes.
    a2.kill9();
    c.wait_online("a2", false);
    clock.step(&c, 5 * 60);
    assert!(
        of_rule(&alerts(&c, false), "agent_offline").is_empty(),
        "5 minutes is not yet"
    );
    clock.step(&c, 15 * 60);
    let firing = alerts(&c, false);
    let away = of_rule(&firing, "agent_offline");
    assert_eq!(away.len(), 1, "{firing:?}");
    assert_eq!(away[0]["agent"], "a2");
    assert!(
        away[0]["message"]
            .as_str()
            .unwrap()
            .contains("offline for 2"),
        "{}",
        away[0]["message"]
    );
    assert_eq!(c.metric("cairn_alerts_firing{rule=\"agent_offline\"}"), 1.0);
    a2.start();
    c.wait_online("a2", true);
    clock.step(&c, 60);
    assert!(alerts(&c, false).is_empty(), "{:?}", alerts(&c, false));
    assert_eq!(c.metric("cairn_alerts_firing{rule=\"agent_offline\"}"), 0.0);
}

#[test]
fn a_full_repository_and_an_expiring_certificate_are_told() {
    let tmp = tempfile::tempdir().unwrap();
    let mut clock = Clock::at_start(tmp.path());
    let c = Cluster::start(ClusterOptions {
        clock_file: Some(clock.file.clone()),
        alerts: "storage_limit = \"20 kB\"\ncert_expiry = \"30d\"".into(),
        ..Default::default()
    });
    let site = c.dir.join("site");
    fs::create_dir_all(&site).unwrap();
    // They neither compress nor deduplicate below 20 kB.
    fs::write(site.join("upload.bin"), noise(100_000, 7)).unwrap();
    let _a1 = c.add_agent("a1", &[("site.test", &site)]);
    clock.step(&c, 60);
    let quiet = alerts(&c, false);
    assert!(of_rule(&quiet, "storage_full").is_empty(), "{quiet:?}");
    assert!(of_rule(&quiet, "cert_expiring").is_empty(), "{quiet:?}");

    let b = c.json(&["backup", "site.test", "--wait"]);
    assert_eq!(b["state"], "succeeded", "{b}");
    clock.step(&c, 60);
    let firing = alerts(&c, false);
    let full = of_rule(&firing, "storage_full");
    assert_eq!(full.len(), 1, "{firing:?}");
    assert_eq!(full[0]["agent"], "controller");
    let message = full[0]["message"].as_str().unwrap();
    assert!(
        message.contains("% full") && message.contains("of 20.0 kB"),
        "{message}"
    );

    // Agent certificates last five years from enrollment: twenty days
    // before the end, the agent's is told (the controller's, issued later,
    // not yet).
    clock.step(&c, 5 * 365 * 86_400 - 20 * 86_400);
    let firing = alerts(&c, false);
    let certs = of_rule(&firing, "cert_expiring");
    assert_eq!(certs.len(), 1, "{firing:?}");
    assert_eq!(certs[0]["agent"], "a1");
    let message = certs[0]["message"].as_str().unwrap();
    assert!(
        message.contains("agent certificate of a1 expires in 19d")
            || message.contains("expires in 20d"),
        "{message}"
    );
}
