//! The fleet core (issue 3): a real controller and real agents on loopback,
//! mutual TLS, driven through cairnctl. FLT-2, FLT-3, FLT-4, BKP-7, RST-1,
//! MON-1, STO-1, DESIGN §7.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cairn_repo::exclude::Excludes;
use cairn_tests::cluster::{cmdline, http_get, Cluster, ClusterOptions, PASSPHRASE};
use cairn_tests::*;

fn defaults() -> Excludes {
    Excludes::with_defaults::<&str>(&[]).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

fn snapshots(c: &Cluster, domain: &str) -> Vec<serde_json::Value> {
    c.json(&["snapshots", "list", "--domain", domain])
        .as_array()
        .unwrap()
        .clone()
}

/// Restores a job's snapshot through `agent` and compares it with `site`.
fn restore_matches(c: &Cluster, snapshot: &str, agent: &str, site: &Path, target: &Path) {
    let t = target.to_str().unwrap();
    let j = c.json(&[
        "restore", snapshot, "--agent", agent, "--target", t, "--wait",
    ]);
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_same_tree(site, target, &defaults());
}

/// No passphrase, token or storage secret in any log line or process argument.
fn assert_no_secrets(c: &Cluster, logs: &[&Path], pids: &[u32], extra: &[&str]) {
    let mut secrets: Vec<String> = vec![PASSPHRASE.to_string()];
    secrets.extend(extra.iter().map(|s| s.to_string()));
    secrets.extend(
        c.env()
            .iter()
            .filter(|(k, _)| k.contains("SECRET"))
            .map(|(_, v)| v.clone()),
    );
    for log in logs {
        let text = fs::read_to_string(log).unwrap();
        assert!(!text.is_empty(), "{} is empty", log.display());
        for s in &secrets {
            assert!(
                !text.contains(s.as_str()),
                "a secret leaked into {}",
                log.display()
            );
        }
        assert!(
            !text.contains("cairn-")
                || !text
                    .split("cairn-")
                    .any(|t| t.len() >= 48 && t[..48].chars().all(|c| c.is_ascii_hexdigit())),
            "an enrollment token leaked into {}",
            log.display()
        );
    }
    for pid in pids {
        let args = cmdline(*pid);
        assert!(!args.is_empty());
        for s in &secrets {
            assert!(
                !args.contains(s.as_str()),
                "a secret is in the arguments of pid {pid}"
            );
        }
    }
}

/// Three agents: enrollment, inventory, backups through the controller,
/// cross-agent dedup, restores (own and admin-targeted), the status page,
/// and a graceful SIGTERM.
#[test]
fn three_agents_back_up_and_restore_through_the_controller() {
    let mut c = Cluster::start(ClusterOptions::default());
    let fleet = gen_fleet(&c.dir.join("fleet"), 2, 0.05);
    let twin = c.dir.join("twin");
    copy_dir(&fleet[0], &twin);
    let sites = [
        ("a.test", fleet[0].as_path()),
        ("twin.test", twin.as_path()),
        ("c.test", fleet[1].as_path()),
    ];
    let agents: Vec<_> = ["web1", "web2", "web3"]
        .iter()
        .zip(sites.iter())
        .map(|(name, (d, p))| c.add_agent(name, &[(d, p)]))
        .collect();

    let listed = c.json(&["agents", "list"]);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed
        .iter()
        .all(|a| a["online"] == true && a["domains"] == 1));
    let domains = c.json(&["domains", "list"]);
    for (d, p) in &sites {
        let row = domains
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == *d)
            .unwrap();
        assert_eq!(row["path"], p.to_str().unwrap());
        assert!(row["size_bytes"].as_u64().unwrap() > 100_000);
    }

    let first = c.backup("a.test");
    assert_eq!(first["state"], "succeeded", "{first}");
    assert!(
        first["files"].as_u64().unwrap() > 50,
        "progress reached the controller: {first}"
    );
    let before = c.metric("cairn_received_bytes_total");
    let second = c.backup("twin.test");
    assert_eq!(second["state"], "succeeded");
    let sent = c.metric("cairn_received_bytes_total") - before;
    let size = dir_size(&twin) as f64;
    println!("identical site on a second agent: sent {sent} B of {size} B");
    assert!(sent < size * 0.05, "the twin sent {sent} B of {size} B");
    assert!(c.metric("cairn_blobs_known_total") > 50.0);
    let third = c.backup("c.test");
    assert_eq!(third["state"], "succeeded");

    for ((d, p), agent) in sites.iter().zip(["web1", "web2", "web3"]) {
        let snaps = snapshots(&c, d);
        assert_eq!(snaps.len(), 1);
        assert_eq!(snaps[0]["agent"], agent);
        let id = snaps[0]["id"].as_str().unwrap();
        restore_matches(&c, id, agent, p, &c.dir.join("restore").join(d));
    }
    // An admin may restore one agent's snapshot through another.
    let a_snap = first["snapshot"].as_str().unwrap();
    restore_matches(
        &c,
        a_snap,
        "web3",
        &fleet[0],
        &c.dir.join("restore-elsewhere"),
    );

    // Incremental: only the change is read and sent.
    fs::write(fleet[0].join("changed.txt"), b"a new file").unwrap();
    let inc = c.backup("a.test");
    let snaps = snapshots(&c, "a.test");
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[1]["kind"], "incremental");
    restore_matches(
        &c,
        inc["snapshot"].as_str().unwrap(),
        "web1",
        &fleet[0],
        &c.dir.join("restore-inc"),
    );

    let jobs = c.json(&["jobs", "list"]);
    assert!(jobs.as_array().unwrap().len() >= 8);
    let web = c.web_url();
    let page = http_get(&format!("{web}/"));
    for want in ["web1", "web2", "web3", "a.test", "online"] {
        assert!(page.contains(want), "status page lacks {want}");
    }
    let status: serde_json::Value =
        serde_json::from_str(&http_get(&format!("{web}/api/status"))).unwrap();
    assert_eq!(status["agents"].as_array().unwrap().len(), 3);
    assert_eq!(http_get(&format!("{web}/healthz")).trim(), "ok");
    assert_eq!(c.metric("cairn_agents_connected"), 3.0);
    assert!(c.metric("cairn_jobs_total{kind=\"backup\",outcome=\"succeeded\"}") >= 4.0);

    let pids: Vec<u32> = agents
        .iter()
        .map(|a| a.pid())
        .chain([c.controller_pid()])
        .collect();
    let logs: Vec<_> = agents
        .iter()
        .map(|a| a.log())
        .chain([c.controller_log()])
        .collect();
    let log_refs: Vec<&Path> = logs.iter().map(|p| p.as_path()).collect();
    assert_no_secrets(&c, &log_refs, &pids, &[]);

    // SIGTERM drains and exits 0; agents see it and go on retrying.
    let st = c.stop_controller();
    assert!(st.success(), "controller exit on SIGTERM: {st}");
    drop(agents);
}

/// Direct-to-storage data path: agents write packs themselves (local
/// directory and a real Garage), the controller only registers snapshots.
#[test]
fn direct_to_storage_local_and_garage() {
    let garage = Garage::start().unwrap();
    let storage_env = vec![
        ("AWS_ACCESS_KEY_ID".to_string(), garage.key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), garage.secret.clone()),
        ("AWS_ENDPOINT_URL".to_string(), garage.endpoint.clone()),
        ("AWS_REGION".to_string(), "garage".to_string()),
    ];
    let repos = [None, Some(format!("s3://{}/fleet-direct", garage.bucket))];
    for repo in repos {
        let garage_run = repo.is_some();
        let c = Cluster::start(ClusterOptions {
            repo,
            data_path: "direct",
            storage_env: if garage_run {
                storage_env.clone()
            } else {
                Vec::new()
            },
            ..Default::default()
        });
        let fleet = gen_fleet(&c.dir.join("fleet"), 1, 0.05);
        let twin = c.dir.join("twin");
        copy_dir(&fleet[0], &twin);
        let a1 = c.add_agent("d1", &[("one.test", &fleet[0])]);
        let a2 = c.add_agent("d2", &[("two.test", &twin)]);
        let j1 = c.backup("one.test");
        assert_eq!(j1["state"], "succeeded", "{j1}");
        let j2 = c.backup("two.test");
        assert_eq!(j2["state"], "succeeded");
        assert_eq!(
            c.metric("cairn_received_bytes_total"),
            0.0,
            "direct mode sends no packs through the controller"
        );
        let s2 = &snapshots(&c, "two.test")[0];
        let stored = s2["stored_bytes"].as_f64().unwrap();
        let total = s2["total_bytes"].as_f64().unwrap();
        assert!(
            stored < total * 0.05,
            "second identical site stored {stored} of {total}"
        );
        restore_matches(
            &c,
            j1["snapshot"].as_str().unwrap(),
            "d1",
            &fleet[0],
            &c.dir.join("r1"),
        );
        restore_matches(
            &c,
            j2["snapshot"].as_str().unwrap(),
            "d2",
            &twin,
            &c.dir.join("r2"),
        );
        let logs = [a1.log(), a2.log(), c.controller_log()];
        let refs: Vec<&Path> = logs.iter().map(|p| p.as_path()).collect();
        assert_no_secrets(
            &c,
            &refs,
            &[a1.pid(), a2.pid(), c.controller_pid()],
            &[&garage.secret],
        );
    }
}

fn big_site(dir: &Path, mb: usize) {
    fs::create_dir_all(dir).unwrap();
    use std::io::Read;
    let mut random = fs::File::open("/dev/urandom").unwrap();
    for i in 0..mb / 8 {
        let mut data = vec![0u8; 8 << 20];
        random.read_exact(&mut data).unwrap();
        fs::write(dir.join(format!("blob{i}.bin")), data).unwrap();
    }
    fs::write(dir.join("index.php"), b"<?php echo 'hi';").unwrap();
}

/// kill -9 of an agent mid-backup and of the controller mid-session: the
/// job fails, no snapshot is half visible, everything reconnects, and the
/// retry reuses what was uploaded.
#[test]
fn crashes_leave_no_half_snapshot_and_everything_reconnects() {
    let mut c = Cluster::start(ClusterOptions::default());
    let site = c.dir.join("big");
    big_site(&site, 96);
    let mut agent = c.add_agent("crashy", &[("big.test", &site)]);

    let j = c.json(&["backup", "big.test"]);
    let id = j["id"].as_str().unwrap().to_string();
    eventually(
        "a pack reaches the controller",
        scaled(Duration::from_secs(60)),
        || (c.metric("cairn_received_packs_total") >= 1.0).then_some(()),
    )
    .unwrap();
    agent.kill9();
    let ended = c.wait_job_end(&id);
    assert_eq!(ended["state"], "failed", "{ended}");
    assert!(
        ended["error"].as_str().unwrap().contains("offline"),
        "{ended}"
    );
    assert!(
        snapshots(&c, "big.test").is_empty(),
        "no snapshot from a killed backup"
    );
    c.wait_online("crashy", false);

    agent.start();
    c.wait_online("crashy", true);
    let before = c.metric("cairn_received_bytes_total");
    let retry = c.backup("big.test");
    assert_eq!(retry["state"], "succeeded", "{retry}");
    let resent = c.metric("cairn_received_bytes_total") - before;
    let size = dir_size(&site) as f64;
    println!("retry after kill -9 sent {resent} of {size} B");
    assert!(
        resent < size * 0.95,
        "the retry reuses packs already uploaded ({resent} of {size})"
    );
    restore_matches(
        &c,
        retry["snapshot"].as_str().unwrap(),
        "crashy",
        &site,
        &c.dir.join("r"),
    );

    // The controller dies mid-backup.
    big_site(&site.join("more"), 48);
    let j = c.json(&["backup", "big.test"]);
    let id = j["id"].as_str().unwrap().to_string();
    eventually("the job runs", scaled(Duration::from_secs(30)), || {
        (c.job(&id)["state"] == "running").then_some(())
    })
    .unwrap();
    c.kill_controller();
    c.start_controller();
    c.wait_online("crashy", true);
    let ended = c.wait_job_end(&id);
    assert_eq!(ended["state"], "failed", "{ended}");
    let snaps = snapshots(&c, "big.test");
    assert_eq!(
        snaps.len(),
        1,
        "the catalog kept the earlier snapshot and no half one"
    );
    let again = c.backup("big.test");
    assert_eq!(again["state"], "succeeded", "{again}");
    restore_matches(
        &c,
        again["snapshot"].as_str().unwrap(),
        "crashy",
        &site,
        &c.dir.join("r2"),
    );
    let check = c.repo_command(&["check", "--read-data"]).output().unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn identity(cert: &Path, key: &Path) -> cairn_net::Identity {
    cairn_net::Identity {
        chain_pem: fs::read_to_string(cert).unwrap(),
        key_pem: fs::read_to_string(key).unwrap(),
    }
}

fn channel(c: &Cluster, id: Option<&cairn_net::Identity>) -> tonic::transport::Channel {
    let ca = fs::read_to_string(c.state.join("pki/ca.pem")).unwrap();
    let tls = cairn_net::client_config(&cairn_net::Trust::Ca(ca), id).unwrap();
    cairn_net::channel(&c.url(), tls).unwrap()
}

/// Writes a cairnctl.toml using another certificate.
fn ctl_config(c: &Cluster, name: &str, cert: &Path, key: &Path) -> std::path::PathBuf {
    let p = c.dir.join(format!("{name}.toml"));
    fs::write(
        &p,
        format!(
            "controller = {:?}\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
            c.url(),
            c.state.join("pki/ca.pem"),
            cert,
            key
        ),
    )
    .unwrap();
    p
}

/// FLT-3 and DESIGN §7: every refusal is clear to the caller and logged.
#[test]
fn refusals_are_clear_and_logged() {
    use cairn_proto::admin::v1::admin_service_client::AdminServiceClient;
    use cairn_proto::agent::v1::agent_service_client::AgentServiceClient;
    use cairn_proto::{admin::v1 as admin, agent::v1 as agent};

    let c = Cluster::start(ClusterOptions::default());
    let site = c.dir.join("site");
    fs::create_dir_all(&site).unwrap();
    fs::write(site.join("index.html"), b"hello").unwrap();
    let a1 = c.add_agent("one", &[("one.test", &site)]);
    let a2 = c.add_agent("two", &[("two.test", &site)]);
    let two_job = c.backup("two.test");
    assert_eq!(two_job["state"], "succeeded");

    // A reused token, an expired token, a wrong CA pin.
    let (token, ca) = c.token("10m");
    let fresh = |name: &str| {
        let dir = c.dir.join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("agent.toml"),
            format!("state_dir = {:?}\nname = {name:?}\n", dir.join("state")),
        )
        .unwrap();
        dir.join("agent.toml")
    };
    let enroll = |cfg: &Path, token: &str, ca: &str| {
        Command::new(cluster_bin("cairn-agent"))
            .arg("-c")
            .arg(cfg)
            .args(["enroll", "--controller", &c.url(), "--ca-sha256", ca])
            .env("CAIRN_TOKEN", token)
            .output()
            .unwrap()
    };
    assert!(enroll(&fresh("x1"), &token, &ca).status.success());
    let reused = enroll(&fresh("x2"), &token, &ca);
    assert!(!reused.status.success());
    assert!(String::from_utf8_lossy(&reused.stderr).contains("invalid, expired or already used"));
    let (short, _) = c.token("1s");
    std::thread::sleep(Duration::from_millis(2100));
    let expired = enroll(&fresh("x3"), &short, &ca);
    assert!(String::from_utf8_lossy(&expired.stderr).contains("invalid, expired or already used"));
    let (t, _) = c.token("10m");
    let pinned = enroll(&fresh("x4"), &t, &"00".repeat(32));
    assert!(String::from_utf8_lossy(&pinned.stderr).contains("does not match --ca-sha256"));
    assert!(!c.dir.join("x4/state/agent.pem").exists());

    // No client certificate.
    let rt = rt();
    let err = rt
        .block_on(async {
            let _g = ();
            AdminServiceClient::new(channel(&c, None))
                .list_agents(admin::ListAgentsRequest {})
                .await
        })
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    // A certificate from another CA fails the handshake.
    let other = Cluster::start(ClusterOptions::default());
    let foreign = ctl_config(
        &c,
        "foreign",
        &other.state.join("pki/admin.pem"),
        &other.state.join("pki/admin.key"),
    );
    let out = c
        .ctl_command(&["agents", "list"])
        .env("CAIRN_CONFIG", &foreign)
        .output()
        .unwrap();
    assert!(!out.status.success());
    // An agent's certificate may not administer (list, remove, delete).
    let as_agent = ctl_config(
        &c,
        "as-agent",
        &a1.state().join("agent.pem"),
        &a1.state().join("agent.key"),
    );
    for args in [&["agents", "list"][..], &["agents", "remove", "two"][..]] {
        let out = c
            .ctl_command(args)
            .env("CAIRN_CONFIG", &as_agent)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(77), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("may not administer"));
    }
    // An agent reading another agent's snapshot: no job of its own grants it.
    let one_id = identity(&a1.state().join("agent.pem"), &a1.state().join("agent.key"));
    let pack = fs::read_dir(c.dir.join("repo/data"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let pack = fs::read_dir(pack)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let pack_id: cairn_repo::Id = pack.to_str().unwrap().parse().unwrap();
    let jobs = c.json(&["jobs", "list", "--domain", "two.test"]);
    let two_job_id = jobs[0]["id"].as_str().unwrap().to_string();
    let err = rt
        .block_on(async {
            AgentServiceClient::new(channel(&c, Some(&one_id)))
                .read_pack(agent::ReadPackRequest {
                    job_id: two_job_id.clone(),
                    pack_id: pack_id.0.to_vec(),
                    offset: 0,
                    length: 16,
                })
                .await
        })
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");

    // A removed agent is refused at once.
    c.ok(&["agents", "remove", "one"]);
    let err = rt
        .block_on(async {
            AgentServiceClient::new(channel(&c, Some(&one_id)))
                .have_blobs(agent::HaveBlobsRequest {
                    ids: vec![vec![0; 32]],
                    ..Default::default()
                })
                .await
        })
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let listed = c.json(&["agents", "list"]);
    assert!(listed.as_array().unwrap().iter().all(|a| a["id"] != "one"));
    eventually(
        "the removed agent's session is refused",
        scaled(Duration::from_secs(20)),
        || {
            fs::read_to_string(a1.log())
                .unwrap()
                .contains("belongs to no enrolled agent")
                .then_some(())
        },
    )
    .unwrap();

    let log = fs::read_to_string(c.controller_log()).unwrap();
    for want in [
        "refused enrollment",
        "refused admin call: no client certificate",
        "TLS handshake refused",
        "refused admin call: this certificate may not administer the fleet",
        "refused: data-path call for a job this agent is not running",
        "refused: certificate of no enrolled agent",
    ] {
        assert!(log.contains(want), "controller log lacks {want:?}");
    }
    assert_no_secrets(
        &c,
        &[&c.controller_log(), &a2.log()],
        &[c.controller_pid()],
        &[&token, &short],
    );
}

fn cluster_bin(name: &str) -> std::path::PathBuf {
    cairn_tests::cluster::bin(name)
}

/// The README's run command: dev mode brings up a controller and an enrolled
/// agent, backs up a sample site, and prints the status page's URL.
#[test]
fn dev_mode_quickstart_backs_up_a_sample_site() {
    cairnctl_bin();
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("dev");
    let out = Command::new("bash")
        .arg(workspace_root().join("deploy/quickstart.sh"))
        .env(
            "CAIRN_PROFILE",
            if cairnctl_bin().to_str().unwrap().contains("/release/") {
                "release"
            } else {
                "debug"
            },
        )
        .env("CAIRN_DEV_EXIT", "1")
        .env("CAIRN_DEV_DIR", &work)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("status page:  http://127.0.0.1:"),
        "{stdout}"
    );
    assert!(stdout.contains("succeeded"), "{stdout}");
    let pass = fs::read_to_string(work.join("passphrase")).unwrap();
    let ctl = Ctl::new(work.join("repository").to_str().unwrap(), pass.trim_end());
    let snaps = ctl.json(&["snapshots"]);
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    ctl.ok(&[
        "restore",
        "latest",
        "--target",
        work.join("restored").to_str().unwrap(),
    ]);
    assert_same_tree(
        &work.join("sample-site"),
        &work.join("restored"),
        &defaults(),
    );
}

/// BKP-5: `ingest_bandwidth` caps what all agents stream into the
/// controller; uploads wait (counted in /metrics) and nothing is lost.
#[test]
fn the_ingest_cap_slows_uploads_and_loses_nothing() {
    let c = Cluster::start(ClusterOptions {
        scheduler: Some("run_schedules = false\ningest_bandwidth = \"256KiB\"".into()),
        ..Default::default()
    });
    let site = c.dir.join("site");
    fs::create_dir_all(&site).unwrap();
    // Incompressible, so the packs are as big as the data: 1.5 MiB is
    // about five seconds' worth beyond the first second's burst.
    let noise: Vec<u8> = (0..3 << 19).map(|_| rand::random::<u8>()).collect();
    fs::write(site.join("media.bin"), &noise).unwrap();
    let _a = c.add_agent("a1", &[("capped.test", &site)]);
    let j = c.backup("capped.test");
    assert_eq!(j["state"], "succeeded", "{j}");
    let waited = c.metric("cairn_ingest_throttled_seconds_total");
    assert!(
        waited > 2.0,
        "uploads waited {waited}s for a 256KiB/s cap on 1.5 MiB"
    );
    let target = c.dir.join("restored");
    c.restore(j["snapshot"].as_str().unwrap(), &target);
    assert_same_tree(&site, &target, &defaults());
}
