#!/usr/bin/env bash
# The database benchmark (not a test): Cairn vs restic on gen_fleet's dumps
# and on a narrow-row shop over BENCH_DAYS daily dumps, and dump throughput vs
# `mariadb-dump | zstd -3`. Installs what is missing.
#   bash bench/run-db.sh         # BENCH_SITES=8 BENCH_SCALE=0.5 BENCH_RUNS=3 BENCH_DAYS=30
set -euo pipefail
cd "$(dirname "$0")/.."
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
command -v restic >/dev/null || missing+=(restic)
command -v zstd >/dev/null || missing+=(zstd)
command -v mariadbd >/dev/null || missing+=(mariadb-server)
command -v mariadb >/dev/null || missing+=(mariadb-client)
[ -x /usr/bin/time ] || missing+=(time)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v pg_dump >/dev/null || missing+=(postgresql-client)
command -v setpriv >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
cargo build --release --quiet --bin cairnctl
exec python3 bench/db_bench.py --cairnctl target/release/cairnctl "$@"
