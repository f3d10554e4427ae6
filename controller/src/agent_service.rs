//! `cairn.agent.v1.AgentService`: enrollment, sessions, and the data path.
//!
//! Every call but `Enroll` names its caller by the client certificate's
//! fingerprint; a revoked or unknown certificate is refused. Data-path calls
//! are further bound to a job the caller is running.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cairn_net::PeerInfo;
use cairn_proto::agent::v1 as pb;
use cairn_proto::agent::v1::agent_service_server::AgentService;
use cairn_repo::id::Id;
use cairn_repo::pack;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::catalog::{
    AgentRecord, AnalysisRecord, CatalogError, DaySampleRecord, DomainRecord, JobState, PlannedRun,
    SnapshotRecord,
};
use crate::fleet::{internal, now, Fleet, Grant, Session};
use crate::store::{self, StoreError};
use crate::strategy::{self, Activity, SizeClass};

/// Packs one PutPacks stream may have open at once (the agent sends them whole, one after another).
const MAX_OPEN_OBJECTS: usize = 4;
const MAX_READ: u64 = 64 << 20;
const MAX_ASK: usize = 100_000;

pub struct AgentApi(pub Arc<Fleet>);

fn peer<T>(req: &Request<T>) -> (String, Option<String>) {
    let info = req.extensions().get::<PeerInfo>();
    let addr = info
        .and_then(|p| p.addr)
        .map(|a| a.to_string())
        .unwrap_or_else(|| "?".into());
    (addr, info.and_then(|p| p.cert_sha256.clone()))
}

impl AgentApi {
    /// The agent a request comes from, or a refusal that is logged.
    fn agent<T>(&self, req: &Request<T>) -> Result<String, Status> {
        let (addr, cert) = peer(req);
        let Some(cert) = cert else {
            tracing::warn!(peer = %addr, "refused: no client certificate");
            return Err(Status::unauthenticated(
                "a client certificate is required (enroll this agent first)",
            ));
        };
        match self.0.agents_by_cert.read().unwrap().get(&cert) {
            Some(id) => Ok(id.clone()),
            None => {
                tracing::warn!(peer = %addr, cert = %&cert[..16], "refused: certificate of no enrolled agent (removed?)");
                Err(Status::permission_denied(
                    "this certificate belongs to no enrolled agent (it was removed, or is not an agent's)",
                ))
            }
        }
    }

    /// The grant of a job the caller runs.
    /// A direct-mode pack call: this agent's running backup and a pack id.
    fn direct_pack(
        &self,
        agent: &str,
        job_id: &str,
        pack_id: &[u8],
    ) -> Result<(Arc<Grant>, Id), Status> {
        if self.0.data_path() != crate::config::DataPath::Direct {
            return Err(Status::failed_precondition(
                "this controller takes packs through PutPacks, not directly",
            ));
        }
        let grant = self.grant(agent, job_id)?;
        if !grant.backup {
            return Err(Status::permission_denied("job is not a backup"));
        }
        let id =
            Id::try_from(pack_id).map_err(|_| Status::invalid_argument("pack ids are 32 bytes"))?;
        Ok((grant, id))
    }

    fn grant(&self, agent: &str, job_id: &str) -> Result<Arc<Grant>, Status> {
        match self.0.grants.lock().unwrap().get(job_id) {
            Some(g) if g.agent_id == agent => Ok(g.clone()),
            _ => {
                tracing::warn!(
                    agent,
                    job = job_id,
                    "refused: data-path call for a job this agent is not running"
                );
                Err(Status::permission_denied(format!(
                    "job {job_id:?} is not running on this agent"
                )))
            }
        }
    }
}

fn domain_records(agent: &str, inv: &pb::Inventory) -> Vec<DomainRecord> {
    inv.domains
        .iter()
        .filter(|d| valid_name(&d.name))
        .map(|d| DomainRecord {
            name: d.name.clone(),
            agent_id: agent.to_string(),
            path: d.path.clone(),
            size_bytes: d.size_bytes,
            databases: d
                .databases
                .iter()
                .map(|db| format!("{}:{}", db.engine, db.name))
                .collect(),
            aliases: d.aliases.clone(),
            site_type: d.site_type.clone(),
            source: d.source.clone(),
            root_missing: d.root_missing,
            binlog: d
                .databases
                .iter()
                .any(|db| db.binlog && matches!(db.engine.as_str(), "mariadb" | "postgres")),
            analysis: d.analysis.as_ref().map(|a| AnalysisRecord {
                analyzed_at: a.analyzed_at,
                files: a.files,
                changes_24h: a.changes_24h,
                avg_daily_changes: a.avg_daily_changes,
                trend: a.trend.clone(),
                requests_24h: a.has_traffic.then_some(a.requests_24h),
                history: a
                    .history
                    .iter()
                    .map(|h| DaySampleRecord {
                        day: h.day.clone(),
                        changes: h.changes,
                        requests: h.has_traffic.then_some(h.requests),
                        size_bytes: h.size_bytes,
                    })
                    .collect(),
            }),
        })
        .collect()
}

/// Stores an agent's inventory, then re-evaluates each domain's plan from
/// its size and activity (SPEC INT-5, INT-7); a changed plan is recorded
/// with the old one, the new one and why.
fn store_inventory(fleet: &Fleet, agent: &str, inv: &pb::Inventory) -> Result<(), CatalogError> {
    fleet
        .catalog
        .set_domains(agent, &domain_records(agent, inv))?;
    let now = now();
    let refused = inv.domains.iter().filter(|d| !valid_name(&d.name)).count();
    if refused > 0 {
        tracing::warn!(
            agent,
            refused,
            "refused: domain names that are empty, too long or hold control characters"
        );
    }
    for d in inv
        .domains
        .iter()
        .filter(|d| !d.root_missing && valid_name(&d.name))
    {
        let changes = d.analysis.as_ref().map_or(0, |a| a.changes_24h);
        let rec = strategy::recommend(SizeClass::of(d.size_bytes), Activity::of(changes));
        let runs = rec
            .runs
            .iter()
            .map(|r| PlannedRun {
                cron: r.cron.clone(),
                kind: r.kind.clone(),
            })
            .collect();
        let change = fleet.catalog.update_plan(
            agent,
            &d.name,
            rec.strategy.as_str(),
            runs,
            &rec.reason,
            now,
        )?;
        if let Some(c) = change {
            tracing::info!(agent, domain = %d.name, from = %c.from, to = %c.to, why = %c.why, "domain plan changed");
        }
    }
    Ok(())
}

/// A host or domain name fit to store and show: 1..=253 bytes, no control
/// characters (an agent could otherwise write escapes onto operators'
/// terminals and pages).
pub fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && !s.chars().any(char::is_control)
}

/// Most bytes of a job report an agent may send (a dry run's preview).
const MAX_REPORT: usize = 64 << 10;

/// An agent's job report, kept only if it is a JSON object within bounds,
/// re-serialized so nothing but the parsed value is stored.
fn checked_report(report: &str) -> Option<String> {
    if report.len() > MAX_REPORT {
        return None;
    }
    match serde_json::from_str::<serde_json::Value>(report) {
        Ok(v @ serde_json::Value::Object(_)) => serde_json::to_string(&v).ok(),
        _ => None,
    }
}

/// Free text from an agent (an error, a step name) as it may be stored and
/// shown: control characters replaced, at most `max` bytes.
pub(crate) fn clean_text(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_control() && c != '\n' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect();
    if out.len() > max {
        let mut cut = max;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// A readable, unique agent id from the host name the agent sent.
fn agent_id_for(fleet: &Fleet, hostname: &str) -> Result<String, Status> {
    let base: String = hostname
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let base = if base.is_empty() {
        "agent".to_string()
    } else {
        base
    };
    let mut id = base.clone();
    let mut n = 1;
    while fleet.catalog.agent(&id).map_err(internal)?.is_some() {
        n += 1;
        id = format!("{base}-{n}");
    }
    Ok(id)
}

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn enroll(
        &self,
        req: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let (addr, _) = peer(&req);
        let r = req.into_inner();
        let fleet = &self.0;
        if !valid_name(&r.hostname) {
            tracing::warn!(peer = %addr, "refused enrollment: unusable host name");
            return Err(Status::invalid_argument(
                "the host name is empty, too long or holds control characters",
            ));
        }
        // The CSR is checked before the token is spent: a malformed request
        // must not cost the operator a new token.
        let labels = crate::policy::check_labels(&r.labels).map_err(Status::invalid_argument)?;
        let id = agent_id_for(fleet, &r.hostname)?;
        let cert = fleet
            .ca
            .sign_agent_csr(&r.csr_pem, &id)
            .map_err(|e| Status::invalid_argument(format!("bad CSR: {e}")))?;
        if let Err(e) = fleet.catalog.consume_token(&r.token, now()) {
            tracing::warn!(peer = %addr, host = %r.hostname, error = %e, "refused enrollment");
            return Err(Status::unauthenticated(
                "enrollment token is invalid, expired or already used (create one with `cairnctl token create`)",
            ));
        }
        let der = cairn_net::cert_der(&cert, "agent certificate").map_err(internal)?;
        let sha = cairn_net::fingerprint(&der);
        fleet
            .catalog
            .put_agent(&AgentRecord {
                id: id.clone(),
                hostname: r.hostname.clone(),
                version: r.agent_version.clone(),
                cert_sha256: sha.clone(),
                enrolled_at: now(),
                last_seen: now(),
                revoked: false,
                labels: labels.clone(),
            })
            .and_then(|_| fleet.catalog.flush())
            .map_err(internal)?;
        fleet
            .agents_by_cert
            .write()
            .unwrap()
            .insert(sha, id.clone());
        tracing::info!(agent = %id, peer = %addr, "agent enrolled");
        Ok(Response::new(pb::EnrollResponse {
            agent_id: id,
            certificate_pem: cert,
            ca_certificate_pem: fleet.ca.cert_pem.clone(),
        }))
    }

    type SessionStream = Boxed<pb::ControllerMessage>;

    async fn session(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let agent = self.agent(&req)?;
        let fleet = self.0.clone();
        let mut inbound = req.into_inner();
        let beat = Duration::from_secs(fleet.cfg.heartbeat_seconds.max(1) as u64);
        let hello = match tokio::time::timeout(beat * 3, inbound.message()).await {
            Ok(Ok(Some(pb::AgentMessage {
                body: Some(pb::agent_message::Body::Hello(h)),
            }))) => h,
            _ => return Err(Status::invalid_argument("a session starts with hello")),
        };
        if !valid_name(&hello.hostname) {
            tracing::warn!(agent = %agent, "refused: session hello with an unusable host name");
            return Err(Status::invalid_argument(
                "the host name is empty, too long or holds control characters",
            ));
        }
        let protocol =
            cairn_proto::negotiate((hello.min_protocol, hello.protocol)).map_err(|why| {
                tracing::warn!(agent = %agent, version = %hello.agent_version, "refused session: {why}");
                Status::failed_precondition(why)
            })?;
        if let Some(mut rec) = fleet.catalog.agent(&agent).map_err(internal)? {
            rec.version = hello.agent_version.clone();
            rec.hostname = hello.hostname.clone();
            rec.last_seen = now();
            fleet.catalog.put_agent(&rec).map_err(internal)?;
        }
        if let Some(inv) = &hello.inventory {
            store_inventory(&fleet, &agent, inv).map_err(internal)?;
        }
        if let Some(b) = &hello.binlog {
            fleet.set_binlog(&agent, b);
        }
        if let Some(w) = &hello.wal {
            fleet.set_wal(&agent, w);
        }
        let (tx, rx) = mpsc::channel(64);
        let generation = fleet.generation.fetch_add(1, Ordering::Relaxed);
        let old = fleet.sessions.lock().unwrap().insert(
            agent.clone(),
            Session {
                generation,
                tx: tx.clone(),
                connected_at: now(),
            },
        );
        if old.is_some() {
            tracing::info!(agent = %agent, "agent reconnected; its older session is closed");
        }
        tracing::info!(agent = %agent, version = %hello.agent_version, protocol, "agent online");
        let _ = tx
            .send(Ok(pb::ControllerMessage {
                body: Some(pb::controller_message::Body::Welcome(pb::Welcome {
                    agent_id: agent.clone(),
                    heartbeat_seconds: fleet.cfg.heartbeat_seconds,
                    controller_version: env!("CARGO_PKG_VERSION").into(),
                    protocol,
                })),
            }))
            .await;
        // Not awaited here: the session's stream is not being read until we
        // return it, so a long queue would fill its channel and stall.
        let f = fleet.clone();
        tokio::spawn(async move { f.pump().await });
        tokio::spawn(run_session(fleet, agent, generation, inbound, beat));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn have_blobs(
        &self,
        req: Request<pb::HaveBlobsRequest>,
    ) -> Result<Response<pb::HaveBlobsResponse>, Status> {
        let agent = self.agent(&req)?;
        let r = req.into_inner();
        // Answers pin blobs for the asking job, so only a running backup asks.
        if !self.grant(&agent, &r.job_id)?.backup {
            return Err(Status::permission_denied("job is not a backup"));
        }
        if r.ids.len() > MAX_ASK {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_ASK} ids per call"
            )));
        }
        let ids = r
            .ids
            .iter()
            .map(|raw| Id::try_from(raw.as_slice()))
            .collect::<Result<Vec<Id>, _>>()
            .map_err(|_| Status::invalid_argument("blob ids are 32 bytes"))?;
        let answer = self.0.store.have(&agent, &r.job_id, &ids);
        let mut have = vec![0u8; ids.len().div_ceil(8)];
        let mut known = 0;
        for (i, _) in answer.iter().enumerate().filter(|(_, a)| **a) {
            have[i / 8] |= 1 << (i % 8);
            known += 1;
        }
        let m = &self.0.metrics;
        m.blobs_asked.fetch_add(ids.len() as u64, Ordering::Relaxed);
        m.blobs_known.fetch_add(known, Ordering::Relaxed);
        Ok(Response::new(pb::HaveBlobsResponse { have }))
    }

    async fn put_packs(
        &self,
        req: Request<Streaming<pb::PackPiece>>,
    ) -> Result<Response<pb::PutPacksResponse>, Status> {
        let agent = self.agent(&req)?;
        if self.0.data_path() != crate::config::DataPath::ViaController {
            return Err(Status::failed_precondition(
                "this controller's repository takes packs directly, not through it",
            ));
        }
        let mut stream = req.into_inner();
        let mut open: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        let mut inflight = self.0.store.inflight(&agent);
        let mut stored = 0;
        while let Some(piece) = stream.next().await {
            let piece = piece?;
            let grant = self.grant(&agent, &piece.job_id)?;
            if !grant.backup {
                return Err(Status::permission_denied("job is not a backup"));
            }
            if piece.index_segment {
                // Older agents send their segments; the controller writes its own.
                continue;
            }
            if !open.contains_key(&piece.pack_id) && open.len() >= MAX_OPEN_OBJECTS {
                return Err(Status::resource_exhausted(format!(
                    "at most {MAX_OPEN_OBJECTS} packs may be open in one upload"
                )));
            }
            let buf = open.entry(piece.pack_id.clone()).or_default();
            if piece.offset != buf.len() as u64 {
                return Err(Status::invalid_argument("pack pieces out of order"));
            }
            if buf.len() + piece.data.len() > store::MAX_OBJECT {
                return Err(Status::invalid_argument("object too large"));
            }
            inflight
                .grow(piece.data.len() as u64)
                .map_err(|e| status(&self.0, &agent, e))?;
            if let Some(cap) = &self.0.ingest {
                let waited = cap.take(piece.data.len()).await;
                self.0
                    .metrics
                    .ingest_throttled_micros
                    .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
            }
            buf.extend_from_slice(&piece.data);
            if piece.last {
                let data = open.remove(&piece.pack_id).unwrap_or_default();
                let id = Id::try_from(piece.pack_id.as_slice())
                    .map_err(|_| Status::invalid_argument("object ids are 32 bytes"))?;
                let fleet = self.0.clone();
                let (a, g) = (agent.clone(), grant.clone());
                let len = data.len() as u64;
                tokio::task::spawn_blocking(move || {
                    let host = fleet.hostname_of(&a);
                    fleet.store.ingest(&g.ctx(&host), id, &data)
                })
                .await
                .map_err(internal)?
                .map_err(|e| status(&self.0, &agent, e))?;
                inflight.shrink(len);
                let m = &self.0.metrics;
                m.packs_received.fetch_add(1, Ordering::Relaxed);
                m.bytes_received.fetch_add(len, Ordering::Relaxed);
                stored += 1;
            }
        }
        Ok(Response::new(pb::PutPacksResponse {
            packs_stored: stored,
        }))
    }

    async fn register_pack(
        &self,
        req: Request<pb::RegisterPackRequest>,
    ) -> Result<Response<pb::RegisterPackResponse>, Status> {
        let agent = self.agent(&req)?;
        let r = req.into_inner();
        let (grant, id) = self.direct_pack(&agent, &r.job_id, &r.pack_id)?;
        let fleet = self.0.clone();
        let a = agent.clone();
        let job_id = r.job_id.clone();
        let verify = move || {
            let host = fleet.hostname_of(&a);
            let r = fleet.store.register(&grant.ctx(&host), id);
            fleet.store.settled(&id);
            r
        };
        let wait = self.0.store.settle(&id);
        if !wait.is_zero() {
            // Presigned: verified once its PUT has expired and the bytes can
            // no longer change; the job's commit waits for the outcome.
            let store = self.0.clone();
            let task = tokio::spawn(async move {
                let mut wait = wait;
                while !wait.is_zero() {
                    tokio::time::sleep(wait + Duration::from_millis(200)).await;
                    wait = store.store.settle(&id);
                }
                tokio::task::spawn_blocking(verify)
                    .await
                    .unwrap_or_else(|e| {
                        Err(StoreError::NotReady(format!("verification task: {e}")))
                    })
            });
            self.0
                .pending
                .lock()
                .unwrap()
                .entry(job_id)
                .or_default()
                .push(task);
            return Ok(Response::new(pb::RegisterPackResponse { blobs: 0 }));
        }
        let blobs = tokio::task::spawn_blocking(verify)
            .await
            .map_err(internal)?
            .map_err(|e| status(&self.0, &agent, e))?;
        self.0
            .metrics
            .packs_received
            .fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(pb::RegisterPackResponse {
            blobs: blobs as u32,
        }))
    }

    async fn presign_pack(
        &self,
        req: Request<pb::PresignPackRequest>,
    ) -> Result<Response<pb::PresignPackResponse>, Status> {
        let agent = self.agent(&req)?;
        let r = req.into_inner();
        let (grant, id) = self.direct_pack(&agent, &r.job_id, &r.pack_id)?;
        let ttl = Duration::from_secs(self.0.cfg.repository.presign_seconds.max(1) as u64);
        let fleet = self.0.clone();
        let a = agent.clone();
        // Signing runs on the storage's own runtime: off the async threads.
        let p = tokio::task::spawn_blocking(move || {
            let host = fleet.hostname_of(&a);
            fleet.store.presign(&grant.ctx(&host), id, ttl)
        })
        .await
        .map_err(internal)?
        .map_err(|e| status(&self.0, &agent, e))?;
        Ok(Response::new(pb::PresignPackResponse {
            method: p.method,
            url: p.url,
            headers: p.headers.into_iter().collect(),
        }))
    }

    async fn read_pack(
        &self,
        req: Request<pb::ReadPackRequest>,
    ) -> Result<Response<pb::ReadPackResponse>, Status> {
        let agent = self.agent(&req)?;
        let r = req.into_inner();
        let grant = self.grant(&agent, &r.job_id)?;
        let pack_id = Id::try_from(r.pack_id.as_slice())
            .map_err(|_| Status::invalid_argument("pack ids are 32 bytes"))?;
        if r.length > MAX_READ {
            return Err(Status::invalid_argument("read too large"));
        }
        let denied = || {
            tracing::warn!(agent = %agent, job = %r.job_id, pack = %pack_id, offset = r.offset, length = r.length,
                "refused: read outside the job's snapshot");
            Status::permission_denied("that range holds nothing of this job's snapshot")
        };
        let granted = grant.ranges.get(&pack_id).ok_or_else(denied)?;
        let end = r.offset.checked_add(r.length).ok_or_else(denied)?;
        if !granted.iter().any(|&(s, e)| s < end && r.offset < e) {
            return Err(denied());
        }
        let storage = self.0.repo.storage().clone();
        let data = tokio::task::spawn_blocking(move || {
            storage.get_range(&pack::key_of(&pack_id), r.offset, r.length)
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        let data = crate::fleet::mask_to_granted(granted, r.offset, data).ok_or_else(denied)?;
        Ok(Response::new(pb::ReadPackResponse { data }))
    }

    async fn commit_snapshot(
        &self,
        req: Request<pb::CommitSnapshotRequest>,
    ) -> Result<Response<pb::CommitSnapshotResponse>, Status> {
        let agent = self.agent(&req)?;
        let r = req.into_inner();
        let grant = self.grant(&agent, &r.job_id)?;
        if !grant.backup {
            return Err(Status::permission_denied("job is not a backup"));
        }
        // Presigned packs of this job still being verified: their outcome first.
        let pending = self.0.pending.lock().unwrap().remove(&r.job_id);
        for task in pending.unwrap_or_default() {
            task.await
                .map_err(internal)?
                .map_err(|e| status(&self.0, &agent, e))?;
        }
        let fleet = self.0.clone();
        let a = agent.clone();
        let rec = tokio::task::spawn_blocking(move || commit(&fleet, &grant, &a, &r.snapshot))
            .await
            .map_err(internal)?
            .map_err(|e| status(&self.0, &agent, e))?;
        Ok(Response::new(pb::CommitSnapshotResponse {
            snapshot_id: rec.id,
        }))
    }
}

/// The one place a store error becomes a gRPC status. A refusal (the agent
/// sent something false) is counted and logged with the agent's id.
fn status(fleet: &Fleet, agent: &str, e: StoreError) -> Status {
    match e {
        StoreError::Refused(why) => {
            fleet
                .metrics
                .refused_objects
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(agent, reason = %why, "refused: an agent's upload failed verification");
            Status::invalid_argument(format!("refused: {why}"))
        }
        StoreError::Denied(why) => {
            tracing::warn!(agent, reason = %why, "refused: not this job's to do");
            Status::permission_denied(why)
        }
        StoreError::NotReady(why) => Status::failed_precondition(why),
        StoreError::Busy(why) => Status::resource_exhausted(why),
        StoreError::Repo(e) => internal(e),
    }
}

/// Commits a snapshot through the store and records it in the catalog.
fn commit(
    fleet: &Fleet,
    grant: &Grant,
    agent: &str,
    proposed: &[u8],
) -> Result<SnapshotRecord, StoreError> {
    let host = fleet.hostname_of(agent);
    let (id, snap) = fleet.store.commit(&grant.ctx(&host), proposed)?;
    let rec = SnapshotRecord {
        id: id.to_string(),
        domain: snap.domain.clone(),
        agent_id: agent.to_string(),
        time: snap.time.timestamp(),
        kind: snap.kind.to_string(),
        content: snap.content.to_string(),
        total_bytes: snap.stats.total_bytes,
        stored_bytes: snap.stats.stored_bytes,
        run_id: snap.run.clone().unwrap_or_default(),
    };
    fleet
        .catalog
        .add_snapshot(&rec)
        .and_then(|_| fleet.catalog.set_job_snapshot(&grant.job_id, &rec.id))
        .and_then(|_| fleet.catalog.flush())
        .map_err(|e| StoreError::Repo(cairn_repo::Error::Other(e.to_string())))?;
    tracing::info!(agent, job = %grant.job_id, snapshot = %id, domain = %snap.domain, "snapshot committed");
    Ok(rec)
}

/// Reads one session's messages until it ends; then the agent is offline and
/// its running jobs fail.
async fn run_session(
    fleet: Arc<Fleet>,
    agent: String,
    generation: u64,
    mut inbound: Streaming<pb::AgentMessage>,
    beat: Duration,
) {
    let why = loop {
        let msg = match tokio::time::timeout(beat * 3, inbound.message()).await {
            Err(_) => break "missed three heartbeats".to_string(),
            Ok(Err(e)) => break format!("stream error: {}", e.message()),
            Ok(Ok(None)) => break "session closed".to_string(),
            Ok(Ok(Some(m))) => m,
        };
        if fleet
            .sessions
            .lock()
            .unwrap()
            .get(&agent)
            .is_none_or(|s| s.generation != generation)
        {
            break "replaced or removed".to_string();
        }
        let _ = fleet.catalog.touch_agent(&agent, now());
        use pb::agent_message::Body;
        match msg.body {
            Some(Body::Heartbeat(_)) | Some(Body::Hello(_)) | None => {}
            Some(Body::Binlog(b)) => fleet.set_binlog(&agent, &b),
            Some(Body::Wal(w)) => fleet.set_wal(&agent, &w),
            Some(Body::Recovered(r)) => {
                // Only a failed or cancelled in-place restore of this
                // agent's own: one that succeeded needs no word.
                let job = fleet.catalog.job(&r.job_id).ok().filter(|j| {
                    j.agent_id == agent
                        && j.kind == "restore"
                        && j.spec.in_place
                        && j.state.is_final()
                        && j.state != JobState::Succeeded
                });
                if let Some(j) = job {
                    let step = format!("after the agent restarted: {}", clean_text(&r.what, 400));
                    tracing::info!(job = %j.id, agent = %agent, "{step}");
                    let _ = fleet.catalog.note_job(&j.id, &step);
                }
            }
            Some(Body::Inventory(inv)) => {
                if let Err(e) = store_inventory(&fleet, &agent, &inv) {
                    tracing::error!(error = %e, "storing inventory");
                }
            }
            Some(Body::Progress(p)) => {
                let mine = fleet
                    .catalog
                    .job(&p.job_id)
                    .is_ok_and(|j| j.agent_id == agent && !j.state.is_final());
                if mine {
                    let _ = fleet.catalog.job_progress(
                        &p.job_id,
                        &clean_text(&p.step, 200),
                        p.files,
                        p.bytes,
                        p.total_bytes,
                    );
                }
            }
            Some(Body::Result(r)) => {
                let job = fleet
                    .catalog
                    .job(&r.job_id)
                    .ok()
                    .filter(|j| j.agent_id == agent && j.state == JobState::Running);
                if let Some(job) = job {
                    let (mut state, mut err) = match pb::Outcome::try_from(r.outcome) {
                        Ok(pb::Outcome::Succeeded) => (JobState::Succeeded, None),
                        Ok(pb::Outcome::Cancelled) => {
                            (JobState::Cancelled, Some(clean_text(&r.error, 4096)))
                        }
                        _ => (JobState::Failed, Some(clean_text(&r.error, 4096))),
                    };
                    // The snapshot is the one the controller committed, never
                    // an id the agent names.
                    let committed = fleet.store.committed(&r.job_id).map(|i| i.to_string());
                    if job.kind == "backup" && state == JobState::Succeeded && committed.is_none() {
                        tracing::warn!(agent = %agent, job = %r.job_id, "refused: success reported without a committed snapshot");
                        state = JobState::Failed;
                        err = Some("the agent reported success but committed no snapshot".into());
                    }
                    if state == JobState::Succeeded && !r.report.is_empty() {
                        match checked_report(&r.report) {
                            Some(report) => {
                                let _ = fleet.catalog.job_report(&r.job_id, &report);
                            }
                            None => {
                                tracing::warn!(agent = %agent, job = %r.job_id, "refused: a job report that is not JSON or over 64 KiB")
                            }
                        }
                    }
                    let _ = fleet.finish(&r.job_id, state, committed, err);
                }
            }
        }
    };
    let mut sessions = fleet.sessions.lock().unwrap();
    let current = sessions
        .get(&agent)
        .is_some_and(|s| s.generation == generation);
    if current {
        sessions.remove(&agent);
    }
    drop(sessions);
    if !current {
        return;
    }
    tracing::warn!(agent = %agent, reason = %why, "agent offline");
    let running: Vec<String> = fleet
        .catalog
        .jobs()
        .unwrap_or_default()
        .into_iter()
        .filter(|j| j.agent_id == agent && j.state == JobState::Running)
        .map(|j| j.id)
        .collect();
    for id in running {
        let _ = fleet.finish(
            &id,
            JobState::Failed,
            None,
            Some(format!("the agent went offline mid-job ({why})")),
        );
    }
}
