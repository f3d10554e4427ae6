//! Content-defined chunking (FastCDC 2020) of file and dump streams.
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

#[cfg(test)]
mod tests {
    use super::*;

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
