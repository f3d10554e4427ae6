//! The blob saver: dedup, compress, encrypt, pack, upload, index.
//!
//! Many threads call [`BlobSaver::save`]; a blob whose id the repository (or this
//! session) already has is skipped. Full packs go through a bounded channel to
//! uploader threads, so reading and hashing overlap with storage writes and at
//! most a few packs are in memory. Index segments are written after uploads, so
//! an indexed blob is always durable; the snapshot is written after
//! [`BlobSaver::finish`].

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Sender};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::pack::{self, BlobType, FinishedPack, PackBody, PackEntry, PackWriter};
use crate::repository::Repository;

/// Packs per index segment written while a backup runs.
const PACKS_PER_SEGMENT: usize = 64;
const UPLOADERS: usize = 2;
/// With a [`crate::repository::KnownBlobs`] oracle, new blobs wait in a batch
/// of about this many bytes (or `ASK_BLOBS` blobs) for one question to it.
const ASK_BYTES: usize = 4 << 20;
const ASK_BLOBS: usize = 1024;

/// A blob waiting to be stored: its type, id, bytes, and the scope of the
/// group it goes into (None: sealed alone).
type Waiting = (BlobType, Id, Vec<u8>, Option<Id>);

#[derive(Default)]
struct Batch {
    blobs: Vec<Waiting>,
    bytes: usize,
}

/// Members of one scope's next group.
#[derive(Default)]
struct OpenGroup {
    members: Vec<(Id, Vec<u8>)>,
    bytes: usize,
}

/// (packs already in a written segment, packs still to index).
type Indexed = crate::index::PackList;
type UploadResult = Result<(Indexed, Indexed)>;

#[derive(Debug, Default, Clone, Copy)]
pub struct SaverStats {
    pub blobs_new: u64,
    pub bytes_new: u64,
    pub stored_bytes: u64,
    pub packs: u64,
}

impl SaverStats {
    /// Snapshot stats with what was saved filled in; the caller adds counts.
    pub fn to_stats(&self, started: std::time::Instant) -> crate::snapshot::Stats {
        crate::snapshot::Stats {
            bytes_new: self.bytes_new,
            stored_bytes: self.stored_bytes,
            blobs_new: self.blobs_new,
            ratio: if self.stored_bytes > 0 {
                self.bytes_new as f64 / self.stored_bytes as f64
            } else {
                1.0
            },
            duration_ms: started.elapsed().as_millis() as u64,
            ..Default::default()
        }
    }
}

pub struct BlobSaver<'r> {
    repo: &'r Repository,
    known: Mutex<HashSet<Id>>,
    /// Blobs in the repository's loaded index are present too (a local
    /// backup): the index is asked, not copied into `known`.
    over_index: bool,
    /// zstd level of groups; None: the repository's.
    group_level: Option<i32>,
    batch: Mutex<Batch>,
    groups: Mutex<std::collections::HashMap<Id, OpenGroup>>,
    open: [Mutex<Option<PackWriter>>; 2],
    tx: Option<Sender<FinishedPack>>,
    /// Taken (and joined) by `finish`, by a send that finds them all gone,
    /// or on drop.
    uploaders: Mutex<Vec<JoinHandle<UploadResult>>>,
    blobs_new: AtomicU64,
    bytes_new: AtomicU64,
    stored_bytes: AtomicU64,
    packs: AtomicU64,
}

impl<'r> BlobSaver<'r> {
    /// Seals groups at zstd `level` instead of the repository's.
    pub fn set_group_level(&mut self, level: i32) {
        self.group_level = Some(level);
    }

    /// A saver that skips the blobs the repository's loaded index holds.
    pub fn over_index(repo: &'r Repository) -> BlobSaver<'r> {
        let mut saver = BlobSaver::new(repo, HashSet::new());
        saver.over_index = true;
        saver
    }

    /// `known` are blob ids to treat as present (gc: the blobs of the packs
    /// it keeps; through an oracle: none, the oracle is asked).
    pub fn new(repo: &'r Repository, known: HashSet<Id>) -> BlobSaver<'r> {
        let (tx, rx) = bounded::<FinishedPack>(UPLOADERS);
        let uploaders = (0..UPLOADERS)
            .map(|i| {
                let rx = rx.clone();
                let storage = repo.storage().clone();
                let key = repo.key().clone();
                std::thread::Builder::new()
                    .name(format!("cairn-upload-{i}"))
                    .spawn(move || {
                        let mut pending: Vec<(Id, Vec<PackEntry>)> = Vec::new();
                        let mut done = Vec::new();
                        for mut p in rx {
                            match &mut p.body {
                                PackBody::Memory(bytes) => {
                                    storage.put(&pack::key_of(&p.id), bytes)?
                                }
                                PackBody::File(staged) => {
                                    if let Some(f) = staged.file.take() {
                                        f.sync_all().map_err(|e| Error::io(&staged.path, e))?;
                                    }
                                    storage.put_file(&pack::key_of(&p.id), &staged.path)?;
                                    staged.keep = true;
                                }
                            }
                            pending.push((p.id, p.entries));
                            if pending.len() >= PACKS_PER_SEGMENT {
                                // Indexed only after the packs are durable.
                                let seg = crate::index::encode_segment(&key, &pending);
                                storage.put(&format!("index/{}", Id::of_stored(&seg)), &seg)?;
                                done.append(&mut pending);
                            }
                        }
                        // The rest is indexed by `finish` in one segment.
                        Ok((done, pending))
                    })
                    .expect("spawn uploader")
            })
            .collect();
        BlobSaver {
            repo,
            known: Mutex::new(known),
            over_index: false,
            group_level: None,
            batch: Mutex::new(Batch::default()),
            groups: Mutex::new(Default::default()),
            open: [Mutex::new(None), Mutex::new(None)],
            tx: Some(tx),
            uploaders: Mutex::new(uploaders),
            blobs_new: AtomicU64::new(0),
            bytes_new: AtomicU64::new(0),
            stored_bytes: AtomicU64::new(0),
            packs: AtomicU64::new(0),
        }
    }

    /// Stores `plain` unless the repository has it. Returns its id.
    pub fn save(&self, kind: BlobType, plain: &[u8]) -> Result<Id> {
        let id = self.repo.key().blob_id(plain);
        self.save_with_id(kind, id, plain)?;
        Ok(id)
    }

    /// Stores a data blob as a member of a group of `scope` (see `group`),
    /// or alone when it is too large for one. Returns its id.
    pub fn save_grouped(&self, scope: &Id, plain: &[u8]) -> Result<Id> {
        if plain.len() > crate::group::MAX_MEMBER {
            return self.save(BlobType::Data, plain);
        }
        let id = crate::group::member_id(self.repo.key(), scope, plain);
        self.save_scoped(BlobType::Data, id, plain, Some(*scope))?;
        Ok(id)
    }

    /// Like `save` for a blob whose id is already known. Returns whether it
    /// was new to this saver (the oracle may still find it in the repository).
    pub fn save_with_id(&self, kind: BlobType, id: Id, plain: &[u8]) -> Result<bool> {
        self.save_scoped(kind, id, plain, None)
    }

    /// `save_with_id` for a blob alone (`scope` None) or in a group of `scope`.
    pub fn save_scoped(
        &self,
        kind: BlobType,
        id: Id,
        plain: &[u8],
        scope: Option<Id>,
    ) -> Result<bool> {
        if self.over_index && self.repo.index().contains(&id) {
            return Ok(false);
        }
        if !self.known.lock().unwrap().insert(id) {
            return Ok(false);
        }
        if self.repo.known_blobs().is_some() {
            let full = {
                let mut b = self.batch.lock().unwrap();
                b.blobs.push((kind, id, plain.to_vec(), scope));
                b.bytes += plain.len();
                if b.bytes >= ASK_BYTES || b.blobs.len() >= ASK_BLOBS {
                    std::mem::take(&mut *b).blobs
                } else {
                    Vec::new()
                }
            };
            self.ask_and_store(full)?;
            return Ok(true);
        }
        self.store(kind, id, plain, scope)?;
        Ok(true)
    }

    /// Asks the oracle about a batch and stores the blobs the repository lacks.
    fn ask_and_store(&self, batch: Vec<Waiting>) -> Result<()> {
        let Some(oracle) = self.repo.known_blobs() else {
            return Ok(());
        };
        if batch.is_empty() {
            return Ok(());
        }
        let ids: Vec<Id> = batch.iter().map(|(_, id, _, _)| *id).collect();
        let have = oracle.have(&ids)?;
        if have.len() != ids.len() {
            return Err(Error::Other(format!(
                "known-blob answer has {} entries for {} blobs",
                have.len(),
                ids.len()
            )));
        }
        for ((kind, id, plain, scope), had) in batch.into_iter().zip(have) {
            if !had {
                self.store(kind, id, &plain, scope)?;
            }
        }
        Ok(())
    }

    fn store(&self, kind: BlobType, id: Id, plain: &[u8], scope: Option<Id>) -> Result<()> {
        self.blobs_new.fetch_add(1, Ordering::Relaxed);
        self.bytes_new
            .fetch_add(plain.len() as u64, Ordering::Relaxed);
        let Some(scope) = scope else {
            let env = self.repo.key().seal(plain, self.repo.config().zstd_level);
            return self.append(kind, &env, &[(id, plain.len())], None);
        };
        let full = {
            let mut groups = self.groups.lock().unwrap();
            let g = groups.entry(scope).or_default();
            g.members.push((id, plain.to_vec()));
            g.bytes += plain.len();
            if g.bytes >= crate::group::GROUP_TARGET || g.members.len() >= crate::group::MAX_MEMBERS
            {
                groups.remove(&scope)
            } else {
                None
            }
        };
        match full {
            // Sealed by the thread that filled it, outside the lock.
            Some(g) => self.seal_group(&scope, g),
            None => Ok(()),
        }
    }

    /// Seals every group still open, however small.
    pub fn seal_groups(&self) -> Result<()> {
        let groups = std::mem::take(&mut *self.groups.lock().unwrap());
        for (scope, g) in groups {
            self.seal_group(&scope, g)?;
        }
        Ok(())
    }

    fn seal_group(&self, scope: &Id, g: OpenGroup) -> Result<()> {
        let members: Vec<&[u8]> = g.members.iter().map(|(_, m)| m.as_slice()).collect();
        let env = crate::group::seal(
            self.repo.key(),
            scope,
            &members,
            self.group_level.unwrap_or(self.repo.config().zstd_level),
            self.repo.group_columns(),
        );
        let list: Vec<(Id, usize)> = g.members.iter().map(|(id, m)| (*id, m.len())).collect();
        self.append(BlobType::Data, &env, &list, Some(scope))
    }

    /// Appends one envelope (a blob, or a group of `blobs`) to the open pack
    /// of its type, and sends the pack once full.
    fn append(
        &self,
        kind: BlobType,
        env: &[u8],
        blobs: &[(Id, usize)],
        group: Option<&Id>,
    ) -> Result<()> {
        self.stored_bytes
            .fetch_add(env.len() as u64, Ordering::Relaxed);
        let full = {
            let mut slot = self.open[kind as usize].lock().unwrap();
            if slot.is_none() {
                *slot = Some(self.new_writer()?);
            }
            let w = slot.as_mut().expect("just opened");
            let added = match group {
                Some(scope) if self.repo.group_records() => w.add_group(scope, env, blobs),
                Some(_) => w.add_group_v1_1(kind, env, blobs),
                None => w.add(kind, blobs[0].0, env, blobs[0].1),
            };
            added.map_err(|e| Error::io("pack staging file", e))?;
            if w.len() >= self.repo.config().pack_size as usize {
                slot.take()
            } else {
                None
            }
        };
        if let Some(w) = full {
            self.send(w)?;
        }
        Ok(())
    }

    fn new_writer(&self) -> Result<PackWriter> {
        match self.repo.storage().staging_dir() {
            Some(dir) => PackWriter::staged(&dir).map_err(|e| Error::io(dir, e)),
            None => Ok(PackWriter::in_memory()),
        }
    }

    fn send(&self, w: PackWriter) -> Result<()> {
        let p = w
            .finish(self.repo.key())
            .map_err(|e| Error::io("pack staging file", e))?;
        self.packs.fetch_add(1, Ordering::Relaxed);
        // Envelopes were counted as they were added: this is the header.
        let mut envelopes: Vec<(u32, u32)> =
            p.entries.iter().map(|e| (e.offset, e.length)).collect();
        envelopes.dedup();
        self.stored_bytes.fetch_add(
            (p.len - envelopes.iter().map(|(_, l)| *l as usize).sum::<usize>()) as u64,
            Ordering::Relaxed,
        );
        if self
            .tx
            .as_ref()
            .expect("saver not finished")
            .send(p)
            .is_ok()
        {
            return Ok(());
        }
        // Every uploader has stopped: each returned, and the first error
        // among them is the real cause (an S3 quorum error, a full disk).
        let handles = std::mem::take(&mut *self.uploaders.lock().unwrap());
        let mut cause = None;
        for h in handles {
            match h.join() {
                Ok(Err(e)) => {
                    cause.get_or_insert(e);
                }
                Err(_) => {
                    cause.get_or_insert(Error::Other("a pack uploader panicked".into()));
                }
                Ok(Ok(_)) => {}
            }
        }
        Err(cause.unwrap_or_else(|| Error::Other("the pack uploaders stopped".into())))
    }

    /// Flushes open packs, waits for uploads and indexes what was uploaded.
    pub fn finish(mut self) -> Result<SaverStats> {
        let last = std::mem::take(&mut *self.batch.lock().unwrap()).blobs;
        let mut first_err = self.ask_and_store(last).err();
        if first_err.is_none() {
            first_err = self.seal_groups().err();
        }
        for slot in &self.open {
            let w = slot.lock().unwrap().take();
            if let Some(w) = w.filter(|w| !w.is_empty()) {
                if let Err(e) = self.send(w) {
                    first_err.get_or_insert(e);
                }
            }
        }
        drop(self.tx.take());
        let mut pending = Vec::new();
        let handles = std::mem::take(&mut *self.uploaders.lock().unwrap());
        for h in handles {
            match h.join().expect("uploader panicked") {
                Ok((done, mut p)) => {
                    self.repo.add_indexed(&done);
                    pending.append(&mut p);
                }
                Err(e) => {
                    // The uploader's error is the cause; report it before "stopped".
                    first_err = Some(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        if !pending.is_empty() {
            self.repo.write_index_segment(&pending)?;
        }
        Ok(SaverStats {
            blobs_new: self.blobs_new.load(Ordering::Relaxed),
            bytes_new: self.bytes_new.load(Ordering::Relaxed),
            stored_bytes: self.stored_bytes.load(Ordering::Relaxed),
            packs: self.packs.load(Ordering::Relaxed),
        })
    }
}

impl Drop for BlobSaver<'_> {
    fn drop(&mut self) {
        // On an error path: stop the uploaders; what they uploaded stays
        // unindexed and is adopted by the next backup or removed by gc.
        drop(self.tx.take());
        let handles = std::mem::take(&mut *self.uploaders.lock().unwrap());
        for h in handles {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Members small enough (every distinct byte, then two-byte ones) seal
    /// a group at `group::MAX_MEMBERS`, just before its bytes reach the
    /// target: what a writer makes, a verifier takes.
    #[test]
    fn a_group_is_sealed_at_its_member_limit() {
        let dir = tempfile::tempdir().unwrap();
        let repo = crate::repository::test_repository(dir.path());
        let scope = repo.key().group_scope("web1\nshop.test");
        let saver = BlobSaver::over_index(&repo);
        for b in 0..=255u8 {
            saver.save_grouped(&scope, &[b]).unwrap();
        }
        for i in 0..(crate::group::MAX_MEMBERS - 256 + 10) as u16 {
            saver.save_grouped(&scope, &i.to_be_bytes()).unwrap();
        }
        saver.finish().unwrap();
        let mut groups: HashMap<(Id, u32), usize> = HashMap::new();
        for p in repo.index().pack_ids() {
            let data = repo.storage().get(&pack::key_of(p)).unwrap();
            for e in pack::verify(repo.key(), p, &data).unwrap() {
                *groups.entry((*p, e.offset)).or_default() += 1;
            }
        }
        let mut sizes: Vec<usize> = groups.into_values().collect();
        sizes.sort_unstable();
        assert_eq!(sizes, [10, crate::group::MAX_MEMBERS]);
    }

    /// Saves `members` grouped in one scope of `repo`; returns the scope, and
    /// the one pack they went to with its bytes and header.
    fn save_into_one_pack(
        repo: &Repository,
        members: &[Vec<u8>],
    ) -> (Id, Id, Vec<u8>, Vec<pack::HeaderEntry>) {
        let scope = repo.key().group_scope("web1\nshop.test");
        let saver = BlobSaver::over_index(repo);
        for m in members {
            saver.save_grouped(&scope, m).unwrap();
        }
        saver.finish().unwrap();
        let packs: Vec<Id> = repo.index().pack_ids().copied().collect();
        assert_eq!(packs.len(), 1);
        let data = repo.storage().get(&pack::key_of(&packs[0])).unwrap();
        let header = pack::parse_header(repo.key(), &packs[0], &data, data.len() as u64)
            .unwrap()
            .unwrap();
        (scope, packs[0], data, header)
    }

    /// A repository told its packs go to a controller a release older
    /// writes each group member's own header entry (format v1.1); either
    /// form reads back as every member, named by its hash.
    #[test]
    fn group_records_can_be_written_as_v1_1_entries() {
        let members: Vec<Vec<u8>> = (0..50).map(|i| format!("row {i}").into_bytes()).collect();
        for records in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let mut repo = crate::repository::test_repository(dir.path());
            repo.set_group_records(records);
            let (scope, pack_id, data, header) = save_into_one_pack(&repo, &members);
            let is_record = |h: &pack::HeaderEntry| matches!(h, pack::HeaderEntry::Group { .. });
            if records {
                assert!(header.len() == 1 && is_record(&header[0]), "{header:?}");
            } else {
                assert_eq!(header.len(), members.len());
                assert!(!header.iter().any(is_record));
            }
            let mut ids: Vec<Id> = pack::verify(repo.key(), &pack_id, &data)
                .unwrap()
                .iter()
                .map(|e| e.id)
                .collect();
            ids.sort();
            let mut want: Vec<Id> = members
                .iter()
                .map(|m| crate::group::member_id(repo.key(), &scope, m))
                .collect();
            want.sort();
            assert_eq!(ids, want, "group records: {records}");
        }
    }

    /// Rows are laid out by column unless the controller is older (then as
    /// they are, format v1.2); either way every member reads back.
    #[test]
    fn rows_by_column_only_for_a_controller_that_reads_them() {
        let members: Vec<Vec<u8>> = (0..50)
            .map(|i| format!("({i},'2026-12-04',{}),\n", i * 3).into_bytes())
            .collect();
        for columns in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let mut repo = crate::repository::test_repository(dir.path());
            repo.set_group_columns(columns);
            let (scope, _, data, header) = save_into_one_pack(&repo, &members);
            let pack::HeaderEntry::Group { offset, length, .. } = header[0] else {
                panic!("{header:?}");
            };
            let env = &data[offset as usize..(offset + length) as usize];
            let g = crate::group::open(repo.key(), env, &"group").unwrap();
            assert_eq!(g.by_column, columns);
            for m in &members {
                let id = crate::group::member_id(repo.key(), &scope, m);
                assert_eq!(&repo.read_blob(&id).unwrap()[..], &m[..]);
            }
        }
    }
}
