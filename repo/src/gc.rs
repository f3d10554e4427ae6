//! Forget and garbage collection (RET-3, RET-4).
//!
//! Mark: every blob reachable from a live snapshot. Sweep, in this order so a
//! crash anywhere leaves a valid repository: (1) copy the live blobs of sparse
//! packs into new packs, (2) write one consolidated index segment, (3) delete
//! the old segments, (4) delete dead and repacked packs. A pack younger than the
//! grace period is never touched; gc holds the exclusive lock (see `lock`).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::error::Result;
use crate::id::Id;
use crate::lock::Lock;
use crate::pack::{self, PackEntry};
use crate::repository::Repository;
use crate::saver::BlobSaver;

#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    pub dry_run: bool,
    /// Packs younger than this are kept whatever they hold.
    pub grace: Duration,
    /// Repack a pack when at least this fraction of its bytes is dead.
    pub repack_threshold: f64,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            dry_run: false,
            grace: Duration::from_secs(3600),
            repack_threshold: 0.2,
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub packs_total: usize,
    pub packs_deleted: Vec<Id>,
    pub packs_repacked: Vec<Id>,
    pub packs_young_kept: usize,
    pub packs_unindexed_deleted: usize,
    pub bytes_freed: u64,
    pub blobs_live: usize,
    pub segments_replaced: usize,
    /// Pack staging files left by killed backups (local repositories).
    pub staging_files_removed: usize,
}

/// Deletes snapshots. Their data stays until `gc`.
pub fn forget(repo: &Repository, ids: &[Id]) -> Result<()> {
    crate::lock::refuse_if_leased(&**repo.storage(), "forget")?;
    for id in ids {
        repo.storage().delete(&format!("snapshots/{id}"))?;
    }
    Ok(())
}

pub fn gc(repo: &Repository, opts: GcOptions) -> Result<GcReport> {
    let _lock = if opts.dry_run {
        None
    } else {
        crate::lock::refuse_if_leased(&**repo.storage(), "gc")?;
        Some(Lock::acquire(repo.storage().clone(), true)?)
    };
    repo.load_index()?;
    let roots: Vec<Id> = repo.snapshots()?.into_iter().map(|(_, s)| s.tree).collect();
    let mut live = crate::repository::LiveSet::default();
    repo.mark_live(&roots, &mut live)?;
    let now = SystemTime::now();
    let listed = repo.storage().list("data/")?;
    let mut r = GcReport {
        dry_run: opts.dry_run,
        packs_total: listed.len(),
        blobs_live: live.len(),
        ..Default::default()
    };

    let idx = repo.index();
    let old_segments: Vec<Id> = idx.segments.iter().copied().collect();
    let mut keep: Vec<(Id, Vec<PackEntry>)> = Vec::new();
    let mut repack: Vec<(Id, Vec<PackEntry>)> = Vec::new();
    let mut delete: Vec<(Id, u64)> = Vec::new();
    for o in &listed {
        let Some(p) = pack::id_of_key(&o.key) else {
            continue;
        };
        let young = o
            .modified
            .and_then(|m| now.duration_since(m).ok())
            .is_none_or(|age| age < opts.grace);
        let Some(entries) = idx.pack(&p) else {
            if young {
                r.packs_young_kept += 1;
            } else {
                r.packs_unindexed_deleted += 1;
                delete.push((p, o.size));
            }
            continue;
        };
        // A blob stored twice is live only in the pack the index points to.
        let is_live =
            |e: &PackEntry| live.contains(&e.id) && idx.get(&e.id).is_some_and(|l| l.pack == p);
        let live_bytes: u64 = entries
            .iter()
            .filter(|e| is_live(e))
            .map(|e| e.length as u64)
            .sum();
        let all_bytes: u64 = entries.iter().map(|e| e.length as u64).sum();
        if young {
            r.packs_young_kept += 1;
            keep.push((p, entries.to_vec()));
        } else if live_bytes == 0 {
            delete.push((p, o.size));
        } else if (all_bytes - live_bytes) as f64 >= opts.repack_threshold * all_bytes as f64
            && all_bytes > live_bytes
        {
            repack.push((p, entries.iter().filter(|e| is_live(e)).copied().collect()));
        } else {
            keep.push((p, entries.to_vec()));
        }
    }
    drop(idx);
    r.packs_deleted = delete.iter().map(|(p, _)| *p).collect();
    r.packs_repacked = repack.iter().map(|(p, _)| *p).collect();
    r.bytes_freed = delete.iter().map(|(_, s)| s).sum();
    r.segments_replaced = old_segments.len();
    let stale_staging = stale_staging_files(repo, now, opts.grace);
    r.staging_files_removed = stale_staging.len();
    if opts.dry_run {
        return Ok(r);
    }
    for f in &stale_staging {
        let _ = std::fs::remove_file(f);
    }

    // (1) Repack: live blobs of sparse packs into new packs.
    let in_kept: HashSet<Id> = keep
        .iter()
        .flat_map(|(_, es)| es.iter().map(|e| e.id))
        .collect();
    let sizes: HashMap<Id, u64> = listed
        .iter()
        .filter_map(|o| pack::id_of_key(&o.key).map(|p| (p, o.size)))
        .collect();
    let before: HashSet<Id> = repo.index().pack_ids().copied().collect();
    if !repack.is_empty() {
        let saver = BlobSaver::new(repo, in_kept);
        let mut group_at = None;
        for (p, live_entries) in &repack {
            let bytes = repo.storage().get(&pack::key_of(p))?;
            for e in live_entries {
                let env = &bytes[e.offset as usize..(e.offset + e.length) as usize];
                // A group's live members go into a new group of their own:
                // groups are never merged, so a group never holds blobs
                // of two writers, even ones that claimed one scope.
                if e.grouped && group_at != Some((*p, e.offset)) {
                    saver.seal_groups()?;
                    group_at = Some((*p, e.offset));
                }
                let (plain, scope) =
                    repo.key()
                        .open_blob_scoped(&e.id, env, crate::crypto::MAX_PLAIN)?;
                saver.save_scoped(e.kind, e.id, &plain, scope)?;
            }
            r.bytes_freed += sizes.get(p).copied().unwrap_or(0);
        }
        saver.finish()?;
    }
    let new_packs: Vec<(Id, Vec<PackEntry>)> = {
        let idx = repo.index();
        idx.packs()
            .filter(|(p, _)| !before.contains(p))
            .map(|(p, e)| (*p, e.to_vec()))
            .collect()
    };
    // (2) One consolidated segment for everything kept.
    keep.extend(new_packs);
    let consolidated = repo.write_index_segment(&keep)?;
    // (3) Old segments (and the one the repack wrote) go.
    let all_segments: Vec<Id> = repo.index().segments.iter().copied().collect();
    for s in all_segments.into_iter().filter(|s| *s != consolidated) {
        repo.storage().delete(&format!("index/{s}"))?;
    }
    // (4) Dead and repacked packs go last.
    for (p, _) in delete.iter().chain(
        repack
            .iter()
            .map(|(p, _)| (*p, 0))
            .collect::<Vec<_>>()
            .iter(),
    ) {
        repo.storage().delete(&pack::key_of(p))?;
    }
    repo.load_index()?;
    Ok(r)
}

/// `.pack-*.tmp` files in the staging directory older than the grace period.
fn stale_staging_files(
    repo: &Repository,
    now: SystemTime,
    grace: Duration,
) -> Vec<std::path::PathBuf> {
    let Some(dir) = repo.storage().staging_dir() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with(".pack-") && name.ends_with(".tmp")
        })
        .filter(|e| {
            e.metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age >= grace)
        })
        .map(|e| e.path())
        .collect()
}
