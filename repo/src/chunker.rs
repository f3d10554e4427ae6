//! Content-defined chunking: FastCDC 2020 for files, record-aligned cuts for
//! database dumps.
//!
//! Files smaller than the minimum chunk are one blob. The gear table is seeded
//! per repository (see `MasterKey::chunker_seed`).

use std::io::Read;

use fastcdc::v2020::{Normalization, StreamCDC};

use crate::config::ChunkerParams;

/// Cuts `reader` into chunks and hands each to `f`. Returns the bytes read.
pub fn for_each_chunk<R: Read, E: From<std::io::Error>>(
    reader: R,
    params: ChunkerParams,
    seed: u64,
    mut f: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<u64, E> {
    let cdc = StreamCDC::with_level_and_seed(
        reader,
        params.min,
        params.avg,
        params.max,
        Normalization::Level1,
        seed,
    );
    let mut total = 0u64;
    for chunk in cdc {
        let chunk = chunk.map_err(|e| match e {
            fastcdc::v2020::Error::IoError(io) => E::from(io),
            other => E::from(std::io::Error::other(other.to_string())),
        })?;
        total += chunk.length as u64;
        f(&chunk.data)?;
    }
    Ok(total)
}

/// Decides chunk boundaries at record ends (SQL rows, archive data chunks).
///
/// A record end becomes a boundary with probability `len(record) / avg`, decided
/// by a keyed hash of the record itself. Boundaries therefore follow rows: a
/// changed row changes only the chunk it lands in, and an inserted or deleted
/// row shifts nothing after it. Byte-level FastCDC on a dump with 2% of rows
/// changed everywhere rewrites nearly every 1 MiB chunk; this rewrites only the
/// small chunks holding those rows.
///
/// With [`RecordCutter::rows`] set, a record end is also a boundary with
/// probability `1 / rows`: narrow rows (a 70-byte rental) then come `rows` to
/// a chunk instead of `avg / 70`, so a few updated rows spread over a table
/// touch few bytes, while wide rows (posts) still fill chunks of ~`avg` bytes.
#[derive(Clone)]
pub struct RecordCutter {
    pub min: usize,
    pub avg: usize,
    pub max: usize,
    /// Average records per chunk where that is fewer bytes than `avg`; 0: off.
    pub rows: u32,
    key: u64,
}

impl RecordCutter {
    pub fn new(min: usize, avg: usize, max: usize, seed: u64) -> RecordCutter {
        assert!(min <= avg && avg <= max && avg > 0);
        RecordCutter {
            min,
            avg,
            max,
            rows: 0,
            key: u64::from_le_bytes(
                blake3::derive_key("cairn record cutter v1", &seed.to_le_bytes())[..8]
                    .try_into()
                    .unwrap(),
            ),
        }
    }

    /// Cuts after ~`rows` records when they are narrower than `avg / rows`.
    pub fn with_rows(mut self, rows: u32) -> RecordCutter {
        self.rows = rows;
        self
    }

    /// A keyed 64-bit hash of a record: multiply-xorshift over 8-byte words.
    /// Cut decisions need well-spread bits, not a cryptographic hash; BLAKE3
    /// here cost a tenth of a dump backup's time.
    fn hash(&self, record: &[u8]) -> u64 {
        const M: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut h = self.key ^ (record.len() as u64).wrapping_mul(M);
        let mut words = record.chunks_exact(8);
        for w in &mut words {
            h = (h ^ u64::from_le_bytes(w.try_into().unwrap())).wrapping_mul(M);
            h ^= h >> 29;
        }
        let mut tail = [0u8; 8];
        tail[..words.remainder().len()].copy_from_slice(words.remainder());
        h = (h ^ u64::from_le_bytes(tail)).wrapping_mul(M);
        h ^= h >> 32;
        h = h.wrapping_mul(0xD6E8_FEB8_6659_FD93);
        h ^ (h >> 32)
    }

    /// Whether to cut after `record`, with `chunk_len` bytes (the record
    /// included) waiting in the current chunk.
    pub fn is_boundary(&self, chunk_len: usize, record: &[u8]) -> bool {
        if chunk_len < self.min {
            return false;
        }
        if record.len() >= self.avg {
            return true;
        }
        let h = self.hash(record) as u128;
        // P(cut) = len / avg, so chunks average ~avg bytes whatever the row
        // size; or 1 / rows where that is more. The decision depends on the
        // record alone: an inserted or changed row moves no other boundary.
        let by_bytes = ((record.len() as u128) << 64) / self.avg as u128;
        let by_rows = match self.rows {
            0 => 0,
            n => (1u128 << 64) / n as u128,
        };
        h < by_bytes.max(by_rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_cuts_follow_rows() {
        let cutter = RecordCutter::new(2 << 10, 8 << 10, 64 << 10, 7);
        let rows: Vec<Vec<u8>> = (0..20_000u32)
            .map(|i| format!("({i},'row {i} {}'),\n", "x".repeat((i % 97) as usize)).into_bytes())
            .collect();
        let chunks = |rows: &[Vec<u8>]| {
            let mut out = Vec::new();
            let mut cur = Vec::new();
            for r in rows {
                cur.extend_from_slice(r);
                if cutter.is_boundary(cur.len(), r) {
                    out.push(blake3::hash(&cur));
                    cur.clear();
                }
            }
            out.push(blake3::hash(&cur));
            out
        };
        let a = chunks(&rows);
        let total: usize = rows.iter().map(Vec::len).sum();
        let avg = total / a.len();
        assert!((6 << 10..16 << 10).contains(&avg), "average chunk {avg}");
        // Change one row in the middle and delete another: at most 3 chunks differ.
        let mut b_rows = rows.clone();
        b_rows[10_000] = b"(10000,'changed'),\n".to_vec();
        b_rows.remove(15_000);
        let b = chunks(&b_rows);
        let differ = b.iter().filter(|h| !a.contains(h)).count();
        assert!(differ <= 4, "{differ} of {} chunks changed", b.len());
    }

    /// With a row target, narrow rows come ~`rows` to a chunk and wide rows
    /// still fill ~`avg` bytes; a changed row still changes one chunk.
    #[test]
    fn row_targets_size_chunks_by_rows() {
        let cutter = RecordCutter::new(64, 16 << 10, 64 << 10, 7).with_rows(8);
        let cut = |rows: &[Vec<u8>]| {
            let (mut out, mut cur, mut n) = (Vec::new(), Vec::new(), Vec::new());
            let mut in_chunk = 0;
            for r in rows {
                cur.extend_from_slice(r);
                in_chunk += 1;
                if cutter.is_boundary(cur.len(), r) {
                    out.push(blake3::hash(&cur));
                    n.push(in_chunk);
                    cur.clear();
                    in_chunk = 0;
                }
            }
            (out, n)
        };
        let narrow: Vec<Vec<u8>> = (0..40_000u32)
            .map(|i| {
                format!("({i},'2021-03-14 09:23:03',{},{}),", i * 7 % 4581, i % 599).into_bytes()
            })
            .collect();
        let (a, counts) = cut(&narrow);
        let mean = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
        assert!((6.0..12.0).contains(&mean), "{mean} narrow rows a chunk");
        let wide: Vec<Vec<u8>> = (0..2_000u32)
            .map(|i| {
                format!("({i},'{}'),", "post body ".repeat(300 + (i % 50) as usize)).into_bytes()
            })
            .collect();
        let (_, wide_counts) = cut(&wide);
        let wide_bytes = wide.iter().map(Vec::len).sum::<usize>() / wide_counts.len();
        assert!(
            (8 << 10..32 << 10).contains(&wide_bytes),
            "wide chunks of {wide_bytes} bytes"
        );
        let mut changed = narrow.clone();
        changed[20_000] = b"(20000,'2026-12-03 08:00:00',1,1),".to_vec();
        let (b, _) = cut(&changed);
        let differ = b.iter().filter(|h| !a.contains(h)).count();
        assert!(differ <= 2, "{differ} chunks changed for one row");
    }

    #[test]
    fn boundaries_follow_content() {
        let p = ChunkerParams {
            min: 64 * 1024,
            avg: 256 * 1024,
            max: 1024 * 1024,
        };
        let mut x = 0x9E3779B97F4A7C15u64;
        let data: Vec<u8> = (0..8_000_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        let chunks = |d: &[u8]| {
            let mut v = Vec::new();
            for_each_chunk::<_, std::io::Error>(d, p, 7, |c| {
                v.push(blake3::hash(c));
                Ok(())
            })
            .unwrap();
            v
        };
        let a = chunks(&data);
        assert!(a.len() > 10);
        // Insert bytes near the start: all but the first few chunks stay the same.
        let mut shifted = b"inserted".to_vec();
        shifted.extend_from_slice(&data);
        let b = chunks(&shifted);
        let common = a.iter().filter(|h| b.contains(h)).count();
        assert!(
            common >= a.len() - 2,
            "only {common} of {} chunks survived an insert",
            a.len()
        );
    }
}
