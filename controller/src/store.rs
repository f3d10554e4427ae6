//! The fleet repository's one owner. Agents chunk, compress and encrypt, but
//! they hold the key, so nothing they send is believed: every pack is
//! verified blob by blob before it is indexed, index segments and snapshot
//! objects are written only here, and a snapshot is committed with the
//! controller's clock and the catalog's name for its host.
//!
//! It also forgets snapshots and collects garbage while backups run, under
//! this protocol (ARCHITECTURE.md "Fleet gc"; `tests/model.rs` checks it):
//!
//! 1. gc opens an *epoch*: from now on every commit records its root tree.
//! 2. gc lists the snapshots in storage and marks what they reach (slow; no
//!    lock, backups go on).
//! 3. Under the state lock — the one that also serialises `have`, indexing
//!    and `commit` — gc adds to the live set the roots recorded in the epoch,
//!    the roots of every running job (a backup's parent, a restore's
//!    snapshot), every blob `have` reported present to a running job, and
//!    every pack a running job uploaded; a pack with no live blob, older
//!    than the grace period, is then dropped from the index at once.
//! 4. gc writes one consolidated index segment, deletes the segments it
//!    replaces, and last the dead packs.
//!
//! A commit checks, under the same lock, that every blob it references is
//! indexed. So a snapshot committed before (3) is marked live, and one
//! committed after (3) cannot reference a deleted blob: no committed snapshot
//! ever does.
//!
//! No transport here: the gRPC services adapt calls to these methods and map
//! [`StoreError`] to a status in one place (`agent_service::status`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use cairn_repo::id::Id;
use cairn_repo::pack;
use cairn_repo::repository::Repository;
use cairn_repo::snapshot::{Content, Snapshot};
use cairn_repo::storage::Presigned;

/// The largest object (pack) an agent may hand over.
pub const MAX_OBJECT: usize = 128 << 20;
/// Bytes of unfinished uploads one agent may hold in the controller's memory.
pub const MAX_AGENT_INFLIGHT: u64 = 256 << 20;
/// A pack no index lists yet may be mid-upload (written, not yet indexed or
/// registered): gc leaves such packs alone for at least this long.
const UNINDEXED_GRACE: Duration = Duration::from_secs(15 * 60);
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
    /// What the job backs up: its snapshot must hold that.
    pub content: Content,
    /// The run the job belongs to ("" for none), stamped into its snapshot.
    pub run_id: &'a str,
}

#[derive(Default)]
struct JobState {
    agent: String,
    /// Trees the job stands on: a backup's parent, a restore's snapshot.
    roots: Vec<Id>,
    /// Blobs `have` told the job are present.
    pins: HashSet<Id>,
    /// Packs the job uploaded.
    packs: HashSet<Id>,
    /// Grouped blobs the job uploaded (each in its own scope, checked).
    grouped: HashSet<Id>,
    /// Blobs below `roots`, walked the first time a grouped blob is asked
    /// about: the only grouped blobs the job may name besides its own.
    below_roots: Option<Arc<HashSet<Id>>>,
    committed: Option<Id>,
}

/// Presigned PUTs of one pack: only the job that asked may hold them, and
/// the pack is verified only once they have all expired (`settling`), so
/// its bytes cannot change between verification and use.
struct Upload {
    job: String,
    until: Instant,
    settling: bool,
}

#[derive(Default)]
struct State {
    jobs: HashMap<String, JobState>,
    presigned: HashMap<Id, Upload>,
    /// While a gc marks: the roots committed since it listed the snapshots.
    epoch: Option<Vec<Id>>,
}

pub struct Store {
    repo: Arc<Repository>,
    state: Mutex<State>,
    inflight: Mutex<HashMap<String, u64>>,
    /// One gc at a time.
    gc_running: Mutex<()>,
}

pub struct GcOptions {
    pub dry_run: bool,
    /// Packs younger than this are kept whatever they hold.
    pub grace: Duration,
}

#[derive(Debug, Default, Clone)]
pub struct GcReport {
    pub dry_run: bool,
    pub blobs_live: u64,
    pub packs_total: u64,
    pub packs_deleted: u64,
    pub packs_kept_young: u64,
    pub bytes_freed: u64,
    pub segments_replaced: u64,
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
            state: Mutex::new(State::default()),
            inflight: Mutex::new(HashMap::new()),
            gc_running: Mutex::new(()),
        }
    }

    /// A job starts: what it stands on (`roots`) stays until it ends.
    pub fn begin_job(&self, job_id: &str, agent: &str, roots: Vec<Id>) {
        self.state.lock().unwrap().jobs.insert(
            job_id.to_string(),
            JobState {
                agent: agent.to_string(),
                roots,
                ..Default::default()
            },
        );
    }

    /// Which of `ids` the repository has. Those it has stay until the job ends.
    /// The blobs below a running job's roots (empty for an unknown job).
    fn below_roots(&self, job_id: &str) -> Arc<HashSet<Id>> {
        let roots = {
            let st = self.state.lock().unwrap();
            match st.jobs.get(job_id) {
                Some(j) if j.below_roots.is_some() => {
                    return j.below_roots.clone().expect("checked")
                }
                Some(j) => j.roots.clone(),
                None => return Arc::default(),
            }
        };
        // Trees are read outside the lock; a root that cannot be walked
        // offers nothing.
        let below = Arc::new(self.repo.reachable(&roots).unwrap_or_default());
        if let Some(j) = self.state.lock().unwrap().jobs.get_mut(job_id) {
            j.below_roots = Some(below.clone());
        }
        below
    }

    pub fn have(&self, agent: &str, job_id: &str, ids: &[Id]) -> Vec<bool> {
        let grouped = {
            let idx = self.repo.index();
            ids.iter().any(|i| idx.get(i).is_some_and(|l| l.grouped))
        };
        let below = if grouped {
            self.below_roots(job_id)
        } else {
            Arc::default()
        };
        let mut st = self.state.lock().unwrap();
        let answer: Vec<bool> = {
            let idx = self.repo.index();
            let own = st.jobs.get(job_id).filter(|j| j.agent == agent);
            // A grouped blob is offered only from the job's own base or
            // uploads: a restore naming it is granted its whole group, and
            // a group holds one site's blobs.
            ids.iter()
                .map(|i| {
                    idx.get(i).is_some_and(|l| {
                        !l.grouped
                            || below.contains(i)
                            || own.is_some_and(|j| j.grouped.contains(i))
                    })
                })
                .collect()
        };
        let present = || {
            ids.iter()
                .zip(&answer)
                .filter(|(_, a)| **a)
                .map(|(i, _)| *i)
        };
        for (id, j) in st.jobs.iter_mut() {
            if j.agent == agent && id == job_id {
                j.pins.extend(present());
            }
        }
        answer
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
        let entries = pack::verify_scoped(self.repo.key(), &id, data, Some(&self.scope(job)))
            .map_err(|e| StoreError::Refused(e.to_string()))?;
        let n = entries.len();
        if !self.repo.index().has_pack(&id) {
            self.repo.storage().put(&pack::key_of(&id), data)?;
        }
        self.index_pack(job, id, entries)?;
        Ok(n)
    }

    /// The only scope a job's groups may have: its agent's and domain's, as
    /// the agent names them (`cairn_dump::BackupRequest::writer`).
    fn scope(&self, job: &JobCtx) -> Id {
        self.repo
            .key()
            .group_scope(&format!("{}\n{}", job.agent_id, job.domain))
    }

    /// Writes a verified, durable pack's index segment, then makes it known.
    fn index_pack(&self, job: &JobCtx, id: Id, entries: Vec<pack::PackEntry>) -> Result<()> {
        let packs = [(id, entries)];
        let seg = cairn_repo::index::encode_segment(self.repo.key(), &packs);
        let seg_id = Id::of_stored(&seg);
        self.repo.storage().put(&format!("index/{seg_id}"), &seg)?;
        let mut st = self.state.lock().unwrap();
        self.repo.add_written_segment(seg_id, &packs);
        if let Some(j) = st.jobs.get_mut(job.job_id) {
            j.packs.insert(id);
            let grouped = packs[0].1.iter().filter(|e| e.grouped);
            j.grouped.extend(grouped.map(|e| e.id));
        }
        Ok(())
    }

    /// A presigned PUT of pack `id` for this job, valid for `ttl`. Never for
    /// a pack already stored (a second PUT would replace verified bytes), nor
    /// for one another job is uploading or that is being verified.
    pub fn presign(&self, job: &JobCtx, id: Id, ttl: Duration) -> Result<Presigned> {
        if self.repo.index().has_pack(&id) {
            return Err(StoreError::Denied(format!(
                "pack {id} is stored already; stored packs are never written again"
            )));
        }
        let presigned = self
            .repo
            .storage()
            .presign_put(&pack::key_of(&id), ttl)?
            .ok_or_else(|| {
                StoreError::NotReady("this repository's storage cannot presign".into())
            })?;
        let mut st = self.state.lock().unwrap();
        if let Some(u) = st.presigned.get(&id) {
            if u.job != job.job_id || u.settling {
                return Err(StoreError::Denied(format!(
                    "pack {id} is being uploaded or verified for another job"
                )));
            }
        }
        st.presigned.insert(
            id,
            Upload {
                job: job.job_id.to_string(),
                until: Instant::now() + ttl,
                settling: false,
            },
        );
        if let Some(j) = st.jobs.get_mut(job.job_id) {
            j.packs.insert(id);
        }
        Ok(presigned)
    }

    /// How long until every presigned PUT of `id` has expired. At zero the
    /// pack is marked as being verified: no new PUT is handed out for it
    /// until [`Store::settled`].
    pub fn settle(&self, id: &Id) -> Duration {
        let mut st = self.state.lock().unwrap();
        match st.presigned.get_mut(id) {
            Some(u) => {
                let left = u.until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    u.settling = true;
                }
                left
            }
            None => Duration::ZERO,
        }
    }

    /// The pack's verification is over (indexed or refused).
    pub fn settled(&self, id: &Id) {
        self.state.lock().unwrap().presigned.remove(id);
    }

    /// Direct mode: a pack the agent wrote to the storage itself. It is read
    /// back and verified like an uploaded one; a pack that fails is deleted
    /// (nothing indexed refers to it).
    pub fn register(&self, job: &JobCtx, id: Id) -> Result<usize> {
        let key = pack::key_of(&id);
        if self.repo.index().has_pack(&id) {
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
        let entries = match pack::verify_scoped(self.repo.key(), &id, &data, Some(&self.scope(job)))
        {
            Ok(e) => e,
            Err(e) => {
                if let Err(d) = self.repo.storage().delete(&key) {
                    tracing::warn!(pack = %id, error = %d, "could not delete a refused pack");
                }
                return Err(StoreError::Refused(e.to_string()));
            }
        };
        let n = entries.len();
        self.index_pack(job, id, entries)?;
        Ok(n)
    }

    /// Commits the snapshot a backup job proposes. It must be of the job's
    /// domain, the job's first, and every blob its trees reference must be
    /// indexed; time, host, agent and job are the controller's, whatever the
    /// agent wrote. Returns the id of the snapshot as stored.
    pub fn commit(&self, job: &JobCtx, proposed: &[u8]) -> Result<(Id, Snapshot)> {
        let already =
            |id: &str| StoreError::Denied(format!("job {id} already committed its snapshot"));
        let known = self
            .state
            .lock()
            .unwrap()
            .jobs
            .get(job.job_id)
            .map(|j| j.committed.is_some());
        match known {
            None => {
                return Err(StoreError::Denied(format!(
                    "job {} is not running",
                    job.job_id
                )))
            }
            Some(true) => return Err(already(job.job_id)),
            Some(false) => {}
        }
        let plain = self
            .repo
            .key()
            .open_bounded(proposed, &"proposed snapshot", MAX_SNAPSHOT)
            .map_err(|e| StoreError::Refused(e.to_string()))?;
        let mut snap: Snapshot = serde_json::from_slice(&plain)
            .map_err(|e| StoreError::Refused(format!("snapshot: {e}")))?;
        if snap.domain != job.domain || snap.content != job.content {
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
        // The walk reads trees and may be slow: outside the lock. What it
        // found is checked against the index again under the lock.
        let reach = self.repo.reach(&[snap.tree]).map_err(|e| match e {
            cairn_repo::Error::BlobNotFound { id } => {
                StoreError::NotReady(format!("tree {id} of the snapshot is not stored"))
            }
            other => StoreError::Refused(format!("the snapshot's trees: {other}")),
        })?;
        snap.time = chrono::DateTime::from_timestamp(crate::clock::now(), 0).unwrap_or_default();
        snap.host = job.host.to_string();
        snap.agent = Some(job.agent_id.to_string());
        snap.job = Some(job.job_id.to_string());
        snap.run = (!job.run_id.is_empty()).then(|| job.run_id.to_string());
        let mut reachable = reach.blobs;
        let grouped = {
            let idx = self.repo.index();
            reachable
                .iter()
                .any(|b| idx.get(b).is_some_and(|l| l.grouped))
        };
        let below = if grouped || !reach.bases.is_empty() {
            self.below_roots(job.job_id)
        } else {
            Arc::default()
        };
        // A list edited from a tree reaches what that tree lists: only the
        // trees of the dump this job stands on (its own site's) may serve.
        if let Some(b) = reach.bases.iter().find(|b| !below.contains(*b)) {
            return Err(StoreError::Refused(format!(
                "the snapshot's blob list is edited from tree {b}, which is not of the dump the \
                 job stands on"
            )));
        }
        reachable.extend(reach.bases);
        let mut st = self.state.lock().unwrap();
        let state = st
            .jobs
            .get_mut(job.job_id)
            .ok_or_else(|| StoreError::Denied(format!("job {} is not running", job.job_id)))?;
        {
            let idx = self.repo.index();
            for b in &reachable {
                match idx.get(b) {
                    None => {
                        return Err(StoreError::NotReady(format!(
                            "blob {b} of the snapshot is not stored"
                        )))
                    }
                    // Its group's other members would be granted with it.
                    // A blob this job uploaded is in its own scope: every
                    // copy of it is in a group of this site's.
                    Some(l) if l.grouped && !state.grouped.contains(b) && !below.contains(b) => {
                        return Err(StoreError::Refused(format!(
                            "blob {b} of the snapshot is in a group of another site"
                        )))
                    }
                    Some(_) => {}
                }
            }
        }
        if state.committed.is_some() {
            return Err(already(job.job_id));
        }
        let id = self.repo.save_snapshot(&snap)?;
        state.committed = Some(id);
        state.roots.push(snap.tree);
        if let Some(epoch) = st.epoch.as_mut() {
            epoch.push(snap.tree);
        }
        Ok((id, snap))
    }

    /// Deletes snapshot objects; their data goes at the next gc.
    pub fn forget(&self, ids: &[Id]) -> Result<()> {
        for id in ids {
            self.repo.storage().delete(&format!("snapshots/{id}"))?;
        }
        Ok(())
    }

    /// Collects garbage while backups run (the protocol in the module docs).
    pub fn gc(&self, opts: &GcOptions) -> Result<GcReport> {
        let _one = self.gc_running.lock().unwrap();
        self.state.lock().unwrap().epoch = Some(Vec::new());
        let r = self.collect(opts);
        self.state.lock().unwrap().epoch = None;
        r
    }

    fn collect(&self, opts: &GcOptions) -> Result<GcReport> {
        // (2) Mark from the snapshots in storage; backups go on meanwhile.
        let roots: Vec<Id> = self
            .repo
            .snapshots()?
            .into_iter()
            .map(|(_, s)| s.tree)
            .collect();
        let mut live = cairn_repo::repository::LiveSet::default();
        self.repo.mark_live(&roots, &mut live)?;
        let listed = self.repo.storage().list("data/")?;
        let now = SystemTime::now();
        let young = |modified: Option<SystemTime>| {
            modified
                .and_then(|m| now.duration_since(m).ok())
                .is_none_or(|age| age < opts.grace)
        };
        let ages: HashMap<Id, (Option<SystemTime>, u64)> = listed
            .iter()
            .filter_map(|o| pack::id_of_key(&o.key).map(|p| (p, (o.modified, o.size))))
            .collect();
        let mut r = GcReport {
            dry_run: opts.dry_run,
            packs_total: ages.len() as u64,
            ..Default::default()
        };

        // (3) Decide and unindex, atomically with have, indexing and commit.
        let mut st = self.state.lock().unwrap();
        let mut late: Vec<Id> = st.epoch.as_mut().map(std::mem::take).unwrap_or_default();
        let mut protected: HashSet<Id> = HashSet::new();
        for j in st.jobs.values() {
            late.extend(&j.roots);
            for id in &j.pins {
                live.insert(id);
            }
            protected.extend(&j.packs);
        }
        self.repo.mark_live(&late, &mut live)?;
        r.blobs_live = live.len() as u64;
        let (dead, kept, segments) = {
            let idx = self.repo.index();
            let mut dead: Vec<Id> = Vec::new();
            let mut kept = Vec::new();
            for (p, entries) in idx.packs() {
                let (modified, size) = ages.get(p).copied().unwrap_or((None, 0));
                let is_young = young(modified);
                if is_young {
                    r.packs_kept_young += 1;
                }
                if protected.contains(p) || is_young || entries.iter().any(|e| live.contains(&e.id))
                {
                    kept.push(*p);
                } else {
                    dead.push(*p);
                    r.bytes_freed += size;
                }
            }
            // Packs in storage that no index lists (a refused or interrupted
            // upload): old enough, they go too.
            let settled = |m: Option<SystemTime>| {
                m.and_then(|m| now.duration_since(m).ok())
                    .is_some_and(|age| age >= opts.grace.max(UNINDEXED_GRACE))
            };
            for (p, (modified, size)) in &ages {
                if !idx.has_pack(p) && !protected.contains(p) && settled(*modified) {
                    dead.push(*p);
                    r.bytes_freed += size;
                }
            }
            (dead, kept, idx.segments.clone())
        };
        r.packs_deleted = dead.len() as u64;
        r.segments_replaced = segments.len() as u64;
        if opts.dry_run {
            return Ok(r);
        }
        self.repo.unindex_packs(&dead);
        drop(st);

        // (4) One segment for what the index held at (3), then the segments
        // it replaces, then the dead packs: a crash anywhere leaves an index
        // that lists at least every live blob.
        // Packs are never changed, and only gc (one at a time) drops one
        // from the index: each kept pack's entries are still there.
        let plain = cairn_repo::index::segment_plain_of(&self.repo.index(), &kept)
            .map_err(|p| cairn_repo::Error::Other(format!("gc: kept pack {p} left the index")))?;
        let seg = cairn_repo::index::seal_segment(self.repo.key(), &plain);
        drop(plain);
        let seg_id = Id::of_stored(&seg);
        self.repo.storage().put(&format!("index/{seg_id}"), &seg)?;
        self.repo.replace_segments(&segments, seg_id);
        for s in segments.iter().filter(|s| **s != seg_id) {
            self.repo.storage().delete(&format!("index/{s}"))?;
        }
        for p in &dead {
            self.repo.storage().delete(&pack::key_of(p))?;
        }
        Ok(r)
    }

    /// The snapshot a job committed, if it did.
    pub fn committed(&self, job_id: &str) -> Option<Id> {
        self.state
            .lock()
            .unwrap()
            .jobs
            .get(job_id)
            .and_then(|j| j.committed)
    }

    /// A job ended: what it stood on and was told is no longer held for it.
    pub fn end_job(&self, job_id: &str) {
        self.state.lock().unwrap().jobs.remove(job_id);
    }
}
