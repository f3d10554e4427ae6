//! Restores into a live site that never show a mix (RST-6, DESIGN §5).
//!
//! The snapshot is restored beside the site (`.NAME.cairn-stage.JOB`, same
//! parent, so the same file system), every file is checked against the
//! snapshot, and only then the two directories trade places in one
//! `renameat2(RENAME_EXCHANGE)`: a reader sees the old tree or the new one,
//! never parts of both. The old tree stays beside the site
//! (`.NAME.cairn-rollback.JOB`) as a rollback point until it expires.
//!
//! Every step is written to a journal first (one small file per job in the
//! agent's state directory), so a crash at any point is finished or undone by
//! [`recover`] at the next start: before the swap the stage is removed and
//! the site was never touched; after it, the swap is completed. Whether the
//! exchange happened is read from the file system itself (the inode now at the
//! site's path), not from the journal, which cannot be written atomically with
//! the rename.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::beneath::Beneath;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::Repository;
#[cfg(test)]
use crate::restore::restore;
use crate::restore::RestoreStats;
use crate::tree::{Node, NodeKind};

const STAGE_MARK: &str = ".cairn-stage.";
const ROLLBACK_MARK: &str = ".cairn-rollback.";

/// Where a staged restore stands, as last written before the step it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Restoring into the stage and verifying it; the site is untouched.
    Staging,
    /// About to exchange the stage and the site.
    Swapping,
    /// Done: the old tree waits at `rollback` until `keep_until`.
    Swapped,
    /// About to exchange the rollback tree back into the site.
    RollingBack,
}

/// One staged restore (or its rollback point), as the journal keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub job: String,
    pub live: PathBuf,
    pub stage: PathBuf,
    pub rollback: PathBuf,
    pub phase: Phase,
    /// (device, inode) of the tree that stands at `live` once the step
    /// `phase` names has happened.
    #[serde(default)]
    pub expect: Option<(u64, u64)>,
    /// Unix seconds after which the rollback tree is removed.
    pub keep_until: i64,
}

/// The journal of staged restores: one JSON file per job.
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    pub fn open(dir: &Path) -> Result<Journal> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        Ok(Journal {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, job: &str) -> PathBuf {
        self.dir.join(format!("{job}.json"))
    }

    /// Writes `r` durably: a temporary file, fsync, rename, fsync of the directory.
    fn write(&self, r: &Record) -> Result<()> {
        let path = self.path(&r.job);
        let tmp = self.dir.join(format!(".{}.tmp", r.job));
        let body = serde_json::to_vec_pretty(r).expect("records serialize");
        let io = |e| Error::io(&path, e);
        {
            let mut f = fs::File::create(&tmp).map_err(io)?;
            io::Write::write_all(&mut f, &body).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        fs::rename(&tmp, &path).map_err(io)?;
        sync_dir(&self.dir)
    }

    fn remove(&self, job: &str) -> Result<()> {
        match fs::remove_file(self.path(job)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io(self.path(job), e)),
            _ => sync_dir(&self.dir),
        }
    }

    pub fn get(&self, job: &str) -> Result<Option<Record>> {
        check_job(job)?;
        let path = self.path(job);
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::corrupt(path.display().to_string(), e.to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    pub fn records(&self) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))? {
            let e = e.map_err(|e| Error::io(&self.dir, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(job) = name.strip_suffix(".json") {
                if let Some(r) = self.get(job)? {
                    out.push(r);
                }
            }
        }
        out.sort_by(|a, b| a.job.cmp(&b.job));
        Ok(out)
    }
}

/// A finished in-place restore.
#[derive(Debug, Clone, Serialize)]
pub struct Swapped {
    pub stats: RestoreStats,
    /// Files whose every byte was checked against the snapshot before the swap.
    pub verified_files: u64,
    /// Where the old tree waits.
    pub rollback: PathBuf,
    /// Whether the swap was one atomic exchange (false only where the file
    /// system has no `RENAME_EXCHANGE`: two renames, a moment without the site).
    pub atomic: bool,
}

/// Job ids name files and directories: letters, digits, `-` and `_` only.
fn check_job(job: &str) -> Result<()> {
    if job.is_empty()
        || job.len() > 64
        || !job
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Error::Invalid(format!("job id {job:?} is not valid")));
    }
    Ok(())
}

/// The site's parent directory and the stage and rollback paths beside it.
fn places(live: &Path, job: &str) -> Result<(PathBuf, PathBuf, PathBuf)> {
    check_job(job)?;
    let bad = || {
        Error::Invalid(format!(
            "{}: an in-place restore needs an absolute path to a directory below /",
            live.display()
        ))
    };
    if !live.is_absolute()
        || live
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(bad());
    }
    let (Some(parent), Some(name)) = (live.parent(), live.file_name()) else {
        return Err(bad());
    };
    let mut stage = OsString::from(".");
    stage.push(name);
    let mut rollback = stage.clone();
    stage.push(format!("{STAGE_MARK}{job}"));
    rollback.push(format!("{ROLLBACK_MARK}{job}"));
    Ok((
        parent.to_path_buf(),
        parent.join(stage),
        parent.join(rollback),
    ))
}

fn id_of(path: &Path) -> Result<Option<(u64, u64)>> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some((m.dev(), m.ino()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

fn remove_tree(path: &Path) -> Result<()> {
    // std's remove_dir_all never follows symlinks inside the tree.
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}

/// Trades the directories at `a` and `b` in one step. Returns false when the
/// file system cannot (EINVAL), having done nothing.
fn exchange(a: &Path, b: &Path) -> Result<bool> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    #[cfg(test)]
    if NO_EXCHANGE.with(|n| *n.borrow()) {
        return Ok(false);
    }
    match renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOSYS) => Ok(false),
        Err(e) => Err(Error::io(b, e.into())),
    }
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| Error::io(from, e))
}

#[cfg(test)]
thread_local! {
    /// Test hook: runs at a named point of a staged restore (a simulated crash
    /// returns an error from there, leaving everything as a kill would).
    pub(crate) static CRASH_AT: std::cell::RefCell<Option<&'static str>> = const { std::cell::RefCell::new(None) };
}

#[cfg(test)]
thread_local! {
    /// Test hook: behave as a file system without RENAME_EXCHANGE.
    pub(crate) static NO_EXCHANGE: std::cell::RefCell<bool> = const { std::cell::RefCell::new(false) };
}

fn crash_point(_at: &'static str) -> Result<()> {
    #[cfg(test)]
    if CRASH_AT.with(|c| *c.borrow() == Some(_at)) {
        return Err(Error::Other(format!("simulated crash at {_at}")));
    }
    Ok(())
}

/// Restores the tree `root` over the live directory `live`: staged beside it,
/// verified, swapped atomically. On any error before the swap the site is
/// untouched and the stage removed.
pub fn restore_in_place(
    repo: &Repository,
    root: &Id,
    live: &Path,
    journal: &Journal,
    job: &str,
    keep_until: i64,
    progress: &crate::backup::Progress,
) -> Result<Swapped> {
    let (parent, stage, rollback) = places(live, job)?;
    let parent_meta = fs::metadata(&parent).map_err(|e| Error::io(&parent, e))?;
    match fs::symlink_metadata(live) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(Error::Invalid(format!(
                "{} is a symlink; restore in place into the directory it points to",
                live.display()
            )))
        }
        Ok(m) if !m.is_dir() => {
            return Err(Error::Invalid(format!(
                "{} is not a directory",
                live.display()
            )))
        }
        Ok(m) if m.dev() != parent_meta.dev() => {
            return Err(Error::Invalid(format!(
                "{} is a mount point: the staged copy must sit beside it on the same file system; restore to another --target instead",
                live.display()
            )))
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Nothing there: an empty directory is what a rollback brings back.
            fs::create_dir(live).map_err(|e| Error::io(live, e))?;
        }
        Err(e) => return Err(Error::io(live, e)),
    }
    if let Some(m) = mounts_below(live).first() {
        return Err(Error::Invalid(format!(
            "{} is a mount point inside {}: a swap would carry it off with the old tree; restore to another --target instead",
            m.display(),
            live.display()
        )));
    }
    if id_of(&rollback)?.is_some() {
        return Err(Error::Invalid(format!(
            "{} already exists: job {job} was restored in place before",
            rollback.display()
        )));
    }
    // A stage of the same job is what a failed earlier attempt left.
    remove_tree(&stage)?;
    let mut rec = Record {
        job: job.to_string(),
        live: live.to_path_buf(),
        stage: stage.clone(),
        rollback: rollback.clone(),
        phase: Phase::Staging,
        expect: None,
        keep_until,
    };
    journal.write(&rec)?;
    let staged = (|| {
        fs::create_dir(&stage).map_err(|e| Error::io(&stage, e))?;
        fs::set_permissions(&stage, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(&stage, e))?;
        let stats = crate::restore::restore_with(repo, root, &stage, &[], progress)?;
        crash_point("staged")?;
        let verified = verify(repo, root, &stage)?;
        copy_dir_meta(live, &stage)?;
        // Everything on disk before the site points at it.
        let d = fs::File::open(&stage).map_err(|e| Error::io(&stage, e))?;
        rustix::fs::syncfs(&d).map_err(|e| Error::io(&stage, e.into()))?;
        Ok((stats, verified))
    })();
    let (stats, verified_files) = match staged {
        Ok(s) => s,
        Err(e) => {
            if !is_simulated_crash(&e) {
                remove_tree(&stage)?;
                journal.remove(job)?;
            }
            return Err(e);
        }
    };
    rec.phase = Phase::Swapping;
    rec.expect = id_of(&stage)?;
    journal.write(&rec)?;
    crash_point("before-swap")?;
    let atomic = exchange(&stage, live)?;
    if !atomic {
        rename(live, &rollback)?;
        crash_point("between-renames")?;
        rename(&stage, live)?;
    } else {
        crash_point("swapped")?;
        rename(&stage, &rollback)?;
    }
    sync_dir(&parent)?;
    rec.phase = Phase::Swapped;
    rec.expect = None;
    journal.write(&rec)?;
    Ok(Swapped {
        stats,
        verified_files,
        rollback,
        atomic,
    })
}

/// Mount points strictly below `dir`, from `/proc/self/mountinfo` (none
/// where it cannot be read).
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    mount_points(&info)
        .into_iter()
        .filter(|m| *m != dir && m.starts_with(&dir))
        .collect()
}

/// The mount point field of each mountinfo line, its octal escapes decoded.
fn mount_points(info: &str) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|f| {
            let b = f.as_bytes();
            let mut out = Vec::with_capacity(b.len());
            let mut i = 0;
            while i < b.len() {
                let octal = b
                    .get(i + 1..i + 4)
                    .and_then(|o| u8::from_str_radix(std::str::from_utf8(o).ok()?, 8).ok());
                match (b[i], octal) {
                    (b'\\', Some(c)) => {
                        out.push(c);
                        i += 4;
                    }
                    (c, _) => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            PathBuf::from(OsString::from_vec(out))
        })
        .collect()
}

fn is_simulated_crash(_e: &Error) -> bool {
    #[cfg(test)]
    if let Error::Other(m) = _e {
        return m.starts_with("simulated crash");
    }
    false
}

/// The site root's own owner, mode and extended attributes go to the stage:
/// the snapshot holds what is below the root, the directory itself is the
/// host's (its owner may be the site's user).
fn copy_dir_meta(from: &Path, to: &Path) -> Result<()> {
    let m = fs::metadata(from).map_err(|e| Error::io(from, e))?;
    let io = |e: io::Error| Error::io(to, e);
    let d = fs::File::open(to).map_err(io)?;
    let _ = rustix::fs::fchown(
        &d,
        Some(rustix::fs::Uid::from_raw(m.uid())),
        Some(rustix::fs::Gid::from_raw(m.gid())),
    );
    let src = fs::File::open(from).map_err(|e| Error::io(from, e))?;
    let x = crate::xattr::read(&src).unwrap_or_default();
    let _ = crate::xattr::write(&d, &x);
    d.set_permissions(fs::Permissions::from_mode(m.mode() & 0o7777))
        .map_err(io)
}

/// Finishes or undoes what a crash interrupted, and removes rollback trees
/// past their time. Only at start, while no restore runs. Returns one line
/// per action, for the log.
pub fn recover(journal: &Journal, now: i64) -> Result<Vec<Swept>> {
    sweep(journal, now, true)
}

/// Removes rollback trees past their time; safe while restores run.
pub fn expire(journal: &Journal, now: i64) -> Result<Vec<Swept>> {
    sweep(journal, now, false)
}

/// What a sweep did to one job's restore, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swept {
    pub job: String,
    pub what: String,
}

impl Swept {
    fn of(r: &Record, what: String) -> Swept {
        Swept {
            job: r.job.clone(),
            what,
        }
    }
}

fn sweep(journal: &Journal, now: i64, interrupted: bool) -> Result<Vec<Swept>> {
    let mut done = Vec::new();
    for mut r in journal.records()? {
        let live = r.live.display();
        if !interrupted && r.phase != Phase::Swapped {
            continue;
        }
        match r.phase {
            Phase::Staging => done.push(Swept::of(&r, abandon(journal, &r)?)),
            Phase::Swapping => {
                let now_live = id_of(&r.live)?;
                if now_live.is_none() && id_of(&r.rollback)?.is_some() {
                    // Between the two renames of a non-atomic swap: undo.
                    rename(&r.rollback, &r.live)?;
                }
                if now_live.is_some() && now_live == r.expect {
                    if id_of(&r.stage)?.is_some() {
                        rename(&r.stage, &r.rollback)?;
                    }
                    r.phase = Phase::Swapped;
                    r.expect = None;
                    journal.write(&r)?;
                    done.push(Swept::of(&r, format!(
                        "job {}: restore completed (interrupted after its swap); old tree kept at {}",
                        r.job,
                        r.rollback.display()
                    )));
                } else {
                    done.push(Swept::of(&r, abandon(journal, &r)?));
                }
            }
            Phase::RollingBack => {
                if id_of(&r.live)?.is_some() && id_of(&r.live)? == r.expect {
                    remove_tree(&r.rollback)?;
                    journal.remove(&r.job)?;
                    done.push(Swept::of(
                        &r,
                        format!("job {}: rollback of {live} completed", r.job),
                    ));
                } else {
                    r.phase = Phase::Swapped;
                    r.expect = None;
                    journal.write(&r)?;
                    done.push(Swept::of(&r, format!(
                        "job {}: rollback of {live} interrupted before its swap; the restored tree stays",
                        r.job
                    )));
                }
            }
            Phase::Swapped if now >= r.keep_until => {
                remove_tree(&r.rollback)?;
                journal.remove(&r.job)?;
                done.push(Swept::of(
                    &r,
                    format!(
                        "job {}: rollback point of {live} expired; removed {}",
                        r.job,
                        r.rollback.display()
                    ),
                ));
            }
            // The swap was done before the restart, maybe before the
            // controller heard of it: say the restore stands.
            Phase::Swapped if interrupted => done.push(Swept::of(
                &r,
                format!(
                    "job {}: restore completed; old tree kept at {}",
                    r.job,
                    r.rollback.display()
                ),
            )),
            Phase::Swapped => {}
        }
    }
    Ok(done)
}

/// Drops a restore that never swapped: its stage and its record.
fn abandon(journal: &Journal, r: &Record) -> Result<String> {
    remove_tree(&r.stage)?;
    journal.remove(&r.job)?;
    Ok(format!(
        "job {}: restore interrupted before its swap; {} untouched, stage removed",
        r.job,
        r.live.display()
    ))
}

/// Puts the tree an in-place restore replaced back into the site, atomically;
/// the restored tree is removed (it is still in the repository).
pub fn rollback(journal: &Journal, job: &str) -> Result<Record> {
    let Some(mut r) = journal.get(job)? else {
        return Err(Error::Invalid(format!(
            "no rollback point for job {job} on this server (it expired, was rolled back already, or the restore was not in place)"
        )));
    };
    if r.phase != Phase::Swapped {
        return Err(Error::Invalid(format!(
            "job {job} has not finished its swap; the agent completes or undoes it at start"
        )));
    }
    r.expect = id_of(&r.rollback)?;
    if r.expect.is_none() {
        return Err(Error::Invalid(format!(
            "the rollback tree {} is gone",
            r.rollback.display()
        )));
    }
    r.phase = Phase::RollingBack;
    journal.write(&r)?;
    if !exchange(&r.rollback, &r.live)? {
        let aside = r.stage.clone();
        rename(&r.live, &aside)?;
        rename(&r.rollback, &r.live)?;
        rename(&aside, &r.rollback)?;
    }
    sync_dir(r.live.parent().unwrap_or(Path::new("/")))?;
    remove_tree(&r.rollback)?;
    journal.remove(job)?;
    Ok(r)
}

/// Checks the directory `dir` against the tree `root`: every entry there and
/// nothing else, each of the right kind, symlink targets, and every byte of
/// every file (read back and hashed chunk by chunk against the snapshot's
/// blob ids). Device nodes may be missing when the restore could not make
/// them. Returns how many files were read.
pub fn verify(repo: &Repository, root: &Id, dir: &Path) -> Result<u64> {
    let fs = Beneath::open(dir).map_err(|e| Error::io(dir, e))?;
    let mut files = Vec::new();
    verify_tree(repo, &fs, root, Path::new(""), &mut files)?;
    files
        .par_iter()
        .try_for_each(|(path, n)| verify_file(repo, &fs, path, n))?;
    Ok(files.len() as u64)
}

fn mismatch(fs: &Beneath, rel: &Path, what: &str) -> Error {
    Error::Other(format!(
        "verification failed: {}: {what}",
        fs.display(rel).display()
    ))
}

fn verify_tree(
    repo: &Repository,
    fs: &Beneath,
    tree: &Id,
    rel: &Path,
    files: &mut Vec<(PathBuf, Node)>,
) -> Result<()> {
    use rustix::fs::FileType;
    let nodes = repo.load_tree(tree)?.nodes;
    let mut on_disk: std::collections::HashSet<OsString> = fs
        .list(rel)
        .map_err(|e| Error::io(fs.display(rel), e))?
        .into_iter()
        .collect();
    for n in &nodes {
        let name = n.name_os()?;
        let path = rel.join(&name);
        let present = on_disk.remove(&name);
        let st = if present {
            fs.stat(&path)
                .map_err(|e| Error::io(fs.display(&path), e))?
        } else {
            None
        };
        let kind = st.map(|s| FileType::from_raw_mode(s.st_mode));
        let want = match n.kind {
            NodeKind::File => FileType::RegularFile,
            NodeKind::Dir => FileType::Directory,
            NodeKind::Symlink => FileType::Symlink,
            NodeKind::Fifo => FileType::Fifo,
            NodeKind::Char => FileType::CharacterDevice,
            NodeKind::Block => FileType::BlockDevice,
        };
        match kind {
            None if matches!(n.kind, NodeKind::Char | NodeKind::Block) => continue,
            None => return Err(mismatch(fs, &path, "missing")),
            Some(k) if k != want => return Err(mismatch(fs, &path, "of the wrong kind")),
            Some(_) => {}
        }
        match n.kind {
            NodeKind::Dir => {
                if let Some(sub) = &n.subtree {
                    verify_tree(repo, fs, sub, &path, files)?;
                } else if !fs.list(&path).map_err(|e| Error::io(&path, e))?.is_empty() {
                    return Err(mismatch(fs, &path, "should be empty"));
                }
            }
            NodeKind::Symlink => {
                let t = fs
                    .read_link(&path)
                    .map_err(|e| Error::io(fs.display(&path), e))?;
                if t != n.target_os()? {
                    return Err(mismatch(fs, &path, "points elsewhere"));
                }
            }
            NodeKind::File => {
                if st.is_some_and(|s| s.st_size as u64 != n.size) {
                    return Err(mismatch(fs, &path, "has the wrong size"));
                }
                files.push((path, n.clone()));
            }
            _ => {}
        }
    }
    if let Some(extra) = on_disk.into_iter().next() {
        return Err(mismatch(fs, &rel.join(extra), "is not in the snapshot"));
    }
    Ok(())
}

fn verify_file(repo: &Repository, fs: &Beneath, rel: &Path, n: &Node) -> Result<()> {
    let io = |e| Error::io(fs.display(rel), e);
    let mut f = fs.read_file(rel).map_err(io)?;
    let mut buf = Vec::new();
    for id in &n.content {
        let len = repo
            .index()
            .get(id)
            .map(|l| l.raw_length as usize)
            .ok_or(Error::BlobNotFound { id: *id })?;
        buf.resize(len, 0);
        f.read_exact(&mut buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                mismatch(fs, rel, "is shorter than in the snapshot")
            } else {
                io(e)
            }
        })?;
        if repo.key().blob_id(&buf) != *id {
            return Err(mismatch(fs, rel, "differs from the snapshot"));
        }
    }
    if f.read(&mut [0u8; 1]).map_err(io)? != 0 {
        return Err(mismatch(fs, rel, "is longer than in the snapshot"));
    }
    Ok(())
}

/// How many entries, and the bytes of the files among them.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Tally {
    pub entries: u64,
    pub bytes: u64,
}

impl Tally {
    fn add(&mut self, bytes: u64) {
        self.entries += 1;
        self.bytes += bytes;
    }
}

/// What restoring a snapshot over a live directory would change.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Preview {
    /// In the snapshot, not in the directory.
    pub added: Tally,
    /// In both, different (kind, size, modification time, mode or link target).
    pub changed: Tally,
    /// In the directory, not in the snapshot: an in-place restore removes them.
    pub removed: Tally,
    pub unchanged: u64,
    /// The first paths of each kind of change, `+`, `M` or `-` first.
    pub paths: Vec<String>,
    /// Paths not listed for the limit.
    pub more_paths: u64,
}

impl Preview {
    fn note(&mut self, limit: usize, sign: char, rel: &Path) {
        if self.paths.len() < limit {
            self.paths.push(format!("{sign} {}", rel.display()));
        } else {
            self.more_paths += 1;
        }
    }
}

/// Compares the tree `root` with the directory `live` by metadata alone,
/// writing nothing. Lists up to `limit` paths.
pub fn preview(repo: &Repository, root: &Id, live: &Path, limit: usize) -> Result<Preview> {
    let mut p = Preview::default();
    match Beneath::open(live) {
        Ok(fs) => preview_tree(repo, &fs, Some(root), Path::new(""), limit, &mut p)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            count_added(repo, root, Path::new(""), limit, &mut p)?
        }
        Err(e) => return Err(Error::io(live, e)),
    }
    Ok(p)
}

fn preview_tree(
    repo: &Repository,
    fs: &Beneath,
    tree: Option<&Id>,
    rel: &Path,
    limit: usize,
    p: &mut Preview,
) -> Result<()> {
    use rustix::fs::FileType;
    let nodes = match tree {
        Some(t) => repo.load_tree(t)?.nodes,
        None => Vec::new(),
    };
    let mut on_disk: std::collections::HashSet<OsString> = fs
        .list(rel)
        .map_err(|e| Error::io(fs.display(rel), e))?
        .into_iter()
        .collect();
    for n in &nodes {
        let name = n.name_os()?;
        let path = rel.join(&name);
        if !on_disk.remove(&name) {
            p.added.add(n.size);
            p.note(limit, '+', &path);
            if let Some(sub) = &n.subtree {
                count_added(repo, sub, &path, limit, p)?;
            }
            continue;
        }
        let Some(st) = fs
            .stat(&path)
            .map_err(|e| Error::io(fs.display(&path), e))?
        else {
            p.added.add(n.size);
            p.note(limit, '+', &path);
            continue;
        };
        let kind = FileType::from_raw_mode(st.st_mode);
        let mtime_ns = st.st_mtime * 1_000_000_000 + st.st_mtime_nsec as i64;
        let same = match n.kind {
            NodeKind::Dir if kind == FileType::Directory => {
                preview_tree(repo, fs, n.subtree.as_ref(), &path, limit, p)?;
                continue;
            }
            NodeKind::File => {
                kind == FileType::RegularFile
                    && st.st_size as u64 == n.size
                    && mtime_ns == n.mtime_ns
                    && st.st_mode & 0o7777 == n.mode & 0o7777
            }
            NodeKind::Symlink => {
                kind == FileType::Symlink && fs.read_link(&path).ok() == Some(n.target_os()?)
            }
            NodeKind::Fifo => kind == FileType::Fifo,
            NodeKind::Char => kind == FileType::CharacterDevice && st.st_rdev == n.rdev,
            NodeKind::Block => kind == FileType::BlockDevice && st.st_rdev == n.rdev,
            NodeKind::Dir => false,
        };
        if same {
            p.unchanged += 1;
        } else {
            p.changed.add(n.size);
            p.note(limit, 'M', &path);
            if kind == FileType::Directory {
                // A directory where the snapshot has something else: all of it goes.
                preview_tree(repo, fs, None, &path, limit, p)?;
            }
        }
    }
    let mut extra: Vec<OsString> = on_disk.into_iter().collect();
    extra.sort();
    for name in extra {
        let path = rel.join(&name);
        let st = fs
            .stat(&path)
            .map_err(|e| Error::io(fs.display(&path), e))?;
        let Some(st) = st else { continue };
        let kind = FileType::from_raw_mode(st.st_mode);
        let bytes = if kind == FileType::RegularFile {
            st.st_size as u64
        } else {
            0
        };
        p.removed.add(bytes);
        p.note(limit, '-', &path);
        if kind == FileType::Directory {
            preview_tree(repo, fs, None, &path, limit, p)?;
        }
    }
    Ok(())
}

fn count_added(
    repo: &Repository,
    tree: &Id,
    rel: &Path,
    limit: usize,
    p: &mut Preview,
) -> Result<()> {
    for n in repo.load_tree(tree)?.nodes {
        let path = rel.join(n.name_os()?);
        p.added.add(n.size);
        p.note(limit, '+', &path);
        if let Some(sub) = &n.subtree {
            count_added(repo, sub, &path, limit, p)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::restore::tests::backed_up;

    /// Every entry below `dir`: kind, mode and contents (or link target).
    fn contents(dir: &Path) -> BTreeMap<PathBuf, (String, u32, Vec<u8>)> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (String, u32, Vec<u8>)>) {
            for e in fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                let m = fs::symlink_metadata(&p).unwrap();
                let rel = p.strip_prefix(root).unwrap().to_path_buf();
                let mode = m.mode() & 0o7777;
                if m.file_type().is_symlink() {
                    let t = fs::read_link(&p).unwrap();
                    out.insert(
                        rel,
                        ("link".into(), 0, t.into_os_string().into_encoded_bytes()),
                    );
                } else if m.is_dir() {
                    out.insert(rel, ("dir".into(), mode, Vec::new()));
                    walk(root, &p, out);
                } else {
                    out.insert(rel, ("file".into(), mode, fs::read(&p).unwrap()));
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(dir, dir, &mut out);
        out
    }

    fn noise(n: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn site(dir: &Path) -> PathBuf {
        let site = dir.join("www").join("example.com");
        fs::create_dir_all(site.join("wp-content/uploads")).unwrap();
        fs::write(
            site.join("index.php"),
            b"<?php require 'wp-blog-header.php';",
        )
        .unwrap();
        fs::write(site.join("wp-content/uploads/big.bin"), noise(300_000)).unwrap();
        fs::write(
            site.join("wp-config.php"),
            b"<?php define('DB_NAME', 'wp');",
        )
        .unwrap();
        symlink("wp-content", site.join("content")).unwrap();
        site
    }

    /// What an attacker leaves: a new file, a changed one, a removed one.
    fn hack(site: &Path) {
        fs::write(
            site.join("wp-content/uploads/shell.php"),
            b"<?php eval($_POST['x']);",
        )
        .unwrap();
        fs::write(
            site.join("index.php"),
            b"<?php /* injected */ eval(base64_decode('...'));",
        )
        .unwrap();
        fs::remove_file(site.join("wp-config.php")).unwrap();
    }

    fn no_leftovers(site: &Path) {
        let parent = site.parent().unwrap();
        let names: Vec<String> = fs::read_dir(parent)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(STAGE_MARK))
            .collect();
        assert!(names.is_empty(), "stage left behind: {names:?}");
    }

    #[test]
    fn in_place_restore_swaps_and_rollback_brings_the_old_tree_back() {
        let dir = tempfile::tempdir().unwrap();
        let live = site(dir.path());
        let (repo, snap) = backed_up(dir.path(), &live);
        let good = contents(&live);
        hack(&live);
        fs::set_permissions(&live, fs::Permissions::from_mode(0o751)).unwrap();
        let hacked = contents(&live);
        let journal = Journal::open(&dir.path().join("journal")).unwrap();

        let p = preview(&repo, &snap.tree, &live, 10).unwrap();
        assert_eq!(p.added.entries, 1, "{p:?}"); // wp-config.php
        assert_eq!(p.changed.entries, 1, "{p:?}"); // index.php
        assert_eq!(p.removed.entries, 1, "{p:?}"); // shell.php
        assert!(
            p.paths
                .contains(&"- wp-content/uploads/shell.php".to_string()),
            "{p:?}"
        );
        assert_eq!(contents(&live), hacked, "a preview writes nothing");

        let s = restore_in_place(
            &repo,
            &snap.tree,
            &live,
            &journal,
            "j1",
            i64::MAX,
            &Default::default(),
        )
        .unwrap();
        assert!(s.atomic);
        assert_eq!(s.verified_files, 3);
        assert_eq!(contents(&live), good);
        assert_eq!(
            fs::metadata(&live).unwrap().mode() & 0o7777,
            0o751,
            "the site root keeps its mode"
        );
        assert_eq!(contents(&s.rollback), hacked);
        no_leftovers(&live);
        assert_eq!(
            preview(&repo, &snap.tree, &live, 10).unwrap().paths,
            Vec::<String>::new()
        );

        let again = restore_in_place(
            &repo,
            &snap.tree,
            &live,
            &journal,
            "j1",
            i64::MAX,
            &Default::default(),
        );
        assert!(
            matches!(again, Err(Error::Invalid(_))),
            "one rollback point per job"
        );

        rollback(&journal, "j1").unwrap();
        assert_eq!(
            contents(&live),
            hacked,
            "rollback brings the hacked tree back byte for byte"
        );
        assert!(!s.rollback.exists());
        assert!(journal.records().unwrap().is_empty());
        assert!(matches!(rollback(&journal, "j1"), Err(Error::Invalid(_))));
    }

    #[test]
    fn a_crash_at_any_step_leaves_the_site_old_or_new_never_mixed() {
        for at in ["staged", "before-swap", "swapped"] {
            let dir = tempfile::tempdir().unwrap();
            let live = site(dir.path());
            let (repo, snap) = backed_up(dir.path(), &live);
            let good = contents(&live);
            hack(&live);
            let hacked = contents(&live);
            let journal = Journal::open(&dir.path().join("journal")).unwrap();
            CRASH_AT.with(|c| *c.borrow_mut() = Some(at));
            let r = restore_in_place(
                &repo,
                &snap.tree,
                &live,
                &journal,
                "j2",
                i64::MAX,
                &Default::default(),
            );
            CRASH_AT.with(|c| *c.borrow_mut() = None);
            assert!(r.is_err(), "{at}");
            let seen = contents(&live);
            assert!(seen == good || seen == hacked, "{at}: a mixed tree");
            let log = recover(&journal, 0).unwrap();
            assert_eq!(log.len(), 1, "{at}: {log:?}");
            assert_eq!(log[0].job, "j2", "{at}");
            no_leftovers(&live);
            match at {
                "swapped" => {
                    assert_eq!(contents(&live), good, "{at}");
                    rollback(&journal, "j2").unwrap();
                    assert_eq!(contents(&live), hacked, "{at}");
                }
                _ => {
                    assert_eq!(contents(&live), hacked, "{at}: untouched");
                    assert!(journal.records().unwrap().is_empty(), "{at}");
                }
            }
        }
    }

    #[test]
    fn without_exchange_two_renames_are_undone_or_kept_whole() {
        NO_EXCHANGE.with(|n| *n.borrow_mut() = true);
        for at in ["between-renames", ""] {
            let dir = tempfile::tempdir().unwrap();
            let live = site(dir.path());
            let (repo, snap) = backed_up(dir.path(), &live);
            let good = contents(&live);
            hack(&live);
            let hacked = contents(&live);
            let journal = Journal::open(&dir.path().join("journal")).unwrap();
            CRASH_AT.with(|c| *c.borrow_mut() = (!at.is_empty()).then_some(at));
            let r = restore_in_place(
                &repo,
                &snap.tree,
                &live,
                &journal,
                "j5",
                i64::MAX,
                &Default::default(),
            );
            CRASH_AT.with(|c| *c.borrow_mut() = None);
            if at.is_empty() {
                assert!(!r.unwrap().atomic);
                assert_eq!(contents(&live), good);
                rollback(&journal, "j5").unwrap();
            } else {
                assert!(r.is_err());
                assert!(!live.exists(), "the moment without the site");
                recover(&journal, 0).unwrap();
            }
            assert_eq!(contents(&live), hacked, "{at:?}");
            no_leftovers(&live);
            assert!(journal.records().unwrap().is_empty());
        }
        NO_EXCHANGE.with(|n| *n.borrow_mut() = false);
    }

    #[test]
    fn a_failed_verification_leaves_the_site_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let live = site(dir.path());
        let (repo, snap) = backed_up(dir.path(), &live);
        let copy = dir.path().join("copy");
        restore(&repo, &snap.tree, &copy, &[]).unwrap();
        assert_eq!(verify(&repo, &snap.tree, &copy).unwrap(), 3);
        let big = copy.join("wp-content/uploads/big.bin");
        let mut b = fs::read(&big).unwrap();
        b[200_000] ^= 1;
        fs::write(&big, &b).unwrap();
        let e = verify(&repo, &snap.tree, &copy).unwrap_err().to_string();
        assert!(e.contains("big.bin: differs from the snapshot"), "{e}");
        fs::write(copy.join("extra"), b"x").unwrap();
        fs::write(&big, b"short").unwrap();
        assert!(verify(&repo, &snap.tree, &copy).is_err());
    }

    #[test]
    fn a_cancelled_restore_leaves_the_site_untouched_and_reports_progress() {
        let dir = tempfile::tempdir().unwrap();
        let live = site(dir.path());
        let (repo, snap) = backed_up(dir.path(), &live);
        hack(&live);
        let hacked = contents(&live);
        let journal = Journal::open(&dir.path().join("journal")).unwrap();
        let progress = crate::backup::Progress::default();
        progress
            .cancel
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let r = restore_in_place(&repo, &snap.tree, &live, &journal, "j6", 0, &progress);
        assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
        assert_eq!(contents(&live), hacked);
        no_leftovers(&live);
        assert!(journal.records().unwrap().is_empty());
        let progress = crate::backup::Progress::default();
        restore_in_place(&repo, &snap.tree, &live, &journal, "j7", 0, &progress).unwrap();
        let counted =
            |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(counted(&progress.files), 3);
        assert!(
            counted(&progress.bytes) >= 300_000,
            "{}",
            counted(&progress.bytes)
        );
    }

    #[test]
    fn rollback_points_expire() {
        let dir = tempfile::tempdir().unwrap();
        let live = site(dir.path());
        let (repo, snap) = backed_up(dir.path(), &live);
        let journal = Journal::open(&dir.path().join("journal")).unwrap();
        let s = restore_in_place(
            &repo,
            &snap.tree,
            &live,
            &journal,
            "j3",
            1_000,
            &Default::default(),
        )
        .unwrap();
        // A finished restore is only told of at start (the controller may
        // have lost the session before it heard).
        let told = recover(&journal, 999).unwrap();
        assert_eq!(told.len(), 1, "{told:?}");
        assert!(told[0].what.contains("restore completed"), "{told:?}");
        assert!(s.rollback.exists());
        let staging = Record {
            job: "j4".into(),
            phase: Phase::Staging,
            ..journal.get("j3").unwrap().unwrap()
        };
        journal.write(&staging).unwrap();
        assert!(
            expire(&journal, 999).unwrap().is_empty(),
            "a running restore is left alone"
        );
        journal.remove("j4").unwrap();
        assert!(s.rollback.exists());
        let log = recover(&journal, 1_000).unwrap();
        assert!(
            log[0].what.contains("expired") && log[0].job == "j3",
            "{log:?}"
        );
        assert!(!s.rollback.exists());
        assert!(journal.records().unwrap().is_empty());
    }

    #[test]
    fn mount_points_are_read_with_their_escapes() {
        let info = "36 35 98:0 / /mnt/with\\040space rw - ext4 /dev/x rw\n\
                    37 35 98:0 / /var/www/shop/wp-content/uploads rw - nfs srv:/u rw\n";
        assert_eq!(
            mount_points(info),
            [
                PathBuf::from("/mnt/with space"),
                PathBuf::from("/var/www/shop/wp-content/uploads")
            ]
        );
    }

    #[test]
    fn refuses_what_it_cannot_swap_safely() {
        let dir = tempfile::tempdir().unwrap();
        let live = site(dir.path());
        let (repo, snap) = backed_up(dir.path(), &live);
        let journal = Journal::open(&dir.path().join("journal")).unwrap();
        let link = dir.path().join("www/link.com");
        symlink(&live, &link).unwrap();
        for (target, job) in [
            (link.as_path(), "j4"),
            (Path::new("relative"), "j4"),
            (live.as_path(), "../x"),
        ] {
            let e = restore_in_place(
                &repo,
                &snap.tree,
                target,
                &journal,
                job,
                0,
                &Default::default(),
            );
            assert!(
                matches!(e, Err(Error::Invalid(_))),
                "{target:?} {job}: {e:?}"
            );
        }
        assert!(journal.records().unwrap().is_empty());
    }
}
