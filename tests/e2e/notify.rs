//! Notifications (MON-4) end to end: alerts raised by a failed dump, a
//! killed agent, an overdue domain and a corrupted pack reach a real SMTP server and a real
//! webhook receiver once each, firing and then resolved; the webhook was
//! down when the first alert fired and got it by retry; bodies are
//! HMAC-signed; no secret reaches the log.

use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

use cairn_tests::cluster::{http_get, Cluster, ClusterOptions};
use cairn_tests::dbserver::MariaDb;
use cairn_tests::sinks::Sink;
use cairn_tests::*;
use hmac::Mac;

use crate::alerts::{alerts, of_rule, Clock};

const HOOK_KEY: &str = "k3y-only-the-receiver-knows";

/// An hourly schedule for quiet.test, so it is overdue after 1.5 hours.
const HOURLY: &str = r#"
name = "hourly"
[select]
domains = ["quiet.test"]
[schedule]
incremental = "0 * * * *"
"#;

/// (alert id, event) of every event a receiver got, in order.
fn hook_events(hook: &[serde_json::Value]) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for m in hook {
        let body: serde_json::Value = serde_json::from_str(m["body"].as_str().unwrap()).unwrap();
        for e in body["events"].as_array().unwrap() {
            out.push((
                e["alert"]["id"].as_str().unwrap().to_string(),
                e["event"].as_str().unwrap().to_string(),
                e["alert"]["rule"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

fn mail_subjects(mail: &[serde_json::Value]) -> Vec<String> {
    mail.iter()
        .map(|m| m["subject"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn alerts_reach_mail_and_webhook_once_with_retries() {
    let tmp = tempfile::tempdir().unwrap();
    let mut clock = Clock::at_start(tmp.path());
    let mut smtp = Sink::smtp(&tmp.path().join("mail"));
    // The webhook receiver is down at first: its port is chosen now, its
    // server started later.
    let hook_port = free_port();
    let hook_dir = tmp.path().join("hook");
    let key_file = tmp.path().join("hook.key");
    fs::write(&key_file, format!("{HOOK_KEY}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&key_file, fs::Permissions::from_mode(0o600)).unwrap();
    let notify = format!(
        r#"
[[notify]]
name = "ops-mail"
kind = "email"
smtp_server = "127.0.0.1:{}"
smtp_tls = "none"
from = "Cairn <cairn@backup.test>"
to = ["ops@hosting.test", "oncall@hosting.test"]

[[notify]]
name = "hook"
kind = "webhook"
url = "http://127.0.0.1:{hook_port}/cairn"
secret_file = {:?}
"#,
        smtp.port,
        key_file.display().to_string()
    );
    let c = Cluster::start(ClusterOptions {
        clock_file: Some(clock.file.clone()),
        scheduler: Some("run_schedules = false".into()),
        extra_toml: notify,
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
    eventually("2 domains reported", Duration::from_secs(60), || {
        (c.json(&["domains", "list"]).as_array().unwrap().len() == 2).then_some(())
    })
    .unwrap();
    let policy = tmp.path().join("hourly.toml");
    fs::write(&policy, HOURLY).unwrap();
    c.ok(&["policy", "apply", "-f", policy.to_str().unwrap()]);
    assert_eq!(c.backup("quiet.test")["state"], "succeeded");

    // `notify test` reaches the mail server now; the webhook's failure is
    // named, with the receiver's host and no secret.
    let t = c.json(&["notify", "test", "ops-mail"]);
    assert_eq!(t["sent"], true, "{t}");
    let mail = eventually("the test mail", Duration::from_secs(20), || {
        let m = smtp.received();
        (m.len() == 1).then_some(m)
    })
    .unwrap();
    assert!(
        mail_subjects(&mail)[0].starts_with("[cairn] TEST"),
        "{mail:?}"
    );
    assert_eq!(
        mail[0]["to"],
        serde_json::json!(["ops@hosting.test", "oncall@hosting.test"])
    );
    let down = c.ctl(&["notify", "test", "hook"]);
    assert_eq!(down.status.code(), Some(1), "{down:?}");
    let err = String::from_utf8_lossy(&down.stderr);
    assert!(
        err.contains("127.0.0.1"),
        "the error names the receiver: {err}"
    );
    let nope = c.ctl(&["notify", "test", "pager"]);
    assert!(
        String::from_utf8_lossy(&nope.stderr).contains("channels: ops-mail, hook"),
        "{nope:?}"
    );

    // 1. The database server dies: the dump fails.
    maria.kill();
    let out = c.ctl(&["backup", "shop.test", "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    clock.step(&c, 60);
    let dump_alert = of_rule(&alerts(&c, false), "dump_failed")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    eventually("the dump_failed mail", Duration::from_secs(20), || {
        mail_subjects(&smtp.received())
            .iter()
            .any(|s| s.contains("FIRING dump_failed"))
            .then_some(())
    })
    .unwrap();
    // The webhook is down: the event waits in its queue with the error.
    let ch = eventually(
        "the webhook's failed attempt",
        Duration::from_secs(20),
        || {
            let list = c.json(&["notify", "list"]);
            let hook = list
                .as_array()
                .unwrap()
                .iter()
                .find(|ch| ch["name"] == "hook")
                .cloned()
                .unwrap();
            hook["last_error"].is_string().then_some(hook)
        },
    )
    .unwrap();
    assert_eq!(ch["queued"], 1, "{ch}");

    // The receiver comes up; the retry (due 10 s on the controller's clock
    // after the failure) delivers.
    let mut hook = Sink::http(hook_port, &hook_dir);
    clock.step(&c, 30);
    eventually("the retried webhook", Duration::from_secs(20), || {
        (!hook.received().is_empty()).then_some(())
    })
    .unwrap();
    let first = &hook.received()[0];
    let body = first["body"].as_str().unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(HOOK_KEY.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    assert_eq!(
        first["headers"]["x-cairn-signature"],
        format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
        "the body is signed with the channel's key"
    );
    assert_eq!(first["path"], "/cairn");
    assert_eq!(
        hook_events(&hook.received()),
        [(
            dump_alert.clone(),
            "alert_firing".into(),
            "dump_failed".into()
        )]
    );
    let ch = c.json(&["notify", "list"]);
    assert!(
        ch.as_array().unwrap().iter().all(|ch| ch["queued"] == 0),
        "{ch}"
    );

    // 2. An agent is killed, and its hourly domain falls overdue.
    a2.kill9();
    c.wait_online("a2", false);
    clock.step(&c, 16 * 60);
    clock.step(&c, 90 * 60);
    let firing = alerts(&c, false);
    assert_eq!(of_rule(&firing, "agent_offline").len(), 1, "{firing:?}");
    assert_eq!(of_rule(&firing, "backup_overdue").len(), 1, "{firing:?}");
    assert_eq!(
        of_rule(&firing, "backup_overdue")[0]["domain"],
        "quiet.test"
    );

    // 3. Everything is fixed: the server, the agent, a backup each.
    maria.restart().unwrap();
    a2.start();
    c.wait_online("a2", true);
    let ok = c.json(&["backup", "shop.test", "--db-only", "--wait"]);
    assert_eq!(ok["state"], "succeeded", "{ok}");
    assert_eq!(c.backup("quiet.test")["state"], "succeeded");
    clock.step(&c, 60);
    assert!(alerts(&c, false).is_empty(), "{:?}", alerts(&c, false));

    // 4. A corrupted pack: the test restore of the newest dump fails.
    let dump = ok["snapshot"].as_str().unwrap().to_string();
    let packs: Vec<(std::path::PathBuf, Vec<u8>)> = files_below(&c.dir.join("repo/data"))
        .into_iter()
        .map(|p| {
            let b = fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    for (p, b) in &packs {
        let mut bad = b.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x5a;
        fs::write(p, bad).unwrap();
    }
    let test = c.ctl(&["restore", &dump, "--test", "--wait"]);
    assert_eq!(test.status.code(), Some(1), "{test:?}");
    clock.step(&c, 60);
    let firing = alerts(&c, false);
    assert_eq!(of_rule(&firing, "verify_failed").len(), 1, "{firing:?}");
    assert_eq!(of_rule(&firing, "verify_failed")[0]["domain"], "shop.test");
    // The packs come back (from a replica, say): the next test passes.
    for (p, b) in &packs {
        fs::write(p, b).unwrap();
    }
    let test = c.json(&["restore", &dump, "--test", "--wait"]);
    assert_eq!(test["state"], "succeeded", "{test}");
    clock.step(&c, 60);
    assert!(alerts(&c, false).is_empty(), "{:?}", alerts(&c, false));

    // Each receiver got each alert's firing and its resolution, once.
    let all = alerts(&c, true);
    assert_eq!(all.len(), 4, "{all:?}");
    let want: BTreeMap<(String, String), usize> = all
        .iter()
        .flat_map(|a| {
            let id = a["id"].as_str().unwrap().to_string();
            [
                ((id.clone(), "alert_firing".to_string()), 1),
                ((id, "alert_resolved".to_string()), 1),
            ]
        })
        .collect();
    let events = eventually("eight webhook events", Duration::from_secs(30), || {
        let e = hook_events(&hook.received());
        (e.len() >= 8).then_some(e)
    })
    .unwrap();
    let mut got: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (id, ev, _) in &events {
        *got.entry((id.clone(), ev.clone())).or_default() += 1;
    }
    assert_eq!(got, want, "webhook: {events:?}");
    let mails = eventually("nine mails", Duration::from_secs(30), || {
        let m = mail_subjects(&smtp.received());
        (m.len() >= 9).then_some(m)
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let mails_now = mail_subjects(&smtp.received());
    assert_eq!(
        mails_now.len(),
        9,
        "the test mail and one per change: {mails_now:?}"
    );
    for (rule, n) in [
        ("dump_failed", 2),
        ("agent_offline", 2),
        ("backup_overdue", 2),
    ] {
        assert_eq!(
            mails
                .iter()
                .filter(|s| s.contains(&format!(" {rule}:")))
                .count(),
            n,
            "{rule}: {mails:?}"
        );
    }
    assert_eq!(
        mails.iter().filter(|s| s.contains("RESOLVED")).count(),
        4,
        "{mails:?}"
    );
    assert_eq!(hook_events(&hook.received()).len(), 8);
    assert!(c.metric("cairn_notifications_total{channel=\"hook\",outcome=\"failed\"}") >= 2.0);
    assert_eq!(
        c.metric("cairn_notifications_total{channel=\"ops-mail\",outcome=\"sent\"}"),
        9.0
    );
    let log = fs::read_to_string(c.controller_log()).unwrap();
    assert!(!log.contains(HOOK_KEY), "the HMAC key reached the log");

    // /metrics of this populated fleet passes Prometheus' own linter
    // (MON-2), and carries health and RPO per domain.
    let text = http_get(&format!("{}/metrics", c.web_url()));
    let mut lint = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package)");
    use std::io::Write;
    lint.stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let lint = lint.wait_with_output().unwrap();
    assert!(
        lint.status.success() && lint.stdout.is_empty() && lint.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    let score = c.metric("cairn_domain_health{agent=\"a2\",domain=\"quiet.test\"}");
    assert!((0.0..=100.0).contains(&score), "{score}");
    let rpo = c.metric("cairn_domain_rpo_seconds{agent=\"a2\",domain=\"quiet.test\"}");
    // Backed up three clock steps (3 minutes) ago.
    assert!((120.0..=240.0).contains(&rpo), "{rpo}");
    smtp.stop();
    hook.stop();
}
