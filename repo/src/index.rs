//! Index segments: which pack holds each blob, and where.
//!
//! # Segment layout (format v1 — never change these bytes)
//!
//! `index/<id>` is one envelope (see `crypto`; zstd-compressed) holding:
//!
//! ```text
//! b"CAIRNIX1"
//! u32 LE  pack count
//! per pack: 32 B pack id | u32 LE entry count | entries as in the pack header (45 B each)
//! ```
//!
//! `<id>` is the unkeyed BLAKE3 of the stored bytes. Segments are only ever added
//! by backups and replaced wholesale by gc; a blob listed twice is harmless. The
//! whole index can be rebuilt from pack headers.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::pack::{decode_entries, encode_entries, BlobType, PackEntry, ENTRY_LEN};

const MAGIC: &[u8; 8] = b"CAIRNIX1";

/// Packs with their entries, as a segment lists them.
pub type PackList = Vec<(Id, Vec<PackEntry>)>;

pub fn encode_segment(key: &MasterKey, packs: &[(Id, Vec<PackEntry>)]) -> Vec<u8> {
    let listed: Vec<(&Id, &[PackEntry])> = packs.iter().map(|(p, e)| (p, &e[..])).collect();
    seal_segment(key, &segment_plain(&listed))
}

/// The plaintext of a segment of `packs` as `index` holds them, copying no
/// entry beside it (a fleet gc's consolidated segment lists every kept
/// blob); `None` names a pack the index does not hold. Seal it with
/// [`seal_segment`] once the index is let go.
pub fn segment_plain_of(index: &Index, packs: &[Id]) -> std::result::Result<Vec<u8>, Id> {
    let listed = packs
        .iter()
        .map(|p| index.pack(p).map(|e| (p, e)).ok_or(*p))
        .collect::<std::result::Result<Vec<_>, Id>>()?;
    Ok(segment_plain(&listed))
}

pub fn seal_segment(key: &MasterKey, plain: &[u8]) -> Vec<u8> {
    key.seal(plain, 3)
}

fn segment_plain(packs: &[(&Id, &[PackEntry])]) -> Vec<u8> {
    let n: usize = packs.iter().map(|(_, e)| e.len()).sum();
    let mut out = Vec::with_capacity(12 + packs.len() * 36 + n * ENTRY_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for (id, entries) in packs {
        out.extend_from_slice(&id.0);
        out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        encode_entries(entries, &mut out);
    }
    out
}

pub fn decode_segment(
    key: &MasterKey,
    seg: &Id,
    stored: &[u8],
) -> Result<Vec<(Id, Vec<PackEntry>)>> {
    let what = format!("index segment {seg}");
    let b = key.open(stored, &what)?;
    if b.len() < 12 || &b[..8] != MAGIC {
        return Err(Error::corrupt(&what, "bad magic"));
    }
    let count = u32::from_le_bytes(b[8..12].try_into().unwrap()) as usize;
    let mut pos = 12;
    // Each pack takes at least 36 bytes: a lying count cannot reserve more.
    let mut out = Vec::with_capacity(count.min((b.len() - 12) / 36));
    for _ in 0..count {
        if b.len() < pos + 36 {
            return Err(Error::corrupt(&what, "truncated"));
        }
        let pack = Id::from_slice(&b[pos..pos + 32]).unwrap();
        let n = u32::from_le_bytes(b[pos + 32..pos + 36].try_into().unwrap()) as usize;
        pos += 36;
        let entries = decode_entries(&b[pos..], n, &what)?;
        pos += n * ENTRY_LEN;
        out.push((pack, entries));
    }
    if pos != b.len() {
        return Err(Error::corrupt(&what, "trailing bytes after the last pack"));
    }
    Ok(out)
}

/// Where one blob lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub pack: Id,
    pub kind: BlobType,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
    /// A member of a group (see `group`): its envelope holds other blobs too.
    pub grouped: bool,
}

impl Location {
    /// The location `e`, an entry of `pack`'s header, names.
    pub fn of(pack: Id, e: &PackEntry) -> Location {
        Location {
            pack,
            kind: e.kind,
            offset: e.offset,
            length: e.length,
            raw_length: e.raw_length,
            grouped: e.grouped,
        }
    }
}

/// The in-memory index: blob id → location, and pack id → its blobs.
///
/// A controller holds its whole fleet's index, and a dump's chunks are small
/// (13,000 for a 15 MB shop), so each blob is stored once: its pack entry,
/// in its pack's list. Blob lookup is a table of 8-byte (pack slot, entry)
/// pairs hashed by id with a per-process random key (ids come from agents).
/// About 60 bytes a blob (`cargo run --release -p cairn-repo --example
/// index_memory`), against 218 for a map of id → location beside the lists.
#[derive(Default)]
pub struct Index {
    /// Pack slots; a removed pack leaves `None` until a new pack reuses it.
    packs: Vec<Option<(Id, Vec<PackEntry>)>>,
    free: Vec<u32>,
    slots: HashMap<Id, u32>,
    /// (pack slot, entry) of the first pack that listed each blob.
    blobs: HashTable<(u32, u32)>,
    hasher: RandomState,
    /// Segments this index was loaded from.
    pub segments: HashSet<Id>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("packs", &self.slots.len())
            .field("blobs", &self.blobs.len())
            .field("segments", &self.segments.len())
            .finish()
    }
}

/// The entry `at` names; `at` always points at a live pack's entry.
fn entry_at(packs: &[Option<(Id, Vec<PackEntry>)>], (slot, i): (u32, u32)) -> &PackEntry {
    &packs[slot as usize].as_ref().expect("indexed pack").1[i as usize]
}

impl Index {
    /// Adds a pack's blobs. A pack already indexed is left as it is: its id
    /// is the hash of its bytes, so its entries cannot differ.
    pub fn add_pack(&mut self, pack: Id, entries: Vec<PackEntry>) {
        if self.slots.contains_key(&pack) {
            return;
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.packs.push(None);
                u32::try_from(self.packs.len() - 1).expect("fewer than 2^32 packs")
            }
        };
        let Index {
            packs,
            blobs,
            hasher,
            ..
        } = self;
        for (i, e) in entries.iter().enumerate() {
            let at = (
                slot,
                u32::try_from(i).expect("fewer than 2^32 blobs a pack"),
            );
            let hash = hasher.hash_one(e.id);
            let id = e.id;
            let known = blobs
                .find(hash, |&o| {
                    o.0 != slot && entry_at(packs, o).id == id
                        || o.0 == slot && entries[o.1 as usize].id == id
                })
                .is_some();
            if !known {
                blobs.insert_unique(hash, at, |&o| {
                    let id = if o.0 == slot {
                        entries[o.1 as usize].id
                    } else {
                        entry_at(packs, o).id
                    };
                    hasher.hash_one(id)
                });
            }
        }
        self.packs[slot as usize] = Some((pack, entries));
        self.slots.insert(pack, slot);
    }

    /// Makes room for `blobs` more blobs in `packs` more packs, so a load
    /// does not rehash as it grows.
    pub fn reserve(&mut self, packs: usize, blobs: usize) {
        let Index {
            packs: slots_of,
            slots,
            blobs: table,
            hasher,
            ..
        } = self;
        slots_of.reserve(packs);
        slots.reserve(packs);
        table.reserve(blobs, |&o| hasher.hash_one(entry_at(slots_of, o).id));
    }

    /// Drops a pack and the blobs the index finds in it.
    pub fn remove_pack(&mut self, pack: &Id) {
        let Some(slot) = self.slots.remove(pack) else {
            return;
        };
        let Index {
            packs,
            blobs,
            hasher,
            ..
        } = self;
        if let Some((_, entries)) = &packs[slot as usize] {
            for (i, e) in entries.iter().enumerate() {
                if let Ok(found) =
                    blobs.find_entry(hasher.hash_one(e.id), |&o| o == (slot, i as u32))
                {
                    found.remove();
                }
            }
        }
        packs[slot as usize] = None;
        self.free.push(slot);
    }

    fn find(&self, id: &Id) -> Option<(u32, u32)> {
        self.blobs
            .find(self.hasher.hash_one(id), |&o| {
                entry_at(&self.packs, o).id == *id
            })
            .copied()
    }

    pub fn get(&self, id: &Id) -> Option<Location> {
        let at = self.find(id)?;
        let pack = self.packs[at.0 as usize].as_ref().expect("indexed pack").0;
        Some(Location::of(pack, entry_at(&self.packs, at)))
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.find(id).is_some()
    }

    /// A pack's entries, if it is indexed.
    pub fn pack(&self, pack: &Id) -> Option<&[PackEntry]> {
        let slot = *self.slots.get(pack)?;
        Some(&self.packs[slot as usize].as_ref().expect("indexed pack").1)
    }

    pub fn has_pack(&self, pack: &Id) -> bool {
        self.slots.contains_key(pack)
    }

    /// Every indexed pack with its entries.
    pub fn packs(&self) -> impl Iterator<Item = (&Id, &[PackEntry])> {
        self.packs
            .iter()
            .flatten()
            .map(|(id, entries)| (id, entries.as_slice()))
    }

    pub fn pack_ids(&self) -> impl Iterator<Item = &Id> {
        self.packs.iter().flatten().map(|(id, _)| id)
    }

    pub fn pack_count(&self) -> usize {
        self.slots.len()
    }

    /// Bytes of the envelopes the index lists: a group's envelope once, not
    /// once for each of its members.
    pub fn stored_bytes(&self) -> u64 {
        let mut groups = HashSet::new();
        let mut total = 0;
        for (_, entries) in self.packs() {
            groups.clear();
            for e in entries {
                if !e.grouped || groups.insert(e.offset) {
                    total += u64::from(e.length);
                }
            }
        }
        total
    }

    pub fn blob_ids(&self) -> impl Iterator<Item = &Id> {
        self.blobs.iter().map(|&at| &entry_at(&self.packs, at).id)
    }

    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// A segment that decrypts (its writer held the key) but lies about
        /// its counts is refused without allocating for the lie.
        #[test]
        fn lying_segment_counts_are_refused(packs in proptest::num::u32::ANY, entries in proptest::num::u32::ANY, body in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let k = MasterKey::generate();
            let mut plain = MAGIC.to_vec();
            plain.extend_from_slice(&packs.to_le_bytes());
            plain.extend_from_slice(&[7u8; 32]);
            plain.extend_from_slice(&entries.to_le_bytes());
            plain.extend_from_slice(&body);
            let stored = k.seal(&plain, 3);
            let r = decode_segment(&k, &Id::of_stored(&stored), &stored);
            if r.is_ok() {
                proptest::prop_assert!(packs == 1 && entries as usize * ENTRY_LEN == body.len());
            }
        }
    }

    /// The index as it was: a map of id → location beside the pack lists.
    #[derive(Default)]
    struct Model {
        blobs: HashMap<Id, Location>,
        packs: HashMap<Id, Vec<PackEntry>>,
    }

    fn entry(blob: u8, offset: u32, grouped: bool) -> PackEntry {
        PackEntry {
            kind: if blob.is_multiple_of(5) {
                BlobType::Tree
            } else {
                BlobType::Data
            },
            id: Id([blob; 32]),
            offset,
            length: 10 + blob as u32,
            raw_length: 20,
            grouped,
        }
    }

    proptest::proptest! {
        /// Packs added and removed in any order (blobs listed by several
        /// packs, slots reused) leave the index answering as a plain map of
        /// id → first location does.
        #[test]
        fn index_answers_as_a_map_of_ids_does(ops in proptest::collection::vec(
            (proptest::num::u8::ANY, proptest::collection::vec(0u8..40, 0..12), proptest::bool::ANY), 1..60)
        ) {
            let mut idx = Index::default();
            let mut model = Model::default();
            for (pack, blobs, remove) in ops {
                let pack = Id([pack % 8; 32]);
                if remove {
                    idx.remove_pack(&pack);
                    if let Some(entries) = model.packs.remove(&pack) {
                        for e in entries {
                            if model.blobs.get(&e.id).is_some_and(|l| l.pack == pack) {
                                model.blobs.remove(&e.id);
                            }
                        }
                    }
                } else {
                    let entries: Vec<PackEntry> = blobs
                        .iter()
                        .enumerate()
                        .map(|(i, b)| entry(*b, i as u32 * 100, b.is_multiple_of(3)))
                        .collect();
                    idx.add_pack(pack, entries.clone());
                    if let std::collections::hash_map::Entry::Vacant(v) = model.packs.entry(pack) {
                        for e in &entries {
                            model.blobs.entry(e.id).or_insert(Location::of(pack, e));
                        }
                        v.insert(entries);
                    }
                }
                proptest::prop_assert_eq!(idx.len(), model.blobs.len());
                proptest::prop_assert_eq!(idx.pack_count(), model.packs.len());
                for b in 0..40u8 {
                    let id = Id([b; 32]);
                    proptest::prop_assert_eq!(idx.get(&id), model.blobs.get(&id).copied());
                }
                let mut ids: Vec<Id> = idx.blob_ids().copied().collect();
                ids.sort();
                let mut want: Vec<Id> = model.blobs.keys().copied().collect();
                want.sort();
                proptest::prop_assert_eq!(ids, want);
                for (p, entries) in &model.packs {
                    proptest::prop_assert_eq!(idx.pack(p), Some(entries.as_slice()));
                }
                proptest::prop_assert_eq!(idx.packs().count(), model.packs.len());
            }
        }
    }

    #[test]
    fn stored_bytes_count_a_group_once() {
        let mut idx = Index::default();
        let member = |b: u8| PackEntry {
            length: 100,
            ..entry(b, 0, true)
        };
        idx.add_pack(
            Id([1; 32]),
            vec![member(1), member(2), member(3), entry(4, 100, false)],
        );
        idx.add_pack(Id([2; 32]), vec![member(6)]);
        assert_eq!(idx.stored_bytes(), 100 + (10 + 4) + 100);
    }

    #[test]
    fn segment_round_trip() {
        let k = MasterKey::generate();
        let e = |i: u8| PackEntry {
            kind: BlobType::Data,
            id: Id([i; 32]),
            offset: i as u32 * 10,
            length: 10,
            raw_length: 20,
            grouped: false,
        };
        let packs = vec![(Id([1; 32]), vec![e(1), e(2)]), (Id([2; 32]), vec![e(3)])];
        let seg = encode_segment(&k, &packs);
        assert_eq!(
            decode_segment(&k, &Id::of_stored(&seg), &seg).unwrap(),
            packs
        );
        let mut idx = Index::default();
        for (p, es) in packs.clone() {
            idx.add_pack(p, es);
        }
        assert_eq!(idx.get(&Id([3; 32])).unwrap().pack, Id([2; 32]));
        assert_eq!(idx.len(), 3);
        // The same segment written from the index, and a pack it lacks named.
        let plain = segment_plain_of(&idx, &[Id([1; 32]), Id([2; 32])]).unwrap();
        let seg = seal_segment(&k, &plain);
        assert_eq!(
            decode_segment(&k, &Id::of_stored(&seg), &seg).unwrap(),
            packs
        );
        assert_eq!(
            segment_plain_of(&idx, &[Id([1; 32]), Id([9; 32])]),
            Err(Id([9; 32]))
        );
    }
}
