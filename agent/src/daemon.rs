//! The agent daemon: enrollment, then one long-lived session with the
//! controller (FLT-2, FLT-4) that carries the inventory, heartbeats, jobs and
//! their progress. The agent dials out; it reconnects with capped, jittered
//! backoff whenever the session breaks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{bail, Context};
use cairn_proto::agent::v1 as pb;
use cairn_proto::agent::v1::agent_service_client::AgentServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::analysis::{self, Report};
use crate::config::Config;
use crate::discover;
use crate::jobs;
use crate::remote::Client;

const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Jobs carry an index segment of a whole snapshot's blobs for restores.
const MAX_MESSAGE: usize = 256 << 20;

/// The files `enroll` writes into the state directory.
pub struct State {
    pub dir: PathBuf,
}

impl State {
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn cert(&self) -> PathBuf {
        self.dir.join("agent.pem")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join("agent.key")
    }
    pub fn id(&self) -> PathBuf {
        self.dir.join("agent-id")
    }
}

fn write(path: &Path, data: &str, mode: u32) -> anyhow::Result<()> {
    cairn_net::write_file(path, data, mode).with_context(|| path.display().to_string())
}

/// Enrolls with a single-use token, trusting the controller only if its CA
/// has the pinned SHA-256 (FLT-3). Writes the key (0600), the signed
/// certificate and the CA into the state directory. Returns the agent id.
pub async fn enroll(
    cfg: &Config,
    controller: &str,
    token: &str,
    ca_sha256: &str,
    labels: std::collections::HashMap<String, String>,
) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let state = State {
        dir: cfg.state_dir.clone(),
    };
    if state.cert().exists() {
        bail!(
            "{} exists: this agent is already enrolled (remove the state directory to enroll again)",
            state.cert().display()
        );
    }
    std::fs::create_dir_all(&state.dir).with_context(|| state.dir.display().to_string())?;
    std::fs::set_permissions(&state.dir, std::fs::Permissions::from_mode(0o700))?;
    let name = cfg.host_name();
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name.clone());
    let csr = params.serialize_request(&key)?.pem()?;
    let tls = cairn_net::client_config(&cairn_net::Trust::Pin(ca_sha256.into()), None)?;
    let channel = cairn_net::channel(controller, tls)?;
    let r = AgentServiceClient::new(channel)
        .enroll(pb::EnrollRequest {
            token: token.into(),
            csr_pem: csr,
            hostname: name,
            agent_version: env!("CARGO_PKG_VERSION").into(),
            labels,
        })
        .await
        .map_err(|s| anyhow::anyhow!("enrollment refused: {}", s.message()))?
        .into_inner();
    let ca_der = cairn_net::cert_der(&r.ca_certificate_pem, "CA")?;
    if cairn_net::fingerprint(&ca_der) != ca_sha256.trim().to_ascii_lowercase() {
        bail!("the controller sent a CA that does not match --ca-sha256");
    }
    write(&state.key(), &key.serialize_pem(), 0o600)?;
    write(&state.cert(), &r.certificate_pem, 0o644)?;
    write(&state.ca(), &r.ca_certificate_pem, 0o644)?;
    write(&state.id(), &r.agent_id, 0o644)?;
    Ok(r.agent_id)
}

/// A client with this agent's certificate.
pub fn client(cfg: &Config) -> anyhow::Result<Client> {
    let state = State {
        dir: cfg.state_dir.clone(),
    };
    let read = |p: PathBuf| {
        std::fs::read_to_string(&p)
            .with_context(|| format!("{} (is this agent enrolled?)", p.display()))
    };
    let identity = cairn_net::Identity {
        chain_pem: read(state.cert())?,
        key_pem: read(state.key())?,
    };
    let tls = cairn_net::client_config(&cairn_net::Trust::Ca(read(state.ca())?), Some(&identity))?;
    if cfg.controller.is_empty() {
        bail!("no controller URL in the config (set controller = \"https://HOST:PORT\")");
    }
    Ok(
        AgentServiceClient::new(cairn_net::channel(&cfg.controller, tls)?)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
    )
}

/// The latest analysis of each domain found: jobs look theirs up here.
pub type Sites = Arc<RwLock<Vec<Report>>>;

/// Discovers the domains and analyzes each (SPEC INT-1..INT-6), as of now.
pub fn analyze_all(cfg: &Config) -> Vec<Report> {
    let found = discover::discover(cfg);
    for w in &found.warnings {
        tracing::warn!("discovery: {w}");
    }
    let now = chrono::Utc::now().timestamp();
    found
        .sites
        .iter()
        .map(|s| analysis::analyze(s, &cfg.discovery, Some(&cfg.state_dir), now))
        .collect()
}

/// What the agent reports: its domains, their analysis and databases by
/// engine and name only (never credentials).
pub fn inventory(reports: &[Report], streams: &Streams) -> pb::Inventory {
    pb::Inventory {
        domains: reports.iter().map(|r| domain_message(r, streams)).collect(),
    }
}

/// The servers whose logs this agent streams.
#[derive(Default)]
pub struct Streams {
    pub binlog: Option<cairn_dump::Connection>,
    pub wal: Option<cairn_dump::Connection>,
}

fn domain_message(r: &Report, streams: &Streams) -> pb::Domain {
    pb::Domain {
        name: r.site.name.clone(),
        path: r.site.root.display().to_string(),
        size_bytes: r.size_bytes,
        databases: r
            .database
            .iter()
            .map(|db| pb::Database {
                engine: db.engine.clone(),
                name: db.name.clone(),
                table_prefix: db.table_prefix.clone().unwrap_or_default(),
                binlog: match db.engine.as_str() {
                    "mariadb" => streams
                        .binlog
                        .as_ref()
                        .is_some_and(|s| crate::binlog::covers(s, &db.connection(), 3306)),
                    "postgres" => streams
                        .wal
                        .as_ref()
                        .is_some_and(|s| crate::binlog::covers(s, &db.connection(), 5432)),
                    _ => false,
                },
            })
            .collect(),
        aliases: r.site.aliases.clone(),
        site_type: r.site_type.as_str().into(),
        source: r.site.source.clone(),
        root_missing: r.site.root_missing,
        analysis: Some(pb::Analysis {
            analyzed_at: r.analyzed_at,
            files: r.files,
            changes_24h: r.changes_24h,
            avg_daily_changes: r.avg_daily_changes,
            trend: r.trend.as_str().into(),
            has_traffic: r.requests_24h.is_some(),
            requests_24h: r.requests_24h.unwrap_or(0),
            duration_ms: r.took.as_millis().min(u32::MAX as u128) as u32,
            history: r
                .history
                .iter()
                .map(|d| pb::DaySample {
                    day: d.day.clone(),
                    changes: d.changes,
                    has_traffic: d.requests.is_some(),
                    requests: d.requests.unwrap_or(0),
                    size_bytes: d.size_bytes,
                })
                .collect(),
        }),
    }
}

/// Discovery and analysis off the runtime threads; the sites found become
/// the ones jobs run against.
async fn refresh(cfg: &Arc<Config>, sites: &Sites) -> anyhow::Result<pb::Inventory> {
    let c = cfg.clone();
    let reports = tokio::task::spawn_blocking(move || analyze_all(&c)).await?;
    let streams = Streams {
        binlog: cfg.binlog.as_ref().and_then(|b| b.connection().ok()),
        wal: cfg.wal.as_ref().and_then(|w| w.connection().ok()),
    };
    let inv = inventory(&reports, &streams);
    *sites.write().unwrap() = reports;
    Ok(inv)
}

/// Runs sessions until SIGTERM; running jobs are cancelled on the way out.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let client = client(&cfg)?;
    let cfg = Arc::new(cfg);
    let running: Running = Arc::new(Mutex::new(HashMap::new()));
    let sites: Sites = Arc::default();
    let logs = LogStates {
        binlog: crate::binlog::start(cfg.binlog.clone(), &cfg.state_dir),
        wal: crate::wal::start(cfg.wal.clone(), &cfg.state_dir),
    };
    // Before any job: finish or undo in-place restores a crash interrupted,
    // then drop expired rollback points, hourly.
    // What the controller is told once connected: it failed those jobs
    // when the session broke.
    let recovered: Recovered = Arc::new(Mutex::new(sweep_restores(&cfg, true)));
    let _expiry = AbortOnDrop(tokio::spawn({
        let cfg = cfg.clone();
        async move {
            let mut hourly = tokio::time::interval(Duration::from_secs(3600));
            loop {
                hourly.tick().await;
                let cfg = cfg.clone();
                let _ = tokio::task::spawn_blocking(move || sweep_restores(&cfg, false)).await;
            }
        }
    }));
    let mut backoff = Duration::from_secs(1);
    let mut stop = std::pin::pin!(shutdown_signal());
    notify("READY=1");
    loop {
        let result = tokio::select! {
            r = session(&cfg, client.clone(), running.clone(), sites.clone(), logs.clone(), recovered.clone()) => r,
            _ = &mut stop => break,
        };
        match result {
            Ok(true) => backoff = Duration::from_secs(1),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "session failed"),
        }
        cancel_all(&running);
        // Capped exponential backoff with jitter, so a restarted controller
        // is not hit by every agent at once.
        let jitter = rand::random::<f64>() * 0.5 + 0.75;
        let wait = backoff.mul_f64(jitter);
        tracing::info!(
            seconds = format!("{:.1}", wait.as_secs_f64()),
            "reconnecting"
        );
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut stop => break,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    tracing::info!("stopping");
    notify("STOPPING=1");
    cancel_all(&running);
    // Give jobs a moment to notice and stop writing.
    for _ in 0..50 {
        if running.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Recovers interrupted in-place restores (at start) and expires rollback
/// points; failures are logged, never fatal to the daemon.
fn sweep_restores(cfg: &Config, at_start: bool) -> Vec<cairn_repo::stage::Swept> {
    let now = chrono::Utc::now().timestamp();
    let done = jobs::journal(&cfg.state_dir).and_then(|j| {
        Ok(if at_start {
            cairn_repo::stage::recover(&j, now)?
        } else {
            cairn_repo::stage::expire(&j, now)?
        })
    });
    match done {
        Ok(swept) => {
            for s in &swept {
                tracing::info!("{}", s.what);
            }
            swept
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "recovering in-place restores");
            Vec::new()
        }
    }
}

type Running = Arc<Mutex<HashMap<String, Arc<cairn_repo::backup::Progress>>>>;
type Recovered = Arc<Mutex<Vec<cairn_repo::stage::Swept>>>;

fn cancel_all(running: &Running) {
    for p in running.lock().unwrap().values() {
        p.cancel.store(true, Ordering::Relaxed);
    }
}

/// One session. Returns whether it got as far as the controller's welcome
/// (then the backoff starts over).
async fn session(
    cfg: &Arc<Config>,
    client: Client,
    running: Running,
    sites: Sites,
    logs: LogStates,
    recovered: Recovered,
) -> anyhow::Result<bool> {
    let inv = refresh(cfg, &sites).await?;
    let (mut binlog, mut wal) = (logs.binlog.clone(), logs.wal.clone());
    let (tx, rx) = mpsc::channel::<pb::AgentMessage>(64);
    tx.send(pb::AgentMessage {
        body: Some(pb::agent_message::Body::Hello(pb::Hello {
            agent_version: env!("CARGO_PKG_VERSION").into(),
            hostname: cfg.host_name(),
            inventory: Some(inv),
            protocol: cairn_proto::PROTOCOL,
            min_protocol: cairn_proto::MIN_PROTOCOL,
            binlog: Some(binlog.borrow_and_update().clone()),
            wal: Some(wal.borrow_and_update().clone()),
        })),
    })
    .await?;
    let mut inbound = client
        .clone()
        .session(ReceiverStream::new(rx))
        .await
        .map_err(|s| anyhow::anyhow!("controller refused the session: {}", s.message()))?
        .into_inner();
    let welcome = match inbound.message().await? {
        Some(pb::ControllerMessage {
            body: Some(pb::controller_message::Body::Welcome(w)),
        }) => w,
        _ => bail!("the controller did not welcome this session"),
    };
    // A controller from before negotiation says 0 and speaks 1.
    let protocol = welcome.protocol.max(1);
    tracing::info!(agent = %welcome.agent_id, controller = %cfg.controller, version = %welcome.controller_version, protocol, "connected");
    let beat = Duration::from_secs(welcome.heartbeat_seconds.max(1) as u64);
    let mut ticker = tokio::time::interval(beat);
    // Discovery and analysis again every interval, sent up as a new inventory.
    let every = cfg.discovery.interval()?;
    let _analyzer = AbortOnDrop(tokio::spawn({
        let (cfg, sites, tx) = (cfg.clone(), sites.clone(), tx.clone());
        async move {
            loop {
                tokio::time::sleep(every).await;
                match refresh(&cfg, &sites).await {
                    Ok(inv) => {
                        let msg = pb::AgentMessage {
                            body: Some(pb::agent_message::Body::Inventory(inv)),
                        };
                        if tx.send(msg).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "analysis failed"),
                }
            }
        }
    }));
    let told: Vec<_> = recovered.lock().unwrap().drain(..).collect();
    for s in told {
        let msg = pb::AgentMessage {
            body: Some(pb::agent_message::Body::Recovered(pb::RecoveredRestore {
                job_id: s.job.clone(),
                what: s.what.clone(),
            })),
        };
        if tx.send(msg).await.is_err() {
            recovered.lock().unwrap().push(s);
        }
    }
    // Each log stream's state, whenever it changes.
    let _binlog = AbortOnDrop(tokio::spawn(send_changes(
        binlog,
        tx.clone(),
        pb::agent_message::Body::Binlog,
    )));
    let _wal = AbortOnDrop(tokio::spawn(send_changes(
        wal,
        tx.clone(),
        pb::agent_message::Body::Wal,
    )));
    let mut seq = 0;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                seq += 1;
                let hb = pb::Heartbeat { seq, sent_at: chrono::Utc::now().timestamp() };
                if tx.send(pb::AgentMessage { body: Some(pb::agent_message::Body::Heartbeat(hb)) }).await.is_err() {
                    return Ok(true);
                }
            }
            msg = inbound.message() => {
                let msg = match msg {
                    Ok(Some(m)) => m,
                    Ok(None) => { tracing::warn!("the controller closed the session"); return Ok(true); }
                    Err(s) => { tracing::warn!(error = %s.message(), "session broken"); return Ok(true); }
                };
                match msg.body {
                    Some(pb::controller_message::Body::Job(job)) => {
                        let site = sites.read().unwrap().iter().find(|r| r.site.name == job.domain).cloned();
                        start_job(cfg.clone(), client.clone(), tx.clone(), running.clone(), job, site, protocol);
                    }
                    Some(pb::controller_message::Body::Cancel(c)) => {
                        if let Some(p) = running.lock().unwrap().get(&c.job_id) {
                            tracing::info!(job = %c.job_id, "cancelling");
                            p.cancel.store(true, Ordering::Relaxed);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

fn start_job(
    cfg: Arc<Config>,
    client: Client,
    tx: mpsc::Sender<pb::AgentMessage>,
    running: Running,
    job: pb::Job,
    site: Option<Report>,
    protocol: u32,
) {
    let progress = Arc::new(cairn_repo::backup::Progress::default());
    running
        .lock()
        .unwrap()
        .insert(job.job_id.clone(), progress.clone());
    let id = job.job_id.clone();
    tracing::info!(job = %id, domain = %job.domain, kind = ?job.kind(), "job started");
    tokio::spawn(async move {
        let handle = tokio::runtime::Handle::current();
        // What the last analysis measured: the progress bar's 100%.
        let total = if job.kind() == pb::JobKind::Backup {
            site.as_ref().map_or(0, |r| r.size_bytes)
        } else {
            0
        };
        let step = match job.kind() {
            pb::JobKind::Backup => "backing up",
            pb::JobKind::Rollback => "rolling back",
            _ => "restoring",
        };
        let reporter = {
            let (tx, id, progress) = (tx.clone(), id.clone(), progress.clone());
            tokio::spawn(async move {
                let mut t = tokio::time::interval(Duration::from_secs(1));
                loop {
                    t.tick().await;
                    let p = pb::JobProgress {
                        job_id: id.clone(),
                        step: step.into(),
                        files: progress.files.load(Ordering::Relaxed),
                        bytes: progress.bytes.load(Ordering::Relaxed),
                        total_bytes: total.max(progress.total.load(Ordering::Relaxed)),
                        ..Default::default()
                    };
                    if tx
                        .send(pb::AgentMessage {
                            body: Some(pb::agent_message::Body::Progress(p)),
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            })
        };
        let p = progress.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            jobs::run(
                &cfg,
                site.as_ref().map(|r| &r.site),
                client,
                handle,
                &job,
                &p,
                protocol,
            )
        })
        .await;
        reporter.abort();
        // The final counters, so the job's record shows what was done.
        let step = match &outcome {
            Ok(Ok(jobs::Done {
                summary: Some(s), ..
            })) => s.clone(),
            _ => "done".into(),
        };
        let last = pb::JobProgress {
            job_id: id.clone(),
            step,
            files: progress.files.load(Ordering::Relaxed),
            bytes: progress.bytes.load(Ordering::Relaxed),
            total_bytes: total.max(progress.total.load(Ordering::Relaxed)),
            ..Default::default()
        };
        let _ = tx
            .send(pb::AgentMessage {
                body: Some(pb::agent_message::Body::Progress(last)),
            })
            .await;
        let result = match outcome {
            Ok(Ok(done)) => pb::JobResult {
                job_id: id.clone(),
                outcome: pb::Outcome::Succeeded as i32,
                snapshot_id: done.snapshot_id,
                error: String::new(),
                report: done.report.unwrap_or_default(),
            },
            Ok(Err(e)) => {
                let cancelled = matches!(
                    e.downcast_ref::<cairn_repo::Error>(),
                    Some(cairn_repo::Error::Cancelled)
                );
                tracing::warn!(job = %id, error = %format!("{e:#}"), "job failed");
                pb::JobResult {
                    job_id: id.clone(),
                    outcome: if cancelled {
                        pb::Outcome::Cancelled
                    } else {
                        pb::Outcome::Failed
                    } as i32,
                    snapshot_id: String::new(),
                    error: format!("{e:#}"),
                    report: String::new(),
                }
            }
            Err(e) => pb::JobResult {
                job_id: id.clone(),
                outcome: pb::Outcome::Failed as i32,
                snapshot_id: String::new(),
                error: format!("job panicked: {e}"),
                report: String::new(),
            },
        };
        if result.outcome == pb::Outcome::Succeeded as i32 {
            tracing::info!(job = %id, snapshot = %result.snapshot_id, "job succeeded");
        }
        let _ = tx
            .send(pb::AgentMessage {
                body: Some(pb::agent_message::Body::Result(result)),
            })
            .await;
        running.lock().unwrap().remove(&id);
    });
}

/// Aborts a task when the scope that spawned it ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Tells systemd (Type=notify) about our state; a no-op elsewhere.
fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() {
        let _ = sock.send_to(state.as_bytes(), path);
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// The log streams' states (binary log, WAL), as their threads publish them.
#[derive(Clone)]
struct LogStates {
    binlog: tokio::sync::watch::Receiver<pb::BinlogState>,
    wal: tokio::sync::watch::Receiver<pb::BinlogState>,
}

/// Sends a stream's state to the controller each time it changes.
async fn send_changes(
    mut state: tokio::sync::watch::Receiver<pb::BinlogState>,
    tx: mpsc::Sender<pb::AgentMessage>,
    body: fn(pb::BinlogState) -> pb::agent_message::Body,
) {
    while state.changed().await.is_ok() {
        let now = state.borrow_and_update().clone();
        let msg = pb::AgentMessage {
            body: Some(body(now)),
        };
        if tx.send(msg).await.is_err() {
            return;
        }
    }
}
