//! Opening and creating repositories; reading blobs, trees and snapshots.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use rayon::prelude::*;

use crate::config::RepoConfig;
use crate::content_edit;
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{self, Index};
use crate::keys::{self, KdfParams};
use crate::pack::{self, BlobType};
use crate::snapshot::{Content, Snapshot};
use crate::storage::{Storage, StorageError};
use crate::tree::{NodeKind, Tree};

/// Answers "which of these blobs does the repository have?" for a repository
/// whose index is not loaded here (an agent asks its controller, DESIGN §3).
pub trait KnownBlobs: Send + Sync {
    fn have(&self, ids: &[Id]) -> Result<Vec<bool>>;
}

pub struct Repository {
    storage: Arc<dyn Storage>,
    known_blobs: Option<Arc<dyn KnownBlobs>>,
    /// Packs name a group once (format v1.2), or each member (v1.1, for a
    /// controller a release older: see `set_group_records`).
    group_records: bool,
    /// Groups of rows are laid out by column (format v1.3), unless the
    /// controller is older: see `set_group_columns`.
    group_columns: bool,
    key: MasterKey,
    key_file: Id,
    config: RepoConfig,
    index: RwLock<Index>,
    /// Decrypted, verified tree blobs; whole tree packs are fetched at once, so
    /// walking a snapshot costs one request per tree pack, not per directory.
    trees: Mutex<HashMap<Id, Arc<Vec<u8>>>>,
    /// Resolved files that served as bases of edited blob lists: a walk of a
    /// site's dumps resolves each day's list from the day before's.
    bases: Mutex<ResolvedFiles>,
}

/// Key material and tuning of a repository, for [`Repository::with_access`].
pub struct Access {
    /// 64 bytes: encryption key, then blob-id key.
    pub master_key: Vec<u8>,
    pub config_json: Vec<u8>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Access { .. }")
    }
}

/// Past this many cached tree bytes the cache starts over (bounded memory).
const TREE_CACHE_BYTES: usize = 256 << 20;
/// Trees larger than this are not cached: a directory's tree is a few KiB,
/// a day's edited blob list of a large table megabytes, read once to be
/// resolved (the resolved list is what the base cache keeps).
const TREE_CACHE_ONE: usize = 1 << 20;
/// Resolved files by tree and name (see `Repository::resolved_file`).
type ResolvedFiles = HashMap<(Id, Vec<u8>), Arc<crate::tree::Node>>;

/// Past this many ids in cached base files that cache starts over (64 MB).
const BASE_CACHE_IDS: usize = 2 << 20;

impl Repository {
    /// Creates a repository: config and a first key file. Refuses a location
    /// that already holds one.
    pub fn init(
        storage: Arc<dyn Storage>,
        passphrase: &[u8],
        config: RepoConfig,
        kdf: KdfParams,
    ) -> Result<Repository> {
        match storage.stat("config") {
            Ok(_) => {
                return Err(Error::AlreadyExists {
                    repo: storage.location(),
                })
            }
            Err(StorageError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if !storage.list("keys/")?.is_empty() {
            return Err(Error::AlreadyExists {
                repo: storage.location(),
            });
        }
        let key = MasterKey::generate();
        let key_file = keys::add(&*storage, &key, passphrase, kdf)?;
        let cfg = serde_json::to_vec(&config).expect("config serializes");
        storage.put("config", &key.seal(&cfg, 3))?;
        Ok(Repository::new(storage, key, key_file, config))
    }

    fn new(
        storage: Arc<dyn Storage>,
        key: MasterKey,
        key_file: Id,
        config: RepoConfig,
    ) -> Repository {
        Repository {
            storage,
            known_blobs: None,
            group_records: true,
            group_columns: true,
            key,
            key_file,
            config,
            index: RwLock::new(Index::default()),
            trees: Mutex::new(HashMap::new()),
            bases: Mutex::new(HashMap::new()),
        }
    }

    /// Opens a repository with a passphrase. The index is not loaded until
    /// [`Repository::load_index`].
    pub fn open(storage: Arc<dyn Storage>, passphrase: &[u8]) -> Result<Repository> {
        let stored = match storage.get("config") {
            Ok(b) => b,
            Err(StorageError::NotFound { .. }) => {
                return Err(Error::NotARepository {
                    repo: storage.location(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        let (key_file, key) = keys::open(&*storage, passphrase)?;
        let cfg = key.open(&stored, &"config")?;
        let config: RepoConfig =
            serde_json::from_slice(&cfg).map_err(|e| Error::corrupt("config", e.to_string()))?;
        if config.version != crate::config::FORMAT_VERSION {
            return Err(Error::corrupt(
                "config",
                format!("unsupported format version {}", config.version),
            ));
        }
        Ok(Repository::new(storage, key, key_file, config))
    }

    /// A repository reached with its key material rather than a passphrase
    /// (what a controller hands its agents), over `storage`, with `known` telling
    /// which blobs exist. Its index starts empty.
    pub fn with_access(
        storage: Arc<dyn Storage>,
        access: &Access,
        known: Arc<dyn KnownBlobs>,
    ) -> Result<Repository> {
        let key = MasterKey::from_bytes(&access.master_key)
            .ok_or_else(|| Error::Invalid("repository key must be 64 bytes".into()))?;
        let config: RepoConfig = serde_json::from_slice(&access.config_json)
            .map_err(|e| Error::Invalid(format!("repository config: {e}")))?;
        let mut repo = Repository::new(storage, key, Id([0; 32]), config);
        repo.known_blobs = Some(known);
        Ok(repo)
    }

    /// The key material and config that [`Repository::with_access`] takes.
    pub fn access(&self) -> Access {
        Access {
            master_key: self.key.to_bytes().to_vec(),
            config_json: serde_json::to_vec(&self.config).expect("config serializes"),
        }
    }

    /// Whether packs written here name each group once (format v1.2, the
    /// default) or each of its members (v1.1): an agent whose controller is
    /// a release older writes what that controller reads.
    pub fn set_group_records(&mut self, on: bool) {
        self.group_records = on;
    }

    pub fn group_records(&self) -> bool {
        self.group_records
    }

    /// Whether groups of rows are sealed laid out by column (format v1.3,
    /// the default) or as they are (v1.2): an agent whose controller is a
    /// release older writes what that controller reads.
    pub fn set_group_columns(&mut self, on: bool) {
        self.group_columns = on;
    }

    pub fn group_columns(&self) -> bool {
        self.group_columns
    }

    pub fn known_blobs(&self) -> Option<&Arc<dyn KnownBlobs>> {
        self.known_blobs.as_ref()
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    /// The key file this repository was opened with.
    pub fn key_file(&self) -> Id {
        self.key_file
    }

    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    pub fn index(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap()
    }

    /// The objects under `prefix` whose names are ids, as (id, key). Others
    /// (temp files, strays) are ignored.
    fn list_ids(&self, prefix: &str) -> Result<Vec<(Id, String)>> {
        Ok(self
            .storage
            .list(prefix)?
            .into_iter()
            .filter_map(|o| {
                o.key
                    .strip_prefix(prefix)?
                    .parse::<Id>()
                    .ok()
                    .map(|id| (id, o.key))
            })
            .collect())
    }

    /// Loads every index segment (in parallel). Call again to refresh.
    pub fn load_index(&self) -> Result<()> {
        let loaded: Vec<(Id, index::PackList)> = self
            .list_ids("index/")?
            .into_par_iter()
            .map(|(id, key)| {
                let stored = self.storage.get(&key)?;
                Ok((id, index::decode_segment(&self.key, &id, &stored)?))
            })
            .collect::<Result<_>>()?;
        let mut idx = Index::default();
        idx.reserve(
            loaded.iter().map(|(_, packs)| packs.len()).sum(),
            loaded
                .iter()
                .flat_map(|(_, packs)| packs)
                .map(|(_, entries)| entries.len())
                .sum(),
        );
        for (seg, packs) in loaded {
            idx.segments.insert(seg);
            for (p, entries) in packs {
                idx.add_pack(p, entries);
            }
        }
        *self.index.write().unwrap() = idx;
        Ok(())
    }

    /// Loads the index segments written since the last load (by agents writing
    /// straight to storage). Returns how many were new.
    pub fn refresh_index(&self) -> Result<usize> {
        let new: Vec<(Id, String)> = {
            let idx = self.index();
            self.list_ids("index/")?
                .into_iter()
                .filter(|(id, _)| !idx.segments.contains(id))
                .collect()
        };
        let loaded: Vec<(Id, index::PackList)> = new
            .into_par_iter()
            .map(|(id, key)| {
                let stored = self.storage.get(&key)?;
                Ok((id, index::decode_segment(&self.key, &id, &stored)?))
            })
            .collect::<Result<_>>()?;
        let n = loaded.len();
        let mut idx = self.index.write().unwrap();
        for (seg, packs) in loaded {
            idx.segments.insert(seg);
            for (p, entries) in packs {
                idx.add_pack(p, entries);
            }
        }
        Ok(n)
    }

    /// Adds one decoded index segment (verified against `id`) to the in-memory
    /// index without writing anything; returns its packs.
    pub fn add_segment(&self, id: &Id, stored: &[u8]) -> Result<index::PackList> {
        let packs = index::decode_segment(&self.key, id, stored)?;
        let mut idx = self.index.write().unwrap();
        idx.segments.insert(*id);
        for (p, e) in &packs {
            idx.add_pack(*p, e.clone());
        }
        Ok(packs)
    }

    /// Adds a durable pack's blobs to the in-memory index (its segment follows).
    pub fn index_pack(&self, pack: Id, entries: Vec<pack::PackEntry>) {
        self.index.write().unwrap().add_pack(pack, entries);
    }

    /// Packs present in storage but in no index segment (left by a killed backup).
    /// Reads their headers and indexes them, so their blobs are reused.
    pub fn adopt_unindexed_packs(&self) -> Result<usize> {
        self.adopt(false)
    }

    /// As [`Repository::adopt_unindexed_packs`], but each pack is read whole
    /// and verified blob by blob (`pack::verify`) first: for a repository
    /// that others write to (a fleet's agents), where a header proves nothing.
    pub fn adopt_verified_packs(&self) -> Result<usize> {
        self.adopt(true)
    }

    fn adopt(&self, verify: bool) -> Result<usize> {
        let listed = self.storage.list("data/")?;
        let orphans: Vec<(Id, u64)> = {
            let idx = self.index();
            listed
                .iter()
                .filter_map(|o| pack::id_of_key(&o.key).map(|id| (id, o.size)))
                .filter(|(id, _)| !idx.has_pack(id))
                .collect()
        };
        if orphans.is_empty() {
            return Ok(0);
        }
        let headers: Vec<(Id, Vec<pack::PackEntry>)> = orphans
            .par_iter()
            .filter_map(|(id, size)| match self.adoptable(id, *size, verify) {
                Ok(entries) => Some((*id, entries)),
                Err(e) => {
                    // A torn upload on a backend without atomic puts; gc removes it.
                    tracing::warn!(pack = %id, error = %e, "skipping unreadable unindexed pack");
                    None
                }
            })
            .collect();
        let n = headers.len();
        if n > 0 {
            self.write_index_segment(&headers)?;
        }
        Ok(n)
    }

    fn adoptable(&self, id: &Id, size: u64, verify: bool) -> Result<Vec<pack::PackEntry>> {
        if verify {
            // Packs are far smaller; a larger object is nobody's honest pack.
            if size > 1 << 30 {
                return Err(Error::corrupt(format!("pack {id}"), "larger than 1 GiB"));
            }
            pack::verify(&self.key, id, &self.storage.get(&pack::key_of(id))?)
        } else {
            pack::read_header(&*self.storage, &self.key, id, size)
        }
    }

    /// Writes one index segment and adds its packs to the in-memory index.
    pub fn write_index_segment(&self, packs: &[(Id, Vec<pack::PackEntry>)]) -> Result<Id> {
        let stored = index::encode_segment(&self.key, packs);
        let id = Id::of_stored(&stored);
        self.storage.put(&format!("index/{id}"), &stored)?;
        let mut idx = self.index.write().unwrap();
        idx.segments.insert(id);
        for (p, e) in packs {
            idx.add_pack(*p, e.clone());
        }
        Ok(id)
    }

    /// Adds packs whose segment `seg` is already written to the in-memory index.
    pub fn add_written_segment(&self, seg: Id, packs: &[(Id, Vec<pack::PackEntry>)]) {
        let mut idx = self.index.write().unwrap();
        idx.segments.insert(seg);
        for (p, e) in packs {
            idx.add_pack(*p, e.clone());
        }
    }

    /// Drops packs from the in-memory index (gc, before it deletes them).
    pub fn unindex_packs(&self, packs: &[Id]) {
        let mut idx = self.index.write().unwrap();
        for p in packs {
            idx.remove_pack(p);
        }
    }

    /// Records that segment `new` replaces the segments `old` (gc).
    pub fn replace_segments(&self, old: &HashSet<Id>, new: Id) {
        let mut idx = self.index.write().unwrap();
        idx.segments.retain(|s| !old.contains(s));
        idx.segments.insert(new);
    }

    /// Adds packs whose segment is already written to the in-memory index.
    pub(crate) fn add_indexed(&self, packs: &[(Id, Vec<pack::PackEntry>)]) {
        let mut idx = self.index.write().unwrap();
        for (p, e) in packs {
            idx.add_pack(*p, e.clone());
        }
    }

    /// Reads, decrypts and verifies one blob.
    pub fn read_blob(&self, id: &Id) -> Result<Vec<u8>> {
        let loc = self
            .index()
            .get(id)
            .ok_or(Error::BlobNotFound { id: *id })?;
        let env = self.storage.get_range(
            &pack::key_of(&loc.pack),
            loc.offset as u64,
            loc.length as u64,
        )?;
        self.key.open_blob(id, &env)
    }

    /// A tree with every edited blob list resolved (see `content_edit`).
    pub fn load_tree(&self, id: &Id) -> Result<Tree> {
        let mut tree = self.parsed_tree(id)?;
        for n in &mut tree.nodes {
            if n.content_edit.is_some() {
                let what = format!("tree {id}, file {:?}", n.name);
                resolve_into(self, n, 1, &what)?;
            }
        }
        Ok(tree)
    }

    /// File `name` of tree `id` with its blob list resolved (only that
    /// file's: another file of a base tree may be edited from trees gc has
    /// dropped, since nothing reads them through this one). Each level of a
    /// chain is resolved once and dropped once the level above is made from
    /// it, unless the bounded base cache keeps it: a day's list of a large
    /// table is 500,000 ids (16 MB), and a chain is 16 deep.
    fn resolved_file(
        &self,
        id: &Id,
        name: &[u8],
        depth: usize,
        what: &str,
    ) -> Result<Arc<crate::tree::Node>> {
        let key = (*id, name.to_vec());
        if let Some(n) = self.bases.lock().unwrap().get(&key).cloned() {
            return Ok(n);
        }
        if depth > content_edit::MAX_CHAIN {
            return Err(too_deep(what));
        }
        // Taken out of its tree, which goes before the chain below is read:
        // each level holds only its own edits while the next resolves.
        let mut node = self
            .parsed_tree(id)?
            .into_node(name)
            .filter(|b| b.kind == NodeKind::File)
            .ok_or_else(|| {
                Error::corrupt(
                    what.to_string(),
                    format!("its base tree {id} has no file of that name"),
                )
            })?;
        if node.content_edit.is_some() {
            resolve_into(self, &mut node, depth + 1, what)?;
        }
        let node = Arc::new(node);
        self.cache_base(key, &node);
        Ok(node)
    }

    fn cache_base(&self, key: (Id, Vec<u8>), node: &Arc<crate::tree::Node>) {
        let mut cache = self.bases.lock().unwrap();
        if cache.values().map(|n| n.content.len()).sum::<usize>() + node.content.len()
            > BASE_CACHE_IDS
        {
            cache.clear();
        }
        cache.insert(key, node.clone());
    }

    /// A tree as stored: edited blob lists unresolved.
    pub(crate) fn parsed_tree(&self, id: &Id) -> Result<Tree> {
        if let Some(b) = self.trees.lock().unwrap().get(id).cloned() {
            return Tree::from_bytes(id, &b);
        }
        let loc = self
            .index()
            .get(id)
            .ok_or(Error::BlobNotFound { id: *id })?;
        let entries: Vec<pack::PackEntry> = match self.index().pack(&loc.pack) {
            Some(es) if es.iter().all(|e| e.kind == BlobType::Tree) => es.to_vec(),
            _ => return Tree::from_bytes(id, &self.read_blob(id)?),
        };
        let end = entries
            .iter()
            .map(|e| e.offset as u64 + e.length as u64)
            .max()
            .unwrap_or(0);
        let buf = self.storage.get_range(&pack::key_of(&loc.pack), 0, end)?;
        let mut wanted = None;
        let mut cache = self.trees.lock().unwrap();
        if cache.values().map(|v| v.len()).sum::<usize>() > TREE_CACHE_BYTES {
            cache.clear();
        }
        for e in &entries {
            let env = &buf[e.offset as usize..(e.offset + e.length) as usize];
            // Only the asked-for blob must be sound; a bad neighbour fails when asked for.
            match self.key.open_blob(&e.id, env) {
                Ok(plain) => {
                    let plain = Arc::new(plain);
                    if e.id == *id {
                        wanted = Some(plain.clone());
                    }
                    if plain.len() <= TREE_CACHE_ONE {
                        cache.insert(e.id, plain);
                    }
                }
                Err(err) if e.id == *id => return Err(err),
                Err(_) => {}
            }
        }
        drop(cache);
        match wanted {
            Some(b) => Tree::from_bytes(id, &b),
            None => Tree::from_bytes(id, &self.read_blob(id)?),
        }
    }

    pub fn blob_kind(&self, id: &Id) -> Option<BlobType> {
        self.index().get(id).map(|l| l.kind)
    }

    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<Id> {
        let stored = self
            .key
            .seal(&serde_json::to_vec(snap).expect("snapshot serializes"), 3);
        let id = Id::of_stored(&stored);
        self.storage.put(&format!("snapshots/{id}"), &stored)?;
        Ok(id)
    }

    /// Every snapshot, oldest first.
    pub fn snapshots(&self) -> Result<Vec<(Id, Snapshot)>> {
        let mut out: Vec<(Id, Snapshot)> = self
            .list_ids("snapshots/")?
            .into_par_iter()
            .map(|(id, key)| {
                let plain = self
                    .key
                    .open(&self.storage.get(&key)?, &format_args!("snapshot {id}"))?;
                let snap: Snapshot = serde_json::from_slice(&plain)
                    .map_err(|e| Error::corrupt(format!("snapshot {id}"), e.to_string()))?;
                Ok((id, snap))
            })
            .collect::<Result<_>>()?;
        out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// Resolves `latest` (the newest files snapshot, optionally within a
    /// domain) or a unique id prefix.
    pub fn find_snapshot(&self, spec: &str, domain: Option<&str>) -> Result<(Id, Snapshot)> {
        self.find_snapshot_of(spec, domain, Content::Files)
    }

    /// Like `find_snapshot`; `latest` means the newest snapshot holding `content`.
    pub fn find_snapshot_of(
        &self,
        spec: &str,
        domain: Option<&str>,
        content: Content,
    ) -> Result<(Id, Snapshot)> {
        let all = self.snapshots()?;
        let in_domain = |s: &Snapshot| domain.is_none_or(|d| s.domain == d);
        if spec == "latest" {
            let newest = all
                .into_iter()
                .rfind(|(_, s)| in_domain(s) && s.content == content);
            return newest.ok_or_else(|| {
                Error::SnapshotNotFound(format!(
                    "latest{}",
                    domain.map(|d| format!(" in {d}")).unwrap_or_default()
                ))
            });
        }
        if spec.is_empty() || !spec.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::SnapshotNotFound(spec.to_string()));
        }
        let spec_l = spec.to_ascii_lowercase();
        let mut matches: Vec<_> = all
            .into_iter()
            .filter(|(id, s)| id.to_hex().starts_with(&spec_l) && in_domain(s))
            .collect();
        match matches.len() {
            0 => Err(Error::SnapshotNotFound(spec.to_string())),
            1 => Ok(matches.pop().unwrap()),
            _ => Err(Error::AmbiguousSnapshot(spec.to_string())),
        }
    }

    /// Every blob reachable from the given root trees (trees and data,
    /// and the trees edited blob lists are read from).
    pub fn reachable(&self, roots: &[Id]) -> Result<HashSet<Id>> {
        let reach = self.reach(roots)?;
        let mut all = reach.blobs;
        all.extend(reach.bases);
        Ok(all)
    }

    /// Like `reachable`, with the trees only read for their blob lists
    /// apart: what they list is not reached through them.
    pub fn reach(&self, roots: &[Id]) -> Result<Reach> {
        let mut reach = Reach::default();
        self.walk(roots, &mut reach)?;
        Ok(reach)
    }

    /// Marks every blob reachable from `roots` (as `reachable` finds them)
    /// in `live`, walking no tree it already holds.
    pub fn mark_live(&self, roots: &[Id], live: &mut LiveSet) -> Result<()> {
        self.walk(roots, live)
    }

    /// Walks the trees below `roots` that `marks` has not seen.
    fn walk(&self, roots: &[Id], marks: &mut dyn Marks) -> Result<()> {
        let mut stack: Vec<Id> = roots.to_vec();
        while let Some(t) = stack.pop() {
            if !marks.enter(t) {
                continue;
            }
            let tree = self.load_tree(&t)?;
            for n in tree.nodes {
                marks.node(n.content, n.bases);
                if let Some(s) = n.subtree {
                    stack.push(s);
                }
            }
        }
        Ok(())
    }
}

/// What a walk of trees records.
trait Marks {
    /// Records tree `t`; whether it was new (only then is it read).
    fn enter(&mut self, t: Id) -> bool;
    /// A node's blob list and the trees that list was edited from.
    fn node(&mut self, listed: Vec<Id>, bases: Vec<Id>);
}

impl Marks for Reach {
    fn enter(&mut self, t: Id) -> bool {
        self.blobs.insert(t)
    }

    fn node(&mut self, listed: Vec<Id>, bases: Vec<Id>) {
        self.blobs.extend(listed);
        self.bases.extend(bases);
    }
}

impl Marks for LiveSet {
    fn enter(&mut self, t: Id) -> bool {
        self.insert(&t);
        self.trees.insert(t)
    }

    fn node(&mut self, listed: Vec<Id>, bases: Vec<Id>) {
        for id in listed.iter().chain(&bases) {
            self.insert(id);
        }
    }
}

/// The blobs gc keeps: the trees it walked by id (a walk must never take an
/// unseen tree for a seen one), every blob by the first 8 bytes of its id.
/// A fleet's 60 million blobs cost ~12 bytes each this way, not ~50 in a set
/// of ids; a dead blob whose id shares 8 bytes with a live one is kept (the
/// safe side), never the reverse.
#[derive(Debug, Default)]
pub struct LiveSet {
    trees: HashSet<Id>,
    prefixes: HashSet<u64>,
}

impl LiveSet {
    fn prefix(id: &Id) -> u64 {
        u64::from_le_bytes(id.0[..8].try_into().expect("8 of 32 bytes"))
    }

    pub fn insert(&mut self, id: &Id) {
        self.prefixes.insert(Self::prefix(id));
    }

    /// Whether `id` is live (or shares its first 8 bytes with a live blob).
    pub fn contains(&self, id: &Id) -> bool {
        self.prefixes.contains(&Self::prefix(id))
    }

    /// Live blobs, counted by distinct prefix.
    pub fn len(&self) -> usize {
        self.prefixes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }
}

/// Resolves `node`'s edited blob list from its base file, `depth` trees down.
fn resolve_into(
    repo: &Repository,
    node: &mut crate::tree::Node,
    depth: usize,
    what: &str,
) -> Result<()> {
    let Some(edit) = node.content_edit.take() else {
        return Ok(());
    };
    let name = std::os::unix::ffi::OsStrExt::as_bytes(node.name_os()?.as_os_str()).to_vec();
    let from = repo.resolved_file(&edit.base, &name, depth, what)?;
    if from.bases.len() >= content_edit::MAX_CHAIN {
        return Err(too_deep(what));
    }
    node.content = content_edit::apply(&from.content, &edit.edits, what)?;
    node.bases = std::iter::once(edit.base)
        .chain(from.bases.iter().copied())
        .collect();
    Ok(())
}

fn too_deep(what: &str) -> Error {
    Error::corrupt(
        what.to_string(),
        format!(
            "its blob list is edited from a chain of more than {} trees",
            content_edit::MAX_CHAIN
        ),
    )
}

/// What a walk of trees reached.
#[derive(Debug, Default)]
pub struct Reach {
    /// Trees walked and the blobs their files list.
    pub blobs: HashSet<Id>,
    /// Trees read only for the blob lists edited from them (possibly also
    /// in `blobs`, when a root reaches them too).
    pub bases: HashSet<Id>,
}

/// A new local repository under `dir` with a cheap key derivation, for tests.
#[cfg(test)]
pub(crate) fn test_repository(dir: &std::path::Path) -> Repository {
    Repository::init(
        Arc::new(crate::storage::LocalStorage::new(dir)),
        b"pw",
        Default::default(),
        KdfParams {
            m_cost_kib: 8,
            t_cost: 1,
            p_cost: 1,
        },
    )
    .unwrap()
}
