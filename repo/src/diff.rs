//! Differences between two snapshots' trees (RST-4, CAT-2).
//!
//! Subtrees with the same id are skipped without being read.

use serde::Serialize;

use crate::error::Result;
use crate::id::Id;
use crate::repository::Repository;
use crate::tree::{Node, NodeKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Removed,
    /// Content changed (files) or the entry changed kind or target.
    Modified,
    /// Only mode, owner or mtime changed.
    Metadata,
}

impl Change {
    pub fn symbol(self) -> char {
        match self {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Modified => 'M',
            Change::Metadata => 'U',
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiffEntry {
    pub change: Change,
    pub path: String,
}

pub fn diff(repo: &Repository, a: &Id, b: &Id) -> Result<Vec<DiffEntry>> {
    let mut out = Vec::new();
    diff_trees(repo, Some(a), Some(b), "", &mut out)?;
    Ok(out)
}

fn diff_trees(
    repo: &Repository,
    a: Option<&Id>,
    b: Option<&Id>,
    prefix: &str,
    out: &mut Vec<DiffEntry>,
) -> Result<()> {
    if a == b {
        return Ok(());
    }
    let load = |t: Option<&Id>| -> Result<Vec<Node>> {
        Ok(match t {
            Some(id) => repo.load_tree(id)?.nodes,
            None => Vec::new(),
        })
    };
    let (na, nb) = (load(a)?, load(b)?);
    let (mut i, mut j) = (0, 0);
    while i < na.len() || j < nb.len() {
        let order = match (na.get(i), nb.get(j)) {
            (Some(x), Some(y)) => x
                .name_os()?
                .as_encoded_bytes()
                .cmp(y.name_os()?.as_encoded_bytes()),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                walk_all(repo, &na[i], prefix, Change::Removed, out)?;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                walk_all(repo, &nb[j], prefix, Change::Added, out)?;
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (x, y) = (&na[i], &nb[j]);
                let path = join(prefix, &x.name);
                if x.kind != y.kind {
                    walk_all(repo, x, prefix, Change::Removed, out)?;
                    walk_all(repo, y, prefix, Change::Added, out)?;
                } else {
                    let content = x.content != y.content
                        || x.target != y.target
                        || x.target_b64 != y.target_b64;
                    let meta = x.mode != y.mode
                        || x.uid != y.uid
                        || x.gid != y.gid
                        || x.mtime_ns != y.mtime_ns;
                    if x.kind != NodeKind::Dir && content {
                        out.push(DiffEntry {
                            change: Change::Modified,
                            path: path.clone(),
                        });
                    } else if meta {
                        out.push(DiffEntry {
                            change: Change::Metadata,
                            path: path.clone(),
                        });
                    }
                    if x.kind == NodeKind::Dir {
                        diff_trees(repo, x.subtree.as_ref(), y.subtree.as_ref(), &path, out)?;
                    }
                }
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

fn walk_all(
    repo: &Repository,
    n: &Node,
    prefix: &str,
    change: Change,
    out: &mut Vec<DiffEntry>,
) -> Result<()> {
    let path = join(prefix, &n.name);
    out.push(DiffEntry {
        change,
        path: path.clone(),
    });
    if let (NodeKind::Dir, Some(sub)) = (n.kind, &n.subtree) {
        for c in repo.load_tree(sub)?.nodes {
            walk_all(repo, &c, &path, change, out)?;
        }
    }
    Ok(())
}
