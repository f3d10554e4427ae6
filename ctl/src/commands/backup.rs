//! `repo backup`: a directory into a snapshot, with a progress line on a terminal.

use std::sync::atomic::Ordering;

use anyhow::{Context, Result};
use cairn_repo::backup::{self, BackupOptions, Progress};
use cairn_repo::exclude::Excludes;

use super::open;
use crate::cli::{RepoArgs, RepoCommand};
use crate::{output, usage};

pub fn run(args: &RepoArgs) -> Result<()> {
    let RepoCommand::Backup {
        domain,
        kind,
        excludes,
        no_default_excludes,
        tags,
        host,
        dir,
    } = &args.command
    else {
        unreachable!()
    };
    let excludes = if *no_default_excludes {
        Excludes::new(excludes)
    } else {
        Excludes::with_defaults(excludes)
    }
    .map_err(usage)?;
    if !dir.is_dir() {
        return Err(usage(format!("{} is not a directory", dir.display())));
    }
    let repo = open(args)?;
    let host = output::host_name(host.as_deref());
    let opts = BackupOptions {
        content: Default::default(),
        domain: domain.clone(),
        kind: *kind,
        excludes,
        host,
        tags: tags.clone(),
    };
    let progress = Progress::default();
    let result = output::with_spinner(
        || {
            let files = progress.files.load(Ordering::Relaxed);
            let bytes = progress.bytes.load(Ordering::Relaxed);
            format!("{files} files, {} read", output::bytes(bytes))
        },
        || backup::run(&repo, dir, &opts, &progress),
    );
    let (id, snap) = result.with_context(|| {
        format!(
            "backup of {} failed; no snapshot was written",
            dir.display()
        )
    })?;
    if args.json {
        let mut v = serde_json::to_value(&snap)?;
        v["id"] = serde_json::json!(id);
        return output::json(&v);
    }
    let s = &snap.stats;
    println!(
        "snapshot {} saved: domain {}, {} backup of {} files ({}), read {}, added {} (stored {}, ratio {:.2}) in {:.1}s",
        id.short(),
        snap.domain,
        snap.kind,
        s.files,
        output::bytes(s.total_bytes),
        output::bytes(s.bytes_read),
        output::bytes(s.bytes_new),
        output::bytes(s.stored_bytes),
        s.ratio,
        s.duration_ms as f64 / 1000.0
    );
    for w in &s.warnings {
        eprintln!("warning: {}", output::safe(&w.to_string()));
    }
    Ok(())
}
