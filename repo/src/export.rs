//! Export of a snapshot (or paths in it) as a portable tar stream (RST-8).

use std::io::Write;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::Repository;
use crate::restore::{lookup, split_path};
use crate::stream::ContentReader;
use crate::tree::{Node, NodeKind};

pub fn export_tar<W: Write>(repo: &Repository, root: &Id, paths: &[String], out: W) -> Result<W> {
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Complete);
    b.follow_symlinks(false);
    if paths.is_empty() {
        append_tree(repo, &mut b, root, "")?;
    } else {
        for p in paths {
            let rel = split_path(p)?.join("/");
            match lookup(repo, root, p)? {
                None => append_tree(repo, &mut b, root, "")?,
                Some(n) => append_node(repo, &mut b, &n, &rel)?,
            }
        }
    }
    b.into_inner().map_err(|e| Error::io("tar stream", e))
}

fn append_tree<W: Write>(
    repo: &Repository,
    b: &mut tar::Builder<W>,
    tree: &Id,
    prefix: &str,
) -> Result<()> {
    for n in repo.load_tree(tree)?.nodes {
        let name = n.name_os()?.to_string_lossy().into_owned();
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        append_node(repo, b, &n, &path)?;
    }
    Ok(())
}

fn append_node<W: Write>(
    repo: &Repository,
    b: &mut tar::Builder<W>,
    n: &Node,
    path: &str,
) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_mode(n.mode);
    h.set_uid(n.uid as u64);
    h.set_gid(n.gid as u64);
    h.set_mtime(n.mtime_ns.div_euclid(1_000_000_000).max(0) as u64);
    let io = |e| Error::io(format!("tar entry {path}"), e);
    match n.kind {
        NodeKind::Dir => {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            b.append_data(&mut h, format!("{path}/"), std::io::empty())
                .map_err(io)?;
            if let Some(sub) = &n.subtree {
                append_tree(repo, b, sub, path)?;
            }
        }
        NodeKind::Symlink => {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, path, n.target_os()?).map_err(io)?;
        }
        NodeKind::File => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(n.size);
            let r = ContentReader::new(repo, n.content.iter().copied());
            b.append_data(&mut h, path, r).map_err(io)?;
        }
        NodeKind::Fifo | NodeKind::Char | NodeKind::Block => {
            h.set_entry_type(match n.kind {
                NodeKind::Fifo => tar::EntryType::Fifo,
                NodeKind::Char => tar::EntryType::Char,
                _ => tar::EntryType::Block,
            });
            h.set_size(0);
            // Linux's dev_t: major in bits 8-19 and 32-63, minor in 0-7 and 20-31.
            let major = ((n.rdev >> 8) & 0xfff) | ((n.rdev >> 32) & 0xffff_f000);
            let minor = (n.rdev & 0xff) | ((n.rdev >> 12) & 0xffff_ff00);
            h.set_device_major(major as u32).map_err(io)?;
            h.set_device_minor(minor as u32).map_err(io)?;
            b.append_data(&mut h, path, std::io::empty()).map_err(io)?;
        }
    }
    Ok(())
}
