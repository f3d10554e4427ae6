//! Trees: one blob per directory, listing its entries sorted by name.
//!
//! # Layout (format v1)
//! A tree blob's plaintext is JSON `{"nodes":[Node…]}` with nodes sorted by name
//! bytes and names unique. Node fields are below; optional ones are omitted when
//! empty. Names and symlink targets that are not UTF-8 are carried in
//! `name_b64`/`target_b64` (base64 of the raw bytes), with a lossy `name` beside.
//! Format v1.1 adds `content_edit` (see `content_edit`), which a v1 reader
//! refuses as an unknown field.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::Id;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    /// A named pipe.
    Fifo,
    /// A character device node (its number in `rdev`).
    Char,
    /// A block device node (its number in `rdev`).
    Block,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_b64: Option<String>,
    pub kind: NodeKind,
    /// Permission bits (including setuid/setgid/sticky), `st_mode & 0o7777`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Change time, used only for change detection.
    pub ctime_ns: i64,
    pub inode: u64,
    pub device: u64,
    /// Hard-link count when the file was read; >1 means restore re-links.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub links: u64,
    #[serde(default)]
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<Id>,
    /// `content` stored as edits of an earlier tree's list (a file node
    /// with empty `content`); `Repository::load_tree` resolves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_edit: Option<crate::content_edit::ContentEdit>,
    /// The trees a resolved `content` was read from, nearest first: they
    /// stay as long as this node does. Never stored.
    #[serde(skip)]
    pub bases: Vec<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_b64: Option<String>,
    /// A device node's number (`st_rdev`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rdev: u64,
    /// Extended attributes (POSIX ACLs among them) of a file or directory:
    /// name → base64 value.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub xattrs: crate::xattr::Xattrs,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn one() -> u64 {
    1
}

fn is_one(n: &u64) -> bool {
    *n <= 1
}

impl Node {
    /// A node with this name and kind and every other field empty.
    pub fn new(name: &OsStr, kind: NodeKind) -> Node {
        let mut n = Node {
            name: String::new(),
            name_b64: None,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            inode: 0,
            device: 0,
            links: 1,
            size: 0,
            content: Vec::new(),
            content_edit: None,
            bases: Vec::new(),
            subtree: None,
            target: None,
            target_b64: None,
            rdev: 0,
            xattrs: Default::default(),
        };
        n.set_name(name);
        n
    }

    pub fn set_name(&mut self, name: &OsStr) {
        match name.to_str() {
            Some(s) => {
                self.name = s.to_string();
                self.name_b64 = None;
            }
            None => {
                self.name = name.to_string_lossy().into_owned();
                self.name_b64 = Some(B64.encode(name.as_bytes()));
            }
        }
    }

    pub fn name_os(&self) -> Result<OsString> {
        decode_os(&self.name, self.name_b64.as_deref())
    }

    pub fn set_target(&mut self, target: &OsStr) {
        match target.to_str() {
            Some(s) => self.target = Some(s.to_string()),
            None => {
                self.target = Some(target.to_string_lossy().into_owned());
                self.target_b64 = Some(B64.encode(target.as_bytes()));
            }
        }
    }

    pub fn target_os(&self) -> Result<OsString> {
        decode_os(
            self.target.as_deref().unwrap_or(""),
            self.target_b64.as_deref(),
        )
    }
}

fn decode_os(s: &str, b64: Option<&str>) -> Result<OsString> {
    match b64 {
        Some(b) => {
            Ok(OsString::from_vec(B64.decode(b).map_err(|e| {
                Error::corrupt("tree node name", e.to_string())
            })?))
        }
        None => Ok(OsString::from(s)),
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("trees serialize")
    }

    /// Parses a tree and checks every name: no empty names, `.`, `..`, `/` or NUL,
    /// and no duplicates (a duplicate could smuggle a write through a symlink).
    pub fn from_bytes(id: &Id, b: &[u8]) -> Result<Tree> {
        let t: Tree = serde_json::from_slice(b)
            .map_err(|e| Error::corrupt(format!("tree {id}"), e.to_string()))?;
        let mut prev: Option<OsString> = None;
        for n in &t.nodes {
            let name = n.name_os()?;
            let bytes = name.as_bytes();
            let bad = if bytes.is_empty() {
                Some("empty name")
            } else if bytes == b"." || bytes == b".." {
                Some("dot entry")
            } else if bytes.contains(&b'/') {
                Some("name contains '/' (absolute or nested path)")
            } else if bytes.contains(&0) {
                Some("name contains NUL")
            } else {
                None
            };
            let bad = bad.or(match &n.content_edit {
                Some(_) if n.kind != NodeKind::File => Some("edited blob list on a non-file"),
                Some(_) if !n.content.is_empty() => Some("both a blob list and edits of one"),
                _ => None,
            });
            if let Some(reason) = bad {
                return Err(Error::HostileEntry {
                    dir: format!("tree {id}"),
                    name: n.name.clone(),
                    reason: reason.into(),
                });
            }
            if let Some(p) = &prev {
                if p.as_bytes() >= bytes {
                    return Err(Error::HostileEntry {
                        dir: format!("tree {id}"),
                        name: n.name.clone(),
                        reason: "entries unsorted or duplicated".into(),
                    });
                }
            }
            prev = Some(name);
        }
        Ok(t)
    }

    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.position(name).map(|i| &self.nodes[i])
    }

    /// The node named `name`, taken out of the tree.
    pub fn into_node(mut self, name: &[u8]) -> Option<Node> {
        self.position(name).map(|i| self.nodes.swap_remove(i))
    }

    fn position(&self, name: &[u8]) -> Option<usize> {
        self.nodes
            .binary_search_by(|n| {
                n.name_os()
                    .map(|o| o.as_bytes().cmp(name))
                    .unwrap_or(std::cmp::Ordering::Less)
            })
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Node {
        // Bypass set_name: hostile names must reach the checks as they are.
        Node {
            name: name.into(),
            mode: 0o644,
            ..Node::new(OsStr::new("x"), NodeKind::File)
        }
    }

    #[test]
    fn hostile_names_are_refused() {
        for bad in ["..", ".", "", "a/b", "/etc", "x\0y"] {
            let t = Tree {
                nodes: vec![node(bad)],
            };
            assert!(
                matches!(
                    Tree::from_bytes(&Id::default(), &t.to_bytes()),
                    Err(Error::HostileEntry { .. })
                ),
                "{bad:?} must be refused"
            );
        }
        let dup = Tree {
            nodes: vec![node("a"), node("a")],
        };
        assert!(Tree::from_bytes(&Id::default(), &dup.to_bytes()).is_err());
        let ok = Tree {
            nodes: vec![node("a"), node("b")],
        };
        assert_eq!(
            Tree::from_bytes(&Id::default(), &ok.to_bytes()).unwrap(),
            ok
        );
        assert_eq!(ok.find(b"b").unwrap().name, "b");
    }

    #[test]
    fn non_utf8_names_round_trip() {
        let raw = OsStr::from_bytes(b"caf\xe9.txt");
        let mut n = node("x");
        n.set_name(raw);
        assert_eq!(n.name_os().unwrap(), raw);
    }

    proptest::proptest! {
        /// Trees as JSON with arbitrary names (raw bytes, base64 or not):
        /// whatever parses has names safe to create beneath a directory.
        #[test]
        fn parsed_trees_only_hold_safe_names(
            names in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..12), 0..6),
            encoded in proptest::collection::vec(proptest::bool::ANY, 6),
        ) {
            let nodes: Vec<Node> = names
                .iter()
                .zip(&encoded)
                .map(|(raw, b64)| {
                    let mut n = node("x");
                    if *b64 {
                        n.set_name(OsStr::from_bytes(raw));
                    } else {
                        n.name = String::from_utf8_lossy(raw).into_owned();
                    }
                    n
                })
                .collect();
            let bytes = Tree { nodes }.to_bytes();
            if let Ok(t) = Tree::from_bytes(&Id::default(), &bytes) {
                let mut prev: Option<Vec<u8>> = None;
                for n in &t.nodes {
                    let name = n.name_os().unwrap().as_bytes().to_vec();
                    proptest::prop_assert!(!name.is_empty() && name != b"." && name != b"..");
                    proptest::prop_assert!(!name.contains(&b'/') && !name.contains(&0));
                    proptest::prop_assert!(prev.as_ref().is_none_or(|p| *p < name));
                    prev = Some(name);
                }
            }
        }

        #[test]
        fn tree_parsing_survives_any_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = Tree::from_bytes(&Id::default(), &bytes);
        }
    }
}
