#!/usr/bin/env bash
# Dashboard benchmark: a catalog of AGENTS × DOMAINS (default 100 × 50 =
# 5,000 domains) with DAYS (30) daily snapshots and jobs each, served by one
# controller process; prints median and p90 times of the fleet page, a domain
# page, /metrics and /api/status. Not a test, never timed in CI.
#   bash bench/run-dashboard.sh [AGENTS] [DOMAINS] [DAYS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --workspace --bins
exec target/release/cairn-dashboard-load "${1:-100}" "${2:-50}" "${3:-30}" "${4:-15}"
