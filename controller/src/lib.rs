//! cairn-controller: the fleet's center. It holds the [`catalog`], runs the
//! fleet's CA ([`pki`]), serves agents and cairnctl over mutual-TLS gRPC
//! ([`agent_service`], [`admin_service`]), writes what agents back up into
//! its repository, and serves the status page ([`web`]).

pub mod access;
pub mod admin_service;
pub mod agent_service;
pub mod alerts;
pub mod audit;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod dashboard;
pub mod fleet;
#[cfg(test)]
mod gc_model;
pub mod health;
pub mod ingest;
pub mod notify;
pub mod pki;
pub mod policy;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod scheduler;
pub mod store;
pub mod strategy;
pub mod summary;
pub mod web;

use std::collections::{HashMap, HashSet};
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{bail, Context};
use cairn_proto::admin::v1::admin_service_server::AdminServiceServer;
use cairn_proto::agent::v1::agent_service_server::AgentServiceServer;
use cairn_repo::repository::Repository;

use crate::config::{Config, RepositoryConfig};
use crate::fleet::Fleet;

/// How long SIGTERM waits for in-flight calls before the process exits.
const DRAIN: Duration = Duration::from_secs(20);
/// Largest gRPC message accepted from anyone, before any check of who sent
/// it (pack pieces are 1 MiB; an inventory of thousands of domains a few).
const MAX_INBOUND: usize = 8 << 20;
/// Largest message sent (ReadPack answers).
const MAX_OUTBOUND: usize = 64 << 20;

/// What `cairn-controller init` needs.
pub struct InitOptions {
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    pub web_listen: SocketAddr,
    pub public_url: String,
    /// Names and addresses for the server certificate.
    pub sans: Vec<String>,
    pub repository: RepositoryConfig,
}

fn mkdir_private(p: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(p).with_context(|| p.display().to_string())?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// Reads a secret from a file that others cannot read, else from `env`.
pub fn read_secret(file: Option<&Path>, env: &str) -> anyhow::Result<Vec<u8>> {
    if let Some(f) = file {
        return Ok(cairn_repo::secret::read_file(f)?);
    }
    match std::env::var(env) {
        Ok(v) if !v.is_empty() => Ok(v.into_bytes()),
        _ => bail!("no passphrase: set passphrase_file in the config, or ${env}"),
    }
}

/// Creates the CA, the server and admin certificates, `controller.toml`,
/// `cairnctl.toml`, and the repository if it does not exist yet.
pub fn init(o: &InitOptions) -> anyhow::Result<PathBuf> {
    let cfg_path = o.state_dir.join("controller.toml");
    if cfg_path.exists() {
        bail!(
            "{} exists: this controller is already initialized",
            cfg_path.display()
        );
    }
    mkdir_private(&o.state_dir)?;
    let pki_dir = o.state_dir.join("pki");
    mkdir_private(&pki_dir)?;
    let ca = pki::Ca::create()?;
    ca.save(&pki_dir)?;
    let server = ca.issue_server(&o.sans)?;
    pki::write(
        &pki_dir.join("server.pem"),
        &format!("{}{}", server.cert_pem, ca.cert_pem),
        0o644,
    )?;
    pki::write(&pki_dir.join("server.key"), &server.key_pem, 0o600)?;
    let admin = ca.issue_client("admin")?;
    pki::write(
        &pki_dir.join("admin.pem"),
        &format!("{}{}", admin.cert_pem, ca.cert_pem),
        0o644,
    )?;
    pki::write(&pki_dir.join("admin.key"), &admin.key_pem, 0o600)?;
    let admin_sha = cairn_net::fingerprint(&cairn_net::cert_der(&admin.cert_pem, "admin")?);
    pki::write(
        &pki_dir.join("admins"),
        &format!("{admin_sha} admin\n"),
        0o600,
    )?;

    let cfg = Config {
        listen: o.listen,
        web_listen: o.web_listen,
        web_token_file: None,
        public_url: o.public_url.clone(),
        state_dir: o.state_dir.clone(),
        repository: o.repository.clone(),
        heartbeat_seconds: 15,
        job_timeout: "12h".into(),
        scheduler: Default::default(),
        alerts: Default::default(),
        notify: Vec::new(),
    };
    let passphrase = read_secret(o.repository.passphrase_file.as_deref(), "CAIRN_PASSPHRASE")?;
    let storage = open_storage(&o.repository)?;
    match Repository::open(storage.clone(), &passphrase) {
        Ok(_) => tracing::info!(repo = %storage.location(), "using the existing repository"),
        Err(cairn_repo::Error::NotARepository { .. }) => {
            Repository::init(
                storage.clone(),
                &passphrase,
                Default::default(),
                Default::default(),
            )?;
            tracing::info!(repo = %storage.location(), "created the repository");
        }
        Err(e) => return Err(e.into()),
    }
    pki::write(&cfg_path, &toml::to_string_pretty(&cfg)?, 0o600)?;
    let ctl = format!(
        "# cairnctl's connection to this controller (CAIRN_CONFIG, or ~/.config/cairn/cairnctl.toml)\n\
         controller = {:?}\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
        o.public_url,
        pki_dir.join("ca.pem").display().to_string(),
        pki_dir.join("admin.pem").display().to_string(),
        pki_dir.join("admin.key").display().to_string(),
    );
    pki::write(&o.state_dir.join("cairnctl.toml"), &ctl, 0o600)?;
    Ok(cfg_path)
}

fn open_storage(r: &RepositoryConfig) -> anyhow::Result<Arc<dyn cairn_repo::storage::Storage>> {
    let env: HashMap<String, String> = match &r.env_file {
        Some(f) => config::read_env_file(f)?.into_iter().collect(),
        None => HashMap::new(),
    };
    Ok(cairn_repo::storage::open_with_vars(&r.location, |k| {
        env.get(k).cloned().or_else(|| std::env::var(k).ok())
    })?)
}

/// Tells systemd (Type=notify) the controller is ready; a no-op elsewhere.
pub fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(_) => return,
    };
    let _ = sock.send_to(state.as_bytes(), path);
}

/// Opens everything and serves until SIGTERM/SIGINT, then drains.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    clock::install_from_env()?;
    let passphrase = read_secret(
        cfg.repository.passphrase_file.as_deref(),
        "CAIRN_PASSPHRASE",
    )?;
    let storage = open_storage(&cfg.repository)?;
    let holder = format!("the cairn controller at {}", cfg.public_url);
    let (repo, lease, presigns) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let repo = Repository::open(storage, &passphrase)?;
        // Held until the controller stops: `cairnctl repo gc|forget` must not
        // delete behind the index this controller serves.
        let lease = cairn_repo::lock::Lock::lease(repo.storage().clone(), &holder)?;
        repo.load_index()?;
        // Agents may have left packs (direct mode): verified like any upload.
        let adopted = repo.adopt_verified_packs()?;
        if adopted > 0 {
            tracing::info!(packs = adopted, "indexed packs left by interrupted backups");
        }
        let presigns = matches!(
            repo.storage().presign_put("probe", Duration::from_secs(1)),
            Ok(Some(_))
        );
        Ok((repo, lease, presigns))
    })
    .await??;
    let repo = Arc::new(repo);
    let pki_dir = cfg.pki_dir();
    let ca = pki::Ca::load(&pki_dir)?;
    let server_id = cairn_net::Identity {
        chain_pem: std::fs::read_to_string(pki_dir.join("server.pem"))?,
        key_pem: std::fs::read_to_string(pki_dir.join("server.key"))?,
    };
    let catalog = catalog::Catalog::open(&cfg.state_dir.join("catalog"))?;
    let users = fleet::load_users(&pki_dir, &catalog)?;
    let audit = audit::AuditLog::open(&cfg.state_dir.join("audit.jsonl"), catalog.audit_head()?);
    let agents_by_cert = catalog
        .agents()?
        .into_iter()
        .filter(|a| !a.revoked)
        .map(|a| (a.cert_sha256, a.id))
        .collect();
    let tls = cairn_net::server_config(&ca.cert_pem, &server_id)?;
    let ingest = ingest::IngestLimit::new(cfg.scheduler.ingest_bytes_per_second()?);
    cfg.alerts.limits()?;
    cfg.alerts.storage_limit()?;
    let channels = notify::Channels::open(&cfg.notify)?;
    let web_token = cfg
        .web_token_file
        .as_deref()
        .map(notify::read_secret_file)
        .transpose()?;
    let fleet = Arc::new(Fleet {
        ingest,
        ca_sha256: ca.sha256(),
        ca,
        catalog,
        store: store::Store::new(repo.clone()),
        repo,
        users: RwLock::new(users),
        audit,
        agents_by_cert: RwLock::new(agents_by_cert),
        sessions: Mutex::new(HashMap::new()),
        grants: Mutex::new(HashMap::new()),
        pending: Mutex::new(HashMap::new()),
        metrics: Default::default(),
        presigns,
        generation: AtomicU64::new(0),
        started_at: fleet::now(),
        pumping: Default::default(),
        channels,
        web_token,
        notify_wake: Default::default(),
        binlog: Default::default(),
        wal: Default::default(),
        cfg: cfg.clone(),
    });

    let grpc = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("listen {}", cfg.listen))?;
    let web = tokio::net::TcpListener::bind(cfg.web_listen)
        .await
        .with_context(|| format!("web_listen {}", cfg.web_listen))?;
    let grpc_addr = grpc.local_addr()?;
    let web_addr = web.local_addr()?;
    // Port 0 picks a free port; tools and tests read the real ones here.
    // grpc.addr is the readiness mark, so it comes last, and each file
    // appears whole (a reader never sees an empty or a previous run's port).
    publish_addr(&cfg.state_dir.join("web.addr"), web_addr)?;
    publish_addr(&cfg.state_dir.join("grpc.addr"), grpc_addr)?;
    tracing::info!(grpc = %grpc_addr, web = %format!("http://{web_addr}/"), repo = %fleet.repo.storage().location(), data_path = ?cfg.repository.data_path, "controller listening");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let web_stop = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.changed().await;
        }
    };
    let web_task = tokio::spawn(
        axum::serve(web, web::router(fleet.clone()))
            .with_graceful_shutdown(web_stop)
            .into_future(),
    );
    let grpc_stop = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.changed().await;
        }
    };
    let incoming = cairn_net::incoming(grpc, tls);
    let grpc_task = tokio::spawn(
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(
                AgentServiceServer::new(agent_service::AgentApi(fleet.clone()))
                    .max_decoding_message_size(MAX_INBOUND)
                    .max_encoding_message_size(MAX_OUTBOUND),
            )
            .add_service(AdminServiceServer::new(admin_service::AdminApi(
                fleet.clone(),
            )))
            .serve_with_incoming_shutdown(incoming, grpc_stop),
    );
    let expiry_task = tokio::spawn(scheduler::run(fleet.clone()));
    let notify_task = tokio::spawn(notify_loop(fleet.clone()));
    sd_notify("READY=1");
    shutdown_signal().await;
    expiry_task.abort();
    notify_task.abort();
    tracing::info!("stopping: draining for up to {}s", DRAIN.as_secs());
    sd_notify("STOPPING=1");
    // Sessions are endless streams: closing them lets the drain finish.
    fleet.sessions.lock().unwrap().clear();
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN, async {
        let _ = grpc_task.await;
        let _ = web_task.await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("drain deadline passed; exiting with calls in flight");
    }
    fleet.catalog.flush()?;
    tokio::task::spawn_blocking(move || drop(lease)).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Delivers notifications: woken when alerts change, and every few seconds
/// for retries and digests.
async fn notify_loop(f: Arc<fleet::Fleet>) {
    if f.channels.0.is_empty() {
        return;
    }
    loop {
        notify::deliver(&f).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), f.notify_wake.notified()).await;
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// What `rebuild-catalog` found in the repository.
#[derive(Debug, Default)]
pub struct Rebuilt {
    pub snapshots_added: usize,
    pub snapshots_known: usize,
    /// Snapshots written by `cairnctl repo` (no agent): not fleet snapshots.
    pub snapshots_skipped: usize,
}

/// Re-reads every snapshot in the repository into the catalog (SPEC CAT-4):
/// the catalog is a cache of the repository plus the controller's own state.
/// Fleet snapshots name their agent and job, so each comes back under the
/// agent that made it. Refused while a controller holds the repository.
pub fn rebuild_catalog(cfg: &Config) -> anyhow::Result<Rebuilt> {
    let passphrase = read_secret(
        cfg.repository.passphrase_file.as_deref(),
        "CAIRN_PASSPHRASE",
    )?;
    let storage = open_storage(&cfg.repository)?;
    if let Some(l) = cairn_repo::lock::lease(&*storage)? {
        bail!(
            "the repository is held by {} (pid {} on {}); stop it first",
            l.holder.unwrap_or_default(),
            l.pid,
            l.host
        );
    }
    let repo = Repository::open(storage, &passphrase)?;
    let catalog = catalog::Catalog::open(&cfg.state_dir.join("catalog"))
        .context("opening the catalog (is the controller running? stop it first)")?;
    let known: HashSet<String> = catalog.snapshots(None)?.into_iter().map(|s| s.id).collect();
    let mut r = Rebuilt::default();
    for (id, snap) in repo.snapshots()? {
        let Some(agent) = snap.agent.clone() else {
            r.snapshots_skipped += 1;
            continue;
        };
        if known.contains(&id.to_string()) {
            r.snapshots_known += 1;
            continue;
        }
        catalog.add_snapshot(&catalog::SnapshotRecord {
            id: id.to_string(),
            domain: snap.domain.clone(),
            agent_id: agent,
            time: snap.time.timestamp(),
            kind: snap.kind.to_string(),
            content: snap.content.to_string(),
            total_bytes: snap.stats.total_bytes,
            stored_bytes: snap.stats.stored_bytes,
            run_id: snap.run.clone().unwrap_or_default(),
        })?;
        r.snapshots_added += 1;
    }
    catalog.flush()?;
    Ok(r)
}

/// A unix time for messages: `2026-11-30 14:05:00 UTC`.
pub fn fmt_time(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| t.to_string())
}

/// Writes `addr` to `path` through a rename, so the file is whole when it appears.
fn publish_addr(path: &std::path::Path, addr: std::net::SocketAddr) -> std::io::Result<()> {
    let tmp = path.with_extension("addr.tmp");
    std::fs::write(&tmp, addr.to_string())?;
    std::fs::rename(&tmp, path)
}
