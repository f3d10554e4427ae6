//! What a restore request means: which snapshots (one, or a run's files and
//! database) and which job each becomes. Checked in full before any job is
//! queued, so a bad request changes nothing.

use crate::catalog::{JobSpec, SnapshotRecord};

/// A restore as the operator asked for it.
#[derive(Debug, Default, Clone)]
pub struct Ask {
    /// A snapshot id or a run id, or a unique prefix of either.
    pub id: String,
    pub target: String,
    pub paths: Vec<String>,
    pub files_only: bool,
    pub db_only: bool,
    pub tables: Vec<String>,
    pub into_database: String,
    pub test: bool,
    /// Files over the live target: staged, verified, swapped.
    pub in_place: bool,
    /// Files: only a preview of what a restore over the target would change.
    pub dry_run: bool,
    /// Instead of `id`: this domain as it was at `at` (unix seconds).
    pub domain: String,
    pub at: i64,
    /// `target` is the live site's directory the controller filled in for
    /// an in-place restore or preview: ignored when only a database restores.
    pub default_target: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum PlanError {
    NotFound(String),
    Invalid(String),
}

/// Most tables one restore may name.
const MAX_TABLES: usize = 1000;

/// The snapshots `ask` names and the restore job of each: files first.
pub fn plan<'a>(
    snaps: &'a [SnapshotRecord],
    ask: &Ask,
    now: i64,
) -> Result<Vec<(&'a SnapshotRecord, JobSpec)>, PlanError> {
    use PlanError::*;
    if ask.files_only && ask.db_only {
        return Err(Invalid(
            "--files-only and --db-only exclude each other".into(),
        ));
    }
    if ask.at != 0 {
        if !ask.id.is_empty() {
            return Err(Invalid(
                "name a snapshot or a run, or a domain and a time, not both".into(),
            ));
        }
        if ask.at > now {
            return Err(Invalid(format!(
                "{} is in the future (it is {} here): check the time zone",
                crate::fmt_time(ask.at),
                crate::fmt_time(now)
            )));
        }
        let chosen = at_time(snaps, ask)?;
        let log = match chosen.iter().find(|s| s.content == "database") {
            Some(dump) => shipped_log(snaps, &dump.agent_id, ask.at)?,
            None => None,
        };
        let mut planned = checked(chosen, ask)?;
        for (s, spec) in &mut planned {
            if let (Some(log), "database") = (log, s.content.as_str()) {
                spec.log_snapshot_id = log.id.clone();
                spec.stop_at = ask.at;
            }
        }
        return Ok(planned);
    }
    if ask.id.is_empty() {
        return Err(Invalid("name a snapshot or a run".into()));
    }
    let by_id: Vec<&SnapshotRecord> = snaps
        .iter()
        .filter(|s| s.id.starts_with(&ask.id) && s.content != "binlog")
        .collect();
    let chosen: Vec<&SnapshotRecord> = match by_id.as_slice() {
        [one] => {
            let db = one.content == "database";
            if ask.files_only && db || ask.db_only && !db {
                return Err(Invalid(format!(
                    "snapshot {} holds {}, not {}",
                    one.id,
                    if db { "a database" } else { "files" },
                    if db { "files" } else { "a database" }
                )));
            }
            vec![one]
        }
        [_, _, ..] => {
            return Err(Invalid(format!(
                "snapshot prefix {:?} is ambiguous",
                ask.id
            )))
        }
        [] => run_of(snaps, ask)?,
    };
    checked(chosen, ask)
}

/// Checks the request against the snapshots chosen and makes their jobs.
fn checked<'a>(
    chosen: Vec<&'a SnapshotRecord>,
    ask: &Ask,
) -> Result<Vec<(&'a SnapshotRecord, JobSpec)>, PlanError> {
    use PlanError::*;
    let mut chosen = chosen;
    if ask.dry_run {
        // A preview compares files with a live tree; a database has none.
        chosen.retain(|s| s.content != "database");
        if chosen.is_empty() {
            return Err(Invalid(
                "--dry-run previews a file restore; this is a database snapshot".into(),
            ));
        }
    }
    if ask.in_place && !ask.tables.is_empty() {
        return Err(Invalid(
            "--in-place swaps whole databases; --table restores into the live database directly"
                .into(),
        ));
    }
    if (ask.in_place || ask.dry_run) && !ask.paths.is_empty() {
        return Err(Invalid(
            "--in-place and --dry-run cover the whole site; restore --path into another --target"
                .into(),
        ));
    }
    let files = chosen.iter().any(|s| s.content != "database");
    let database = chosen.iter().any(|s| s.content == "database");
    if !database && (!ask.tables.is_empty() || !ask.into_database.is_empty()) {
        return Err(Invalid(
            "--table and --into-database apply to database snapshots".into(),
        ));
    }
    if ask.test && (!ask.target.is_empty() || ask.in_place || ask.dry_run) {
        return Err(Invalid(
            "--test restores into a scratch directory and database on the agent and removes them; it takes no --target, --in-place or --dry-run".into(),
        ));
    }
    if files && !ask.test && !ask.target.starts_with('/') {
        return Err(Invalid(if ask.target.is_empty() {
            "restoring files needs --target, an absolute directory on the agent".into()
        } else {
            "the target must be an absolute directory on the agent".into()
        }));
    }
    if !files && !ask.target.is_empty() && !ask.default_target {
        return Err(Invalid(
            "a database restore takes no --target (use --into-database NAME)".into(),
        ));
    }
    if !files && !ask.paths.is_empty() {
        return Err(Invalid("--path applies to file snapshots".into()));
    }
    if ask.test && !ask.into_database.is_empty() {
        return Err(Invalid(
            "--test restores into a scratch database it drops; it takes no --into-database".into(),
        ));
    }
    if !ask.into_database.is_empty() {
        check_database_name(&ask.into_database).map_err(Invalid)?;
    }
    if ask.tables.len() > MAX_TABLES {
        return Err(Invalid(format!("at most {MAX_TABLES} tables per restore")));
    }
    for t in &ask.tables {
        if t.is_empty() || t.len() > 128 || t.chars().any(char::is_control) {
            return Err(Invalid(format!("table name {t:?} is not valid")));
        }
    }
    Ok(chosen
        .into_iter()
        .map(|s| {
            let spec = if s.content == "database" {
                JobSpec {
                    snapshot_id: s.id.clone(),
                    content: "database".into(),
                    tables: ask.tables.clone(),
                    into_database: ask.into_database.clone(),
                    test: ask.test,
                    in_place: ask.in_place,
                    ..Default::default()
                }
            } else {
                JobSpec {
                    snapshot_id: s.id.clone(),
                    target: ask.target.clone(),
                    paths: ask.paths.clone(),
                    test: ask.test,
                    in_place: ask.in_place && !ask.dry_run,
                    dry_run: ask.dry_run,
                    ..Default::default()
                }
            };
            (s, spec)
        })
        .collect())
}

/// A domain as it was at `ask.at`: its newest files and newest dump from
/// then or before (RST-1, RST-2), files first.
fn at_time<'a>(
    snaps: &'a [SnapshotRecord],
    ask: &Ask,
) -> Result<Vec<&'a SnapshotRecord>, PlanError> {
    if ask.domain.is_empty() {
        return Err(PlanError::Invalid(
            "a restore to a time names the domain".into(),
        ));
    }
    let newest = |database: bool| {
        snaps
            .iter()
            .filter(|s| {
                s.domain == ask.domain
                    && s.time <= ask.at
                    && s.content != "binlog"
                    && (s.content == "database") == database
            })
            .max_by_key(|s| s.time)
    };
    let out = files_then_database(ask, newest);
    if out.is_empty() {
        return Err(PlanError::NotFound(format!(
            "domain {:?} has no {}copy from {} or before",
            ask.domain,
            if ask.db_only {
                "database "
            } else if ask.files_only {
                "files "
            } else {
                ""
            },
            crate::fmt_time(ask.at)
        )));
    }
    Ok(out)
}

/// The shipped binary log of `agent` a replay to `at` reads: the newest
/// shipment (each holds the whole spool; the newest holds the most), which
/// must have been made after `at`. None when the agent never shipped one
/// (the dump alone is restored).
fn shipped_log<'a>(
    snaps: &'a [SnapshotRecord],
    agent: &str,
    at: i64,
) -> Result<Option<&'a SnapshotRecord>, PlanError> {
    let newest = snaps
        .iter()
        .filter(|s| s.content == "binlog" && s.agent_id == agent)
        .max_by_key(|s| s.time);
    match newest {
        None => Ok(None),
        Some(s) if s.time > at => Ok(Some(s)),
        Some(s) => Err(PlanError::Invalid(format!(
            "the binary log of this server is shipped up to {}: a restore to {} must wait for the next shipment",
            crate::fmt_time(s.time),
            crate::fmt_time(at)
        ))),
    }
}

/// The snapshots of the one run `ask.id` names, files before database (the
/// newest of each, should a run hold two).
fn run_of<'a>(
    snaps: &'a [SnapshotRecord],
    ask: &Ask,
) -> Result<Vec<&'a SnapshotRecord>, PlanError> {
    let mut runs: Vec<&str> = snaps
        .iter()
        .filter(|s| !s.run_id.is_empty() && s.run_id.starts_with(&ask.id) && s.content != "binlog")
        .map(|s| s.run_id.as_str())
        .collect();
    runs.sort();
    runs.dedup();
    let run = match runs.as_slice() {
        [one] => *one,
        [] => {
            return Err(PlanError::NotFound(format!(
                "no snapshot or run {:?}",
                ask.id
            )))
        }
        _ => {
            return Err(PlanError::Invalid(format!(
                "run prefix {:?} is ambiguous",
                ask.id
            )))
        }
    };
    let newest = |database: bool| {
        snaps
            .iter()
            .filter(|s| s.run_id == run && (s.content == "database") == database)
            .max_by_key(|s| s.time)
    };
    let out = files_then_database(ask, newest);
    if out.is_empty() {
        return Err(PlanError::Invalid(format!(
            "run {run} has no {} snapshot",
            if ask.db_only { "database" } else { "files" }
        )));
    }
    Ok(out)
}

/// The newest files snapshot, then the newest dump (`newest(database)`),
/// of those the request asks for.
fn files_then_database<'a>(
    ask: &Ask,
    newest: impl Fn(bool) -> Option<&'a SnapshotRecord>,
) -> Vec<&'a SnapshotRecord> {
    let mut out = Vec::new();
    if !ask.db_only {
        out.extend(newest(false));
    }
    if !ask.files_only {
        out.extend(newest(true));
    }
    out
}

/// A database to restore into: a plain name (MariaDB, PostgreSQL) or an
/// absolute file path (SQLite). Nothing a client could read as an option
/// or a second statement.
fn check_database_name(name: &str) -> Result<(), String> {
    let plain = name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == '-')
        && !name.starts_with('-');
    let path = name.starts_with('/')
        && name.len() <= 4096
        && !name.split('/').any(|p| p == "..")
        && !name.chars().any(char::is_control);
    if plain || path {
        Ok(())
    } else {
        Err(format!(
            "database name {name:?}: letters, digits, _, $ and - (at most 64), or an absolute path for SQLite"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(id: &str, content: &str, run: &str, time: i64) -> SnapshotRecord {
        SnapshotRecord {
            id: id.into(),
            domain: "x.test".into(),
            agent_id: "a1".into(),
            time,
            kind: "full".into(),
            content: content.into(),
            total_bytes: 1,
            stored_bytes: 1,
            run_id: run.into(),
        }
    }

    fn fleet() -> Vec<SnapshotRecord> {
        vec![
            snap("aaa1", "files", "j00000001", 10),
            snap("bbb1", "database", "j00000001", 11),
            snap("ccc1", "files", "", 12),
            snap("ddd1", "database", "j00000007", 13),
        ]
    }

    fn ask(id: &str) -> Ask {
        Ask {
            id: id.into(),
            target: "/srv/restore".into(),
            ..Default::default()
        }
    }

    fn ids(p: &[(&SnapshotRecord, JobSpec)]) -> Vec<String> {
        p.iter().map(|(s, _)| s.id.clone()).collect()
    }

    #[test]
    fn a_moment_takes_the_newest_copies_before_it_and_the_newest_log_after_it() {
        let log = |id: &str, agent: &str, time| SnapshotRecord {
            domain: String::new(),
            agent_id: agent.into(),
            ..snap(id, "binlog", "", time)
        };
        let mut s = fleet();
        s.extend([
            log("log1", "a1", 12),
            log("log2", "a1", 20),
            log("log9", "a2", 30),
        ]);
        let at = |t| Ask {
            domain: "x.test".into(),
            at: t,
            target: "/srv/restore".into(),
            ..Default::default()
        };
        let p = plan(&s, &at(12), 100).unwrap();
        assert_eq!(ids(&p), ["ccc1", "bbb1"]);
        assert!(p[0].1.log_snapshot_id.is_empty());
        assert_eq!(
            (p[1].1.log_snapshot_id.as_str(), p[1].1.stop_at),
            ("log2", 12)
        );
        let invalid = |s: &[SnapshotRecord], a: Ask| match plan(s, &a, 100) {
            Err(PlanError::Invalid(m)) | Err(PlanError::NotFound(m)) => m,
            Ok(p) => panic!("planned {:?}", ids(&p)),
        };
        assert!(invalid(&s, at(200)).contains("is in the future"));
        assert!(invalid(&s, at(5)).contains("no copy from"));
        assert!(invalid(
            &s,
            Ask {
                id: "aaa1".into(),
                ..at(12)
            }
        )
        .contains("not both"));
        s.retain(|x| x.id != "log2");
        assert!(invalid(&s, at(12)).contains("must wait for the next shipment"));
        // A server that never shipped its log: the dump alone.
        s.retain(|x| x.content != "binlog");
        let p = plan(
            &s,
            &Ask {
                db_only: true,
                target: String::new(),
                ..at(13)
            },
            100,
        )
        .unwrap();
        assert_eq!(ids(&p), ["ddd1"]);
        assert!(p[0].1.log_snapshot_id.is_empty() && p[0].1.stop_at == 0);
        // A shipment is never restored as a snapshot of its own.
        assert!(matches!(
            plan(&s, &ask("log"), 100),
            Err(PlanError::NotFound(_))
        ));
    }

    #[test]
    fn a_run_restores_its_files_then_its_database() {
        let s = fleet();
        let p = plan(&s, &ask("j00000001"), 0).unwrap();
        assert_eq!(ids(&p), ["aaa1", "bbb1"]);
        assert_eq!(p[0].1.target, "/srv/restore");
        assert_eq!(p[1].1.content, "database");
        assert!(p[1].1.target.is_empty(), "a database job carries no target");
        let only_db = plan(
            &s,
            &Ask {
                db_only: true,
                target: String::new(),
                tables: vec!["wp_posts".into()],
                into_database: "copy_db".into(),
                ..ask("j00000001")
            },
            0,
        )
        .unwrap();
        assert_eq!(ids(&only_db), ["bbb1"]);
        assert_eq!(only_db[0].1.tables, ["wp_posts"]);
        assert_eq!(only_db[0].1.into_database, "copy_db");
        let only_files = plan(
            &s,
            &Ask {
                files_only: true,
                ..ask("j00000001")
            },
            0,
        )
        .unwrap();
        assert_eq!(ids(&only_files), ["aaa1"]);
    }

    #[test]
    fn in_place_and_dry_run_cover_a_whole_site_of_files() {
        let s = fleet();
        let in_place = plan(
            &s,
            &Ask {
                in_place: true,
                ..ask("j00000001")
            },
            0,
        )
        .unwrap();
        assert_eq!(ids(&in_place), ["aaa1", "bbb1"]);
        assert!(in_place[0].1.in_place && !in_place[0].1.dry_run);
        assert!(in_place[1].1.in_place, "the database is swapped too");
        let preview = plan(
            &s,
            &Ask {
                in_place: true,
                dry_run: true,
                ..ask("j00000001")
            },
            0,
        )
        .unwrap();
        assert_eq!(ids(&preview), ["aaa1"], "a preview leaves the database out");
        assert!(
            preview[0].1.dry_run && !preview[0].1.in_place,
            "a dry run never swaps"
        );
        let invalid = |a: Ask| match plan(&s, &a, 0) {
            Err(PlanError::Invalid(m)) => m,
            other => panic!("{a:?}: {other:?}"),
        };
        assert!(invalid(Ask {
            dry_run: true,
            target: String::new(),
            ..ask("ddd1")
        })
        .contains("previews a file restore"));
        assert!(invalid(Ask {
            in_place: true,
            paths: vec!["wp-content".into()],
            ..ask("aaa1")
        })
        .contains("whole site"));
    }

    #[test]
    fn bad_requests_name_their_cause() {
        let s = fleet();
        let invalid = |a: Ask| match plan(&s, &a, 0) {
            Err(PlanError::Invalid(m)) => m,
            other => panic!("{a:?}: {other:?}"),
        };
        assert!(invalid(Ask {
            target: String::new(),
            ..ask("j00000001")
        })
        .contains("needs --target"));
        assert!(invalid(Ask {
            files_only: true,
            ..ask("ddd1")
        })
        .contains("holds a database"));
        assert!(invalid(Ask {
            tables: vec!["t".into()],
            ..ask("ccc1")
        })
        .contains("apply to database"));
        assert!(invalid(Ask {
            test: true,
            ..ask("ccc1")
        })
        .contains("takes no --target"));
        assert!(invalid(ask("ddd1")).contains("takes no --target"));
        assert!(invalid(Ask {
            target: String::new(),
            into_database: "x; DROP DATABASE y".into(),
            ..ask("ddd1")
        })
        .contains("database name"));
        assert!(invalid(Ask {
            target: String::new(),
            into_database: "--host=evil".into(),
            ..ask("ddd1")
        })
        .contains("database name"));
        assert!(invalid(Ask {
            target: String::new(),
            test: true,
            into_database: "x".into(),
            ..ask("ddd1")
        })
        .contains("scratch"));
        assert!(invalid(Ask {
            db_only: true,
            files_only: true,
            ..ask("aaa1")
        })
        .contains("exclude each other"));
        assert!(invalid(ask("j0000000")).contains("ambiguous"));
        assert_eq!(
            plan(&s, &ask("zzz"), 0).unwrap_err(),
            PlanError::NotFound("no snapshot or run \"zzz\"".into())
        );
    }

    #[test]
    fn a_lone_database_snapshot_restores_without_a_target() {
        let s = fleet();
        let p = plan(
            &s,
            &Ask {
                target: String::new(),
                test: true,
                ..ask("ddd")
            },
            0,
        )
        .unwrap();
        assert_eq!(ids(&p), ["ddd1"]);
        assert!(p[0].1.test);
    }
}
