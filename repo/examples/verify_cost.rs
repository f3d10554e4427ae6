//! What the controller's ingest verification (`pack::verify`) costs per GB:
//! packs of site-like data (half text that compresses, half media that does
//! not), built with the repository's own writer, then verified; prints the
//! median of 5 runs. `cargo run --release -p cairn-repo --example verify_cost [MiB]`.

use std::time::Instant;

use cairn_repo::crypto::MasterKey;
use cairn_repo::pack::{self, BlobType, PackBody, PackWriter};

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    let key = MasterKey::generate();
    let mut packs = Vec::new();
    let mut w = PackWriter::in_memory();
    let mut plain_total = 0usize;
    let mut n = 0u64;
    while plain_total < mib << 20 {
        n += 1;
        // ~1 MiB chunks, as FastCDC cuts files.
        let blob: Vec<u8> = if n.is_multiple_of(2) {
            format!("<?php echo 'post {n}'; // wp-content text that compresses\n")
                .repeat(16_000)
                .into_bytes()
        } else {
            (0..1 << 20).map(|_| rand::random::<u8>()).collect()
        };
        plain_total += blob.len();
        w.add(
            BlobType::Data,
            key.blob_id(&blob),
            &key.seal(&blob, 3),
            blob.len(),
        )
        .unwrap();
        if w.len() >= 16 << 20 {
            packs.push(finish(
                std::mem::replace(&mut w, PackWriter::in_memory()),
                &key,
            ));
        }
    }
    if !w.is_empty() {
        packs.push(finish(w, &key));
    }
    let stored: usize = packs.iter().map(|(_, b)| b.len()).sum();
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for (id, bytes) in &packs {
            pack::verify(&key, id, bytes).expect("honest pack verifies");
        }
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let med = times[2];
    let gb = plain_total as f64 / 1e9;
    println!(
        "verified {} packs: {:.1} MB plaintext, {:.1} MB stored; median {:.3} s = {:.2} s per GB of plaintext ({:.0} MB/s, {} threads)",
        packs.len(),
        plain_total as f64 / 1e6,
        stored as f64 / 1e6,
        med,
        med / gb,
        plain_total as f64 / 1e6 / med,
        rayon::current_num_threads()
    );
}

fn finish(w: PackWriter, key: &MasterKey) -> (cairn_repo::Id, Vec<u8>) {
    let p = w.finish(key).unwrap();
    let PackBody::Memory(bytes) = p.body else {
        unreachable!("in-memory writer")
    };
    (p.id, bytes)
}
