#!/usr/bin/env bash
# Domain analysis benchmark (issue 4): `cairn-agent analyze` on synthetic
# sites of 10,000 and 100,000 files, warm cache, medians of 5 runs, beside
# the seed's `find -mtime -1 | wc -l` (which neither sizes nor excludes).
# Not a test, never timed in CI.
#   bash bench/run-analysis.sh [FILES...]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p cairn-agent --bin cairn-agent
exec python3 bench/analysis_bench.py target/release/cairn-agent "${@:-10000 100000}"
