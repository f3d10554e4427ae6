//! The controller's shared state: catalog, repository, PKI, live sessions,
//! and what each running job may read or write.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use cairn_proto::agent::v1 as pb;
use cairn_repo::id::Id;
use cairn_repo::pack::BlobType;
use cairn_repo::repository::Repository;
use cairn_repo::snapshot::Snapshot;
use tokio::sync::mpsc;
use tonic::Status;

use crate::catalog::{Catalog, JobRecord, JobState};
use crate::config::{Config, DataPath};
use crate::pki::Ca;
use crate::store::{JobCtx, Store};

/// One agent's open session: where its jobs go.
pub struct Session {
    pub generation: u64,
    pub tx: mpsc::Sender<Result<pb::ControllerMessage, Status>>,
    pub connected_at: i64,
}

/// What a dispatched job may do through the data-path calls.
pub struct Grant {
    pub job_id: String,
    pub agent_id: String,
    pub domain: String,
    pub backup: bool,
    /// What a backup's snapshot must hold (files or a database dump).
    pub content: cairn_repo::snapshot::Content,
    /// The run a backup belongs to ("" for none).
    pub run_id: String,
    /// What it may read with ReadPack: per pack, the granted blobs' byte
    /// ranges (start, end), sorted and merged.
    pub ranges: HashMap<Id, Vec<(u64, u64)>>,
    /// The tree it stands on (a backup's parent, a restore's snapshot).
    pub roots: Vec<Id>,
}

impl Grant {
    /// The job as the store sees it; `host` is the catalog's name for the agent.
    pub fn ctx<'a>(&'a self, host: &'a str) -> JobCtx<'a> {
        JobCtx {
            job_id: &self.job_id,
            agent_id: &self.agent_id,
            host,
            domain: &self.domain,
            content: self.content,
            run_id: &self.run_id,
        }
    }
}

#[derive(Default)]
pub struct Metrics {
    /// (kind, outcome) → jobs ended.
    pub jobs: Mutex<HashMap<(String, String), u64>>,
    pub job_seconds_sum: Mutex<f64>,
    pub job_seconds_count: AtomicU64,
    pub bytes_received: AtomicU64,
    pub packs_received: AtomicU64,
    /// Packs and snapshots refused because they failed verification.
    pub refused_objects: AtomicU64,
    pub blobs_asked: AtomicU64,
    pub blobs_known: AtomicU64,
    /// The controller-clock time of the scheduler's last finished tick.
    pub scheduler_tick: std::sync::atomic::AtomicI64,
    pub scheduler_ticks: AtomicU64,
    /// Maintenance (retention and gc) running now.
    pub maintenance_running: std::sync::atomic::AtomicBool,
    pub maintenance_runs: AtomicU64,
    pub retention_forgotten: AtomicU64,
    pub gc_packs_deleted: AtomicU64,
    pub gc_bytes_freed: AtomicU64,
    /// Microseconds uploads waited for the ingest cap.
    pub ingest_throttled_micros: AtomicU64,
    /// (channel, sent|failed|dropped) → notifications.
    pub notifications: crate::notify::NotifyCounts,
}

impl Metrics {
    pub fn count_notify(&self, channel: &str, outcome: &'static str, n: u64) {
        *self
            .notifications
            .0
            .lock()
            .unwrap()
            .entry((channel.to_string(), outcome))
            .or_default() += n;
    }
}

/// A presigned pack's verification, waiting for its PUT URL to expire.
pub type PendingCheck = tokio::task::JoinHandle<Result<usize, crate::store::StoreError>>;

pub struct Fleet {
    pub cfg: Config,
    pub catalog: Catalog,
    pub repo: Arc<Repository>,
    /// The one writer of the repository's index and snapshots.
    pub store: Store,
    pub ca: Ca,
    pub ca_sha256: String,
    /// cairnctl certificates by fingerprint: the bootstrap admin
    /// (pki/admins) and the users of the catalog not revoked.
    pub users: RwLock<HashMap<String, crate::access::Caller>>,
    pub audit: crate::audit::AuditLog,
    /// Certificate fingerprint → agent id, for agents not revoked.
    pub agents_by_cert: RwLock<HashMap<String, String>>,
    pub sessions: Mutex<HashMap<String, Session>>,
    pub grants: Mutex<HashMap<String, Arc<Grant>>>,
    /// Direct mode on S3: per job, verifications of presigned packs waiting
    /// for their PUTs to expire; the job's commit waits for them.
    pub pending: Mutex<HashMap<String, Vec<PendingCheck>>>,
    pub metrics: Metrics,
    /// The repository's storage issues presigned PUTs (S3 does; a directory
    /// does not).
    pub presigns: bool,
    pub generation: AtomicU64,
    pub started_at: i64,
    /// One dispatch pass at a time, so the limits hold.
    pub pumping: tokio::sync::Mutex<()>,
    /// The fleet-wide cap on pack bytes streamed in; None: no cap.
    pub ingest: Option<crate::ingest::IngestLimit>,
    /// Notification channels (`[[notify]]`).
    pub channels: crate::notify::Channels,
    /// The token the web listener asks for (`web_token_file`); None: open
    /// (loopback only).
    pub web_token: Option<String>,
    /// Wakes the notifier when alerts changed.
    pub notify_wake: tokio::sync::Notify,
    /// What each agent last said of its binary log stream (sent again at
    /// every session's start).
    pub binlog: Mutex<HashMap<String, BinlogStream>>,
    /// The same for each agent's PostgreSQL WAL stream.
    pub wal: Mutex<HashMap<String, BinlogStream>>,
}

/// An agent's binary log stream as it reported it (bounded, cleaned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinlogStream {
    /// off, unavailable or streaming.
    pub state: String,
    pub detail: String,
    pub format: String,
}

/// The certificates cairnctl users hold: the bootstrap admin of
/// `pki/admins` (fingerprint and name per line) and the catalog's users.
pub fn load_users(
    pki_dir: &std::path::Path,
    catalog: &Catalog,
) -> anyhow::Result<HashMap<String, crate::access::Caller>> {
    use crate::access::{Caller, Role};
    let mut out = HashMap::new();
    for line in std::fs::read_to_string(pki_dir.join("admins"))
        .unwrap_or_default()
        .lines()
    {
        let mut w = line.split_whitespace();
        if let Some(sha) = w.next() {
            let name = w.next().unwrap_or("admin").to_string();
            out.insert(
                sha.to_string(),
                Caller {
                    name,
                    role: Role::Admin,
                },
            );
        }
    }
    for u in catalog.users()?.into_iter().filter(|u| !u.revoked) {
        out.insert(
            u.cert_sha256,
            Caller {
                name: u.name,
                role: u.role,
            },
        );
    }
    Ok(out)
}

/// Unix seconds on the controller's clock (see [`crate::clock`]).
pub fn now() -> i64 {
    crate::clock::now()
}

/// A catalog or repository failure as a gRPC status, logged once here.
pub fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "internal error");
    Status::internal(e.to_string())
}

impl Fleet {
    /// Records an agent's binary log state; anything but the three known
    /// states counts as unavailable.
    pub fn set_binlog(&self, agent: &str, b: &pb::BinlogState) {
        Self::record_stream(&self.binlog, agent, b);
    }

    /// Records an agent's WAL stream state, as [`Fleet::set_binlog`].
    pub fn set_wal(&self, agent: &str, b: &pb::BinlogState) {
        Self::record_stream(&self.wal, agent, b);
    }

    fn record_stream(map: &Mutex<HashMap<String, BinlogStream>>, agent: &str, b: &pb::BinlogState) {
        let state = match b.state.as_str() {
            s @ ("off" | "streaming") => s,
            _ => "unavailable",
        };
        let rec = BinlogStream {
            state: state.into(),
            detail: crate::agent_service::clean_text(&b.detail, 1024),
            format: crate::agent_service::clean_text(&b.format, 16),
        };
        map.lock().unwrap().insert(agent.to_string(), rec);
    }

    /// Whether an agent streams its binary log or its WAL now.
    pub fn streams_binlog(&self, agent: &str) -> bool {
        [&self.binlog, &self.wal].iter().any(|m| {
            m.lock()
                .unwrap()
                .get(agent)
                .is_some_and(|b| b.state == "streaming")
        })
    }

    /// The agents whose binary log or WAL stream is in `state`, with its
    /// detail (a WAL stream's prefixed so).
    pub fn log_streams_in(&self, state: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (map, prefix) in [(&self.binlog, ""), (&self.wal, "PostgreSQL WAL: ")] {
            for (a, b) in map.lock().unwrap().iter() {
                if b.state != state {
                    continue;
                }
                match out.iter_mut().find(|(x, _)| x == a) {
                    Some((_, d)) => *d = format!("{d}; {prefix}{}", b.detail),
                    None => out.push((a.clone(), format!("{prefix}{}", b.detail))),
                }
            }
        }
        out.sort();
        out
    }

    /// Bytes of blobs the repository's index holds.
    pub fn stored_bytes(&self) -> u64 {
        self.repo.index().stored_bytes()
    }

    /// The repository's storage now, (bytes used, capacity): the index's
    /// bytes against `[alerts] storage_limit` when set, else the file
    /// system of a local repository; None for S3 without a limit.
    pub fn storage_use(&self) -> anyhow::Result<Option<(u64, u64)>> {
        if let Some(limit) = self.cfg.alerts.storage_limit()? {
            return Ok(Some((self.stored_bytes(), limit)));
        }
        let location = &self.cfg.repository.location;
        if location.starts_with("s3://") {
            return Ok(None);
        }
        let st = rustix::fs::statvfs(location.as_str())
            .map_err(|e| anyhow::anyhow!("statvfs {location}: {e}"))?;
        let capacity = st.f_blocks.saturating_mul(st.f_frsize);
        let used = st
            .f_blocks
            .saturating_sub(st.f_bfree)
            .saturating_mul(st.f_frsize);
        Ok(Some((used, capacity)))
    }

    /// Certificates the fleet runs on and when each expires: the CA's and
    /// the controller's (read from their files), each enrolled agent's.
    pub fn certificates(&self) -> anyhow::Result<Vec<crate::alerts::Certificate>> {
        let mut out = Vec::new();
        let pki = self.cfg.pki_dir();
        for (file, what) in [
            ("ca.pem", "CA certificate"),
            ("server.pem", "server certificate"),
        ] {
            let pem = std::fs::read_to_string(pki.join(file))?;
            out.push(crate::alerts::Certificate {
                owner: crate::alerts::CONTROLLER.into(),
                what: what.into(),
                not_after: crate::pki::not_after(&pem)?,
            });
        }
        for a in self.catalog.agents()?.into_iter().filter(|a| !a.revoked) {
            out.push(crate::alerts::Certificate {
                owner: a.id,
                what: "agent certificate".into(),
                not_after: crate::pki::leaf_not_after(a.enrolled_at),
            });
        }
        Ok(out)
    }

    pub fn data_path(&self) -> DataPath {
        self.cfg.repository.data_path
    }

    /// The host name the catalog holds for an agent (its id if unknown).
    pub fn hostname_of(&self, agent: &str) -> String {
        match self.catalog.agent(agent) {
            Ok(Some(a)) if !a.hostname.is_empty() => a.hostname,
            _ => agent.to_string(),
        }
    }

    pub fn is_online(&self, agent: &str) -> bool {
        self.sessions.lock().unwrap().contains_key(agent)
    }

    /// Ends a job and forgets its grant; counts it for /metrics.
    pub fn finish(
        &self,
        job_id: &str,
        state: JobState,
        snapshot: Option<String>,
        error: Option<String>,
    ) -> Result<JobRecord, Status> {
        self.grants.lock().unwrap().remove(job_id);
        self.pending.lock().unwrap().remove(job_id);
        self.store.end_job(job_id);
        let j = self
            .catalog
            .finish_job(job_id, state, snapshot, error.clone(), now())
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let outcome = format!("{state:?}").to_lowercase();
        *self
            .metrics
            .jobs
            .lock()
            .unwrap()
            .entry((j.kind.clone(), outcome))
            .or_default() += 1;
        if let (Some(s), Some(f)) = (j.started_at, j.finished_at) {
            *self.metrics.job_seconds_sum.lock().unwrap() += (f - s).max(0) as f64;
            self.metrics
                .job_seconds_count
                .fetch_add(1, Ordering::Relaxed);
        }
        if state == JobState::Succeeded && j.spec.content == "binlog" {
            if let Err(e) = crate::scheduler::after_shipment(self, &j) {
                tracing::warn!(job = job_id, agent = %j.agent_id, error = %e, "forgetting older binary log shipments");
            }
            // Every few seconds per server: the success is not news.
            return Ok(j);
        }
        match &error {
            Some(e) => {
                tracing::warn!(job = job_id, agent = %j.agent_id, state = ?state, error = %e, "job ended")
            }
            None => tracing::info!(job = job_id, agent = %j.agent_id, state = ?state, "job ended"),
        }
        Ok(j)
    }

    /// Asks the agent running `job_id` to stop it (if it is connected).
    pub async fn tell_cancel(&self, agent: &str, job_id: &str) {
        let tx = self
            .sessions
            .lock()
            .unwrap()
            .get(agent)
            .map(|s| s.tx.clone());
        if let Some(tx) = tx {
            let _ = tx
                .send(Ok(pb::ControllerMessage {
                    body: Some(pb::controller_message::Body::Cancel(pb::CancelJob {
                        job_id: job_id.to_string(),
                    })),
                }))
                .await;
        }
    }

    /// Fails every job running for longer than `timeout` as of `now`: a hung
    /// or hostile agent must not hold its grant and gc pins forever.
    pub async fn expire_jobs(&self, timeout: std::time::Duration, now: i64) -> usize {
        let limit = timeout.as_secs().min(i64::MAX as u64) as i64;
        let late: Vec<JobRecord> = match self.catalog.open_jobs() {
            Ok(js) => js
                .into_iter()
                .filter(|j| {
                    j.state == JobState::Running
                        && j.started_at.is_some_and(|s| now.saturating_sub(s) >= limit)
                })
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "reading running jobs");
                return 0;
            }
        };
        for j in &late {
            self.tell_cancel(&j.agent_id, &j.id).await;
            let _ = self.finish(
                &j.id,
                JobState::Failed,
                None,
                Some(format!(
                    "timed out: still running after {} (job_timeout)",
                    humantime::format_duration(timeout)
                )),
            );
        }
        late.len()
    }

    /// Sends queued jobs that may start now to their agents, within the
    /// scheduler's limits (a new session, a new job, a freed slot).
    pub async fn pump(self: &Arc<Self>) {
        let _one = self.pumping.lock().await;
        if let Err(e) = crate::scheduler::pump(self, now()).await {
            tracing::error!(error = %e, "dispatching queued jobs");
        }
    }

    /// Fails a job with no retry: its failure is final (an agent away too long).
    pub fn give_up(&self, job_id: &str, error: String) {
        let _ = self.catalog.clear_retries(job_id);
        let _ = self.finish(job_id, JobState::Failed, None, Some(error));
    }

    /// Builds a job's message and hands it to its agent's session; a job
    /// whose agent is offline stays queued. A job that cannot be built fails.
    pub async fn dispatch(self: &Arc<Self>, job: JobRecord) {
        let tx = match self.sessions.lock().unwrap().get(&job.agent_id) {
            Some(s) => s.tx.clone(),
            None => return,
        };
        let me = self.clone();
        let j = job.clone();
        let built = tokio::task::spawn_blocking(move || me.build_job(&j)).await;
        let (msg, grant) = match built {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                let _ = self.finish(&job.id, JobState::Failed, None, Some(e));
                return;
            }
            Err(e) => {
                let _ = self.finish(&job.id, JobState::Failed, None, Some(e.to_string()));
                return;
            }
        };
        if self.catalog.start_job(&job.id, now()).is_err() {
            return; // cancelled meanwhile
        }
        // Before the agent hears of the job: gc keeps what it stands on.
        self.store
            .begin_job(&job.id, &job.agent_id, grant.roots.clone());
        self.grants
            .lock()
            .unwrap()
            .insert(job.id.clone(), Arc::new(grant));
        let sent = tx
            .send(Ok(pb::ControllerMessage {
                body: Some(pb::controller_message::Body::Job(msg)),
            }))
            .await;
        if sent.is_err() {
            let _ = self.finish(
                &job.id,
                JobState::Failed,
                None,
                Some("the agent disconnected before the job started".into()),
            );
        } else {
            tracing::info!(job = %job.id, agent = %job.agent_id, kind = %job.kind, domain = %job.domain, "job dispatched");
        }
    }

    fn build_job(&self, job: &JobRecord) -> Result<(pb::Job, Grant), String> {
        let access = self.repo.access();
        let mut msg = pb::Job {
            job_id: job.id.clone(),
            domain: job.domain.clone(),
            repository: Some(pb::RepositoryAccess {
                master_key: access.master_key,
                config_json: access.config_json,
            }),
            ..Default::default()
        };
        let mut grant = Grant {
            job_id: job.id.clone(),
            agent_id: job.agent_id.clone(),
            domain: job.domain.clone(),
            backup: job.kind == "backup",
            content: match job.spec.content.as_str() {
                "database" => cairn_repo::snapshot::Content::Database,
                "binlog" => cairn_repo::snapshot::Content::Binlog,
                _ => cairn_repo::snapshot::Content::Files,
            },
            run_id: job.spec.run_id.clone(),
            ranges: HashMap::new(),
            roots: Vec::new(),
        };
        let readable = match job.kind.as_str() {
            "backup" => {
                msg.kind = pb::JobKind::Backup as i32;
                msg.backup_kind = match job.spec.backup_kind.as_str() {
                    "full" => pb::BackupKind::Full,
                    "differential" => pb::BackupKind::Differential,
                    _ => pb::BackupKind::Incremental,
                } as i32;
                if job.spec.content == "database" {
                    msg.content = "database".into();
                    msg.cms_profile = job.spec.cms_profile.clone();
                } else if job.spec.content == "binlog" {
                    msg.content = "binlog".into();
                } else {
                    msg.excludes = job.spec.excludes.clone();
                }
                if self.data_path() == DataPath::Direct {
                    msg.storage = Some(pb::StorageGrant {
                        location: self.cfg.repository.location.clone(),
                        env: Default::default(),
                        presigned: self.presigns,
                    });
                }
                // A dump's parent is its base (see `dump_base`): it dedups
                // through HaveBlobs, reuses grouped blobs only of the base,
                // and reads the base's trees to store its blob lists as
                // edits of the base's.
                let parent = if job.spec.content == "database" {
                    self.dump_base(job)?
                } else {
                    self.parent_of(job)?
                };
                parent.map(|(id, stored, snap)| {
                    msg.snapshot_id = id.to_string();
                    msg.snapshot = stored;
                    (vec![snap.tree], true)
                })
            }
            "restore" => {
                msg.kind = pb::JobKind::Restore as i32;
                msg.target = job.spec.target.clone();
                msg.paths = job.spec.paths.clone();
                if job.spec.content == "database" {
                    msg.content = "database".into();
                    msg.tables = job.spec.tables.clone();
                    msg.into_database = job.spec.into_database.clone();
                }
                msg.test_restore = job.spec.test;
                let id: Id = job
                    .spec
                    .snapshot_id
                    .parse()
                    .map_err(|_| format!("bad snapshot id {:?}", job.spec.snapshot_id))?;
                let (stored, snap) = self.load_snapshot(&id)?;
                msg.snapshot_id = id.to_string();
                msg.snapshot = stored;
                msg.in_place = job.spec.in_place;
                msg.dry_run = job.spec.dry_run;
                let mut trees = vec![snap.tree];
                if !job.spec.log_snapshot_id.is_empty() {
                    let id: Id =
                        job.spec.log_snapshot_id.parse().map_err(|_| {
                            format!("bad snapshot id {:?}", job.spec.log_snapshot_id)
                        })?;
                    let (stored, log) = self.load_snapshot(&id)?;
                    if log.content != cairn_repo::snapshot::Content::Binlog {
                        return Err(format!("snapshot {id} is not a shipped binary log"));
                    }
                    msg.log_snapshot_id = id.to_string();
                    msg.log_snapshot = stored;
                    msg.stop_at = job.spec.stop_at;
                    trees.push(log.tree);
                }
                if job.spec.in_place {
                    let keep = self
                        .cfg
                        .scheduler
                        .keep_rollback()
                        .map_err(|e| e.to_string())?;
                    msg.keep_rollback_until = now().saturating_add(keep);
                }
                // A preview compares trees with the live site: no file data.
                Some((trees, job.spec.dry_run))
            }
            "rollback" => {
                msg.kind = pb::JobKind::Rollback as i32;
                msg.rollback_of = job.spec.rollback_of.clone();
                msg.target = job.spec.target.clone();
                // Nothing to read or write in the repository.
                msg.repository = None;
                None
            }
            other => return Err(format!("unknown job kind {other:?}")),
        };
        if let Some((trees, trees_only)) = readable {
            grant.roots.extend(&trees);
            let (segment, ranges) = self.read_grant(&trees, trees_only)?;
            msg.index_segment = segment;
            grant.ranges = ranges;
        }
        Ok((msg, grant))
    }

    /// The parent a backup compares against: the newest file snapshot of
    /// the same domain *of the same agent* (incremental) or the newest full
    /// one (differential). A parent forgotten from the repository is passed
    /// over (logged); with none left the backup runs as a full one.
    fn parent_of(&self, job: &JobRecord) -> Result<Option<(Id, Vec<u8>, Snapshot)>, String> {
        if job.spec.backup_kind == "full" {
            return Ok(None);
        }
        let snaps = self
            .catalog
            .snapshots(Some(&job.domain))
            .map_err(|e| e.to_string())?;
        let content = match job.spec.content.as_str() {
            "binlog" => "binlog",
            _ => "files",
        };
        let candidates = snaps.iter().rev().filter(|s| {
            s.agent_id == job.agent_id
                && s.content == content
                && (job.spec.backup_kind != "differential" || s.kind == "full")
        });
        for base in candidates {
            let Ok(id) = base.id.parse::<Id>() else {
                continue;
            };
            match self.load_snapshot(&id) {
                Ok((stored, snap)) => return Ok(Some((id, stored, snap))),
                Err(e) => {
                    tracing::warn!(job = %job.id, domain = %job.domain, snapshot = %id, error = %e,
                        "parent snapshot is gone from the repository (forgotten?); trying an older one");
                }
            }
        }
        Ok(None)
    }

    /// The tree of the newest dump of the same domain by the same agent.
    /// Its grouped blobs (see `cairn_repo::group`) are the only ones a dump
    /// may name besides those it uploads: a group holds one site's blobs,
    /// and a restore is granted whole groups.
    fn dump_base(&self, job: &JobRecord) -> Result<Option<(Id, Vec<u8>, Snapshot)>, String> {
        let snaps = self
            .catalog
            .snapshots(Some(&job.domain))
            .map_err(|e| e.to_string())?;
        let newest = snaps
            .iter()
            .rev()
            .filter(|s| s.agent_id == job.agent_id && s.content == "database")
            .find_map(|s| {
                let id = s.id.parse::<Id>().ok()?;
                let (stored, snap) = self.load_snapshot(&id).ok()?;
                Some((id, stored, snap))
            });
        Ok(newest)
    }

    pub fn load_snapshot(&self, id: &Id) -> Result<(Vec<u8>, Snapshot), String> {
        let stored = self
            .repo
            .storage()
            .get(&format!("snapshots/{id}"))
            .map_err(|e| e.to_string())?;
        let plain = self
            .repo
            .key()
            .open(&stored, &format_args!("snapshot {id}"))
            .map_err(|e| e.to_string())?;
        let snap: Snapshot = serde_json::from_slice(&plain).map_err(|e| e.to_string())?;
        Ok((stored, snap))
    }

    /// An index segment of the blobs below `tree` (only its trees, for change
    /// detection) and their byte ranges in the packs: all a job may read.
    fn read_grant(
        &self,
        trees: &[Id],
        trees_only: bool,
    ) -> Result<(Vec<u8>, GrantedRanges), String> {
        let reachable = self.repo.reachable(trees).map_err(|e| e.to_string())?;
        let idx = self.repo.index();
        let mut by_pack: HashMap<Id, Vec<cairn_repo::pack::PackEntry>> = HashMap::new();
        for id in &reachable {
            let Some(loc) = idx.get(id) else {
                return Err(format!(
                    "blob {id} of the snapshot is missing from the index"
                ));
            };
            if trees_only && loc.kind != BlobType::Tree {
                continue;
            }
            by_pack
                .entry(loc.pack)
                .or_default()
                .push(cairn_repo::pack::PackEntry {
                    kind: loc.kind,
                    id: *id,
                    offset: loc.offset,
                    length: loc.length,
                    raw_length: loc.raw_length,
                    grouped: loc.grouped,
                });
        }
        let ranges = by_pack
            .iter()
            .map(|(pack, entries)| {
                let spans = entries
                    .iter()
                    .map(|e| (e.offset as u64, e.offset as u64 + e.length as u64));
                (*pack, merge_ranges(spans))
            })
            .collect();
        let list: Vec<_> = by_pack.into_iter().collect();
        Ok((
            cairn_repo::index::encode_segment(self.repo.key(), &list),
            ranges,
        ))
    }
}

type GrantedRanges = HashMap<Id, Vec<(u64, u64)>>;

/// Sorted, non-overlapping (start, end) ranges covering the given ones.
fn merge_ranges(spans: impl Iterator<Item = (u64, u64)>) -> Vec<(u64, u64)> {
    let mut spans: Vec<_> = spans.filter(|(s, e)| s < e).collect();
    spans.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(spans.len());
    for (s, e) in spans {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Keeps of `data`, read from `offset` in a pack, only the bytes inside
/// `granted`; every other byte becomes zero. None when no byte is granted.
/// Readers coalesce nearby blobs into one read, so a read may span gaps;
/// those gaps hold other jobs' blobs and are never served.
pub fn mask_to_granted(granted: &[(u64, u64)], offset: u64, mut data: Vec<u8>) -> Option<Vec<u8>> {
    let end = offset + data.len() as u64;
    let mut kept = 0u64;
    let mut pos = offset;
    for &(s, e) in granted {
        if e <= offset || s >= end {
            continue;
        }
        let (s, e) = (s.max(offset), e.min(end));
        data[(pos - offset) as usize..(s - offset) as usize].fill(0);
        kept += e - s;
        pos = e;
    }
    data[(pos - offset) as usize..].fill(0);
    (kept > 0).then_some(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_keep_only_granted_bytes() {
        let granted = merge_ranges([(10, 20), (15, 25), (40, 50), (5, 5)].into_iter());
        assert_eq!(granted, vec![(10, 25), (40, 50)]);
        let data: Vec<u8> = (0..60).map(|i| i as u8 + 1).collect();
        let got = mask_to_granted(&granted, 0, data.clone()).unwrap();
        for (i, b) in got.iter().enumerate() {
            let inside = (10..25).contains(&i) || (40..50).contains(&i);
            assert_eq!(*b, if inside { data[i] } else { 0 }, "byte {i}");
        }
        let got = mask_to_granted(&granted, 20, data[20..45].to_vec()).unwrap();
        assert_eq!(&got[..5], &data[20..25]);
        assert!(got[5..20].iter().all(|b| *b == 0));
        assert_eq!(&got[20..], &data[40..45]);
        assert!(mask_to_granted(&granted, 25, vec![7; 15]).is_none());
        assert!(mask_to_granted(&granted, 50, vec![7; 4]).is_none());
        assert!(mask_to_granted(&[], 0, vec![7; 4]).is_none());
    }
}
