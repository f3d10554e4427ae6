//! Groups: small blobs compressed and encrypted together (format v1.1).
//!
//! A dump cut between rows makes blobs of a few hundred bytes to a few KiB.
//! Sealed alone, each compresses poorly and pays its own envelope; sealed
//! together they compress like the whole dump and dedup still works blob by
//! blob.
//!
//! # Group layout (format v1.1 — never change these bytes)
//!
//! A group is one envelope (see `crypto`) whose encoding byte is `0x02`,
//! followed by one zstd frame holding:
//!
//! ```text
//! 32 B    scope
//! u32 LE  member count (1 to 65,536: `MAX_MEMBERS`)
//! count × u32 LE member length
//! the members' bytes, in order
//! ```
//!
//! A member's blob id is BLAKE3 keyed with its scope's member key (BLAKE3
//! keyed with the id key over `"cairn group member key v1\0"` and the scope)
//! over its bytes. A grouped blob's id therefore never equals a single blob's
//! nor one of another scope: writers use one scope per host and domain, so a
//! restore granted one site's blobs never needs a group holding another
//! site's.
//!
//! A group whose rows are laid out by column (format v1.3) has encoding byte
//! `0x03`; its zstd frame holds the layout `columns` describes, which
//! decodes to the bytes above.
//!
//! In a pack, each member has its own header entry naming the group's
//! envelope (the same offset and length), with the grouped flag `0x80` on its
//! type byte and its own length as its plaintext length. A v1 reader fails on
//! such a pack with "bad blob type".

use std::cell::RefCell;
use std::ops::Range;
use std::rc::Rc;

use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::Id;

/// The largest plaintext a group may open to (writers stop near `GROUP_TARGET`).
pub const MAX_GROUP_PLAIN: usize = 16 << 20;
/// Writers seal a group once its members reach this many bytes.
pub const GROUP_TARGET: usize = 128 << 10;
/// zstd level for the groups of a dump that has an earlier one to edit:
/// only its changed chunks are compressed (a fifth of a narrow-row shop's
/// groups on a day with 2% of rows changed), so a stronger level costs
/// little time (+0.02 s a day on the shop) and saved 8% of every day
/// (BENCHMARKS.md); with rows by column, 2% (0.85 → 0.83 MB a day). A first copy compresses everything and keeps the
/// repository's level (level 6 there would cost 18% of its throughput).
pub const DAY_LEVEL: i32 = 6;
/// Blobs larger than this are stored alone.
pub const MAX_MEMBER: usize = 16 << 10;
/// The most members a group may hold (writers seal one there; a dump's
/// groups hold a few hundred). A group record (see `pack`) names its members
/// by holding them, so this bounds what a few compressed bytes from an agent
/// can make a controller list.
pub const MAX_MEMBERS: usize = 1 << 16;

/// An opened group: every member verified against the id it hashes to.
pub struct Group {
    pub scope: Id,
    /// Its rows were laid out by column (format v1.3).
    pub by_column: bool,
    plain: Vec<u8>,
    members: Vec<(Id, Range<usize>)>,
}

impl Group {
    pub fn get(&self, id: &Id) -> Option<&[u8]> {
        self.members
            .iter()
            .find(|(m, _)| m == id)
            .map(|(_, r)| &self.plain[r.clone()])
    }

    pub fn members(&self) -> impl Iterator<Item = (&Id, &[u8])> {
        self.members
            .iter()
            .map(|(id, r)| (id, &self.plain[r.clone()]))
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// The bytes the group's frame opens to (scope, table and members).
    pub fn plain_len(&self) -> usize {
        self.plain.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

/// The id a blob gets as a member of a group of `scope`.
pub fn member_id(key: &MasterKey, scope: &Id, plain: &[u8]) -> Id {
    Id(*blake3::keyed_hash(&key.member_key(scope), plain).as_bytes())
}

/// Seals members into one group envelope; with `columns`, rows among them
/// are laid out by column first (format v1.3, see `columns`).
pub fn seal(
    key: &MasterKey,
    scope: &Id,
    members: &[&[u8]],
    zstd_level: i32,
    columns: bool,
) -> Vec<u8> {
    let mut plain = Vec::with_capacity(plain_len(members.iter().map(|m| m.len())));
    plain.extend_from_slice(&scope.0);
    plain.extend_from_slice(&(members.len() as u32).to_le_bytes());
    for m in members {
        plain.extend_from_slice(&(m.len() as u32).to_le_bytes());
    }
    for m in members {
        plain.extend_from_slice(m);
    }
    if columns {
        // Kept only if it decodes to the same bytes (a group is never sealed
        // in a layout that would not give its members back) and is no larger
        // (readers bound it by the group's plaintext length).
        let encoded =
            crate::columns::encode(&plain, plain_len(members.iter().map(|_| 0))).filter(|t| {
                t.len() <= plain.len()
                    && crate::columns::decode(t, plain.len()).is_ok_and(|p| p == plain)
            });
        if let Some(t) = encoded {
            return key.seal_group_encoded(crate::crypto::ENC_GROUP_COLUMNS, &t, zstd_level);
        }
    }
    key.seal_group_body(&plain, zstd_level)
}

/// Opens a group envelope without the cache.
pub fn open(key: &MasterKey, envelope: &[u8], what: &dyn std::fmt::Display) -> Result<Group> {
    open_bounded(key, envelope, what, MAX_GROUP_PLAIN)
}

/// Like [`open`], failing once the group's plaintext would exceed `max`
/// bytes: a pack's verification bounds it by what its entries claim.
pub fn open_bounded(
    key: &MasterKey,
    envelope: &[u8],
    what: &dyn std::fmt::Display,
    max: usize,
) -> Result<Group> {
    let body = key.decrypt(envelope, what)?;
    decode(key, &body, what, max.min(MAX_GROUP_PLAIN))
}

/// The plaintext size of a group of members of these lengths.
pub fn plain_len(lengths: impl ExactSizeIterator<Item = usize>) -> usize {
    36 + 4 * lengths.len() + lengths.sum::<usize>()
}

/// Decompresses (at most `max` bytes) and parses a group's decrypted body
/// (its encoding byte, then its frame), hashing every member.
pub(crate) fn decode(
    key: &MasterKey,
    body: &[u8],
    what: &dyn std::fmt::Display,
    max: usize,
) -> Result<Group> {
    let bad = |why: &str| Error::corrupt(what.to_string(), format!("group: {why}"));
    let plain = match body[0] {
        crate::crypto::ENC_GROUP => crate::crypto::inflate(&body[1..], what, max)?,
        // The column layout is never larger than the rows it holds.
        crate::crypto::ENC_GROUP_COLUMNS => {
            let t = crate::crypto::inflate(&body[1..], what, max)?;
            crate::columns::decode(&t, max).map_err(|e| bad(&format!("column layout: {e}")))?
        }
        _ => return Err(bad("a blob marked as grouped is not in a group")),
    };
    if plain.len() < 36 {
        return Err(bad("shorter than its table"));
    }
    let scope = Id::from_slice(&plain[..32]).unwrap();
    let count = u32::from_le_bytes(plain[32..36].try_into().unwrap()) as usize;
    if count == 0 {
        return Err(bad("no members"));
    }
    if count > MAX_MEMBERS {
        return Err(bad(&format!(
            "{count} members, more than a group may hold ({MAX_MEMBERS})"
        )));
    }
    // Checked before anything is sized by it.
    let table_end = count
        .checked_mul(4)
        .and_then(|n| n.checked_add(36))
        .filter(|&n| n <= plain.len())
        .ok_or_else(|| bad("member table truncated"))?;
    let member_key = key.member_key(&scope);
    let mut members = Vec::with_capacity(count);
    let mut pos = table_end;
    for i in 0..count {
        let o = 36 + 4 * i;
        let len = u32::from_le_bytes(plain[o..o + 4].try_into().unwrap()) as usize;
        let end = pos
            .checked_add(len)
            .filter(|&e| e <= plain.len())
            .ok_or_else(|| bad("a member runs past the group's end"))?;
        let id = Id(*blake3::keyed_hash(&member_key, &plain[pos..end]).as_bytes());
        members.push((id, pos..end));
        pos = end;
    }
    if pos != plain.len() {
        return Err(bad("bytes after the last member"));
    }
    Ok(Group {
        scope,
        by_column: body[0] == crate::crypto::ENC_GROUP_COLUMNS,
        plain,
        members,
    })
}

thread_local! {
    /// The last group this thread opened, with its envelope: readers meet a
    /// group's members one after another, and decompress it once.
    static LAST: RefCell<Option<(Vec<u8>, Rc<Group>)>> = const { RefCell::new(None) };
}

type Member = Result<(Vec<u8>, Option<Id>)>;

fn take(group: &Group, id: &Id, max: usize) -> Member {
    match group.get(id) {
        Some(m) if m.len() > max => Err(Error::corrupt(
            format!("blob {id}"),
            format!("plaintext exceeds {max} bytes"),
        )),
        Some(m) => Ok((m.to_vec(), Some(group.scope))),
        None => Err(Error::corrupt(
            format!("blob {id}"),
            "not in the group its pack names",
        )),
    }
}

/// The member `id` when `envelope` is the group this thread opened last.
pub(crate) fn cached_member(id: &Id, envelope: &[u8], max: usize) -> Option<Member> {
    LAST.with(|last| {
        let last = last.borrow();
        let (env, group) = last.as_ref()?;
        // The whole envelope is compared: whatever it holds, a member is
        // only ever returned under the id its bytes hash to.
        (env.as_slice() == envelope).then(|| take(group, id, max))
    })
}

/// Keeps `group` as this thread's last and returns the member `id`.
pub(crate) fn cache_and_take(group: Group, id: &Id, envelope: &[u8], max: usize) -> Member {
    let group = Rc::new(group);
    let out = take(&group, id, max);
    LAST.with(|last| *last.borrow_mut() = Some((envelope.to_vec(), group)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_come_back_by_id_and_only_by_their_own() {
        let k = MasterKey::generate();
        let scope = k.group_scope("web1\nshop.test");
        let rows: Vec<Vec<u8>> = (0..50)
            .map(|i| {
                format!("({i},'customer {i}','2026-12-03'),")
                    .repeat(10)
                    .into_bytes()
            })
            .collect();
        let refs: Vec<&[u8]> = rows.iter().map(|r| r.as_slice()).collect();
        let env = seal(&k, &scope, &refs, 3, false);
        let data: usize = rows.iter().map(|r| r.len()).sum();
        assert!(
            env.len() < data / 4,
            "members compress together: {}",
            env.len()
        );
        for r in &rows {
            let id = member_id(&k, &scope, r);
            assert_ne!(id, k.blob_id(r), "grouped ids differ from single ids");
            let (plain, s) = k.open_blob_scoped(&id, &env, usize::MAX).unwrap();
            assert_eq!(&plain, r);
            assert_eq!(s, Some(scope));
        }
        // Another scope's id for the same bytes is not in this group.
        let other = member_id(&k, &k.group_scope("web2\nshop.test"), &rows[0]);
        assert!(k.open_blob(&other, &env).is_err());
        // A bound below a member's length refuses it.
        assert!(k
            .open_blob_bounded(&member_id(&k, &scope, &rows[0]), &env, 10)
            .is_err());
        // A group is never taken for one object.
        assert!(k.open(&env, &"group").is_err());
        let g = open(&k, &env, &"group").unwrap();
        assert_eq!(g.len(), 50);
        assert_eq!(g.scope, scope);
    }

    #[test]
    fn rows_laid_out_by_column_come_back_and_take_less() {
        let k = MasterKey::generate();
        let scope = k.group_scope("web1\nshop.test");
        let rows: Vec<Vec<u8>> = (0..300)
            .map(|i| {
                (0..6)
                    .map(|j| {
                        format!(
                            "({},'2021-03-14 09:{:02}:03',{},NULL),\n",
                            i * 6 + j,
                            j * 7,
                            i % 13
                        )
                    })
                    .collect::<String>()
                    .into_bytes()
            })
            .collect();
        let refs: Vec<&[u8]> = rows.iter().map(|r| r.as_slice()).collect();
        let plain = seal(&k, &scope, &refs, 3, false);
        let columns = seal(&k, &scope, &refs, 3, true);
        assert!(
            columns.len() * 3 < plain.len() * 2,
            "{} bytes by column, {} as they are",
            columns.len(),
            plain.len()
        );
        for env in [&plain, &columns] {
            let g = open(&k, env, &"group").unwrap();
            let back: Vec<&[u8]> = g.members().map(|(_, m)| m).collect();
            assert_eq!(back, refs);
            for r in &refs {
                let id = member_id(&k, &scope, r);
                assert_eq!(k.open_blob(&id, env).unwrap(), *r);
            }
        }
        // Bytes that are no rows are sealed as they are.
        let binary: Vec<u8> = (0..4000u32).map(|i| (i * 7919 % 251) as u8).collect();
        let env = seal(&k, &scope, &[&binary], 3, true);
        assert_eq!(
            open(&k, &env, &"group")
                .unwrap()
                .members()
                .next()
                .unwrap()
                .1,
            &binary[..]
        );
    }

    #[test]
    fn lying_tables_are_refused() {
        let k = MasterKey::generate();
        let scope = Id([9; 32]);
        let mut cases: Vec<Vec<u8>> = Vec::new();
        let table = |count: u32, lens: &[u32], data: &[u8]| {
            let mut p = scope.0.to_vec();
            p.extend_from_slice(&count.to_le_bytes());
            for l in lens {
                p.extend_from_slice(&l.to_le_bytes());
            }
            p.extend_from_slice(data);
            p
        };
        cases.push(table(u32::MAX, &[1], b"x"));
        cases.push(table(0, &[], b""));
        cases.push(table(1, &[5], b"abc"));
        cases.push(table(1, &[2], b"abc"));
        cases.push(table(2, &[u32::MAX, 1], b"abc"));
        cases.push(scope.0[..20].to_vec());
        for plain in cases {
            let env = k.seal_group_body(&plain, 3);
            assert!(open(&k, &env, &"g").is_err(), "{plain:?}");
        }
        // A column layout (format v1.3) that is no layout, or that opens to
        // more than the bound its pack claims.
        let bogus = k.seal_group_encoded(crate::crypto::ENC_GROUP_COLUMNS, b"\x01\xff\xff", 3);
        let err = open(&k, &bogus, &"g").err().unwrap().to_string();
        assert!(err.contains("column layout"), "{err}");
        let rows: String = (0..500).map(|i| format!("({i},'x'),\n")).collect();
        let big = table(1, &[rows.len() as u32], rows.as_bytes());
        let t = crate::columns::encode(&big, 40).unwrap();
        let env = k.seal_group_encoded(crate::crypto::ENC_GROUP_COLUMNS, &t, 3);
        assert_eq!(open(&k, &env, &"g").unwrap().len(), 1);
        assert!(open_bounded(&k, &env, &"g", big.len() - 1).is_err());
        assert!(open_bounded(&k, &env, &"g", t.len()).is_err());
        let ok = table(2, &[1, 2], b"abc");
        assert_eq!(open(&k, &k.seal_group_body(&ok, 3), &"g").unwrap().len(), 2);
    }
}
