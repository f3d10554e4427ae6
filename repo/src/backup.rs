//! Backup of a directory into a snapshot.
//!
//! The walk is recursive and parallel (rayon): the entries of a directory are
//! processed concurrently, so reading, hashing, compressing and encrypting keep
//! every core busy while uploads overlap on their own threads (see `saver`). A
//! directory's tree blob is saved once its children are done; the snapshot is
//! saved last, after every blob is durable and indexed.
//!
//! The walk is fd-relative: each directory is opened beneath its parent's
//! descriptor with `O_NOFOLLOW` and its entries are opened from it, and every
//! file read is checked (`fstat`) to be the very inode the walk listed. A
//! site user who swaps a directory or file for a symlink mid-backup cannot
//! make a root-run backup read anything outside the site.
//!
//! Change detection: *incremental* compares against the domain's latest
//! snapshot, *differential* against its latest full; a file whose size, mtime,
//! ctime and inode match reuses the recorded blobs without being read.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{ErrorKind, Read};
use std::os::fd::OwnedFd;
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

type HardLinks = HashMap<(u64, u64), (Vec<Id>, u64, crate::xattr::Xattrs)>;

pub struct BackupOptions {
    pub domain: String,
    pub kind: Kind,
    pub excludes: Excludes,
    pub host: String,
    pub tags: Vec<String>,
    /// What the tree is: a site's files, or a server's shipped binary log.
    pub content: Content,
}

/// Live counters a caller may poll for a progress bar.
#[derive(Debug, Default)]
pub struct Progress {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    /// The bytes the work will reach when known (a restore's snapshot size); 0 if not.
    pub total: AtomicU64,
    /// Set by another thread to stop the backup; it fails with [`Error::Cancelled`].
    pub cancel: std::sync::atomic::AtomicBool,
}

struct Ctx<'r> {
    repo: &'r Repository,
    saver: BlobSaver<'r>,
    opts: &'r BackupOptions,
    reuse: bool,
    over_index: bool,
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
        .filter(|(_, s)| s.domain == opts.domain && s.content == opts.content);
    let base = match opts.kind {
        Kind::Full => None,
        Kind::Incremental => mine.next_back(),
        Kind::Differential => mine.rfind(|(_, s)| s.kind == Kind::Full),
    };
    walk(repo, source, opts, progress, base.cloned(), true)
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
    walk(repo, source, opts, progress, parent, false)
}

fn check_source(source: &Path, opts: &BackupOptions) -> Result<()> {
    let meta = fs::metadata(source).map_err(|e| Error::io(source, e))?;
    if !meta.is_dir() {
        return Err(Error::Invalid(format!(
            "{} is not a directory",
            source.display()
        )));
    }
    // A server's shipped binary log belongs to no one domain.
    if opts.domain.is_empty() && opts.content != Content::Binlog {
        return Err(Error::Invalid("a domain name is required".into()));
    }
    Ok(())
}

/// `over_index`: the repository's index is loaded; a reused file's blobs
/// must be in it. Otherwise (through an oracle) the parent's blobs are trusted.
fn walk(
    repo: &Repository,
    source: &Path,
    opts: &BackupOptions,
    progress: &Progress,
    base: Option<(Id, Snapshot)>,
    over_index: bool,
) -> Result<(Id, Snapshot)> {
    let started = Instant::now();
    let began = chrono::Utc::now();
    // SCH-3: with no base to compare against, the first backup is a full one.
    let kind = if base.is_none() {
        Kind::Full
    } else {
        opts.kind
    };
    let ctx = Ctx {
        repo,
        saver: if over_index {
            BlobSaver::over_index(repo)
        } else {
            BlobSaver::new(repo, HashSet::new())
        },
        opts,
        reuse: kind != Kind::Full,
        over_index,
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
    let root = open_dir(None, source.as_os_str()).map_err(|e| Error::io(source, e))?;
    let tree = backup_dir(&ctx, &root, source, "", parent_tree.as_ref())?;
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
        // A shipped log holds what its spool held when reading began, not
        // what arrived while it was read: "shipped up to" (and a restore to a
        // moment) must not count on events it may lack. Anything else is
        // whole as of its end.
        time: match opts.content {
            Content::Binlog => began,
            _ => chrono::Utc::now(),
        },
        domain: opts.domain.clone(),
        host: opts.host.clone(),
        kind,
        content: opts.content,
        parent: base.map(|(id, _)| id),
        tree,
        source: source.display().to_string(),
        tags: opts.tags.clone(),
        excludes: opts.excludes.patterns().to_vec(),
        stats,
        tool_version: TOOL_VERSION.to_string(),
        agent: None,
        job: None,
        run: None,
    };
    let id = repo.save_snapshot(&snap)?;
    Ok((id, snap))
}

/// Opens a directory (beneath `at`, never through a symlink when `at` is given).
fn open_dir(at: Option<&OwnedFd>, name: &std::ffi::OsStr) -> std::io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(match at {
        Some(at) => rustix::fs::openat(at, name, flags | OFlags::NOFOLLOW, Mode::empty())?,
        None => rustix::fs::open(name, flags, Mode::empty())?,
    })
}

/// The metadata of `name` in `dir`, not following a symlink (an `O_PATH`
/// descriptor's `fstat`: the std `Metadata` of exactly that entry).
fn entry_meta(dir: &OwnedFd, name: &std::ffi::OsStr) -> std::io::Result<Metadata> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    File::from(fd).metadata()
}

/// An open refused because a symlink (or a non-directory) is now where the
/// walk saw something else.
fn swapped(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR))
}

/// Whether an opened file is the entry the walk listed.
fn same_entry(opened: &Metadata, listed: &Metadata) -> bool {
    opened.dev() == listed.dev()
        && opened.ino() == listed.ino()
        && opened.file_type() == listed.file_type()
}

fn list_dir(dir: &OwnedFd) -> std::io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for e in rustix::fs::Dir::read_from(dir)? {
        let e = e?;
        let name = e.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(std::ffi::OsStr::from_bytes(name).to_os_string());
        }
    }
    Ok(names)
}

fn backup_dir(
    ctx: &Ctx,
    dir_fd: &OwnedFd,
    dir: &Path,
    rel: &str,
    parent: Option<&Id>,
) -> Result<Id> {
    if ctx.progress.cancel.load(Ordering::Relaxed) {
        return Err(Error::Cancelled);
    }
    let mut names: Vec<OsString> = match list_dir(dir_fd) {
        Ok(names) => names,
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
            let m = match entry_meta(dir_fd, name) {
                Ok(m) => m,
                Err(e) => {
                    ctx.warn(format!("{}: vanished or unreadable: {e}", path.display()));
                    return Ok(None);
                }
            };
            #[cfg(test)]
            if let Some(hook) = race_tests::AFTER_STAT.lock().unwrap().as_ref() {
                hook(&path);
            }
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
                let sub = match open_dir(Some(dir_fd), name) {
                    Ok(fd) => fd,
                    Err(e) if swapped(&e) => {
                        ctx.warn(format!(
                            "{}: replaced while being backed up (no longer a directory); skipped",
                            path.display()
                        ));
                        return Ok(None);
                    }
                    Err(e) => {
                        ctx.warn(format!("{}: cannot read directory: {e}", path.display()));
                        return Ok(None);
                    }
                };
                match File::from(sub.try_clone().map_err(|e| Error::io(&path, e))?).metadata() {
                    Ok(now) if same_entry(&now, &m) => {}
                    _ => {
                        ctx.warn(format!(
                            "{}: replaced while being backed up; skipped",
                            path.display()
                        ));
                        return Ok(None);
                    }
                }
                n.xattrs = xattrs_of(ctx, &sub, &path);
                n.subtree = Some(backup_dir(ctx, &sub, &path, &rel_child, prev_sub)?);
                ctx.dirs.fetch_add(1, Ordering::Relaxed);
                Ok(Some(n))
            } else if ft.is_symlink() {
                let mut n = base_node(name, NodeKind::Symlink, &m);
                match rustix::fs::readlinkat(dir_fd, name.as_os_str(), Vec::new()) {
                    Ok(t) => n.set_target(std::ffi::OsStr::from_bytes(t.as_bytes())),
                    Err(e) => {
                        ctx.warn(format!("{}: cannot read symlink: {e}", path.display()));
                        return Ok(None);
                    }
                }
                Ok(Some(n))
            } else if ft.is_file() {
                file_node(ctx, dir_fd, &path, name, &m, prev)
            } else if let Some(kind) = special_kind(&ft) {
                // Recorded, never opened: opening a device can act on it.
                let mut n = base_node(name, kind, &m);
                n.rdev = m.rdev();
                Ok(Some(n))
            } else {
                ctx.warn(format!(
                    "{}: skipped socket (a running program's; it cannot be restored)",
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

/// The extended attributes of an open file or directory; unreadable ones
/// are a warning.
fn xattrs_of(ctx: &Ctx, fd: impl std::os::fd::AsFd, path: &Path) -> crate::xattr::Xattrs {
    crate::xattr::read(fd).unwrap_or_else(|e| {
        ctx.warn(format!(
            "{}: extended attributes unreadable: {e}",
            path.display()
        ));
        Default::default()
    })
}

/// The node kind of a FIFO or device node.
fn special_kind(ft: &std::fs::FileType) -> Option<NodeKind> {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        Some(NodeKind::Fifo)
    } else if ft.is_char_device() {
        Some(NodeKind::Char)
    } else if ft.is_block_device() {
        Some(NodeKind::Block)
    } else {
        None
    }
}

fn file_node(
    ctx: &Ctx,
    dir_fd: &OwnedFd,
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
        let present = |id: &Id| !ctx.over_index || ctx.repo.index().contains(id);
        if unchanged && p.content.iter().all(present) {
            // Changing an attribute changes ctime: the old ones still hold.
            n.content = p.content.clone();
            n.xattrs = p.xattrs.clone();
            return Ok(Some(n));
        }
    }
    let link_key = (m.dev(), m.ino());
    if m.nlink() > 1 {
        if let Some((content, size, xattrs)) = ctx.hardlinks.lock().unwrap().get(&link_key) {
            n.content = content.clone();
            n.size = *size;
            n.xattrs = xattrs.clone();
            return Ok(Some(n));
        }
    }
    // O_NONBLOCK: a fifo swapped in after the listing must not hang the walk.
    let opened = rustix::fs::openat(
        dir_fd,
        name,
        rustix::fs::OFlags::RDONLY
            | rustix::fs::OFlags::NOFOLLOW
            | rustix::fs::OFlags::NONBLOCK
            | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map(File::from)
    .map_err(std::io::Error::from);
    let mut f = match opened {
        Ok(f) if f.metadata().is_ok_and(|now| same_entry(&now, m)) => f,
        Ok(_) => {
            ctx.warn(format!(
                "{}: replaced while being backed up (now another file); skipped",
                path.display()
            ));
            return Ok(None);
        }
        Err(e) => {
            let what = if e.kind() == ErrorKind::NotFound {
                "vanished"
            } else if swapped(&e) {
                "replaced while being backed up (a symlink is there now); skipped"
            } else {
                "unreadable"
            };
            ctx.warn(format!("{}: {what}: {e}", path.display()));
            return Ok(None);
        }
    };
    n.xattrs = xattrs_of(ctx, &f, path);
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
            .insert(link_key, (n.content.clone(), n.size, n.xattrs.clone()));
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

#[cfg(test)]
mod race_tests {
    use std::sync::Mutex;

    use super::*;

    type Hook = Box<dyn Fn(&Path) + Send + Sync>;
    /// Runs after the walk has stat'ed an entry and before it opens it.
    pub static AFTER_STAT: Mutex<Option<Hook>> = Mutex::new(None);
    /// Held by each test that sets the hook: tests run in parallel.
    static ONE_HOOK: Mutex<()> = Mutex::new(());

    /// A shipped log's time is when its reading began: an event that reached
    /// the spool while it was read may be missing from it, so "shipped up
    /// to" must not count on it. Files and dumps are whole as of their end.
    #[test]
    fn a_shipped_log_is_dated_when_its_reading_began() {
        let _one = ONE_HOOK.lock().unwrap_or_else(|e| e.into_inner());
        let tmp = tempfile::tempdir().unwrap();
        let spool = tmp.path().join("spool");
        fs::create_dir_all(&spool).unwrap();
        fs::write(spool.join("mariadb-bin.000001"), b"events").unwrap();
        let repo = crate::repository::test_repository(&tmp.path().join("repo"));
        for content in [Content::Binlog, Content::Files] {
            let mid = std::sync::Arc::new(Mutex::new(None));
            let m = mid.clone();
            *AFTER_STAT.lock().unwrap() = Some(Box::new(move |_: &Path| {
                std::thread::sleep(std::time::Duration::from_millis(5));
                *m.lock().unwrap() = Some(chrono::Utc::now());
                std::thread::sleep(std::time::Duration::from_millis(5));
            }));
            let opts = BackupOptions {
                content,
                domain: "d.test".into(),
                kind: Kind::Full,
                excludes: Excludes::new::<&str>(&[]).unwrap(),
                host: "h".into(),
                tags: Vec::new(),
            };
            let result = run(&repo, &spool, &opts, &Progress::default());
            *AFTER_STAT.lock().unwrap() = None;
            let (_, snap) = result.unwrap();
            let mid = mid.lock().unwrap().expect("the walk read the spool");
            match content {
                Content::Binlog => assert!(snap.time < mid, "{} vs {mid}", snap.time),
                _ => assert!(snap.time > mid, "{} vs {mid}", snap.time),
            }
        }
    }

    /// A site user swaps a directory and a file for symlinks to a place
    /// outside the site between the walk's stat and its open: a root backup
    /// reads nothing from there, and says what it skipped.
    #[test]
    fn entries_swapped_for_symlinks_mid_backup_are_not_followed() {
        let _one = ONE_HOOK.lock().unwrap_or_else(|e| e.into_inner());
        let tmp = tempfile::tempdir().unwrap();
        let site = tmp.path().join("site");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(site.join("d")).unwrap();
        fs::write(site.join("d/a.txt"), b"site a").unwrap();
        fs::write(site.join("f.txt"), b"site f").unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("a.txt"), b"SECRET a").unwrap();
        fs::write(outside.join("secret.txt"), b"SECRET").unwrap();
        let (s, o) = (site.clone(), outside.clone());
        *AFTER_STAT.lock().unwrap() = Some(Box::new(move |p: &Path| {
            let swap = |name: &str, to: &Path| {
                let _ = fs::rename(s.join(name), s.join(format!("{name}.old")));
                std::os::unix::fs::symlink(to, s.join(name)).unwrap();
            };
            if p == s.join("d") {
                swap("d", &o);
            } else if p == s.join("f.txt") {
                swap("f.txt", &o.join("secret.txt"));
            }
        }));
        let repo = crate::repository::test_repository(&tmp.path().join("repo"));
        let opts = BackupOptions {
            content: Default::default(),
            domain: "d.test".into(),
            kind: Kind::Full,
            excludes: Excludes::new::<&str>(&[]).unwrap(),
            host: "h".into(),
            tags: Vec::new(),
        };
        let result = run(&repo, &site, &opts, &Progress::default());
        *AFTER_STAT.lock().unwrap() = None;
        let (_, snap) = result.unwrap();
        repo.load_index().unwrap();
        let restored = tmp.path().join("restored");
        crate::restore::restore(&repo, &snap.tree, &restored, &[]).unwrap();
        let mut stack = vec![restored.clone()];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                let m = fs::symlink_metadata(&p).unwrap();
                if m.is_dir() {
                    stack.push(p);
                } else if m.is_file() {
                    let data = fs::read(&p).unwrap();
                    assert!(
                        !String::from_utf8_lossy(&data).contains("SECRET"),
                        "{} holds data from outside the site",
                        p.display()
                    );
                }
            }
        }
        let warned = snap.stats.warnings.join("\n");
        assert!(
            warned.contains("replaced while being backed up"),
            "{warned}"
        );
    }
}
