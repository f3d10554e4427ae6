//! The fleet repository's one owner. Agents chunk, compress and encrypt, but
//! they hold the key, so nothing they send is believed: every pack is
//! verified blob by blob before it is indexed, index segments and snapshot
//! objects are written only here, and a snapshot is committed with the
//! controller's clock and the catalog's name for its host.
//!
//! No transport here: the gRPC services adapt calls to these methods and map
//! [`StoreError`] to a status in one place (`agent_service::status`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use cairn_repo::id::Id;
use cairn_repo::pack;
use cairn_repo::repository::Repository;
use cairn_repo::snapshot::{Content, Snapshot};

/// The largest object (pack) an agent may hand over.
pub const MAX_OBJECT: usize = 128 << 20;
/// Bytes of unfinished uploads one agent may hold in the controller's memory.
pub const MAX_AGENT_INFLIGHT: u64 = 256 << 20;
/// A snapshot object is small JSON; anything larger is a lie.
const MAX_SNAPSHOT: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// What the agent sent is false or malformed (counted and logged).
    #[error("{0}")]
    Refused(String),
    /// The call is not this job's to make.
    #[error("{0}")]
    Denied(String),
    /// The agent went too fast: something it relies on is not stored yet.
    #[error("{0}")]
    NotReady(String),
    /// The agent holds too much unfinished upload in the controller.
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Repo(#[from] cairn_repo::Error),
}

impl From<cairn_repo::storage::StorageError> for StoreError {
    fn from(e: cairn_repo::storage::StorageError) -> Self {
        StoreError::Repo(e.into())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A running backup job as the store sees it.
pub struct JobCtx<'a> {
    pub job_id: &'a str,
    pub agent_id: &'a str,
    /// The host name the catalog holds for the agent.
    pub host: &'a str,
    pub domain: &'a str,
}

#[derive(Default)]
struct JobState {
    packs: HashSet<Id>,
    committed: Option<Id>,
}

pub struct Store {
    repo: Arc<Repository>,
    jobs: Mutex<HashMap<String, JobState>>,
    inflight: Mutex<HashMap<String, u64>>,
}

/// Upload bytes an agent holds in memory; given back on drop.
pub struct Inflight<'s> {
    store: &'s Store,
    agent: String,
    bytes: u64,
}

impl Inflight<'_> {
    /// Accounts `n` more bytes, refusing past the agent's cap.
    pub fn grow(&mut self, n: u64) -> Result<()> {
        let mut m = self.store.inflight.lock().unwrap();
        let held = m.entry(self.agent.clone()).or_default();
        if *held + n > MAX_AGENT_INFLIGHT {
            return Err(StoreError::Busy(format!(
                "more than {} MiB of unfinished uploads from this agent",
                MAX_AGENT_INFLIGHT >> 20
            )));
        }
        *held += n;
        self.bytes += n;
        Ok(())
    }

    /// Gives back `n` bytes (an object finished).
    pub fn shrink(&mut self, n: u64) {
        let n = n.min(self.bytes);
        let mut m = self.store.inflight.lock().unwrap();
        if let Some(held) = m.get_mut(&self.agent) {
            *held = held.saturating_sub(n);
        }
        self.bytes -= n;
    }
}

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        let n = self.bytes;
        self.shrink(n);
    }
}

impl Store {
    pub fn new(repo: Arc<Repository>) -> Store {
        Store {
            repo,
            jobs: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    pub fn repo(&self) -> &Arc<Repository> {
        &self.repo
    }

    pub fn inflight(&self, agent: &str) -> Inflight<'_> {
        Inflight {
            store: self,
            agent: agent.to_string(),
            bytes: 0,
        }
    }

    /// Verifies a whole pack an agent uploaded, stores it, then writes its
    /// index segment: durable first, then known, so `HaveBlobs` never names
    /// a blob that is not stored. Returns the number of blobs.
    pub fn ingest(&self, job: &JobCtx, id: Id, data: &[u8]) -> Result<usize> {
        if data.len() > MAX_OBJECT {
            return Err(StoreError::Refused(format!(
                "pack {id} is larger than {MAX_OBJECT} bytes"
            )));
        }
        let entries = pack::verify(self.repo.key(), &id, data)
            .map_err(|e| StoreError::Refused(e.to_string()))?;
        let n = entries.len();
        if !self.repo.index().packs().contains_key(&id) {
            self.repo.storage().put(&pack::key_of(&id), data)?;
            self.repo.write_index_segment(&[(id, entries)])?;
        }
        self.jobs
            .lock()
            .unwrap()
            .entry(job.job_id.to_string())
            .or_default()
            .packs
            .insert(id);
        Ok(n)
    }

    /// Direct mode: a pack the agent wrote to the storage itself. It is read
    /// back and verified like an uploaded one; a pack that fails is deleted
    /// (nothing indexed refers to it).
    pub fn register(&self, job: &JobCtx, id: Id) -> Result<usize> {
        let key = pack::key_of(&id);
        if self.repo.index().packs().contains_key(&id) {
            return Ok(0);
        }
        let info = self.repo.storage().stat(&key)?;
        if info.size > MAX_OBJECT as u64 {
            let _ = self.repo.storage().delete(&key);
            return Err(StoreError::Refused(format!(
                "pack {id} is larger than {MAX_OBJECT} bytes"
            )));
        }
        let data = self.repo.storage().get(&key)?;
        let entries = match pack::verify(self.repo.key(), &id, &data) {
            Ok(e) => e,
            Err(e) => {
                if let Err(d) = self.repo.storage().delete(&key) {
                    tracing::warn!(pack = %id, error = %d, "could not delete a refused pack");
                }
                return Err(StoreError::Refused(e.to_string()));
            }
        };
        let n = entries.len();
        self.repo.write_index_segment(&[(id, entries)])?;
        self.jobs
            .lock()
            .unwrap()
            .entry(job.job_id.to_string())
            .or_default()
            .packs
            .insert(id);
        Ok(n)
    }

    /// Commits the snapshot a backup job proposes. It must be of the job's
    /// domain, the job's first, and every blob its trees reference must be
    /// indexed; time, host, agent and job are the controller's, whatever the
    /// agent wrote. Returns the id of the snapshot as stored.
    pub fn commit(&self, job: &JobCtx, proposed: &[u8]) -> Result<(Id, Snapshot)> {
        if self
            .jobs
            .lock()
            .unwrap()
            .get(job.job_id)
            .is_some_and(|j| j.committed.is_some())
        {
            return Err(StoreError::Denied(format!(
                "job {} already committed its snapshot",
                job.job_id
            )));
        }
        let plain = self
            .repo
            .key()
            .open_bounded(proposed, &"proposed snapshot", MAX_SNAPSHOT)
            .map_err(|e| StoreError::Refused(e.to_string()))?;
        let mut snap: Snapshot = serde_json::from_slice(&plain)
            .map_err(|e| StoreError::Refused(format!("snapshot: {e}")))?;
        if snap.domain != job.domain || snap.content != Content::Files {
            return Err(StoreError::Denied(format!(
                "the snapshot is of {:?} ({}), not of the job's domain {:?}",
                snap.domain, snap.content, job.domain
            )));
        }
        if !self.repo.index().contains(&snap.tree) {
            return Err(StoreError::NotReady(
                "the snapshot's root tree is not in the repository".into(),
            ));
        }
        let reachable = self.repo.reachable(&[snap.tree]).map_err(|e| match e {
            cairn_repo::Error::BlobNotFound { id } => {
                StoreError::NotReady(format!("tree {id} of the snapshot is not stored"))
            }
            other => StoreError::Refused(format!("the snapshot's trees: {other}")),
        })?;
        {
            let idx = self.repo.index();
            if let Some(missing) = reachable.iter().find(|b| !idx.contains(b)) {
                return Err(StoreError::NotReady(format!(
                    "blob {missing} of the snapshot is not stored"
                )));
            }
        }
        snap.time = chrono::Utc::now();
        snap.host = job.host.to_string();
        snap.agent = Some(job.agent_id.to_string());
        snap.job = Some(job.job_id.to_string());
        let mut jobs = self.jobs.lock().unwrap();
        let state = jobs.entry(job.job_id.to_string()).or_default();
        if state.committed.is_some() {
            return Err(StoreError::Denied(format!(
                "job {} already committed its snapshot",
                job.job_id
            )));
        }
        let id = self.repo.save_snapshot(&snap)?;
        state.committed = Some(id);
        Ok((id, snap))
    }

    /// The snapshot a job committed, if it did.
    pub fn committed(&self, job_id: &str) -> Option<Id> {
        self.jobs
            .lock()
            .unwrap()
            .get(job_id)
            .and_then(|j| j.committed)
    }

    /// Forgets a finished job's bookkeeping.
    pub fn end_job(&self, job_id: &str) {
        self.jobs.lock().unwrap().remove(job_id);
    }
}
