//! Roles and the audit log (SEC-2, SEC-4) end to end: users get
//! certificates with roles from `cairnctl user add`; an operator backs up
//! but cannot delete snapshots, policies or holds, nor grant access; an
//! auditor reads but cannot start jobs; a revoked user is refused; every
//! refused and accepted change is in the audit log, and editing or
//! removing an entry is detected by `cairnctl audit verify`; the log is
//! copied into the repository, where `cairnctl repo audit` reads and checks
//! it without the controller.

use std::fs;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use cairn_tests::cluster::{Cluster, ClusterOptions};
use cairn_tests::eventually;

const POLICY: &str = r#"
name = "nightly"
[schedule]
incremental = "0 2 * * *"
"#;

fn as_user(c: &Cluster, config: &Path, args: &[&str]) -> Output {
    c.ctl_command(args)
        .env("CAIRN_CONFIG", config)
        .output()
        .unwrap()
}

fn refused(out: &Output, what: &str) {
    assert_eq!(out.status.code(), Some(77), "{what}: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("role"),
        "{what}: the refusal names the role: {err}"
    );
}

#[test]
fn roles_bound_what_users_do_and_the_audit_log_tells_it() {
    let c = Cluster::start(ClusterOptions::default());
    let site = c.dir.join("site");
    fs::create_dir_all(&site).unwrap();
    fs::write(site.join("index.php"), "<?php echo 1;").unwrap();
    let _a1 = c.add_agent("a1", &[("shop.test", &site)]);
    let snap = c.backup("shop.test")["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let policy = c.dir.join("nightly.toml");
    fs::write(&policy, POLICY).unwrap();
    c.ok(&["policy", "apply", "-f", policy.to_str().unwrap()]);
    let hold = c.json(&[
        "hold",
        "add",
        "--domain",
        "shop.test",
        "--reason",
        "case 42",
    ]);
    let hold_id = hold["id"].as_str().unwrap().to_string();

    let users = c.dir.join("users");
    let ops_dir = users.join("ops");
    let added = c.json(&[
        "user",
        "add",
        "ops",
        "--role",
        "operator",
        "--out",
        ops_dir.to_str().unwrap(),
    ]);
    assert_eq!(added["role"], "operator");
    let ops = ops_dir.join("cairnctl.toml");
    use std::os::unix::fs::PermissionsExt;
    let key_mode = fs::metadata(ops_dir.join("ops.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o077, 0, "the key is private");
    let eve_dir = users.join("eve");
    c.ok(&[
        "user",
        "add",
        "eve",
        "--role",
        "auditor",
        "--out",
        eve_dir.to_str().unwrap(),
    ]);
    let eve = eve_dir.join("cairnctl.toml");
    let bad = c.ctl(&[
        "user",
        "add",
        "mallory",
        "--role",
        "root",
        "--out",
        users.join("m").to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(64), "{bad:?}");

    // The operator runs the fleet ...
    let run = as_user(
        &c,
        &ops,
        &["--json", "backup", "shop.test", "--files-only", "--wait"],
    );
    assert!(run.status.success(), "{run:?}");
    let held = as_user(
        &c,
        &ops,
        &["hold", "add", "--snapshot", &snap, "--reason", "ticket 7"],
    );
    assert!(held.status.success(), "{held:?}");
    // ... and deletes nothing, grants nothing.
    refused(&as_user(&c, &ops, &["forget", &snap]), "operator forget");
    refused(&as_user(&c, &ops, &["gc"]), "operator gc");
    refused(
        &as_user(&c, &ops, &["policy", "delete", "nightly"]),
        "operator policy delete",
    );
    refused(
        &as_user(&c, &ops, &["hold", "remove", &hold_id]),
        "operator hold remove",
    );
    refused(&as_user(&c, &ops, &["token", "create"]), "operator token");
    refused(
        &as_user(
            &c,
            &ops,
            &[
                "user",
                "add",
                "x",
                "--role",
                "admin",
                "--out",
                users.join("x").to_str().unwrap(),
            ],
        ),
        "operator user add",
    );
    refused(
        &as_user(&c, &ops, &["agents", "remove", "a1"]),
        "operator agent remove",
    );

    // The auditor reads everything and starts nothing.
    let snaps = as_user(&c, &eve, &["--json", "snapshots", "list"]);
    assert!(snaps.status.success(), "{snaps:?}");
    assert!(String::from_utf8_lossy(&snaps.stdout).contains(&snap));
    refused(
        &as_user(&c, &eve, &["backup", "shop.test"]),
        "auditor backup",
    );
    refused(
        &as_user(
            &c,
            &eve,
            &["hold", "add", "--domain", "shop.test", "--reason", "x"],
        ),
        "auditor hold",
    );
    let log = as_user(&c, &eve, &["--json", "audit", "list"]);
    assert!(log.status.success(), "{log:?}");

    // Still there: nothing the operator tried to delete was deleted.
    assert_eq!(c.json(&["policy", "list"]).as_array().unwrap().len(), 1);
    assert!(c
        .json(&["snapshots", "list"])
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["id"] == snap.as_str()));
    assert_eq!(c.json(&["hold", "list"]).as_array().unwrap().len(), 2);

    // Revoked: refused at once.
    c.ok(&["user", "revoke", "eve"]);
    let gone = as_user(&c, &eve, &["snapshots", "list"]);
    assert_eq!(gone.status.code(), Some(77), "{gone:?}");
    let listed = c.json(&["user", "list"]);
    let names: Vec<(&str, &str, bool)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["name"].as_str().unwrap(),
                u["role"].as_str().unwrap(),
                u["revoked"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("admin", "admin", false),
            ("ops", "operator", false),
            ("eve", "auditor", true)
        ]
    );

    // The log holds each accepted and refused change, with who and role.
    let entries = c.json(&["audit", "list", "--limit", "0"]);
    let entries = entries.as_array().unwrap();
    let has = |who: &str, action: &str, outcome: &str| {
        entries.iter().any(|e| {
            e["who"] == who
                && e["action"] == action
                && e["outcome"].as_str().unwrap().starts_with(outcome)
        })
    };
    for (who, action, outcome) in [
        ("admin", "ApplyPolicy", "ok"),
        ("admin", "AddUser", "ok"),
        ("admin", "AddUser", "failed: unknown role"),
        ("ops", "StartBackup", "ok"),
        ("ops", "AddHold", "ok"),
        ("ops", "Forget", "refused"),
        ("ops", "Gc", "refused"),
        ("ops", "DeletePolicy", "refused"),
        ("ops", "RemoveHold", "refused"),
        ("ops", "CreateToken", "refused"),
        ("ops", "AddUser", "refused"),
        ("ops", "RemoveAgent", "refused"),
        ("eve", "StartBackup", "refused"),
        ("eve", "AddHold", "refused"),
        ("admin", "RevokeUser", "ok"),
    ] {
        assert!(
            has(who, action, outcome),
            "no {who} {action} {outcome} in {entries:#?}"
        );
    }
    let backup = entries
        .iter()
        .find(|e| e["who"] == "ops" && e["action"] == "StartBackup")
        .unwrap();
    assert_eq!(backup["role"], "operator");
    assert!(
        backup["args"].as_str().unwrap().contains("shop.test"),
        "{backup}"
    );
    // Revoked eve's last call is refused and logged under her certificate.
    assert!(entries
        .iter()
        .any(|e| e["action"] == "ListSnapshots"
            && e["outcome"].as_str().unwrap().starts_with("refused")));
    let verified = c.json(&["audit", "verify"]);
    assert_eq!(verified["intact"], true, "{verified}");
    let n = verified["entries"].as_u64().unwrap();
    assert!(n >= entries.len() as u64 - 1, "{verified}");

    // The log is copied into the repository, where the passphrase alone
    // reads and checks it (no controller needed).
    let repo_audit = || c.repo_command(&["--json", "audit"]).output().unwrap();
    let good = fs::read_to_string(c.state.join("audit.jsonl")).unwrap();
    let lines: Vec<&str> = good.lines().collect();
    let newest = serde_json::from_str::<serde_json::Value>(lines.last().unwrap()).unwrap()["seq"]
        .as_u64()
        .unwrap();
    let mirrored = eventually(
        "the audit log in the repository",
        Duration::from_secs(60),
        || {
            let out = repo_audit();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
            v.last()
                .is_some_and(|e| e["seq"].as_u64() >= Some(newest))
                .then_some(v)
        },
    )
    .unwrap();
    for (copy, line) in mirrored.iter().zip(&lines) {
        let local: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(copy, &local, "the repository holds the entries as written");
    }
    assert!(mirrored
        .iter()
        .any(|e| e["action"] == "Forget" && e["who"] == "ops"));
    // Tampering: an edited entry, a removed one, a cut tail.
    let path = c.state.join("audit.jsonl");
    let good = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = good.lines().collect();
    let forget_line = lines.iter().position(|l| l.contains("\"Forget\"")).unwrap();
    let mut edited = lines.clone();
    let changed = edited[forget_line].replace("\"who\":\"ops\"", "\"who\":\"admin\"");
    assert_ne!(changed, edited[forget_line]);
    edited[forget_line] = &changed;
    let verify = |text: String| {
        fs::write(&path, text).unwrap();
        let out = c.ctl(&["audit", "verify"]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = verify(edited.join("\n") + "\n");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("line {} was edited", forget_line + 1)) || err.contains("was edited"),
        "{err}"
    );
    let mut removed = lines.clone();
    removed.remove(forget_line);
    let (code, err) = verify(removed.join("\n") + "\n");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("removed"), "{err}");
    let (code, err) = verify(lines[..lines.len() - 2].join("\n") + "\n");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("removed from the end"), "{err}");
    let (code, err) = verify(good.clone());
    assert_eq!(code, Some(0), "the untouched log verifies: {err}");

    // A segment removed from the repository breaks its chain.
    let mut segments: Vec<_> = fs::read_dir(c.dir.join("repo/audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    if segments.len() >= 2 {
        fs::remove_file(&segments[0]).unwrap();
        let out = repo_audit();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("tampered") && err.contains("removed"), "{err}");
    }
}
