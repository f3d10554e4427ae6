#!/usr/bin/env bash
# Scheduler benchmark: N simulated agents (default 500) × D domains (5) on one
# cron minute against one controller process with its scheduler on. Prints
# start spread, queue wait, peak concurrency, controller CPU and RSS; not a
# test, never timed in CI.
#   bash bench/run-schedule.sh [AGENTS] [DOMAINS] [JOB_SECONDS] [SPLAY]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --workspace --bins
ulimit -n 65536 2>/dev/null || true
exec target/release/cairn-schedule-load "${1:-500}" "${2:-5}" "${3:-5}" "${4:-2m}"
