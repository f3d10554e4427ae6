//! Streams as files: database dumps written into a snapshot without touching
//! disk (DB-5), and blob lists read back in order with batched range reads.
//!
//! A [`StreamBackup`] holds the repository's shared lock and one blob saver for
//! every stream of one snapshot. A [`StreamWriter`] cuts its stream at record
//! ends (see [`RecordCutter`]); a forced [`StreamWriter::cut`] starts a new blob
//! so a section (one table) is a whole run of blobs and restores alone.
//! Nothing is visible until [`StreamBackup::commit`] writes the snapshot; a
//! session dropped without committing leaves only unreferenced blobs.

use std::collections::{HashSet, VecDeque};
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};

use rayon::prelude::*;

use crate::chunker::RecordCutter;
use crate::content_edit::{self, ContentEdit};
use crate::error::{Error, Result};
use crate::group::Group;
use crate::id::Id;
use crate::index::Location;
use crate::lock::Lock;
use crate::pack::{self, BlobType};
use crate::repository::Repository;
use crate::saver::BlobSaver;
use crate::snapshot::{Content, Kind, Snapshot, Stats, TOOL_VERSION};
use crate::tree::{Node, NodeKind, Tree};

/// One snapshot's worth of streams being written.
pub struct StreamBackup<'r> {
    repo: &'r Repository,
    saver: BlobSaver<'r>,
    /// None for a repository reached through a controller, which keeps
    /// gc off what a running job uploads.
    _lock: Option<Lock>,
    started: Instant,
    files: Vec<Node>,
    total: u64,
    /// Small blobs go into groups of this scope (see `group`).
    scope: Option<Id>,
    /// A tree of an earlier snapshot of the same streams: lists are stored
    /// as edits of its same-named lists (see `content_edit`).
    list_base: Option<Id>,
}

/// Where a section starts in a stream: its byte offset and its first blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    pub blob: usize,
}

impl<'r> StreamBackup<'r> {
    pub fn begin(repo: &'r Repository) -> Result<StreamBackup<'r>> {
        // Through a controller (a fleet job) the repository's locks and index
        // are the controller's: the saver asks it which blobs exist.
        if repo.known_blobs().is_some() {
            return Ok(StreamBackup {
                repo,
                saver: BlobSaver::new(repo, HashSet::new()),
                _lock: None,
                started: Instant::now(),
                files: Vec::new(),
                total: 0,
                scope: None,
                list_base: None,
            });
        }
        let lock = Lock::acquire_waiting(repo.storage().clone(), false, crate::lock::BACKUP_WAIT)?;
        repo.load_index()?;
        repo.adopt_unindexed_packs()?;
        Ok(StreamBackup {
            repo,
            saver: BlobSaver::over_index(repo),
            _lock: Some(lock),
            started: Instant::now(),
            files: Vec::new(),
            total: 0,
            scope: None,
            list_base: None,
        })
    }

    /// Stores the small blobs of this session's streams in groups scoped to
    /// `name` (a host and domain): they compress together, and only streams
    /// of the same name share them.
    pub fn group_small_blobs(&mut self, name: &str) {
        self.scope = Some(self.repo.key().group_scope(name));
    }

    /// Stores each stream's blob list as edits of the same-named stream's
    /// list in `tree` (the `db` tree of an earlier snapshot of these streams,
    /// which must stay readable as long as this one), where that is smaller.
    pub fn edit_lists_from(&mut self, tree: Id) {
        self.list_base = Some(tree);
    }

    /// Seals this session's groups at zstd `level` (see
    /// [`crate::group::DAY_LEVEL`]).
    pub fn set_group_level(&mut self, level: i32) {
        self.saver.set_group_level(level);
    }

    /// Runs `write` with a writer for one stream. Cut chunks are saved
    /// (hashed, grouped, compressed, encrypted, packed) on a thread of their
    /// own, a batch at a time, so cutting the next batch overlaps with
    /// storing this one: a dump is read at the speed of the slower of the two.
    pub fn write_stream<'p, T>(
        &self,
        cutter: RecordCutter,
        write: impl FnOnce(StreamWriter<'p>) -> T,
    ) -> T {
        let (saver, scope) = (&self.saver, self.scope);
        std::thread::scope(|threads| {
            // One batch queued while one is saved and the next one is cut.
            let (batches, queued) = bounded::<Vec<Vec<u8>>>(1);
            let (results, saved) = unbounded::<Result<Saved>>();
            std::thread::Builder::new()
                .name("stream-saver".into())
                .spawn_scoped(threads, move || {
                    for batch in queued {
                        let result = save_batch(saver, scope.as_ref(), &batch);
                        let failed = result.is_err();
                        if results.send(result).is_err() || failed {
                            break;
                        }
                    }
                })
                .expect("spawn the stream saver");
            write(StreamWriter {
                cutter,
                buf: Vec::new(),
                rec_start: 0,
                content: Vec::new(),
                pending: Vec::new(),
                pending_bytes: 0,
                cut_blobs: 0,
                size: 0,
                progress: None,
                batches: Some(batches),
                saved,
            })
        })
    }

    /// The seed record cutters of this repository must use.
    pub fn chunker_seed(&self) -> u64 {
        self.repo.key().chunker_seed()
    }

    /// Adds a finished stream as `db/<name>`.
    pub fn add_file(&mut self, name: &str, content: Vec<Id>, size: u64) -> Result<()> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(Error::Invalid(format!("bad stream name {name:?}")));
        }
        if self.files.iter().any(|n| n.name == name) {
            return Err(Error::Invalid(format!("stream {name:?} added twice")));
        }
        let mut n = Node::new(OsStr::new(name), NodeKind::File);
        n.mode = 0o600;
        n.mtime_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        if let Ok(m) = std::fs::metadata("/proc/self") {
            n.uid = m.uid();
            n.gid = m.gid();
        }
        n.size = size;
        n.content = content;
        self.total += size;
        self.files.push(n);
        Ok(())
    }

    /// Adds a small file (a manifest) as `db/<name>`, one blob.
    pub fn add_small_file(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let content = if data.is_empty() {
            Vec::new()
        } else {
            vec![self.saver.save(BlobType::Data, data)?]
        };
        self.add_file(name, content, data.len() as u64)
    }

    /// Waits for every blob to be durable and indexed, then writes the snapshot.
    pub fn commit(
        mut self,
        domain: &str,
        host: &str,
        source: &str,
        tags: &[String],
    ) -> Result<(Id, Snapshot)> {
        if domain.is_empty() {
            return Err(Error::Invalid("a domain name is required".into()));
        }
        self.files.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(base) = self.list_base {
            self.edit_lists(base)?;
        }
        let files = self.files.len() as u64;
        let db = Tree {
            nodes: std::mem::take(&mut self.files),
        };
        let db_id = self.saver.save(BlobType::Tree, &db.to_bytes())?;
        let mut dir = Node::new(OsStr::new("db"), NodeKind::Dir);
        dir.mode = 0o700;
        dir.mtime_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        dir.subtree = Some(db_id);
        let root = Tree { nodes: vec![dir] };
        let root_id = self.saver.save(BlobType::Tree, &root.to_bytes())?;
        let saved = self.saver.finish()?;
        let stats = Stats {
            files,
            dirs: 1,
            total_bytes: self.total,
            bytes_read: self.total,
            ..saved.to_stats(self.started)
        };
        let snap = Snapshot {
            time: chrono::Utc::now(),
            domain: domain.to_string(),
            host: host.to_string(),
            kind: Kind::Full,
            content: Content::Database,
            parent: None,
            tree: root_id,
            source: source.to_string(),
            tags: tags.to_vec(),
            excludes: Vec::new(),
            stats,
            tool_version: TOOL_VERSION.to_string(),
            agent: None,
            job: None,
            run: None,
        };
        let id = self.repo.save_snapshot(&snap)?;
        Ok((id, snap))
    }
}

impl StreamBackup<'_> {
    fn edit_lists(&mut self, base_id: Id) -> Result<()> {
        // A base that cannot be read costs whole lists, never the backup.
        let Ok(base) = self.repo.load_tree(&base_id) else {
            return Ok(());
        };
        for n in &mut self.files {
            let Some(from) = base.find(n.name.as_bytes()).filter(|b| {
                b.kind == NodeKind::File && b.bases.len() + 1 < content_edit::WRITE_CHAIN
            }) else {
                continue;
            };
            let edits = content_edit::diff(&from.content, &n.content);
            if content_edit::encoded_len(&edits) < content_edit::whole_len(n.content.len()) {
                n.content.clear();
                n.content_edit = Some(ContentEdit {
                    base: base_id,
                    edits,
                });
            }
        }
        Ok(())
    }
}

/// A saved batch: its chunks' ids in order, and their bytes.
type Saved = (Vec<Id>, usize);

/// Saves one batch of chunks on every core; ids come back in order.
fn save_batch(saver: &BlobSaver, scope: Option<&Id>, batch: &[Vec<u8>]) -> Result<Saved> {
    let ids = batch
        .par_iter()
        .map(|c| match scope {
            Some(s) => saver.save_grouped(s, c),
            None => saver.save(BlobType::Data, c),
        })
        .collect::<Result<_>>()?;
    Ok((ids, batch.iter().map(Vec::len).sum()))
}

/// Writes one stream: bytes go in record by record, blobs come out.
/// Made by [`StreamBackup::write_stream`].
pub struct StreamWriter<'s> {
    cutter: RecordCutter,
    buf: Vec<u8>,
    rec_start: usize,
    /// Ids of the chunks saved so far, in order.
    content: Vec<Id>,
    /// Chunks cut but not yet sent to the saver thread.
    pending: Vec<Vec<u8>>,
    pending_bytes: usize,
    /// Chunks cut so far (saved, in flight or pending).
    cut_blobs: usize,
    size: u64,
    progress: Option<&'s AtomicU64>,
    /// Batches to the saver thread; None once the stream is finished.
    batches: Option<Sender<Vec<Vec<u8>>>>,
    saved: Receiver<Result<Saved>>,
}

/// Bytes of cut chunks saved together (compressed and encrypted in parallel).
const BATCH_BYTES: usize = 1 << 20;

impl<'s> StreamWriter<'s> {
    /// Counts stream bytes into `counter` as they are stored.
    pub fn with_progress(mut self, counter: &'s AtomicU64) -> Self {
        self.progress = Some(counter);
        self
    }

    /// Appends bytes to the current record.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(data);
        // A record longer than the maximum is cut at the maximum.
        while self.buf.len() >= self.cutter.max {
            let rest = self.buf.split_off(self.cutter.max);
            let chunk = std::mem::replace(&mut self.buf, rest);
            self.emit(chunk)?;
            self.rec_start = self.rec_start.saturating_sub(self.cutter.max);
        }
        Ok(())
    }

    /// Marks the end of a record: a possible boundary.
    pub fn end_record(&mut self) -> Result<()> {
        if self
            .cutter
            .is_boundary(self.buf.len(), &self.buf[self.rec_start..])
        {
            self.cut()
        } else {
            self.rec_start = self.buf.len();
            Ok(())
        }
    }

    /// Forces a boundary; what follows starts a new blob.
    pub fn cut(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            let chunk = std::mem::take(&mut self.buf);
            self.emit(chunk)?;
        }
        self.rec_start = 0;
        Ok(())
    }

    /// The position after a `cut`: the next byte's offset and blob number.
    pub fn position(&self) -> Position {
        Position {
            offset: self.size + self.buf.len() as u64,
            blob: self.cut_blobs,
        }
    }

    fn emit(&mut self, chunk: Vec<u8>) -> Result<()> {
        self.size += chunk.len() as u64;
        self.pending_bytes += chunk.len();
        self.pending.push(chunk);
        self.cut_blobs += 1;
        if self.pending_bytes >= BATCH_BYTES {
            self.send_pending()?;
            // Take what is saved already, so an error stops the dump early.
            while let Ok(saved) = self.saved.try_recv() {
                self.take(saved)?;
            }
        }
        Ok(())
    }

    fn send_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let sent = match &self.batches {
            Some(b) => b.send(batch).is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The saver stopped: its error is waiting.
        while let Ok(saved) = self.saved.recv() {
            self.take(saved)?;
        }
        Err(Error::Other("the stream saver stopped".into()))
    }

    fn take(&mut self, saved: Result<Saved>) -> Result<()> {
        let (ids, bytes) = saved?;
        self.content.extend(ids);
        if let Some(p) = self.progress {
            p.fetch_add(bytes as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Flushes the last blob and waits for every batch to be saved. Returns
    /// the blob list and the stream's size.
    pub fn finish(mut self) -> Result<(Vec<Id>, u64)> {
        self.cut()?;
        self.send_pending()?;
        // The saver thread ends once its queue is closed and empty.
        self.batches = None;
        while let Ok(saved) = self.saved.recv() {
            self.take(saved)?;
        }
        if self.content.len() != self.cut_blobs {
            return Err(Error::Other(format!(
                "the stream saver returned {} of {} blob ids",
                self.content.len(),
                self.cut_blobs
            )));
        }
        Ok((self.content, self.size))
    }
}

/// Largest single range read of a [`ContentReader`].
const MAX_RANGE: u64 = 4 << 20;

/// Groups a [`ContentReader`] keeps open. A dump's list walks its first
/// day's groups in order with each later day's changed chunks in between,
/// so about one group per day of the list's history is in use at once.
const GROUPS_KEPT: usize = 64;

/// Reads blobs in order as one byte stream, verifying each; consecutive blobs
/// in one pack come in one range read (a dump's blobs are written in order, so
/// a table is usually a few reads).
pub struct ContentReader<'r> {
    repo: &'r Repository,
    ids: VecDeque<Id>,
    ready: VecDeque<Vec<u8>>,
    pos: usize,
    stored_read: u64,
    /// Groups opened, by (pack, offset), most recently used last: a member of
    /// one is served without reading or decrypting again.
    groups: VecDeque<((Id, u32), Group)>,
}

impl<'r> ContentReader<'r> {
    pub fn new(repo: &'r Repository, ids: impl IntoIterator<Item = Id>) -> ContentReader<'r> {
        ContentReader {
            repo,
            ids: ids.into_iter().collect(),
            ready: VecDeque::new(),
            pos: 0,
            stored_read: 0,
            groups: VecDeque::new(),
        }
    }

    /// The member `id` of the group at `loc` if that group is open.
    fn open_member(&mut self, id: &Id, loc: &Location) -> Option<Result<Vec<u8>>> {
        let at = self
            .groups
            .iter()
            .position(|(k, _)| *k == (loc.pack, loc.offset))?;
        let entry = self.groups.remove(at).expect("found above");
        let member = member_of(&entry.1, id);
        self.groups.push_back(entry);
        Some(member)
    }

    /// Opens the group `envelope` (at `loc`), keeps it, and takes `id` from it.
    fn open_group(&mut self, id: &Id, loc: &Location, envelope: &[u8]) -> Result<Vec<u8>> {
        let group = crate::group::open(self.repo.key(), envelope, &format_args!("blob {id}"))?;
        let member = member_of(&group, id);
        if self.groups.len() == GROUPS_KEPT {
            self.groups.pop_front();
        }
        self.groups.push_back(((loc.pack, loc.offset), group));
        member
    }

    /// Stored (encrypted, compressed) bytes fetched from storage so far.
    pub fn stored_bytes_read(&self) -> u64 {
        self.stored_read
    }

    fn fetch(&mut self) -> Result<()> {
        // Members of open groups need no read.
        while let Some(id) = self.ids.front().copied() {
            let loc = self
                .repo
                .index()
                .get(&id)
                .ok_or(Error::BlobNotFound { id })?;
            if !loc.grouped {
                break;
            }
            let Some(member) = self.open_member(&id, &loc) else {
                break;
            };
            self.ready.push_back(member?);
            self.ids.pop_front();
        }
        if !self.ready.is_empty() {
            return Ok(());
        }
        let Some(first) = self.ids.pop_front() else {
            return Ok(());
        };
        let idx = self.repo.index();
        let loc = idx.get(&first).ok_or(Error::BlobNotFound { id: first })?;
        let start = loc.offset as u64;
        let mut end = start + loc.length as u64;
        let mut run = vec![(first, loc)];
        while let Some(next) = self.ids.front() {
            let Some(l) = idx.get(next) else { break };
            let l_end = l.offset as u64 + l.length as u64;
            // A blob already inside the range (a group read for an earlier
            // member) joins the run; so does the envelope right after it.
            let inside = l.offset as u64 >= start && l_end <= end;
            if l.pack != loc.pack
                || !(inside || l.offset as u64 == end)
                || l_end.max(end) - start > MAX_RANGE
            {
                break;
            }
            end = end.max(l_end);
            run.push((*next, l));
            self.ids.pop_front();
        }
        drop(idx);
        let buf = self
            .repo
            .storage()
            .get_range(&pack::key_of(&loc.pack), start, end - start)?;
        self.stored_read += buf.len() as u64;
        for (id, l) in run {
            let o = (l.offset as u64 - start) as usize;
            let envelope = &buf[o..o + l.length as usize];
            let plain = match self.open_member(&id, &l) {
                Some(member) => member?,
                None if l.grouped => self.open_group(&id, &l, envelope)?,
                None => self.repo.key().open_blob(&id, envelope)?,
            };
            self.ready.push_back(plain);
        }
        Ok(())
    }
}

/// A verified group's member `id` (its bytes hashed to it when opened).
fn member_of(group: &Group, id: &Id) -> Result<Vec<u8>> {
    group
        .get(id)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| Error::corrupt(format!("blob {id}"), "not in the group its pack names"))
}

impl Read for ContentReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.ready.front() {
                Some(b) if self.pos < b.len() => break,
                Some(_) => {
                    self.ready.pop_front();
                    self.pos = 0;
                }
                None if self.ids.is_empty() => return Ok(0),
                None => self.fetch().map_err(std::io::Error::other)?,
            }
        }
        let b = self.ready.front().expect("checked above");
        let n = out.len().min(b.len() - self.pos);
        out[..n].copy_from_slice(&b[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl ContentReader<'_> {
    /// Runs `consume` on this stream while a thread of its own reads,
    /// verifies and decompresses ahead (a few MiB), so a restore's reading
    /// overlaps with the client that takes it. Returns what `consume`
    /// returned and the stored bytes fetched.
    pub fn read_ahead<T>(mut self, consume: impl FnOnce(&mut dyn Read) -> T) -> (T, u64) {
        std::thread::scope(|threads| {
            let (ready, taken) = bounded::<std::io::Result<Vec<u8>>>(READ_AHEAD);
            let reader = std::thread::Builder::new()
                .name("stream-reader".into())
                .spawn_scoped(threads, move || {
                    loop {
                        let mut buf = vec![0; AHEAD_BUF];
                        let read = read_full(&mut self, &mut buf).map(|n| {
                            buf.truncate(n);
                            buf
                        });
                        let end = matches!(&read, Ok(b) if b.is_empty()) || read.is_err();
                        // A consumer that stopped drops its end: stop too.
                        if ready.send(read).is_err() || end {
                            break;
                        }
                    }
                    self.stored_bytes_read()
                })
                .expect("spawn the stream reader");
            let mut ahead = Ahead {
                taken,
                buf: Vec::new(),
                pos: 0,
            };
            let out = consume(&mut ahead);
            drop(ahead);
            (out, reader.join().expect("the stream reader panicked"))
        })
    }
}

/// Buffers of `AHEAD_BUF` bytes a [`ContentReader::read_ahead`] keeps ready.
const READ_AHEAD: usize = 4;
const AHEAD_BUF: usize = 1 << 20;

/// Reads until `buf` is full or the stream ends.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The consumer's end of a read-ahead.
struct Ahead {
    taken: Receiver<std::io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for Ahead {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            match self.taken.recv() {
                Ok(next) => {
                    self.buf = next?;
                    self.pos = 0;
                }
                // The reader ended after the stream's end or its error.
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunker::RecordCutter;

    fn rows(day: u32) -> Vec<Vec<u8>> {
        (0..4000u32)
            .map(|i| {
                let v = if i % 50 == day { day } else { 0 };
                format!("({i},'customer {i}',{v},'2026-12-0{}'),\n", 1 + i % 9).into_bytes()
            })
            .collect()
    }

    fn dump(repo: &Repository, day: u32) -> (Id, Vec<u8>) {
        dump_on(repo, day, None)
    }

    /// The `db` tree of a snapshot.
    fn db_tree(repo: &Repository, snap: &Id) -> Id {
        let (_, s) = repo.find_snapshot(&snap.to_hex(), None).unwrap();
        repo.load_tree(&s.tree).unwrap().nodes[0].subtree.unwrap()
    }

    fn dump_on(repo: &Repository, day: u32, base: Option<Id>) -> (Id, Vec<u8>) {
        let mut session = StreamBackup::begin(repo).unwrap();
        session.group_small_blobs("web1\nshop.test");
        if let Some(b) = base {
            session.edit_lists_from(b);
        }
        let mut all = Vec::new();
        let cutter = RecordCutter::new(256, 1024, 64 << 10, 7).with_rows(8);
        let (content, size) = session.write_stream(cutter, |mut w| {
            for r in rows(day) {
                w.write(&r).unwrap();
                w.end_record().unwrap();
                all.extend_from_slice(&r);
            }
            w.finish().unwrap()
        });
        session.add_file("shop.sql", content, size).unwrap();
        let (id, _) = session.commit("shop.test", "web1", "test", &[]).unwrap();
        (id, all)
    }

    /// Forty days of `rows` as one stream: its list, size and bytes.
    fn forty_days(session: &StreamBackup) -> (Vec<Id>, u64, Vec<u8>) {
        let cutter = RecordCutter::new(256, 1024, 64 << 10, 7).with_rows(8);
        let mut all = Vec::new();
        let (content, size) = session.write_stream(cutter, |mut w| {
            for day in 0..40 {
                for r in rows(day) {
                    w.write(&r).unwrap();
                    w.end_record().unwrap();
                    all.extend_from_slice(&r);
                }
            }
            w.finish().unwrap()
        });
        (content, size, all)
    }

    fn read_back(repo: &Repository, snap: &Id) -> Vec<u8> {
        let (_, s) = repo.find_snapshot(&snap.to_hex(), None).unwrap();
        let root = repo.load_tree(&s.tree).unwrap();
        let db = repo.load_tree(&root.nodes[0].subtree.unwrap()).unwrap();
        let mut out = Vec::new();
        ContentReader::new(repo, db.nodes[0].content.clone())
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    /// gc with no grace, repacking any pack with a dead blob.
    fn gc_now(repo: &Repository) -> crate::gc::GcReport {
        crate::gc::gc(
            repo,
            crate::gc::GcOptions {
                grace: std::time::Duration::ZERO,
                repack_threshold: 0.01,
                ..Default::default()
            },
        )
        .unwrap()
    }

    fn check_every_byte(repo: &Repository) {
        let checked = crate::check::check(
            repo,
            crate::check::CheckOptions {
                read_data: true,
                subset: 1.0,
            },
        )
        .unwrap();
        assert!(checked.errors.is_empty(), "{:?}", checked.errors);
    }

    /// A read-ahead yields the stream's bytes in order; a consumer that
    /// stops early ends it (no hang), and a blob that cannot be read reaches
    /// the consumer as an error, not as the stream's end.
    #[test]
    fn read_ahead_streams_in_order_stops_early_and_passes_errors_on() {
        let dir = tempfile::tempdir().unwrap();
        let repo = crate::repository::test_repository(dir.path());
        let mut session = StreamBackup::begin(&repo).unwrap();
        session.group_small_blobs("web1\nshop.test");
        let (content, size, all) = forty_days(&session);
        session.add_file("a.sql", content.clone(), size).unwrap();
        session.commit("shop.test", "web1", "test", &[]).unwrap();
        assert!(all.len() > 3 * AHEAD_BUF);

        let (back, stored) = ContentReader::new(&repo, content.clone()).read_ahead(|r| {
            let mut back = Vec::new();
            r.read_to_end(&mut back).unwrap();
            back
        });
        assert!(back == all, "the stream reads back as written");
        let mut plain = ContentReader::new(&repo, content.clone());
        std::io::copy(&mut plain, &mut std::io::sink()).unwrap();
        assert_eq!(stored, plain.stored_bytes_read());

        let (head, _) = ContentReader::new(&repo, content.clone()).read_ahead(|r| {
            let mut head = [0u8; 100];
            r.read_exact(&mut head).unwrap();
            head
        });
        assert_eq!(head[..], all[..100]);

        // A list naming a blob the repository lacks, past the first buffers.
        let mut broken = content;
        let missing = Id([7; 32]);
        broken.push(missing);
        let (err, _) = ContentReader::new(&repo, broken).read_ahead(|r| {
            r.read_to_end(&mut Vec::new())
                .expect_err("a missing blob fails the read")
        });
        assert!(err.to_string().contains(&missing.to_string()), "{err}");
    }

    /// Chunks are saved on a thread of their own: when saving fails, the
    /// stream's writer returns that error (never a short list, never a hang),
    /// and the batches saved before the failure came back in order.
    #[test]
    fn a_failing_saver_fails_the_stream_with_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        let repo = crate::repository::test_repository(dir.path());
        // A stream of many batches is saved in order, whole.
        let mut session = StreamBackup::begin(&repo).unwrap();
        let (content, size, all) = forty_days(&session);
        assert!(size > 5 * BATCH_BYTES as u64, "{size}");
        session.add_file("a.sql", content, size).unwrap();
        let (snap, _) = session.commit("shop.test", "web1", "test", &[]).unwrap();
        assert!(
            read_back(&repo, &snap) == all,
            "the stream reads back as written"
        );

        // Packs are staged in data/: a file in its place fails every save.
        let session = StreamBackup::begin(&repo).unwrap();
        std::fs::remove_dir_all(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("data"), b"").unwrap();
        let cutter = RecordCutter::new(256, 1024, 64 << 10, 7).with_rows(8);
        let err = session.write_stream(cutter, |mut w| {
            for r in rows(99).iter().cycle().take(40_000) {
                w.write(r)?;
                w.end_record()?;
            }
            w.finish()
        });
        let err = err.expect_err("the save failed").to_string();
        let staging = dir.path().join("data").display().to_string();
        assert!(err.contains(&staging), "{err}");
    }

    /// Small dump chunks go into groups: they read back byte for byte, every
    /// pack passes the checks a controller runs on an agent's, an unchanged
    /// day stores no data, and gc's repack keeps the live members readable.
    #[test]
    fn grouped_dumps_round_trip_dedup_and_survive_repack() {
        let dir = tempfile::tempdir().unwrap();
        let repo = crate::repository::test_repository(dir.path());
        let (first, bytes0) = dump(&repo, 1);
        assert_eq!(read_back(&repo, &first), bytes0);
        let idx_len = repo.index().len();
        let grouped = repo
            .index()
            .packs()
            .flat_map(|(_, es)| es)
            .filter(|e| e.grouped)
            .count();
        assert!(
            grouped * 2 > idx_len,
            "most blobs are grouped: {grouped} of {idx_len}"
        );
        for p in repo.index().pack_ids() {
            let data = repo.storage().get(&pack::key_of(p)).unwrap();
            crate::pack::verify(repo.key(), p, &data).unwrap();
        }
        let (second, bytes1) = dump(&repo, 2);
        assert_ne!(bytes0, bytes1);
        assert_eq!(read_back(&repo, &second), bytes1);
        let new_blobs = repo.index().len() - idx_len;
        assert!(
            new_blobs * 2 < idx_len,
            "a day with 2% of rows changed adds few blobs: {new_blobs} of {idx_len}"
        );
        // Forget the first day: its groups are part dead, gc repacks them.
        let group_of: std::collections::HashMap<Id, (Id, u32)> = repo
            .index()
            .packs()
            .flat_map(|(p, es)| es.iter().map(move |e| (e.id, (*p, e.offset))))
            .collect();
        crate::gc::forget(&repo, &[first]).unwrap();
        let report = gc_now(&repo);
        assert!(!report.packs_repacked.is_empty(), "{report:?}");
        assert_eq!(read_back(&repo, &second), bytes1);
        // Repacking never merges groups: each new group's members all came
        // from one old group.
        for (p, entries) in repo.index().packs() {
            let mut sources: std::collections::HashMap<u32, HashSet<(Id, u32)>> =
                Default::default();
            for e in entries.iter().filter(|e| e.grouped) {
                sources.entry(e.offset).or_default().insert(group_of[&e.id]);
            }
            for (offset, from) in sources {
                assert_eq!(from.len(), 1, "group at {offset} of {p} merges {from:?}");
            }
        }
        check_every_byte(&repo);
    }

    /// A day's blob list stored as edits of the day before: it resolves to
    /// the same bytes, costs a fraction of the whole list, keeps its base
    /// trees (not their data) through forget and gc, and chains no deeper
    /// than a writer may.
    #[test]
    fn edited_lists_resolve_keep_their_base_and_stay_short() {
        let dir = tempfile::tempdir().unwrap();
        let repo = crate::repository::test_repository(dir.path());
        let (first, _) = dump(&repo, 1);
        let mut snaps = vec![first];
        let mut depths = Vec::new();
        for day in 2..=20 {
            let base = db_tree(&repo, snaps.last().unwrap());
            let (snap, bytes) = dump_on(&repo, day % 50, Some(base));
            assert_eq!(read_back(&repo, &snap), bytes, "day {day}");
            let db = db_tree(&repo, &snap);
            let stored = repo.parsed_tree(&db).unwrap();
            let resolved = repo.load_tree(&db).unwrap();
            let node = &resolved.nodes[0];
            depths.push(node.bases.len());
            if !node.bases.is_empty() {
                assert_eq!(node.bases[0], base);
                assert!(stored.nodes[0].content.is_empty());
                let whole = serde_json::to_vec(&node.content).unwrap().len();
                let edits = serde_json::to_vec(&stored.nodes[0].content_edit)
                    .unwrap()
                    .len();
                assert!(
                    edits * 2 < whole,
                    "day {day}: edits {edits} B, list {whole} B"
                );
            }
            snaps.push(snap);
        }
        assert_eq!(depths[..3], [1, 2, 3]);
        assert!(
            depths.iter().all(|&d| d < content_edit::WRITE_CHAIN),
            "{depths:?}"
        );
        assert!(
            depths.contains(&0),
            "a chain too long starts over: {depths:?}"
        );

        // The last day's list walks the groups of every earlier day at once
        // (each day's changed chunks sit between the first day's): each
        // group is fetched once, not again after every other day's chunk.
        let last = *snaps.last().unwrap();
        let list = repo.load_tree(&db_tree(&repo, &last)).unwrap().nodes[0]
            .content
            .clone();
        let mut reader = ContentReader::new(&repo, list);
        std::io::copy(&mut reader, &mut std::io::sink()).unwrap();
        let packs: u64 = std::fs::read_dir(dir.path().join("data"))
            .unwrap()
            .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
            .map(|f| f.unwrap().metadata().unwrap().len())
            .sum();
        assert!(
            reader.stored_bytes_read() <= packs,
            "read {} B of {packs} B of packs",
            reader.stored_bytes_read()
        );

        // gc's marks hold what a walk reaches, base trees included.
        let roots: Vec<Id> = repo
            .snapshots()
            .unwrap()
            .into_iter()
            .map(|(_, s)| s.tree)
            .collect();
        let reachable = repo.reachable(&roots).unwrap();
        let mut live = crate::repository::LiveSet::default();
        repo.mark_live(&roots, &mut live).unwrap();
        assert_eq!(live.len(), reachable.len());
        assert!(reachable.iter().all(|id| live.contains(id)));
        let mut kin = *reachable.iter().next().unwrap();
        kin.0[31] ^= 1;
        assert!(live.contains(&kin), "an id sharing 8 bytes is kept");
        kin.0[0] ^= 1;
        assert!(!live.contains(&kin) || reachable.contains(&kin));

        // Forget all but the last day: its chain of base trees stays, the
        // data only earlier days listed goes.
        let last_db = db_tree(&repo, &last);
        let kept = repo.load_tree(&last_db).unwrap().nodes[0].clone();
        let day1: HashSet<Id> = repo.load_tree(&db_tree(&repo, &first)).unwrap().nodes[0]
            .content
            .iter()
            .copied()
            .collect();
        let gone: Vec<Id> = day1
            .iter()
            .filter(|b| !kept.content.contains(b))
            .copied()
            .collect();
        assert!(!gone.is_empty());
        crate::gc::forget(&repo, &snaps[..snaps.len() - 1]).unwrap();
        gc_now(&repo);
        assert_eq!(read_back(&repo, &last), rows(20).concat());
        for b in &kept.bases {
            assert!(repo.index().contains(b), "base tree {b} kept");
        }
        assert!(gone.iter().all(|b| !repo.index().contains(b)));
        check_every_byte(&repo);
    }

    /// A reader follows no chain of edited lists deeper than `MAX_CHAIN`
    /// and refuses an edit whose base has no file of its name.
    #[test]
    fn hostile_chains_of_edited_lists_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let repo = crate::repository::test_repository(dir.path());
        repo.load_index().unwrap();
        let saver = BlobSaver::new(&repo, HashSet::new());
        let data = saver.save(BlobType::Data, b"row").unwrap();
        let file = |content: Vec<Id>, edit: Option<ContentEdit>| {
            let mut n = Node::new(OsStr::new("s.sql"), NodeKind::File);
            n.content = content;
            n.content_edit = edit;
            Tree { nodes: vec![n] }
        };
        let mut tree = saver
            .save(BlobType::Tree, &file(vec![data], None).to_bytes())
            .unwrap();
        let mut chain = vec![tree];
        for _ in 0..=content_edit::MAX_CHAIN {
            let edit = ContentEdit {
                base: tree,
                edits: vec![content_edit::Edit::Copy(0, 1)],
            };
            tree = saver
                .save(BlobType::Tree, &file(Vec::new(), Some(edit)).to_bytes())
                .unwrap();
            chain.push(tree);
        }
        let mut other = Node::new(OsStr::new("t.sql"), NodeKind::File);
        other.content_edit = Some(ContentEdit {
            base: chain[0],
            edits: vec![content_edit::Edit::Copy(0, 1)],
        });
        let renamed = saver
            .save(BlobType::Tree, &Tree { nodes: vec![other] }.to_bytes())
            .unwrap();
        saver.finish().unwrap();
        let deepest = repo.load_tree(&chain[content_edit::MAX_CHAIN]).unwrap();
        assert_eq!(deepest.nodes[0].content, [data]);
        assert_eq!(deepest.nodes[0].bases.len(), content_edit::MAX_CHAIN);
        let err = repo.load_tree(&tree).unwrap_err().to_string();
        assert!(err.contains("chain of more than"), "{err}");
        let err = repo.load_tree(&renamed).unwrap_err().to_string();
        assert!(err.contains("no file of that name"), "{err}");
    }

    /// A bad pack under a tree that lists are edited from is reported
    /// against every dump whose list reads it, not only the tree's own.
    #[test]
    fn check_names_the_dumps_a_bad_base_tree_breaks() {
        let dir = tempfile::tempdir().unwrap();
        let repo = crate::repository::test_repository(dir.path());
        let (first, _) = dump(&repo, 1);
        let base = db_tree(&repo, &first);
        let (second, _) = dump_on(&repo, 2, Some(base));
        let loc = repo.index().get(&base).unwrap();
        let file = dir.path().join(pack::key_of(&loc.pack));
        let mut data = std::fs::read(&file).unwrap();
        data[loc.offset as usize + loc.length as usize / 2] ^= 0xff;
        let mut perms = std::fs::metadata(&file).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
        std::fs::set_permissions(&file, perms).unwrap();
        std::fs::write(&file, &data).unwrap();
        // A fresh handle: nothing of the base tree cached.
        let repo = Repository::open(
            std::sync::Arc::new(crate::storage::LocalStorage::new(dir.path())),
            b"pw",
        )
        .unwrap();
        let r = crate::check::check(
            &repo,
            crate::check::CheckOptions {
                read_data: true,
                subset: 1.0,
            },
        )
        .unwrap();
        let bad = r.bad_packs.iter().find(|b| b.pack == loc.pack).unwrap();
        let of = |snap: &Id| {
            bad.affected
                .iter()
                .find(|(s, _)| s == snap)
                .map(|(_, files)| files.clone())
                .unwrap_or_default()
        };
        assert!(!of(&first).is_empty(), "{bad:?}");
        assert_eq!(of(&second), ["/db/shop.sql"], "{bad:?}");
    }

    /// A base tree's other files may be edited from trees gc dropped (no
    /// live list reads them): resolving one file reads only its own chain.
    #[test]
    fn a_list_resolves_although_its_base_trees_other_files_lost_their_bases() {
        let dir = tempfile::tempdir().unwrap();
        let repo = crate::repository::test_repository(dir.path());
        let day = |n: u32, rows: &[Vec<u8>], note: &[u8], base: Option<Id>| {
            let mut session = StreamBackup::begin(&repo).unwrap();
            if let Some(b) = base {
                session.edit_lists_from(b);
            }
            let cutter = RecordCutter::new(256, 1024, 64 << 10, 7).with_rows(8);
            let (content, size) = session.write_stream(cutter, |mut w| {
                for r in rows {
                    w.write(r).unwrap();
                    w.end_record().unwrap();
                }
                w.finish().unwrap()
            });
            session.add_file("a.sql", content, size).unwrap();
            session.add_small_file("b.json", note).unwrap();
            let (id, _) = session.commit("shop.test", "web1", "test", &[]).unwrap();
            let _ = n;
            id
        };
        let other: Vec<Vec<u8>> = (0..4000u32)
            .map(|i| format!("({i},'something else entirely {i}'),\n").into_bytes())
            .collect();
        let d1 = day(1, &rows(1), b"x", None);
        // Day 2: a.sql edited from day 1, b.json whole (it changed).
        let d2 = day(2, &rows(2), b"y", Some(db_tree(&repo, &d1)));
        // Day 3: a.sql whole (all new), b.json edited from day 2.
        let d3 = day(3, &other, b"y", Some(db_tree(&repo, &d2)));
        let stored = repo.parsed_tree(&db_tree(&repo, &d3)).unwrap();
        assert!(stored.nodes[0].content_edit.is_none() && stored.nodes[1].content_edit.is_some());
        let d1_db = db_tree(&repo, &d1);
        crate::gc::forget(&repo, &[d1, d2]).unwrap();
        gc_now(&repo);
        assert!(!repo.index().contains(&d1_db), "day 1's tree went");
        let fresh = Repository::open(
            std::sync::Arc::new(crate::storage::LocalStorage::new(dir.path())),
            b"pw",
        )
        .unwrap();
        fresh.load_index().unwrap();
        let db = fresh.load_tree(&db_tree(&fresh, &d3)).unwrap();
        let mut b = Vec::new();
        ContentReader::new(&fresh, db.nodes[1].content.clone())
            .read_to_end(&mut b)
            .unwrap();
        assert_eq!(b, b"y");
        check_every_byte(&fresh);
    }
}
