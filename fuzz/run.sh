#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 600) each, one after another.
# cargo-fuzz wants nightly; RUSTC_BOOTSTRAP lets the stable toolchain take
# its flags. No sanitizer: the code under test is safe Rust, so the bugs
# to find are panics, overflows (debug assertions on) and huge allocations.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-600}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
cargo fuzz build -s none --debug-assertions -O
for t in $(cargo fuzz list); do
    mkdir -p "corpus/$t"
    echo "== $t: ${secs}s"
    cargo fuzz run -s none --debug-assertions -O "$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=1024 \
        -print_final_stats=1 2>&1 | grep -E "^(stat::|Done|==|SUMMARY|thread|INFO: Seed)|panicked" || true
    [ -z "$(ls artifacts/"$t" 2>/dev/null)" ] || { echo "$t: crash, see fuzz/artifacts/$t"; exit 1; }
done
