#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh Debian machine
# (only what is missing), then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v python3 >/dev/null || missing+=(python3)
command -v tar >/dev/null || missing+=(tar)
command -v cc >/dev/null || missing+=(build-essential)
command -v pkg-config >/dev/null || missing+=(pkg-config)
command -v mkfifo >/dev/null || missing+=(coreutils)
command -v pgrep >/dev/null || missing+=(procps)
command -v setpriv >/dev/null || missing+=(util-linux)
# Throwaway database servers for the database tests (started per test, in temp dirs).
command -v mariadb-install-db >/dev/null || missing+=(mariadb-server)
command -v mariadb-dump >/dev/null || missing+=(mariadb-client)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v pg_dump >/dev/null || missing+=(postgresql-client)
# A real SMTP server for the notification tests (Debian's Python, which may
# not be the first python3 on PATH).
/usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || missing+=(python3-aiosmtpd)
# promtool lints /metrics.
command -v promtool >/dev/null || missing+=(prometheus)
# Headless Chromium loads the dashboard.
command -v chromium >/dev/null || missing+=(chromium)
# systemd-analyze checks the shipped units (verify, security exposure).
command -v systemd-analyze >/dev/null || missing+=(systemd)
# man renders the generated man pages.
command -v man >/dev/null || missing+=(man-db)
command -v groff >/dev/null || missing+=(groff-base)
# The .deb packages: lintian checks them, adduser makes their system user.
command -v lintian >/dev/null || missing+=(lintian)
command -v adduser >/dev/null || missing+=(adduser)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

if ! command -v cargo >/dev/null; then
  echo "cargo is required (rustup: https://rustup.rs)" >&2
  exit 1
fi

# Garage, the S3-compatible server the storage tests run against. Built once per
# machine (several minutes) into cargo's bin dir, outside the clone.
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
if [ -z "${CAIRN_GARAGE:-}" ]; then
  if command -v garage >/dev/null; then
    CAIRN_GARAGE="$(command -v garage)"
  else
    if [ ! -x "$CARGO_BIN/garage" ]; then
      echo "building garage (once per machine)…"
      cargo install garage --locked --quiet
    fi
    CAIRN_GARAGE="$CARGO_BIN/garage"
  fi
fi
export CAIRN_GARAGE

# The fleet generator lives in shared/, beside the clone.
if [ -z "${CAIRN_GEN_FLEET:-}" ] && [ ! -f ../shared/bench/gen_fleet.py ]; then
  echo "../shared/bench/gen_fleet.py not found; set CAIRN_GEN_FLEET" >&2
  exit 1
fi

# A fresh clone gains nothing from incremental caches; they only fill the disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

cargo fmt --all -- --check
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --workspace --all-targets --locked -- -D warnings
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# The packages: built (cargo-deb), lintian-clean of errors, installed with
# dpkg -i and used as README's install section says, then upgraded in place.
if bash deploy/package.sh && as_root bash tests/package-install.sh; then
  echo "test result: ok. 1 passed; 0 failed (packages)" | tee -a "$log"
else
  echo "test result: FAILED. 0 passed; 1 failed (packages)" | tee -a "$log"
  status=1
fi
set -e
# One closing line for the whole workspace (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
