//! The audit log (SPEC SEC-4): every admin call that changes something,
//! and every refused call, as one JSON line in `STATE_DIR/audit.jsonl`:
//! who (user and role), what (the call and its arguments), the outcome and
//! the time. Lines are hash-chained (each holds the SHA-256 of the previous
//! line's hash and its own content) and the controller keeps the newest
//! (seq, hash) in its catalog, so an edited, removed or reordered entry,
//! and a log cut short, are found by [`verify`]. The file is plain JSON
//! lines so `jq` and log shippers read it without the controller.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Arguments are kept to this many bytes (a policy document can be long).
const MAX_ARGS: usize = 2048;

use cairn_repo::audit::genesis;
pub use cairn_repo::audit::{Entry, Head, Verdict};

pub struct AuditLog {
    path: PathBuf,
    head: Mutex<Head>,
    /// Refusals of certificates that are no user's (an agent's, a revoked
    /// one) are written at most this often, so a hostile agent cannot fill
    /// the log or the disk; the rest are only counted in the service log.
    strangers: governor::DefaultDirectRateLimiter,
}

/// What one call did, for [`AuditLog::append`].
pub struct Record<'a> {
    pub time: i64,
    pub who: &'a str,
    pub role: &'a str,
    pub action: &'a str,
    pub args: String,
    pub outcome: String,
}

/// A request's arguments as the log keeps them: its debug form, bounded.
pub fn args(req: &impl std::fmt::Debug) -> String {
    let mut s = format!("{req:?}");
    if s.len() > MAX_ARGS {
        let mut cut = MAX_ARGS;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

impl AuditLog {
    /// Opens the log at `path`, continuing from `head` (the catalog's record
    /// of the newest entry).
    pub fn open(path: &Path, head: Head) -> AuditLog {
        let per_minute = std::num::NonZeroU32::new(60).expect("non-zero");
        AuditLog {
            path: path.to_path_buf(),
            head: Mutex::new(head),
            strangers: governor::RateLimiter::direct(governor::Quota::per_minute(per_minute)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a refusal of a certificate that is no user's may be written
    /// now (at most 60 a minute).
    pub fn admit_stranger(&self) -> bool {
        self.strangers.check().is_ok()
    }

    /// Appends one entry (durable when this returns); `keep_head` stores
    /// the new head (in the catalog) before the next entry may be written.
    pub fn append(
        &self,
        r: Record,
        keep_head: impl FnOnce(&Head) -> std::io::Result<()>,
    ) -> std::io::Result<Head> {
        let mut head = self.head.lock().unwrap();
        let mut e = Entry {
            seq: head.seq + 1,
            time: r.time,
            who: r.who.into(),
            role: r.role.into(),
            action: r.action.into(),
            args: r.args,
            outcome: r.outcome,
            prev: if head.hash.is_empty() {
                genesis()
            } else {
                head.hash.clone()
            },
            hash: String::new(),
        };
        e.hash = e.digest();
        let mut line = serde_json::to_vec(&e).expect("json");
        line.push(b'\n');
        // Opened per entry, so a rotated or replaced file is followed.
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode_private()
            .open(&self.path)?;
        f.write_all(&line)?;
        f.sync_data()?;
        *head = Head {
            seq: e.seq,
            hash: e.hash,
        };
        keep_head(&head)?;
        Ok(head.clone())
    }

    /// Entries at or after `since` (unix seconds), oldest first; at most
    /// `limit` of the newest (0: all).
    pub fn list(&self, since: i64, limit: usize) -> std::io::Result<Vec<Entry>> {
        let mut out: Vec<Entry> = read_lines(&self.path)?
            .into_iter()
            .filter_map(|(_, l)| serde_json::from_str::<Entry>(&l).ok())
            .filter(|e| e.time >= since)
            .collect();
        if limit > 0 && out.len() > limit {
            out.drain(..out.len() - limit);
        }
        Ok(out)
    }

    /// Checks the chain against itself and the catalog's head.
    pub fn verify(&self) -> std::io::Result<Verdict> {
        let head = self.head.lock().unwrap().clone();
        Ok(verify_lines(&read_lines(&self.path)?, &head))
    }

    /// [`AuditLog::verify`], then the copy in the repository (its lines, as
    /// [`cairn_repo::Repository::audit_lines`] reads them): it must be a
    /// sound chain whose every entry is the local one.
    pub fn verify_with_mirror(&self, mirror: &[(String, String)]) -> std::io::Result<Verdict> {
        let local = self.verify()?;
        if local.problem.is_some() {
            return Ok(local);
        }
        let copy = cairn_repo::audit::verify(mirror, None);
        if let Some(p) = copy.problem {
            return Ok(Verdict {
                entries: local.entries,
                problem: Some(format!("the copy in the repository: {p}")),
            });
        }
        let hashes: std::collections::HashMap<u64, String> = read_lines(&self.path)?
            .into_iter()
            .filter_map(|(_, l)| serde_json::from_str::<Entry>(&l).ok())
            .map(|e| (e.seq, e.hash))
            .collect();
        for (at, line) in mirror {
            let e: Entry = serde_json::from_str(line).expect("verified above");
            if hashes.get(&e.seq) != Some(&e.hash) {
                return Ok(Verdict {
                    entries: local.entries,
                    problem: Some(format!(
                        "entry {} differs from its copy in the repository ({at}): the local log was rewritten",
                        e.seq
                    )),
                });
            }
        }
        Ok(local)
    }

    /// The newest entry written.
    pub fn head(&self) -> Head {
        self.head.lock().unwrap().clone()
    }

    /// Copies the entries after seq `mirrored` into the repository as one
    /// segment; returns the newest seq now there.
    pub fn mirror(&self, repo: &cairn_repo::Repository, mirrored: u64) -> anyhow::Result<u64> {
        let mut body = Vec::new();
        let (mut first, mut last) = (0, mirrored);
        for (_, line) in read_lines(&self.path)? {
            let Ok(e) = serde_json::from_str::<Entry>(&line) else {
                continue;
            };
            if e.seq > last {
                first = if first == 0 { e.seq } else { first };
                last = e.seq;
                body.extend_from_slice(line.as_bytes());
                body.push(b'\n');
            }
        }
        if first > 0 {
            repo.put_audit_segment(first, last, &body)?;
        }
        Ok(last)
    }
}

trait ModePrivate {
    fn mode_private(&mut self) -> &mut Self;
}

impl ModePrivate for std::fs::OpenOptions {
    fn mode_private(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

fn read_lines(path: &Path) -> std::io::Result<Vec<(usize, String)>> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    std::io::BufReader::new(f)
        .lines()
        .enumerate()
        .map(|(n, l)| l.map(|l| (n + 1, l)))
        .filter(|r| r.as_ref().map_or(true, |(_, l)| !l.trim().is_empty()))
        .collect()
}

fn verify_lines(lines: &[(usize, String)], head: &Head) -> Verdict {
    let lines: Vec<(String, String)> = lines
        .iter()
        .map(|(n, l)| (format!("line {n}"), l.clone()))
        .collect();
    cairn_repo::audit::verify(&lines, Some(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(action: &str) -> Record<'static> {
        Record {
            time: 1_000,
            who: "alice",
            role: "operator",
            action: "StartBackup",
            args: format!("StartBackupRequest {{ domain: {action:?} }}"),
            outcome: "ok".into(),
        }
    }

    #[test]
    fn any_edit_removal_or_cut_is_found() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("audit.jsonl");
        let log = AuditLog::open(&path, Head::default());
        let mut head = Head::default();
        for d in ["a.test", "b.test", "c.test", "d.test"] {
            head = log.append(rec(d), |_| Ok(())).unwrap();
        }
        assert_eq!(
            log.verify().unwrap(),
            Verdict {
                entries: 4,
                problem: None
            }
        );
        // A reopened log continues the chain from the catalog's head.
        let log = AuditLog::open(&path, head.clone());
        log.append(rec("e.test"), |_| Ok(())).unwrap();
        assert_eq!(log.verify().unwrap().problem, None);
        assert_eq!(log.list(0, 2).unwrap()[1].seq, 5);
        let good = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = good.lines().collect();
        let check = |text: String| {
            std::fs::write(&path, text).unwrap();
            log.verify().unwrap().problem.unwrap_or_default()
        };
        assert!(check(good.replace("c.test", "x.test")).contains("entry 3 (line 3) was edited"));
        let mut removed = lines.clone();
        removed.remove(1);
        assert!(check(removed.join("\n")).contains("entries removed or reordered"));
        assert!(check(lines[..4].join("\n")).contains("entries removed from the end"));
        let mut swapped = lines.clone();
        swapped.swap(1, 2);
        assert!(!check(swapped.join("\n")).is_empty());
        assert!(check(good.replacen("{", "[", 1)).contains("line 1 is not an audit entry"));
        // Rewriting the whole chain from an edit on is caught by the head.
        std::fs::write(&path, "").unwrap();
        let forged = AuditLog::open(&path, Head::default());
        for d in ["a.test", "b.test", "z.test", "d.test", "e.test"] {
            forged.append(rec(d), |_| Ok(())).unwrap();
        }
        assert!(log
            .verify()
            .unwrap()
            .problem
            .unwrap()
            .contains("differs from the one the controller wrote"));
        std::fs::write(&path, good).unwrap();
        assert_eq!(log.verify().unwrap().problem, None);
    }

    #[test]
    fn long_arguments_are_cut() {
        let a = args(&"é".repeat(5_000));
        assert!(a.len() <= MAX_ARGS + 3 && a.ends_with('…'));
    }
}
