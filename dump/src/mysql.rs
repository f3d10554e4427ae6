//! MariaDB/MySQL: `mariadb-dump` (or `mysqldump`) output parsed as it streams.
//!
//! The parser reads the dump line by line. Every line outside INSERT
//! statements is one record; inside an INSERT each row `(…)` is one record,
//! so chunks end between rows. Section headers (`-- Table structure for table
//! …`) start a new blob. Rows of a table under a row filter (WordPress
//! transients) are dropped and the statement is rewritten around the rest;
//! rows of a table whose data is skipped are dropped whole. The output must end
//! with mysqldump's `-- Dump completed` line: anything else is a cut-short dump.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use cairn_repo::stream::StreamWriter;

use crate::{
    find_tool, finish_child, run_capture, run_with_input, Connection, DbError, DumpOptions, Dumped,
    Engine, Mode, Result, SecretFile, Section, SectionKind, Sections, StderrTail,
};

/// mysqldump's own default (1 MiB − 1 KiB), set explicitly so a server's
/// setting cannot change statement sizes between dumps.
const NET_BUFFER: &str = "--net-buffer-length=1046528";

#[derive(PartialEq, Eq)]
enum Phase {
    Prelude,
    Body,
    Epilogue,
}

/// Quote-aware scanner state for the VALUES of an INSERT.
#[derive(Default)]
struct Scan {
    depth: u32,
    quote: Option<u8>,
    escape: bool,
}

enum InsertMode {
    Pass,
    Drop,
    Filter {
        col: usize,
        prefixes: Vec<String>,
        tuple: Vec<u8>,
        held: Option<Vec<u8>>,
    },
}

struct Insert {
    table: String,
    header: Vec<u8>,
    mode: InsertMode,
    scan: Scan,
    /// A row just ended; its separator (`,` or `;`) comes next.
    after_row: bool,
}

pub struct SqlDumpParser<'s> {
    w: StreamWriter<'s>,
    sections: Sections,
    opts: DumpOptions,
    phase: Phase,
    held_dashes: bool,
    insert: Option<Insert>,
    /// Columns of filtered tables, read from their CREATE TABLE.
    columns: BTreeMap<String, Vec<String>>,
    in_create: Option<String>,
    skipped: BTreeMap<String, u64>,
    last_line: Vec<u8>,
    tool: String,
    /// Where the dump stands in the binary log (`--master-data=2`).
    binlog: Option<crate::binlog::BinlogPosition>,
}

/// The first `quoted` identifier in a line (`` ` `` doubled inside).
fn backquoted(line: &[u8]) -> String {
    let Some(start) = line.iter().position(|&b| b == b'`') else {
        return String::new();
    };
    let mut name = Vec::new();
    let mut i = start + 1;
    while i < line.len() {
        if line[i] == b'`' {
            if line.get(i + 1) == Some(&b'`') {
                name.push(b'`');
                i += 2;
                continue;
            }
            break;
        }
        name.push(line[i]);
        i += 1;
    }
    String::from_utf8_lossy(&name).into_owned()
}

impl<'s> SqlDumpParser<'s> {
    pub fn new(w: StreamWriter<'s>, opts: &DumpOptions) -> SqlDumpParser<'s> {
        SqlDumpParser {
            sections: Sections::new(&w),
            w,
            opts: opts.clone(),
            phase: Phase::Prelude,
            held_dashes: false,
            insert: None,
            columns: BTreeMap::new(),
            in_create: None,
            skipped: BTreeMap::new(),
            last_line: Vec::new(),
            tool: String::new(),
            binlog: None,
        }
    }

    /// Reads the whole dump.
    pub fn feed(&mut self, mut input: impl BufRead) -> std::io::Result<()> {
        let mut line = Vec::with_capacity(1 << 20);
        loop {
            line.clear();
            if input.read_until(b'\n', &mut line)? == 0 {
                return Ok(());
            }
            self.line(&line).map_err(std::io::Error::other)?;
        }
    }

    fn write(&mut self, b: &[u8]) -> cairn_repo::Result<()> {
        self.w.write(b)
    }

    fn record(&mut self, b: &[u8]) -> cairn_repo::Result<()> {
        self.w.write(b)?;
        self.w.end_record()
    }

    fn line(&mut self, line: &[u8]) -> cairn_repo::Result<()> {
        if line.iter().any(|b| !b.is_ascii_whitespace()) {
            self.last_line.clear();
            self.last_line.extend_from_slice(line);
        }
        if self.insert.is_some() {
            return self.insert_bytes(line);
        }
        if self.tool.is_empty() {
            for p in ["-- MariaDB dump", "-- MySQL dump"] {
                if line.starts_with(p.as_bytes()) {
                    self.tool = String::from_utf8_lossy(&line[3..]).trim().to_string();
                }
            }
        }
        if self.phase == Phase::Prelude && self.binlog.is_none() {
            self.binlog = binlog_position(line);
        }
        if line == b"--\n" && !self.held_dashes {
            self.held_dashes = true;
            return Ok(());
        }
        if self.held_dashes {
            self.held_dashes = false;
            if let Some((kind, name)) = self.header(line) {
                self.phase = Phase::Body;
                self.sections.start(&mut self.w, kind, &name, "")?;
            }
            self.record(b"--\n")?;
        }
        if line.starts_with(b"/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE")
            && self.phase != Phase::Epilogue
        {
            self.phase = Phase::Epilogue;
            self.sections
                .start(&mut self.w, SectionKind::Epilogue, "", "")?;
        }
        if let Some(t) = &self.in_create {
            if line.starts_with(b"  `") {
                let col = backquoted(line);
                self.columns.entry(t.clone()).or_default().push(col);
            } else if line.starts_with(b")") {
                self.in_create = None;
            }
        }
        if line.starts_with(b"CREATE TABLE `") {
            let t = backquoted(line);
            if self.opts.skip_rows.iter().any(|f| f.table == t) {
                self.columns.remove(&t);
                self.in_create = Some(t);
            }
        }
        if line.starts_with(b"INSERT INTO `") {
            return self.start_insert(line);
        }
        self.record(line)
    }

    fn header(&self, line: &[u8]) -> Option<(SectionKind, String)> {
        let rest = line.strip_prefix(b"-- ")?;
        let kinds: [(&[u8], SectionKind); 7] = [
            (b"Table structure for table `", SectionKind::Table),
            (b"Dumping data for table `", SectionKind::Table),
            (b"Temporary table structure for view `", SectionKind::View),
            (b"Temporary view structure for view `", SectionKind::View),
            (b"Final view structure for view `", SectionKind::View),
            (b"Dumping events for database", SectionKind::Events),
            (b"Dumping routines for database", SectionKind::Routines),
        ];
        let (p, kind) = kinds.iter().find(|(p, _)| rest.starts_with(p))?;
        let name = if kind == &SectionKind::Events || kind == &SectionKind::Routines {
            String::new()
        } else {
            backquoted(line)
        };
        if p.starts_with(b"Dumping data") {
            // The data of the table whose structure came just before.
            let same = self.sections.open_is(SectionKind::Table, &name);
            if same {
                return None;
            }
        }
        Some((*kind, name))
    }

    fn start_insert(&mut self, line: &[u8]) -> cairn_repo::Result<()> {
        let table = backquoted(line);
        let Some(vpos) = find(line, b" VALUES") else {
            return self.record(line);
        };
        let mut hend = vpos + 7;
        while hend < line.len() && (line[hend] == b' ' || line[hend] == b'\n') {
            hend += 1;
        }
        let mode = if self.opts.skips_data_of(&table) {
            InsertMode::Drop
        } else if let Some(f) = self.opts.skip_rows.iter().find(|f| f.table == table) {
            match self
                .columns
                .get(&table)
                .and_then(|c| c.iter().position(|c| *c == f.column))
            {
                Some(col) => InsertMode::Filter {
                    col,
                    prefixes: f.prefixes.clone(),
                    tuple: Vec::new(),
                    held: None,
                },
                None => {
                    tracing::warn!(
                        table,
                        column = f.column,
                        "column not found in the dump; rows kept"
                    );
                    InsertMode::Pass
                }
            }
        } else {
            InsertMode::Pass
        };
        if matches!(mode, InsertMode::Pass) {
            self.write(&line[..hend])?;
        }
        self.insert = Some(Insert {
            table,
            header: line[..vpos + 7].to_vec(),
            mode,
            scan: Scan::default(),
            after_row: false,
        });
        self.insert_bytes(&line[hend..])
    }

    /// Feeds the bytes of an INSERT's VALUES list, row by row.
    fn insert_bytes(&mut self, b: &[u8]) -> cairn_repo::Result<()> {
        let mut ins = self.insert.take().expect("in an insert");
        let mut from = 0;
        let mut i = 0;
        let mut done = false;
        while i < b.len() {
            let c = b[i];
            let s = &mut ins.scan;
            if let Some(q) = s.quote {
                if s.escape {
                    s.escape = false;
                } else {
                    // Most of a dump is quoted text: jump to the next byte
                    // that escapes or closes it.
                    let Some(k) = memchr::memchr2(b'\\', q, &b[i..]) else {
                        i = b.len();
                        continue;
                    };
                    i += k;
                    if b[i] == b'\\' {
                        s.escape = true;
                    } else {
                        s.quote = None;
                    }
                }
            } else if ins.after_row {
                if c == b',' || c == b';' {
                    // The record ends after the separator and its newline.
                    let mut end = i + 1;
                    if end < b.len() && b[end] == b'\n' {
                        end += 1;
                    }
                    let last = c == b';';
                    ins.after_row = false;
                    self.row_end(&mut ins, &b[from..end], last)?;
                    from = end;
                    i = end;
                    if last {
                        done = true;
                        break;
                    }
                    continue;
                }
            } else {
                match c {
                    b'\'' | b'"' => s.quote = Some(c),
                    b'(' => {
                        s.depth += 1;
                        if s.depth == 1 {
                            if let InsertMode::Filter { tuple, .. } = &mut ins.mode {
                                tuple.clear();
                                from = i;
                            }
                        }
                    }
                    b')' => {
                        s.depth = s.depth.saturating_sub(1);
                        if s.depth == 0 {
                            ins.after_row = true;
                            if let Some(r) = self.sections.current().and_then(|s| s.rows.as_mut()) {
                                if !matches!(ins.mode, InsertMode::Drop) {
                                    *r += 1;
                                }
                            }
                            if let InsertMode::Filter { tuple, .. } = &mut ins.mode {
                                tuple.extend_from_slice(&b[from..=i]);
                                from = i + 1;
                            }
                        }
                    }
                    _ => {}
                }
            }
            i += 1;
        }
        if !done {
            match &mut ins.mode {
                InsertMode::Pass => self.write(&b[from..])?,
                InsertMode::Filter { tuple, .. } if ins.scan.depth > 0 => {
                    tuple.extend_from_slice(&b[from..])
                }
                _ => {}
            }
            self.insert = Some(ins);
            return Ok(());
        }
        // Whatever follows the statement on its line is an ordinary record.
        if from < b.len() {
            self.record(&b[from..])?;
        }
        Ok(())
    }

    /// A row and its separator ended; `bytes` is the unwritten rest of it.
    fn row_end(&mut self, ins: &mut Insert, bytes: &[u8], last: bool) -> cairn_repo::Result<()> {
        match &mut ins.mode {
            InsertMode::Pass => self.record(bytes),
            InsertMode::Drop => Ok(()),
            InsertMode::Filter {
                col,
                prefixes,
                tuple,
                held,
            } => {
                let keep = !field(tuple, *col).is_some_and(|f| {
                    prefixes.iter().any(|p| {
                        f.len() > p.len() && f[0] == b'\'' && f[1..].starts_with(p.as_bytes())
                    })
                });
                if keep {
                    if let Some(prev) = held.take() {
                        self.w.write(&prev)?;
                        self.w.write(b",\n")?;
                        self.w.end_record()?;
                    } else {
                        self.w.write(&ins.header)?;
                        self.w.write(b"\n")?;
                    }
                    *held = Some(std::mem::take(tuple));
                } else {
                    *self.skipped.entry(ins.table.clone()).or_default() += 1;
                    if let Some(r) = self.sections.current().and_then(|s| s.rows.as_mut()) {
                        *r -= 1;
                    }
                }
                if last {
                    if let Some(prev) = held.take() {
                        self.w.write(&prev)?;
                        self.w.write(b";\n")?;
                        self.w.end_record()?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Closes the stream; fails if the dump was cut short.
    pub(crate) fn finish(mut self) -> Result<Dumped, String> {
        if self.held_dashes {
            self.record(b"--\n").map_err(|e| e.to_string())?;
        }
        let last = String::from_utf8_lossy(&self.last_line).trim().to_string();
        let complete = self.insert.is_none()
            && self.phase == Phase::Epilogue
            && last.starts_with("-- Dump completed");
        if !complete {
            let at = self
                .sections
                .current()
                .map(|s| format!("{:?} {}", s.kind, s.name))
                .unwrap_or_default();
            return Err(format!(
                "the dump ended early (no \"-- Dump completed\" line; last section: {})",
                at.trim()
            ));
        }
        let sections = self
            .sections
            .finish(&mut self.w)
            .map_err(|e| e.to_string())?;
        let (content, size) = self.w.finish().map_err(|e| e.to_string())?;
        Ok(Dumped {
            content,
            size,
            sections,
            tool: self.tool,
            rows_skipped: self.skipped.into_iter().collect(),
            binlog: self.binlog,
        })
    }
}

/// `-- CHANGE MASTER TO MASTER_LOG_FILE='binlog.000003', MASTER_LOG_POS=1234;`
fn binlog_position(line: &[u8]) -> Option<crate::binlog::BinlogPosition> {
    let rest = line.strip_prefix(b"-- CHANGE MASTER TO MASTER_LOG_FILE='")?;
    let rest = std::str::from_utf8(rest).ok()?;
    let (file, rest) = rest.split_once('\'')?;
    let pos = rest.strip_prefix(", MASTER_LOG_POS=")?;
    let pos = pos.trim_end().trim_end_matches(';');
    Some(crate::binlog::BinlogPosition {
        file: file.to_string(),
        position: pos.parse().ok()?,
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Field `k` (0-based) of a row `(a,'b',…)`, raw as dumped.
fn field(tuple: &[u8], k: usize) -> Option<&[u8]> {
    let inner = tuple.strip_prefix(b"(")?.strip_suffix(b")")?;
    let mut start = 0;
    let mut n = 0;
    let mut quote = None;
    let mut escape = false;
    for (i, &c) in inner.iter().enumerate() {
        if let Some(q) = quote {
            if escape {
                escape = false;
            } else if c == b'\\' {
                escape = true;
            } else if c == q {
                quote = None;
            }
        } else if c == b'\'' || c == b'"' {
            quote = Some(c);
        } else if c == b',' {
            if n == k {
                return Some(&inner[start..i]);
            }
            n += 1;
            start = i + 1;
        }
    }
    (n == k).then(|| &inner[start..])
}

impl Sections {
    fn open_is(&self, kind: SectionKind, name: &str) -> bool {
        self.open
            .as_ref()
            .is_some_and(|(s, _)| s.kind == kind && s.name == name)
    }
}

/// `[client]` options for the MariaDB tools, in a 0600 file: the password
/// never reaches argv.
fn defaults_file(conn: &Connection) -> Result<Option<SecretFile>> {
    if conn.host.is_none()
        && conn.port.is_none()
        && conn.socket.is_none()
        && conn.user.is_none()
        && conn.password.is_none()
    {
        return Ok(None);
    }
    // Option-file values: quoted, with backslash escapes.
    let q = |v: &str| {
        format!(
            "\"{}\"",
            v.replace('\\', "\\\\")
                .replace('\n', "\\n")
                .replace('\r', "\\r")
        )
    };
    let mut s = String::from("[client]\n");
    if let Some(h) = &conn.host {
        s += &format!("host={}\n", q(h));
    }
    if let Some(p) = conn.port {
        s += &format!("port={p}\n");
        if conn.host.is_none() && conn.socket.is_none() {
            s += "protocol=tcp\n";
        }
    }
    if let Some(p) = &conn.socket {
        s += &format!("socket={}\n", q(&p.display().to_string()));
    }
    if let Some(u) = &conn.user {
        s += &format!("user={}\n", q(u));
    }
    if let Some(p) = &conn.password {
        s += &format!("password={}\n", q(p));
    }
    SecretFile::new("client.cnf", &s).map(Some)
}

/// The MariaDB tools logged in as `conn`: one defaults file for every
/// command made from it, removed when the client is dropped.
pub(crate) struct Client {
    defaults: Option<SecretFile>,
}

impl Client {
    pub(crate) fn new(conn: &Connection) -> Result<Client> {
        Ok(Client {
            defaults: defaults_file(conn)?,
        })
    }

    /// The first of `tools` found, with the defaults file as first argument.
    pub(crate) fn command(&self, tools: &[&str]) -> Command {
        let mut cmd = Command::new(find_tool(tools));
        if let Some(d) = &self.defaults {
            cmd.arg(format!("--defaults-file={}", d.path.display()));
        }
        cmd
    }

    /// Runs one statement with the `mariadb` client; tab-separated rows back.
    pub(crate) fn query(&self, db: Option<&str>, sql: &str) -> Result<String, String> {
        let mut cmd = self.command(&["mariadb", "mysql"]);
        cmd.args(["--batch", "--skip-column-names", "-e", sql]);
        if let Some(db) = db {
            cmd.arg(db);
        }
        run_capture(cmd, "mariadb")
    }
}

pub(crate) fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.starts_with('-') || name.contains('\0') {
        return Err(DbError::Invalid(format!("bad {what} name {name:?}")));
    }
    Ok(())
}

pub(crate) fn dump(conn: &Connection, opts: &DumpOptions, w: StreamWriter) -> Result<Dumped> {
    check_name("database", &conn.database)?;
    for t in &opts.tables {
        check_name("table", t)?;
    }
    let client = Client::new(conn)?;
    let tool = find_tool(&["mariadb-dump", "mysqldump"]);
    let mut cmd = client.command(&[&tool]);
    // With the binary log on, the dump records its place in it: the start
    // of a point-in-time replay. MariaDB's tool takes it from the
    // transaction's snapshot (no global lock, no extra privilege) where the
    // server has `binlog_snapshot_position` (MariaDB); elsewhere (MySQL) it
    // would lock every table and need RELOAD, so it is not asked for.
    let snapshot_position = || {
        client
            .query(None, "SHOW STATUS LIKE 'binlog_snapshot_position'")
            .is_ok_and(|v| v.starts_with("Binlog_snapshot_position"))
    };
    if tool == "mariadb-dump"
        && client
            .query(None, "SELECT @@log_bin")
            .is_ok_and(|v| v.trim() == "1")
        && snapshot_position()
    {
        cmd.arg("--master-data=2");
    }
    cmd.args([
        "--single-transaction",
        "--quick",
        "--routines",
        "--triggers",
        "--events",
        "--order-by-primary",
        "--hex-blob",
        "--default-character-set=utf8mb4",
        NET_BUFFER,
    ]);
    match opts.mode {
        Mode::Full => {}
        Mode::StructureOnly => {
            cmd.arg("--no-data");
        }
        Mode::DataOnly => {
            cmd.arg("--no-create-info");
        }
    }
    cmd.arg(&conn.database).args(&opts.tables);
    let fail = |cause: String| DbError::Dump {
        engine: Engine::Mariadb,
        database: conn.database.clone(),
        cause,
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run mariadb-dump or mysqldump: {e}")))?;
    let stderr = StderrTail::collect(child.stderr.take().expect("piped"));
    let stdout = child.stdout.take().expect("piped");
    let mut parser = SqlDumpParser::new(w, opts);
    let fed = parser.feed(BufReader::with_capacity(1 << 20, stdout));
    let status = finish_child(child, stderr, "mariadb-dump");
    drop(client);
    // The tool's own failure explains a broken stream best.
    status.map_err(&fail)?;
    fed.map_err(|e| fail(format!("reading the dump: {e}")))?;
    parser.finish().map_err(fail)
}

pub(crate) fn restore(conn: &Connection, input: &mut dyn Read) -> Result<()> {
    check_name("database", &conn.database)?;
    let fail = |cause: String| DbError::Restore {
        engine: Engine::Mariadb,
        database: conn.database.clone(),
        cause,
    };
    let client = Client::new(conn)?;
    client
        .query(
            None,
            &format!(
                "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4",
                ident(&conn.database)
            ),
        )
        .map_err(&fail)?;
    let mut cmd = client.command(&["mariadb", "mysql"]);
    cmd.args([
        "--default-character-set=utf8mb4",
        "--max-allowed-packet=1G",
        "--batch",
    ])
    .arg(&conn.database);
    run_with_input(cmd, "mariadb", input).map_err(|cause| {
        // The server drops the connection on a statement over its limit, and
        // the client can only say the server has gone away.
        if !cause.contains("gone away") && !cause.contains("Lost connection") {
            return fail(cause);
        }
        let limit = client
            .query(None, "SELECT @@GLOBAL.max_allowed_packet")
            .map(|v| format!("{} bytes", v.trim()))
            .unwrap_or_else(|_| "unknown".into());
        fail(format!(
            "{} (a server closes the connection on a statement larger than its \
             max_allowed_packet, here {limit}: a dump with large rows needs it raised; \
             otherwise see the server's error log)",
            cause.trim_end()
        ))
    })
}

/// Whether `conn.database` exists and has tables: a load into it replaces
/// them one by one.
pub(crate) fn holds_tables(conn: &Connection) -> Result<bool> {
    check_name("database", &conn.database)?;
    let out = Client::new(conn)?
        .query(
            None,
            &format!(
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {}",
                literal(&conn.database)
            ),
        )
        .map_err(|cause| DbError::Restore {
            engine: Engine::Mariadb,
            database: conn.database.clone(),
            cause,
        })?;
    Ok(out.trim() != "0")
}

fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

pub(crate) fn verify(conn: &Connection, tables: &[&Section]) -> Result<Vec<String>> {
    let db = conn.database.as_str();
    let err = |cause: String| DbError::Restore {
        engine: Engine::Mariadb,
        database: db.to_string(),
        cause,
    };
    let client = Client::new(conn)?;
    let query = |sql: &str| client.query(Some(db), sql);
    let present = query("SHOW FULL TABLES WHERE Table_type = 'BASE TABLE'").map_err(err)?;
    let present: Vec<&str> = present
        .lines()
        .filter_map(|l| l.split('\t').next())
        .collect();
    let mut problems = Vec::new();
    for t in tables {
        if !present.contains(&t.name.as_str()) {
            problems.push(format!("table {} is missing", t.name));
            continue;
        }
        let n = query(&format!("SELECT COUNT(*) FROM {}", ident(&t.name))).map_err(err)?;
        let n: u64 = n.trim().parse().unwrap_or(u64::MAX);
        if Some(n) != t.rows {
            problems.push(format!(
                "table {} has {n} rows, the dump recorded {}",
                t.name,
                t.rows.unwrap_or(0)
            ));
        }
        let check = query(&format!("CHECK TABLE {}", ident(&t.name))).map_err(err)?;
        // Rows: Table, Op, Msg_type, Msg_text; the last status row must say OK.
        let status = check
            .lines()
            .rfind(|l| l.split('\t').nth(2) == Some("status"))
            .and_then(|l| l.split('\t').nth(3))
            .unwrap_or("");
        if status != "OK" {
            problems.push(format!("CHECK TABLE {}: {}", t.name, check.trim()));
        }
    }
    Ok(problems)
}

/// Why a database cannot be swapped whole: views, triggers and routines
/// belong to their schema and cannot be renamed into another. Empty: it can.
pub(crate) fn swap_blockers(conn: &Connection, databases: &[&str]) -> Result<Vec<String>> {
    let list = databases
        .iter()
        .map(|d| literal(d))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT CONCAT('view ', TABLE_SCHEMA, '.', TABLE_NAME) FROM information_schema.VIEWS WHERE TABLE_SCHEMA IN ({list}) \
         UNION ALL SELECT CONCAT('trigger ', TRIGGER_SCHEMA, '.', TRIGGER_NAME) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA IN ({list}) \
         UNION ALL SELECT CONCAT('routine ', ROUTINE_SCHEMA, '.', ROUTINE_NAME) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA IN ({list})"
    );
    let out = Client::new(conn)?
        .query(None, &sql)
        .map_err(|cause| DbError::Restore {
            engine: Engine::Mariadb,
            database: conn.database.clone(),
            cause,
        })?;
    Ok(out.lines().map(str::to_string).collect())
}

/// Puts the tables of `stage` in place of those of `live` in one `RENAME
/// TABLE` (atomic: a reader sees all old tables or all new ones). The old
/// tables go to `old`, a new database, which the caller drops or keeps.
pub(crate) fn swap_in(conn: &Connection, live: &str, stage: &str, old: &str) -> Result<()> {
    for d in [live, stage, old] {
        check_name("database", d)?;
    }
    let client = Client::new(conn)?;
    let fail = |cause: String| DbError::Restore {
        engine: Engine::Mariadb,
        database: live.to_string(),
        cause,
    };
    let tables = |db: &str| -> Result<Vec<String>> {
        let out = client
            .query(
                None,
                &format!(
                    "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_TYPE = 'BASE TABLE'",
                    literal(db)
                ),
            )
            .map_err(fail)?;
        Ok(out.lines().map(str::to_string).collect())
    };
    let (now, new) = (tables(live)?, tables(stage)?);
    client
        .query(
            None,
            &format!("CREATE DATABASE {} CHARACTER SET utf8mb4", ident(old)),
        )
        .map_err(fail)?;
    let moves: Vec<String> = now
        .iter()
        .map(|t| {
            format!(
                "{}.{} TO {}.{}",
                ident(live),
                ident(t),
                ident(old),
                ident(t)
            )
        })
        .chain(new.iter().map(|t| {
            format!(
                "{}.{} TO {}.{}",
                ident(stage),
                ident(t),
                ident(live),
                ident(t)
            )
        }))
        .collect();
    if !moves.is_empty() {
        client
            .query(None, &format!("RENAME TABLE {}", moves.join(", ")))
            .map_err(fail)?;
    }
    Ok(())
}

/// A SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// Creates an empty database `name`; the server's refusal as the error.
pub(crate) fn create_database(conn: &Connection, name: &str) -> Result<(), String> {
    check_name("database", name).map_err(|e| e.to_string())?;
    Client::new(conn)
        .map_err(|e| e.to_string())?
        .query(
            None,
            &format!("CREATE DATABASE {} CHARACTER SET utf8mb4", ident(name)),
        )
        .map(drop)
}

pub(crate) fn drop_database(conn: &Connection, name: &str) -> Result<()> {
    Client::new(conn)?
        .query(None, &format!("DROP DATABASE IF EXISTS {}", ident(name)))
        .map_err(|cause| DbError::Restore {
            engine: Engine::Mariadb,
            database: name.to_string(),
            cause,
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dump stored the way `cairnctl repo backup-db --from-file` stores
    /// it, then read back: its bytes and its manifest.
    fn stored_back(dump: &[u8]) -> (Vec<u8>, crate::Manifest) {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let repo = cairn_repo::Repository::init(
            std::sync::Arc::new(cairn_repo::storage::LocalStorage::new(dir.path())),
            b"pw",
            Default::default(),
            cairn_repo::keys::KdfParams {
                m_cost_kib: 8,
                t_cost: 1,
                p_cost: 1,
            },
        )
        .unwrap();
        let conn = crate::Connection {
            database: "shop".into(),
            ..Default::default()
        };
        let progress = std::sync::atomic::AtomicU64::new(0);
        let req = crate::BackupRequest {
            engine: crate::Engine::Mariadb,
            conn: &conn,
            options: DumpOptions::default(),
            domain: "shop.test",
            host: "h",
            writer: Some("h"),
            base: None,
            tags: &[],
            progress: &progress,
        };
        let (_, snap, _) = crate::backup_stream(&repo, dump, req).unwrap();
        let stored = crate::stored_dumps(&repo, &snap).unwrap().remove(0);
        let mut bytes = Vec::new();
        cairn_repo::stream::ContentReader::new(&repo, stored.content.iter().copied())
            .read_to_end(&mut bytes)
            .unwrap();
        (bytes, stored.manifest)
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(24))]
        /// Quotes, escapes and the characters that end rows and statements
        /// inside strings (a raw newline too, as some exporters write) never
        /// split a row: every row is counted once, and the dump reads back
        /// byte for byte.
        #[test]
        fn rows_are_found_whatever_their_strings_hold(
            values in proptest::collection::vec("[a-z(),;'\"\\\\\n]{0,12}", 1..120),
            per_insert in 1usize..40,
        ) {
            let escape = |v: &str| {
                let mut out = String::new();
                for c in v.chars() {
                    match c {
                        '\\' | '\'' | '"' => { out.push('\\'); out.push(c) }
                        _ => out.push(c),
                    }
                }
                out
            };
            let mut dump = String::from("-- MariaDB dump 10.19  Distrib 10.11.6-MariaDB\n\n");
            dump += "--\n-- Table structure for table `t`\n--\n\n";
            dump += "CREATE TABLE `t` (\n  `id` int NOT NULL,\n  `v` text,\n  PRIMARY KEY (`id`)\n);\n\n";
            dump += "--\n-- Dumping data for table `t`\n--\n\n";
            for (n, insert) in values.chunks(per_insert).enumerate() {
                let rows: Vec<String> = insert
                    .iter()
                    .enumerate()
                    .map(|(i, v)| format!("({},'{}')", n * per_insert + i, escape(v)))
                    .collect();
                dump += &format!("INSERT INTO `t` VALUES {};\n", rows.join(","));
            }
            dump += "/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n\n-- Dump completed on 2026-12-04  0:00:00\n";
            let (bytes, manifest) = stored_back(dump.as_bytes());
            proptest::prop_assert!(bytes == dump.as_bytes(), "the dump reads back as it was");
            let t = manifest.sections.iter().find(|s| s.name == "t").expect("a section for t");
            proptest::prop_assert_eq!(t.rows, Some(values.len() as u64));
        }
    }

    #[test]
    fn fields_respect_quotes() {
        let t = br"(1,'a,b','it\'s',NULL)";
        assert_eq!(field(t, 0), Some(&b"1"[..]));
        assert_eq!(field(t, 1), Some(&b"'a,b'"[..]));
        assert_eq!(field(t, 2), Some(&br"'it\'s'"[..]));
        assert_eq!(field(t, 3), Some(&b"NULL"[..]));
        assert_eq!(field(t, 4), None);
    }

    #[test]
    fn names_in_backquotes() {
        assert_eq!(
            backquoted(b"-- Table structure for table `wp_posts`\n"),
            "wp_posts"
        );
        assert_eq!(backquoted(b"CREATE TABLE `a``b` ("), "a`b");
    }
}
