//! Executors for the jobs a controller sends: file backups and restores,
//! against the repository as [`crate::remote`] presents it.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use cairn_proto::agent::v1 as pb;
use cairn_repo::backup::{BackupOptions, Progress};
use cairn_repo::exclude::Excludes;
use cairn_repo::id::Id;
use cairn_repo::repository::{Access, Repository};
use cairn_repo::snapshot::{Content, Kind, Snapshot};

use crate::config::{BinlogConfig, Config};
use cairn_repo::stage::{self, Journal};
use tokio::runtime::Handle;

use crate::discover::Site;
use crate::remote::{Client, ControllerKnows, Direct, JobStorage};

/// How a job ended well.
#[derive(Debug, Default)]
pub struct Done {
    /// The snapshot a backup committed; empty for restores.
    pub snapshot_id: String,
    /// One line for the job's record (what a restore did).
    pub summary: Option<String>,
    /// JSON for the job's record: a dry run's preview, a rollback point.
    pub report: Option<String>,
}

/// Where in-place restores keep their journal and rollback records.
pub fn journal(state_dir: &Path) -> anyhow::Result<Journal> {
    Ok(Journal::open(&state_dir.join("restores"))?)
}

/// Runs one job.
/// `protocol` is the session's (see `cairn_proto::negotiate`).
pub fn run(
    cfg: &Config,
    site: Option<&Site>,
    client: Client,
    handle: Handle,
    job: &pb::Job,
    progress: &Progress,
    protocol: u32,
) -> anyhow::Result<Done> {
    let host = &cfg.host_name();
    let state_dir = &cfg.state_dir;
    let binlog = cfg.binlog.as_ref();
    if job.kind() == pb::JobKind::Rollback {
        let r = stage::rollback(&journal(state_dir)?, &job.rollback_of)?;
        tracing::info!(job = %job.rollback_of, live = %r.live.display(), "rolled back");
        return Ok(Done {
            summary: Some(format!(
                "rolled back job {}: {} holds the tree from before it again",
                job.rollback_of,
                r.live.display()
            )),
            ..Done::default()
        });
    }
    let access = job
        .repository
        .as_ref()
        .context("the job carries no repository access")?;
    let direct = match &job.storage {
        Some(g) if g.presigned => Some(Direct::Presigned(
            reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(600))
                .build()
                .context("starting the HTTP client for presigned uploads")?,
        )),
        Some(g) if !g.location.is_empty() => Some(Direct::Storage(
            cairn_repo::storage::open_with_vars(&g.location, |k| g.env.get(k).cloned())
                .context("opening the granted storage")?,
        )),
        _ => None,
    };
    let storage = Arc::new(JobStorage {
        client: client.clone(),
        handle: handle.clone(),
        job_id: job.job_id.clone(),
        direct,
        committed: Default::default(),
    });
    let mut repo = Repository::with_access(
        storage.clone(),
        &Access {
            master_key: access.master_key.clone(),
            config_json: access.config_json.clone(),
        },
        Arc::new(ControllerKnows {
            client,
            handle,
            job_id: job.job_id.clone(),
        }),
    )?;
    // A controller a release older reads a group's members only from an
    // entry each (format v1.1).
    repo.set_group_records(protocol >= cairn_proto::GROUP_RECORDS);
    // ... and one two releases older, groups only as their rows are.
    repo.set_group_columns(protocol >= cairn_proto::GROUP_COLUMNS);
    if !job.index_segment.is_empty() {
        repo.add_segment(&Id::of_stored(&job.index_segment), &job.index_segment)?;
    }
    let snapshot = if job.snapshot.is_empty() {
        None
    } else {
        let id: Id = job
            .snapshot_id
            .parse()
            .map_err(|e| anyhow::anyhow!("snapshot id: {e}"))?;
        let plain = repo
            .key()
            .open(&job.snapshot, &format_args!("snapshot {id}"))?;
        let snap: Snapshot = serde_json::from_slice(&plain).context("snapshot")?;
        Some((id, snap))
    };
    match job.kind() {
        pb::JobKind::Backup if job.content == "binlog" => {
            ship_binlog(host, &repo, progress, snapshot, state_dir)?;
            let snapshot_id = storage
                .committed
                .lock()
                .unwrap()
                .clone()
                .context("the shipment ended without committing its snapshot")?;
            Ok(Done {
                snapshot_id,
                ..Done::default()
            })
        }
        pb::JobKind::Backup => {
            let site = site.with_context(|| {
                format!("domain {:?} is not among this agent's domains", job.domain)
            })?;
            if site.root_missing {
                bail!(
                    "domain {:?}: its root {} is missing",
                    site.name,
                    site.root.display()
                );
            }
            if job.content == "database" {
                let groups = protocol >= cairn_proto::GROUPS;
                backup_database(
                    host,
                    groups.then_some(state_dir),
                    site,
                    &repo,
                    job,
                    snapshot.map(|(_, s)| s.tree),
                    progress,
                )?;
            } else {
                backup(host, site, &repo, job, progress, snapshot)?;
            }
            let snapshot_id = storage
                .committed
                .lock()
                .unwrap()
                .clone()
                .context("the backup ended without committing its snapshot")?;
            Ok(Done {
                snapshot_id,
                ..Done::default()
            })
        }
        pb::JobKind::Restore => {
            let (_, snap) = snapshot.context("a restore job carries its snapshot")?;
            if job.content == "database" {
                let site = site.with_context(|| {
                    format!(
                        "domain {:?} is not among this agent's domains: a database restore uses the database settings of the site's own config here",
                        job.domain
                    )
                })?;
                return Ok(Done {
                    summary: Some(restore_database(
                        site, &repo, job, &snap, state_dir, binlog, progress,
                    )?),
                    ..Done::default()
                });
            }
            progress
                .total
                .store(snap.stats.total_bytes, std::sync::atomic::Ordering::Relaxed);
            restore(&repo, job, &snap, state_dir, progress)
        }
        other => bail!("this agent does not run {other:?} jobs yet"),
    }
}

/// Ships the binary log spool: a backup of the directory the stream
/// writes, compared with the last shipment (closed files are not read again).
fn ship_binlog(
    host: &str,
    repo: &Repository,
    progress: &Progress,
    parent: Option<(Id, Snapshot)>,
    state_dir: &Path,
) -> anyhow::Result<()> {
    let spool = crate::binlog::spool(state_dir);
    crate::wal::settle(state_dir);
    if !spool.is_dir() {
        bail!(
            "no binary log stream here ({} is missing): is [binlog] set in agent.toml?",
            spool.display()
        );
    }
    let opts = BackupOptions {
        domain: String::new(),
        kind: Kind::Incremental,
        excludes: Excludes::new::<&str>(&[])?,
        host: host.to_string(),
        tags: Vec::new(),
        content: Content::Binlog,
    };
    let (id, snap) = cairn_repo::backup::run_with_parent(repo, &spool, &opts, progress, parent)?;
    tracing::debug!(proposed = %id, files = snap.stats.files, bytes_new = snap.stats.bytes_new, "binary log shipped");
    Ok(())
}

fn backup(
    host: &str,
    site: &Site,
    repo: &Repository,
    job: &pb::Job,
    progress: &Progress,
    parent: Option<(Id, Snapshot)>,
) -> anyhow::Result<()> {
    let kind = match job.backup_kind() {
        pb::BackupKind::Full => Kind::Full,
        pb::BackupKind::Differential => Kind::Differential,
        _ => Kind::Incremental,
    };
    // The agent's own excludes, then the fleet policy's.
    let patterns: Vec<&String> = site.exclude.iter().chain(&job.excludes).collect();
    let opts = BackupOptions {
        content: Default::default(),
        domain: site.name.clone(),
        kind,
        excludes: Excludes::with_defaults(&patterns)?,
        host: host.to_string(),
        tags: Vec::new(),
    };
    let (id, snap) =
        cairn_repo::backup::run_with_parent(repo, &site.root, &opts, progress, parent)?;
    tracing::info!(
        proposed = %id,
        files = snap.stats.files,
        bytes_new = snap.stats.bytes_new,
        stored = snap.stats.stored_bytes,
        "backup stored"
    );
    Ok(())
}

/// Dumps the database the site's own config names (`wp-config.php`, `.env`)
/// into one snapshot. The credentials are read here and never leave the
/// agent; a dump that fails leaves no snapshot and names the tool's error.
/// With `state_dir` (a controller that takes groups), small chunks are grouped
/// under this agent's fleet id. `base` is the tree of the dump the
/// controller let this one stand on: its blob lists are edits of the base's.
fn backup_database(
    host: &str,
    state_dir: Option<&std::path::Path>,
    site: &Site,
    repo: &Repository,
    job: &pb::Job,
    base: Option<Id>,
    progress: &Progress,
) -> anyhow::Result<()> {
    use cairn_dump::{self as db, DumpOptions, Profile};
    let SiteDatabase {
        engine,
        conn,
        site_type,
        table_prefix,
    } = site_database(site)?;
    let profile: Profile = match job.cms_profile.as_str() {
        "" => site_type.as_str().parse().unwrap_or(Profile::None),
        p => p.parse().map_err(anyhow::Error::msg)?,
    };
    let options = DumpOptions {
        profile,
        table_prefix,
        ..Default::default()
    };
    // The fleet's name for this agent, unique where host names may not be:
    // dumps share groups only with dumps of the same agent and domain.
    let agent_id = match state_dir {
        Some(dir) => {
            let id_file = dir.join("agent-id");
            let id = std::fs::read_to_string(&id_file)
                .with_context(|| format!("reading this agent's id from {}", id_file.display()))?;
            Some(id.trim().to_string())
        }
        None => None,
    };
    let (id, snap, _) = db::backup(
        repo,
        db::BackupRequest {
            engine,
            conn: &conn,
            options,
            domain: &site.name,
            host,
            writer: agent_id.as_deref(),
            base,
            tags: &[],
            progress: &progress.bytes,
        },
    )
    .with_context(|| format!("dumping {}", conn.describe(engine)))?;
    tracing::info!(proposed = %id, database = %conn.describe(engine), stored = snap.stats.stored_bytes, "database backup stored");
    Ok(())
}

/// The database a site's own config names, and how to reach it.
struct SiteDatabase {
    engine: cairn_dump::Engine,
    conn: cairn_dump::Connection,
    site_type: crate::sitecfg::SiteType,
    table_prefix: Option<String>,
}

/// Reads the site's `wp-config.php` or `.env` here, on the agent: the
/// credentials never leave it.
fn site_database(site: &Site) -> anyhow::Result<SiteDatabase> {
    use cairn_dump::Engine;
    let (site_type, found) = crate::sitecfg::detect(&site.root);
    let Some(sdb) = found else {
        bail!(
            "domain {:?}: no database settings found in {} (wp-config.php or .env)",
            site.name,
            site.root.display()
        );
    };
    let engine: Engine = sdb.engine.parse().map_err(anyhow::Error::msg)?;
    let mut conn = sdb.connection();
    if engine == Engine::Sqlite && !sdb.name.starts_with('/') {
        conn.database = site.root.join(&sdb.name).display().to_string();
    }
    Ok(SiteDatabase {
        engine,
        conn,
        site_type,
        table_prefix: sdb.table_prefix.clone(),
    })
}

/// Paths a dry run lists at most.
const PREVIEW_PATHS: usize = 200;

/// A file restore: into a directory, over the live site (staged and
/// swapped), or only a preview of what that would change.
fn restore(
    repo: &Repository,
    job: &pb::Job,
    snap: &Snapshot,
    state_dir: &Path,
    progress: &Progress,
) -> anyhow::Result<Done> {
    if job.test_restore {
        return test_restore(repo, job, snap, state_dir, progress);
    }
    let target = Path::new(&job.target);
    if !target.is_absolute() {
        bail!("restore target {:?} is not an absolute path", job.target);
    }
    if job.dry_run {
        let p = stage::preview(repo, &snap.tree, target, PREVIEW_PATHS)?;
        return Ok(Done {
            summary: Some(format!(
                "dry run: would add {}, change {}, remove {} in {}",
                tally(p.added),
                tally(p.changed),
                tally(p.removed),
                target.display()
            )),
            report: Some(serde_json::to_string(&p)?),
            ..Done::default()
        });
    }
    if job.in_place {
        let s = stage::restore_in_place(
            repo,
            &snap.tree,
            target,
            &journal(state_dir)?,
            &job.job_id,
            job.keep_rollback_until,
            progress,
        )?;
        tracing::info!(files = s.stats.files, bytes = s.stats.bytes, target = %target.display(), rollback = %s.rollback.display(), "restored in place");
        return Ok(Done {
            summary: Some(format!(
                "restored {} files ({} bytes) in place at {}, every file verified; the old tree is kept at {}",
                s.stats.files,
                s.stats.bytes,
                target.display(),
                s.rollback.display()
            )),
            report: Some(serde_json::to_string(&s)?),
            ..Done::default()
        });
    }
    let stats = cairn_repo::restore::restore_with(repo, &snap.tree, target, &job.paths, progress)?;
    tracing::info!(files = stats.files, bytes = stats.bytes, target = %target.display(), "restored");
    Ok(Done {
        summary: Some(format!(
            "restored {} files ({} bytes) to {}",
            stats.files,
            stats.bytes,
            target.display()
        )),
        ..Done::default()
    })
}

/// Restores the snapshot into a scratch directory in the agent's state
/// directory, checks every file against it, measures how long that took
/// (the site's recovery time) and removes the scratch copy.
fn test_restore(
    repo: &Repository,
    job: &pb::Job,
    snap: &Snapshot,
    state_dir: &Path,
    progress: &Progress,
) -> anyhow::Result<Done> {
    let scratch = state_dir.join("verify").join(&job.job_id);
    let started = std::time::Instant::now();
    let checked = (|| -> anyhow::Result<_> {
        let stats = cairn_repo::restore::restore_with(repo, &snap.tree, &scratch, &[], progress)?;
        let verified = stage::verify(repo, &snap.tree, &scratch)?;
        Ok((stats, verified))
    })();
    let seconds = started.elapsed().as_secs_f64();
    let removed = std::fs::remove_dir_all(&scratch);
    let (stats, verified) = checked?;
    removed.with_context(|| format!("removing the scratch copy {}", scratch.display()))?;
    tracing::info!(
        files = verified,
        bytes = stats.bytes,
        seconds,
        "test restore verified"
    );
    Ok(Done {
        summary: Some(format!(
            "test restore verified {verified} files ({} bytes) in {seconds:.1} s (scratch copy removed)",
            stats.bytes
        )),
        report: Some(serde_json::to_string(&serde_json::json!({
            "verified_files": verified,
            "bytes": stats.bytes,
            "seconds": seconds,
        }))?),
        ..Done::default()
    })
}

fn tally(t: stage::Tally) -> String {
    format!("{} entries ({} bytes)", t.entries, t.bytes)
}

/// Restores a database snapshot into the site's database (or the one the
/// job names), or test-restores it into a scratch database that is checked
/// and dropped. The server and credentials are the site's own.
fn restore_database(
    site: &Site,
    repo: &Repository,
    job: &pb::Job,
    snap: &Snapshot,
    state_dir: &Path,
    binlog: Option<&BinlogConfig>,
    progress: &Progress,
) -> anyhow::Result<String> {
    use cairn_dump as db;
    let dumps = db::stored_dumps(repo, snap)?;
    let [dump] = dumps.as_slice() else {
        bail!(
            "snapshot {} holds {} database dumps; a fleet restore takes one (use cairnctl repo restore-db)",
            job.snapshot_id,
            dumps.len()
        );
    };
    let SiteDatabase { engine, conn, .. } = site_database(site)?;
    if engine != dump.manifest.engine {
        bail!(
            "the snapshot holds a {} dump, but the site's config names a {} database",
            dump.manifest.engine,
            engine
        );
    }
    if job.test_restore {
        let r = db::test_restore(repo, dump, &conn, &job.tables)?;
        tracing::info!(scratch = %r.scratch_database, tables = r.tables_checked, rows = r.rows_checked, "test restore verified");
        return Ok(format!(
            "test restore verified {} tables, {} rows (scratch database dropped)",
            r.tables_checked, r.rows_checked
        ));
    }
    let target = match job.into_database.as_str() {
        "" => conn,
        name => conn.with_database(name),
    };
    if job.stop_at != 0 && !job.tables.is_empty() {
        bail!("a restore to a moment restores the whole database, not chosen tables");
    }
    if job.stop_at != 0 && engine == db::Engine::Postgres {
        return restore_postgres_to_moment(repo, dump, job, &target, progress);
    }
    // A restore to a moment needs all it replays before it changes anything.
    let replay = if job.stop_at != 0 {
        if engine != db::Engine::Mariadb {
            bail!(
                "point in time needs a MariaDB/MySQL binary log or a PostgreSQL WAL; this site's database is {engine}"
            );
        }
        let Some(from) = dump.manifest.binlog.clone() else {
            bail!(
                "the dump in snapshot {} was taken with the server's binary log off: it cannot be brought forward to a moment",
                job.snapshot_id
            );
        };
        let Some(stream) = binlog else {
            bail!(
                "this agent has no [binlog] section in agent.toml: it cannot replay the binary log"
            );
        };
        Some((from, stream.connection()?))
    } else {
        None
    };
    let Some((from, stream)) = replay else {
        return restore_dump(repo, dump, job, engine, &target, None);
    };
    let (log_id, log) = log_snapshot(repo, job)?;
    let scratch = state_dir.join("pitr").join(&job.job_id);
    let restored = (|| -> anyhow::Result<_> {
        cairn_repo::restore::restore_with(repo, &log.tree, &scratch, &[], progress)
            .with_context(|| format!("restoring the binary log of snapshot {log_id}"))?;
        // The log must reach back to the dump before anything is changed.
        db::binlog::replay_files(&scratch, &from)?;
        let replay_into = |database: &str| {
            db::binlog::replay(
                &stream.with_database(database),
                &dump.manifest.database,
                &scratch,
                &from,
                job.stop_at,
            )
        };
        restore_dump(repo, dump, job, engine, &target, Some(&replay_into))
    })();
    let removed = std::fs::remove_dir_all(&scratch);
    let summary = restored?;
    removed.with_context(|| format!("removing {}", scratch.display()))?;
    Ok(summary)
}

/// A PostgreSQL database as it was at `job.stop_at`: the newest shipped
/// base backup before then, recovered by a throwaway server up to that
/// moment, and the site's database dumped from it into `target`. Nothing
/// live changes before the recovery has reached the moment.
fn restore_postgres_to_moment(
    repo: &Repository,
    dump: &cairn_dump::StoredDump,
    job: &pb::Job,
    target: &cairn_dump::Connection,
    progress: &Progress,
) -> anyhow::Result<String> {
    use cairn_dump::wal;
    let (log_id, log) = log_snapshot(repo, job)?;
    let bases: Vec<i64> = tree_children(repo, &log.tree, &["postgres", "base"])?
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    let Some(base) = bases.iter().filter(|t| **t <= job.stop_at).max() else {
        bail!(
            "the shipped WAL (snapshot {log_id}) has no base backup that ended by {}: {}",
            fmt_unix(job.stop_at),
            match bases.iter().min() {
                Some(t) => format!("the oldest ended at {}", fmt_unix(*t)),
                None => "the agent has shipped none yet".into(),
            }
        );
    };
    // Outside the agent's private state directory: the postgres account
    // runs the recovery server in it.
    let tmp = std::path::Path::new("/var/tmp");
    let scratch = tempfile::Builder::new()
        .prefix("cairn-pitr-")
        .tempdir_in(if tmp.is_dir() {
            tmp.to_path_buf()
        } else {
            std::env::temp_dir()
        })
        .context("a scratch directory for the recovery")?;
    let work = scratch.path();
    let paths = [
        format!("postgres/base/{base}"),
        "postgres/wal".to_string(),
        "postgres/streaming-at".to_string(),
    ];
    cairn_repo::restore::restore_with(repo, &log.tree, work, &paths, progress)
        .with_context(|| format!("restoring the shipped WAL of snapshot {log_id}"))?;
    let spool = work.join("postgres");
    let alive_at = std::fs::read_to_string(wal::alive_file(&spool))
        .ok()
        .and_then(|t| t.trim().parse().ok());
    let recovered = wal::recover(
        work,
        &wal::base_dir(&spool).join(base.to_string()),
        &wal::wal_dir(&spool),
        job.stop_at,
        alive_at,
    )
    .context("recovering the cluster to the moment")?;
    let database = &dump.manifest.database;
    recovered.copy_database(database, target).with_context(|| {
        format!(
            "loading the recovered {database:?} into {}",
            target.describe(cairn_dump::Engine::Postgres)
        )
    })?;
    let r = recovered.report.clone();
    drop(recovered);
    tracing::info!(database = %target.describe(cairn_dump::Engine::Postgres), base = r.base, until = r.until, to_end = r.to_end, "database recovered to a moment");
    Ok(format!(
        "recovered {} to {} from the base backup of {} and the shipped WAL{}",
        target.describe(cairn_dump::Engine::Postgres),
        fmt_unix(r.until),
        fmt_unix(r.base),
        if r.to_end {
            " (no later commit had been shipped: all of it replayed)"
        } else {
            ""
        }
    ))
}

fn fmt_unix(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| t.to_string())
}

/// The names in the directory `path` of a snapshot's tree (none when it
/// is missing).
fn tree_children(repo: &Repository, root: &Id, path: &[&str]) -> anyhow::Result<Vec<String>> {
    let mut tree = repo.load_tree(root)?;
    for part in path {
        let Some(sub) = tree
            .nodes
            .iter()
            .find(|n| n.name == *part)
            .and_then(|n| n.subtree)
        else {
            return Ok(Vec::new());
        };
        tree = repo.load_tree(&sub)?;
    }
    Ok(tree.nodes.iter().map(|n| n.name.clone()).collect())
}

/// The shipped binary log a restore to a moment replays.
fn log_snapshot(repo: &Repository, job: &pb::Job) -> anyhow::Result<(Id, Snapshot)> {
    if job.log_snapshot.is_empty() {
        bail!("a restore to a moment carries the shipped binary log's snapshot");
    }
    let id: Id = job
        .log_snapshot_id
        .parse()
        .map_err(|e| anyhow::anyhow!("binary log snapshot id: {e}"))?;
    let plain = repo
        .key()
        .open(&job.log_snapshot, &format_args!("snapshot {id}"))?;
    let snap: Snapshot = serde_json::from_slice(&plain).context("binary log snapshot")?;
    if snap.content != Content::Binlog {
        bail!("snapshot {id} is not a shipped binary log");
    }
    Ok((id, snap))
}

/// Loads a dump into `target`: staged and swapped in place, or directly.
/// Replays the shipped binary log into the named database (a point in time).
type Replay<'a> = &'a dyn Fn(&str) -> cairn_dump::Result<cairn_dump::binlog::ReplayReport>;

fn restore_dump(
    repo: &Repository,
    dump: &cairn_dump::StoredDump,
    job: &pb::Job,
    engine: cairn_dump::Engine,
    target: &cairn_dump::Connection,
    replay: Option<Replay>,
) -> anyhow::Result<String> {
    use cairn_dump as db;
    let replayed = |r: &db::binlog::ReplayReport| {
        let at = chrono::DateTime::from_timestamp(r.until, 0).unwrap_or_default();
        tracing::info!(database = %target.describe(engine), from = %r.from, files = r.files, until = %at, "binary log replayed");
        format!(
            ", replayed the binary log to {}",
            at.format("%Y-%m-%d %H:%M:%S UTC")
        )
    };
    let replay_live = || -> anyhow::Result<String> {
        match replay {
            None => Ok(String::new()),
            Some(f) => {
                let r = f(&target.database).with_context(|| {
                    format!(
                        "the dump is restored into {}, but replaying the binary log failed",
                        target.describe(engine)
                    )
                })?;
                Ok(replayed(&r))
            }
        }
    };
    if job.in_place {
        // A point in time is replayed into the staged copy, before the swap.
        let mut staged_replay = None;
        let r = db::restore_in_place_with(repo, dump, target, &mut |staged| {
            if let Some(f) = replay {
                staged_replay = Some(f(&staged.database)?);
            }
            Ok(())
        })
        .with_context(|| format!("restoring in place into {}", target.describe(engine)))?;
        tracing::info!(database = %target.describe(engine), swapped = r.swapped, "database restored in place");
        return Ok(match &r.direct_because {
            None => format!(
                "restored {} beside it, checked {} tables{} and swapped them in at once",
                target.describe(engine),
                r.tables_checked,
                staged_replay.as_ref().map(replayed).unwrap_or_default()
            ),
            Some(why) => format!(
                "restored {} table by table (not swapped whole: {why}){}",
                target.describe(engine),
                replay_live()?
            ),
        });
    }
    // Into a database that has tables, a MariaDB load replaces them one by
    // one; one the server refuses (a row over its max_allowed_packet, a
    // collation it lacks) would be left dropped. Loaded into a scratch
    // database first, such a dump fails before the target is touched.
    let cannot_look = || format!("cannot look at {}", target.describe(engine));
    let rehearsal = if db::replaces_table_by_table(dump, target).with_context(cannot_look)? {
        let r = db::test_restore(repo, dump, target, &job.tables).with_context(|| {
            format!(
                "the dump did not load into a scratch database on this server, so {} was not touched",
                target.describe(engine)
            )
        })?;
        tracing::info!(database = %target.describe(engine), scratch = %r.scratch_database, tables = r.tables_checked, "the dump loads on this server");
        format!(
            " (it has tables: first loaded into a scratch database, {} tables checked)",
            r.tables_checked
        )
    } else {
        String::new()
    };
    let r = db::restore(
        repo,
        dump,
        &db::RestoreRequest {
            conn: target,
            tables: job.tables.clone(),
        },
    )
    .with_context(|| format!("restoring into {}", target.describe(engine)))?;
    tracing::info!(database = %target.describe(engine), tables = r.tables.len(), bytes = r.dump_bytes, "database restored");
    Ok(format!(
        "restored {} into {}{rehearsal}{}",
        if r.tables.is_empty() {
            "every table".to_string()
        } else {
            format!("{} tables", r.tables.len())
        },
        target.describe(engine),
        replay_live()?
    ))
}
