//! Load benchmark (printed, never timed in CI): N simulated agents, each with
//! its own certificate and session, against one real controller process.
//! Reports the controller's memory, its CPU while only heartbeats flow, and
//! how long a job takes from `StartBackup` to reaching its agent.
//!
//!   cargo run --release -p cairn-tests --bin cairn-fleet-load -- [AGENTS] [JOBS] [HEARTBEAT_S]

use std::collections::HashMap;
use std::fs;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_proto::admin::v1 as admin;
use cairn_proto::admin::v1::admin_service_client::AdminServiceClient;
use cairn_proto::agent::v1 as pb;
use cairn_proto::agent::v1::agent_service_client::AgentServiceClient;
use cairn_tests::cluster::{Cluster, ClusterOptions};
use tokio::sync::mpsc;

type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

fn proc_stat(pid: u32) -> (u64, u64) {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (ticks, rss_kb)
}

async fn agent(
    c: Arc<(String, String, String)>,
    token: String,
    n: usize,
    arrivals: Arrivals,
) -> anyhow::Result<()> {
    let (url, ca_sha, ca_pem) = (&c.0, &c.1, &c.2);
    let key = rcgen::KeyPair::generate()?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)?
        .pem()?;
    let tls = cairn_net::client_config(&cairn_net::Trust::Pin(ca_sha.clone()), None)?;
    let r = AgentServiceClient::new(cairn_net::channel(url, tls)?)
        .enroll(pb::EnrollRequest {
            token,
            csr_pem: csr,
            hostname: format!("sim{n:04}"),
            agent_version: "load".into(),
            labels: Default::default(),
        })
        .await?
        .into_inner();
    let id = cairn_net::Identity {
        chain_pem: r.certificate_pem,
        key_pem: key.serialize_pem(),
    };
    let tls = cairn_net::client_config(&cairn_net::Trust::Ca(ca_pem.clone()), Some(&id))?;
    let mut client = AgentServiceClient::new(cairn_net::channel(url, tls)?);
    let (tx, rx) = mpsc::channel(16);
    tx.send(pb::AgentMessage {
        body: Some(pb::agent_message::Body::Hello(pb::Hello {
            agent_version: "load".into(),
            hostname: format!("sim{n:04}"),
            inventory: Some(pb::Inventory {
                domains: vec![pb::Domain {
                    name: format!("d{n:04}.load"),
                    path: "/var/www/x".into(),
                    size_bytes: 1,
                    ..Default::default()
                }],
            }),
        })),
    })
    .await?;
    let mut inbound = client
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let beat = match inbound.message().await? {
        Some(pb::ControllerMessage {
            body: Some(pb::controller_message::Body::Welcome(w)),
        }) => Duration::from_secs(w.heartbeat_seconds as u64),
        _ => anyhow::bail!("no welcome"),
    };
    let mut t = tokio::time::interval(beat);
    let mut seq = 0;
    loop {
        tokio::select! {
            _ = t.tick() => {
                seq += 1;
                tx.send(pb::AgentMessage { body: Some(pb::agent_message::Body::Heartbeat(pb::Heartbeat { seq, sent_at: 0 })) }).await?;
            }
            m = inbound.message() => {
                let Some(m) = m? else { return Ok(()) };
                if let Some(pb::controller_message::Body::Job(j)) = m.body {
                    arrivals.lock().unwrap().insert(j.job_id.clone(), Instant::now());
                    tx.send(pb::AgentMessage { body: Some(pb::agent_message::Body::Result(pb::JobResult {
                        job_id: j.job_id, outcome: pb::Outcome::Failed as i32, snapshot_id: String::new(), error: "simulated agent".into(),
                    })) }).await?;
                }
            }
        }
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
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
    let ca_pem = fs::read_to_string(c.state.join("pki/ca.pem"))?;
    let id = cairn_net::Identity {
        chain_pem: fs::read_to_string(c.state.join("pki/admin.pem"))?,
        key_pem: fs::read_to_string(c.state.join("pki/admin.key"))?,
    };
    let tls = cairn_net::client_config(&cairn_net::Trust::Ca(ca_pem.clone()), Some(&id))?;
    let mut adm = AdminServiceClient::new(cairn_net::channel(&c.url(), tls)?);
    let (_, rss0) = proc_stat(pid);
    let started = Instant::now();
    let arrivals: Arrivals = Arc::default();
    let ca_sha = rt
        .block_on(adm.create_token(admin::CreateTokenRequest { ttl_seconds: 600 }))?
        .into_inner()
        .ca_sha256;
    let shared = Arc::new((c.url(), ca_sha, ca_pem));
    for i in 0..n {
        let token = rt
            .block_on(adm.create_token(admin::CreateTokenRequest { ttl_seconds: 600 }))?
            .into_inner()
            .token;
        let (s, a) = (shared.clone(), arrivals.clone());
        rt.spawn(async move {
            if let Err(e) = agent(s, token, i, a).await {
                eprintln!("sim agent {i}: {e:#}");
            }
        });
    }
    loop {
        let agents = rt
            .block_on(adm.list_agents(admin::ListAgentsRequest {}))?
            .into_inner()
            .agents;
        let online = agents.iter().filter(|a| a.online).count();
        if online == n {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            anyhow::bail!("only {online} of {n} agents came online");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let connect = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let (t0, rss_connected) = proc_stat(pid);
    let idle = Duration::from_secs(20);
    std::thread::sleep(idle);
    let (t1, rss_idle) = proc_stat(pid);
    let hz = 100.0; // USER_HZ on Linux
    let idle_cpu = (t1 - t0) as f64 / hz / idle.as_secs_f64() * 100.0;

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
