//! Backup of a directory into a snapshot.
//!
//! The walk is recursive and parallel (rayon): the entries of a directory are
//! processed concurrently, so reading, hashing, compressing and encrypting keep
//! every core busy while uploads overlap on their own threads (see `saver`). A
//! directory's tree blob is saved once its children are done; the snapshot is
//! saved last, after every blob is durable and indexed.
//!
//! Change detection: *incremental* compares against the domain's latest
//! snapshot, *differential* against its latest full; a file whose size, mtime,
//! ctime and inode match reuses the recorded blobs without being read.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{ErrorKind, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::exclude::Excludes;
use crate::id::Id;
use crate::pack::BlobType;
use crate::repository::Repository;
use crate::saver::BlobSaver;
use crate::snapshot::{Content, Kind, Snapshot, Stats, TOOL_VERSION};
use crate::tree::{Node, NodeKind, Tree};

const MAX_WARNINGS: usize = 1000;

type HardLinks = HashMap<(u64, u64), (Vec<Id>, u64)>;

pub struct BackupOptions {
    pub domain: String,
    pub kind: Kind,
    pub excludes: Excludes,
    pub host: String,
    pub tags: Vec<String>,
}

/// Live counters a caller may poll for a progress bar.
#[derive(Debug, Default)]
pub struct Progress {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    /// Set by another thread to stop the backup; it fails with [`Error::Cancelled`].
    pub cancel: std::sync::atomic::AtomicBool,
}

struct Ctx<'r> {
    repo: &'r Repository,
    saver: BlobSaver<'r>,
    opts: &'r BackupOptions,
    reuse: bool,
    known: Option<HashSet<Id>>,
    /// (device, inode) → (content, size) of multiply-linked files already read.
    hardlinks: Mutex<HardLinks>,
    warnings: Mutex<Vec<String>>,
    progress: &'r Progress,
    files: AtomicU64,
    dirs: AtomicU64,
    total_bytes: AtomicU64,
    bytes_read: AtomicU64,
    seed: u64,
}

impl Ctx<'_> {
    fn warn(&self, msg: String) {
        tracing::warn!("{msg}");
        let mut w = self.warnings.lock().unwrap();
        if w.len() < MAX_WARNINGS {
            w.push(msg);
        }
    }
}

fn nanos(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

fn base_node(name: &std::ffi::OsStr, kind: NodeKind, m: &Metadata) -> Node {
    Node {
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime_ns: nanos(m.mtime(), m.mtime_nsec()),
        ctime_ns: nanos(m.ctime(), m.ctime_nsec()),
        inode: m.ino(),
        device: m.dev(),
        links: m.nlink(),
        ..Node::new(name, kind)
    }
}

/// Backs up `source` and writes a snapshot. Returns its id.
pub fn run(
    repo: &Repository,
    source: &Path,
    opts: &BackupOptions,
    progress: &Progress,
) -> Result<(Id, Snapshot)> {
    check_source(source, opts)?;
    let _lock = crate::lock::Lock::acquire_waiting(
        repo.storage().clone(),
        false,
        crate::lock::BACKUP_WAIT,
    )?;
    repo.load_index()?;
    let adopted = repo.adopt_unindexed_packs()?;
    if adopted > 0 {
        tracing::info!(
            packs = adopted,
            "indexed packs left by an interrupted backup"
        );
    }
    let snapshots = repo.snapshots()?;
    let mut mine = snapshots
        .iter()
        .filter(|(_, s)| s.domain == opts.domain && s.content == Content::Files);
    let base = match opts.kind {
        Kind::Full => None,
        Kind::Incremental => mine.next_back(),
        Kind::Differential => mine.rfind(|(_, s)| s.kind == Kind::Full),
    };
    let known: HashSet<Id> = repo.index().blob_ids().copied().collect();
    walk(repo, source, opts, progress, base.cloned(), Some(known))
}

/// A backup whose parent was chosen by someone else (the controller), in a
/// repository reached through a [`crate::repository::KnownBlobs`] oracle
/// rather than a loaded index: the agent's side of a fleet backup. The
/// caller's storage writes the packs, index segments and snapshot.
pub fn run_with_parent(
    repo: &Repository,
    source: &Path,
    opts: &BackupOptions,
    progress: &Progress,
    parent: Option<(Id, Snapshot)>,
) -> Result<(Id, Snapshot)> {
    check_source(source, opts)?;
    walk(repo, source, opts, progress, parent, None)
}

fn check_source(source: &Path, opts: &BackupOptions) -> Result<()> {
    let meta = fs::metadata(source).map_err(|e| Error::io(source, e))?;
    if !meta.is_dir() {
        return Err(Error::Invalid(format!(
            "{} is not a directory",
            source.display()
        )));
    }
    if opts.domain.is_empty() {
        return Err(Error::Invalid("a domain name is required".into()));
    }
    Ok(())
}

/// `known`: the repository's blobs, when its index is loaded; a reused file's
/// blobs must be among them. `None` trusts the parent snapshot's blobs.
fn walk(
    repo: &Repository,
    source: &Path,
    opts: &BackupOptions,
    progress: &Progress,
    base: Option<(Id, Snapshot)>,
    known: Option<HashSet<Id>>,
) -> Result<(Id, Snapshot)> {
    let started = Instant::now();
    // SCH-3: with no base to compare against, the first backup is a full one.
    let kind = if base.is_none() {
        Kind::Full
    } else {
        opts.kind
    };
    let ctx = Ctx {
        repo,
        saver: BlobSaver::new(repo, known.clone().unwrap_or_default()),
        opts,
        reuse: kind != Kind::Full,
        known,
        hardlinks: Mutex::new(HashMap::new()),
        warnings: Mutex::new(Vec::new()),
        progress,
        files: AtomicU64::new(0),
        dirs: AtomicU64::new(0),
        total_bytes: AtomicU64::new(0),
        bytes_read: AtomicU64::new(0),
        seed: repo.key().chunker_seed(),
    };
    let parent_tree = base.as_ref().map(|(_, s)| s.tree);
    let tree = backup_dir(&ctx, source, "", parent_tree.as_ref())?;
    let Ctx {
        saver,
        warnings,
        files,
        dirs,
        total_bytes,
        bytes_read,
        ..
    } = ctx;
    let saved = saver.finish()?;
    let stats = Stats {
        files: files.into_inner(),
        dirs: dirs.into_inner(),
        total_bytes: total_bytes.into_inner(),
        bytes_read: bytes_read.into_inner(),
        warnings: warnings.into_inner().unwrap(),
        ..saved.to_stats(started)
    };
    let snap = Snapshot {
        time: chrono::Utc::now(),
        domain: opts.domain.clone(),
        host: opts.host.clone(),
        kind,
        content: Content::Files,
        parent: base.map(|(id, _)| id),
        tree,
        source: source.display().to_string(),
        tags: opts.tags.clone(),
        excludes: opts.excludes.patterns().to_vec(),
        stats,
        tool_version: TOOL_VERSION.to_string(),
        agent: None,
        job: None,
    };
    let id = repo.save_snapshot(&snap)?;
    Ok((id, snap))
}

fn backup_dir(ctx: &Ctx, dir: &Path, rel: &str, parent: Option<&Id>) -> Result<Id> {
    if ctx.progress.cancel.load(Ordering::Relaxed) {
        return Err(Error::Cancelled);
    }
    let mut names: Vec<OsString> = match fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect(),
        Err(e) if !rel.is_empty() => {
            ctx.warn(format!("{}: cannot read directory: {e}", dir.display()));
            Vec::new()
        }
        Err(e) => return Err(Error::io(dir, e)),
    };
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let parent_tree = match parent {
        Some(id) if ctx.reuse => ctx.repo.load_tree(id).ok(),
        _ => None,
    };
    let nodes: Vec<Option<Node>> = names
        .par_iter()
        .map(|name| {
            let path = dir.join(name);
            let rel_child = if rel.is_empty() {
                name.to_string_lossy().into_owned()
            } else {
                format!("{rel}/{}", name.to_string_lossy())
            };
            let m = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    ctx.warn(format!("{}: vanished or unreadable: {e}", path.display()));
                    return Ok(None);
                }
            };
            let ft = m.file_type();
            if ctx.opts.excludes.is_excluded(&rel_child, ft.is_dir()) {
                return Ok(None);
            }
            let prev = parent_tree.as_ref().and_then(|t| t.find(name.as_bytes()));
            if ft.is_dir() {
                let mut n = base_node(name, NodeKind::Dir, &m);
                let prev_sub = prev
                    .filter(|p| p.kind == NodeKind::Dir)
                    .and_then(|p| p.subtree.as_ref());
                n.subtree = Some(backup_dir(ctx, &path, &rel_child, prev_sub)?);
                ctx.dirs.fetch_add(1, Ordering::Relaxed);
                Ok(Some(n))
            } else if ft.is_symlink() {
                let mut n = base_node(name, NodeKind::Symlink, &m);
                match fs::read_link(&path) {
                    Ok(t) => n.set_target(t.as_os_str()),
                    Err(e) => {
                        ctx.warn(format!("{}: cannot read symlink: {e}", path.display()));
                        return Ok(None);
                    }
                }
                Ok(Some(n))
            } else if ft.is_file() {
                file_node(ctx, &path, name, &m, prev)
            } else {
                ctx.warn(format!(
                    "{}: skipped special file (socket, fifo or device)",
                    path.display()
                ));
                Ok(None)
            }
        })
        .collect::<Result<_>>()?;
    let tree = Tree {
        nodes: nodes.into_iter().flatten().collect(),
    };
    ctx.saver.save(BlobType::Tree, &tree.to_bytes())
}

fn file_node(
    ctx: &Ctx,
    path: &Path,
    name: &std::ffi::OsStr,
    m: &Metadata,
    prev: Option<&Node>,
) -> Result<Option<Node>> {
    let mut n = base_node(name, NodeKind::File, m);
    n.size = m.len();
    ctx.files.fetch_add(1, Ordering::Relaxed);
    ctx.progress.files.fetch_add(1, Ordering::Relaxed);
    ctx.total_bytes.fetch_add(m.len(), Ordering::Relaxed);
    if let Some(p) = prev {
        let unchanged = p.kind == NodeKind::File
            && p.size == n.size
            && p.mtime_ns == n.mtime_ns
            && p.ctime_ns == n.ctime_ns
            && p.inode == n.inode;
        let present = |id: &Id| ctx.known.as_ref().is_none_or(|k| k.contains(id));
        if unchanged && p.content.iter().all(present) {
            n.content = p.content.clone();
            return Ok(Some(n));
        }
    }
    let link_key = (m.dev(), m.ino());
    if m.nlink() > 1 {
        if let Some((content, size)) = ctx.hardlinks.lock().unwrap().get(&link_key) {
            n.content = content.clone();
            n.size = *size;
            return Ok(Some(n));
        }
    }
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            let what = if e.kind() == ErrorKind::NotFound {
                "vanished"
            } else {
                "unreadable"
            };
            ctx.warn(format!("{}: {what}: {e}", path.display()));
            return Ok(None);
        }
    };
    let params = ctx.repo.config().chunker;
    let read = if m.len() < params.min as u64 {
        let mut buf = Vec::with_capacity(m.len() as usize);
        f.read_to_end(&mut buf)
            .map_err(|e| Error::io(path, e))
            .and_then(|_| {
                if !buf.is_empty() {
                    n.content.push(ctx.saver.save(BlobType::Data, &buf)?);
                }
                Ok(buf.len() as u64)
            })
    } else {
        crate::chunker::for_each_chunk(&mut f, params, ctx.seed, |chunk| {
            n.content.push(ctx.saver.save(BlobType::Data, chunk)?);
            ctx.progress
                .bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            Ok::<(), ChunkErr>(())
        })
        .map_err(|e| match e {
            ChunkErr::Io(io) => Error::io(path, io),
            ChunkErr::Repo(r) => r,
        })
    };
    let read = match read {
        Ok(n) => n,
        Err(Error::Io { source, .. }) => {
            ctx.warn(format!(
                "{}: read failed, skipped: {source}",
                path.display()
            ));
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    if m.len() < params.min as u64 {
        ctx.progress.bytes.fetch_add(read, Ordering::Relaxed);
    }
    ctx.bytes_read.fetch_add(read, Ordering::Relaxed);
    let after = f.metadata().ok();
    let changed = after.is_none_or(|a| {
        a.len() != m.len() || a.mtime() != m.mtime() || a.mtime_nsec() != m.mtime_nsec()
    });
    if changed || read != m.len() {
        ctx.warn(format!(
            "{}: changed while being read; stored {read} bytes as read",
            path.display()
        ));
    }
    n.size = read;
    if m.nlink() > 1 {
        ctx.hardlinks
            .lock()
            .unwrap()
            .insert(link_key, (n.content.clone(), n.size));
    }
    Ok(Some(n))
}

enum ChunkErr {
    Io(std::io::Error),
    Repo(Error),
}

impl From<std::io::Error> for ChunkErr {
    fn from(e: std::io::Error) -> Self {
        ChunkErr::Io(e)
    }
}

impl From<Error> for ChunkErr {
    fn from(e: Error) -> Self {
        ChunkErr::Repo(e)
    }
}
