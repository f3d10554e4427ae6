//! Database backup and restore (DB-1..3, DB-5, RST-3, RST-7, VER-3).
//!
//! A dump is streamed from the dump tool's stdout through a parser into the
//! repository: never staged on disk. The parser knows the dump's layout, so
//! chunks end at row boundaries (a day with 2% of rows changed stores a small
//! share of the dump) and every section (a table with its data and triggers,
//! the views, the routines) starts a new blob. The [`Manifest`] stored beside
//! the dump (`db/<name>.manifest.json`) records each section's byte range and
//! blob range and each table's row count: one table restores from its own
//! blobs, and a test restore checks the counts.
//!
//! Credentials reach the tools through a 0600 defaults/password file that is
//! removed afterwards, never through argv; the manifest, the snapshot and the
//! logs hold the database's name and engine only.

pub mod binlog;
mod mysql;
mod postgres;
mod sqlite;
pub mod wal;

use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::atomic::AtomicU64;
use std::thread::JoinHandle;

use cairn_repo::chunker::RecordCutter;
use cairn_repo::snapshot::{Content, Snapshot};
use cairn_repo::stream::{ContentReader, Position, StreamBackup, StreamWriter};
use cairn_repo::{Id, Repository};
use serde::{Deserialize, Serialize};

pub use mysql::SqlDumpParser;

/// Dump chunks are small: with 2% of rows changed anywhere, a chunk of k rows
/// changes with probability 1 − 0.98^k, so only chunks of a few dozen rows
/// survive a day. Measured on gen_fleet dumps (BENCHMARKS.md, "Databases"):
/// 16 KiB chunks added 0.82× what restic adds on day 1, 4 KiB 0.50×, 2 KiB
/// 0.36× (the full dump stores 1.4× restic's, as small chunks compress less).
pub const DUMP_CHUNK_MIN: usize = 512;
pub const DUMP_CHUNK_AVG: usize = 2 << 10;
pub const DUMP_CHUNK_MAX: usize = 64 << 10;
/// Past the minimum, narrow rows get a cut every ~this many rows instead of
/// every ~2 KiB: a shop's 88-byte rentals come ~12 to a chunk, not ~29, so
/// 2% of them updated touch ~20% of the chunks, not ~45%. Measured on
/// bench/shop.py (7 days, first copy / mean day, MB), with blob lists
/// stored as edits: 8 rows 5.50 / 1.42, 6 rows 5.74 / 1.31, 6 rows from
/// 384 B 5.99 / 1.25, 5 from 256 B 6.70 / 1.12, 4 from 256 B 7.10 / 1.03.
/// Smaller chunks trade a larger first copy (more ids, less context) for
/// smaller days; 6 costs the first copy 4% and saves 8% a day.
pub const DUMP_CHUNK_ROWS: u32 = 6;

pub type Result<T, E = DbError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The dump tool failed, printed an error, or its output ended early.
    #[error("dump of {engine} database {database:?} failed: {cause}")]
    Dump {
        engine: Engine,
        database: String,
        cause: String,
    },
    #[error("restore of {engine} database {database:?} failed: {cause}")]
    Restore {
        engine: Engine,
        database: String,
        cause: String,
    },
    #[error("test restore of {database:?} found problems: {}", problems.join("; "))]
    Verify {
        database: String,
        problems: Vec<String>,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Repo(#[from] cairn_repo::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl DbError {
    fn io(what: impl Into<String>, source: std::io::Error) -> DbError {
        DbError::Io {
            what: what.into(),
            source,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// MariaDB or MySQL (`mariadb-dump` / `mysqldump`).
    Mariadb,
    Postgres,
    Sqlite,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Mariadb => "mariadb",
            Engine::Postgres => "postgres",
            Engine::Sqlite => "sqlite",
        })
    }
}

impl std::str::FromStr for Engine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mariadb" | "mysql" => Ok(Engine::Mariadb),
            "postgres" | "postgresql" | "pg" => Ok(Engine::Postgres),
            "sqlite" | "sqlite3" => Ok(Engine::Sqlite),
            _ => Err(format!(
                "unknown engine {s:?}: expected mariadb, mysql, postgres or sqlite"
            )),
        }
    }
}

/// Where a database lives and how to log in. The password is never printed.
#[derive(Clone, Default)]
pub struct Connection {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub socket: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Database name; for SQLite, the database file.
    pub database: String,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("socket", &self.socket)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("database", &self.database)
            .finish()
    }
}

impl Connection {
    /// `engine://host:port/database`, for snapshots and messages.
    pub fn describe(&self, engine: Engine) -> String {
        if engine == Engine::Sqlite {
            return format!("sqlite://{}", self.database);
        }
        let host = match (&self.socket, &self.host) {
            (Some(s), _) => s.display().to_string(),
            (None, Some(h)) => h.clone(),
            (None, None) => "localhost".into(),
        };
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        format!("{engine}://{host}{port}/{}", self.database)
    }

    pub fn with_database(&self, database: &str) -> Connection {
        Connection {
            database: database.to_string(),
            ..self.clone()
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Structure and data.
    #[default]
    Full,
    StructureOnly,
    DataOnly,
}

/// Which application owns the database: decides what is not worth keeping (DB-2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Keep everything.
    #[default]
    None,
    /// Skip transient option rows and the data of cache tables.
    Wordpress,
    /// Skip the data of sessions, cache, cache_locks, jobs, failed_jobs.
    Laravel,
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Profile::None),
            "wordpress" | "wp" => Ok(Profile::Wordpress),
            "laravel" => Ok(Profile::Laravel),
            _ => Err(format!(
                "unknown profile {s:?}: expected none, wordpress or laravel"
            )),
        }
    }
}

/// Rows to leave out of one table: those whose `column` starts with a prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowFilter {
    pub table: String,
    pub column: String,
    pub prefixes: Vec<String>,
}

/// What to dump. Recorded in the manifest as it was applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpOptions {
    pub mode: Mode,
    /// Only these tables (all when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// Tables whose structure is kept but whose rows are not (globs: `*`, `?`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip_data: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip_rows: Vec<RowFilter>,
    pub profile: Profile,
    /// WordPress `$table_prefix`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_prefix: Option<String>,
}

impl DumpOptions {
    /// Adds the profile's skips (DB-2) to the operator's own.
    pub fn apply_profile(&mut self) {
        let prefix = self.table_prefix.clone().unwrap_or_else(|| "wp_".into());
        match self.profile {
            Profile::None => {}
            Profile::Wordpress => {
                self.skip_rows.push(RowFilter {
                    table: format!("{prefix}options"),
                    column: "option_name".into(),
                    prefixes: vec!["_transient_".into(), "_site_transient_".into()],
                });
                // Page-cache and object-cache plugins keep regenerable rows in
                // tables named *cache* (W3TC, LiteSpeed, WP Rocket …).
                self.skip_data.push(format!("{prefix}*cache*"));
            }
            Profile::Laravel => {
                for t in ["sessions", "cache", "cache_locks", "jobs", "failed_jobs"] {
                    self.skip_data.push(t.into());
                }
            }
        }
        self.skip_data.sort();
        self.skip_data.dedup();
    }

    fn skips_data_of(&self, table: &str) -> bool {
        self.skip_data.iter().any(|g| glob_match(g, table))
    }
}

/// `*` and `?` globs over table names.
pub fn glob_match(glob: &str, name: &str) -> bool {
    fn go(g: &[u8], n: &[u8]) -> bool {
        match (g.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&g[1..], n) || (!n.is_empty() && go(g, &n[1..])),
            (Some(b'?'), Some(_)) => go(&g[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&g[1..], &n[1..]),
            _ => false,
        }
    }
    go(glob.as_bytes(), name.as_bytes())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SectionKind {
    /// Session settings every restore needs first (SQL) / the archive's TOC.
    Prelude,
    /// One table: structure, data, triggers.
    Table,
    /// A view's placeholder or final definition.
    View,
    Routines,
    Events,
    /// Settings restored last.
    Epilogue,
    /// Anything else the archive holds (large objects …).
    Other,
}

/// A run of whole blobs in the dump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    pub kind: SectionKind,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// PostgreSQL schema of a table.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub schema: String,
    pub offset: u64,
    pub length: u64,
    pub first_blob: usize,
    pub blobs: usize,
    /// Rows in the dump (tables only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

pub const MANIFEST_FORMAT: u32 = 1;

/// Stored as `db/<name>.manifest.json` beside the dump.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub engine: Engine,
    pub database: String,
    /// The dump's file name in the snapshot (`<name>.sql` / `.dump` / `.sqlite`).
    pub file: String,
    /// The dump tool's own version line.
    pub tool: String,
    pub options: DumpOptions,
    pub size: u64,
    pub sections: Vec<Section>,
    /// Rows left out by `skip_rows`, per table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rows_skipped: Vec<(String, u64)>,
    /// Where a MariaDB/MySQL dump stands in the server's binary log (taken
    /// with the log on): a point-in-time restore replays from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binlog: Option<binlog::BinlogPosition>,
}

impl Manifest {
    pub fn tables(&self) -> impl Iterator<Item = &Section> {
        self.sections
            .iter()
            .filter(|s| s.kind == SectionKind::Table)
    }

    pub fn table(&self, name: &str) -> Option<&Section> {
        self.tables().find(|s| s.name == name)
    }

    /// Checks the sections against a dump of `blobs` blobs before any of
    /// their numbers is used to index it: in order, not overlapping, inside
    /// the dump, and covering all of it.
    pub fn check_sections(&self, blobs: usize) -> std::result::Result<(), String> {
        let mut next = 0usize;
        for s in &self.sections {
            let end = s
                .first_blob
                .checked_add(s.blobs)
                .filter(|&end| s.first_blob >= next && end <= blobs)
                .ok_or_else(|| {
                    format!(
                        "section {:?} claims blobs {}+{} of a {blobs}-blob dump",
                        s.name, s.first_blob, s.blobs
                    )
                })?;
            next = end;
        }
        let listed: usize = self.sections.iter().map(|s| s.blobs).sum();
        if listed != blobs {
            return Err(format!("lists {listed} blobs, the dump has {blobs}"));
        }
        Ok(())
    }
}

/// Tracks sections while a dump streams through a `StreamWriter`.
pub(crate) struct Sections {
    done: Vec<Section>,
    open: Option<(Section, Position)>,
}

/// An empty section of `kind` starting at the writer's position.
fn section_at(
    w: &StreamWriter,
    kind: SectionKind,
    name: &str,
    schema: &str,
) -> (Section, Position) {
    let pos = w.position();
    let section = Section {
        kind,
        name: name.to_string(),
        schema: schema.to_string(),
        offset: pos.offset,
        length: 0,
        first_blob: pos.blob,
        blobs: 0,
        rows: (kind == SectionKind::Table).then_some(0),
    };
    (section, pos)
}

impl Sections {
    /// Starts with the prelude open at the writer's first byte.
    pub(crate) fn new(w: &StreamWriter) -> Sections {
        Sections {
            done: Vec::new(),
            open: Some(section_at(w, SectionKind::Prelude, "", "")),
        }
    }

    /// Closes the open section and starts another at a fresh blob.
    pub(crate) fn start(
        &mut self,
        w: &mut StreamWriter,
        kind: SectionKind,
        name: &str,
        schema: &str,
    ) -> cairn_repo::Result<()> {
        w.cut()?;
        self.close(w);
        self.open = Some(section_at(w, kind, name, schema));
        Ok(())
    }

    pub(crate) fn current(&mut self) -> Option<&mut Section> {
        self.open.as_mut().map(|(s, _)| s)
    }

    fn close(&mut self, w: &StreamWriter) {
        if let Some((mut s, start)) = self.open.take() {
            let end = w.position();
            s.length = end.offset - start.offset;
            s.blobs = end.blob - start.blob;
            self.done.push(s);
        }
    }

    /// Closes the last section (after `w.cut()`); returns them all.
    pub(crate) fn finish(mut self, w: &mut StreamWriter) -> cairn_repo::Result<Vec<Section>> {
        w.cut()?;
        self.close(w);
        Ok(self.done)
    }
}

/// What one engine's dump produced.
pub(crate) struct Dumped {
    pub content: Vec<Id>,
    pub size: u64,
    pub sections: Vec<Section>,
    pub tool: String,
    pub rows_skipped: Vec<(String, u64)>,
    pub binlog: Option<binlog::BinlogPosition>,
}

pub struct BackupRequest<'a> {
    pub engine: Engine,
    pub conn: &'a Connection,
    pub options: DumpOptions,
    pub domain: &'a str,
    pub host: &'a str,
    /// Who writes (an agent's id, a host): only dumps of one writer and
    /// domain share groups of small chunks (see `cairn_repo::group`). None
    /// stores every chunk alone, for a controller that takes no groups.
    pub writer: Option<&'a str>,
    /// The root tree of an earlier dump of this database (a fleet job's
    /// base, its trees granted): the new dump's blob lists are stored as
    /// edits of its lists (see `cairn_repo::content_edit`). Unset, a local
    /// repository's newest dump by this host and domain serves.
    pub base: Option<Id>,
    pub tags: &'a [String],
    /// Dump stream bytes stored so far, for a progress display.
    pub progress: &'a AtomicU64,
}

/// A session for one dump, its small chunks grouped per writer and domain.
fn begin_session<'r>(repo: &'r Repository, req: &BackupRequest) -> Result<StreamBackup<'r>> {
    let mut session = StreamBackup::begin(repo)?;
    if let Some(writer) = req.writer {
        session.group_small_blobs(&format!("{writer}\n{}", req.domain));
    }
    if let Some(base) = list_base(repo, req) {
        session.edit_lists_from(base);
        session.set_group_level(cairn_repo::group::DAY_LEVEL);
    }
    Ok(session)
}

/// The `db` tree whose blob lists the new dump's are stored as edits of:
/// the request's base, or in a local repository the newest dump of this
/// database by this host and domain. None when it holds no such dump.
fn list_base(repo: &Repository, req: &BackupRequest) -> Option<Id> {
    let file = dump_file_name(req.engine, &req.conn.database);
    let db_tree = |root: &Id| {
        let db = repo.load_tree(root).ok()?.find(b"db")?.subtree?;
        repo.load_tree(&db).ok()?.find(file.as_bytes())?;
        Some(db)
    };
    if let Some(root) = &req.base {
        return db_tree(root);
    }
    if repo.known_blobs().is_some() {
        return None;
    }
    let snaps = repo.snapshots().ok()?;
    snaps
        .iter()
        .rev()
        .filter(|(_, s)| {
            s.content == Content::Database && s.domain == req.domain && s.host == req.host
        })
        .take(8)
        .find_map(|(_, s)| db_tree(&s.tree))
}

/// Runs `write` with a writer for one dump: dump-sized chunks, progress
/// counted into the request.
fn write_dump<'p, T>(
    session: &StreamBackup,
    req: &BackupRequest<'p>,
    write: impl FnOnce(StreamWriter<'p>) -> T,
) -> T {
    let cutter = RecordCutter::new(
        DUMP_CHUNK_MIN,
        DUMP_CHUNK_AVG,
        DUMP_CHUNK_MAX,
        session.chunker_seed(),
    )
    .with_rows(DUMP_CHUNK_ROWS);
    session.write_stream(cutter, |w| write(w.with_progress(req.progress)))
}

fn dump_file_name(engine: Engine, database: &str) -> String {
    let path = std::path::Path::new(database);
    let base = match engine {
        Engine::Sqlite => path.file_stem(),
        _ => path.file_name(),
    };
    let base: String = base
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let base = if base.is_empty() || base.starts_with('.') {
        format!("db{base}")
    } else {
        base
    };
    match engine {
        Engine::Mariadb => format!("{base}.sql"),
        Engine::Postgres => format!("{base}.dump"),
        Engine::Sqlite => format!("{base}.sqlite"),
    }
}

/// Dumps one database into a new snapshot. Nothing is committed unless the
/// dump tool succeeded and its output was complete.
pub fn backup(repo: &Repository, req: BackupRequest) -> Result<(Id, Snapshot, Manifest)> {
    if req.conn.database.is_empty() {
        return Err(DbError::Invalid("a database name is required".into()));
    }
    let mut options = req.options.clone();
    options.apply_profile();
    let session = begin_session(repo, &req)?;
    let dumped = write_dump(&session, &req, |writer| match req.engine {
        Engine::Mariadb => mysql::dump(req.conn, &options, writer),
        Engine::Postgres => postgres::dump(req.conn, &options, writer),
        Engine::Sqlite => sqlite::dump(req.conn, &options, writer),
    })?;
    let source = req.conn.describe(req.engine);
    commit_dump(session, &req, options, dumped, &source)
}

/// Stores an existing dump (a file or stdin) the same way `backup` stores a
/// live one: MariaDB/MySQL SQL text or a PostgreSQL custom-format archive.
/// `req.conn.database` names it; nothing connects to a server.
pub fn backup_stream(
    repo: &Repository,
    input: impl Read,
    req: BackupRequest,
) -> Result<(Id, Snapshot, Manifest)> {
    let (engine, database) = (req.engine, req.conn.database.as_str());
    let session = begin_session(repo, &req)?;
    let options = DumpOptions::default();
    let fail = |cause: String| DbError::Dump {
        engine,
        database: database.to_string(),
        cause,
    };
    if engine == Engine::Sqlite {
        return Err(DbError::Invalid(
            "an SQLite database is backed up from its file, not a stream".into(),
        ));
    }
    let dumped = write_dump(&session, &req, |writer| match engine {
        Engine::Postgres => postgres::parse_archive(input, writer).map_err(fail),
        _ => {
            let mut p = SqlDumpParser::new(writer, &options);
            p.feed(BufReader::with_capacity(1 << 20, input))
                .map_err(|e| fail(e.to_string()))?;
            p.finish().map_err(fail)
        }
    })?;
    let source = format!("{engine}://{database}");
    commit_dump(session, &req, options, dumped, &source)
}

/// Adds the dump and its manifest to the session and writes the snapshot.
fn commit_dump(
    mut session: StreamBackup,
    req: &BackupRequest,
    options: DumpOptions,
    dumped: Dumped,
    source: &str,
) -> Result<(Id, Snapshot, Manifest)> {
    let file = dump_file_name(req.engine, &req.conn.database);
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        engine: req.engine,
        database: req.conn.database.clone(),
        file: file.clone(),
        tool: dumped.tool,
        options,
        size: dumped.size,
        sections: dumped.sections,
        rows_skipped: dumped.rows_skipped,
        binlog: dumped.binlog,
    };
    session.add_file(&file, dumped.content, dumped.size)?;
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
    session.add_small_file(&manifest_name(&file), &json)?;
    let (id, snap) = session.commit(req.domain, req.host, source, req.tags)?;
    Ok((id, snap, manifest))
}

fn manifest_name(file: &str) -> String {
    let stem = file.rsplit_once('.').map(|(s, _)| s).unwrap_or(file);
    format!("{stem}.manifest.json")
}

/// A database dump in a snapshot: its manifest and blobs.
pub struct StoredDump {
    pub manifest: Manifest,
    pub content: Vec<Id>,
}

/// Loads the dumps of a database snapshot (one per manifest under `db/`).
/// The repository's index must hold the snapshot's blobs: loaded whole
/// (`cairnctl repo`), or the segment a fleet job comes with.
pub fn stored_dumps(repo: &Repository, snap: &Snapshot) -> Result<Vec<StoredDump>> {
    let root = repo.load_tree(&snap.tree)?;
    let db = root
        .nodes
        .iter()
        .find(|n| n.name == "db")
        .and_then(|n| n.subtree)
        .ok_or_else(|| DbError::Invalid("snapshot holds no db/ directory".into()))?;
    let tree = repo.load_tree(&db)?;
    let mut out = Vec::new();
    for n in tree
        .nodes
        .iter()
        .filter(|n| n.name.ends_with(".manifest.json"))
    {
        let mut bytes = Vec::new();
        ContentReader::new(repo, n.content.iter().copied())
            .read_to_end(&mut bytes)
            .map_err(|e| DbError::io(format!("manifest {}", n.name), e))?;
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| DbError::Invalid(format!("manifest {} is not valid: {e}", n.name)))?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(DbError::Invalid(format!(
                "manifest {} has format {}, this cairn reads {MANIFEST_FORMAT}",
                n.name, manifest.format
            )));
        }
        let dump = tree
            .nodes
            .iter()
            .find(|d| d.name == manifest.file)
            .ok_or_else(|| DbError::Invalid(format!("dump {} is missing", manifest.file)))?;
        let content = dump.content.clone();
        manifest.check_sections(content.len()).map_err(|e| {
            DbError::Invalid(format!("manifest of {} is not valid: {e}", manifest.file))
        })?;
        out.push(StoredDump { manifest, content });
    }
    Ok(out)
}

pub struct RestoreRequest<'a> {
    /// Target connection; its `database` is the database to restore into.
    pub conn: &'a Connection,
    /// Only these tables (with what they need to load); all when empty.
    pub tables: Vec<String>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct RestoreReport {
    pub database: String,
    pub tables: Vec<String>,
    /// Dump bytes fed to the database client.
    pub dump_bytes: u64,
    /// Stored bytes fetched from the repository.
    pub stored_bytes_read: u64,
}

/// Which blobs to read for a restore: everything, or the prelude, the chosen
/// tables and the epilogue.
fn selected_blobs(dump: &StoredDump, tables: &[String]) -> Result<(Vec<Id>, u64)> {
    if tables.is_empty() {
        return Ok((dump.content.clone(), dump.manifest.size));
    }
    for t in tables {
        if dump.manifest.table(t).is_none() {
            return Err(DbError::Invalid(format!(
                "table {t:?} is not in the dump of {} (tables: {})",
                dump.manifest.database,
                dump.manifest
                    .tables()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let mut ids = Vec::new();
    let mut bytes = 0;
    for s in &dump.manifest.sections {
        let keep = match s.kind {
            SectionKind::Prelude | SectionKind::Epilogue => true,
            SectionKind::Table => tables.contains(&s.name),
            _ => false,
        };
        if keep {
            ids.extend_from_slice(&dump.content[s.first_blob..s.first_blob + s.blobs]);
            bytes += s.length;
        }
    }
    Ok((ids, bytes))
}

/// Restores a dump (or chosen tables of it) into `req.conn.database`,
/// creating the database when it does not exist.
pub fn restore(
    repo: &Repository,
    dump: &StoredDump,
    req: &RestoreRequest,
) -> Result<RestoreReport> {
    let (ids, dump_bytes) = selected_blobs(dump, &req.tables)?;
    let (restored, stored_bytes_read) =
        ContentReader::new(repo, ids).read_ahead(|input| match dump.manifest.engine {
            Engine::Mariadb => mysql::restore(req.conn, input),
            Engine::Postgres => {
                postgres::restore(req.conn, &req.tables, &dump.manifest.sections, input)
            }
            Engine::Sqlite => sqlite::restore(req.conn, &req.tables, input),
        });
    restored?;
    Ok(RestoreReport {
        database: req.conn.database.clone(),
        tables: req.tables.clone(),
        dump_bytes,
        stored_bytes_read,
    })
}

/// Whether restoring `dump` into `conn.database` would replace tables one
/// by one, so that a failure partway leaves some replaced: a MariaDB or
/// MySQL dump that makes its tables, into a database that has tables. (A
/// PostgreSQL restore into a database that exists is one transaction, an
/// SQLite one a rename; a data-only dump drops no table and loads only where
/// its tables exist, so no scratch database can try it.)
pub fn replaces_table_by_table(dump: &StoredDump, conn: &Connection) -> Result<bool> {
    match dump.manifest.engine {
        Engine::Mariadb if dump.manifest.options.mode != Mode::DataOnly => {
            mysql::holds_tables(conn)
        }
        _ => Ok(false),
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct VerifyReport {
    pub scratch_database: String,
    pub tables_checked: usize,
    pub rows_checked: u64,
    pub restore: RestoreReport,
}

/// RST-7 / VER-3: restores into a scratch database that is dropped afterwards,
/// then checks every table is present, its row count is the one recorded at
/// dump time, and the engine's own check passes.
pub fn test_restore(
    repo: &Repository,
    dump: &StoredDump,
    conn: &Connection,
    tables: &[String],
) -> Result<VerifyReport> {
    let scratch = match dump.manifest.engine {
        Engine::Sqlite => std::env::temp_dir()
            .join(format!("cairn-verify-{}.sqlite", random_suffix()))
            .display()
            .to_string(),
        _ => format!("cairn_verify_{}", random_suffix()),
    };
    let target = conn.with_database(&scratch);
    let result = (|| {
        let report = restore(
            repo,
            dump,
            &RestoreRequest {
                conn: &target,
                tables: tables.to_vec(),
            },
        )?;
        let expect: Vec<&Section> = dump
            .manifest
            .tables()
            .filter(|s| tables.is_empty() || tables.contains(&s.name))
            .collect();
        let problems = match dump.manifest.engine {
            Engine::Mariadb => mysql::verify(&target, &expect)?,
            Engine::Postgres => postgres::verify(&target, &expect)?,
            Engine::Sqlite => sqlite::verify(&target, &expect)?,
        };
        if !problems.is_empty() {
            return Err(DbError::Verify {
                database: dump.manifest.database.clone(),
                problems,
            });
        }
        Ok(VerifyReport {
            scratch_database: scratch.clone(),
            tables_checked: expect.len(),
            rows_checked: expect.iter().filter_map(|s| s.rows).sum(),
            restore: report,
        })
    })();
    let dropped = match dump.manifest.engine {
        Engine::Mariadb => mysql::drop_database(conn, &scratch),
        Engine::Postgres => postgres::drop_database(conn, &scratch),
        Engine::Sqlite => std::fs::remove_file(&scratch).or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Ok(()),
            _ => Err(DbError::io(&scratch, e)),
        }),
    };
    let report = result?;
    dropped?;
    Ok(report)
}

/// How an in-place database restore went.
#[derive(Debug, Default, Clone, Serialize)]
pub struct InPlaceReport {
    /// Restored beside the live database, checked, and renamed in whole.
    pub swapped: bool,
    /// Why not: then the dump was loaded straight into the live database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct_because: Option<String>,
    pub tables_checked: usize,
    pub restore: RestoreReport,
}

/// An in-place restore of a whole database (RST-6). MariaDB/MySQL: the dump
/// is restored into a scratch database (`cairn_verify_*`, the prefix a test
/// restore already needs rights on), every table checked (row counts, CHECK
/// TABLE), then all its tables renamed into the live database in one `RENAME
/// TABLE` (the live ones moved aside and dropped: the caller's safety dump is
/// the way back), so the site sees all old tables or all new ones, and tables
/// an attacker added are gone. A failure before the rename leaves the live
/// database untouched. Where a whole swap is not possible (PostgreSQL,
/// SQLite; views, triggers or routines, which cannot move between schemas; a
/// user without rights on `cairn_verify_*`) the dump is loaded into the live
/// database directly, and the report says why.
pub fn restore_in_place(
    repo: &Repository,
    dump: &StoredDump,
    conn: &Connection,
) -> Result<InPlaceReport> {
    restore_in_place_with(repo, dump, conn, &mut |_| Ok(()))
}

/// [`restore_in_place`], with `before_swap` run on the staged database once
/// it is checked and before it is swapped in (a point-in-time restore
/// replays the binary log there, so the site never sees the dump's older
/// state). It is not run when the dump is loaded straight into the live
/// database (`swapped` false): the caller does that work afterwards.
pub fn restore_in_place_with(
    repo: &Repository,
    dump: &StoredDump,
    conn: &Connection,
    before_swap: &mut dyn FnMut(&Connection) -> Result<()>,
) -> Result<InPlaceReport> {
    let direct = |why: String| -> Result<InPlaceReport> {
        let restore = restore(
            repo,
            dump,
            &RestoreRequest {
                conn,
                tables: Vec::new(),
            },
        )?;
        Ok(InPlaceReport {
            direct_because: Some(why),
            restore,
            ..InPlaceReport::default()
        })
    };
    if dump.manifest.engine != Engine::Mariadb {
        return direct(format!(
            "{} databases are restored table by table",
            dump.manifest.engine
        ));
    }
    let stage = format!("cairn_verify_{}", random_suffix());
    let old = format!("{stage}_old");
    if let Err(cause) = mysql::create_database(conn, &stage) {
        return direct(format!(
            "the site's user may not create {stage}: {}",
            cause.trim()
        ));
    }
    let staged = conn.with_database(&stage);
    let checked = (|| {
        let report = restore(
            repo,
            dump,
            &RestoreRequest {
                conn: &staged,
                tables: Vec::new(),
            },
        )?;
        let expect: Vec<&Section> = dump.manifest.tables().collect();
        let problems = mysql::verify(&staged, &expect)?;
        if !problems.is_empty() {
            return Err(DbError::Verify {
                database: dump.manifest.database.clone(),
                problems,
            });
        }
        Ok((report, expect.len()))
    })();
    // Views, triggers and routines keep the staged copy from being swapped:
    // known before the caller's work on it.
    let checked = checked.and_then(|c| {
        let blockers = mysql::swap_blockers(conn, &[&conn.database, &stage])?;
        if blockers.is_empty() {
            before_swap(&staged)?;
        }
        Ok((c, blockers))
    });
    let ((report, tables_checked), blockers) = match checked {
        Ok(c) => c,
        Err(e) => {
            let _ = mysql::drop_database(conn, &stage);
            return Err(e);
        }
    };
    if !blockers.is_empty() {
        mysql::drop_database(conn, &stage)?;
        return direct(format!(
            "{} cannot be renamed between databases",
            blockers.join(", ")
        ));
    }
    let swapped = mysql::swap_in(conn, &conn.database, &stage, &old);
    let _ = mysql::drop_database(conn, &stage);
    let _ = mysql::drop_database(conn, &old);
    swapped?;
    Ok(InPlaceReport {
        swapped: true,
        direct_because: None,
        tables_checked,
        restore: RestoreReport {
            database: conn.database.clone(),
            ..report
        },
    })
}

fn random_suffix() -> String {
    let mut b = [0u8; 4];
    rand::Rng::fill(&mut rand::thread_rng(), &mut b[..]);
    hex::encode(b)
}

/// A child process's stderr, collected on a thread (bounded) so the child
/// never blocks on a full pipe.
pub(crate) struct StderrTail(JoinHandle<String>);

impl StderrTail {
    pub(crate) fn collect(stderr: ChildStderr) -> StderrTail {
        StderrTail(std::thread::spawn(move || {
            tail_lines(BufReader::new(stderr))
        }))
    }

    pub(crate) fn join(self) -> String {
        self.0.join().unwrap_or_default()
    }
}

/// The first lines of a tool's stderr up to 8 KiB, then its last 32, each
/// cut to 400 bytes: a client that echoes a failing 4 MB statement before
/// its one-line error still shows the error, in bounded memory.
fn tail_lines(mut input: impl BufRead) -> String {
    const LINE: usize = 400;
    const HEAD: usize = 8 << 10;
    const TAIL: usize = 32;
    let (mut head, mut tail) = (String::new(), std::collections::VecDeque::new());
    let (mut line, mut cut, mut left_out) = (Vec::new(), 0usize, 0usize);
    let mut finish = |line: &mut Vec<u8>, cut: &mut usize| {
        let mut text = String::from_utf8_lossy(line).into_owned();
        if *cut > 0 {
            text.push_str(&format!("… ({cut} more bytes)"));
        }
        line.clear();
        *cut = 0;
        if tail.is_empty() && head.len() + text.len() < HEAD {
            head.push_str(&text);
            head.push('\n');
        } else {
            tail.push_back(text);
            if tail.len() > TAIL {
                tail.pop_front();
                left_out += 1;
            }
        }
    };
    loop {
        let buf = match input.fill_buf() {
            Ok([]) | Err(_) => break,
            Ok(b) => b,
        };
        let (part, ends) = match memchr::memchr(b'\n', buf) {
            Some(i) => (&buf[..i], i + 1),
            None => (buf, buf.len()),
        };
        let room = LINE.saturating_sub(line.len()).min(part.len());
        line.extend_from_slice(&part[..room]);
        cut += part.len() - room;
        let newline = ends > part.len();
        input.consume(ends);
        if newline {
            finish(&mut line, &mut cut);
        }
    }
    if !line.is_empty() || cut > 0 {
        finish(&mut line, &mut cut);
    }
    if left_out > 0 {
        head.push_str(&format!("… ({left_out} lines left out)\n"));
    }
    for t in tail {
        head.push_str(&t);
        head.push('\n');
    }
    head
}

/// A tool that runs until stopped (a log stream): killed on drop.
pub(crate) struct Running {
    tool: &'static str,
    child: Child,
    stderr: Option<StderrTail>,
}

impl Running {
    /// Spawns `cmd` with its stderr collected (stdin and stdout closed).
    pub(crate) fn spawn(mut cmd: Command, tool: &'static str) -> Result<Running, String> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {tool}: {e}"))?;
        let stderr = StderrTail::collect(child.stderr.take().expect("piped"));
        Ok(Running {
            tool,
            child,
            stderr: Some(stderr),
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some` once the tool has ended, with why.
    pub(crate) fn ended(&mut self) -> Option<String> {
        let tool = self.tool;
        match self.child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => {
                let err = self.stderr.take().map(|s| s.join()).unwrap_or_default();
                Some(format!("{tool} ended ({status}): {}", err.trim()))
            }
            Err(e) => Some(format!("waiting for {tool}: {e}")),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for a tool and turns a failure into a readable cause.
pub(crate) fn finish_child(mut child: Child, stderr: StderrTail, tool: &str) -> Result<(), String> {
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {tool}: {e}"))?;
    let err = stderr.join();
    let err = err.trim();
    if !status.success() {
        let how = match status.code() {
            Some(c) => format!("exited with status {c}"),
            None => "was killed by a signal".into(),
        };
        return Err(if err.is_empty() {
            format!("{tool} {how}")
        } else {
            format!("{tool} {how}: {err}")
        });
    }
    if err
        .lines()
        .any(|l| l.to_ascii_lowercase().contains("error"))
    {
        return Err(format!("{tool} reported an error: {err}"));
    }
    Ok(())
}

/// Runs a client with `input` on its stdin; fails with its stderr.
pub(crate) fn run_with_input(
    mut cmd: Command,
    tool: &str,
    input: &mut dyn Read,
) -> Result<(), String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {tool}: {e}"))?;
    let stderr = StderrTail::collect(child.stderr.take().expect("piped"));
    let mut stdin = child.stdin.take().expect("piped");
    let copied = std::io::copy(input, &mut stdin).and_then(|_| stdin.flush());
    drop(stdin);
    let finished = finish_child(child, stderr, tool);
    match copied {
        // The client's own error explains a broken pipe better.
        Err(e) => Err(finished
            .err()
            .unwrap_or_else(|| format!("feeding {tool}: {e}"))),
        Ok(_) => finished,
    }
}

/// Runs a query tool and returns its stdout.
pub(crate) fn run_capture(mut cmd: Command, tool: &str) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {tool}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{tool} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The first of `names` found on PATH (or the first name, to fail clearly).
pub(crate) fn find_tool(names: &[&str]) -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for n in names {
        if std::env::split_paths(&path).any(|d| d.join(n).is_file()) {
            return n.to_string();
        }
    }
    names[0].to_string()
}

/// A private temporary file (0600 in a 0700 directory), removed on drop.
pub(crate) struct SecretFile {
    /// Removed with everything in it on drop.
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl SecretFile {
    pub(crate) fn new(name: &str, contents: &str) -> Result<SecretFile> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = tempfile::Builder::new()
            .prefix("cairn-db-")
            .tempdir()
            .map_err(|e| DbError::io("temporary directory", e))?;
        let path = dir.path().join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| DbError::io(path.display().to_string(), e))?;
        f.write_all(contents.as_bytes())
            .map_err(|e| DbError::io(path.display().to_string(), e))?;
        Ok(SecretFile { _dir: dir, path })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_tools_stderr_keeps_its_head_and_tail_with_long_lines_cut() {
        let mut input = b"ERROR first\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 4 << 20));
        input.extend_from_slice(b"\n\xff\xfe binary\n");
        for i in 0..100 {
            input.extend_from_slice(format!("{}line {i}\n", "y".repeat(200)).as_bytes());
        }
        input.extend_from_slice(
            b"ERROR 1153 (08S01) at line 52: Got a packet bigger than 'max_allowed_packet' bytes",
        );
        let out = super::tail_lines(std::io::BufReader::with_capacity(1000, &input[..]));
        assert!(out.starts_with("ERROR first\n"), "{out}");
        assert!(out.contains(&format!(
            "{}… ({} more bytes)\n",
            "x".repeat(400),
            (4 << 20) - 400
        )));
        assert!(out.contains("\u{fffd}\u{fffd} binary\n"));
        assert!(out.contains("lines left out"));
        assert!(out.contains("line 99\n"));
        assert!(!out.contains("line 60\n"));
        assert!(out.ends_with("'max_allowed_packet' bytes\n"), "{out}");
        assert!(out.len() < 24 << 10, "{}", out.len());
    }

    use super::*;

    #[test]
    fn globs_match_table_names() {
        assert!(glob_match("wp_*cache*", "wp_w3tc_cache_pages"));
        assert!(glob_match("sessions", "sessions"));
        assert!(!glob_match("sessions", "sessions_old"));
        assert!(glob_match("t?", "t1"));
        assert!(!glob_match("wp_*cache*", "wp_posts"));
    }

    #[test]
    fn profiles_add_their_skips() {
        let mut o = DumpOptions {
            profile: Profile::Laravel,
            ..Default::default()
        };
        o.apply_profile();
        for t in ["sessions", "cache", "cache_locks", "jobs", "failed_jobs"] {
            assert!(o.skips_data_of(t), "{t}");
        }
        assert!(!o.skips_data_of("users"));
        let mut o = DumpOptions {
            profile: Profile::Wordpress,
            table_prefix: Some("site7_".into()),
            ..Default::default()
        };
        o.apply_profile();
        assert_eq!(o.skip_rows[0].table, "site7_options");
        assert!(o.skips_data_of("site7_litespeed_cache"));
    }

    fn manifest_of(sections: Vec<Section>) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            engine: Engine::Mariadb,
            database: "d".into(),
            file: "d.sql".into(),
            tool: String::new(),
            options: DumpOptions::default(),
            size: 0,
            sections,
            rows_skipped: Vec::new(),
            binlog: None,
        }
    }

    #[test]
    fn manifests_cannot_index_outside_their_dump() {
        let section = |first_blob, blobs| Section {
            kind: SectionKind::Table,
            name: "t".into(),
            schema: String::new(),
            offset: 0,
            length: 0,
            first_blob,
            blobs,
            rows: None,
        };
        let m = manifest_of;
        assert!(m(vec![section(0, 2), section(2, 3)])
            .check_sections(5)
            .is_ok());
        for bad in [
            vec![section(0, 2), section(9, 3)],
            vec![section(3, 2), section(0, 3)],
            vec![section(0, 2), section(1, 3)],
            vec![section(usize::MAX, 2), section(0, 3)],
            vec![section(0, 2)],
        ] {
            assert!(m(bad.clone()).check_sections(5).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        /// Whatever sections a stored manifest claims, one that passes the
        /// check only names blobs inside its dump.
        #[test]
        fn checked_sections_stay_inside_the_dump(
            spans in proptest::collection::vec((0usize..40, 0usize..40), 0..6),
            blobs in 0usize..60,
        ) {
            let m = manifest_of(spans
                    .iter()
                    .map(|&(first_blob, n)| Section {
                        kind: SectionKind::Table,
                        name: "t".into(),
                        schema: String::new(),
                        offset: 0,
                        length: 0,
                        first_blob,
                        blobs: n,
                        rows: None,
                    })
                    .collect());
            if m.check_sections(blobs).is_ok() {
                let content = vec![0u8; blobs];
                let mut covered = 0;
                for s in &m.sections {
                    covered += content[s.first_blob..s.first_blob + s.blobs].len();
                }
                proptest::prop_assert_eq!(covered, blobs);
            }
        }
    }

    #[test]
    fn connection_debug_hides_the_password() {
        let c = Connection {
            password: Some("hunter2".into()),
            database: "x".into(),
            ..Default::default()
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!c.describe(Engine::Mariadb).contains("hunter2"));
    }

    #[test]
    fn dump_names_are_safe() {
        assert_eq!(dump_file_name(Engine::Mariadb, "shop"), "shop.sql");
        assert_eq!(dump_file_name(Engine::Postgres, "../x y"), "x_y.dump");
        assert_eq!(
            dump_file_name(Engine::Sqlite, "/srv/a/db.sqlite3"),
            "db.sqlite"
        );
        assert_eq!(manifest_name("shop.sql"), "shop.manifest.json");
    }
}
