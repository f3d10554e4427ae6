#!/usr/bin/env bash
# Staged in-place restore vs plain restore, and the dry run (issue 13).
# Not a test, never timed in CI.
#   bash bench/run-restore.sh [FILES] [RUNS]      # default 100000 3
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin cairnctl
exec python3 bench/restore_bench.py target/release/cairnctl "${1:-100000}" "${2:-3}"
