#!/usr/bin/env bash
# Runs Cairn on this machine: builds cairnctl, creates a repository, backs up a
# sample site (or the directory given), lists, checks and restores it.
#   bash deploy/quickstart.sh [SITE_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin cairnctl
ctl="$PWD/target/release/cairnctl"
work="${CAIRN_QUICKSTART_DIR:-$(mktemp -d /tmp/cairn-quickstart.XXXXXX)}"
site="${1:-}"
if [ -z "$site" ]; then
  site="$work/sample-site"
  mkdir -p "$site/wp-content/uploads" "$site/wp-content/cache"
  printf '<?php\ndefine("DB_NAME", "sample");\n' > "$site/wp-config.php"
  head -c 2000000 /dev/urandom > "$site/wp-content/uploads/photo.jpg"
  seq 1 50000 > "$site/index.php"
  echo "cached page" > "$site/wp-content/cache/page.html"
fi
export CAIRN_REPO="$work/repo"
export CAIRN_PASSPHRASE_FILE="$work/passphrase"
( umask 077; [ -f "$CAIRN_PASSPHRASE_FILE" ] || head -c 24 /dev/urandom | base64 > "$CAIRN_PASSPHRASE_FILE" )
[ -f "$CAIRN_REPO/config" ] || "$ctl" repo init
"$ctl" repo backup --domain "$(basename "$site")" "$site"
"$ctl" repo snapshots
"$ctl" repo check --read-data
"$ctl" repo restore latest --target "$work/restored"
echo
echo "repository: $CAIRN_REPO (passphrase in $CAIRN_PASSPHRASE_FILE)"
echo "restored:   $work/restored"
echo "try:        CAIRN_REPO=$CAIRN_REPO CAIRN_PASSPHRASE_FILE=$CAIRN_PASSPHRASE_FILE $ctl repo --help"
