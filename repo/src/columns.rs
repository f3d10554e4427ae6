//! Dump rows laid out by column before a group is compressed (format v1.3,
//! group encoding `0x03`).
//!
//! A group of a dump's chunks is mostly rows of one table: `(1,'2021-03-14
//! 09:23:03',4533,…),` lines from mariadb-dump, tab-separated lines from a
//! PostgreSQL `COPY`. zstd finds far more to reuse when the values of one
//! column follow one another, and integer keys that count up become runs of
//! small deltas: a narrow-row shop's groups compress ~37% smaller this
//! way, its first copy ~31% (BENCHMARKS.md).
//!
//! The transform is exact for any input by construction: a tuple (from a
//! `(` to the first `)` outside quotes, on one line) is cut into fields at
//! its commas outside quotes, a line holding tabs at its tabs, and each is
//! put back by joining its fields with the same separator; all other bytes
//! are kept as they are. Where a quote is misread only the columns line up
//! worse. Writers still decode what they encoded and keep the plain layout
//! if it differs.
//!
//! # Layout (format v1.3 — never change these bytes)
//!
//! ```text
//! u8      version (1)
//! varint  pieces, varint shapes
//! shapes × (u8 kind, varint fields); kinds: 0 a parenthesized row, 1 a
//!         tab-separated line, 2 a tab-separated line of a PostgreSQL
//!         custom-format archive with its length before it (a zero byte,
//!         then u32 LE: the line's bytes with its newline; computed again
//!         when decoding)
//! pieces × varint: 0 for bytes kept as they are, else a row:
//!         1 + (shape << 3 | end), end what follows it: 0 nothing, 1 ",",
//!         2 ";", 3 "\n", 4 ",\n", 5 ";\n" (a tab-separated line: 0 or 3;
//!         an archive's: 0)
//! each piece kept: varint length, its bytes
//! for each shape, for each of its fields, a column of its rows' values:
//!   u8 0 (text): varint length, the values joined by "\n"
//!   u8 1 (integers): a varint per row: 0 for NULL ("NULL", or "\N" in a
//!        tab-separated row), else 1 + the zigzag of its difference from
//!        the previous integer of the column (the first from 0)
//! ```
//!
//! Integers are decimal without leading zeros and at most 18 digits, so a
//! difference never overflows and the text comes back exactly.

use std::ops::Range;

const VERSION: u8 = 1;
const PAREN: u8 = 0;
const TAB: u8 = 1;
/// A row of a PostgreSQL custom-format archive: a tab-separated line after
/// its length (a zero sign byte and four bytes little-endian, the line's
/// length with its newline), which decoding computes again.
const ARCHIVE_ROW: u8 = 2;
const TEXT: u8 = 0;
const INTS: u8 = 1;
/// The most fields a row is cut into (the last keeps the rest of the row).
const MAX_FIELDS: usize = 4096;
/// Row shapes (kind and field count) one group may hold; lines of any other
/// shape are kept as they are.
const MAX_SHAPES: usize = 64;

struct Shape {
    kind: u8,
    fields: usize,
    /// Per field, the values of the shape's rows, as ranges of the input.
    columns: Vec<Vec<Range<usize>>>,
}

/// What follows a row, by its code in the layout.
const ENDS: [&[u8]; 6] = [b"", b",", b";", b"\n", b",\n", b";\n"];
const END_NEWLINE: u64 = 3;

/// The column layout of `plain`, or None when it holds no row. Its first
/// `prefix` bytes (a group's table) are kept as they are.
pub fn encode(plain: &[u8], prefix: usize) -> Option<Vec<u8>> {
    let mut shapes: Vec<Shape> = Vec::new();
    let mut layout: Vec<u64> = Vec::new();
    let mut kept: Vec<Range<usize>> = Vec::new();
    let mut fields: Vec<Range<usize>> = Vec::new();
    let prefix = prefix.min(plain.len());
    if prefix > 0 {
        kept.push(0..prefix);
        layout.push(0);
    }
    let mut p = prefix;
    let mut newline = NextNewline::default();
    while p < plain.len() {
        let line_start = p == prefix || plain[p - 1] == b'\n';
        let row = if plain[p] == b'(' {
            split_tuple(plain, p, &mut fields).map(|(next, end)| (PAREN, next, end))
        } else if let Some(next) = split_archive_row(plain, p, &mut newline, &mut fields) {
            Ok((ARCHIVE_ROW, next, 0))
        } else if line_start {
            split_tabs(plain, p, &mut newline, &mut fields).map(|(next, end)| (TAB, next, end))
        } else {
            Err(p)
        };
        let (kind, next, end) = match row {
            Ok(row) => row,
            Err(stop) => {
                // Kept as it is up to the end of its line, or the next
                // tuple, or where a tuple that was not one stopped.
                let stop = if stop > p {
                    stop
                } else if plain[p] == b'\n' {
                    p + 1
                } else {
                    plain[p + 1..]
                        .iter()
                        .position(|&c| c == b'(' || c == b'\n')
                        .map_or(plain.len(), |i| {
                            let at = p + 1 + i;
                            at + usize::from(plain[at] == b'\n')
                        })
                };
                kept.push(p..stop);
                layout.push(0);
                p = stop;
                continue;
            }
        };
        let found = shapes
            .iter()
            .position(|s| s.kind == kind && s.fields == fields.len());
        let s = match found {
            Some(s) => s,
            None if shapes.len() < MAX_SHAPES => {
                shapes.push(Shape {
                    kind,
                    fields: fields.len(),
                    columns: vec![Vec::new(); fields.len()],
                });
                shapes.len() - 1
            }
            None => {
                kept.push(p..next);
                layout.push(0);
                p = next;
                continue;
            }
        };
        for (c, f) in shapes[s].columns.iter_mut().zip(fields.drain(..)) {
            c.push(f);
        }
        layout.push(1 + ((s as u64) << 3 | end));
        p = next;
    }
    if shapes.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(plain.len() / 2);
    out.push(VERSION);
    put_varint(&mut out, layout.len() as u64);
    put_varint(&mut out, shapes.len() as u64);
    for s in &shapes {
        out.push(s.kind);
        put_varint(&mut out, s.fields as u64);
    }
    for &e in &layout {
        put_varint(&mut out, e);
    }
    for r in &kept {
        put_varint(&mut out, r.len() as u64);
        out.extend_from_slice(&plain[r.clone()]);
    }
    for s in &shapes {
        let null = null_of(s.kind);
        for col in &s.columns {
            let ints: Option<Vec<Option<i64>>> = col
                .iter()
                .map(|r| {
                    let v = &plain[r.clone()];
                    if v == null {
                        Some(None)
                    } else {
                        parse_int(v).map(Some)
                    }
                })
                .collect();
            match ints {
                Some(ints) => {
                    out.push(INTS);
                    let mut prev = 0i64;
                    for v in ints {
                        match v {
                            None => out.push(0),
                            Some(v) => {
                                put_varint(&mut out, 1 + zigzag(v - prev));
                                prev = v;
                            }
                        }
                    }
                }
                None => {
                    out.push(TEXT);
                    let len = col.iter().map(|r| r.len() + 1).sum::<usize>() - 1;
                    put_varint(&mut out, len as u64);
                    for (i, r) in col.iter().enumerate() {
                        if i > 0 {
                            out.push(b'\n');
                        }
                        out.extend_from_slice(&plain[r.clone()]);
                    }
                }
            }
        }
    }
    Some(out)
}

/// Cuts the tuple that opens at `plain[p]` (a `(`) into `fields` at its
/// commas outside quotes. Ok: where the row ends (after what follows its
/// `)`) and that ending's code. Err: where the scan stopped (a line's end,
/// or the input's) with no tuple.
fn split_tuple(
    plain: &[u8],
    p: usize,
    fields: &mut Vec<Range<usize>>,
) -> Result<(usize, u64), usize> {
    fields.clear();
    let (mut quoted, mut escaped) = (false, false);
    let mut from = p + 1;
    for i in p + 1..plain.len() {
        let c = plain[i];
        if c == b'\n' {
            // A row is on one line: a value never holds a newline.
            return Err(i);
        }
        if escaped {
            escaped = false;
        } else if quoted {
            match c {
                b'\\' => escaped = true,
                b'\'' => quoted = false,
                _ => {}
            }
        } else {
            match c {
                b'\'' => quoted = true,
                b',' if fields.len() + 1 < MAX_FIELDS => {
                    fields.push(from..i);
                    from = i + 1;
                }
                b')' => {
                    fields.push(from..i);
                    let rest = &plain[i + 1..];
                    let end = match rest {
                        [b',', b'\n', ..] => 4,
                        [b';', b'\n', ..] => 5,
                        [b',', ..] => 1,
                        [b';', ..] => 2,
                        [b'\n', ..] => END_NEWLINE,
                        _ => 0,
                    };
                    return Ok((i + 1 + ENDS[end as usize].len(), end));
                }
                _ => {}
            }
        }
    }
    Err(plain.len())
}

/// Cuts the line that starts at `plain[p]` into `fields` at its tabs, when
/// it has one. Ok: where the row ends (after its newline) and that ending.
fn split_tabs(
    plain: &[u8],
    p: usize,
    newline: &mut NextNewline,
    fields: &mut Vec<Range<usize>>,
) -> Result<(usize, u64), usize> {
    let eol = newline.from(plain, p);
    split_at_tabs(plain, p..eol, fields);
    if fields.len() == 1 {
        return Err(p);
    }
    Ok(if eol < plain.len() {
        (eol + 1, END_NEWLINE)
    } else {
        (eol, 0)
    })
}

/// Cuts the archive row at `plain[p]` (see `ARCHIVE_ROW`) into `fields` at
/// its tabs; returns where it ends.
fn split_archive_row(
    plain: &[u8],
    p: usize,
    newline: &mut NextNewline,
    fields: &mut Vec<Range<usize>>,
) -> Option<usize> {
    let head = plain.get(p..p + 5)?;
    if head[0] != 0 {
        return None;
    }
    let n = u32::from_le_bytes(head[1..].try_into().unwrap()) as usize;
    // The line is the row's n bytes exactly: its only newline is its last.
    let eol = newline.from(plain, p + 5);
    if n == 0 || eol != p + 5 + n - 1 || eol == plain.len() {
        return None;
    }
    split_at_tabs(plain, p + 5..eol, fields);
    Some(eol + 1)
}

/// Cuts `line` into `fields` at its tabs (past `MAX_FIELDS`, the last field
/// keeps the rest).
fn split_at_tabs(plain: &[u8], line: Range<usize>, fields: &mut Vec<Range<usize>>) {
    fields.clear();
    let mut from = line.start;
    for (i, &c) in plain.iter().enumerate().take(line.end).skip(line.start) {
        if c == b'\t' && fields.len() + 1 < MAX_FIELDS {
            fields.push(from..i);
            from = i + 1;
        }
    }
    fields.push(from..line.end);
}

/// Where the first newline at or after a position is (the input's end if
/// none), remembered for the stretch it was searched over: positions asked
/// move forward, so each byte is searched about once.
#[derive(Default)]
struct NextNewline {
    /// The stretch searched last, and the newline that ends it.
    from: usize,
    newline: Option<usize>,
}

impl NextNewline {
    fn from(&mut self, plain: &[u8], at: usize) -> usize {
        match self.newline {
            Some(nl) if self.from <= at && at <= nl => nl,
            _ => {
                let nl =
                    memchr(b'\n', &plain[at.min(plain.len())..]).map_or(plain.len(), |i| at + i);
                (self.from, self.newline) = (at, Some(nl));
                nl
            }
        }
    }
}

fn null_of(kind: u8) -> &'static [u8] {
    if kind == PAREN {
        b"NULL"
    } else {
        b"\\N"
    }
}

/// A decimal integer that prints back as the same bytes.
fn parse_int(v: &[u8]) -> Option<i64> {
    let digits = v.strip_prefix(b"-").unwrap_or(v);
    let canonical = match digits {
        [b'0'] => v.len() == 1,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if !canonical || digits.len() > 18 {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The bytes `encode` made `t` from, failing (with why) on anything else or
/// once they would exceed `max` bytes.
pub fn decode(t: &[u8], max: usize) -> Result<Vec<u8>, String> {
    let mut r = Reader { t, pos: 0 };
    if r.byte()? != VERSION {
        return Err("unknown column layout version".into());
    }
    // Every line and shape costs at least a byte of `t`, so neither count can
    // size anything larger than the input.
    let lines = r.count()?;
    let nshapes = r.count()?;
    if nshapes > MAX_SHAPES {
        return Err(format!("{nshapes} row shapes, more than {MAX_SHAPES}"));
    }
    let mut shapes = Vec::with_capacity(nshapes);
    for _ in 0..nshapes {
        let kind = r.byte()?;
        let fields = r.varint()?;
        if kind > ARCHIVE_ROW || fields == 0 || fields > MAX_FIELDS as u64 {
            return Err("bad row shape".into());
        }
        shapes.push((kind, fields as usize, 0usize));
    }
    let layout_at = r.pos;
    let mut kept_lines = 0usize;
    for _ in 0..lines {
        let e = r.varint()?;
        if e == 0 {
            kept_lines += 1;
            continue;
        }
        let (s, end) = (((e - 1) >> 3) as usize, (e - 1) & 7);
        let shape = shapes.get_mut(s).ok_or("a row names a shape not listed")?;
        let bad = match shape.0 {
            PAREN => end as usize >= ENDS.len(),
            TAB => end != 0 && end != END_NEWLINE,
            _ => end != 0,
        };
        if bad {
            return Err("bad row ending".into());
        }
        shape.2 += 1;
    }
    let layout_end = r.pos;
    let kept_at = r.pos;
    for _ in 0..kept_lines {
        let n = r.count()?;
        r.take(n)?;
    }
    // Each column's place in `t`, checked against its shape's row count.
    let mut columns: Vec<Column> = Vec::new();
    for &(kind, fields, rows) in &shapes {
        if rows == 0 {
            return Err("a row shape no line uses".into());
        }
        for _ in 0..fields {
            match r.byte()? {
                TEXT => {
                    let n = r.count()?;
                    let at = r.pos;
                    let bytes = r.take(n)?;
                    if bytes.iter().filter(|&&c| c == b'\n').count() != rows - 1 {
                        return Err("a text column's value count is not its rows'".into());
                    }
                    columns.push(Column::Text { at, end: r.pos });
                }
                INTS => {
                    let at = r.pos;
                    for _ in 0..rows {
                        r.varint()?;
                    }
                    columns.push(Column::Ints { at, prev: 0, kind });
                }
                _ => return Err("unknown column type".into()),
            }
        }
    }
    if r.pos != t.len() {
        return Err("bytes after the last column".into());
    }
    let first_column: Vec<usize> = shapes
        .iter()
        .scan(0, |n, s| {
            let at = *n;
            *n += s.1;
            Some(at)
        })
        .collect();

    let mut out = Vec::new();
    let put = |out: &mut Vec<u8>, b: &[u8]| -> Result<(), String> {
        if out.len() + b.len() > max {
            return Err(format!("rows exceed {max} bytes"));
        }
        out.extend_from_slice(b);
        Ok(())
    };
    let mut layout = Reader { t, pos: layout_at };
    let mut kept = Reader { t, pos: kept_at };
    let mut number = itoa_buf();
    let mut row = Vec::new();
    for _ in 0..lines {
        let e = layout.varint()?;
        if e == 0 {
            let n = kept.count()?;
            put(&mut out, kept.take(n)?)?;
            continue;
        }
        let (s, end) = (((e - 1) >> 3) as usize, (e - 1) & 7);
        let (kind, fields, _) = shapes[s];
        row.clear();
        if kind == PAREN {
            row.push(b'(');
        }
        for f in 0..fields {
            if f > 0 {
                row.push(if kind == PAREN { b',' } else { b'\t' });
            }
            match &mut columns[first_column[s] + f] {
                Column::Text { at, end } => {
                    let rest = &t[(*at).min(*end)..*end];
                    let n = memchr(b'\n', rest).unwrap_or(rest.len());
                    row.extend_from_slice(&rest[..n]);
                    *at += n + 1;
                }
                Column::Ints { at, prev, kind } => {
                    let mut c = Reader { t, pos: *at };
                    let v = c.varint()?;
                    *at = c.pos;
                    if v == 0 {
                        row.extend_from_slice(null_of(*kind));
                    } else {
                        let value = prev
                            .checked_add(unzigzag(v - 1))
                            .filter(|v| v.unsigned_abs() < 1_000_000_000_000_000_000)
                            .ok_or("an integer out of range")?;
                        *prev = value;
                        row.extend_from_slice(format_int(&mut number, value));
                    }
                }
            }
        }
        match kind {
            PAREN => row.push(b')'),
            ARCHIVE_ROW => {
                row.push(b'\n');
                let len = u32::try_from(row.len()).map_err(|_| "a row too long")?;
                put(&mut out, &[0])?;
                put(&mut out, &len.to_le_bytes())?;
            }
            _ => {}
        }
        row.extend_from_slice(ENDS[end as usize]);
        put(&mut out, &row)?;
    }
    debug_assert_eq!(layout.pos, layout_end);
    Ok(out)
}

enum Column {
    /// Where its next value starts, and where its last ends.
    Text {
        at: usize,
        end: usize,
    },
    Ints {
        at: usize,
        prev: i64,
        kind: u8,
    },
}

struct Reader<'a> {
    t: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.t.get(self.pos).ok_or("truncated")?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    /// A varint that counts bytes or items of the input: never more than it
    /// has left.
    fn count(&mut self) -> Result<usize, String> {
        let v = self.varint()?;
        if v > (self.t.len() - self.pos) as u64 {
            return Err("a count larger than the input".into());
        }
        Ok(v as usize)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.t.len())
            .ok_or("truncated")?;
        let s = &self.t[self.pos..end];
        self.pos = end;
        Ok(s)
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

fn itoa_buf() -> [u8; 20] {
    [0; 20]
}

fn format_int(buf: &mut [u8; 20], v: i64) -> &[u8] {
    let mut n = v.unsigned_abs();
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&c| c == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(plain: &[u8]) {
        for prefix in [0, 3] {
            round_trip_after(plain, prefix);
        }
    }

    fn round_trip_after(plain: &[u8], prefix: usize) {
        if let Some(t) = encode(plain, prefix) {
            assert_eq!(decode(&t, plain.len()).unwrap(), plain);
            if !plain.is_empty() {
                assert!(decode(&t, plain.len() - 1).is_err(), "the bound holds");
            }
        }
    }

    #[test]
    fn dump_rows_come_back_exactly() {
        let rows = "INSERT INTO `rental` VALUES\n\
            (1,'2021-03-14 09:23:03',4533,624,'2021-03-22 03:00:01',1,'2021-03-14 09:23:03'),\n\
            (2,'it''s, \\'quoted\\' (here)',-7,0,NULL,1,'x'),\n\
            (3,'',-0,007,'tab\there',99999999999999999999,'\\\\'),\n\
            (4,'',-9223372036854775808,1e5,NULL,NULL,''),\n\
            (5,'a,b',1,2,3,4,5);\n\
            UNLOCK TABLES;\n\
            1\t\\N\tBob\t2026-12-04\n\
            2\tx\t\\N\t\n\
            -3\t7\t\t\n\
            \\.\n()\n(),\n(,)\n)\n(\n";
        round_trip(rows.as_bytes());
        // Rows of a PostgreSQL archive, each after its length.
        let mut archive = Vec::new();
        for line in [
            "1\t\\N\tBob\n",
            "2\tx\t\\N\n",
            "3\n",
            "4\t\t\n",
            "5\ta\nb\n",
            "6\ty",
        ] {
            archive.push(0);
            archive.extend_from_slice(&(line.len() as u32).to_le_bytes());
            archive.extend_from_slice(line.as_bytes());
        }
        archive.extend_from_slice(&[0, 200, 0, 0, 0, b'7', b'\n', 1, 5, 0, 0, 0]);
        round_trip(&archive);
        assert!(encode(&archive, 0).is_some());
        assert!(encode(rows.as_bytes(), 0).is_some());
        // Integers, NULLs among them, become deltas.
        let ids: String = (1..2000)
            .map(|i| format!("({i},{},'2021-03-14 09:23:{:02}'),\n", i % 7, i % 60))
            .collect();
        round_trip(ids.as_bytes());
        let zstd = |b: &[u8]| zstd::bulk::compress(b, 3).unwrap().len();
        let by_column = zstd(&encode(ids.as_bytes(), 0).unwrap());
        assert!(
            by_column * 2 < zstd(ids.as_bytes()),
            "{by_column} bytes by column, {} as they are",
            zstd(ids.as_bytes())
        );
    }

    #[test]
    fn bytes_without_rows_are_not_encoded() {
        assert!(encode(b"", 0).is_none());
        assert!(encode(b"DROP TABLE t;\nno rows here\n", 0).is_none());
        round_trip(&[0, 1, 2, 0x0a, 0x28, 0x29, 0x0a, 9, 0xff]);
        // A newline just after a line's start, before where an archive
        // row's text would begin (found by fuzzing).
        round_trip(b"\xb1\t\tI\x1b\n\t\0\xff\t\tI\x1b\n\x0b\0\xff\t\xff'\xff\t\xff");
    }

    #[test]
    fn lying_layouts_are_refused() {
        let t = encode(b"(1,'a'),\n(2,'b');", 0).unwrap();
        for cut in 0..t.len() {
            assert!(decode(&t[..cut], 1 << 20).is_err(), "cut at {cut}");
        }
        let mut extra = t.clone();
        extra.push(0);
        assert!(decode(&extra, 1 << 20).is_err());
        // Counts larger than the input never size anything.
        let mut huge = vec![VERSION];
        put_varint(&mut huge, u64::MAX >> 1);
        assert!(decode(&huge, 1 << 20).is_err());
        // An integer delta that leaves the printable range.
        let mut big = vec![VERSION, 1, 1, PAREN, 1, 1, INTS];
        put_varint(&mut big, 1 + zigzag(i64::MAX));
        assert!(decode(&big, 1 << 20).is_err());
    }

    proptest! {
        #[test]
        fn any_bytes_round_trip(plain in proptest::collection::vec(
            prop_oneof![Just(b'('), Just(b')'), Just(b','), Just(b';'), Just(b'\''), Just(b'\\'),
                        Just(b'\n'), Just(b'\t'), Just(b'-'), Just(b'N'), b'0'..=b'9', any::<u8>()],
            0..400)) {
            round_trip(&plain);
        }

        #[test]
        fn any_rows_round_trip(rows in proptest::collection::vec(
            proptest::collection::vec(prop_oneof![
                any::<i64>().prop_map(|v| v.to_string()),
                "[a-z',\\\\()]{0,6}".prop_map(|s| format!("'{s}'")),
                Just("NULL".to_string()),
            ], 1..5), 1..40)) {
            let text: String = rows.iter().map(|r| format!("({}),\n", r.join(","))).collect();
            round_trip(text.as_bytes());
        }
    }
}
