//! `repo restore` and `repo export`.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, Result};

use super::{find, open};
use crate::cli::RepoArgs;
use crate::{output, usage};

pub fn restore(
    args: &RepoArgs,
    spec: &str,
    target: &Path,
    paths: &[String],
    domain: Option<&str>,
) -> Result<()> {
    let repo = open(args)?;
    repo.load_index()?;
    let (id, snap) = find(&repo, spec, domain)?;
    let started = std::time::Instant::now();
    let stats =
        cairn_repo::restore::restore(&repo, &snap.tree, target, paths).with_context(|| {
            format!(
                "restore of snapshot {} into {}",
                id.short(),
                target.display()
            )
        })?;
    if args.json {
        return output::json(
            &serde_json::json!({"snapshot": id, "target": target, "stats": stats}),
        );
    }
    println!(
        "restored snapshot {} ({}) into {}: {} files, {} dirs, {} symlinks, {} fifos and devices, {} in {:.2}s",
        id.short(),
        snap.domain,
        target.display(),
        stats.files,
        stats.dirs,
        stats.symlinks,
        stats.specials,
        output::bytes(stats.bytes),
        started.elapsed().as_secs_f64()
    );
    if stats.skipped_xattrs > 0 {
        eprintln!(
            "warning: {} extended attributes not restored (security.* and trusted.* need root; or the target's file system has none)",
            stats.skipped_xattrs
        );
    }
    if stats.skipped_devices > 0 {
        eprintln!(
            "warning: {} device nodes not restored (only root may create them)",
            stats.skipped_devices
        );
    }
    Ok(())
}

/// Paths a dry run lists at most.
const PREVIEW_PATHS: usize = 50;

pub fn preview(args: &RepoArgs, spec: &str, target: &Path, domain: Option<&str>) -> Result<()> {
    let repo = open(args)?;
    repo.load_index()?;
    let (id, snap) = find(&repo, spec, domain)?;
    let p = cairn_repo::stage::preview(&repo, &snap.tree, target, PREVIEW_PATHS)?;
    if args.json {
        return output::json(&serde_json::json!({"snapshot": id, "target": target, "preview": p}));
    }
    let t = |t: cairn_repo::stage::Tally| format!("{} ({})", t.entries, output::bytes(t.bytes));
    println!(
        "restoring snapshot {} over {} would add {}, change {}, remove {}; {} unchanged",
        id.short(),
        target.display(),
        t(p.added),
        t(p.changed),
        t(p.removed),
        p.unchanged
    );
    for path in &p.paths {
        println!("  {}", output::safe(path));
    }
    if p.more_paths > 0 {
        println!("  … and {} more", p.more_paths);
    }
    Ok(())
}

/// An in-place restore without a controller: the journal lives in
/// `$CAIRN_STATE_DIR` (default `~/.local/state/cairn`), and the replaced tree
/// stays until the operator removes it (nothing here expires it).
pub fn in_place(args: &RepoArgs, spec: &str, target: &Path, domain: Option<&str>) -> Result<()> {
    let state = std::env::var_os("CAIRN_STATE_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state/cairn")))
        .context("set CAIRN_STATE_DIR (no HOME) for the restore journal")?;
    let journal = cairn_repo::stage::Journal::open(&state.join("restores"))?;
    for swept in cairn_repo::stage::recover(&journal, 0)? {
        eprintln!("{}", swept.what);
    }
    let repo = open(args)?;
    repo.load_index()?;
    let (id, snap) = find(&repo, spec, domain)?;
    let job = format!(
        "cli-{}-{}",
        chrono::Utc::now().timestamp(),
        std::process::id()
    );
    let started = std::time::Instant::now();
    let s = cairn_repo::stage::restore_in_place(
        &repo,
        &snap.tree,
        target,
        &journal,
        &job,
        i64::MAX,
        &Default::default(),
    )
    .with_context(|| {
        format!(
            "in-place restore of snapshot {} over {}",
            id.short(),
            target.display()
        )
    })?;
    if args.json {
        return output::json(&serde_json::json!({"snapshot": id, "target": target, "swapped": s}));
    }
    println!(
        "restored snapshot {} over {}: {} files ({}) verified and swapped in {:.2}s; the replaced tree is at {} (remove it when no longer needed)",
        id.short(),
        target.display(),
        s.verified_files,
        output::bytes(s.stats.bytes),
        started.elapsed().as_secs_f64(),
        s.rollback.display()
    );
    Ok(())
}

pub fn export(args: &RepoArgs, spec: &str, paths: &[String], domain: Option<&str>) -> Result<()> {
    let stdout = std::io::stdout();
    if stdout.is_terminal() {
        return Err(usage(
            "refusing to write a tar stream to a terminal; redirect stdout (… > site.tar)",
        ));
    }
    let repo = open(args)?;
    repo.load_index()?;
    let (_, snap) = find(&repo, spec, domain)?;
    let out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut out = cairn_repo::export::export_tar(&repo, &snap.tree, paths, out)?;
    std::io::Write::flush(&mut out)?;
    Ok(())
}
