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
    definition: String,
    copy_stmt: String,
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
        // Grown as bytes arrive: a length read from the archive allocates no
        // more than the archive holds.
        let mut b = vec![0; n.min(1 << 20)];
        let mut got = 0;
        while got < n {
            if got == b.len() {
                b.resize(n.min(2 * got), 0);
            }
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
        let definition = self.string()?;
        self.string()?; // drop statement
        let copy_stmt = self.string()?;
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
            if n > 32 {
                return Err(format!("implausible dependency of {n} bytes in the TOC"));
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
            definition,
            copy_stmt,
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
    let keys = key_columns(&toc);
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
            BLK_DATA => chunks(&mut a, &mut sections, keys.get(&id).map(Vec::as_slice))?,
            BLK_BLOBS => loop {
                if a.int()? == 0 {
                    break;
                }
                chunks(&mut a, &mut sections, None)?;
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

/// Length-prefixed chunks up to a zero length; counts COPY rows. With `key`
/// (the primary key's columns), rows are passed on in key order.
fn chunks<S: Source>(
    a: &mut Archive<S>,
    sections: &mut Sections,
    key: Option<&[usize]>,
) -> Result<(), String> {
    chunks_sorted_within(a, sections, key, SORT_LIMITS)
}

fn chunks_sorted_within<S: Source>(
    a: &mut Archive<S>,
    sections: &mut Sections,
    key: Option<&[usize]>,
    limits: SortLimits,
) -> Result<(), String> {
    let mut ended = false;
    let mut held = key.map(|key| HeldRows {
        key,
        head_len: 1 + a.int_size,
        limits,
        bytes: Vec::new(),
        rows: Vec::new(),
        runs: Vec::new(),
    });
    loop {
        let head = a.raw(1 + a.int_size)?;
        let n = a.decode_int(&head);
        if n <= 0 {
            if let Some(held) = held.take() {
                held.pass_on(a)?;
            }
            a.src.forward(&head)?;
            return a.src.end_record();
        }
        if n > MAX_CHUNK {
            return Err(format!(
                "implausible data chunk of {n} bytes in the archive (PostgreSQL rows are under 1 GiB)"
            ));
        }
        let data = a.raw(n as usize)?;
        let mut is_row = false;
        if !ended {
            if data.starts_with(b"\\.\n") {
                ended = true;
            } else {
                let lines = data.iter().filter(|&&b| b == b'\n').count();
                is_row = lines == 1 && data.ends_with(b"\n");
                if let Some(rows) = sections.current().and_then(|s| s.rows.as_mut()) {
                    *rows += lines as u64;
                }
            }
        }
        if let Some(h) = &mut held {
            if is_row
                && (h.memory() + ROW_MEMORY + head.len() + data.len() <= limits.memory || h.spill())
            {
                h.hold(&head, &data);
                continue;
            }
            // Not a plain row, or too many to sort: the rest keeps heap order.
            if is_row {
                // Worth an operator's notice: this table's days dedup worse.
                tracing::info!(
                    table = sections.current().map(|s| s.name.as_str()).unwrap_or_default(),
                    sorted_runs = h.runs.len(),
                    "table too large to sort whole by primary key; its remaining rows are stored in heap order"
                );
            }
            held.take().expect("held").pass_on(a)?;
        }
        a.src.forward(&head)?;
        a.src.forward(&data)?;
        a.src.end_record()?;
    }
}

/// The largest data chunk accepted: a COPY row is under PostgreSQL's 1 GiB
/// allocation limit.
const MAX_CHUNK: i64 = 1 << 30;

/// How much of one table is sorted: up to `memory` bytes of rows at a time,
/// and up to `runs` such sorted runs, zstd-compressed in memory to at most
/// `compressed` bytes in all, merged at the table's end. The rows of a larger
/// table past them keep heap order. Nothing goes to disk (a dump is never
/// staged there), so a 2 GiB table costs no more memory than a 300 MB one.
#[derive(Clone, Copy)]
struct SortLimits {
    memory: usize,
    runs: usize,
    compressed: usize,
}

const SORT_LIMITS: SortLimits = SortLimits {
    memory: 64 << 20,
    runs: 64,
    compressed: 96 << 20,
};

/// A table's rows, stored in primary-key order rather than heap order.
///
/// PostgreSQL writes an updated row wherever the heap has room (usually its
/// end), so a dump in heap order moves every row updated since the last dump,
/// and each move changes two chunks that would otherwise deduplicate. In key
/// order an unchanged row stays where it was and a new one (a larger serial
/// id) goes at the end. Restores do not depend on the order: COPY loads a set,
/// and pg_restore adds constraints, indexes and triggers after the data.
struct HeldRows<'k> {
    /// Positions of the primary key's columns in the COPY row.
    key: &'k [usize],
    head_len: usize,
    limits: SortLimits,
    /// Each row's chunk header and bytes, as they came.
    bytes: Vec<u8>,
    /// Where each row is in `bytes` (under `limits.memory` plus one chunk
    /// of at most `MAX_CHUNK`, so u32 holds it).
    rows: Vec<(u32, u32)>,
    /// Earlier rows of the table, each run sorted (see `compress_run`).
    runs: Vec<Vec<u8>>,
}

fn range(&(start, end): &(u32, u32)) -> std::ops::Range<usize> {
    start as usize..end as usize
}

/// What a held row costs beside its bytes: its place in `rows` and its key
/// while sorting.
const ROW_MEMORY: usize =
    std::mem::size_of::<(u32, u32)>() + std::mem::size_of::<(RowKey, (u32, u32))>();

impl HeldRows<'_> {
    /// The memory the held rows take, sorting included.
    fn memory(&self) -> usize {
        self.bytes.len() + self.rows.len() * ROW_MEMORY
    }

    fn hold(&mut self, head: &[u8], data: &[u8]) {
        let start = self.bytes.len() as u32;
        let needed = self.bytes.len() + head.len() + data.len();
        if needed > self.bytes.capacity() {
            // Doubling, but not past the limit: a Vec left to double from
            // 64 MiB would hold 128 MiB, and briefly both.
            let limit = self
                .limits
                .memory
                .saturating_sub(self.rows.len() * ROW_MEMORY);
            let want = (2 * self.bytes.capacity()).min(limit).max(needed);
            self.bytes.reserve_exact(want - self.bytes.len());
        }
        self.bytes.extend_from_slice(head);
        self.bytes.extend_from_slice(data);
        self.rows.push((start, self.bytes.len() as u32));
    }

    /// The held rows in key order (stable: equal keys keep their order).
    fn sorted(&self) -> Vec<(u32, u32)> {
        let mut keyed: Vec<(RowKey, (u32, u32))> = self
            .rows
            .iter()
            .map(|r| {
                (
                    row_key(&self.bytes[range(r)][self.head_len..], self.key),
                    *r,
                )
            })
            .collect();
        keyed.sort_by(|x, y| x.0.cmp(&y.0));
        keyed.into_iter().map(|(_, r)| r).collect()
    }

    /// Compresses the held rows, sorted, into a run to make room; false
    /// (holding them still) once the runs would pass their limits.
    fn spill(&mut self) -> bool {
        if self.rows.is_empty() {
            return true;
        }
        let compressed: usize = self.runs.iter().map(Vec::len).sum();
        if self.runs.len() >= self.limits.runs || compressed >= self.limits.compressed {
            return false;
        }
        let run = self.compress_run();
        if compressed + run.len() > self.limits.compressed {
            return false;
        }
        self.runs.push(run);
        self.bytes.clear();
        self.rows.clear();
        true
    }

    /// The held rows in key order, each as `u32 LE length | chunk header and
    /// bytes`, in one zstd frame (level 1: fast, and COPY text shrinks ~3×).
    fn compress_run(&self) -> Vec<u8> {
        use std::io::Write;
        let mut z = zstd::stream::write::Encoder::new(Vec::with_capacity(self.bytes.len() / 3), 1)
            .expect("zstd level 1");
        for r in self.sorted() {
            let row = &self.bytes[range(&r)];
            // Writes to a Vec do not fail.
            z.write_all(&(row.len() as u32).to_le_bytes())
                .expect("in memory");
            z.write_all(row).expect("in memory");
        }
        let mut run = z.finish().expect("in memory");
        run.shrink_to_fit();
        run
    }

    /// Passes the held rows on in key order: merged with the runs, if any.
    fn pass_on<S: Source>(self, a: &mut Archive<S>) -> Result<(), String> {
        let order = self.sorted();
        if self.runs.is_empty() {
            for r in &order {
                a.src.forward(&self.bytes[range(r)])?;
                a.src.end_record()?;
            }
            return Ok(());
        }
        let reading = |e: std::io::Error| format!("merging a table's sorted rows: {e}");
        let mut runs = Vec::with_capacity(self.runs.len());
        for run in &self.runs {
            // Buffered above the decoder: rows are read a few bytes at a time.
            let decoder = zstd::stream::read::Decoder::with_buffer(&run[..]).map_err(reading)?;
            runs.push(std::io::BufReader::with_capacity(64 << 10, decoder));
        }
        // Sources 0..runs.len() are the runs in the order they were written,
        // the last one the rows still held: on equal keys, earlier rows first.
        let held = runs.len();
        let mut current: Vec<Vec<u8>> = vec![Vec::new(); held];
        let mut next_held = 0;
        let mut heap = std::collections::BinaryHeap::new();
        let key_of = |row: &[u8]| OwnedKey::of(&row_key(&row[self.head_len..], self.key));
        for (i, run) in runs.iter_mut().enumerate() {
            if let Some(row) = next_run_row(run, self.head_len).map_err(reading)? {
                heap.push(std::cmp::Reverse((key_of(&row), i)));
                current[i] = row;
            }
        }
        if let Some(r) = order.first() {
            heap.push(std::cmp::Reverse((key_of(&self.bytes[range(r)]), held)));
        }
        while let Some(std::cmp::Reverse((_, i))) = heap.pop() {
            if i == held {
                a.src.forward(&self.bytes[range(&order[next_held])])?;
                next_held += 1;
                if let Some(r) = order.get(next_held) {
                    heap.push(std::cmp::Reverse((key_of(&self.bytes[range(r)]), held)));
                }
            } else {
                a.src.forward(&current[i])?;
                if let Some(row) = next_run_row(&mut runs[i], self.head_len).map_err(reading)? {
                    heap.push(std::cmp::Reverse((key_of(&row), i)));
                    current[i] = row;
                }
            }
            a.src.end_record()?;
        }
        Ok(())
    }
}

/// The next row of a run, or None at its end.
fn next_run_row(run: &mut impl Read, head_len: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0; 4];
    match run.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    // Our own bytes, but a length is checked before it is used all the same.
    if len <= head_len || len > head_len + MAX_CHUNK as usize {
        return Err(std::io::Error::other(format!("a row of {len} bytes")));
    }
    let mut row = vec![0; len];
    run.read_exact(&mut row)?;
    Ok(Some(row))
}

/// A `RowKey` that owns its text, for merging rows read from runs.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum OwnedPart {
    Int(i64),
    Text(Vec<u8>),
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct OwnedKey(Vec<OwnedPart>);

impl OwnedKey {
    /// Orders as the `RowKey` it came from (one table's keys all have the
    /// same number of columns).
    fn of(key: &RowKey) -> OwnedKey {
        let part = |p: &KeyPart| match p {
            KeyPart::Int(n) => OwnedPart::Int(*n),
            KeyPart::Text(t) => OwnedPart::Text(t.to_vec()),
        };
        OwnedKey(match key {
            RowKey::One(p) => vec![part(p)],
            RowKey::Many(ps) => ps.iter().map(part).collect(),
        })
    }
}

/// One key column's value: integers compare as numbers (so serial ids keep
/// their order and new rows go last), anything else as its COPY text.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum KeyPart<'a> {
    Int(i64),
    Text(&'a [u8]),
}

/// A row's key; most keys are one column, held without an allocation.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum RowKey<'a> {
    One(KeyPart<'a>),
    Many(Vec<KeyPart<'a>>),
}

/// The key of a COPY text row (tab-separated; tabs and newlines inside values
/// are escaped, so they never split a field).
fn row_key<'a>(row: &'a [u8], key: &[usize]) -> RowKey<'a> {
    let line = row.strip_suffix(b"\n").unwrap_or(row);
    let field = |i: usize| {
        let f = line.split(|&b| b == b'\t').nth(i).unwrap_or_default();
        match std::str::from_utf8(f).ok().and_then(|s| s.parse().ok()) {
            Some(n) => KeyPart::Int(n),
            None => KeyPart::Text(f),
        }
    };
    match key {
        [one] => RowKey::One(field(*one)),
        many => RowKey::Many(many.iter().map(|&i| field(i)).collect()),
    }
}

/// For each TABLE DATA entry whose table has a primary key, the positions
/// of the key's columns in its COPY statement. Anything pg_dump wrote in a
/// form not understood here leaves that table in heap order.
fn key_columns(toc: &[TocEntry]) -> HashMap<i64, Vec<usize>> {
    let primary: HashMap<Vec<String>, Vec<String>> = toc
        .iter()
        .filter(|e| e.desc == "CONSTRAINT")
        .filter_map(|e| primary_key(&e.definition))
        .collect();
    toc.iter()
        .filter(|e| e.desc == "TABLE DATA")
        .filter_map(|e| {
            let (table, columns) = copy_columns(&e.copy_stmt)?;
            let at = primary
                .get(&table)?
                .iter()
                .map(|k| columns.iter().position(|c| c == k))
                .collect::<Option<Vec<usize>>>()?;
            Some((e.dump_id, at))
        })
        .collect()
}

/// `ALTER TABLE [ONLY] <table>\n    ADD CONSTRAINT <name> PRIMARY KEY (<columns>)…`
fn primary_key(definition: &str) -> Option<(Vec<String>, Vec<String>)> {
    let rest = definition.strip_prefix("ALTER TABLE ")?;
    let rest = rest.strip_prefix("ONLY ").unwrap_or(rest);
    let (table, rest) = qualified_name(rest)?;
    let rest = rest.trim_start().strip_prefix("ADD CONSTRAINT ")?;
    let (_, rest) = ident(rest)?;
    let (columns, _) = ident_list(rest.strip_prefix(" PRIMARY KEY ")?)?;
    Some((table, columns))
}

/// `COPY <table> (<columns>) FROM stdin;`
fn copy_columns(stmt: &str) -> Option<(Vec<String>, Vec<String>)> {
    let (table, rest) = qualified_name(stmt.strip_prefix("COPY ")?)?;
    let (columns, rest) = ident_list(rest.strip_prefix(' ')?)?;
    rest.starts_with(" FROM stdin;").then_some((table, columns))
}

fn qualified_name(s: &str) -> Option<(Vec<String>, &str)> {
    let (first, mut rest) = ident(s)?;
    let mut name = vec![first];
    while let Some(r) = rest.strip_prefix('.') {
        let (part, r) = ident(r)?;
        name.push(part);
        rest = r;
    }
    Some((name, rest))
}

/// `(a, "B", c)`
fn ident_list(s: &str) -> Option<(Vec<String>, &str)> {
    let mut rest = s.strip_prefix('(')?;
    let mut names = Vec::new();
    loop {
        let (name, r) = ident(rest)?;
        names.push(name);
        if let Some(r) = r.strip_prefix(')') {
            return Some((names, r));
        }
        rest = r.strip_prefix(", ")?;
    }
}

/// An identifier as pg_dump writes it: bare (lower case, digits, `_`) or
/// double-quoted with `""` for a quote.
fn ident(s: &str) -> Option<(String, &str)> {
    if let Some(mut rest) = s.strip_prefix('"') {
        let mut name = String::new();
        loop {
            let end = rest.find('"')?;
            name.push_str(&rest[..end]);
            rest = &rest[end + 1..];
            match rest.strip_prefix('"') {
                Some(r) => {
                    name.push('"');
                    rest = r;
                }
                None => return Some((name, rest)),
            }
        }
    }
    let end = s
        .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        .unwrap_or(s.len());
    (end > 0).then(|| (s[..end].to_string(), &s[end..]))
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
/// sequences), but no other table or view; then what those need and the
/// target lacks (`present` says which it has): the table's schema, its enum
/// and domain types, its trigger functions, a partition's parent table.
fn toc_list(
    prelude: &[u8],
    tables: &[String],
    present: &mut dyn FnMut(&TocEntry) -> Result<bool, String>,
) -> Result<String, String> {
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
    // Upward: definitions the kept entries depend on. Data is never one.
    let by_id: HashMap<i64, &TocEntry> = toc.iter().map(|e| (e.dump_id, e)).collect();
    let mut seen: BTreeSet<i64> = keep.clone();
    let mut todo: Vec<i64> = keep.iter().copied().collect();
    let mut needed = Vec::new();
    while let Some(id) = todo.pop() {
        for d in &by_id[&id].deps {
            let Some(e) = by_id.get(d) else { continue };
            if e.has_data || !seen.insert(*d) {
                continue;
            }
            todo.push(*d);
            needed.push(*e);
        }
    }
    for e in needed {
        if !present(e)? {
            keep.insert(e.dump_id);
        }
    }
    Ok(toc
        .iter()
        .filter(|e| keep.contains(&e.dump_id))
        .map(|e| format!("{}; {} {} {}\n", e.dump_id, e.desc, e.namespace, e.tag))
        .collect())
}

/// How many relations the target database holds outside the system's
/// schemas: what a restore of it drops and makes again.
fn relations_in(pg: &Libpq) -> Result<usize, String> {
    let out = pg.psql(
        &pg.conn.database,
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'",
    )?;
    out.trim()
        .parse()
        .map_err(|_| format!("unexpected relation count {:?}", out.trim()))
}

/// How many entries the archive's TOC holds.
fn toc_len(prelude: &[u8]) -> Result<usize, String> {
    let mut a = Archive {
        src: prelude,
        int_size: 4,
        off_size: 8,
        vmin: 0,
    };
    Ok(a.header_and_toc()?.1.len())
}

/// Whether the target database already has what `e` creates. Kinds this
/// does not know are taken as missing: their entry is restored.
fn present_in(pg: &Libpq, e: &TocEntry) -> Result<bool, String> {
    let qualified = || quote_literal(&format!("{}.{}", quote_ident(&e.namespace), e.tag));
    let qualified_relation = || {
        quote_literal(&format!(
            "{}.{}",
            quote_ident(&e.namespace),
            quote_ident(&e.tag)
        ))
    };
    let test = match e.desc.as_str() {
        "SCHEMA" => format!(
            "SELECT count(*) FROM pg_namespace WHERE nspname = {}",
            quote_literal(&e.tag)
        ),
        "EXTENSION" => format!(
            "SELECT count(*) FROM pg_extension WHERE extname = {}",
            quote_literal(&e.tag)
        ),
        "TYPE" | "DOMAIN" => format!(
            "SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
             WHERE n.nspname = {} AND t.typname = {}",
            quote_literal(&e.namespace),
            quote_literal(&e.tag)
        ),
        // The tag is the signature, its name already quoted where needed.
        "FUNCTION" | "PROCEDURE" | "AGGREGATE" => format!(
            "SELECT count(*) WHERE to_regprocedure({}) IS NOT NULL",
            qualified()
        ),
        "COLLATION" => format!(
            "SELECT count(*) WHERE to_regcollation({}) IS NOT NULL",
            qualified_relation()
        ),
        "TABLE" | "SEQUENCE" | "VIEW" | "MATERIALIZED VIEW" => format!(
            "SELECT count(*) WHERE to_regclass({}) IS NOT NULL",
            qualified_relation()
        ),
        _ => return Ok(false),
    };
    Ok(pg.psql(&pg.conn.database, &test)?.trim() != "0")
}

/// Creates the target database unless it exists; returns whether it did.
fn ensure_database(pg: &Libpq) -> Result<bool, String> {
    let conn = pg.conn;
    let exists = pg.psql(
        "postgres",
        &format!(
            "SELECT 1 FROM pg_database WHERE datname = {}",
            quote_literal(&conn.database)
        ),
    )?;
    if exists.trim() == "1" {
        return Ok(true);
    }
    pg.psql(
        "postgres",
        &format!("CREATE DATABASE {}", quote_ident(&conn.database)),
    )?;
    Ok(false)
}

/// How many objects one transaction may lock on the target's server: its
/// shared lock table, `max_locks_per_transaction` × (`max_connections` +
/// `max_prepared_transactions`).
fn lock_room(pg: &Libpq) -> Result<usize, String> {
    let out = pg.psql(
        &pg.conn.database,
        "SELECT current_setting('max_locks_per_transaction')::bigint * \
         (current_setting('max_connections')::bigint + current_setting('max_prepared_transactions')::bigint)",
    )?;
    out.trim()
        .parse()
        .map_err(|_| format!("unexpected lock table size {:?}", out.trim()))
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
    let existed = ensure_database(&pg).map_err(&fail)?;
    let mut cmd = pg.command("pg_restore", &conn.database);
    cmd.args([
        "--no-owner",
        "--no-privileges",
        "--clean",
        "--if-exists",
        "--exit-on-error",
    ])
    .arg(format!("--dbname={}", conn.database));
    let mut input: Box<dyn Read + '_> = Box::new(input);
    // A stored dump's header and TOC, read ahead (an archive piped from a
    // live server has no sections).
    let prelude = match sections.iter().find(|s| s.kind == SectionKind::Prelude) {
        Some(p) => {
            // Grown as bytes arrive: a manifest's length sizes no allocation.
            let mut buf = Vec::new();
            (&mut input)
                .take(p.length)
                .read_to_end(&mut buf)
                .map_err(|e| fail(format!("reading the archive's TOC: {e}")))?;
            if buf.len() as u64 != p.length {
                return Err(fail(format!(
                    "the archive's TOC ended after {} of the {} bytes its manifest records",
                    buf.len(),
                    p.length
                )));
            }
            Some(buf)
        }
        None if tables.is_empty() => None,
        None => return Err(fail("the manifest has no prelude".into())),
    };
    let mut list_file = None;
    // Into a database that exists, `--clean` first drops what the archive
    // holds, and a view the archive does not know (or any failing statement)
    // can stop it halfway, the site's tables already gone: all or nothing,
    // where the server can lock every object in one transaction.
    let mut atomic = existed;
    if !tables.is_empty() {
        let prelude = prelude.as_deref().expect("checked above");
        let list = toc_list(prelude, tables, &mut |e| present_in(&pg, e)).map_err(&fail)?;
        let f = SecretFile::new("restore.list", &list)?;
        cmd.arg(format!("--use-list={}", f.path.display()));
        list_file = Some(f);
        atomic = true;
    } else if existed {
        let entries = match &prelude {
            Some(p) => toc_len(p),
            None => relations_in(&pg),
        }
        .map_err(&fail)?;
        let room = lock_room(&pg).map_err(&fail)?;
        // An entry locks a relation or two; leave the server half its table.
        if entries * 4 > room {
            atomic = false;
            tracing::warn!(
                database = %conn.database,
                entries,
                room,
                "restoring over the existing database without one transaction: it has too many \
                 objects for the server's lock table (raise max_locks_per_transaction \
                 for an all-or-nothing restore); a failure can leave it half restored"
            );
        }
    }
    if atomic {
        cmd.arg("--single-transaction");
    }
    if let Some(p) = prelude {
        input = Box::new(std::io::Cursor::new(p).chain(input));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Passes on into records instead of a repository.
    struct Recorded<'a> {
        input: &'a [u8],
        records: Vec<Vec<u8>>,
        open: Vec<u8>,
    }

    impl Source for Recorded<'_> {
        fn take(&mut self, n: usize) -> Result<Option<Vec<u8>>, String> {
            Source::take(&mut self.input, n)
        }
        fn forward(&mut self, bytes: &[u8]) -> Result<(), String> {
            self.open.extend_from_slice(bytes);
            Ok(())
        }
        fn end_record(&mut self) -> Result<(), String> {
            self.records.push(std::mem::take(&mut self.open));
            Ok(())
        }
    }

    fn chunk(data: &[u8]) -> Vec<u8> {
        let mut c = vec![0];
        c.extend_from_slice(&(data.len() as u32).to_le_bytes());
        c.extend_from_slice(data);
        c
    }

    /// A data block's chunks as `chunks` passes them on with `key`.
    fn passed_on(rows: &[&[u8]], key: Option<&[usize]>) -> Result<Vec<Vec<u8>>, String> {
        passed_on_within(rows, key, SORT_LIMITS)
    }

    fn passed_on_within(
        rows: &[&[u8]],
        key: Option<&[usize]>,
        limits: SortLimits,
    ) -> Result<Vec<Vec<u8>>, String> {
        let mut block: Vec<u8> = rows.iter().flat_map(|r| chunk(r)).collect();
        block.extend_from_slice(&[0, 0, 0, 0, 0]);
        block_passed_on_within(&block, key, limits)
    }

    fn block_passed_on(block: &[u8], key: Option<&[usize]>) -> Result<Vec<Vec<u8>>, String> {
        block_passed_on_within(block, key, SORT_LIMITS)
    }

    fn block_passed_on_within(
        block: &[u8],
        key: Option<&[usize]>,
        limits: SortLimits,
    ) -> Result<Vec<Vec<u8>>, String> {
        let mut a = Archive {
            src: Recorded {
                input: block,
                records: Vec::new(),
                open: Vec::new(),
            },
            int_size: 4,
            off_size: 8,
            vmin: 14,
        };
        let mut sections = Sections {
            done: Vec::new(),
            open: None,
        };
        chunks_sorted_within(&mut a, &mut sections, key, limits)?;
        assert!(a.src.input.is_empty(), "the block was read to its end");
        Ok(a.src.records)
    }

    #[test]
    fn rows_are_passed_on_in_key_order_with_numbers_as_numbers() {
        let rows: [&[u8]; 5] = [
            b"3\tc\t\\N\n",
            b"10\tj\tx\n",
            b"1\ta\tline\\nbreak\n",
            b"b-uuid\tz\t\n",
            b"2\tb\ttab\\there\n",
        ];
        let sorted = passed_on(&rows, Some(&[0])).unwrap();
        let order = [2, 4, 0, 1, 3];
        let mut expected: Vec<Vec<u8>> = order.iter().map(|&i| chunk(rows[i])).collect();
        expected.push(vec![0, 0, 0, 0, 0]);
        assert_eq!(sorted, expected);
        // Without a key the heap order stays, byte for byte.
        let heap = passed_on(&rows, None).unwrap();
        let mut expected: Vec<Vec<u8>> = rows.iter().map(|r| chunk(r)).collect();
        expected.push(vec![0, 0, 0, 0, 0]);
        assert_eq!(heap, expected);
    }

    #[test]
    fn a_composite_key_sorts_by_each_column_in_turn() {
        let rows: [&[u8]; 4] = [b"x\t2\t2\n", b"y\t1\t1\n", b"z\t2\t1\n", b"w\t1\t2\n"];
        let got = passed_on(&rows, Some(&[1, 2])).unwrap();
        let firsts: Vec<u8> = got[..4].iter().map(|r| r[5]).collect();
        assert_eq!(firsts, b"ywzx");
    }

    #[test]
    fn what_is_not_a_plain_row_ends_the_sorting_where_it_stands() {
        // A chunk of two lines: the rows before it are sorted, it and the
        // rows after it keep their order.
        let rows: [&[u8]; 5] = [b"2\tb\n", b"1\ta\n", b"9\tx\n8\ty\n", b"5\te\n", b"4\td\n"];
        let got = passed_on(&rows, Some(&[0])).unwrap();
        let order = [1, 0, 2, 3, 4];
        let expected: Vec<Vec<u8>> = order.iter().map(|&i| chunk(rows[i])).collect();
        assert_eq!(got[..5], expected[..]);
    }

    /// Rows of 64 bytes, keys `n - i` (descending, so every row moves).
    fn descending_rows(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let mut r = format!("{}\t", n - i).into_bytes();
                r.resize(63, b'x');
                r.push(b'\n');
                r
            })
            .collect()
    }

    #[test]
    fn a_table_larger_than_memory_is_sorted_through_compressed_runs() {
        // 69 bytes a chunk and ROW_MEMORY: about 10 rows to a run, 100 runs.
        let rows = descending_rows(1000);
        let refs: Vec<&[u8]> = rows.iter().map(Vec::as_slice).collect();
        let limits = SortLimits {
            memory: 1000,
            runs: 200,
            compressed: 1 << 20,
        };
        let got = passed_on_within(&refs, Some(&[0]), limits).unwrap();
        let mut expected: Vec<Vec<u8>> = rows.iter().rev().map(|r| chunk(r)).collect();
        expected.push(vec![0, 0, 0, 0, 0]);
        assert!(got == expected, "every row, in key order");
    }

    #[test]
    fn a_table_past_the_run_limit_keeps_heap_order_past_it() {
        let rows = descending_rows(100);
        let refs: Vec<&[u8]> = rows.iter().map(Vec::as_slice).collect();
        let sorted_then_heap = |sorted: usize| {
            let mut expected: Vec<Vec<u8>> =
                rows[..sorted].iter().rev().map(|r| chunk(r)).collect();
            expected.extend(rows[sorted..].iter().map(|r| chunk(r)));
            expected.push(vec![0, 0, 0, 0, 0]);
            expected
        };
        // Two runs and as many rows held: those sorted, the rest as they came.
        let per_run = 1000 / (69 + ROW_MEMORY);
        let two_runs = SortLimits {
            memory: 1000,
            runs: 2,
            compressed: 1 << 20,
        };
        let got = passed_on_within(&refs, Some(&[0]), two_runs).unwrap();
        assert!(
            got == sorted_then_heap(3 * per_run),
            "sorted up to the run limit"
        );
        // No room for even one compressed run: only the rows held in memory.
        let no_room = SortLimits {
            compressed: 1,
            ..two_runs
        };
        let got = passed_on_within(&refs, Some(&[0]), no_room).unwrap();
        assert!(
            got == sorted_then_heap(per_run),
            "sorted up to the memory limit"
        );
    }

    #[test]
    fn a_corrupt_run_length_is_refused_before_reading_it() {
        let mut run: &[u8] = &[0xff, 0xff, 0xff, 0x7f, 1, 2, 3];
        let err = next_run_row(&mut run, 5).unwrap_err();
        assert!(
            err.to_string().contains("a row of 2147483647 bytes"),
            "{err}"
        );
        let mut empty: &[u8] = &[];
        assert!(next_run_row(&mut empty, 5).unwrap().is_none());
    }

    #[test]
    fn an_implausible_chunk_length_is_refused_before_reading_it() {
        let mut block = vec![0, 0xff, 0xff, 0xff, 0xff];
        block.extend_from_slice(b"short");
        let err = block_passed_on(&block, Some(&[0])).unwrap_err();
        assert!(
            err.contains("implausible data chunk of 4294967295 bytes"),
            "{err}"
        );
    }

    proptest::proptest! {
        /// Sorting passes on exactly the chunks that came, in key order.
        #[test]
        fn sorted_rows_are_the_same_chunks_in_key_order(
            rows in proptest::collection::vec(
                ("(-?[0-9]{1,20}|[a-z\\\\]{0,4})", "[a-z\t]{0,6}"),
                0..60,
            ),
            two_columns in proptest::bool::ANY,
            memory in 1usize..400,
        ) {
            let rows: Vec<Vec<u8>> = rows
                .iter()
                .map(|(k, rest)| format!("{k}\t{rest}\n").into_bytes())
                .collect();
            let refs: Vec<&[u8]> = rows.iter().map(Vec::as_slice).collect();
            let key: &[usize] = if two_columns { &[1, 0] } else { &[0] };
            // Small memory: most cases merge runs from temporary files.
            let got = passed_on_within(&refs, Some(key), SortLimits { memory, runs: 1000, compressed: 1 << 20 }).unwrap();
            let (mut a, mut b) = (got.clone(), rows.iter().map(|r| chunk(r)).collect::<Vec<_>>());
            b.push(vec![0, 0, 0, 0, 0]);
            a.sort();
            b.sort();
            proptest::prop_assert_eq!(a, b);
            let keys: Vec<RowKey> = got[..rows.len()].iter().map(|c| row_key(&c[5..], key)).collect();
            proptest::prop_assert!(keys.windows(2).all(|w| w[0] <= w[1]));
        }
    }

    #[test]
    fn a_toc_entry_with_an_implausible_dependency_is_refused() {
        let int = |v: u32| {
            let mut b = vec![0];
            b.extend_from_slice(&v.to_le_bytes());
            b
        };
        let string = |t: &str| {
            let mut b = int(t.len() as u32);
            b.extend_from_slice(t.as_bytes());
            b
        };
        let mut e = [int(7), int(1)].concat();
        for f in ["0", "0", "t", "TABLE DATA"] {
            e.extend(string(f));
        }
        e.extend(int(0));
        for f in [
            "",
            "",
            "COPY public.t (id) FROM stdin;\n",
            "public",
            "",
            "heap",
            "",
            "false",
        ] {
            e.extend(string(f));
        }
        let good = [e.clone(), string("6"), vec![1, 1, 0, 0, 0], vec![0; 9]].concat();
        let mut a = Archive {
            src: &good[..],
            int_size: 4,
            off_size: 8,
            vmin: 14,
        };
        assert_eq!(a.toc_entry().unwrap().deps, [6]);
        let bad = [e, int(1 << 30), b"6".to_vec()].concat();
        a.src = &bad[..];
        let err = a.toc_entry().err().expect("refused");
        assert!(
            err.contains("implausible dependency of 1073741824 bytes"),
            "{err}"
        );
    }

    fn entry(dump_id: i64, desc: &str, definition: &str, copy_stmt: &str) -> TocEntry {
        TocEntry {
            dump_id,
            has_data: desc == "TABLE DATA",
            tag: String::new(),
            desc: desc.into(),
            namespace: String::new(),
            deps: Vec::new(),
            definition: definition.into(),
            copy_stmt: copy_stmt.into(),
        }
    }

    #[test]
    fn key_columns_come_from_the_primary_key_and_the_copy_statement() {
        let toc = [
            entry(1, "CONSTRAINT", "ALTER TABLE ONLY public.rental\n    ADD CONSTRAINT rental_pkey PRIMARY KEY (rental_id);\n", ""),
            entry(2, "CONSTRAINT", "ALTER TABLE ONLY \"Odd \"\"Schema\"\"\".\"Line, Items\"\n    ADD CONSTRAINT \"li pk\" PRIMARY KEY (\"Order\", line_no);\n", ""),
            entry(3, "CONSTRAINT", "ALTER TABLE ONLY public.rental\n    ADD CONSTRAINT rental_uniq UNIQUE (inventory_id);\n", ""),
            entry(4, "CONSTRAINT", "ALTER TABLE ONLY public.nokey_twin\n    ADD CONSTRAINT nk CHECK ((a > 0));\n", ""),
            entry(10, "TABLE DATA", "", "COPY public.rental (rental_date, rental_id, inventory_id) FROM stdin;\n"),
            entry(11, "TABLE DATA", "", "COPY \"Odd \"\"Schema\"\"\".\"Line, Items\" (note, line_no, \"Order\") FROM stdin;\n"),
            entry(12, "TABLE DATA", "", "COPY public.nokey_twin (a) FROM stdin;\n"),
            entry(13, "TABLE DATA", "", "COPY other.rental (rental_id) FROM stdin;\n"),
        ];
        let keys = key_columns(&toc);
        assert_eq!(keys.get(&10), Some(&vec![1]));
        assert_eq!(keys.get(&11), Some(&vec![2, 1]));
        assert_eq!(keys.get(&12), None, "no primary key");
        assert_eq!(keys.get(&13), None, "same name, other schema");
        assert_eq!(keys.len(), 2);
    }
}
