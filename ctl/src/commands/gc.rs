//! `repo forget`, `repo gc`, `repo unlock`.

use std::time::Duration;

use anyhow::Result;
use cairn_repo::gc::{self, GcOptions};

use super::{find, open, open_storage};
use crate::cli::RepoArgs;
use crate::{output, usage};

pub fn forget(args: &RepoArgs, specs: &[String], domain: Option<&str>) -> Result<()> {
    let repo = open(args)?;
    // Resolve every id before deleting any: a typo deletes nothing.
    let ids = specs
        .iter()
        .map(|s| find(&repo, s, domain).map(|(id, _)| id))
        .collect::<Result<Vec<_>>>()?;
    gc::forget(&repo, &ids)?;
    for id in &ids {
        println!("removed snapshot {}", id.short());
    }
    Ok(())
}

/// `30m`, `1h`, `2d`, `1h30m`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration> {
    match s.parse::<u64>() {
        Ok(n) => Ok(Duration::from_secs(n)),
        Err(_) => humantime::parse_duration(s).map_err(|e| {
            usage(format!(
                "bad duration {s:?} (expected e.g. 30m, 1h, 2d): {e}"
            ))
        }),
    }
}

pub fn gc(args: &RepoArgs, dry_run: bool, grace: &str) -> Result<()> {
    let grace = parse_duration(grace)?;
    let repo = open(args)?;
    let r = gc::gc(
        &repo,
        GcOptions {
            dry_run,
            grace,
            ..GcOptions::default()
        },
    )?;
    if args.json {
        return output::json(&r);
    }
    let verb = if dry_run { "would" } else { "did" };
    println!(
        "{} packs: {verb} delete {}, {verb} repack {}, keep {} young; {verb} free about {}; {} live blobs",
        r.packs_total,
        r.packs_deleted.len(),
        r.packs_repacked.len(),
        r.packs_young_kept,
        output::bytes(r.bytes_freed),
        r.blobs_live
    );
    if dry_run {
        for p in &r.packs_deleted {
            println!("would delete pack {p}");
        }
        for p in &r.packs_repacked {
            println!("would repack pack {p}");
        }
    }
    Ok(())
}

pub fn unlock(args: &RepoArgs, all: bool) -> Result<()> {
    let storage = open_storage(args)?;
    let n = cairn_repo::lock::unlock(&*storage, all)?;
    println!("removed {n} lock(s)");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        assert_eq!(super::parse_duration("90").unwrap().as_secs(), 90);
        assert_eq!(super::parse_duration("2h").unwrap().as_secs(), 7200);
        assert_eq!(super::parse_duration("1h30m").unwrap().as_secs(), 5400);
        assert!(super::parse_duration("1q").is_err());
        assert!(super::parse_duration("h").is_err());
    }
}
