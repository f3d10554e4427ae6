//! Backup and restore throughput through the controller (via-controller data
//! path, one agent, an empty repository each run). Prints each run and the
//! medians; a benchmark, never a test.
//!
//!   cargo run --release -p cairn-tests --bin cairn-fleet-throughput -- [SITE_MIB] [RUNS]

use std::fs;
use std::path::Path;
use std::time::Instant;

use cairn_tests::cluster::{Cluster, ClusterOptions};

/// Files of 4 MiB, half incompressible (xorshift) and half text: a site's
/// mix of media and code, compressing to about half.
fn site(dir: &Path, mib: usize) {
    fs::create_dir_all(dir).unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..mib / 4 {
        let mut data = Vec::with_capacity(4 << 20);
        while data.len() < 2 << 20 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.extend_from_slice(&x.to_le_bytes());
        }
        while data.len() < 4 << 20 {
            data.extend_from_slice(
                format!("<?php echo 'line {} of file {i}'; ?>\n", data.len()).as_bytes(),
            );
        }
        fs::write(dir.join(format!("f{i:04}.bin")), &data).unwrap();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let mib = args.first().copied().unwrap_or(400);
    let runs = args.get(1).copied().unwrap_or(3);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("site");
    site(&src, mib);
    let (mut backups, mut restores) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let c = Cluster::start(ClusterOptions::default());
        let _agent = c.add_agent("bench", &[("bench.test", &src)]);
        let t = Instant::now();
        let job = c.backup("bench.test");
        let backup_s = t.elapsed().as_secs_f64();
        assert_eq!(job["state"], "succeeded", "{job}");
        let snap = job["snapshot"].as_str().unwrap().to_string();
        let target = c.dir.join("restored");
        let t = Instant::now();
        let r = c.json(&[
            "restore",
            &snap,
            "--target",
            target.to_str().unwrap(),
            "--wait",
        ]);
        let restore_s = t.elapsed().as_secs_f64();
        assert_eq!(r["state"], "succeeded", "{r}");
        let (b, rs) = (mib as f64 / backup_s, mib as f64 / restore_s);
        println!("run {run}: backup {backup_s:.1} s ({b:.0} MiB/s), restore {restore_s:.1} s ({rs:.0} MiB/s)");
        backups.push(b);
        restores.push(rs);
    }
    println!(
        "{mib} MiB through the controller, median of {runs}: backup {:.0} MiB/s, restore {:.0} MiB/s",
        median(backups),
        median(restores)
    );
}
