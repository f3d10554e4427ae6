//! Crash safety: `kill -9` of a backup at several points, on local storage and S3.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use cairn_repo::exclude::Excludes;
use cairn_repo::storage::Storage;
use cairn_tests::*;

/// Packs in place (listing skips temp and staging files).
fn count_packs(storage: &dyn Storage) -> usize {
    storage.list("data/").unwrap().len()
}

/// DESIGN §7: a backup killed at any point leaves every earlier snapshot
/// restorable and the repository clean; the rerun reuses uploaded packs; gc
/// then clears what the killed runs left behind.
#[test]
fn kill_9_during_backup_loses_nothing_and_rerun_reuses() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let ctl = Ctl::new(repo.to_str().unwrap(), "p");
    let storage = cairn_repo::storage::LocalStorage::new(&repo);
    kill_9_scenario(&ctl, &storage, tmp.path());
    // Killed backups left their locks and staging files. Their processes are
    // gone from this host, so the locks are stale at once: gc need not wait
    // 30 minutes, and a plain `unlock` (stale locks only) removes them.
    let locks = || fs::read_dir(repo.join("locks")).map_or(0, |d| d.count());
    assert!(locks() > 0, "a killed backup leaves its lock");
    ctl.ok(&["unlock"]);
    assert_eq!(locks(), 0, "a dead process's lock on this host is stale");
    // Whether a kill caught a pack half-written is timing; make sure one is there.
    fs::write(repo.join("data/.pack-0123456789abcdef.tmp"), b"half a pack").unwrap();
    let staged = fs::read_dir(repo.join("data"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tmp")
        })
        .count();
    let gc = ctl.json(&["gc", "--grace", "0s"]);
    assert_eq!(
        gc["staging_files_removed"].as_u64().unwrap(),
        staged as u64,
        "{gc}"
    );
    let leftovers: Vec<_> = fs::read_dir(repo.join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let out = ctl.ok(&["check", "--read-data"]);
    assert!(out.contains("no errors found"), "{out}");
    let r = tmp.path().join("after-gc");
    ctl.ok(&[
        "restore",
        "latest",
        "--domain",
        "big",
        "--target",
        r.to_str().unwrap(),
    ]);
}

/// The same on S3: a killed upload leaves no object; finished packs are adopted.
#[test]
fn kill_9_during_backup_on_garage() {
    let g = Garage::start().expect("start garage");
    let tmp = tempfile::tempdir().unwrap();
    let ctl = g.apply_env(Ctl::new("s3://cairn/crash-repo", "p"));
    let storage = g.storage("crash-repo").unwrap();
    kill_9_scenario(&ctl, &storage, tmp.path());
}

fn kill_9_scenario(ctl: &Ctl, storage: &dyn Storage, tmp: &Path) {
    ctl.ok(&["init"]);
    // An earlier snapshot that must survive.
    let small = tmp.join("small");
    fs::create_dir_all(&small).unwrap();
    fs::write(small.join("keep.txt"), b"earlier backup").unwrap();
    let earlier = ctl.backup("small", &small, &[]);
    // A site big enough to take several packs (incompressible data).
    let big = tmp.join("big");
    fs::create_dir_all(&big).unwrap();
    let mut seed = 0x12345678u64;
    for i in 0..24 {
        let data: Vec<u8> = (0..4_000_000)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        fs::write(big.join(format!("upload-{i}.jpg")), data).unwrap();
    }
    for kill_at_packs in [1usize, 3] {
        let base = count_packs(storage);
        let mut child = ctl
            .command(&["backup", "--domain", "big", big.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let reached = eventually("packs to appear", Duration::from_secs(60), || {
            if let Ok(Some(_)) = child.try_wait() {
                return Some(false);
            }
            (count_packs(storage) >= base + kill_at_packs).then_some(true)
        })
        .unwrap();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(reached, "backup finished before it could be killed");
        // No half-visible snapshot: only the earlier one is listed.
        let snaps = ctl.json(&["snapshots"]);
        assert!(
            snaps
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["domain"] != "big"),
            "{snaps}"
        );
        let out = ctl.ok(&["check", "--read-data"]);
        assert!(out.contains("no errors found"), "{out}");
        let r = tmp.join(format!("r{kill_at_packs}"));
        ctl.ok(&[
            "restore",
            earlier["id"].as_str().unwrap(),
            "--target",
            r.to_str().unwrap(),
        ]);
        assert_same_tree(&small, &r, &Excludes::new::<&str>(&[]).unwrap());
    }
    let total: u64 = 24 * 4_000_000;
    let rerun = ctl.backup("big", &big, &[]);
    let new = rerun["stats"]["bytes_new"].as_u64().unwrap();
    assert!(
        new < total * 9 / 10,
        "rerun stored {new} new bytes of {total}: uploaded packs were not reused"
    );
    let r = tmp.join("rbig");
    ctl.ok(&[
        "restore",
        "latest",
        "--domain",
        "big",
        "--target",
        r.to_str().unwrap(),
    ]);
    assert_same_tree(&big, &r, &Excludes::new::<&str>(&[]).unwrap());
    let out = ctl.ok(&["check", "--read-data"]);
    assert!(
        out.contains("no errors found") && !out.contains("warning"),
        "{out}"
    );
}
