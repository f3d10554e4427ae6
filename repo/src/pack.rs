//! Packs: many encrypted blobs in one storage object, described by a trailing header.
//!
//! # Pack layout (format v1 — never change these bytes)
//!
//! ```text
//! blob envelope 0 | blob envelope 1 | … | header envelope | u32 LE header envelope length | b"CAIRNPK1"
//! ```
//!
//! The header envelope (see `crypto`) holds, uncompressed:
//!
//! ```text
//! u32 LE  entry count
//! count × { u8 blob type (0 data, 1 tree) | 32 B blob id | u32 LE offset | u32 LE envelope length | u32 LE plaintext length }
//! ```
//!
//! Format v1.1: a type byte with `0x80` set marks a member of a group (see
//! `group`); its offset and envelope length are the group's, shared by every
//! member. Pack headers are sealed with zstd since v1.1 (the envelope's
//! encoding byte says so; v1 readers open both).
//!
//! Format v1.2: a group may instead have one header entry of its own, a
//! group record, with type byte `0x40`: `0x40 | 32 B group scope | u32 LE
//! offset | u32 LE envelope length | u32 LE group plaintext length`. Its
//! members' ids and lengths are read from the group itself (each id is the
//! hash of its bytes, see `group`), so a pack of a dump's small blobs does not
//! spend 45 bytes of header on each one (12% of a narrow-row shop's first
//! copy). Index segments still name every member. Writers since v1.2 write
//! group records; readers take both forms. A v1.1 reader fails on such a pack
//! with "bad blob type 64".
//!
//! A pack is stored at `data/<first two hex digits>/<pack id>`, where the pack id
//! is the unkeyed BLAKE3 of the whole object, so storage-level corruption is
//! detectable without the key. Packs never exceed 4 GiB (offsets are u32).

use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::storage::Storage;

pub const MAGIC: &[u8; 8] = b"CAIRNPK1";
pub const TRAILER: usize = 4 + MAGIC.len();
pub const ENTRY_LEN: usize = 1 + 32 + 4 + 4 + 4;
/// Type-byte flag of a group member (format v1.1).
const GROUPED: u8 = 0x80;
/// Type byte of a group record (format v1.2).
const GROUP_RECORD: u8 = 0x40;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobType {
    Data = 0,
    Tree = 1,
}

impl BlobType {
    fn from_u8(b: u8) -> Option<BlobType> {
        match b {
            0 => Some(BlobType::Data),
            1 => Some(BlobType::Tree),
            _ => None,
        }
    }
}

/// One blob's place inside its pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub kind: BlobType,
    pub id: Id,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
    /// A member of the group envelope at `offset`.
    pub grouped: bool,
}

pub fn key_of(pack: &Id) -> String {
    let hex = pack.to_hex();
    format!("data/{}/{}", &hex[..2], hex)
}

/// Parses the pack id out of a `data/xx/<id>` key.
pub fn id_of_key(key: &str) -> Option<Id> {
    key.strip_prefix("data/")?.rsplit('/').next()?.parse().ok()
}

/// One entry of a pack's header as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderEntry {
    Blob(PackEntry),
    /// A whole group (format v1.2): its members are named only inside it.
    Group {
        scope: Id,
        offset: u32,
        length: u32,
        plain_length: u32,
    },
}

impl HeaderEntry {
    fn offset(&self) -> u32 {
        match self {
            HeaderEntry::Blob(e) => e.offset,
            HeaderEntry::Group { offset, .. } => *offset,
        }
    }

    fn end(&self) -> u64 {
        match self {
            HeaderEntry::Blob(e) => e.offset as u64 + e.length as u64,
            HeaderEntry::Group { offset, length, .. } => *offset as u64 + *length as u64,
        }
    }
}

pub(crate) fn encode_entries(entries: &[PackEntry], out: &mut Vec<u8>) {
    for e in entries {
        encode_entry(&HeaderEntry::Blob(*e), out);
    }
}

fn encode_entry(h: &HeaderEntry, out: &mut Vec<u8>) {
    let (byte, id, offset, length, raw) = match h {
        HeaderEntry::Blob(e) => (
            e.kind as u8 | if e.grouped { GROUPED } else { 0 },
            &e.id,
            e.offset,
            e.length,
            e.raw_length,
        ),
        HeaderEntry::Group {
            scope,
            offset,
            length,
            plain_length,
        } => (GROUP_RECORD, scope, *offset, *length, *plain_length),
    };
    out.push(byte);
    out.extend_from_slice(&id.0);
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&raw.to_le_bytes());
}

/// An index segment's entries: every blob named, no group records.
pub(crate) fn decode_entries(b: &[u8], count: usize, what: &str) -> Result<Vec<PackEntry>> {
    decode_header(b, count, what)?
        .into_iter()
        .map(|h| match h {
            HeaderEntry::Blob(e) => Ok(e),
            HeaderEntry::Group { .. } => Err(Error::corrupt(
                what,
                format!("bad blob type {GROUP_RECORD} (a group record)"),
            )),
        })
        .collect()
}

fn decode_header(b: &[u8], count: usize, what: &str) -> Result<Vec<HeaderEntry>> {
    if count.checked_mul(ENTRY_LEN).is_none_or(|n| b.len() < n) {
        return Err(Error::corrupt(what, "entry table truncated"));
    }
    (0..count)
        .map(|i| {
            let e = &b[i * ENTRY_LEN..(i + 1) * ENTRY_LEN];
            let u32_at = |o: usize| u32::from_le_bytes(e[o..o + 4].try_into().unwrap());
            let id = Id::from_slice(&e[1..33]).unwrap();
            if e[0] == GROUP_RECORD {
                return Ok(HeaderEntry::Group {
                    scope: id,
                    offset: u32_at(33),
                    length: u32_at(37),
                    plain_length: u32_at(41),
                });
            }
            Ok(HeaderEntry::Blob(PackEntry {
                kind: BlobType::from_u8(e[0] & !GROUPED)
                    .ok_or_else(|| Error::corrupt(what, format!("bad blob type {}", e[0])))?,
                id,
                offset: u32_at(33),
                length: u32_at(37),
                raw_length: u32_at(41),
                grouped: e[0] & GROUPED != 0,
            }))
        })
        .collect()
}

/// Builds one pack, in memory or (for backends with a staging directory, such
/// as a local repository) straight into a temp file beside its final place, so
/// a backup holds no pack in memory at all.
pub struct PackWriter {
    sink: Sink,
    len: usize,
    hasher: blake3::Hasher,
    /// Every blob, group members one by one (for the index).
    entries: Vec<PackEntry>,
    header: Vec<HeaderEntry>,
}

enum Sink {
    Memory(Vec<u8>),
    File(std::io::BufWriter<std::fs::File>, StagedFile),
}

/// A temp file removed on drop unless it was moved into place.
pub struct StagedFile {
    pub path: std::path::PathBuf,
    /// Open until the uploader fsyncs it (off the hashing threads).
    pub file: Option<std::fs::File>,
    pub keep: bool,
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A finished pack, ready to upload.
pub struct FinishedPack {
    pub id: Id,
    pub body: PackBody,
    pub len: usize,
    pub entries: Vec<PackEntry>,
}

pub enum PackBody {
    Memory(Vec<u8>),
    /// Written, not yet fsynced; the uploader syncs it, then `Storage::put_file`
    /// moves it into place.
    File(StagedFile),
}

impl PackWriter {
    pub fn in_memory() -> PackWriter {
        PackWriter {
            sink: Sink::Memory(Vec::new()),
            len: 0,
            hasher: blake3::Hasher::new(),
            entries: Vec::new(),
            header: Vec::new(),
        }
    }

    /// A writer into a new temp file in `dir` (created when missing).
    pub fn staged(dir: &std::path::Path) -> std::io::Result<PackWriter> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!(".pack-{:016x}.tmp", rand::random::<u64>()));
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        Ok(PackWriter {
            sink: Sink::File(
                std::io::BufWriter::with_capacity(256 * 1024, f),
                StagedFile {
                    path,
                    file: None,
                    keep: false,
                },
            ),
            len: 0,
            hasher: blake3::Hasher::new(),
            entries: Vec::new(),
            header: Vec::new(),
        })
    }

    fn write(&mut self, b: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        self.hasher.update(b);
        self.len += b.len();
        match &mut self.sink {
            Sink::Memory(v) => {
                v.extend_from_slice(b);
                Ok(())
            }
            Sink::File(w, _) => w.write_all(b),
        }
    }

    pub fn add(
        &mut self,
        kind: BlobType,
        id: Id,
        envelope: &[u8],
        raw_length: usize,
    ) -> std::io::Result<()> {
        let e = PackEntry {
            kind,
            id,
            offset: self.len as u32,
            length: envelope.len() as u32,
            raw_length: raw_length as u32,
            grouped: false,
        };
        self.entries.push(e);
        self.header.push(HeaderEntry::Blob(e));
        self.write(envelope)
    }

    /// Adds a group envelope of `scope` (see `group`) holding `members` (their
    /// ids and plaintext lengths, in order): one group record in the header,
    /// an entry per member for the index.
    pub fn add_group(
        &mut self,
        scope: &Id,
        envelope: &[u8],
        members: &[(Id, usize)],
    ) -> std::io::Result<()> {
        self.header.push(HeaderEntry::Group {
            scope: *scope,
            offset: self.len as u32,
            length: envelope.len() as u32,
            plain_length: crate::group::plain_len(members.iter().map(|m| m.1)) as u32,
        });
        self.push_members(BlobType::Data, envelope, members);
        self.write(envelope)
    }

    /// Adds a group envelope as format v1.1 writers did: a header entry per
    /// member, each claiming `kind`. Readers still take such packs (and a
    /// controller still checks every claim in them); tests write them.
    pub fn add_group_v1_1(
        &mut self,
        kind: BlobType,
        envelope: &[u8],
        members: &[(Id, usize)],
    ) -> std::io::Result<()> {
        let first = self.entries.len();
        self.push_members(kind, envelope, members);
        self.header
            .extend(self.entries[first..].iter().map(|e| HeaderEntry::Blob(*e)));
        self.write(envelope)
    }

    fn push_members(&mut self, kind: BlobType, envelope: &[u8], members: &[(Id, usize)]) {
        for (id, raw_length) in members {
            self.entries.push(PackEntry {
                kind,
                id: *id,
                offset: self.len as u32,
                length: envelope.len() as u32,
                raw_length: *raw_length as u32,
                grouped: true,
            });
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn finish(mut self, key: &MasterKey) -> std::io::Result<FinishedPack> {
        let mut header = Vec::with_capacity(4 + self.header.len() * ENTRY_LEN);
        header.extend_from_slice(&(self.header.len() as u32).to_le_bytes());
        for h in &self.header {
            encode_entry(h, &mut header);
        }
        let env = key.seal(&header, 3);
        self.write(&env)?;
        self.write(&(env.len() as u32).to_le_bytes())?;
        self.write(MAGIC)?;
        let id = Id(*self.hasher.finalize().as_bytes());
        let body = match self.sink {
            Sink::Memory(v) => PackBody::Memory(v),
            Sink::File(w, mut staged) => {
                staged.file = Some(w.into_inner().map_err(|e| e.into_error())?);
                PackBody::File(staged)
            }
        };
        Ok(FinishedPack {
            id,
            body,
            len: self.len,
            entries: self.entries,
        })
    }
}

/// Parses a pack's header from the pack's last bytes. `tail` must end where the
/// pack ends; returns `Err(needed)` when it is too short to hold the header.
/// Group records (format v1.2) name no blobs: [`verify`] reads them.
pub fn parse_header(
    key: &MasterKey,
    pack: &Id,
    tail: &[u8],
    pack_len: u64,
) -> Result<std::result::Result<Vec<HeaderEntry>, usize>> {
    let what = format!("pack {pack}");
    if tail.len() < TRAILER || pack_len < TRAILER as u64 {
        return Err(Error::corrupt(&what, "shorter than its trailer"));
    }
    let t = &tail[tail.len() - TRAILER..];
    if &t[4..] != MAGIC {
        return Err(Error::corrupt(
            &what,
            "bad magic (not a cairn pack, or truncated)",
        ));
    }
    let hlen = u32::from_le_bytes(t[..4].try_into().unwrap()) as usize;
    if (hlen + TRAILER) as u64 > pack_len {
        return Err(Error::corrupt(&what, "header length exceeds pack size"));
    }
    if tail.len() < hlen + TRAILER {
        return Ok(Err(hlen + TRAILER));
    }
    let env = &tail[tail.len() - TRAILER - hlen..tail.len() - TRAILER];
    let header = key.open(env, &format_args!("header of pack {pack}"))?;
    if header.len() < 4 {
        return Err(Error::corrupt(&what, "header too short"));
    }
    let count = u32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
    let entries = decode_header(&header[4..], count, &what)?;
    let data_end = pack_len - (hlen + TRAILER) as u64;
    if entries.iter().any(|e| e.end() > data_end) {
        return Err(Error::corrupt(&what, "an entry points past the blob area"));
    }
    Ok(Ok(entries))
}

/// Checks every claim a whole pack makes before anything trusts it: the
/// object hashes to `id`, the header decrypts, entries lie inside the blob
/// area without overlapping, each blob decrypts, decompresses to exactly its
/// stated length (never beyond it), and hashes to its id under the
/// repository's id key; a tree blob also parses as a valid tree. Whoever
/// holds the key can write a pack that decrypts, so decrypting proves
/// nothing: this is what a controller runs on every pack an agent sends.
pub fn verify(key: &MasterKey, id: &Id, data: &[u8]) -> Result<Vec<PackEntry>> {
    verify_scoped(key, id, data, None)
}

/// [`verify`], and every group's scope (see `group`) must be `scope` when
/// given: a controller takes an agent's groups only in that agent's scope
/// for the job's domain.
pub fn verify_scoped(
    key: &MasterKey,
    id: &Id,
    data: &[u8],
    scope: Option<&Id>,
) -> Result<Vec<PackEntry>> {
    use rayon::prelude::*;
    let what = format!("pack {id}");
    if Id::of_stored(data) != *id {
        return Err(Error::corrupt(&what, "does not hash to its id"));
    }
    let header = parse_header(key, id, data, data.len() as u64)?
        .map_err(|_| Error::corrupt(&what, "truncated"))?;
    let mut by_offset: Vec<&HeaderEntry> = header.iter().collect();
    by_offset.sort_by_key(|h| h.offset());
    let mut end = 0u64;
    // v1.1 group members (envelope offset → its entries) are checked a group at a time.
    let mut groups: Vec<Vec<&PackEntry>> = Vec::new();
    let mut singles: Vec<&PackEntry> = Vec::new();
    let mut records: Vec<&HeaderEntry> = Vec::new();
    for h in by_offset {
        let e = match h {
            HeaderEntry::Group {
                offset,
                plain_length,
                ..
            } => {
                if (*offset as u64) < end {
                    return Err(Error::corrupt(
                        &what,
                        format!("the group at {offset} overlaps another blob"),
                    ));
                }
                if *plain_length as usize > crate::group::MAX_GROUP_PLAIN {
                    return Err(Error::corrupt(
                        &what,
                        format!("the group at {offset} claims {plain_length} bytes"),
                    ));
                }
                records.push(h);
                end = h.end();
                continue;
            }
            HeaderEntry::Blob(e) => e,
        };
        if e.grouped && e.kind == BlobType::Tree {
            return Err(Error::corrupt(
                &what,
                format!("tree {} is in a group", e.id),
            ));
        }
        let same_group = e.grouped
            && groups
                .last()
                .is_some_and(|g| g[0].offset == e.offset && g[0].length == e.length);
        if same_group {
            groups.last_mut().expect("checked").push(e);
        } else if (e.offset as u64) < end {
            return Err(Error::corrupt(
                &what,
                format!("blob {} overlaps another", e.id),
            ));
        } else if e.grouped {
            groups.push(vec![e]);
        } else {
            singles.push(e);
        }
        end = e.offset as u64 + e.length as u64;
        if e.raw_length as usize > crate::crypto::MAX_PLAIN {
            return Err(Error::corrupt(
                &what,
                format!("blob {} claims {} bytes", e.id, e.raw_length),
            ));
        }
    }
    let open_group = |offset: u32, length: u32, max: usize| {
        let env = &data[offset as usize..offset as usize + length as usize];
        let group = crate::group::open_bounded(key, env, &format_args!("group at {offset}"), max)
            .map_err(|err| Error::corrupt(&what, err.to_string()))?;
        if scope.is_some_and(|s| *s != group.scope) {
            return Err(Error::corrupt(
                &what,
                format!("the group at {offset} is in another writer's scope"),
            ));
        }
        Ok(group)
    };
    groups.par_iter().try_for_each(|members| {
        let e = members[0];
        // Its entries claim every member: the group opens to no more than
        // they add up to, and holds nothing they do not name.
        let claimed = crate::group::plain_len(members.iter().map(|e| e.raw_length as usize));
        let group = open_group(e.offset, e.length, claimed)?;
        if group.len() != members.len() {
            return Err(Error::corrupt(
                &what,
                format!(
                    "the group at {} holds {} blobs, its entries name {}",
                    e.offset,
                    group.len(),
                    members.len()
                ),
            ));
        }
        for e in members {
            match group.get(&e.id) {
                Some(m) if m.len() == e.raw_length as usize => {}
                Some(m) => {
                    return Err(Error::corrupt(
                        &what,
                        format!("blob {} is {} bytes, not {}", e.id, m.len(), e.raw_length),
                    ))
                }
                None => {
                    return Err(Error::corrupt(
                        &what,
                        format!("blob {} is not in the group its entries name", e.id),
                    ))
                }
            }
        }
        Ok(())
    })?;
    // A group record names its members by being them: their ids are hashed
    // from their bytes as the group opens.
    let mut members: std::collections::HashMap<u32, Vec<PackEntry>> = records
        .par_iter()
        .map(|h| {
            let HeaderEntry::Group {
                scope: claimed,
                offset,
                length,
                plain_length,
            } = **h
            else {
                unreachable!("only group records")
            };
            let group = open_group(offset, length, plain_length as usize)?;
            if group.plain_len() != plain_length as usize {
                return Err(Error::corrupt(
                    &what,
                    format!(
                        "the group at {offset} is {} bytes, its record says {plain_length}",
                        group.plain_len()
                    ),
                ));
            }
            if group.scope != claimed {
                return Err(Error::corrupt(
                    &what,
                    format!("the group at {offset} is not in the scope its record names"),
                ));
            }
            // Duplicates are refused here, before another group is opened:
            // a few compressed bytes can repeat a member thousands of times.
            let mut ids = std::collections::HashSet::with_capacity(group.len());
            if let Some((id, _)) = group.members().find(|(id, _)| !ids.insert(**id)) {
                return Err(Error::corrupt(&what, format!("blob {id} is listed twice")));
            }
            let entries = group
                .members()
                .map(|(id, m)| PackEntry {
                    kind: BlobType::Data,
                    id: *id,
                    offset,
                    length,
                    raw_length: m.len() as u32,
                    grouped: true,
                })
                .collect();
            Ok((offset, entries))
        })
        .collect::<Result<_>>()?;
    singles.par_iter().try_for_each(|e| {
        let env = &data[e.offset as usize..e.offset as usize + e.length as usize];
        let plain = key
            .open_blob_bounded(&e.id, env, e.raw_length as usize)
            .map_err(|err| Error::corrupt(&what, err.to_string()))?;
        if plain.len() != e.raw_length as usize {
            return Err(Error::corrupt(
                &what,
                format!(
                    "blob {} is {} bytes, not {}",
                    e.id,
                    plain.len(),
                    e.raw_length
                ),
            ));
        }
        if e.kind == BlobType::Tree {
            crate::tree::Tree::from_bytes(&e.id, &plain)
                .map_err(|err| Error::corrupt(&what, err.to_string()))?;
        }
        Ok(())
    })?;
    let mut entries = Vec::with_capacity(header.len());
    for h in &header {
        match h {
            HeaderEntry::Blob(e) => entries.push(*e),
            HeaderEntry::Group { offset, .. } => {
                entries.extend(members.remove(offset).expect("opened above"))
            }
        }
    }
    let mut seen = std::collections::HashSet::with_capacity(entries.len());
    if let Some(e) = entries.iter().find(|e| !seen.insert(e.id)) {
        return Err(Error::corrupt(
            &what,
            format!("blob {} is listed twice", e.id),
        ));
    }
    Ok(entries)
}

/// Reads a pack's blob entries from storage: its header with one or two
/// range reads, or, when the header holds group records (format v1.2), the
/// whole pack, verified (see [`verify`]).
pub fn read_header(
    storage: &dyn Storage,
    key: &MasterKey,
    pack: &Id,
    pack_len: u64,
) -> Result<Vec<PackEntry>> {
    let obj = key_of(pack);
    let guess = pack_len.min(16 * 1024);
    let tail = storage.get_range(&obj, pack_len - guess, guess)?;
    let header = match parse_header(key, pack, &tail, pack_len)? {
        Ok(header) => header,
        Err(needed) => {
            let tail = storage.get_range(&obj, pack_len - needed as u64, needed as u64)?;
            parse_header(key, pack, &tail, pack_len)?
                .map_err(|_| Error::corrupt(format!("pack {pack}"), "header"))?
        }
    };
    header
        .iter()
        .map(|h| match h {
            HeaderEntry::Blob(e) => Some(*e),
            HeaderEntry::Group { .. } => None,
        })
        .collect::<Option<Vec<_>>>()
        .map_or_else(|| verify(key, pack, &storage.get(&obj)?), Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FinishedPack2 {
        id: Id,
        bytes: Vec<u8>,
        entries: Vec<PackEntry>,
    }

    #[test]
    fn staged_pack_matches_in_memory_bytes() {
        let k = MasterKey::generate();
        let dir = tempfile::tempdir().unwrap();
        let env = k.seal(b"blob", 3);
        let mut a = PackWriter::in_memory();
        let mut b = PackWriter::staged(dir.path()).unwrap();
        a.add(BlobType::Data, k.blob_id(b"blob"), &env, 4).unwrap();
        b.add(BlobType::Data, k.blob_id(b"blob"), &env, 4).unwrap();
        // Same bytes apart from the random nonce of the header envelope: compare lengths and parse.
        let (pa, pb) = (a.finish(&k).unwrap(), b.finish(&k).unwrap());
        assert_eq!(pa.len, pb.len);
        let PackBody::File(staged) = &pb.body else {
            panic!("staged")
        };
        let bytes = std::fs::read(&staged.path).unwrap();
        assert_eq!(Id::of_stored(&bytes), pb.id);
        assert_eq!(verify(&k, &pb.id, &bytes).unwrap(), pb.entries);
        let path = staged.path.clone();
        drop(pb);
        assert!(!path.exists(), "an unused staged pack is removed");
    }

    /// One blob as a pack writer is told it: kind, claimed id, plaintext, claimed raw length.
    type Claim<'a> = (BlobType, Id, &'a [u8], usize);

    /// A pack of `blobs` as bytes.
    fn pack_of(k: &MasterKey, blobs: &[Claim]) -> (Id, Vec<u8>) {
        let mut w = PackWriter::in_memory();
        for (kind, id, plain, raw) in blobs {
            w.add(*kind, *id, &k.seal(plain, 3), *raw).unwrap();
        }
        let p = w.finish(k).unwrap();
        let PackBody::Memory(bytes) = p.body else {
            panic!("in memory")
        };
        (p.id, bytes)
    }

    /// Every lie a key holder can put in a pack is caught by `verify`.
    #[test]
    fn verify_refuses_every_lie() {
        let k = MasterKey::generate();
        let good: &[u8] = b"honest data";
        let other: &[u8] = b"other data";
        let tree = crate::tree::Tree { nodes: Vec::new() }.to_bytes();
        let ok = [
            (BlobType::Data, k.blob_id(good), good, good.len()),
            (BlobType::Tree, k.blob_id(&tree), &tree[..], tree.len()),
        ];
        let (id, bytes) = pack_of(&k, &ok);
        assert_eq!(verify(&k, &id, &bytes).unwrap().len(), 2);

        let cases: Vec<(&str, Vec<Claim>)> = vec![
            (
                "content does not match",
                vec![(BlobType::Data, k.blob_id(other), good, good.len())],
            ),
            (
                "bytes, not",
                vec![(BlobType::Data, k.blob_id(good), good, good.len() + 1)],
            ),
            ("exceeds", vec![(BlobType::Data, k.blob_id(good), good, 3)]),
            (
                "listed twice",
                vec![
                    (BlobType::Data, k.blob_id(good), good, good.len()),
                    (BlobType::Data, k.blob_id(good), good, good.len()),
                ],
            ),
            (
                "tree",
                vec![(BlobType::Tree, k.blob_id(good), good, good.len())],
            ),
        ];
        for (want, blobs) in cases {
            let (id, bytes) = pack_of(&k, &blobs);
            let err = verify(&k, &id, &bytes).unwrap_err().to_string();
            assert!(err.contains(want), "{want}: {err}");
        }
        // Bytes that do not hash to the claimed id, and a foreign key.
        let (id, mut bytes) = pack_of(&k, &ok);
        bytes[0] ^= 1;
        assert!(verify(&k, &id, &bytes)
            .unwrap_err()
            .to_string()
            .contains("hash"));
        let (id, bytes) = pack_of(&MasterKey::generate(), &ok);
        assert!(verify(&k, &id, &bytes).is_err());
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic the header parser or `verify`, and a
        /// lying entry count never allocates for what is not there.
        #[test]
        fn header_parsing_survives_any_bytes(tail in proptest::collection::vec(proptest::num::u8::ANY, 0..512), count in proptest::num::u32::ANY) {
            let k = MasterKey::generate();
            let _ = parse_header(&k, &Id::of_stored(&tail), &tail, tail.len() as u64);
            let _ = verify(&k, &Id::of_stored(&tail), &tail);
            let mut header = count.to_le_bytes().to_vec();
            header.extend_from_slice(&tail);
            let _ = decode_entries(&header[4..], count as usize, "p");
        }
    }

    #[test]
    fn pack_round_trip() {
        let k = MasterKey::generate();
        let mut w = PackWriter::in_memory();
        let blobs: Vec<Vec<u8>> = (0..50)
            .map(|i| format!("blob number {i}").repeat(i + 1).into_bytes())
            .collect();
        for b in &blobs {
            w.add(BlobType::Data, k.blob_id(b), &k.seal(b, 3), b.len())
                .unwrap();
        }
        let p = w.finish(&k).unwrap();
        let PackBody::Memory(bytes) = &p.body else {
            panic!("in memory")
        };
        let p = FinishedPack2 {
            id: p.id,
            bytes: bytes.clone(),
            entries: p.entries,
        };
        assert_eq!(p.id, Id::of_stored(&p.bytes));
        let entries = verify(&k, &p.id, &p.bytes).unwrap();
        assert_eq!(entries, p.entries);
        for (e, b) in entries.iter().zip(&blobs) {
            let env = &p.bytes[e.offset as usize..(e.offset + e.length) as usize];
            assert_eq!(&k.open_blob(&e.id, env).unwrap(), b);
        }
        // A short tail asks for more.
        let short = &p.bytes[p.bytes.len() - 20..];
        assert!(parse_header(&k, &p.id, short, p.bytes.len() as u64)
            .unwrap()
            .is_err());
    }

    /// What a controller checks of a group in the v1.1 form (an entry per
    /// member): every member its entries name is in it with the stated
    /// length, and nothing else passes.
    #[test]
    fn verify_checks_every_member_of_a_v1_1_group() {
        let k = MasterKey::generate();
        let scope = k.group_scope("web1\nshop.test");
        let (a, b) = (&b"first row"[..], &b"second row"[..]);
        let env = crate::group::seal(&k, &scope, &[a, b], 3, false);
        let (ia, ib) = (
            crate::group::member_id(&k, &scope, a),
            crate::group::member_id(&k, &scope, b),
        );
        let build = |members: &[(Id, usize)], kind: BlobType| {
            let mut w = PackWriter::in_memory();
            w.add_group_v1_1(kind, &env, members).unwrap();
            let p = w.finish(&k).unwrap();
            let PackBody::Memory(bytes) = p.body else {
                panic!("in memory")
            };
            (p.id, bytes)
        };
        let (id, bytes) = build(&[(ia, a.len()), (ib, b.len())], BlobType::Data);
        let entries = verify(&k, &id, &bytes).unwrap();
        assert!(entries
            .iter()
            .all(|e| e.grouped && e.offset == entries[0].offset));
        let refused = [
            build(&[(ia, a.len()), (ib, b.len() + 1)], BlobType::Data),
            build(&[(ia, a.len()), (k.blob_id(b), b.len())], BlobType::Data),
            build(&[(ia, a.len()), (ia, a.len())], BlobType::Data),
            build(&[(ia, a.len())], BlobType::Tree),
            // A member no entry names.
            build(&[(ia, a.len())], BlobType::Data),
        ];
        for (id, bytes) in refused {
            assert!(verify(&k, &id, &bytes).is_err());
        }
        // A single blob's envelope marked as grouped is refused too.
        let mut w = PackWriter::in_memory();
        let single = k.seal(a, 3);
        w.add_group_v1_1(BlobType::Data, &single, &[(k.blob_id(a), a.len())])
            .unwrap();
        let p = w.finish(&k).unwrap();
        let PackBody::Memory(bytes) = p.body else {
            panic!("in memory")
        };
        let err = verify(&k, &p.id, &bytes).unwrap_err();
        assert!(err.to_string().contains("not in a group"), "{err}");
    }

    /// A group record (format v1.2) costs its pack one header entry, and
    /// `verify` names its members from the group itself, in the order a
    /// writer added them, refusing every lie a record can tell.
    #[test]
    fn group_records_name_their_members_from_the_group() {
        let k = MasterKey::generate();
        let scope = k.group_scope("web1\nshop.test");
        let rows: Vec<Vec<u8>> = (0..40).map(|i| format!("row {i}").into_bytes()).collect();
        let refs: Vec<&[u8]> = rows.iter().map(|r| r.as_slice()).collect();
        let list: Vec<(Id, usize)> = refs
            .iter()
            .map(|r| (crate::group::member_id(&k, &scope, r), r.len()))
            .collect();
        let env = crate::group::seal(&k, &scope, &refs, 3, false);
        let lone: &[u8] = b"a blob alone";
        let finish = |w: PackWriter| {
            let p = w.finish(&k).unwrap();
            let PackBody::Memory(bytes) = p.body else {
                panic!("in memory")
            };
            (p.id, bytes, p.entries)
        };
        // A pack writer holding one blob alone.
        let with_lone = || {
            let mut w = PackWriter::in_memory();
            let env = k.seal(lone, 3);
            w.add(BlobType::Data, k.blob_id(lone), &env, lone.len())
                .unwrap();
            w
        };
        let header_len = |bytes: &[u8]| {
            let t = &bytes[bytes.len() - TRAILER..];
            u32::from_le_bytes(t[..4].try_into().unwrap()) as usize
        };

        let mut w = with_lone();
        w.add_group(&scope, &env, &list).unwrap();
        let (id, bytes, written) = finish(w);
        let header = parse_header(&k, &id, &bytes, bytes.len() as u64)
            .unwrap()
            .unwrap();
        assert_eq!(header.len(), 2, "one entry for the blob, one for the group");
        let entries = verify(&k, &id, &bytes).unwrap();
        assert_eq!(entries.len(), 41);
        assert_eq!(entries, written, "as the index was told, in order");
        let mut v11 = with_lone();
        v11.add_group_v1_1(BlobType::Data, &env, &list).unwrap();
        let (vid, vbytes, _) = finish(v11);
        assert_eq!(
            verify(&k, &vid, &vbytes).unwrap(),
            entries,
            "both forms read alike"
        );
        // The member ids (incompressible) are gone from the header.
        assert!(
            header_len(&bytes) + 39 * 32 <= header_len(&vbytes),
            "{} vs {}",
            header_len(&bytes),
            header_len(&vbytes)
        );
        // The in-scope check applies to records.
        assert!(verify_scoped(&k, &id, &bytes, Some(&scope)).is_ok());
        let elsewhere = k.group_scope("web2\nshop.test");
        let err = verify_scoped(&k, &id, &bytes, Some(&elsewhere)).unwrap_err();
        assert!(err.to_string().contains("another writer's scope"), "{err}");

        let lie = |f: &dyn Fn(&mut PackWriter)| {
            let mut w = PackWriter::in_memory();
            f(&mut w);
            let (id, bytes, _) = finish(w);
            verify(&k, &id, &bytes).unwrap_err().to_string()
        };
        let mut longer = list.clone();
        longer[3].1 += 1;
        let mut shorter = list.clone();
        shorter[3].1 -= 1;
        let dup = crate::group::seal(&k, &scope, &[refs[0], refs[0]], 3, false);
        let cases: Vec<(&str, String)> = vec![
            (
                "its record says",
                lie(&|w| w.add_group(&scope, &env, &longer).unwrap()),
            ),
            // Opening stops at the claimed length.
            (
                "exceeds",
                lie(&|w| w.add_group(&scope, &env, &shorter).unwrap()),
            ),
            (
                "scope its record names",
                lie(&|w| w.add_group(&elsewhere, &env, &list).unwrap()),
            ),
            (
                "not in a group",
                lie(&|w| w.add_group(&scope, &k.seal(lone, 3), &list[..1]).unwrap()),
            ),
            (
                "listed twice",
                lie(&|w| w.add_group(&scope, &dup, &[list[0], list[0]]).unwrap()),
            ),
            (
                "listed twice",
                lie(&|w| {
                    w.add_group(&scope, &env, &list).unwrap();
                    let again = crate::group::seal(&k, &scope, &[refs[5]], 3, false);
                    w.add_group_v1_1(BlobType::Data, &again, &list[5..6])
                        .unwrap();
                }),
            ),
        ];
        for (want, err) in cases {
            assert!(err.contains(want), "{want}: {err}");
        }
        // A group of more members than a group may hold.
        let many: Vec<[u8; 3]> = (0..=crate::group::MAX_MEMBERS as u32)
            .map(|i| {
                let b = i.to_be_bytes();
                [b[1], b[2], b[3]]
            })
            .collect();
        let many: Vec<&[u8]> = many.iter().map(|m| &m[..]).collect();
        let env = crate::group::seal(&k, &scope, &many, 3, false);
        let list: Vec<(Id, usize)> = many
            .iter()
            .map(|m| (crate::group::member_id(&k, &scope, m), m.len()))
            .collect();
        let err = lie(&|w| w.add_group(&scope, &env, &list).unwrap());
        assert!(err.contains("more than a group may hold"), "{err}");
        // A record claiming more than any group may open to, and one whose
        // envelope overlaps the blob before it.
        let mut w = with_lone();
        w.header.push(HeaderEntry::Group {
            scope,
            offset: 0,
            length: 8,
            plain_length: 9,
        });
        let (id, bytes, _) = finish(w);
        let err = verify(&k, &id, &bytes).unwrap_err().to_string();
        assert!(err.contains("overlaps"), "{err}");
        let mut w = PackWriter::in_memory();
        w.add_group(&scope, &env, &list).unwrap();
        let HeaderEntry::Group { plain_length, .. } = &mut w.header[0] else {
            unreachable!()
        };
        *plain_length = crate::group::MAX_GROUP_PLAIN as u32 + 1;
        let (id, bytes, _) = finish(w);
        let err = verify(&k, &id, &bytes).unwrap_err().to_string();
        assert!(err.contains("claims"), "{err}");
        // An index segment never holds a group record.
        let mut seg = Vec::new();
        let record = HeaderEntry::Group {
            scope,
            offset: 0,
            length: 1,
            plain_length: 1,
        };
        encode_entry(&record, &mut seg);
        let err = decode_entries(&seg, 1, "index").unwrap_err().to_string();
        assert!(err.contains("bad blob type"), "{err}");
    }
}
