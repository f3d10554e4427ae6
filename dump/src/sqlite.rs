//! SQLite: a consistent copy through SQLite's backup API, even while the
//! application writes. The copy is made into memory (never onto disk, DB-5)
//! and stored page by page, so unchanged pages deduplicate.

use std::io::{Read, Write};

use cairn_repo::stream::StreamWriter;
use rusqlite::{Connection as Sqlite, DatabaseName, OpenFlags};

use crate::{
    Connection, DbError, DumpOptions, Dumped, Engine, Result, Section, SectionKind, Sections,
};

fn fail_dump(db: &str, cause: impl ToString) -> DbError {
    DbError::Dump {
        engine: Engine::Sqlite,
        database: db.to_string(),
        cause: cause.to_string(),
    }
}

fn tables(db: &Sqlite) -> rusqlite::Result<Vec<(String, u64)>> {
    let names: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    names
        .into_iter()
        .map(|n| {
            let q = format!("SELECT count(*) FROM \"{}\"", n.replace('"', "\"\""));
            let c: i64 = db.query_row(&q, [], |r| r.get(0))?;
            Ok((n, c as u64))
        })
        .collect()
}

pub(crate) fn dump(conn: &Connection, opts: &DumpOptions, mut w: StreamWriter) -> Result<Dumped> {
    let path = &conn.database;
    if opts.mode != crate::Mode::Full || !opts.tables.is_empty() || !opts.skip_data.is_empty() {
        return Err(DbError::Invalid(
            "SQLite databases are copied whole: no table selection, skips or modes".into(),
        ));
    }
    let src = Sqlite::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| fail_dump(path, e))?;
    let mut mem = Sqlite::open_in_memory().map_err(|e| fail_dump(path, e))?;
    {
        let b = rusqlite::backup::Backup::new(&src, &mut mem).map_err(|e| fail_dump(path, e))?;
        b.run_to_completion(256, std::time::Duration::from_millis(10), None)
            .map_err(|e| fail_dump(path, e))?;
    }
    let page_size: i64 = mem
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .map_err(|e| fail_dump(path, e))?;
    let counts = tables(&mem).map_err(|e| fail_dump(path, e))?;
    let image = mem
        .serialize(DatabaseName::Main)
        .map_err(|e| fail_dump(path, e))?;
    let sections = Sections::new(&w);
    for page in image.chunks(page_size.max(512) as usize) {
        w.write(page)?;
        w.end_record()?;
    }
    let mut out = sections.finish(&mut w)?;
    let end = w.position();
    // Tables carry their row counts; the file restores only as a whole.
    out.extend(counts.into_iter().map(|(name, rows)| Section {
        kind: SectionKind::Table,
        name,
        schema: String::new(),
        offset: end.offset,
        length: 0,
        first_blob: end.blob,
        blobs: 0,
        rows: Some(rows),
    }));
    let (content, size) = w.finish()?;
    Ok(Dumped {
        content,
        size,
        sections: out,
        tool: format!("sqlite {} backup API", rusqlite::version()),
        rows_skipped: Vec::new(),
        binlog: None,
    })
}

/// Writes the database file beside the target, syncs it, and renames it
/// into place: the target is either the old file or the whole new one.
pub(crate) fn restore(conn: &Connection, tables: &[String], input: &mut dyn Read) -> Result<()> {
    let target = std::path::Path::new(&conn.database);
    let fail = |cause: String| DbError::Restore {
        engine: Engine::Sqlite,
        database: conn.database.clone(),
        cause,
    };
    if !tables.is_empty() {
        return Err(DbError::Invalid(
            "an SQLite database restores whole; drop --table".into(),
        ));
    }
    let tmp = target.with_extension("cairn-restore");
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::copy(input, &mut f)?;
        f.flush()?;
        f.sync_all()?;
        std::fs::rename(&tmp, target)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e.to_string()));
    }
    Ok(())
}

pub(crate) fn verify(conn: &Connection, expect: &[&Section]) -> Result<Vec<String>> {
    let db =
        Sqlite::open_with_flags(&conn.database, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|e| {
            DbError::Restore {
                engine: Engine::Sqlite,
                database: conn.database.clone(),
                cause: e.to_string(),
            }
        })?;
    let mut problems = Vec::new();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap_or_else(|e| e.to_string());
    if check != "ok" {
        problems.push(format!("integrity_check: {check}"));
    }
    let found = tables(&db).unwrap_or_default();
    for t in expect {
        match found.iter().find(|(n, _)| *n == t.name) {
            None => problems.push(format!("table {} is missing", t.name)),
            Some((_, n)) if Some(*n) != t.rows => problems.push(format!(
                "table {} has {n} rows, the dump recorded {}",
                t.name,
                t.rows.unwrap_or(0)
            )),
            _ => {}
        }
    }
    Ok(problems)
}
