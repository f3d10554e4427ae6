#!/usr/bin/env bash
# Installs the .deb packages (deploy/package.sh) with dpkg -i and follows
# README's install section: controller init as the cairn user, a token, agent
# enroll; each daemon is started from its installed unit's own ExecStart line
# (as its User=), a backup and a restore go through them. Then the packages
# are installed again over the running controller (an upgrade): the edited
# agent config is kept, the catalog too, a backup queued before it runs
# after it, and the agent reconnects by itself and backs up again. Needs root; leaves the machine as it found it (purges).
set -euo pipefail
# Never `producer | grep -q`: grep quits at the first match and, under pipefail,
# a producer still writing fails the line (SIGPIPE or EPIPE). Capture, then match.
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "package-install.sh: needs root (dpkg -i)" >&2; exit 1; }
marker=/var/lib/cairn/.package-test
if [ -e /var/lib/cairn/controller/controller.toml ] && [ ! -e "$marker" ]; then
  echo "package-install.sh: this machine runs a real Cairn controller; refusing to touch it" >&2
  exit 1
fi
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  dpkg --purge cairn-controller cairn-agent >/dev/null 2>&1 || true
  rm -rf /var/lib/cairn /etc/cairn "$work"
  userdel cairn 2>/dev/null || true
}
trap cleanup EXIT
cleanup_first() { dpkg --purge cairn-controller cairn-agent >/dev/null 2>&1 || true; rm -rf /var/lib/cairn /etc/cairn; }
cleanup_first

fail() { echo "package-install.sh: $*" >&2; for l in "$work"/*.log; do echo "== $l"; tail -n 30 "$l"; done >&2; exit 1; }
wait_for() { # wait_for WHAT COMMAND...: up to 60 s
  local what="$1"; shift
  for _ in $(seq 1 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  fail "timed out waiting for $what"
}
exec_start() { sed -n 's/^ExecStart=//p' "/usr/lib/systemd/system/$1.service"; }

dpkg -i target/debian/cairn-controller_*.deb target/debian/cairn-agent_*.deb >"$work/dpkg.log" 2>&1 || fail "dpkg -i"
[ -e "$marker" ] || touch "$marker"
getent passwd cairn >/dev/null || fail "the package made no cairn user"
[ "$(stat -c %U /var/lib/cairn/controller)" = cairn ] || fail "state dir not owned by cairn"
complete_line="$(bash -c 'source /usr/share/bash-completion/completions/cairnctl; complete -p cairnctl')"
[[ "$complete_line" == *_cairnctl* ]] || fail "bash completion: $complete_line"
man_page="$(MANPAGER=cat man cairnctl 2>/dev/null)" || fail "man cairnctl"
[[ "$man_page" == *SYNOPSIS* ]] || fail "man cairnctl: no SYNOPSIS"

# README: init as cairn, then the unit (here: its ExecStart, as User=cairn).
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
install -o cairn -g cairn -m 0600 /dev/null /var/lib/cairn/controller/repository.pass
echo "package test passphrase" > /var/lib/cairn/controller/repository.pass
runuser -u cairn -- cairn-controller init --public-url "https://127.0.0.1:$port" \
  --listen "127.0.0.1:$port" --web-listen 127.0.0.1:0 \
  --repo /var/lib/cairn/controller/repo \
  --passphrase-file /var/lib/cairn/controller/repository.pass >"$work/init.log" 2>&1 || fail "init"
start_controller() {
  rm -f /var/lib/cairn/controller/grpc.addr
  # shellcheck disable=SC2046
  runuser -u cairn -- $(exec_start cairn-controller) >>"$work/controller.log" 2>&1 &
  pids+=($!)
  wait_for "the controller" test -e /var/lib/cairn/controller/grpc.addr
}
start_controller
export CAIRN_CONFIG=/var/lib/cairn/controller/cairnctl.toml
versions="$(cairnctl version)" || fail "cairnctl version"
grep -q "^controller " <<<"$versions" || fail "cairnctl version: $versions"

site="$work/www/shop.test"
mkdir -p "$site/wp-content/uploads"
echo "<?php echo 'shop';" > "$site/index.php"
head -c 300000 /dev/urandom > "$site/wp-content/uploads/photo.jpg"
sed -i -e 's/^enabled = true/enabled = false/' -e '/^\[\[domain\]\]/,$d' /etc/cairn/agent.toml
printf '[[domain]]\nname = "shop.test"\npath = "%s"\n' "$site" >> /etc/cairn/agent.toml
token_json="$(cairnctl --json token create)"
token="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' <<<"$token_json")"
ca="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["ca_sha256"])' <<<"$token_json")"
CAIRN_TOKEN="$token" cairn-agent enroll --controller "https://127.0.0.1:$port" --ca-sha256 "$ca" >"$work/enroll.log" 2>&1 || fail "enroll"
grep -q "127.0.0.1:$port" /etc/cairn/agent.toml || fail "enroll did not write the controller into the config the unit runs"
# shellcheck disable=SC2046
$(exec_start cairn-agent) >"$work/agent.log" 2>&1 &
pids+=($!)
wait_for "the agent's domain" sh -c 'cairnctl --json domains list | grep -q shop.test'

snapshot_of() { python3 -c 'import json,sys; j=json.load(sys.stdin); assert j["state"]=="succeeded", j; print(j["snapshot"])'; }
snap="$(cairnctl --json backup shop.test --files-only --wait | snapshot_of)" || fail "backup"
cairnctl --json restore "$snap" --target "$work/restored" --wait >"$work/restore.log" 2>&1 || fail "restore"
diff -r "$site" "$work/restored" || fail "the restore differs"

# Upgrade: the packages again over the running controller, which then
# restarts (as restart-after-upgrade does under systemd). A backup queued
# while the agent is away must survive it and run once the agent is back.
kill "${pids[1]}"; wait "${pids[1]}" 2>/dev/null || true
wait_for "the agent offline" sh -c 'cairnctl --json agents list | python3 -c "import json,sys; sys.exit(0 if not any(a[\"online\"] for a in json.load(sys.stdin)) else 1)"'
queued="$(cairnctl --json backup shop.test --files-only | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')" || fail "queueing a backup"
dpkg -i target/debian/cairn-controller_*.deb target/debian/cairn-agent_*.deb >>"$work/dpkg.log" 2>&1 || fail "dpkg -i (upgrade)"
grep -q "127.0.0.1:$port" /etc/cairn/agent.toml || fail "the upgrade overwrote the edited agent.toml"
kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true
start_controller
snapshots="$(cairnctl --json snapshots list)" || fail "snapshots list after the upgrade"
grep -q "$snap" <<<"$snapshots" || fail "the catalog lost the snapshot across the upgrade"
# shellcheck disable=SC2046
$(exec_start cairn-agent) >>"$work/agent.log" 2>&1 &
pids+=($!)
wait_for "the agent back online" sh -c 'cairnctl --json agents list | python3 -c "import json,sys; sys.exit(0 if all(a[\"online\"] for a in json.load(sys.stdin)) else 1)"'
wait_for "the queued backup to succeed" sh -c "cairnctl --json jobs show $queued | grep -q '\"succeeded\"'"
cairnctl --json backup shop.test --files-only --wait | snapshot_of >/dev/null || fail "backup after the upgrade"
echo "package-install.sh: packages installed, README followed, backup and restore through the units' daemons, upgrade kept config, catalog and a queued job"
