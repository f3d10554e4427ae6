//! `repo snapshots`, `repo ls`, `repo diff`.

use anyhow::Result;
use cairn_repo::diff;
use cairn_repo::restore::lookup;
use cairn_repo::tree::{Node, NodeKind};
use cairn_repo::{Id, Repository};

use super::{find, open};
use crate::cli::RepoArgs;
use crate::output;

pub fn list(args: &RepoArgs, domain: Option<&str>) -> Result<()> {
    let repo = open(args)?;
    let snaps: Vec<_> = repo
        .snapshots()?
        .into_iter()
        .filter(|(_, s)| domain.is_none_or(|d| s.domain == d))
        .collect();
    if args.json {
        let rows: Vec<serde_json::Value> = snaps
            .iter()
            .map(|(id, s)| {
                let mut v = serde_json::to_value(s).unwrap();
                v["id"] = serde_json::json!(id);
                v
            })
            .collect();
        return output::json(&rows);
    }
    println!(
        "{:<8}  {:<19}  {:<28} {:<14} {:<12} {:>8} {:>10} {:>10}",
        "ID", "TIME", "DOMAIN", "HOST", "KIND", "FILES", "SIZE", "ADDED"
    );
    for (id, s) in &snaps {
        println!(
            "{:<8}  {:<19}  {:<28} {:<14} {:<12} {:>8} {:>10} {:>10}",
            id.short(),
            s.time.format("%Y-%m-%d %H:%M:%S"),
            output::safe(&s.domain),
            output::safe(&s.host),
            match s.content {
                cairn_repo::snapshot::Content::Files => s.kind.to_string(),
                cairn_repo::snapshot::Content::Database => "database".to_string(),
                cairn_repo::snapshot::Content::Binlog => "binlog".to_string(),
            },
            s.stats.files,
            output::bytes(s.stats.total_bytes),
            output::bytes(s.stats.stored_bytes)
        );
    }
    println!("{} snapshots", snaps.len());
    Ok(())
}

pub fn ls(
    args: &RepoArgs,
    spec: &str,
    path: Option<&str>,
    domain: Option<&str>,
    long: bool,
) -> Result<()> {
    let repo = open(args)?;
    repo.load_index()?;
    let (_, snap) = find(&repo, spec, domain)?;
    let start = path.unwrap_or("");
    let prefix = cairn_repo::restore::split_path(start)?.join("/");
    let mut rows = Vec::new();
    match lookup(&repo, &snap.tree, start)? {
        None => walk(&repo, &snap.tree, &prefix, &mut rows)?,
        Some(n) => {
            let sub = n.subtree;
            rows.push((prefix.clone(), n));
            if let Some(sub) = sub {
                walk(&repo, &sub, &prefix, &mut rows)?;
            }
        }
    }
    if args.json {
        let v: Vec<_> = rows
            .iter()
            .map(|(p, n)| serde_json::json!({"path": format!("/{p}"), "type": n.kind, "mode": format!("{:o}", n.mode), "size": n.size, "mtime_ns": n.mtime_ns, "target": n.target}))
            .collect();
        return output::json(&v);
    }
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for (p, n) in rows {
        if long {
            let t = chrono::DateTime::from_timestamp(n.mtime_ns.div_euclid(1_000_000_000), 0)
                .unwrap_or_default();
            let kind = match n.kind {
                NodeKind::Dir => 'd',
                NodeKind::Symlink => 'l',
                NodeKind::File => '-',
                NodeKind::Fifo => 'p',
                NodeKind::Char => 'c',
                NodeKind::Block => 'b',
            };
            let link = n
                .target
                .as_deref()
                .map(|t| format!(" -> {}", output::safe(t)))
                .unwrap_or_default();
            writeln!(
                out,
                "{kind}{:04o} {:>5} {:>5} {:>12} {} /{p}{link}",
                n.mode,
                n.uid,
                n.gid,
                n.size,
                t.format("%Y-%m-%d %H:%M:%S"),
                p = output::safe(&p)
            )?;
        } else {
            writeln!(out, "/{}", output::safe(&p))?;
        }
    }
    Ok(())
}

fn walk(repo: &Repository, tree: &Id, prefix: &str, rows: &mut Vec<(String, Node)>) -> Result<()> {
    for n in repo.load_tree(tree)?.nodes {
        let p = if prefix.is_empty() {
            n.name.clone()
        } else {
            format!("{prefix}/{}", n.name)
        };
        let sub = n.subtree;
        rows.push((p.clone(), n));
        if let Some(sub) = sub {
            walk(repo, &sub, &p, rows)?;
        }
    }
    Ok(())
}

pub fn diff(args: &RepoArgs, a: &str, b: &str, domain: Option<&str>) -> Result<()> {
    let repo = open(args)?;
    repo.load_index()?;
    let (ia, sa) = find(&repo, a, domain)?;
    let (ib, sb) = find(&repo, b, domain)?;
    let changes = diff::diff(&repo, &sa.tree, &sb.tree)?;
    if args.json {
        return output::json(&serde_json::json!({"from": ia, "to": ib, "changes": changes}));
    }
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for c in &changes {
        writeln!(out, "{}    /{}", c.change.symbol(), output::safe(&c.path))?;
    }
    let count = |k: diff::Change| changes.iter().filter(|c| c.change == k).count();
    writeln!(
        out,
        "{} → {}: {} added, {} removed, {} modified, {} metadata only",
        ia.short(),
        ib.short(),
        count(diff::Change::Added),
        count(diff::Change::Removed),
        count(diff::Change::Modified),
        count(diff::Change::Metadata)
    )?;
    Ok(())
}
