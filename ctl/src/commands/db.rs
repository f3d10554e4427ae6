//! `repo backup-db` and `repo restore-db`: the agent's database executors,
//! run locally.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use cairn_dump::{self as db, BackupRequest, Connection, DumpOptions, Mode, RestoreRequest};
use cairn_repo::snapshot::Content;

use super::{open, read_passphrase};
use crate::cli::{BackupDbArgs, DbConnArgs, RepoArgs, RestoreDbArgs};
use crate::{output, usage};

fn connection(c: &DbConnArgs, database: &str) -> Result<Connection> {
    // No password at all is fine: the tools' own defaults may log in.
    let given = c.db_password_file.is_some()
        || std::env::var_os("CAIRN_DB_PASSWORD").is_some_and(|v| !v.is_empty());
    let password = given
        .then(|| read_passphrase(c.db_password_file.as_deref(), "CAIRN_DB_PASSWORD"))
        .transpose()?;
    let password = password
        .map(|p| String::from_utf8(p).map_err(|_| usage("the database password is not UTF-8")))
        .transpose()?;
    Ok(Connection {
        host: c.db_host.clone(),
        port: c.db_port,
        socket: c.db_socket.clone(),
        user: c.db_user.clone(),
        password,
        database: database.to_string(),
    })
}

pub fn backup(args: &RepoArgs, a: &BackupDbArgs) -> Result<()> {
    let conn = connection(&a.conn, &a.database)?;
    let options = DumpOptions {
        mode: match (a.structure_only, a.data_only) {
            (true, _) => Mode::StructureOnly,
            (_, true) => Mode::DataOnly,
            _ => Mode::Full,
        },
        tables: a.tables.clone(),
        skip_data: a.skip_data.clone(),
        skip_rows: Vec::new(),
        profile: a.profile,
        table_prefix: a.table_prefix.clone(),
    };
    let repo = open(args)?;
    let host = output::host_name(a.host.as_deref());
    let progress = AtomicU64::new(0);
    let req = BackupRequest {
        engine: a.engine,
        conn: &conn,
        options,
        domain: &a.domain,
        host: &host,
        writer: Some(&host),
        base: None,
        tags: &a.tags,
        progress: &progress,
    };
    let what = conn.describe(a.engine);
    let result = output::with_spinner(
        || {
            format!(
                "{what}: {} stored",
                output::bytes(progress.load(Ordering::Relaxed))
            )
        },
        || match &a.from_file {
            None => db::backup(&repo, req),
            Some(path) => {
                let input: Box<dyn Read + Send> = if path.as_os_str() == "-" {
                    Box::new(std::io::stdin())
                } else {
                    Box::new(std::fs::File::open(path).map_err(|e| {
                        db::DbError::Invalid(format!("cannot open {}: {e}", path.display()))
                    })?)
                };
                db::backup_stream(&repo, input, req)
            }
        },
    );
    let (id, snap, manifest) =
        result.with_context(|| format!("backup of {what} failed; no snapshot was written"))?;
    if args.json {
        let mut v = serde_json::to_value(&snap)?;
        v["id"] = serde_json::json!(id);
        v["manifest"] = serde_json::to_value(&manifest)?;
        return output::json(&v);
    }
    let s = &snap.stats;
    println!(
        "snapshot {} saved: domain {}, {} database {} ({}, {} tables, {} rows), added {} (stored {}) in {:.1}s",
        id.short(),
        snap.domain,
        manifest.engine,
        manifest.database,
        output::bytes(manifest.size),
        manifest.tables().count(),
        manifest.tables().filter_map(|t| t.rows).sum::<u64>(),
        output::bytes(s.bytes_new),
        output::bytes(s.stored_bytes),
        s.duration_ms as f64 / 1000.0
    );
    for (t, n) in &manifest.rows_skipped {
        println!("  skipped {n} rows of {t}");
    }
    Ok(())
}

pub fn restore(args: &RepoArgs, a: &RestoreDbArgs) -> Result<()> {
    let repo = open(args)?;
    let (id, snap) = repo.find_snapshot_of(&a.snapshot, a.domain.as_deref(), Content::Database)?;
    if snap.content != Content::Database {
        return Err(usage(format!(
            "snapshot {} holds files, not a database; use `cairnctl repo restore`",
            id.short()
        )));
    }
    repo.load_index()?;
    let dumps = db::stored_dumps(&repo, &snap)?;
    let dump = match &a.dump {
        Some(name) => dumps.into_iter().find(|d| d.manifest.database == *name),
        None if dumps.len() == 1 => dumps.into_iter().next(),
        None => {
            return Err(usage(format!(
                "snapshot {} holds {} dumps; choose one with --dump",
                id.short(),
                dumps.len()
            )))
        }
    }
    .ok_or_else(|| usage(format!("no such dump in snapshot {}", id.short())))?;
    let target = a.database.clone().unwrap_or(dump.manifest.database.clone());
    let conn = connection(&a.conn, &target)?;
    let started = std::time::Instant::now();
    if a.test {
        let report = db::test_restore(&repo, &dump, &conn, &a.tables)
            .with_context(|| format!("test restore of snapshot {}", id.short()))?;
        if args.json {
            return output::json(&serde_json::json!({"snapshot": id, "test": report}));
        }
        println!(
            "test restore of snapshot {} ({} database {}) passed: {} tables, {} rows as recorded, engine checks ok; scratch database {} dropped ({:.1}s)",
            id.short(),
            dump.manifest.engine,
            dump.manifest.database,
            report.tables_checked,
            report.rows_checked,
            report.scratch_database,
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    // A MariaDB load replaces tables one by one: one the server refuses
    // (a row over its max_allowed_packet, an unknown collation) would be
    // dropped and not made again. Loaded into a scratch database first, such
    // a dump fails before the target is touched.
    let rehearsal = if !a.no_rehearsal
        && db::replaces_table_by_table(&dump, &conn)
            .with_context(|| format!("cannot look at {}", conn.describe(dump.manifest.engine)))?
    {
        let report = output::with_spinner(
            || format!("{target} has tables: loading the dump into a scratch database first"),
            || db::test_restore(&repo, &dump, &conn, &a.tables),
        )
        .with_context(|| {
            format!(
                "the dump did not load into a scratch database on this server, so {target} was \
                 not touched (--no-rehearsal loads straight into it)"
            )
        })?;
        if !args.json {
            eprintln!(
                "the dump loads on this server: {} tables with the recorded row counts in scratch database {} (dropped)",
                report.tables_checked, report.scratch_database
            );
        }
        Some(report)
    } else {
        None
    };
    let report = db::restore(
        &repo,
        &dump,
        &RestoreRequest {
            conn: &conn,
            tables: a.tables.clone(),
        },
    )
    .with_context(|| format!("restore of snapshot {} into {target}", id.short()))?;
    if args.json {
        return output::json(
            &serde_json::json!({"snapshot": id, "restore": report, "rehearsal": rehearsal}),
        );
    }
    let what = if a.tables.is_empty() {
        "all tables".to_string()
    } else {
        format!("tables {}", a.tables.join(", "))
    };
    println!(
        "restored {what} of snapshot {} into {} database {target}: read {} of {} dump ({} from storage) in {:.1}s",
        id.short(),
        dump.manifest.engine,
        output::bytes(report.dump_bytes),
        output::bytes(dump.manifest.size),
        output::bytes(report.stored_bytes_read),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
