//! Install as README says (issue 15), into a relocatable root: install.sh
//! for the controller and the agent, `cairn-controller init`, a token,
//! `cairn-agent enroll`, then each daemon started from its installed unit's
//! own ExecStart line (paths under the root). The daemons read the files
//! init and enroll wrote: a backup and a restore go through them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Duration;

use cairn_tests::*;

/// The installed unit's ExecStart, its paths moved under `root`.
fn exec_start(unit: &Path, root: &Path) -> Vec<String> {
    let text = fs::read_to_string(unit).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap_or_else(|| panic!("{} has no ExecStart", unit.display()));
    line.split_whitespace()
        .map(|w| {
            ["/etc/cairn", "/var/lib/cairn"]
                .iter()
                .find(|p| w.starts_with(*p))
                .map(|_| format!("{}{w}", root.display()))
                .unwrap_or_else(|| w.to_string())
        })
        .collect()
}

fn spawn(argv: &[String], log: &Path) -> Child {
    Command::new(&argv[0])
        .args(&argv[1..])
        .env("CAIRN_LOG", "info")
        .stdout(fs::File::create(log.with_extension("out")).unwrap())
        .stderr(fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn readme_install_runs_the_files_init_and_enroll_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let prefix = root.join("usr/local");
    let built = cairnctl_bin().parent().unwrap().to_path_buf();
    for role in ["controller", "agent"] {
        let out = Command::new("bash")
            .arg(workspace_root().join("deploy/install.sh"))
            .arg(role)
            .env("PREFIX", &prefix)
            .env("UNITDIR", root.join("etc/systemd/system"))
            .env("ETC", root.join("etc/cairn"))
            .env("STATE", root.join("var/lib/cairn"))
            .env("CAIRN_BIN_DIR", &built)
            .env("NO_USER", "1")
            .env("NO_SYSTEMCTL", "1")
            .output()
            .unwrap();
        ok(out, &format!("install.sh {role}"));
    }
    let bin = |b: &str| prefix.join("bin").join(b);
    let state = root.join("var/lib/cairn/controller");
    fs::write(state.join("repository.pass"), "install test passphrase\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(
        state.join("repository.pass"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let port = free_port();
    let out = Command::new(bin("cairn-controller"))
        .args(["init", "--state-dir"])
        .arg(&state)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--web-listen", "127.0.0.1:0"])
        .args(["--public-url", &format!("https://127.0.0.1:{port}")])
        .arg("--repo")
        .arg(root.join("srv/cairn/repo"))
        .arg("--passphrase-file")
        .arg(state.join("repository.pass"))
        .output()
        .unwrap();
    ok(out, "cairn-controller init");

    let units = root.join("etc/systemd/system");
    let argv = exec_start(&units.join("cairn-controller.service"), &root);
    assert!(Path::new(&argv[0]).starts_with(&prefix), "{argv:?}");
    assert_eq!(
        PathBuf::from(argv.last().unwrap()),
        state.join("controller.toml"),
        "the unit runs the config init wrote"
    );
    let _controller = Killed(spawn(&argv, &root.join("controller.log")));
    eventually("controller listening", Duration::from_secs(30), || {
        state.join("grpc.addr").exists().then_some(())
    })
    .unwrap();
    let ctl = |args: &[&str]| {
        Command::new(bin("cairnctl"))
            .args(args)
            .env("CAIRN_CONFIG", state.join("cairnctl.toml"))
            .output()
            .unwrap()
    };
    let version = ok(ctl(&["version"]), "cairnctl version");
    assert!(version.contains("controller "), "{version}");

    // The agent: the installed example config, with this site listed and
    // its state under the root, enrolled with a token from the controller.
    let site = root.join("var/www/shop.test");
    fs::create_dir_all(site.join("wp-content")).unwrap();
    fs::write(site.join("index.php"), "<?php echo 'shop';\n").unwrap();
    fs::write(site.join("wp-content/logo.svg"), "<svg/>".repeat(500)).unwrap();
    let agent_toml = root.join("etc/cairn/agent.toml");
    let example = fs::read_to_string(&agent_toml).unwrap();
    let example = example
        .replace(
            "/var/lib/cairn/agent",
            &root.join("var/lib/cairn/agent").display().to_string(),
        )
        .replace("enabled = true", "enabled = false");
    let example = example.split("[[domain]]").next().unwrap().to_string();
    fs::write(
        &agent_toml,
        format!(
            "{example}[[domain]]\nname = \"shop.test\"\npath = {:?}\n",
            site
        ),
    )
    .unwrap();
    let token: serde_json::Value =
        serde_json::from_str(&ok(ctl(&["--json", "token", "create"]), "token create")).unwrap();
    let out = Command::new(bin("cairn-agent"))
        .arg("-c")
        .arg(&agent_toml)
        .args([
            "enroll",
            "--controller",
            &format!("https://127.0.0.1:{port}"),
        ])
        .args(["--ca-sha256", token["ca_sha256"].as_str().unwrap()])
        .env("CAIRN_TOKEN", token["token"].as_str().unwrap())
        .output()
        .unwrap();
    ok(out, "cairn-agent enroll");
    let argv = exec_start(&units.join("cairn-agent.service"), &root);
    assert_eq!(
        PathBuf::from(argv.last().unwrap()),
        agent_toml,
        "the unit runs the config enroll wrote"
    );
    let _agent = Killed(spawn(&argv, &root.join("agent.log")));
    eventually(
        "the agent online with its domain",
        Duration::from_secs(30),
        || {
            let out = ctl(&["--json", "domains", "list"]);
            String::from_utf8_lossy(&out.stdout)
                .contains("shop.test")
                .then_some(())
        },
    )
    .unwrap();

    let job: serde_json::Value = serde_json::from_str(&ok(
        ctl(&["--json", "backup", "shop.test", "--files-only", "--wait"]),
        "backup",
    ))
    .unwrap();
    assert_eq!(job["state"], "succeeded", "{job}");
    let target = root.join("restored");
    let restored: serde_json::Value = serde_json::from_str(&ok(
        ctl(&[
            "--json",
            "restore",
            job["snapshot"].as_str().unwrap(),
            "--target",
            target.to_str().unwrap(),
            "--wait",
        ]),
        "restore",
    ))
    .unwrap();
    assert_eq!(restored["state"], "succeeded", "{restored}");
    for f in ["index.php", "wp-content/logo.svg"] {
        assert_eq!(
            fs::read(site.join(f)).unwrap(),
            fs::read(target.join(f)).unwrap(),
            "{f}"
        );
    }
}
