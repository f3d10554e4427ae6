//! The audit log's format and its mirror in the repository (SPEC SEC-4).
//!
//! The controller writes each admin action as one hash-chained JSON line
//! (see the controller's `audit` module) and copies new lines into the
//! repository as encrypted segments `audit/{first seq}-{last seq}`, so the
//! record of who did what outlives the controller's disk and can be read
//! and checked with `cairnctl repo audit` and the passphrase alone.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::repository::Repository;

/// One admin action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub time: i64,
    pub who: String,
    pub role: String,
    /// The AdminService call.
    pub action: String,
    pub args: String,
    /// `ok`, `refused: …` or `failed: …`.
    pub outcome: String,
    /// The previous entry's hash (64 zeros for the first).
    pub prev: String,
    pub hash: String,
}

impl Entry {
    /// SHA-256 of the entry with its hash left empty.
    pub fn digest(&self) -> String {
        let unsigned = Entry {
            hash: String::new(),
            ..self.clone()
        };
        let body = serde_json::to_vec(&unsigned).expect("json");
        hex::encode(Sha256::digest(&body))
    }
}

/// Where a chain stands: its newest entry's seq and hash.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

/// The `prev` of the first entry.
pub fn genesis() -> String {
    "0".repeat(64)
}

/// What a check of a chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Entries found intact, from the first.
    pub entries: u64,
    /// None: intact.
    pub problem: Option<String>,
}

/// Checks a chain given as (where, line) pairs, oldest first, and, when
/// known, against the head its writer recorded (a cut tail is otherwise
/// invisible).
pub fn verify(lines: &[(String, String)], head: Option<&Head>) -> Verdict {
    let mut prev = genesis();
    let mut seq = 0u64;
    let bad = |entries: u64, p: String| Verdict {
        entries,
        problem: Some(p),
    };
    for (at, line) in lines {
        let e: Entry = match serde_json::from_str(line) {
            Ok(e) => e,
            Err(err) => return bad(seq, format!("{at} is not an audit entry: {err}")),
        };
        if e.seq != seq + 1 {
            return bad(
                seq,
                format!(
                    "{at} holds entry {} where entry {} belongs: entries removed or reordered",
                    e.seq,
                    seq + 1
                ),
            );
        }
        if e.prev != prev {
            return bad(
                seq,
                format!(
                    "entry {} does not follow entry {seq}: the chain is broken",
                    e.seq
                ),
            );
        }
        if e.digest() != e.hash {
            return bad(seq, format!("entry {} ({at}) was edited", e.seq));
        }
        seq = e.seq;
        prev = e.hash;
    }
    if let Some(head) = head {
        if seq < head.seq {
            return bad(
                seq,
                format!(
                    "the log ends at entry {seq} but the controller wrote {}: entries removed from the end",
                    head.seq
                ),
            );
        }
        if seq == head.seq && head.seq > 0 && prev != head.hash {
            return bad(
                seq,
                format!("entry {seq} differs from the one the controller wrote"),
            );
        }
    }
    Verdict {
        entries: seq,
        problem: None,
    }
}

/// A mirror segment's name: `audit/{first:020}-{last:020}`.
fn segment_key(first: u64, last: u64) -> String {
    format!("audit/{first:020}-{last:020}")
}

fn parse_segment(key: &str) -> Option<(u64, u64)> {
    let (a, b) = key.strip_prefix("audit/")?.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// A mirror segment is at most this large once opened (a segment holds a
/// minute of entries of at most a few KiB each).
const MAX_SEGMENT: usize = 256 << 20;

impl Repository {
    /// Stores entries `first..=last` (their JSON lines) as one encrypted segment.
    pub fn put_audit_segment(&self, first: u64, last: u64, lines: &[u8]) -> Result<()> {
        let sealed = self.key().seal(lines, 3);
        self.storage().put(&segment_key(first, last), &sealed)?;
        Ok(())
    }

    /// Every mirrored line, oldest first, each with where it was found.
    pub fn audit_lines(&self) -> Result<Vec<(String, String)>> {
        let mut segments: Vec<(u64, u64, String)> = self
            .storage()
            .list("audit/")?
            .into_iter()
            .filter_map(|o| parse_segment(&o.key).map(|(a, b)| (a, b, o.key)))
            .collect();
        segments.sort();
        let mut out = Vec::new();
        for (_, _, key) in segments {
            let plain =
                self.key()
                    .open_bounded(&self.storage().get(&key)?, &key.as_str(), MAX_SEGMENT)?;
            let text =
                String::from_utf8(plain).map_err(|e| Error::corrupt(key.clone(), e.to_string()))?;
            for (n, l) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                out.push((format!("{key} line {}", n + 1), l.to_string()));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<(String, String)> {
        let mut prev = genesis();
        (1..=n)
            .map(|seq| {
                let mut e = Entry {
                    seq,
                    time: 1_000 + seq as i64,
                    who: "alice".into(),
                    role: "operator".into(),
                    action: "StartBackup".into(),
                    args: format!("domain {seq}"),
                    outcome: "ok".into(),
                    prev: prev.clone(),
                    hash: String::new(),
                };
                e.hash = e.digest();
                prev = e.hash.clone();
                (format!("line {seq}"), serde_json::to_string(&e).unwrap())
            })
            .collect()
    }

    #[test]
    fn any_edit_removal_or_cut_is_found() {
        let good = chain(4);
        let head = serde_json::from_str::<Entry>(&good[3].1).unwrap();
        let head = Head {
            seq: 4,
            hash: head.hash,
        };
        assert_eq!(verify(&good, Some(&head)).problem, None);
        let problem = |lines: &[(String, String)]| verify(lines, Some(&head)).problem.unwrap();
        let mut edited = good.clone();
        edited[2].1 = edited[2].1.replace("domain 3", "domain 9");
        assert!(problem(&edited).contains("entry 3 (line 3) was edited"));
        let mut removed = good.clone();
        removed.remove(1);
        assert!(problem(&removed).contains("entries removed or reordered"));
        assert!(problem(&good[..3]).contains("entries removed from the end"));
        assert_eq!(
            verify(&good[..3], None).problem,
            None,
            "no head: a cut is unseen"
        );
        let mut garbled = good.clone();
        garbled[0].1 = garbled[0].1.replacen('{', "[", 1);
        assert!(problem(&garbled).contains("line 1 is not an audit entry"));
    }

    #[test]
    fn segment_names_sort_and_parse() {
        assert_eq!(parse_segment(&segment_key(7, 12)), Some((7, 12)));
        assert!(segment_key(9, 9) < segment_key(10, 10));
        assert_eq!(parse_segment("audit/x-1"), None);
    }
}
