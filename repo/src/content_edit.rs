//! A stream's blob list stored as edits of the same stream's list in an
//! earlier tree.
//!
//! A database dump is one long stream of row-sized blobs: a shop's is 13,000
//! ids, 430 KB of list, rewritten every day although a day changes a quarter
//! of its blobs. A dump's node may instead name the tree of an earlier dump
//! of the same site (`base`) and list runs copied from the same-named node
//! there and ids added between them. `Repository::load_tree` resolves it, so
//! every reader sees a plain `content`; the walk that marks blobs live
//! (`Repository::reachable`) keeps the base trees, not what they list.
//!
//! # Layout (format v1.1)
//! Node field `content_edit`: `{"base": tree id, "edits": [Edit…]}` where an
//! edit is `[from, len]` (copy `len` ids of the base list from `from`) or
//! `["id"…]` (add these ids). Copies run forward through the base list and
//! never overlap, so a resolved list is no longer than the base list plus
//! the ids the edits add: a hostile tree cannot make a reader build a list
//! larger than the bytes it sent. A base may itself be edited, at most
//! `MAX_CHAIN` deep.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::Id;

/// The deepest chain of edited lists a reader follows.
pub const MAX_CHAIN: usize = 32;
/// A writer edits a list whose base chain is shorter than this, else it
/// writes the list whole: restores follow at most this many trees, and a
/// whole list now and then lets gc drop old trees.
pub const WRITE_CHAIN: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentEdit {
    /// The tree holding the base list, under this node's name.
    pub base: Id,
    pub edits: Vec<Edit>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Edit {
    Copy(u64, u64),
    Add(Vec<Id>),
}

/// The edits that turn `base` into `new`: each id is copied from the first
/// place at or after the previous copy where the base has it, else added.
pub fn diff(base: &[Id], new: &[Id]) -> Vec<Edit> {
    let mut at: HashMap<&Id, Vec<usize>> = HashMap::new();
    for (i, id) in base.iter().enumerate() {
        at.entry(id).or_default().push(i);
    }
    let mut edits = Vec::new();
    let mut next = 0usize; // first base position a copy may use
    let mut i = 0;
    while i < new.len() {
        let from = at.get(&new[i]).and_then(|ps| {
            let k = ps.partition_point(|&p| p < next);
            ps.get(k).copied()
        });
        match from {
            Some(from) => {
                let mut len = 1;
                while i + len < new.len()
                    && from + len < base.len()
                    && base[from + len] == new[i + len]
                {
                    len += 1;
                }
                edits.push(Edit::Copy(from as u64, len as u64));
                next = from + len;
                i += len;
            }
            None => {
                match edits.last_mut() {
                    Some(Edit::Add(ids)) => ids.push(new[i]),
                    _ => edits.push(Edit::Add(vec![new[i]])),
                }
                i += 1;
            }
        }
    }
    edits
}

/// The list `edits` make of `base`; `what` names the node for errors.
pub fn apply(base: &[Id], edits: &[Edit], what: &str) -> Result<Vec<Id>> {
    let bad = |why: String| Error::corrupt(what.to_string(), why);
    let mut out = Vec::new();
    let mut next = 0u64;
    for e in edits {
        match e {
            Edit::Copy(from, len) => {
                let end = from
                    .checked_add(*len)
                    .filter(|&end| *from >= next && *len > 0 && end <= base.len() as u64)
                    .ok_or_else(|| {
                        bad(format!(
                            "edit copies ids {from}+{len}: outside the base list of {} or behind an \
                             earlier copy",
                            base.len()
                        ))
                    })?;
                out.extend_from_slice(&base[*from as usize..end as usize]);
                next = end;
            }
            Edit::Add(ids) => out.extend_from_slice(ids),
        }
    }
    Ok(out)
}

/// Bytes the edits take in a tree, roughly as the whole list would.
pub fn encoded_len(edits: &[Edit]) -> usize {
    edits
        .iter()
        .map(|e| match e {
            Edit::Copy(..) => 16,
            Edit::Add(ids) => 3 + ids.len() * 67,
        })
        .sum()
}

/// Bytes a whole list of `n` ids takes in a tree.
pub fn whole_len(n: usize) -> usize {
    n * 67
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u8) -> Id {
        Id([n; 32])
    }

    #[test]
    fn a_day_of_scattered_changes_costs_its_changed_ids() {
        let base: Vec<Id> = (0..200).map(|i| id(i as u8)).collect();
        let mut new = base.clone();
        new[10] = id(250);
        new[100] = id(251);
        new.insert(150, id(252));
        new.push(id(253));
        let edits = diff(&base, &new);
        assert_eq!(apply(&base, &edits, "t").unwrap(), new);
        let added: usize = edits
            .iter()
            .map(|e| match e {
                Edit::Add(ids) => ids.len(),
                Edit::Copy(..) => 0,
            })
            .sum();
        assert_eq!(added, 4);
        assert!(encoded_len(&edits) < whole_len(new.len()) / 10);
    }

    #[test]
    fn copies_that_overlap_run_backwards_or_past_the_end_are_refused() {
        let base: Vec<Id> = (0..10).map(id).collect();
        for edits in [
            vec![Edit::Copy(0, 5), Edit::Copy(4, 2)],
            vec![Edit::Copy(5, 1), Edit::Copy(0, 1)],
            vec![Edit::Copy(8, 3)],
            vec![Edit::Copy(u64::MAX, 2)],
            vec![Edit::Copy(3, 0)],
        ] {
            let err = apply(&base, &edits, "db/shop.sql").unwrap_err().to_string();
            assert!(
                err.contains("db/shop.sql") && err.contains("base list"),
                "{err}"
            );
        }
    }

    #[test]
    fn edits_survive_their_json_form() {
        let edits = vec![
            Edit::Copy(0, 3),
            Edit::Add(vec![id(7), id(8)]),
            Edit::Copy(5, 1),
        ];
        let json = serde_json::to_string(&edits).unwrap();
        assert!(json.starts_with("[[0,3],[\""), "{json}");
        assert_eq!(serde_json::from_str::<Vec<Edit>>(&json).unwrap(), edits);
    }

    proptest! {
        #[test]
        fn any_list_rebuilds_from_any_base(
            base in proptest::collection::vec(0u8..40, 0..200),
            new in proptest::collection::vec(0u8..60, 0..200),
        ) {
            let base: Vec<Id> = base.into_iter().map(id).collect();
            let new: Vec<Id> = new.into_iter().map(id).collect();
            let edits = diff(&base, &new);
            prop_assert_eq!(apply(&base, &edits, "t").unwrap(), new);
        }
    }
}
