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

use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::pack::{decode_entries, encode_entries, BlobType, PackEntry, ENTRY_LEN};

const MAGIC: &[u8; 8] = b"CAIRNIX1";

/// Packs with their entries, as a segment lists them.
pub type PackList = Vec<(Id, Vec<PackEntry>)>;

pub fn encode_segment(key: &MasterKey, packs: &[(Id, Vec<PackEntry>)]) -> Vec<u8> {
    let n: usize = packs.iter().map(|(_, e)| e.len()).sum();
    let mut out = Vec::with_capacity(12 + packs.len() * 36 + n * ENTRY_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for (id, entries) in packs {
        out.extend_from_slice(&id.0);
        out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        encode_entries(entries, &mut out);
    }
    key.seal(&out, 3)
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

/// The in-memory index: blob id → location, and pack id → its blobs.
#[derive(Default, Debug)]
pub struct Index {
    blobs: HashMap<Id, Location>,
    packs: HashMap<Id, Vec<PackEntry>>,
    /// Segments this index was loaded from.
    pub segments: HashSet<Id>,
}

impl Index {
    pub fn add_pack(&mut self, pack: Id, entries: Vec<PackEntry>) {
        for e in &entries {
            self.blobs.entry(e.id).or_insert(Location {
                pack,
                kind: e.kind,
                offset: e.offset,
                length: e.length,
                raw_length: e.raw_length,
                grouped: e.grouped,
            });
        }
        self.packs.insert(pack, entries);
    }

    /// Drops a pack and the blobs the index finds in it.
    pub fn remove_pack(&mut self, pack: &Id) {
        if let Some(entries) = self.packs.remove(pack) {
            for e in entries {
                if self.blobs.get(&e.id).is_some_and(|l| l.pack == *pack) {
                    self.blobs.remove(&e.id);
                }
            }
        }
    }

    pub fn get(&self, id: &Id) -> Option<&Location> {
        self.blobs.get(id)
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.blobs.contains_key(id)
    }

    pub fn packs(&self) -> &HashMap<Id, Vec<PackEntry>> {
        &self.packs
    }

    pub fn blob_ids(&self) -> impl Iterator<Item = &Id> {
        self.blobs.keys()
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
        for (p, es) in packs {
            idx.add_pack(p, es);
        }
        assert_eq!(idx.get(&Id([3; 32])).unwrap().pack, Id([2; 32]));
        assert_eq!(idx.len(), 3);
    }
}
