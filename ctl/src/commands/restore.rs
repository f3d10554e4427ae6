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
