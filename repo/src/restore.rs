//! Restore of a snapshot (or chosen paths) into a target directory.
//!
//! Every blob is verified (AEAD tag, then its id) before a byte is written.
//! Restore never writes outside the target: tree names are validated on load
//! (no `..`, `/`, empty or duplicate names), files are created with
//! `O_NOFOLLOW`, and a symlink already at a directory's place is refused, so no
//! write can be redirected through a symlink. Symlinks in the snapshot are
//! restored as links, never followed.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use filetime::FileTime;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::Repository;
use crate::tree::{Node, NodeKind, Tree};

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RestoreStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
}

struct Ctx<'r> {
    repo: &'r Repository,
    links: Mutex<HashMap<(u64, u64), PathBuf>>,
    files: AtomicU64,
    dirs: AtomicU64,
    symlinks: AtomicU64,
    bytes: AtomicU64,
    chown: bool,
}

/// Splits a snapshot path (`a/b/c`, leading `/` allowed) into checked components.
pub fn split_path(p: &str) -> Result<Vec<String>> {
    let parts: Vec<String> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_string)
        .collect();
    if parts.iter().any(|c| c == "..") {
        return Err(Error::Invalid(format!("path {p:?} must not contain '..'")));
    }
    Ok(parts)
}

/// Finds the node at `path` below `root`. An empty path is the root itself.
pub fn lookup(repo: &Repository, root: &Id, path: &str) -> Result<Option<Node>> {
    let parts = split_path(path)?;
    let mut tree = repo.load_tree(root)?;
    for (i, part) in parts.iter().enumerate() {
        let node = tree
            .find(part.as_bytes())
            .cloned()
            .ok_or_else(|| Error::PathNotFound {
                path: path.to_string(),
            })?;
        if i + 1 == parts.len() {
            return Ok(Some(node));
        }
        match (node.kind, node.subtree) {
            (NodeKind::Dir, Some(sub)) => tree = repo.load_tree(&sub)?,
            _ => {
                return Err(Error::PathNotFound {
                    path: path.to_string(),
                })
            }
        }
    }
    Ok(None)
}

/// Restores the tree `root` (or only `paths` inside it) below `target`.
///
/// Three phases: walk the trees, creating directories and symlinks and listing
/// files; fetch the needed blobs pack by pack (adjacent blobs in one range read,
/// packs in parallel) and write each blob wherever it belongs; then set file
/// and directory metadata, deepest directories last so their mtimes stick.
pub fn restore(
    repo: &Repository,
    root: &Id,
    target: &Path,
    paths: &[String],
) -> Result<RestoreStats> {
    fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;
    let ctx = Ctx {
        repo,
        links: Mutex::new(HashMap::new()),
        files: AtomicU64::new(0),
        dirs: AtomicU64::new(0),
        symlinks: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        chown: is_root(),
    };
    let mut plan = Plan::default();
    if paths.is_empty() {
        plan_tree(&ctx, &mut plan, root, target)?;
    } else {
        for p in paths {
            let parts = split_path(p)?;
            match lookup(repo, root, p)? {
                None => plan_tree(&ctx, &mut plan, root, target)?,
                Some(node) => {
                    let mut dir = target.to_path_buf();
                    for part in &parts[..parts.len() - 1] {
                        dir.push(part);
                        ensure_dir(&dir)?;
                    }
                    plan_node(&ctx, &mut plan, &node, &dir)?;
                }
            }
        }
    }
    write_contents(&ctx, &plan)?;
    for (link, first) in &plan.links {
        remove_non_dir(link)?;
        fs::hard_link(first, link).map_err(|e| Error::io(link, e))?;
    }
    plan.files
        .par_iter()
        .try_for_each(|(path, n)| set_meta(&ctx, path, n))?;
    for (path, n) in plan.dirs.iter().rev() {
        set_meta(&ctx, path, n)?;
    }
    Ok(RestoreStats {
        files: ctx.files.into_inner(),
        dirs: ctx.dirs.into_inner(),
        symlinks: ctx.symlinks.into_inner(),
        bytes: ctx.bytes.into_inner(),
    })
}

#[derive(Default)]
struct Plan {
    files: Vec<(PathBuf, Node)>,
    /// (new link, first path of the same inode).
    links: Vec<(PathBuf, PathBuf)>,
    /// In creation order: parents before children.
    dirs: Vec<(PathBuf, Node)>,
}

fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// Creates `dir` unless it exists as a real directory; refuses a symlink there.
fn ensure_dir(dir: &Path) -> Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => Err(Error::HostileEntry {
            dir: dir
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            name: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            reason: "a symlink is in the way of a directory; refusing to write through it".into(),
        }),
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => {
            fs::remove_file(dir).map_err(|e| Error::io(dir, e))?;
            fs::create_dir(dir).map_err(|e| Error::io(dir, e))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            fs::create_dir(dir).map_err(|e| Error::io(dir, e))
        }
        Err(e) => Err(Error::io(dir, e)),
    }
}

fn plan_tree(ctx: &Ctx, plan: &mut Plan, tree: &Id, dir: &Path) -> Result<()> {
    let t: Tree = ctx.repo.load_tree(tree)?;
    for n in &t.nodes {
        plan_node(ctx, plan, n, dir)?;
    }
    Ok(())
}

fn plan_node(ctx: &Ctx, plan: &mut Plan, n: &Node, dir: &Path) -> Result<()> {
    let name: OsString = n.name_os()?;
    let path = dir.join(&name);
    match n.kind {
        NodeKind::Dir => {
            ensure_dir(&path)?;
            ctx.dirs.fetch_add(1, Ordering::Relaxed);
            plan.dirs.push((path.clone(), n.clone()));
            if let Some(sub) = &n.subtree {
                plan_tree(ctx, plan, sub, &path)?;
            }
        }
        NodeKind::Symlink => {
            remove_non_dir(&path)?;
            std::os::unix::fs::symlink(n.target_os()?, &path).map_err(|e| Error::io(&path, e))?;
            ctx.symlinks.fetch_add(1, Ordering::Relaxed);
            if ctx.chown {
                let _ = std::os::unix::fs::lchown(&path, Some(n.uid), Some(n.gid));
            }
            let t = FileTime::from_unix_time(
                n.mtime_ns.div_euclid(1_000_000_000),
                n.mtime_ns.rem_euclid(1_000_000_000) as u32,
            );
            filetime::set_symlink_file_times(&path, t, t).map_err(|e| Error::io(&path, e))?;
        }
        NodeKind::File => {
            ctx.files.fetch_add(1, Ordering::Relaxed);
            if n.links > 1 {
                let mut links = ctx.links.lock().unwrap();
                if let Some(first) = links.get(&(n.device, n.inode)) {
                    plan.links.push((path, first.clone()));
                    return Ok(());
                }
                links.insert((n.device, n.inode), path.clone());
            }
            plan.files.push((path, n.clone()));
        }
    }
    Ok(())
}

/// Largest gap between two needed blobs of a pack still read in one request.
const MAX_GAP: u64 = 256 * 1024;
/// Largest single range read: bounds restore memory to this per worker.
const MAX_RANGE: u64 = 4 << 20;

fn write_contents(ctx: &Ctx, plan: &Plan) -> Result<()> {
    // Files of several blobs are created at their final size first and filled
    // blob by blob; a one-blob file (most of a web tree) is created and written
    // in one go when its blob arrives.
    plan.files
        .par_iter()
        .filter(|(_, n)| n.content.len() != 1)
        .try_for_each(|(path, n)| -> Result<()> {
            let f = create_file(path)?;
            f.set_len(n.size).map_err(|e| Error::io(path, e))
        })?;
    // blob → every (file, offset) that needs it; pack → its needed blobs.
    let mut wanted: HashMap<Id, Vec<(usize, u64)>> = HashMap::new();
    for (i, (_, n)) in plan.files.iter().enumerate() {
        let mut off = 0u64;
        let idx = ctx.repo.index();
        for id in &n.content {
            let loc = idx.get(id).ok_or(Error::BlobNotFound { id: *id })?;
            wanted.entry(*id).or_default().push((i, off));
            off += loc.raw_length as u64;
        }
    }
    let mut by_pack: HashMap<Id, Vec<(Id, crate::index::Location)>> = HashMap::new();
    {
        let idx = ctx.repo.index();
        for id in wanted.keys() {
            let loc = *idx.get(id).expect("checked above");
            by_pack.entry(loc.pack).or_default().push((*id, loc));
        }
    }
    let packs: Vec<(Id, Vec<(Id, crate::index::Location)>)> = by_pack.into_iter().collect();
    packs
        .par_iter()
        .try_for_each(|(pack, blobs)| -> Result<()> {
            let mut blobs = blobs.clone();
            blobs.sort_by_key(|(_, l)| l.offset);
            let key = crate::pack::key_of(pack);
            let mut i = 0;
            while i < blobs.len() {
                // One range read for a run of blobs with small gaps between them.
                let start = blobs[i].1.offset as u64;
                let mut j = i;
                let mut end = start + blobs[i].1.length as u64;
                while j + 1 < blobs.len()
                    && (blobs[j + 1].1.offset as u64) <= end + MAX_GAP
                    && blobs[j + 1].1.offset as u64 + blobs[j + 1].1.length as u64 - start
                        <= MAX_RANGE
                {
                    j += 1;
                    end = end.max(blobs[j].1.offset as u64 + blobs[j].1.length as u64);
                }
                let buf = ctx.repo.storage().get_range(&key, start, end - start)?;
                for (id, loc) in &blobs[i..=j] {
                    let o = (loc.offset as u64 - start) as usize;
                    let plain = ctx
                        .repo
                        .key()
                        .open_blob(id, &buf[o..o + loc.length as usize])
                        .map_err(|e| with_path(e, &plan.files[wanted[id][0].0].0))?;
                    for (fi, off) in &wanted[id] {
                        let (path, node) = &plan.files[*fi];
                        if node.content.len() == 1 {
                            let mut f = create_file(path)?;
                            std::io::Write::write_all(&mut f, &plain)
                                .map_err(|e| Error::io(path, e))?;
                        } else {
                            let f = OpenOptions::new()
                                .write(true)
                                .custom_flags(libc::O_NOFOLLOW)
                                .open(path)
                                .map_err(|e| Error::io(path, e))?;
                            f.write_all_at(&plain, *off)
                                .map_err(|e| Error::io(path, e))?;
                        }
                        ctx.bytes.fetch_add(plain.len() as u64, Ordering::Relaxed);
                    }
                }
                i = j + 1;
            }
            Ok(())
        })
}

fn with_path(e: Error, path: &Path) -> Error {
    match e {
        Error::Corrupt { what, reason } => Error::Corrupt {
            what: format!("{what} (for {})", path.display()),
            reason,
        },
        other => other,
    }
}

fn remove_non_dir(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Err(Error::Invalid(format!(
            "{}: a directory is in the way",
            path.display()
        ))),
        Ok(_) => fs::remove_file(path).map_err(|e| Error::io(path, e)),
        Err(_) => Ok(()),
    }
}

fn create_file(path: &Path) -> Result<fs::File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                Error::HostileEntry {
                    dir: path
                        .parent()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    name: path
                        .file_name()
                        .map(|n| String::from_utf8_lossy(n.as_bytes()).into_owned())
                        .unwrap_or_default(),
                    reason: "a symlink is in the way of a file; refusing to write through it"
                        .into(),
                }
            } else {
                Error::io(path, e)
            }
        })
}

fn set_meta(ctx: &Ctx, path: &Path, n: &Node) -> Result<()> {
    if ctx.chown {
        let _ = std::os::unix::fs::chown(path, Some(n.uid), Some(n.gid));
    }
    fs::set_permissions(path, fs::Permissions::from_mode(n.mode))
        .map_err(|e| Error::io(path, e))?;
    let t = FileTime::from_unix_time(
        n.mtime_ns.div_euclid(1_000_000_000),
        n.mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    filetime::set_file_times(path, t, t).map_err(|e| Error::io(path, e))
}
