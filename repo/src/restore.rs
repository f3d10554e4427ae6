//! Restore of a snapshot (or chosen paths) into a target directory.
//!
//! Every blob is verified (AEAD tag, then its id) before a byte is written.
//! Restore never writes outside the target: tree names are validated on load
//! (no `..`, `/`, empty or duplicate names), and every create, write and
//! metadata change goes through [`Beneath`], which resolves each path from
//! the target's descriptor in the kernel with no symlink allowed on any
//! component. A site user who swaps a directory for a symlink mid-restore
//! makes that write fail; it never lands outside. Symlinks in the snapshot
//! are restored as links, never followed.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::beneath::{self, Beneath};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::Repository;
use crate::tree::{Node, NodeKind, Tree};

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RestoreStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// FIFOs and device nodes made.
    pub specials: u64,
    /// Device nodes not made: only root may.
    pub skipped_devices: u64,
    /// Extended attributes not set (a namespace only root may write, or a
    /// file system without them).
    pub skipped_xattrs: u64,
    pub bytes: u64,
}

struct Ctx<'r> {
    repo: &'r Repository,
    /// The target; every path below is relative to it.
    fs: Beneath,
    links: Mutex<HashMap<(u64, u64), PathBuf>>,
    files: AtomicU64,
    dirs: AtomicU64,
    symlinks: AtomicU64,
    specials: AtomicU64,
    skipped_devices: AtomicU64,
    skipped_xattrs: AtomicU64,
    bytes: AtomicU64,
    chown: bool,
    /// Bytes written so far for whoever watches; its cancel flag stops the restore.
    progress: &'r crate::backup::Progress,
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
    restore_with(
        repo,
        root,
        target,
        paths,
        &crate::backup::Progress::default(),
    )
}

/// [`restore`], counting files and bytes into `progress` as it goes and
/// stopping with [`Error::Cancelled`] once its cancel flag is set.
pub fn restore_with(
    repo: &Repository,
    root: &Id,
    target: &Path,
    paths: &[String],
    progress: &crate::backup::Progress,
) -> Result<RestoreStats> {
    fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;
    let ctx = Ctx {
        repo,
        fs: Beneath::open(target).map_err(|e| Error::io(target, e))?,
        links: Mutex::new(HashMap::new()),
        files: AtomicU64::new(0),
        dirs: AtomicU64::new(0),
        symlinks: AtomicU64::new(0),
        specials: AtomicU64::new(0),
        skipped_devices: AtomicU64::new(0),
        skipped_xattrs: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        chown: is_root(),
        progress,
    };
    let mut plan = Plan::default();
    if paths.is_empty() {
        plan_tree(&ctx, &mut plan, root, Path::new(""))?;
    } else {
        for p in paths {
            let parts = split_path(p)?;
            match lookup(repo, root, p)? {
                None => plan_tree(&ctx, &mut plan, root, Path::new(""))?,
                Some(node) => {
                    let mut dir = PathBuf::new();
                    for part in &parts[..parts.len() - 1] {
                        dir.push(part);
                        ensure_dir(&ctx, &dir)?;
                    }
                    plan_node(&ctx, &mut plan, &node, &dir)?;
                }
            }
        }
    }
    #[cfg(test)]
    tests::AFTER_PLAN.with(|h| {
        if let Some(f) = h.borrow().as_ref() {
            f()
        }
    });
    progress
        .files
        .store(ctx.files.load(Ordering::Relaxed), Ordering::Relaxed);
    write_contents(&ctx, &plan)?;
    for (link, first) in &plan.links {
        remove_non_dir(&ctx, link)?;
        ctx.fs
            .hard_link(first, link)
            .map_err(|e| fs_err(&ctx, link, e))?;
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
        specials: ctx.specials.into_inner(),
        skipped_devices: ctx.skipped_devices.into_inner(),
        skipped_xattrs: ctx.skipped_xattrs.into_inner(),
        bytes: ctx.bytes.into_inner(),
    })
}

/// Paths in a plan are relative to the target.
#[derive(Default)]
struct Plan {
    files: Vec<(PathBuf, Node)>,
    /// (new link, first path of the same inode).
    links: Vec<(PathBuf, PathBuf)>,
    /// In creation order: parents before children.
    dirs: Vec<(PathBuf, Node)>,
}

pub(crate) fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// Creates `dir` unless it exists as a real directory; refuses a symlink there.
fn ensure_dir(ctx: &Ctx, dir: &Path) -> Result<()> {
    use rustix::fs::FileType;
    let err = |e| fs_err(ctx, dir, e);
    match ctx.fs.kind(dir).map_err(err)? {
        Some(FileType::Symlink) => Err(hostile(
            ctx,
            dir,
            "a symlink is in the way of a directory; refusing to write through it",
        )),
        Some(FileType::Directory) => Ok(()),
        Some(_) => {
            ctx.fs.unlink(dir).map_err(err)?;
            ctx.fs.mkdir(dir).map_err(err)
        }
        None => ctx.fs.mkdir(dir).map_err(err),
    }
}

/// An I/O error at `rel`; a symlink met on the way is named as the attack it is.
fn fs_err(ctx: &Ctx, rel: &Path, e: std::io::Error) -> Error {
    if beneath::is_symlink_refusal(&e) {
        hostile(
            ctx,
            rel,
            "a symlink (or a file) is in the way of the path; refusing to write through it",
        )
    } else {
        Error::io(ctx.fs.display(rel), e)
    }
}

fn hostile(ctx: &Ctx, rel: &Path, reason: &str) -> Error {
    Error::HostileEntry {
        dir: ctx
            .fs
            .display(rel.parent().unwrap_or(Path::new("")))
            .display()
            .to_string(),
        name: rel
            .file_name()
            .map(|n| String::from_utf8_lossy(n.as_bytes()).into_owned())
            .unwrap_or_default(),
        reason: reason.into(),
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
            ensure_dir(ctx, &path)?;
            ctx.dirs.fetch_add(1, Ordering::Relaxed);
            plan.dirs.push((path.clone(), n.clone()));
            if let Some(sub) = &n.subtree {
                plan_tree(ctx, plan, sub, &path)?;
            }
        }
        NodeKind::Symlink => {
            remove_non_dir(ctx, &path)?;
            ctx.fs
                .symlink(&n.target_os()?, &path)
                .map_err(|e| fs_err(ctx, &path, e))?;
            ctx.symlinks.fetch_add(1, Ordering::Relaxed);
            ctx.fs
                .set_symlink_meta(&path, owner(ctx, n), n.mtime_ns)
                .map_err(|e| fs_err(ctx, &path, e))?;
        }
        NodeKind::Fifo | NodeKind::Char | NodeKind::Block => {
            let kind = match n.kind {
                NodeKind::Fifo => rustix::fs::FileType::Fifo,
                NodeKind::Char => rustix::fs::FileType::CharacterDevice,
                _ => rustix::fs::FileType::BlockDevice,
            };
            if n.kind != NodeKind::Fifo && !ctx.chown {
                ctx.skipped_devices.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            remove_non_dir(ctx, &path)?;
            ctx.fs
                .mknod(&path, kind, n.rdev)
                .map_err(|e| fs_err(ctx, &path, e))?;
            ctx.fs
                .set_node_meta(&path, owner(ctx, n), n.mode, n.mtime_ns)
                .map_err(|e| fs_err(ctx, &path, e))?;
            ctx.specials.fetch_add(1, Ordering::Relaxed);
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

/// Runs of zeros this long are left as holes, not written (the file was
/// created at its full length): sparse files stay sparse.
const HOLE_MIN: usize = 4096;

/// Writes `data` at `off`, skipping every HOLE_MIN-sized block of zeros.
fn write_sparse(f: &fs::File, data: &[u8], off: u64) -> std::io::Result<()> {
    let mut start = None;
    for (i, block) in data.chunks(HOLE_MIN).enumerate() {
        let at = i * HOLE_MIN;
        match (block.iter().all(|b| *b == 0), start) {
            (false, None) => start = Some(at),
            (true, Some(s)) => {
                f.write_all_at(&data[s..at], off + s as u64)?;
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        f.write_all_at(&data[s..], off + s as u64)?;
    }
    Ok(())
}

/// Largest gap between two needed blobs of a pack still read in one request.
const MAX_GAP: u64 = 256 * 1024;
/// Files a restore thread keeps open while it writes one pack's blobs.
const OPEN_FILES: usize = 64;
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
            let f = create_file(ctx, path)?;
            f.set_len(n.size).map_err(|e| fs_err(ctx, path, e))
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
            let loc = idx.get(id).expect("checked above");
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
            // Files of many blobs (a dump has thousands) stay open while
            // this pack's blobs are written into them.
            let mut open: HashMap<usize, std::fs::File> = HashMap::new();
            let mut i = 0;
            while i < blobs.len() {
                if ctx.progress.cancel.load(Ordering::Relaxed) {
                    return Err(Error::Cancelled);
                }
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
                        .map_err(|e| {
                            with_path(e, &ctx.fs.display(&plan.files[wanted[id][0].0].0))
                        })?;
                    for (fi, off) in &wanted[id] {
                        let (path, node) = &plan.files[*fi];
                        let created;
                        let f = if node.content.len() == 1 {
                            created = create_file(ctx, path)?;
                            created
                                .set_len(plain.len() as u64)
                                .map_err(|e| fs_err(ctx, path, e))?;
                            &created
                        } else {
                            if !open.contains_key(fi) {
                                if open.len() == OPEN_FILES {
                                    open.clear();
                                }
                                let f = ctx.fs.open_file(path).map_err(|e| fs_err(ctx, path, e))?;
                                open.insert(*fi, f);
                            }
                            &open[fi]
                        };
                        write_sparse(f, &plain, *off).map_err(|e| fs_err(ctx, path, e))?;
                        ctx.bytes.fetch_add(plain.len() as u64, Ordering::Relaxed);
                        ctx.progress
                            .bytes
                            .fetch_add(plain.len() as u64, Ordering::Relaxed);
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

fn remove_non_dir(ctx: &Ctx, path: &Path) -> Result<()> {
    match ctx.fs.kind(path).map_err(|e| fs_err(ctx, path, e))? {
        Some(rustix::fs::FileType::Directory) => Err(Error::Invalid(format!(
            "{}: a directory is in the way",
            ctx.fs.display(path).display()
        ))),
        Some(_) => ctx.fs.unlink(path).map_err(|e| fs_err(ctx, path, e)),
        None => Ok(()),
    }
}

fn create_file(ctx: &Ctx, path: &Path) -> Result<fs::File> {
    ctx.fs.create_file(path).map_err(|e| fs_err(ctx, path, e))
}

/// The owner to restore: only root can give files away.
fn owner(ctx: &Ctx, n: &Node) -> Option<(u32, u32)> {
    ctx.chown.then_some((n.uid, n.gid))
}

fn set_meta(ctx: &Ctx, path: &Path, n: &Node) -> Result<()> {
    let skipped = ctx
        .fs
        .set_meta(path, owner(ctx, n), &n.xattrs, n.mode, n.mtime_ns)
        .map_err(|e| fs_err(ctx, path, e))?;
    ctx.skipped_xattrs.fetch_add(skipped, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::backup::{self, BackupOptions, Progress};

    thread_local! {
        /// Runs between planning (directories made) and writing contents.
        pub static AFTER_PLAN: RefCell<Option<Box<dyn Fn()>>> = RefCell::new(None);
    }

    /// A site user swaps a restored directory for a symlink to a place
    /// outside the target after restore made it: the restore fails naming
    /// the symlink, and nothing is written where the symlink points.
    #[test]
    fn a_directory_swapped_for_a_symlink_mid_restore_gets_no_write() {
        let tmp = tempfile::tempdir().unwrap();
        let site = tmp.path().join("site");
        fs::create_dir_all(site.join("d/sub")).unwrap();
        fs::write(site.join("d/small.php"), b"<?php echo 1;").unwrap();
        let big: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        fs::write(site.join("d/sub/big.bin"), &big).unwrap();
        let (repo, snap) = backed_up(tmp.path(), &site);
        repo.load_index().unwrap();

        // Unswapped, everything restores.
        let plain = tmp.path().join("plain");
        restore(&repo, &snap.tree, &plain, &[]).unwrap();
        assert_eq!(fs::read(plain.join("d/sub/big.bin")).unwrap(), big);

        let target = tmp.path().join("target");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(outside.join("sub")).unwrap();
        let before = fs::metadata(outside.join("sub")).unwrap();
        let (t, o) = (target.clone(), outside.clone());
        AFTER_PLAN.with(|h| {
            *h.borrow_mut() = Some(Box::new(move || {
                fs::rename(t.join("d"), t.join("d.moved")).unwrap();
                std::os::unix::fs::symlink(&o, t.join("d")).unwrap();
            }))
        });
        let err = restore(&repo, &snap.tree, &target, &[]).unwrap_err();
        AFTER_PLAN.with(|h| *h.borrow_mut() = None);
        assert!(matches!(err, Error::HostileEntry { .. }), "{err}");
        let leaked: Vec<_> = walkdir(&outside);
        assert_eq!(
            leaked,
            vec![outside.join("sub")],
            "written outside the target"
        );
        let after = fs::metadata(outside.join("sub")).unwrap();
        assert_eq!(after.permissions(), before.permissions());
        assert_eq!(after.modified().unwrap(), before.modified().unwrap());
    }

    /// Sparse files come back sparse, FIFOs and (as root) device nodes
    /// come back as what they were, with their modes and times; a second
    /// restore over the first replaces them.
    #[test]
    fn holes_fifos_and_device_nodes_come_back() {
        use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
        let tmp = tempfile::tempdir().unwrap();
        let site = tmp.path().join("site");
        fs::create_dir_all(&site).unwrap();
        // 1 GiB with 5 bytes of data in the middle.
        const LEN: u64 = 1 << 30;
        let sparse = fs::File::create(site.join("disk.img")).unwrap();
        sparse.set_len(LEN).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&sparse, b"hello", LEN / 2).unwrap();
        drop(sparse);
        let fifo = site.join("queue.pipe");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o640),
            0,
        )
        .unwrap();
        fs::set_permissions(&fifo, fs::Permissions::from_mode(0o620)).unwrap();
        let root = is_root();
        let null_dev = fs::metadata("/dev/null").unwrap().rdev();
        if root {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                site.join("null"),
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::from_raw_mode(0o666),
                null_dev,
            )
            .unwrap();
        }
        let (repo, snap) = backed_up(tmp.path(), &site);
        assert!(snap.stats.warnings.is_empty(), "{:?}", snap.stats.warnings);
        repo.load_index().unwrap();
        let target = tmp.path().join("target");
        for round in 0..2 {
            let stats = restore(&repo, &snap.tree, &target, &[]).unwrap();
            assert_eq!(stats.specials, 1 + u64::from(root), "round {round}");
            let img = fs::metadata(target.join("disk.img")).unwrap();
            assert_eq!(img.len(), LEN);
            assert!(
                img.blocks() * 512 < 1 << 20,
                "1 GiB of mostly holes takes {} bytes on disk",
                img.blocks() * 512
            );
            // Every byte as backed up (read back and hashed blob by blob).
            crate::stage::verify(&repo, &snap.tree, &target).unwrap();
            let mut hello = [0u8; 5];
            let f = fs::File::open(target.join("disk.img")).unwrap();
            std::os::unix::fs::FileExt::read_exact_at(&f, &mut hello, LEN / 2).unwrap();
            assert_eq!(&hello, b"hello");
            let p = fs::symlink_metadata(target.join("queue.pipe")).unwrap();
            assert!(p.file_type().is_fifo());
            assert_eq!(p.permissions().mode() & 0o7777, 0o620);
            let orig = fs::symlink_metadata(&fifo).unwrap();
            assert_eq!(p.mtime(), orig.mtime());
            if root {
                let d = fs::symlink_metadata(target.join("null")).unwrap();
                assert!(d.file_type().is_char_device());
                assert_eq!(d.rdev(), null_dev);
                let src = fs::symlink_metadata(site.join("null")).unwrap();
                assert_eq!(d.mode() & 0o7777, src.mode() & 0o7777);
            }
        }
    }

    /// Extended attributes of files and directories, a POSIX access ACL
    /// among them, come back byte for byte; an unchanged file's are carried
    /// into the next backup.
    #[test]
    fn extended_attributes_and_acls_come_back() {
        let tmp = tempfile::tempdir().unwrap();
        let site = tmp.path().join("site");
        fs::create_dir_all(site.join("uploads")).unwrap();
        fs::write(site.join("wp-config.php"), b"<?php // secrets").unwrap();
        let set = |p: &Path, name: &str, value: &[u8]| {
            let f = fs::File::open(p).unwrap();
            rustix::fs::fsetxattr(&f, name, value, rustix::fs::XattrFlags::empty())
        };
        if set(&site.join("wp-config.php"), "user.origin", b"deploy 42").is_err() {
            // Needs a file system with user attributes (ext4, xfs, btrfs, tmpfs 6.6+).
            panic!("the temp dir's file system holds no user.* attributes");
        }
        set(&site.join("uploads"), "user.note", &[0, 1, 2, 255]).unwrap();
        // user::rw-, user:1000:r--, group::r--, mask::r--, other::---
        let mut acl = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (0x01u16, 6u16, u32::MAX),
            (0x02, 4, 1000),
            (0x04, 4, u32::MAX),
            (0x10, 4, u32::MAX),
            (0x20, 0, u32::MAX),
        ] {
            acl.extend(tag.to_le_bytes());
            acl.extend(perm.to_le_bytes());
            acl.extend(id.to_le_bytes());
        }
        set(&site.join("wp-config.php"), "system.posix_acl_access", &acl).unwrap();
        let (repo, snap) = backed_up(tmp.path(), &site);
        repo.load_index().unwrap();
        let target = tmp.path().join("target");
        let stats = restore(&repo, &snap.tree, &target, &[]).unwrap();
        assert_eq!(stats.skipped_xattrs, 0);
        let of = |p: &Path| crate::xattr::read(fs::File::open(p).unwrap()).unwrap();
        for rel in ["wp-config.php", "uploads"] {
            let (a, b) = (of(&site.join(rel)), of(&target.join(rel)));
            assert!(!a.is_empty(), "{rel}");
            assert_eq!(a, b, "{rel}");
        }
        assert!(of(&target.join("wp-config.php")).contains_key("system.posix_acl_access"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(target.join("wp-config.php"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o640,
            "the mode agrees with the ACL"
        );
        // The next backup reuses the unchanged file and keeps its attributes.
        let opts = BackupOptions {
            content: Default::default(),
            domain: "d.test".into(),
            kind: crate::snapshot::Kind::Incremental,
            excludes: crate::exclude::Excludes::new::<&str>(&[]).unwrap(),
            host: "h".into(),
            tags: Vec::new(),
        };
        let (_, again) = backup::run(&repo, &site, &opts, &Progress::default()).unwrap();
        let node = lookup(&repo, &again.tree, "wp-config.php")
            .unwrap()
            .unwrap();
        assert_eq!(node.xattrs, of(&site.join("wp-config.php")));
    }

    /// A full backup of `site` into a new repository under `dir`.
    pub(crate) fn backed_up(dir: &Path, site: &Path) -> (Repository, crate::snapshot::Snapshot) {
        let repo = crate::repository::test_repository(&dir.join("repo"));
        let opts = BackupOptions {
            content: Default::default(),
            domain: "d.test".into(),
            kind: crate::snapshot::Kind::Full,
            excludes: crate::exclude::Excludes::new::<&str>(&[]).unwrap(),
            host: "h".into(),
            tags: Vec::new(),
        };
        let (_, snap) = backup::run(&repo, site, &opts, &Progress::default()).unwrap();
        (repo, snap)
    }

    fn walkdir(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walkdir(&p));
            }
            out.push(p);
        }
        out.sort();
        out
    }
}
