//! Simulated agents for the load benchmarks: each enrolls with its own key and
//! certificate and keeps a real mTLS session with a real controller process,
//! but answers jobs itself instead of backing anything up.

use std::fs;
use std::time::Duration;

use cairn_proto::admin::v1 as admin;
use cairn_proto::admin::v1::admin_service_client::AdminServiceClient;
use cairn_proto::agent::v1 as pb;
use cairn_proto::agent::v1::agent_service_client::AgentServiceClient;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::cluster::Cluster;

/// (CPU ticks user+system, RSS in KiB) of a process, from /proc.
pub fn proc_stat(pid: u32) -> (u64, u64) {
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

/// USER_HZ on Linux: /proc reports CPU time in these ticks.
pub const TICKS_PER_SECOND: f64 = 100.0;

/// The `p` quantile (0..=1) of sorted values.
pub fn pct<T: Copy>(sorted: &[T], p: f64) -> T {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// What a simulated agent needs to reach the controller.
pub struct Controller {
    pub url: String,
    pub ca_sha256: String,
    pub ca_pem: String,
}

/// The admin client of a test cluster, with the controller's address and CA.
pub async fn admin(c: &Cluster) -> anyhow::Result<(AdminServiceClient<Channel>, Controller)> {
    let ca_pem = fs::read_to_string(c.state.join("pki/ca.pem"))?;
    let id = cairn_net::Identity {
        chain_pem: fs::read_to_string(c.state.join("pki/admin.pem"))?,
        key_pem: fs::read_to_string(c.state.join("pki/admin.key"))?,
    };
    let tls = cairn_net::client_config(&cairn_net::Trust::Ca(ca_pem.clone()), Some(&id))?;
    let mut adm = AdminServiceClient::new(cairn_net::channel(&c.url(), tls)?);
    let ca_sha256 = adm
        .create_token(admin::CreateTokenRequest { ttl_seconds: 600 })
        .await?
        .into_inner()
        .ca_sha256;
    Ok((
        adm,
        Controller {
            url: c.url(),
            ca_sha256,
            ca_pem,
        },
    ))
}

/// One agent's open session: send with `tx`, receive from `inbound`.
pub struct Session {
    pub tx: mpsc::Sender<pb::AgentMessage>,
    pub inbound: tonic::Streaming<pb::ControllerMessage>,
    pub heartbeat: Duration,
}

/// Enrolls `hostname` with `token` and opens its session, announcing `domains`.
pub async fn connect(
    c: &Controller,
    token: String,
    hostname: &str,
    domains: Vec<pb::Domain>,
) -> anyhow::Result<Session> {
    let key = rcgen::KeyPair::generate()?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)?
        .pem()?;
    let tls = cairn_net::client_config(&cairn_net::Trust::Pin(c.ca_sha256.clone()), None)?;
    let r = AgentServiceClient::new(cairn_net::channel(&c.url, tls)?)
        .enroll(pb::EnrollRequest {
            token,
            csr_pem: csr,
            hostname: hostname.into(),
            agent_version: "load".into(),
            labels: Default::default(),
        })
        .await?
        .into_inner();
    let id = cairn_net::Identity {
        chain_pem: r.certificate_pem,
        key_pem: key.serialize_pem(),
    };
    let tls = cairn_net::client_config(&cairn_net::Trust::Ca(c.ca_pem.clone()), Some(&id))?;
    let mut client = AgentServiceClient::new(cairn_net::channel(&c.url, tls)?);
    let (tx, rx) = mpsc::channel(64);
    tx.send(pb::AgentMessage {
        body: Some(pb::agent_message::Body::Hello(pb::Hello {
            agent_version: "load".into(),
            hostname: hostname.into(),
            inventory: Some(pb::Inventory { domains }),
            protocol: cairn_proto::PROTOCOL,
            min_protocol: cairn_proto::MIN_PROTOCOL,
            binlog: None,
            wal: None,
        })),
    })
    .await?;
    let mut inbound = client
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let heartbeat = match inbound.message().await? {
        Some(pb::ControllerMessage {
            body: Some(pb::controller_message::Body::Welcome(w)),
        }) => Duration::from_secs(w.heartbeat_seconds as u64),
        _ => anyhow::bail!("no welcome"),
    };
    Ok(Session {
        tx,
        inbound,
        heartbeat,
    })
}

impl Session {
    /// Heartbeats until the controller ends the session, handing every job
    /// to `on_job` with a sender for its answers.
    pub async fn serve(
        mut self,
        mut on_job: impl FnMut(pb::Job, &mpsc::Sender<pb::AgentMessage>),
    ) -> anyhow::Result<()> {
        let mut beat = tokio::time::interval(self.heartbeat);
        let mut seq = 0;
        loop {
            tokio::select! {
                _ = beat.tick() => {
                    seq += 1;
                    self.tx.send(heartbeat(seq)).await?;
                }
                m = self.inbound.message() => {
                    let Some(m) = m? else { return Ok(()) };
                    if let Some(pb::controller_message::Body::Job(j)) = m.body {
                        on_job(j, &self.tx);
                    }
                }
            }
        }
    }
}

/// A domain as a simulated agent announces it.
pub fn domain(name: String) -> pb::Domain {
    pb::Domain {
        name,
        path: "/var/www/x".into(),
        size_bytes: 1,
        ..Default::default()
    }
}

pub fn heartbeat(seq: u64) -> pb::AgentMessage {
    pb::AgentMessage {
        body: Some(pb::agent_message::Body::Heartbeat(pb::Heartbeat {
            seq,
            sent_at: 0,
        })),
    }
}

/// The answer of an agent that backs nothing up: the job failed.
pub fn failed(job_id: String) -> pb::AgentMessage {
    pb::AgentMessage {
        body: Some(pb::agent_message::Body::Result(pb::JobResult {
            job_id,
            outcome: pb::Outcome::Failed as i32,
            snapshot_id: String::new(),
            error: "simulated agent".into(),
            report: String::new(),
        })),
    }
}

/// Starts `n` simulated agents on `rt`, each with its own single-use
/// token: `agent(i, token)` runs agent i (its errors are printed).
pub fn spawn_agents<F, Fut>(
    rt: &tokio::runtime::Runtime,
    adm: &mut AdminServiceClient<Channel>,
    n: usize,
    agent: F,
) -> anyhow::Result<()>
where
    F: Fn(usize, String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    for i in 0..n {
        let token = rt
            .block_on(adm.create_token(admin::CreateTokenRequest { ttl_seconds: 600 }))?
            .into_inner()
            .token;
        let run = agent(i, token);
        rt.spawn(async move {
            if let Err(e) = run.await {
                eprintln!("sim agent {i}: {e:#}");
            }
        });
    }
    Ok(())
}

/// Waits until `n` agents are online; fails after `limit`.
pub async fn all_online(
    adm: &mut AdminServiceClient<Channel>,
    n: usize,
    limit: Duration,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    loop {
        let agents = adm
            .list_agents(admin::ListAgentsRequest {})
            .await?
            .into_inner()
            .agents;
        let online = agents.iter().filter(|a| a.online).count();
        if online == n {
            return Ok(());
        }
        if started.elapsed() > limit {
            anyhow::bail!("only {online} of {n} agents came online");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
