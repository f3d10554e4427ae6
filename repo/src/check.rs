//! Repository check (VER-2): structure, and optionally every byte of data.
//!
//! Structure: every index segment decodes, every indexed pack exists and is
//! long enough, every tree and data blob a snapshot references is indexed and
//! every tree parses. With `read_data`, every pack (or a random subset) is read
//! whole: its id must match its content, its header must match the index, and
//! every blob must decrypt and hash to its id. A broken pack is reported with
//! the snapshots and files that need it; everything else stays restorable.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;

use rayon::prelude::*;
use serde::Serialize;

use crate::content_edit;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::pack;
use crate::repository::Repository;
use crate::tree::{Node, NodeKind};

#[derive(Debug, Clone, Copy)]
pub struct CheckOptions {
    pub read_data: bool,
    /// Fraction of packs to read (1.0 = all) when `read_data` is set.
    pub subset: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct BadPack {
    pub pack: Id,
    pub reason: String,
    /// Snapshot id → files (paths) that need a blob from this pack.
    pub affected: Vec<(Id, Vec<String>)>,
}

#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    pub snapshots: usize,
    pub packs: usize,
    pub packs_read: usize,
    pub blobs: usize,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    pub bad_packs: Vec<BadPack>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.errors.is_empty() && self.bad_packs.is_empty()
    }
}

pub fn check(repo: &Repository, opts: CheckOptions) -> Result<CheckReport> {
    let mut r = CheckReport::default();
    repo.load_index()?;
    let listed: HashMap<Id, u64> = repo
        .storage()
        .list("data/")?
        .into_iter()
        .filter_map(|o| pack::id_of_key(&o.key).map(|id| (id, o.size)))
        .collect();
    let idx = repo.index();
    r.packs = idx.pack_count();
    r.blobs = idx.len();
    let mut bad: HashMap<Id, String> = HashMap::new();
    for (p, entries) in idx.packs() {
        match listed.get(p) {
            None => {
                bad.insert(*p, "indexed but missing from storage".into());
            }
            Some(size) => {
                let end = entries
                    .iter()
                    .map(|e| e.offset as u64 + e.length as u64)
                    .max()
                    .unwrap_or(0);
                if end + pack::TRAILER as u64 > *size {
                    bad.insert(
                        *p,
                        format!("truncated: {size} bytes, index needs more than {end}"),
                    );
                }
            }
        }
    }
    for p in listed.keys() {
        if !idx.has_pack(p) {
            r.warnings.push(format!("pack {p} is in no index (left by an interrupted backup; the next backup adopts it, gc removes it)"));
        }
    }
    drop(idx);

    let snaps = repo.snapshots()?;
    r.snapshots = snaps.len();
    // Walk every tree once; remember which file needs which blob for reports.
    let mut seen_trees = HashSet::new();
    let mut missing_blobs: BTreeSet<Id> = BTreeSet::new();
    for (sid, s) in &snaps {
        let mut stack = vec![(s.tree, String::new())];
        while let Some((t, prefix)) = stack.pop() {
            if !seen_trees.insert(t) {
                continue;
            }
            let tree = match repo.load_tree(&t) {
                Ok(tree) => tree,
                Err(Error::BlobNotFound { id }) if id == t => {
                    r.errors.push(format!(
                        "snapshot {}: tree {t} at /{prefix} is not in the index",
                        sid.short()
                    ));
                    continue;
                }
                Err(e) => {
                    r.errors.push(format!(
                        "snapshot {}: tree {t} at /{prefix}: {e}",
                        sid.short()
                    ));
                    continue;
                }
            };
            for n in tree.nodes {
                let path = if prefix.is_empty() {
                    n.name.clone()
                } else {
                    format!("{prefix}/{}", n.name)
                };
                let idx = repo.index();
                for b in &n.content {
                    if !idx.contains(b) && missing_blobs.insert(*b) {
                        r.errors.push(format!(
                            "snapshot {}: /{path}: data blob {b} is not in the index",
                            sid.short()
                        ));
                    }
                }
                drop(idx);
                if let (NodeKind::Dir, Some(sub)) = (n.kind, n.subtree) {
                    stack.push((sub, path));
                }
            }
        }
    }

    if opts.read_data {
        let mut ids: Vec<(Id, u64)> = listed.iter().map(|(k, v)| (*k, *v)).collect();
        ids.sort();
        if opts.subset < 1.0 {
            use rand::seq::SliceRandom;
            ids.shuffle(&mut rand::thread_rng());
            ids.truncate(
                ((ids.len() as f64 * opts.subset).ceil() as usize)
                    .max(1)
                    .min(ids.len()),
            );
        }
        r.packs_read = ids.len();
        let results: Vec<(Id, Option<String>)> = ids
            .par_iter()
            .map(|(p, size)| (*p, read_pack(repo, p, *size).err()))
            .collect();
        for (p, err) in results {
            if let Some(e) = err {
                bad.entry(p).or_insert(e);
            }
        }
    }

    if !bad.is_empty() {
        r.bad_packs = affected_by(repo, &snaps, bad)?;
    }
    Ok(r)
}

fn read_pack(repo: &Repository, p: &Id, size: u64) -> std::result::Result<(), String> {
    let bytes = repo
        .storage()
        .get(&pack::key_of(p))
        .map_err(|e| e.to_string())?;
    if Id::of_stored(&bytes) != *p {
        return Err(format!(
            "content hash does not match the pack id ({} bytes, {size} listed)",
            bytes.len()
        ));
    }
    // Every blob opens and hashes to its id; group records (format v1.2)
    // name their members this way too.
    let entries = pack::verify(repo.key(), p, &bytes).map_err(|e| e.to_string())?;
    if let Some(indexed) = repo.index().pack(p) {
        if *indexed != entries {
            return Err("header differs from the index".into());
        }
    }
    Ok(())
}

/// The bad pack holding a tree that the blob list of `node` (as stored) is
/// edited from, directly or down its chain.
fn bad_base(repo: &Repository, node: &Node, blob_pack: &HashMap<Id, Id>) -> Option<Id> {
    let name = node.name_os().ok()?;
    let mut edit = node.content_edit.clone()?;
    for _ in 0..content_edit::MAX_CHAIN {
        if let Some(p) = blob_pack.get(&edit.base) {
            return Some(*p);
        }
        let base = repo.parsed_tree(&edit.base).ok()?;
        edit = base.find(name.as_bytes())?.content_edit.clone()?;
    }
    None
}

/// Which snapshots and files need the blobs of the bad packs.
fn affected_by(
    repo: &Repository,
    snaps: &[(Id, crate::snapshot::Snapshot)],
    bad: HashMap<Id, String>,
) -> Result<Vec<BadPack>> {
    let idx = repo.index();
    let mut blob_pack: HashMap<Id, Id> = HashMap::new();
    for p in bad.keys() {
        if let Some(entries) = idx.pack(p) {
            for e in entries {
                blob_pack.insert(e.id, *p);
            }
        }
    }
    drop(idx);
    let mut affected: HashMap<Id, HashMap<Id, Vec<String>>> = HashMap::new();
    for (sid, s) in snaps {
        let mut stack = vec![(s.tree, String::new())];
        while let Some((t, prefix)) = stack.pop() {
            if let Some(p) = blob_pack.get(&t) {
                affected
                    .entry(*p)
                    .or_default()
                    .entry(*sid)
                    .or_default()
                    .push(format!("/{prefix} (directory listing)"));
                continue;
            }
            let Ok(tree) = repo.load_tree(&t) else {
                // A list edited from a tree in a bad pack cannot resolve:
                // follow the stored edits to name its file.
                for n in repo.parsed_tree(&t).map(|t| t.nodes).unwrap_or_default() {
                    if let Some(p) = bad_base(repo, &n, &blob_pack) {
                        let path = if prefix.is_empty() {
                            n.name.clone()
                        } else {
                            format!("{prefix}/{}", n.name)
                        };
                        affected
                            .entry(p)
                            .or_default()
                            .entry(*sid)
                            .or_default()
                            .push(format!("/{path}"));
                    }
                }
                continue;
            };
            for n in tree.nodes {
                let path = if prefix.is_empty() {
                    n.name.clone()
                } else {
                    format!("{prefix}/{}", n.name)
                };
                let needs = n.content.iter().chain(&n.bases);
                if let Some(p) = needs.into_iter().find_map(|b| blob_pack.get(b)) {
                    affected
                        .entry(*p)
                        .or_default()
                        .entry(*sid)
                        .or_default()
                        .push(format!("/{path}"));
                }
                if let (NodeKind::Dir, Some(sub)) = (n.kind, n.subtree) {
                    stack.push((sub, path));
                }
            }
        }
    }
    let mut out: Vec<BadPack> = bad
        .into_iter()
        .map(|(pack, reason)| {
            let mut a: Vec<(Id, Vec<String>)> = affected
                .remove(&pack)
                .unwrap_or_default()
                .into_iter()
                .collect();
            a.sort();
            for (_, files) in a.iter_mut() {
                files.sort();
            }
            BadPack {
                pack,
                reason,
                affected: a,
            }
        })
        .collect();
    out.sort_by_key(|b| b.pack);
    Ok(out)
}
