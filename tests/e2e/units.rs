//! The shipped systemd units: `systemd-analyze verify` finds nothing to say
//! about them, and `systemd-analyze security` rates the controller (an
//! unprivileged network service) at most 2.5 and the agent (root: it reads
//! every site and restores owners) at most 5.0, with the agent's
//! capabilities bounded to what reading and restoring sites needs.
//! cairnctl's shell completions load and its man pages render.

use std::fs;
use std::process::Command;

use cairn_tests::cluster::bin;
use cairn_tests::{cairnctl_bin, workspace_root};

fn unit(name: &str) -> String {
    fs::read_to_string(workspace_root().join("deploy").join(name)).unwrap()
}

fn exposure(name: &str) -> f64 {
    let path = workspace_root().join("deploy").join(name);
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("{name}: no exposure level in {text}"));
    line.split(": ")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

#[test]
fn units_verify_clean_and_are_hardened_to_their_job() {
    let controller = exposure("cairn-controller.service");
    let agent = exposure("cairn-agent.service");
    assert!(controller <= 2.5, "controller unit exposure {controller}");
    assert!(agent <= 5.0, "agent unit exposure {agent}");

    let caps = unit("cairn-agent.service");
    let bounded = caps
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the agent's capabilities are bounded");
    for c in bounded.split_whitespace() {
        assert!(
            [
                "CAP_DAC_READ_SEARCH",
                "CAP_DAC_OVERRIDE",
                "CAP_CHOWN",
                "CAP_FOWNER",
                "CAP_FSETID",
                "CAP_MKNOD",
                // The PostgreSQL recovery server runs as the postgres account.
                "CAP_SETUID",
                "CAP_SETGID"
            ]
            .contains(&c),
            "{c}: not needed to read or restore sites"
        );
    }
    assert!(
        !caps.contains("RestrictSUIDSGID=yes"),
        "restores must bring back setuid and setgid files"
    );

    // verify checks that ExecStart's program exists: point it at this build.
    let tmp = tempfile::tempdir().unwrap();
    for (name, program) in [
        ("cairn-controller.service", "cairn-controller"),
        ("cairn-agent.service", "cairn-agent"),
    ] {
        let text = unit(name).replace(
            &format!("/usr/bin/{program}"),
            &bin(program).display().to_string(),
        );
        assert_ne!(text, unit(name), "{name} starts {program}");
        let path = tmp.path().join(name);
        fs::write(&path, text).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && err.trim().is_empty(),
            "{name}: {err}"
        );
    }
}

#[test]
fn completions_load_and_man_pages_render() {
    let tmp = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(cairnctl_bin())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(
            script.contains("cairnctl") && script.contains("backup"),
            "{shell}"
        );
        fs::write(tmp.path().join(format!("cairnctl.{shell}")), script).unwrap();
    }
    let loaded = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}/cairnctl.bash && complete -p cairnctl",
            tmp.path().display()
        ))
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&loaded.stdout);
    assert!(
        loaded.status.success() && line.contains("_cairnctl cairnctl"),
        "{loaded:?}"
    );

    let dir = tmp.path().join("man");
    let out = Command::new(cairnctl_bin())
        .arg("man")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for page in ["cairnctl.1", "cairnctl-backup.1", "cairnctl-repo-restore.1"] {
        assert!(dir.join(page).exists(), "{page}");
    }
    let shown = Command::new("man")
        .arg("-l")
        .arg(dir.join("cairnctl-backup.1"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{shown:?}");
    assert!(
        text.contains("SYNOPSIS") && text.contains("--wait"),
        "{text}"
    );
}
