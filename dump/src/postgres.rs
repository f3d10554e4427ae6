//! PostgreSQL: `pg_dump -Fc -Z0` archives parsed as they stream.
//!
//! A custom-format archive written to a pipe is a header, a table of contents
//! (TOC), then one data block per table, each a run of length-prefixed chunks
//! (one per row when uncompressed). The header and TOC are the prelude; each
//! data block starts a new blob and is a table section; chunk ends are record
//! ends. A single table restores from the prelude and its own block, through
//! `pg_restore -L` with the table, its data and the entries that depend on it.
//! Compression is off (`-Z0`) because compressed chunks cannot deduplicate;
//! the repository compresses every blob anyway.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufReader, Read};
use std::process::{Command, Stdio};

use cairn_repo::stream::StreamWriter;

use crate::{
    finish_child, run_capture, run_with_input, Connection, DbError, DumpOptions, Dumped, Engine,
    Mode, Result, SecretFile, Section, SectionKind, Sections, StderrTail,
};

const BLK_DATA: u8 = 1;
const BLK_BLOBS: u8 = 3;

struct TocEntry {
    dump_id: i64,
    has_data: bool,
    tag: String,
    desc: String,
    namespace: String,
    deps: Vec<i64>,
}

/// Where archive bytes come from: the dump stream (each byte passed on to the
/// repository) or a prelude already in memory.
trait Source {
    /// `n` bytes, or None at a clean end before the first of them.
    fn take(&mut self, n: usize) -> Result<Option<Vec<u8>>, String>;
    /// Passes bytes on (after a section cut).
    fn forward(&mut self, _bytes: &[u8]) -> Result<(), String> {
        Ok(())
    }
    fn end_record(&mut self) -> Result<(), String> {
        Ok(())
    }
}

impl Source for &[u8] {
    fn take(&mut self, n: usize) -> Result<Option<Vec<u8>>, String> {
        if self.is_empty() {
            return Ok(None);
        }
        if self.len() < n {
            return Err("the archive's TOC is truncated".into());
        }
        let (a, b) = self.split_at(n);
        *self = b;
        Ok(Some(a.to_vec()))
    }
}

struct Streamed<'a, 's, R> {
    input: R,
    w: &'a mut StreamWriter<'s>,
}

impl<R: Read> Source for Streamed<'_, '_, R> {
    fn take(&mut self, n: usize) -> Result<Option<Vec<u8>>, String> {
        let mut b = vec![0; n];
        let mut got = 0;
        while got < n {
            match self.input.read(&mut b[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err("the archive ended early, in the middle of a field".into()),
                Ok(k) => got += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading the archive: {e}")),
            }
        }
        Ok(Some(b))
    }
    fn forward(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.w.write(bytes).map_err(|e| e.to_string())
    }
    fn end_record(&mut self) -> Result<(), String> {
        self.w.end_record().map_err(|e| e.to_string())
    }
}

/// Archive primitives over a `Source`; bytes are forwarded unless held back.
struct Archive<S> {
    src: S,
    int_size: usize,
    off_size: usize,
    vmin: u8,
}

impl<S: Source> Archive<S> {
    fn raw(&mut self, n: usize) -> Result<Vec<u8>, String> {
        self.src
            .take(n)?
            .ok_or_else(|| "the archive ended early".to_string())
    }

    fn bytes(&mut self, n: usize) -> Result<Vec<u8>, String> {
        let b = self.raw(n)?;
        self.src.forward(&b)?;
        Ok(b)
    }

    fn decode_int(&self, b: &[u8]) -> i64 {
        let mut v: i64 = 0;
        for (i, &x) in b[1..].iter().enumerate() {
            v |= (x as i64) << (8 * i);
        }
        if b[0] != 0 {
            -v
        } else {
            v
        }
    }

    /// A sign byte, then `int_size` bytes little-endian.
    fn int(&mut self) -> Result<i64, String> {
        let b = self.bytes(1 + self.int_size)?;
        Ok(self.decode_int(&b))
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.int()?;
        if n <= 0 {
            return Ok(String::new());
        }
        if n > 1 << 30 {
            return Err(format!("implausible string length {n} in the TOC"));
        }
        Ok(String::from_utf8_lossy(&self.bytes(n as usize)?).into_owned())
    }

    /// Header and TOC. Returns the tool's description.
    fn header_and_toc(&mut self) -> Result<(String, Vec<TocEntry>), String> {
        let head = self.bytes(11)?;
        if &head[..5] != b"PGDMP" {
            return Err("not a pg_dump custom-format archive (no PGDMP magic)".into());
        }
        let (vmaj, vmin) = (head[5], head[6]);
        self.vmin = vmin;
        self.int_size = head[8] as usize;
        self.off_size = head[9] as usize;
        if vmaj != 1
            || !(12..=16).contains(&vmin)
            || !(1..=8).contains(&self.int_size)
            || !(1..=8).contains(&self.off_size)
            || head[10] != 1
        {
            return Err(format!(
                "unsupported archive: version {vmaj}.{vmin}, format {} (cairn reads pg_dump custom format 1.12 to 1.16)",
                head[10]
            ));
        }
        if vmin >= 15 {
            self.bytes(1)?; // compression algorithm
        } else {
            self.int()?; // compression level
        }
        for _ in 0..7 {
            self.int()?; // creation time
        }
        self.string()?; // database
        let server = self.string()?;
        let tool = format!("pg_dump {} (server {server})", self.string()?);
        self.src.end_record()?;
        let count = self.int()?;
        let mut toc = Vec::new();
        for _ in 0..count {
            toc.push(self.toc_entry()?);
            self.src.end_record()?;
        }
        Ok((tool, toc))
    }

    fn toc_entry(&mut self) -> Result<TocEntry, String> {
        let dump_id = self.int()?;
        let has_data = self.int()? != 0;
        self.string()?; // table oid
        self.string()?; // oid
        let tag = self.string()?;
        let desc = self.string()?;
        self.int()?; // section
        self.string()?; // definition
        self.string()?; // drop statement
        self.string()?; // copy statement
        let namespace = self.string()?;
        self.string()?; // tablespace
        if self.vmin >= 14 {
            self.string()?; // table access method
        }
        if self.vmin >= 16 {
            self.int()?; // relkind
        }
        self.string()?; // owner
        self.string()?; // "false" (with oids)
        let mut deps = Vec::new();
        loop {
            let n = self.int()?;
            if n < 0 {
                break;
            }
            let d = String::from_utf8_lossy(&self.bytes(n as usize)?).into_owned();
            deps.push(d.parse().unwrap_or(-1));
        }
        self.bytes(1 + self.off_size)?; // data offset: unknown when piped
        Ok(TocEntry {
            dump_id,
            has_data,
            tag,
            desc,
            namespace,
            deps,
        })
    }
}

/// Parses a custom-format archive from `input` into `w`.
pub(crate) fn parse_archive(input: impl Read, mut w: StreamWriter) -> Result<Dumped, String> {
    let mut sections = Sections::new(&w);
    let mut a = Archive {
        src: Streamed {
            input: BufReader::with_capacity(1 << 20, input),
            w: &mut w,
        },
        int_size: 4,
        off_size: 8,
        vmin: 0,
    };
    let (tool, toc) = a.header_and_toc()?;
    let by_id: HashMap<i64, &TocEntry> = toc.iter().map(|e| (e.dump_id, e)).collect();
    let mut seen = BTreeSet::new();
    // A block header is held back until its section has started.
    while let Some(head) = a.src.take(2 + a.int_size)? {
        let id = a.decode_int(&head[1..]);
        let e = by_id
            .get(&id)
            .ok_or_else(|| format!("data block for unknown TOC entry {id}"))?;
        let kind = if e.desc == "TABLE DATA" {
            SectionKind::Table
        } else {
            SectionKind::Other
        };
        sections
            .start(a.src.w, kind, &e.tag, &e.namespace)
            .map_err(|e| e.to_string())?;
        a.src.forward(&head)?;
        seen.insert(id);
        match head[0] {
            BLK_DATA => chunks(&mut a, &mut sections)?,
            BLK_BLOBS => loop {
                if a.int()? == 0 {
                    break;
                }
                chunks(&mut a, &mut sections)?;
            },
            other => return Err(format!("unknown block type {other} in the archive")),
        }
    }
    let missing: Vec<&str> = toc
        .iter()
        .filter(|e| e.has_data && !seen.contains(&e.dump_id))
        .map(|e| e.tag.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the archive ended early: no data for {}",
            missing.join(", ")
        ));
    }
    let sections = sections.finish(a.src.w).map_err(|e| e.to_string())?;
    let (content, size) = w.finish().map_err(|e| e.to_string())?;
    Ok(Dumped {
        content,
        size,
        sections,
        tool,
        rows_skipped: Vec::new(),
        binlog: None,
    })
}

/// Length-prefixed chunks up to a zero length; counts COPY rows.
fn chunks<S: Source>(a: &mut Archive<S>, sections: &mut Sections) -> Result<(), String> {
    let mut ended = false;
    loop {
        let n = a.int()?;
        if n <= 0 {
            return a.src.end_record();
        }
        let data = a.bytes(n as usize)?;
        if !ended {
            if data.starts_with(b"\\.\n") {
                ended = true;
            } else if let Some(rows) = sections.current().and_then(|s| s.rows.as_mut()) {
                *rows += data.iter().filter(|&&b| b == b'\n').count() as u64;
            }
        }
        a.src.end_record()?;
    }
}

/// The libpq tools logged in as `conn`: the password goes in one 0600
/// passfile for every command made from it, removed on drop.
pub(crate) struct Libpq<'a> {
    pub(crate) conn: &'a Connection,
    pass: Option<SecretFile>,
}

impl<'a> Libpq<'a> {
    pub(crate) fn new(conn: &'a Connection) -> Result<Libpq<'a>> {
        let pass = match &conn.password {
            None => None,
            Some(pw) => {
                let esc = pw.replace('\\', "\\\\").replace(':', "\\:");
                Some(SecretFile::new("pgpass", &format!("*:*:*:*:{esc}\n"))?)
            }
        };
        Ok(Libpq { conn, pass })
    }

    /// `tool` with the connection in its environment, for `database`.
    pub(crate) fn command(&self, tool: &str, database: &str) -> Command {
        let c = self.conn;
        let mut cmd = Command::new(tool);
        if let Some(h) = &c.host {
            cmd.env("PGHOST", h);
        }
        if let Some(s) = &c.socket {
            cmd.env("PGHOST", s);
        }
        if let Some(p) = c.port {
            cmd.env("PGPORT", p.to_string());
        }
        if let Some(u) = &c.user {
            cmd.env("PGUSER", u);
        }
        cmd.env("PGDATABASE", database);
        cmd.env_remove("PGPASSWORD");
        if let Some(f) = &self.pass {
            cmd.env("PGPASSFILE", &f.path);
        }
        cmd
    }

    /// The passfile, kept by a caller whose command outlives this value.
    pub(crate) fn into_passfile(self) -> Option<SecretFile> {
        self.pass
    }

    pub(crate) fn psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let mut cmd = self.command("psql", database);
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]);
        run_capture(cmd, "psql")
    }
}

pub(crate) fn dump(conn: &Connection, opts: &DumpOptions, w: StreamWriter) -> Result<Dumped> {
    let fail = |cause: String| DbError::Dump {
        engine: Engine::Postgres,
        database: conn.database.clone(),
        cause,
    };
    if !opts.skip_rows.is_empty() {
        tracing::warn!("row filters apply to MariaDB/MySQL dumps only; ignored for PostgreSQL");
    }
    let pg = Libpq::new(conn)?;
    let mut cmd = pg.command("pg_dump", &conn.database);
    cmd.args([
        "--format=custom",
        "--compress=0",
        "--no-owner",
        "--no-privileges",
    ]);
    match opts.mode {
        Mode::Full => {}
        Mode::StructureOnly => {
            cmd.arg("--schema-only");
        }
        Mode::DataOnly => {
            cmd.arg("--data-only");
        }
    }
    for t in &opts.tables {
        cmd.arg(format!("--table={t}"));
    }
    for t in &opts.skip_data {
        cmd.arg(format!("--exclude-table-data={t}"));
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run pg_dump: {e}")))?;
    let stderr = StderrTail::collect(child.stderr.take().expect("piped"));
    let stdout = child.stdout.take().expect("piped");
    let parsed = parse_archive(stdout, w);
    let status = finish_child(child, stderr, "pg_dump");
    status.map_err(&fail)?;
    parsed.map_err(fail)
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The TOC ids `pg_restore -L` needs for `tables`: each table's entries and
/// whatever depends on them (data, defaults, constraints, indexes, triggers,
/// sequences), but no other table or view.
fn toc_list(prelude: &[u8], tables: &[String]) -> Result<String, String> {
    let mut a = Archive {
        src: prelude,
        int_size: 4,
        off_size: 8,
        vmin: 0,
    };
    let (_, toc) = a.header_and_toc()?;
    let mut keep: BTreeSet<i64> = toc
        .iter()
        .filter(|e| (e.desc == "TABLE" || e.desc == "TABLE DATA") && tables.contains(&e.tag))
        .map(|e| e.dump_id)
        .collect();
    loop {
        let before = keep.len();
        for e in &toc {
            let other_relation = matches!(
                e.desc.as_str(),
                "TABLE" | "VIEW" | "MATERIALIZED VIEW" | "FK CONSTRAINT"
            );
            if !other_relation && e.deps.iter().any(|d| keep.contains(d)) {
                keep.insert(e.dump_id);
            }
        }
        // The sequence a kept table owns, and its current value.
        let owned: Vec<i64> = toc
            .iter()
            .filter(|e| e.desc == "SEQUENCE OWNED BY" && keep.contains(&e.dump_id))
            .flat_map(|e| e.deps.iter().copied())
            .collect();
        keep.extend(owned);
        if keep.len() == before {
            break;
        }
    }
    // A foreign key only when what it references comes too (a fresh target
    // database has nothing else).
    let fks: Vec<i64> = toc
        .iter()
        .filter(|e| e.desc == "FK CONSTRAINT" && e.deps.iter().all(|d| keep.contains(d)))
        .map(|e| e.dump_id)
        .collect();
    keep.extend(fks);
    Ok(toc
        .iter()
        .filter(|e| keep.contains(&e.dump_id))
        .map(|e| format!("{}; {} {} {}\n", e.dump_id, e.desc, e.namespace, e.tag))
        .collect())
}

fn ensure_database(pg: &Libpq) -> Result<(), String> {
    let conn = pg.conn;
    let exists = pg.psql(
        "postgres",
        &format!(
            "SELECT 1 FROM pg_database WHERE datname = {}",
            quote_literal(&conn.database)
        ),
    )?;
    if exists.trim() != "1" {
        pg.psql(
            "postgres",
            &format!("CREATE DATABASE {}", quote_ident(&conn.database)),
        )?;
    }
    Ok(())
}

pub(crate) fn restore(
    conn: &Connection,
    tables: &[String],
    sections: &[Section],
    input: &mut dyn Read,
) -> Result<()> {
    let fail = |cause: String| DbError::Restore {
        engine: Engine::Postgres,
        database: conn.database.clone(),
        cause,
    };
    let pg = Libpq::new(conn)?;
    ensure_database(&pg).map_err(&fail)?;
    let mut cmd = pg.command("pg_restore", &conn.database);
    cmd.args([
        "--no-owner",
        "--no-privileges",
        "--clean",
        "--if-exists",
        "--exit-on-error",
    ])
    .arg(format!("--dbname={}", conn.database));
    let mut list_file = None;
    let mut input: Box<dyn Read + '_> = Box::new(input);
    if !tables.is_empty() {
        let prelude = sections
            .iter()
            .find(|s| s.kind == SectionKind::Prelude)
            .ok_or_else(|| fail("the manifest has no prelude".into()))?;
        let mut prelude_buf = vec![0; prelude.length as usize];
        input
            .read_exact(&mut prelude_buf)
            .map_err(|e| fail(format!("reading the archive's TOC: {e}")))?;
        let list = toc_list(&prelude_buf, tables).map_err(&fail)?;
        let f = SecretFile::new("restore.list", &list)?;
        cmd.arg(format!("--use-list={}", f.path.display()));
        list_file = Some(f);
        input = Box::new(std::io::Cursor::new(prelude_buf).chain(input));
    }
    let result = run_with_input(cmd, "pg_restore", &mut input).map_err(fail);
    drop(list_file);
    result
}

/// Checks a restored database. Row counts always; with the amcheck extension
/// (superuser or granted), heap and B-tree structure too.
pub(crate) fn verify(conn: &Connection, tables: &[&Section]) -> Result<Vec<String>> {
    let db = &conn.database;
    let err = |cause: String| DbError::Restore {
        engine: Engine::Postgres,
        database: db.clone(),
        cause,
    };
    let pg = Libpq::new(conn)?;
    let present = pg.psql(db,
        "SELECT schemaname || '.' || tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
    )
    .map_err(err)?;
    let present: Vec<&str> = present.lines().collect();
    let mut problems = Vec::new();
    for t in tables {
        let full = format!("{}.{}", t.schema, t.name);
        if !present.contains(&full.as_str()) {
            problems.push(format!("table {full} is missing"));
            continue;
        }
        let n = pg
            .psql(
                db,
                &format!(
                    "SELECT count(*) FROM {}.{}",
                    quote_ident(&t.schema),
                    quote_ident(&t.name)
                ),
            )
            .map_err(err)?;
        let n: u64 = n.trim().parse().unwrap_or(u64::MAX);
        if Some(n) != t.rows {
            problems.push(format!(
                "table {full} has {n} rows, the dump recorded {}",
                t.rows.unwrap_or(0)
            ));
        }
    }
    match pg.psql(db, "CREATE EXTENSION IF NOT EXISTS amcheck") {
        Err(e) => tracing::info!("amcheck unavailable, structure not checked: {e}"),
        Ok(_) => {
            let bad = pg
                .psql(
                    db,
                    "SELECT c.relname || ': ' || v.msg FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 CROSS JOIN LATERAL verify_heapam(c.oid) v \
                 WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
                )
                .map_err(err)?;
            problems.extend(bad.lines().map(|l| format!("heap corruption: {l}")));
            pg.psql(db,
                "SELECT bt_index_check(c.oid, true) FROM pg_index i \
                 JOIN pg_class c ON c.oid = i.indexrelid \
                 JOIN pg_am a ON a.oid = c.relam \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE a.amname = 'btree' AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
            )
            .map_err(|e| problems.push(format!("index check failed: {e}")))
            .ok();
        }
    }
    Ok(problems)
}

pub(crate) fn drop_database(conn: &Connection, name: &str) -> Result<()> {
    Libpq::new(conn)?
        .psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name)),
        )
        .map_err(|cause| DbError::Restore {
            engine: Engine::Postgres,
            database: name.to_string(),
            cause,
        })?;
    Ok(())
}
