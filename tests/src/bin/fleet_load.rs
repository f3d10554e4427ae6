//! Load benchmark (printed, never timed in CI): N simulated agents, each with
//! its own certificate and session, against one real controller process.
//! Reports the controller's memory, its CPU while only heartbeats flow, and
//! how long a job takes from `StartBackup` to reaching its agent.
//!
//!   cargo run --release -p cairn-tests --bin cairn-fleet-load -- [AGENTS] [JOBS] [HEARTBEAT_S]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_proto::admin::v1 as admin;
use cairn_tests::cluster::{Cluster, ClusterOptions};
use cairn_tests::sim::{self, pct, proc_stat, Controller};

type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

async fn agent(
    c: Arc<Controller>,
    token: String,
    n: usize,
    arrivals: Arrivals,
) -> anyhow::Result<()> {
    let host = format!("sim{n:04}");
    let session =
        sim::connect(&c, token, &host, vec![sim::domain(format!("d{n:04}.load"))]).await?;
    session
        .serve(|j, tx| {
            arrivals
                .lock()
                .unwrap()
                .insert(j.job_id.clone(), Instant::now());
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(sim::failed(j.job_id)).await });
        })
        .await
}

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let n = args.first().copied().unwrap_or(500);
    let jobs = args.get(1).copied().unwrap_or(200);
    let heartbeat = args.get(2).copied().unwrap_or(15) as u32;
    std::env::set_var("CAIRN_CONTROLLER_LOG", "warn");
    let c = Cluster::start(ClusterOptions {
        heartbeat_seconds: heartbeat,
        ..Default::default()
    });
    let pid = c.controller_pid();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let _g = rt.enter();
    let (mut adm, controller) = rt.block_on(sim::admin(&c))?;
    let (_, rss0) = proc_stat(pid);
    let started = Instant::now();
    let arrivals: Arrivals = Arc::default();
    let shared = Arc::new(controller);
    sim::spawn_agents(&rt, &mut adm, n, |i, token| {
        agent(shared.clone(), token, i, arrivals.clone())
    })?;
    rt.block_on(sim::all_online(&mut adm, n, Duration::from_secs(300)))?;
    let connect = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let (t0, rss_connected) = proc_stat(pid);
    let idle = Duration::from_secs(20);
    std::thread::sleep(idle);
    let (t1, rss_idle) = proc_stat(pid);
    let idle_cpu = (t1 - t0) as f64 / sim::TICKS_PER_SECOND / idle.as_secs_f64() * 100.0;

    let mut lat = Vec::with_capacity(jobs);
    for k in 0..jobs {
        let domain = format!("d{:04}.load", (k * 7919) % n);
        let sent = Instant::now();
        let j = rt
            .block_on(adm.start_backup(admin::StartBackupRequest {
                domain,
                kind: "full".into(),
                ..Default::default()
            }))?
            .into_inner();
        let at = loop {
            if let Some(t) = arrivals.lock().unwrap().get(&j.job_id) {
                break *t;
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        lat.push(at.duration_since(sent));
    }
    lat.sort();
    let (_, rss_end) = proc_stat(pid);
    println!("fleet load: {n} agent sessions (mTLS, one certificate each), heartbeat every {heartbeat}s, one controller process");
    println!(
        "  all {n} enrolled and online after      {:>8.1} s",
        connect.as_secs_f64()
    );
    println!(
        "  controller RSS: empty {:.1} MB, {n} sessions {:.1} MB, after {jobs} jobs {:.1} MB",
        rss0 as f64 / 1024.0,
        rss_connected.max(rss_idle) as f64 / 1024.0,
        rss_end as f64 / 1024.0
    );
    println!(
        "  controller CPU at idle heartbeat        {:>8.2} % of one core ({}s sample)",
        idle_cpu,
        idle.as_secs()
    );
    println!(
        "  dispatch latency (StartBackup → job at agent), {jobs} jobs: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        pct(&lat, 0.5).as_secs_f64() * 1e3,
        pct(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().unwrap().as_secs_f64() * 1e3
    );
    drop(c);
    Ok(())
}
