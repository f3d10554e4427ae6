//! Dashboard benchmark (printed, never timed in CI): a catalog holding
//! AGENTS agents × DOMAINS domains with DAYS daily snapshots and jobs each,
//! served by one real controller process; times `/`, a domain page and
//! `/metrics` over loopback (median and p90 of ROUNDS requests each).
//!
//!   cargo run --release -p cairn-tests --bin cairn-dashboard-load -- [AGENTS] [DOMAINS] [DAYS] [ROUNDS]

use std::time::Instant;

use cairn_controller::catalog::{
    AgentRecord, Catalog, DomainRecord, JobRecord, JobSpec, JobState, SnapshotRecord,
};
use cairn_tests::cluster::{http_get, Cluster, ClusterOptions};
use cairn_tests::sim::pct;

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let (agents, per_agent, days, rounds) = (arg(1, 100), arg(2, 50), arg(3, 30), arg(4, 15));
    let mut c = Cluster::start(ClusterOptions::default());
    c.stop_controller();
    let now = chrono::Utc::now().timestamp();
    let t = Instant::now();
    {
        let cat = Catalog::open(&c.state.join("catalog"))?;
        let mut jobs = Vec::new();
        for a in 0..agents {
            let id = format!("agent{a:03}");
            cat.put_agent(&AgentRecord {
                id: id.clone(),
                hostname: format!("web{a:03}.example"),
                version: "bench".into(),
                cert_sha256: format!("{a:064}"),
                enrolled_at: now - 40 * 86_400,
                last_seen: now,
                revoked: false,
                labels: Default::default(),
            })?;
            let domains: Vec<DomainRecord> = (0..per_agent)
                .map(|d| DomainRecord {
                    binlog: false,
                    name: format!("site{d:02}.web{a:03}.example"),
                    agent_id: id.clone(),
                    path: format!("/var/www/site{d:02}"),
                    size_bytes: 50_000_000 + d as u64 * 1_000_000,
                    databases: vec![format!("mysql:site{d:02}")],
                    aliases: vec![],
                    site_type: "wordpress".into(),
                    source: "config".into(),
                    root_missing: false,
                    analysis: None,
                })
                .collect();
            cat.set_domains(&id, &domains)?;
            for d in &domains {
                for day in 0..days as i64 {
                    let at = now - day * 86_400 - 3_600;
                    let job = format!("j{a:03}{}{day:03}", d.name);
                    cat.add_snapshot(&SnapshotRecord {
                        id: format!("{:064x}", blake3_like(&job)),
                        domain: d.name.clone(),
                        agent_id: id.clone(),
                        time: at,
                        kind: "incremental".into(),
                        content: "files".into(),
                        total_bytes: d.size_bytes,
                        stored_bytes: 300_000,
                        run_id: String::new(),
                    })?;
                    jobs.push(JobRecord {
                        id: job,
                        kind: "backup".into(),
                        domain: d.name.clone(),
                        agent_id: id.clone(),
                        state: JobState::Succeeded,
                        step: String::new(),
                        files: 1_000,
                        bytes: d.size_bytes,
                        total_bytes: d.size_bytes,
                        created_at: at - 60,
                        finished_at: Some(at),
                        snapshot_id: None,
                        error: None,
                        spec: JobSpec::default(),
                        started_at: Some(at - 60),
                        not_before: None,
                        attempt: 1,
                        priority: 0,
                        retry_of: None,
                        report: String::new(),
                    });
                }
            }
            cat.queue(&jobs, &[])?;
            jobs.clear();
        }
        cat.flush()?;
    }
    let domains = agents * per_agent;
    println!(
        "catalog: {agents} agents, {domains} domains, {} snapshots and {} jobs (filled in {:.1}s)",
        domains * days,
        domains * days,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    c.start_controller();
    println!(
        "controller start (catalog opened, summaries rebuilt, serving): {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let web = c.web_url();
    let time = |path: &str| {
        let mut ms: Vec<f64> = (0..rounds)
            .map(|_| {
                let t = Instant::now();
                let body = http_get(&format!("{web}{path}"));
                assert!(!body.is_empty());
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        ms.sort_by(|a, b| a.total_cmp(b));
        (pct(&ms, 0.5), pct(&ms, 0.9))
    };
    for (name, path) in [
        ("fleet page /", "/".to_string()),
        (
            "domain page",
            "/domain/agent000/site00.web000.example".to_string(),
        ),
        ("/metrics", "/metrics".to_string()),
        ("/api/status", "/api/status".to_string()),
    ] {
        let (p50, p90) = time(&path);
        println!("{name:<14} median {p50:>7.1} ms   p90 {p90:>7.1} ms   ({rounds} requests)");
    }
    Ok(())
}

/// A stable 64-bit mix of a string (snapshot ids only need to be unique).
fn blake3_like(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}
