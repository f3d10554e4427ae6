#!/usr/bin/env bash
# The benchmark command (not a test): Cairn vs tar|zstd, restic and borg on one
# generated fleet, same machine, same run. Installs the other tools when missing.
#   bash bench/run.sh            # BENCH_SITES=8 BENCH_SCALE=0.5 BENCH_RUNS=3
set -euo pipefail
cd "$(dirname "$0")/.."
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
command -v restic >/dev/null || missing+=(restic)
command -v borg >/dev/null || missing+=(borgbackup)
command -v zstd >/dev/null || missing+=(zstd)
[ -x /usr/bin/time ] || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
cargo build --release --quiet --bin cairnctl
exec python3 bench/bench.py --cairnctl target/release/cairnctl "$@"
