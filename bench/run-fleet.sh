#!/usr/bin/env bash
# Fleet load benchmark: N simulated agents (default 500) with real mTLS
# sessions against one controller process. Prints memory, idle CPU and
# dispatch latency; not a test, never timed in CI.
#   bash bench/run-fleet.sh [AGENTS] [JOBS] [HEARTBEAT_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --workspace --bins
ulimit -n 65536 2>/dev/null || true
exec target/release/cairn-fleet-load "${1:-500}" "${2:-300}" "${3:-15}"
