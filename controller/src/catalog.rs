//! The controller's catalog: agents, domains (with their analysis), each
//! domain's recommended plan and how it changed, snapshots, jobs and
//! enrollment tokens in sled. Only this module touches sled.
//!
//! Records are JSON values in one sled tree per kind. Jobs are keyed by a
//! big-endian sequence number, so they list in creation order. Tokens are
//! stored as BLAKE3 hashes: the catalog holds nothing a thief could enroll
//! with. Everything survives a restart; [`Catalog::open`] fails jobs that
//! were running when the controller stopped, since no agent reports on them.

use std::collections::BTreeMap;
use std::path::Path;

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog storage: {0}")]
    Sled(#[from] sled::Error),
    #[error("catalog record {key:?} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("no {what} {id:?}")]
    NotFound { what: &'static str, id: String },
    #[error("job {id} is {from:?}; it cannot become {to:?}")]
    BadTransition {
        id: String,
        from: JobState,
        to: JobState,
    },
    #[error("the enrollment token is unknown, used or expired")]
    BadToken,
}

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub id: String,
    pub hostname: String,
    pub version: String,
    /// SHA-256 of the agent's certificate (DER), hex.
    pub cert_sha256: String,
    pub enrolled_at: i64,
    pub last_seen: i64,
    pub revoked: bool,
    /// Set at enrollment and with `cairnctl agents label`; policies select on them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainRecord {
    pub name: String,
    pub agent_id: String,
    pub path: String,
    pub size_bytes: u64,
    /// `engine:name` of each database; never credentials.
    pub databases: Vec<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// wordpress, laravel, php, static.
    #[serde(default)]
    pub site_type: String,
    /// Where the agent found it (config, web root, nginx, apache).
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub root_missing: bool,
    #[serde(default)]
    pub analysis: Option<AnalysisRecord>,
    /// Its MariaDB/MySQL database is on the server whose binary log the
    /// agent streams (point in time possible).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub binlog: bool,
}

/// What the agent measured (SPEC INT-2, INT-3).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnalysisRecord {
    pub analyzed_at: i64,
    pub files: u64,
    pub changes_24h: u64,
    pub avg_daily_changes: f64,
    pub trend: String,
    /// None without access logs.
    pub requests_24h: Option<u64>,
    pub history: Vec<DaySampleRecord>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaySampleRecord {
    pub day: String,
    pub changes: u64,
    pub requests: Option<u64>,
    pub size_bytes: u64,
}

/// The controller's recommendation for a domain (SPEC INT-5, INT-7) and
/// every time it changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRecord {
    pub strategy: String,
    pub runs: Vec<PlannedRun>,
    pub reason: String,
    pub since: i64,
    /// Oldest first, the last [`MAX_PLAN_CHANGES`].
    pub changes: Vec<PlanChange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedRun {
    pub cron: String,
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanChange {
    pub at: i64,
    /// The plan in words; empty for a domain's first plan.
    pub from: String,
    pub to: String,
    pub why: String,
}

pub const MAX_PLAN_CHANGES: usize = 50;

impl PlanRecord {
    /// `incremental (incremental 0 */6 * * *, full 0 3 * * 0)`.
    pub fn describe(&self) -> String {
        let runs: Vec<String> = self
            .runs
            .iter()
            .map(|r| format!("{} {}", r.kind, r.cron))
            .collect();
        format!("{} ({})", self.strategy, runs.join(", "))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub id: String,
    pub domain: String,
    pub agent_id: String,
    pub time: i64,
    pub kind: String,
    pub content: String,
    pub total_bytes: u64,
    pub stored_bytes: u64,
    /// The run it belongs to (its files and database share it); empty for a
    /// snapshot made alone.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub run_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }

    /// queued → running → succeeded | failed | cancelled; queued → cancelled | failed.
    fn may_become(self, to: JobState) -> bool {
        use JobState::*;
        matches!(
            (self, to),
            (Queued, Running)
                | (Queued, Cancelled)
                | (Queued, Failed)
                | (Running, Succeeded)
                | (Running, Failed)
                | (Running, Cancelled)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub kind: String,
    pub domain: String,
    pub agent_id: String,
    pub state: JobState,
    pub step: String,
    pub files: u64,
    pub bytes: u64,
    pub total_bytes: u64,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    pub snapshot_id: Option<String>,
    pub error: Option<String>,
    /// What to run, kept so a job queued for an offline agent runs when it
    /// reconnects.
    #[serde(default)]
    pub spec: JobSpec,
    #[serde(default)]
    pub started_at: Option<i64>,
    /// Not dispatched before this time (a retry's backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<i64>,
    /// 0 for a first run, n for its n-th retry.
    #[serde(default)]
    pub attempt: u32,
    /// Higher is dispatched first when the fleet is at its limits.
    #[serde(default)]
    pub priority: i32,
    /// The failed job this one retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<String>,
    /// What the agent reported (JSON): a dry run's preview, a rollback point.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub report: String,
}

#[cfg(test)]
impl JobRecord {
    /// For tests: a backup of a1's shop.test created at `at` that ended in
    /// `state` after `secs` seconds.
    pub(crate) fn ended(id: &str, state: JobState, at: i64, secs: i64) -> JobRecord {
        JobRecord {
            id: id.into(),
            kind: "backup".into(),
            domain: "shop.test".into(),
            agent_id: "a1".into(),
            state,
            step: String::new(),
            files: 0,
            bytes: 0,
            total_bytes: 0,
            created_at: at,
            finished_at: Some(at + secs),
            snapshot_id: None,
            error: None,
            spec: JobSpec::default(),
            started_at: Some(at),
            not_before: None,
            attempt: 0,
            priority: 0,
            retry_of: None,
            report: String::new(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Backups: full, incremental or differential.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub backup_kind: String,
    /// Restores: the snapshot, the target directory and chosen paths.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub snapshot_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// "database" for a dump of the site's database (or its restore), else files.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub content: String,
    /// Database restores: only these tables (all when empty), into this
    /// database (empty: the one the site's config names), or a test restore
    /// into a scratch database dropped afterwards.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub into_database: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub test: bool,
    /// Database backups: wordpress, laravel or none (empty: from the site type).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cms_profile: String,
    /// File backups: exclude patterns from the domain's policies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excludes: Vec<String>,
    /// The first job of the run this one belongs to (files and database of
    /// one site at one time); empty for a run of one job.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub run_id: String,
    /// `schedule` for runs the scheduler queued; empty for cairnctl's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trigger: String,
    /// The cron occurrence a scheduled run stands for.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub scheduled_for: i64,
    /// Retries left if this job fails, and the wait before the next one
    /// (doubled each time).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub retries_left: u32,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub backoff_seconds: u64,
    /// File restores: over the live target, staged and swapped; or only a
    /// preview of what that would change.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_place: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Rollbacks: the in-place restore job to undo.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rollback_of: String,
    /// Jobs that must succeed before this one is dispatched (the safety
    /// backup of an in-place restore).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// Database restores to a moment: the shipped binary log replayed after
    /// the dump, up to `stop_at` (unix seconds, exclusive).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_snapshot_id: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stop_at: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}
fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}
fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// A legal hold (SPEC RET-2): a domain's snapshots, or one snapshot, that
/// retention and `forget` must never delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRecord {
    pub id: String,
    /// Set for a hold on a whole domain (every snapshot, present and future).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// Set for a hold on one snapshot.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub snapshot_id: String,
    pub reason: String,
    /// Who set it (the certificate's name).
    pub by: String,
    pub at: i64,
}

impl HoldRecord {
    pub fn covers(&self, s: &SnapshotRecord) -> bool {
        (!self.snapshot_id.is_empty() && self.snapshot_id == s.id)
            || (!self.domain.is_empty() && self.domain == s.domain)
    }
}

pub struct Catalog {
    db: sled::Db,
    agents: sled::Tree,
    domains: sled::Tree,
    plans: sled::Tree,
    snapshots: sled::Tree,
    jobs: sled::Tree,
    /// Ids of jobs not yet final, so the scheduler never scans history.
    open_jobs: sled::Tree,
    tokens: sled::Tree,
    policies: sled::Tree,
    holds: sled::Tree,
    /// `agent\0domain\0kind` → the last cron occurrence queued (i64 BE);
    /// `\0maintenance` → the last maintenance run.
    fired: sled::Tree,
    /// Alerts, firing and resolved, by id.
    alerts: sled::Tree,
    /// Notifications not yet delivered: `channel\0seq` (seq u64 BE) → event.
    outbox: sled::Tree,
    /// cairnctl users by name.
    users: sled::Tree,
    /// Single values: `audit_head` (the audit log's newest entry),
    /// `audit_mirrored` (the newest one copied into the repository).
    meta: sled::Tree,
    /// Sums of the snapshots and ended jobs, rebuilt at open; changed under
    /// its write lock together with the records it sums.
    summaries: std::sync::RwLock<crate::summary::Summaries>,
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("catalog records serialize")
}

fn decode<T: DeserializeOwned>(key: &[u8], v: &[u8]) -> Result<T> {
    serde_json::from_slice(v).map_err(|e| CatalogError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

fn all<T: DeserializeOwned>(tree: &sled::Tree, prefix: &[u8]) -> Result<Vec<T>> {
    tree.scan_prefix(prefix)
        .map(|kv| {
            let (k, v) = kv?;
            decode(&k, &v)
        })
        .collect()
}

/// Opens sled, waiting up to ten seconds for its file lock: a closed
/// catalog's file (and its lock) is released only when sled's background
/// threads (the flusher, the pool writing out log buffers) drop their last
/// reference, a moment after the drop (spacejam/sled#1234), so an immediate
/// reopen in the same process can find it still held. Another process
/// holding it is reported after the wait.
fn open_db(dir: &Path) -> Result<sled::Db> {
    open_db_waiting(dir, std::time::Duration::from_secs(10))
}

fn open_db_waiting(dir: &Path, wait: std::time::Duration) -> Result<sled::Db> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        match sled::open(dir) {
            Err(sled::Error::Io(e)) if lock_held(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return Ok(r?),
        }
    }
}

/// sled 0.34 reports a held lock as `ErrorKind::Other` with the flock error
/// only in its message ("could not acquire lock on …: … WouldBlock …"), so
/// the kind alone never matches (the restart test failed in CI on exactly
/// that error, with the wait in place).
fn lock_held(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock
        || e.to_string().starts_with("could not acquire lock")
}

fn outbox_key(channel: &str, seq: u64) -> Vec<u8> {
    let mut k = channel.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn token_key(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

impl Catalog {
    /// Opens (or creates) the catalog in `dir`. Jobs left running by a previous
    /// controller are failed.
    pub fn open(dir: &Path) -> Result<Catalog> {
        let db = open_db(dir)?;
        let c = Catalog {
            agents: db.open_tree("agents")?,
            domains: db.open_tree("domains")?,
            plans: db.open_tree("plans")?,
            snapshots: db.open_tree("snapshots")?,
            jobs: db.open_tree("jobs")?,
            tokens: db.open_tree("tokens")?,
            open_jobs: db.open_tree("open_jobs")?,
            policies: db.open_tree("policies")?,
            holds: db.open_tree("holds")?,
            fired: db.open_tree("fired")?,
            alerts: db.open_tree("alerts")?,
            outbox: db.open_tree("outbox")?,
            users: db.open_tree("users")?,
            meta: db.open_tree("meta")?,
            summaries: Default::default(),
            db,
        };
        let now = crate::clock::now();
        c.open_jobs.clear()?;
        for j in c.jobs()? {
            if !j.state.is_final() {
                c.open_jobs.insert(j.id.as_bytes(), &[])?;
            }
            if j.state == JobState::Running {
                c.finish_job(
                    &j.id,
                    JobState::Failed,
                    None,
                    Some("the controller restarted while the job ran".into()),
                    now,
                )?;
            }
        }
        *c.summaries.write().unwrap() =
            crate::summary::Summaries::of(&c.snapshots(None)?, &c.jobs()?);
        Ok(c)
    }

    /// Reads the per-domain summaries (see [`crate::summary`]).
    pub fn with_summaries<R>(&self, f: impl FnOnce(&crate::summary::Summaries) -> R) -> R {
        f(&self.summaries.read().unwrap())
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    pub fn put_agent(&self, a: &AgentRecord) -> Result<()> {
        self.agents.insert(a.id.as_bytes(), encode(a))?;
        Ok(())
    }

    pub fn agent(&self, id: &str) -> Result<Option<AgentRecord>> {
        self.agents
            .get(id.as_bytes())?
            .map(|v| decode(id.as_bytes(), &v))
            .transpose()
    }

    pub fn agents(&self) -> Result<Vec<AgentRecord>> {
        all(&self.agents, b"")
    }

    /// Revokes an agent at once: its certificate is refused from now on, and
    /// its domains leave the inventory.
    pub fn revoke_agent(&self, id: &str) -> Result<()> {
        let mut a = self.agent(id)?.ok_or(CatalogError::NotFound {
            what: "agent",
            id: id.into(),
        })?;
        a.revoked = true;
        self.put_agent(&a)?;
        self.set_domains(id, &[])?;
        let mut batch = sled::Batch::default();
        for kv in self.plans.scan_prefix(format!("{id}\0").as_bytes()) {
            batch.remove(kv?.0);
        }
        self.plans.apply_batch(batch)?;
        self.flush()
    }

    pub fn touch_agent(&self, id: &str, now: i64) -> Result<()> {
        if let Some(mut a) = self.agent(id)? {
            a.last_seen = now;
            self.put_agent(&a)?;
        }
        Ok(())
    }

    /// Replaces an agent's domains with its latest inventory.
    pub fn set_domains(&self, agent_id: &str, domains: &[DomainRecord]) -> Result<()> {
        let prefix = format!("{agent_id}\0");
        let mut batch = sled::Batch::default();
        for kv in self.domains.scan_prefix(prefix.as_bytes()) {
            batch.remove(kv?.0);
        }
        for d in domains {
            batch.insert(format!("{prefix}{}", d.name).as_bytes(), encode(d));
        }
        self.domains.apply_batch(batch)?;
        Ok(())
    }

    pub fn domains(&self) -> Result<Vec<DomainRecord>> {
        all(&self.domains, b"")
    }

    pub fn plan(&self, agent_id: &str, domain: &str) -> Result<Option<PlanRecord>> {
        let key = format!("{agent_id}\0{domain}");
        self.plans
            .get(key.as_bytes())?
            .map(|v| decode(key.as_bytes(), &v))
            .transpose()
    }

    /// Stores `plan` (strategy, runs, reason) as the domain's recommendation.
    /// Returns the change when the strategy or its runs differ from the
    /// stored plan (or there was none); a new reason alone is kept quietly.
    pub fn update_plan(
        &self,
        agent_id: &str,
        domain: &str,
        strategy: &str,
        runs: Vec<PlannedRun>,
        reason: &str,
        now: i64,
    ) -> Result<Option<PlanChange>> {
        let old = self.plan(agent_id, domain)?;
        let mut next = PlanRecord {
            strategy: strategy.into(),
            runs,
            reason: reason.into(),
            since: now,
            changes: Vec::new(),
        };
        let change = match &old {
            Some(o) if o.strategy == next.strategy && o.runs == next.runs => {
                if o.reason == next.reason {
                    return Ok(None);
                }
                next.since = o.since;
                next.changes = o.changes.clone();
                None
            }
            _ => {
                let c = PlanChange {
                    at: now,
                    from: old.as_ref().map(PlanRecord::describe).unwrap_or_default(),
                    to: next.describe(),
                    why: reason.into(),
                };
                next.changes = old.map(|o| o.changes).unwrap_or_default();
                next.changes.push(c.clone());
                let excess = next.changes.len().saturating_sub(MAX_PLAN_CHANGES);
                next.changes.drain(..excess);
                Some(c)
            }
        };
        self.plans
            .insert(format!("{agent_id}\0{domain}").as_bytes(), encode(&next))?;
        Ok(change)
    }

    pub fn add_snapshot(&self, s: &SnapshotRecord) -> Result<()> {
        let mut sums = self.summaries.write().unwrap();
        let key = format!("{}\0{}", s.domain, s.id);
        if let Some(old) = self.snapshots.insert(key.as_bytes(), encode(s))? {
            // Stored again: take the old one's sums out first.
            let old: SnapshotRecord = decode(key.as_bytes(), &old)?;
            sums.snapshot_removed(&old, &self.snapshots(Some(&s.domain))?);
        }
        sums.snapshot_added(s);
        Ok(())
    }

    pub fn remove_snapshot(&self, s: &SnapshotRecord) -> Result<()> {
        let mut sums = self.summaries.write().unwrap();
        let key = format!("{}\0{}", s.domain, s.id);
        if let Some(old) = self.snapshots.remove(key.as_bytes())? {
            let old: SnapshotRecord = decode(key.as_bytes(), &old)?;
            sums.snapshot_removed(&old, &self.snapshots(Some(&s.domain))?);
        }
        Ok(())
    }

    /// Snapshots, of one domain or all, oldest first.
    pub fn snapshots(&self, domain: Option<&str>) -> Result<Vec<SnapshotRecord>> {
        let prefix = domain.map(|d| format!("{d}\0")).unwrap_or_default();
        let mut v: Vec<SnapshotRecord> = all(&self.snapshots, prefix.as_bytes())?;
        v.sort_by(|a, b| a.time.cmp(&b.time).then(a.id.cmp(&b.id)));
        Ok(v)
    }

    /// Queues a job; returns its record.
    pub fn create_job(
        &self,
        kind: &str,
        domain: &str,
        agent_id: &str,
        spec: JobSpec,
        now: i64,
    ) -> Result<JobRecord> {
        let job = self.new_job(kind, domain, agent_id, spec, now)?;
        self.queue(std::slice::from_ref(&job), &[])?;
        Ok(job)
    }

    /// Queues `job` and records `fired` (schedule keys and the occurrence
    /// each now stands at) in one transaction: a crash leaves both or neither,
    /// so a scheduled run is never lost nor queued twice.
    pub fn queue(&self, queued: &[JobRecord], fired: &[(String, i64)]) -> Result<()> {
        (&self.jobs, &self.open_jobs, &self.fired)
            .transaction(|(jobs, open, fire)| {
                for job in queued {
                    jobs.insert(job.id.as_bytes(), encode(job))?;
                    open.insert(job.id.as_bytes(), &[])?;
                }
                for (k, t) in fired {
                    fire.insert(k.as_bytes(), &t.to_be_bytes())?;
                }
                Ok(())
            })
            .map_err(tx_error)?;
        self.flush()
    }

    /// A job record with a fresh id, not yet stored.
    pub fn new_job(
        &self,
        kind: &str,
        domain: &str,
        agent_id: &str,
        spec: JobSpec,
        now: i64,
    ) -> Result<JobRecord> {
        let seq = self.db.generate_id()?;
        Ok(JobRecord {
            id: format!("j{seq:08}"),
            kind: kind.into(),
            domain: domain.into(),
            agent_id: agent_id.into(),
            state: JobState::Queued,
            step: String::new(),
            files: 0,
            bytes: 0,
            total_bytes: 0,
            created_at: now,
            finished_at: None,
            snapshot_id: None,
            error: None,
            spec,
            started_at: None,
            not_before: None,
            attempt: 0,
            priority: 0,
            retry_of: None,
            report: String::new(),
        })
    }

    /// Jobs not yet final (queued or running), oldest first.
    pub fn open_jobs(&self) -> Result<Vec<JobRecord>> {
        let mut out = Vec::new();
        for k in self.open_jobs.iter().keys() {
            let k = k?;
            if let Some(v) = self.jobs.get(&k)? {
                out.push(decode(&k, &v)?);
            }
        }
        Ok(out)
    }

    /// The last occurrence recorded under a schedule key.
    pub fn fired(&self, key: &str) -> Result<Option<i64>> {
        Ok(self
            .fired
            .get(key.as_bytes())?
            .and_then(|v| v.as_ref().try_into().ok().map(i64::from_be_bytes)))
    }

    pub fn set_fired(&self, key: &str, t: i64) -> Result<()> {
        self.fired.insert(key.as_bytes(), &t.to_be_bytes())?;
        Ok(())
    }

    pub fn put_policy(&self, p: &crate::policy::Policy) -> Result<()> {
        self.policies.insert(p.name.as_bytes(), encode(p))?;
        self.flush()
    }

    pub fn delete_policy(&self, name: &str) -> Result<bool> {
        let gone = self.policies.remove(name.as_bytes())?.is_some();
        self.flush()?;
        Ok(gone)
    }

    pub fn policies(&self) -> Result<Vec<crate::policy::Policy>> {
        all(&self.policies, b"")
    }

    pub fn alerts(&self) -> Result<Vec<crate::alerts::AlertRecord>> {
        all(&self.alerts, b"")
    }

    /// Stores new and changed alerts and queues the notifications they
    /// cause in one transaction: an alert is never stored without its
    /// notifications, nor notified without being stored.
    pub fn put_alerts(
        &self,
        alerts: &[crate::alerts::AlertRecord],
        notify: &[(String, crate::notify::Event)],
    ) -> Result<()> {
        if alerts.is_empty() && notify.is_empty() {
            return Ok(());
        }
        let seqs = notify
            .iter()
            .map(|_| self.db.generate_id())
            .collect::<Result<Vec<_>, _>>()?;
        (&self.alerts, &self.outbox)
            .transaction(|(at, ot)| {
                for a in alerts {
                    at.insert(a.id.as_bytes(), encode(a))?;
                }
                for ((channel, ev), seq) in notify.iter().zip(&seqs) {
                    ot.insert(outbox_key(channel, *seq), encode(ev))?;
                }
                Ok(())
            })
            .map_err(tx_error)?;
        if !notify.is_empty() {
            self.flush()?;
        }
        Ok(())
    }

    /// A channel's undelivered notifications, oldest first, with their keys.
    pub fn outbox(&self, channel: &str) -> Result<Vec<(Vec<u8>, crate::notify::Event)>> {
        let mut prefix = channel.as_bytes().to_vec();
        prefix.push(0);
        self.outbox
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((k.to_vec(), decode(&k, &v)?))
            })
            .collect()
    }

    /// Drops delivered (or given up) notifications.
    pub fn outbox_done(&self, keys: &[Vec<u8>]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for k in keys {
            batch.remove(k.as_slice());
        }
        self.outbox.apply_batch(batch)?;
        self.flush()
    }

    pub fn users(&self) -> Result<Vec<crate::access::UserRecord>> {
        all(&self.users, b"")
    }

    pub fn put_user(&self, u: &crate::access::UserRecord) -> Result<()> {
        self.users.insert(u.name.as_bytes(), encode(u))?;
        self.flush()
    }

    pub fn audit_head(&self) -> Result<crate::audit::Head> {
        match self.meta.get(b"audit_head")? {
            Some(v) => decode(b"audit_head", &v),
            None => Ok(Default::default()),
        }
    }

    pub fn set_audit_head(&self, h: &crate::audit::Head) -> Result<()> {
        self.meta.insert(b"audit_head", encode(h))?;
        self.flush()
    }

    /// The newest audit entry copied into the repository.
    pub fn audit_mirrored(&self) -> Result<u64> {
        Ok(match self.meta.get(b"audit_mirrored")? {
            Some(v) => decode(b"audit_mirrored", &v)?,
            None => 0,
        })
    }

    pub fn set_audit_mirrored(&self, seq: u64) -> Result<()> {
        self.meta.insert(b"audit_mirrored", encode(&seq))?;
        self.flush()
    }

    pub fn add_hold(&self, h: &HoldRecord) -> Result<()> {
        self.holds.insert(h.id.as_bytes(), encode(h))?;
        self.flush()
    }

    pub fn remove_hold(&self, id: &str) -> Result<HoldRecord> {
        let v = self
            .holds
            .remove(id.as_bytes())?
            .ok_or(CatalogError::NotFound {
                what: "hold",
                id: id.into(),
            })?;
        self.flush()?;
        decode(id.as_bytes(), &v)
    }

    pub fn holds(&self) -> Result<Vec<HoldRecord>> {
        all(&self.holds, b"")
    }

    /// A fresh id for a hold.
    pub fn next_id(&self, prefix: &str) -> Result<String> {
        Ok(format!("{prefix}{:06}", self.db.generate_id()?))
    }

    pub fn job(&self, id: &str) -> Result<JobRecord> {
        Ok(self.job_raw(id)?.1)
    }

    /// A job with its stored bytes (for compare-and-swap).
    fn job_raw(&self, id: &str) -> Result<(sled::IVec, JobRecord)> {
        let v = self
            .jobs
            .get(id.as_bytes())?
            .ok_or(CatalogError::NotFound {
                what: "job",
                id: id.into(),
            })?;
        let job = decode(id.as_bytes(), &v)?;
        Ok((v, job))
    }

    /// Removes a final job's record (a binary log shipment superseded by
    /// the next one).
    pub fn remove_job(&self, id: &str) -> Result<()> {
        if self.job(id)?.state.is_final() {
            self.jobs.remove(id.as_bytes())?;
        }
        Ok(())
    }

    /// Every job, oldest first.
    pub fn jobs(&self) -> Result<Vec<JobRecord>> {
        all(&self.jobs, b"")
    }

    /// Applies `f` to a job atomically (compare-and-swap, retried).
    fn update_job(&self, id: &str, f: impl Fn(&mut JobRecord) -> Result<()>) -> Result<JobRecord> {
        loop {
            let (old, mut job) = self.job_raw(id)?;
            f(&mut job)?;
            let new = encode(&job);
            if self
                .jobs
                .compare_and_swap(id.as_bytes(), Some(&old), Some(new))?
                .is_ok()
            {
                return Ok(job);
            }
        }
    }

    /// Durable before it returns, so a controller that dies now fails the
    /// job on restart instead of running it a second time.
    pub fn start_job(&self, id: &str, now: i64) -> Result<JobRecord> {
        let job = self.update_job(id, |j| {
            transition(j, JobState::Running)?;
            j.started_at = Some(now);
            Ok(())
        })?;
        self.flush()?;
        Ok(job)
    }

    /// Records the snapshot a running job committed.
    pub fn set_job_snapshot(&self, id: &str, snapshot_id: &str) -> Result<JobRecord> {
        self.update_job(id, |j| {
            j.snapshot_id = Some(snapshot_id.into());
            Ok(())
        })
    }

    pub fn job_progress(
        &self,
        id: &str,
        step: &str,
        files: u64,
        bytes: u64,
        total: u64,
    ) -> Result<JobRecord> {
        self.update_job(id, |j| {
            j.step = step.into();
            j.files = files;
            j.bytes = bytes;
            j.total_bytes = total;
            Ok(())
        })
    }

    /// Records what happened to a job after it ended (an agent finished its
    /// swap when it started again); its state stays.
    pub fn note_job(&self, id: &str, step: &str) -> Result<JobRecord> {
        self.update_job(id, |j| {
            j.step = step.into();
            Ok(())
        })
    }

    /// Keeps what the agent reported about a job (checked JSON, bounded by the caller).
    pub fn job_report(&self, id: &str, report: &str) -> Result<JobRecord> {
        self.update_job(id, |j| {
            j.report = report.into();
            Ok(())
        })
    }

    /// Ends a job in a final state; durable before it returns. A failed job
    /// with retries left queues its retry in the same transaction, to start
    /// after its backoff (SPEC SCH-3): a crash never loses nor doubles it.
    pub fn finish_job(
        &self,
        id: &str,
        state: JobState,
        snapshot_id: Option<String>,
        error: Option<String>,
        now: i64,
    ) -> Result<JobRecord> {
        let retry_id = format!("j{:08}", self.db.generate_id()?);
        let mut sums = self.summaries.write().unwrap();
        let job = (&self.jobs, &self.open_jobs)
            .transaction(|(jobs, open)| {
                let v = jobs.get(id.as_bytes())?.ok_or_else(|| {
                    ConflictableTransactionError::Abort(CatalogError::NotFound {
                        what: "job",
                        id: id.into(),
                    })
                })?;
                let mut j: JobRecord =
                    decode(id.as_bytes(), &v).map_err(ConflictableTransactionError::Abort)?;
                transition(&mut j, state).map_err(ConflictableTransactionError::Abort)?;
                j.finished_at = Some(now);
                if snapshot_id.is_some() {
                    j.snapshot_id = snapshot_id.clone();
                }
                j.error = error.clone();
                jobs.insert(id.as_bytes(), encode(&j))?;
                open.remove(id.as_bytes())?;
                if state == JobState::Failed && j.spec.retries_left > 0 {
                    let wait = j.spec.backoff_seconds.max(60);
                    let mut spec = j.spec.clone();
                    spec.retries_left -= 1;
                    spec.backoff_seconds = wait.saturating_mul(2);
                    let retry = JobRecord {
                        id: retry_id.clone(),
                        state: JobState::Queued,
                        step: format!(
                            "retry {} after: {}",
                            j.attempt + 1,
                            error.clone().unwrap_or_default()
                        ),
                        files: 0,
                        bytes: 0,
                        total_bytes: 0,
                        created_at: now,
                        finished_at: None,
                        snapshot_id: None,
                        error: None,
                        spec,
                        started_at: None,
                        not_before: Some(now.saturating_add(wait as i64)),
                        attempt: j.attempt + 1,
                        retry_of: Some(j.id.clone()),
                        report: String::new(),
                        ..j.clone()
                    };
                    jobs.insert(retry.id.as_bytes(), encode(&retry))?;
                    open.insert(retry.id.as_bytes(), &[])?;
                }
                Ok(j)
            })
            .map_err(tx_error)?;
        sums.job_ended(&job);
        drop(sums);
        self.flush()?;
        Ok(job)
    }

    /// Takes away a job's retries (its failure will be final).
    pub fn clear_retries(&self, id: &str) -> Result<JobRecord> {
        self.update_job(id, |j| {
            j.spec.retries_left = 0;
            Ok(())
        })
    }

    /// Moves a queued job's start (an offline agent's backoff), with a note.
    pub fn defer_job(&self, id: &str, not_before: i64, step: &str) -> Result<JobRecord> {
        self.update_job(id, |j| {
            if j.state != JobState::Queued {
                return Err(CatalogError::BadTransition {
                    id: j.id.clone(),
                    from: j.state,
                    to: JobState::Queued,
                });
            }
            j.not_before = Some(not_before);
            j.step = step.into();
            Ok(())
        })
    }

    /// Stores a single-use enrollment token (as its hash) until `expires_at`.
    pub fn add_token(&self, token: &str, expires_at: i64) -> Result<()> {
        self.tokens
            .insert(token_key(token), &expires_at.to_be_bytes())?;
        self.flush()
    }

    /// Consumes a token: succeeds once, before it expires, and never again.
    pub fn consume_token(&self, token: &str, now: i64) -> Result<()> {
        let removed = self.tokens.remove(token_key(token))?;
        self.flush()?;
        match removed {
            Some(v) if v.len() == 8 && i64::from_be_bytes(v.as_ref().try_into().unwrap()) > now => {
                Ok(())
            }
            _ => Err(CatalogError::BadToken),
        }
    }
}

fn tx_error(e: TransactionError<CatalogError>) -> CatalogError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => CatalogError::Sled(e),
    }
}

fn transition(j: &mut JobRecord, to: JobState) -> Result<()> {
    if !j.state.may_become(to) {
        return Err(CatalogError::BadTransition {
            id: j.id.clone(),
            from: j.state,
            to,
        });
    }
    j.state = to;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str) -> AgentRecord {
        AgentRecord {
            id: id.into(),
            hostname: format!("{id}.example"),
            version: "0.1.0".into(),
            cert_sha256: "ab".repeat(32),
            enrolled_at: 1,
            last_seen: 1,
            revoked: false,
            labels: Default::default(),
        }
    }

    fn domain(agent: &str, name: &str) -> DomainRecord {
        DomainRecord {
            binlog: false,
            name: name.into(),
            agent_id: agent.into(),
            path: format!("/var/www/{name}"),
            size_bytes: 10,
            databases: vec!["mariadb:wp".into()],
            aliases: Vec::new(),
            site_type: "wordpress".into(),
            source: "config".into(),
            root_missing: false,
            analysis: None,
        }
    }

    #[test]
    fn plans_record_each_change_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let run = |cron: &str, kind: &str| PlannedRun {
            cron: cron.into(),
            kind: kind.into(),
        };
        {
            let c = Catalog::open(dir.path()).unwrap();
            let first = c
                .update_plan(
                    "a1",
                    "x.test",
                    "full",
                    vec![run("0 3 * * 0", "full")],
                    "small, low",
                    100,
                )
                .unwrap()
                .expect("a first plan is a change");
            assert_eq!(first.from, "");
            assert_eq!(first.to, "full (full 0 3 * * 0)");
            // The same plan again: nothing changes; a new reason is kept quietly.
            assert!(c
                .update_plan(
                    "a1",
                    "x.test",
                    "full",
                    vec![run("0 3 * * 0", "full")],
                    "small, low",
                    200
                )
                .unwrap()
                .is_none());
            assert!(c
                .update_plan(
                    "a1",
                    "x.test",
                    "full",
                    vec![run("0 3 * * 0", "full")],
                    "medium, low",
                    300
                )
                .unwrap()
                .is_none());
            let p = c.plan("a1", "x.test").unwrap().unwrap();
            assert_eq!(
                (p.reason.as_str(), p.since, p.changes.len()),
                ("medium, low", 100, 1)
            );
            let up = c
                .update_plan(
                    "a1",
                    "x.test",
                    "incremental",
                    vec![run("0 */6 * * *", "incremental"), run("0 3 * * 0", "full")],
                    "medium, high",
                    400,
                )
                .unwrap()
                .unwrap();
            assert_eq!(up.from, "full (full 0 3 * * 0)");
            assert_eq!(up.why, "medium, high");
            c.flush().unwrap();
        }
        let c = Catalog::open(dir.path()).unwrap();
        let p = c.plan("a1", "x.test").unwrap().unwrap();
        assert_eq!(
            (p.strategy.as_str(), p.since, p.changes.len()),
            ("incremental", 400, 2)
        );
        c.put_agent(&AgentRecord {
            id: "a1".into(),
            hostname: "h".into(),
            version: "v".into(),
            cert_sha256: "00".into(),
            enrolled_at: 0,
            last_seen: 0,
            revoked: false,
            labels: Default::default(),
        })
        .unwrap();
        c.revoke_agent("a1").unwrap();
        assert!(c.plan("a1", "x.test").unwrap().is_none());
    }

    #[test]
    fn a_reopen_waits_for_the_lock_of_a_catalog_still_closing() {
        let dir = tempfile::tempdir().unwrap();
        let held = Catalog::open(dir.path()).unwrap();
        let err = open_db_waiting(dir.path(), std::time::Duration::from_millis(50)).unwrap_err();
        assert!(err.to_string().contains("could not acquire lock"), "{err}");
        let closer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(held);
        });
        let c = Catalog::open(dir.path()).unwrap();
        closer.join().unwrap();
        assert!(c.agents().unwrap().is_empty());
    }

    #[test]
    fn everything_survives_a_restart_and_running_jobs_fail() {
        let dir = tempfile::tempdir().unwrap();
        let (queued, running, done) = {
            let c = Catalog::open(dir.path()).unwrap();
            c.put_agent(&agent("a1")).unwrap();
            c.set_domains("a1", &[domain("a1", "x.test"), domain("a1", "y.test")])
                .unwrap();
            c.add_snapshot(&SnapshotRecord {
                id: "s1".into(),
                domain: "x.test".into(),
                agent_id: "a1".into(),
                time: 5,
                kind: "full".into(),
                content: "files".into(),
                total_bytes: 1,
                stored_bytes: 1,
                run_id: String::new(),
            })
            .unwrap();
            let q = c
                .create_job("backup", "x.test", "a1", JobSpec::default(), 10)
                .unwrap();
            let r = c
                .create_job("backup", "y.test", "a1", JobSpec::default(), 11)
                .unwrap();
            c.start_job(&r.id, 5).unwrap();
            let d = c
                .create_job("backup", "x.test", "a1", JobSpec::default(), 12)
                .unwrap();
            c.start_job(&d.id, 5).unwrap();
            c.finish_job(&d.id, JobState::Succeeded, Some("s1".into()), None, 13)
                .unwrap();
            c.flush().unwrap();
            (q.id, r.id, d.id)
        };
        let c = Catalog::open(dir.path()).unwrap();
        assert_eq!(c.agents().unwrap(), vec![agent("a1")]);
        assert_eq!(c.domains().unwrap().len(), 2);
        assert_eq!(c.snapshots(Some("x.test")).unwrap()[0].id, "s1");
        assert!(c.snapshots(Some("y.test")).unwrap().is_empty());
        let jobs = c.jobs().unwrap();
        assert_eq!(
            jobs.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
            [queued.clone(), running.clone(), done.clone()]
        );
        assert_eq!(c.job(&queued).unwrap().state, JobState::Queued);
        let r = c.job(&running).unwrap();
        assert_eq!(r.state, JobState::Failed);
        assert!(r.error.unwrap().contains("restarted"));
        assert_eq!(c.job(&done).unwrap().snapshot_id.as_deref(), Some("s1"));

        // The summaries are rebuilt from what was stored, the job the
        // restart failed included, and follow a forget.
        c.with_summaries(|s| {
            let x = s.get("a1", "x.test").unwrap();
            assert_eq!(x.last_good_backup.as_ref().unwrap().id, done);
            assert_eq!((x.snapshots, x.newest_time()), (1, Some(5)));
            assert_eq!(s.get("a1", "y.test").unwrap().failure_streak, 1);
            assert_eq!(s.snapshots, 1);
        });
        let s1 = c.snapshots(Some("x.test")).unwrap().remove(0);
        c.remove_snapshot(&s1).unwrap();
        c.with_summaries(|s| {
            let x = s.get("a1", "x.test").unwrap();
            assert_eq!((x.snapshots, x.newest_time()), (0, None));
            assert_eq!(s.snapshots, 0);
        });
    }

    /// SPEC SCH-3: a failed run with retries left queues exactly one retry
    /// after its backoff, doubling it; the last failure is final. Scheduled
    /// jobs and their schedule marks are written together.
    #[test]
    fn failed_runs_retry_with_backoff_exactly_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        let spec = JobSpec {
            backup_kind: "incremental".into(),
            trigger: "schedule".into(),
            retries_left: 2,
            backoff_seconds: 300,
            ..Default::default()
        };
        let j = c.new_job("backup", "x.test", "a1", spec, 1000).unwrap();
        c.queue(
            std::slice::from_ref(&j),
            &[("a1\0x.test\0incremental".into(), 900)],
        )
        .unwrap();
        assert_eq!(c.fired("a1\0x.test\0incremental").unwrap(), Some(900));
        c.start_job(&j.id, 1000).unwrap();
        c.finish_job(
            &j.id,
            JobState::Failed,
            None,
            Some("disk full".into()),
            1100,
        )
        .unwrap();
        let open = c.open_jobs().unwrap();
        assert_eq!(open.len(), 1);
        let r1 = &open[0];
        assert_eq!(
            (
                r1.attempt,
                r1.not_before,
                r1.retry_of.as_deref(),
                r1.spec.retries_left
            ),
            (1, Some(1400), Some(j.id.as_str()), 1)
        );
        assert!(r1.step.contains("disk full"));
        c.start_job(&r1.id, 1400).unwrap();
        c.finish_job(&r1.id, JobState::Failed, None, Some("again".into()), 1500)
            .unwrap();
        let r2 = c.open_jobs().unwrap().pop().unwrap();
        assert_eq!((r2.attempt, r2.not_before), (2, Some(2100)));
        c.start_job(&r2.id, 2100).unwrap();
        c.finish_job(&r2.id, JobState::Failed, None, Some("third".into()), 2200)
            .unwrap();
        assert!(c.open_jobs().unwrap().is_empty(), "no retries left");
        // Cancelled jobs are not retried; nor are ones whose retries were cleared.
        let k = c
            .new_job(
                "backup",
                "x.test",
                "a1",
                JobSpec {
                    retries_left: 3,
                    ..Default::default()
                },
                1,
            )
            .unwrap();
        c.queue(std::slice::from_ref(&k), &[]).unwrap();
        c.finish_job(&k.id, JobState::Cancelled, None, None, 2)
            .unwrap();
        let g = c
            .create_job(
                "backup",
                "x.test",
                "a1",
                JobSpec {
                    retries_left: 3,
                    ..Default::default()
                },
                1,
            )
            .unwrap();
        c.clear_retries(&g.id).unwrap();
        c.finish_job(&g.id, JobState::Failed, None, Some("offline".into()), 2)
            .unwrap();
        assert!(c.open_jobs().unwrap().is_empty());
        // The open index is rebuilt on open.
        let q = c
            .create_job("backup", "y.test", "a1", JobSpec::default(), 5)
            .unwrap();
        drop(c);
        let c = Catalog::open(dir.path()).unwrap();
        assert_eq!(
            c.open_jobs()
                .unwrap()
                .iter()
                .map(|j| j.id.clone())
                .collect::<Vec<_>>(),
            [q.id]
        );
    }

    #[test]
    fn jobs_only_move_forward() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        let j = c
            .create_job("backup", "x.test", "a1", JobSpec::default(), 1)
            .unwrap();
        assert!(matches!(
            c.finish_job(&j.id, JobState::Succeeded, None, None, 2),
            Err(CatalogError::BadTransition { .. })
        ));
        c.start_job(&j.id, 5).unwrap();
        c.job_progress(&j.id, "uploading", 3, 300, 1000).unwrap();
        c.finish_job(&j.id, JobState::Cancelled, None, None, 3)
            .unwrap();
        assert!(c.start_job(&j.id, 5).is_err());
        let j = c.job(&j.id).unwrap();
        assert_eq!(
            (j.state, j.files, j.finished_at),
            (JobState::Cancelled, 3, Some(3))
        );
        assert!(matches!(c.job("nope"), Err(CatalogError::NotFound { .. })));
    }

    #[test]
    fn tokens_work_once_before_they_expire_and_are_stored_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        c.add_token("secret-token-1", 100).unwrap();
        c.add_token("secret-token-2", 100).unwrap();
        assert!(matches!(
            c.consume_token("wrong", 50),
            Err(CatalogError::BadToken)
        ));
        c.consume_token("secret-token-1", 50).unwrap();
        assert!(matches!(
            c.consume_token("secret-token-1", 50),
            Err(CatalogError::BadToken)
        ));
        assert!(matches!(
            c.consume_token("secret-token-2", 100),
            Err(CatalogError::BadToken)
        ));
        drop(c);
        // No token in the catalog's files.
        for e in walk(dir.path()) {
            let bytes = std::fs::read(&e).unwrap();
            assert!(
                !bytes.windows(12).any(|w| w == b"secret-token"),
                "{}",
                e.display()
            );
        }
    }

    #[test]
    fn revoking_an_agent_drops_its_domains() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        c.put_agent(&agent("a1")).unwrap();
        c.put_agent(&agent("a2")).unwrap();
        c.set_domains("a1", &[domain("a1", "x.test")]).unwrap();
        c.set_domains("a2", &[domain("a2", "z.test")]).unwrap();
        c.revoke_agent("a1").unwrap();
        assert!(c.agent("a1").unwrap().unwrap().revoked);
        let names: Vec<String> = c.domains().unwrap().into_iter().map(|d| d.name).collect();
        assert_eq!(names, ["z.test"]);
        assert!(c.revoke_agent("a9").is_err());
    }

    fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}
