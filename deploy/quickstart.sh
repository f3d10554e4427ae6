#!/usr/bin/env bash
# Dev mode, in the spirit of `vault server -dev`: one controller, one enrolled
# agent and a local repository under one directory, a sample site backed up,
# and the status page's URL. Runs until Ctrl-C (CAIRN_DEV_EXIT=1: exit after
# the first backup, as the tests do).
#   bash deploy/quickstart.sh [SITE_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${CAIRN_PROFILE:-release}"
if [ "$profile" = release ]; then
  cargo build --release --quiet --bin cairnctl --bin cairn-controller --bin cairn-agent
else
  cargo build --quiet --bin cairnctl --bin cairn-controller --bin cairn-agent
fi
bin="$PWD/target/$profile"
work="${CAIRN_DEV_DIR:-$(mktemp -d /tmp/cairn-dev.XXXXXX)}"
mkdir -p "$work"
site="${1:-}"
if [ -z "$site" ]; then
  site="$work/sample-site"
  mkdir -p "$site/wp-content/uploads" "$site/wp-content/cache"
  printf '<?php\ndefine("DB_NAME", "sample");\n' > "$site/wp-config.php"
  head -c 2000000 /dev/urandom > "$site/wp-content/uploads/photo.jpg"
  seq 1 50000 > "$site/index.php"
  echo "cached page" > "$site/wp-content/cache/page.html"
fi
site="$(cd "$site" && pwd)"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
grpc=$(port)
web=$(port)
( umask 077; [ -f "$work/passphrase" ] || head -c 24 /dev/urandom | base64 > "$work/passphrase" )
"$bin/cairn-controller" init --state-dir "$work/controller" --listen "127.0.0.1:$grpc" \
  --web-listen "127.0.0.1:$web" --public-url "https://127.0.0.1:$grpc" \
  --repo "$work/repository" --passphrase-file "$work/passphrase" > /dev/null
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
"$bin/cairn-controller" run --config "$work/controller/controller.toml" 2> "$work/controller.log" &
pids+=($!)
export CAIRN_CONFIG="$work/controller/cairnctl.toml"
for _ in $(seq 100); do [ -f "$work/controller/grpc.addr" ] && break; sleep 0.1; done
cat > "$work/agent.toml" <<EOF
state_dir = "$work/agent"
name = "dev-agent"
# Dev mode backs up the sample site only; a real agent also discovers the
# server's domains (web roots, nginx and apache configs).
[discovery]
enabled = false
[[domain]]
name = "$(basename "$site")"
path = "$site"
EOF
join=$("$bin/cairnctl" token create --ttl 5m --json)
token=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' <<<"$join")
ca=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["ca_sha256"])' <<<"$join")
CAIRN_TOKEN="$token" "$bin/cairn-agent" -c "$work/agent.toml" enroll \
  --controller "https://127.0.0.1:$grpc" --ca-sha256 "$ca" > /dev/null
unset token
"$bin/cairn-agent" -c "$work/agent.toml" run 2> "$work/agent.log" &
pids+=($!)
for _ in $(seq 100); do
  "$bin/cairnctl" agents list --json | grep -q '"online": true' && break
  sleep 0.2
done
# Files only: the sample's wp-config.php names a database no server here holds
# (on a real site, `backup` also dumps the database the config names).
"$bin/cairnctl" backup "$(basename "$site")" --files-only --wait
"$bin/cairnctl" snapshots list
echo
echo "status page:  http://127.0.0.1:$web/    (metrics: /metrics)"
echo "everything:   $work (logs: controller.log, agent.log)"
echo "cairnctl:     export CAIRN_CONFIG=$CAIRN_CONFIG PATH=$bin:\$PATH"
echo "              cairnctl agents list; cairnctl restore SNAPSHOT --target DIR --wait"
if [ "${CAIRN_DEV_EXIT:-0}" = 1 ]; then
  exit 0
fi
echo "Ctrl-C stops the controller and the agent."
wait
