//! Heap bytes the in-memory index takes per blob, as a controller holding a
//! fleet's index pays them: `cargo run --release -p cairn-repo --example
//! index_memory -- [BLOBS] [PER_PACK]` (default 2,000,000 blobs, 300 a pack:
//! a dump's grouped chunks). Also weighs what gc's mark holds per live blob.

// A counting global allocator is the one exact way to weigh a heap; it
// needs `unsafe impl GlobalAlloc`, and it only forwards to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use cairn_repo::id::Id;
use cairn_repo::index::Index;
use cairn_repo::pack::{BlobType, PackEntry};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().expect("a number"));
    let blobs = args.next().unwrap_or(2_000_000);
    let per_pack = args.next().unwrap_or(300).max(1);
    let id = |n: usize| Id(*blake3::hash(&n.to_le_bytes()).as_bytes());

    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let started = Instant::now();
    let mut index = Index::default();
    index.reserve(blobs.div_ceil(per_pack), blobs);
    let mut n = 0;
    while n < blobs {
        let count = per_pack.min(blobs - n);
        let entries = (n..n + count)
            .map(|i| PackEntry {
                kind: BlobType::Data,
                id: id(i),
                offset: (i % per_pack) as u32 * 4096,
                length: 4096,
                raw_length: 1200,
                grouped: true,
            })
            .collect();
        index.add_pack(id(usize::MAX - n), entries);
        n += count;
    }
    let built = started.elapsed();
    let held = LIVE.load(Ordering::Relaxed) - before;
    let peak = PEAK.load(Ordering::Relaxed) - before;

    let started = Instant::now();
    let found = (0..blobs)
        .step_by(7)
        .filter(|&i| index.contains(&id(i)))
        .count();
    let looked = started.elapsed();
    assert_eq!(found, blobs.div_ceil(7), "every indexed blob is found");
    assert!(!index.contains(&id(blobs + 1)));

    println!("blobs               {blobs}");
    println!("blobs per pack      {per_pack}");
    println!(
        "heap held           {:.1} MiB ({:.1} bytes a blob)",
        held as f64 / 1048576.0,
        held as f64 / blobs as f64
    );
    println!("heap peak (build)   {:.1} MiB", peak as f64 / 1048576.0);
    println!("build               {:.2} s", built.as_secs_f64());
    println!(
        "lookups             {:.0} ns each",
        looked.as_nanos() as f64 / found as f64
    );

    // What gc's mark holds beside the index: every live blob once.
    let weigh = |fill: &dyn Fn() -> Box<dyn std::any::Any>| {
        let before = LIVE.load(Ordering::Relaxed);
        let set = fill();
        let held = LIVE.load(Ordering::Relaxed) - before;
        drop(set);
        held as f64 / blobs as f64
    };
    let ids = weigh(&|| {
        Box::new(
            (0..blobs)
                .map(id)
                .collect::<std::collections::HashSet<Id>>(),
        )
    });
    let marks = weigh(&|| {
        let mut live = cairn_repo::repository::LiveSet::default();
        for i in 0..blobs {
            live.insert(&id(i));
        }
        Box::new(live)
    });
    println!("gc marks, id set    {ids:.1} bytes a blob");
    println!("gc marks, LiveSet   {marks:.1} bytes a blob");
}
