#!/usr/bin/env bash
# Installs Cairn's binaries, systemd units and example configs on this machine.
#   sudo bash deploy/install.sh controller|agent
# Then, controller: `sudo -u cairn cairn-controller init …` (it writes the
# config the unit runs, /var/lib/cairn/controller/controller.toml), then
# `systemctl enable --now cairn-controller`; agent: `CAIRN_TOKEN=… cairn-agent
# enroll …` (from `cairnctl token create`; it writes /etc/cairn/agent.toml,
# which the unit runs), then `systemctl enable --now cairn-agent`.
#
# Relocatable for tests and packaging: PREFIX (/usr/local), UNITDIR
# (/etc/systemd/system), ETC (/etc/cairn), STATE (/var/lib/cairn);
# CAIRN_BIN_DIR takes binaries already built instead of building them;
# NO_USER and NO_SYSTEMCTL skip creating the cairn user and reloading systemd.
set -euo pipefail
cd "$(dirname "$0")/.."
role="${1:?usage: install.sh controller|agent}"
prefix="${PREFIX:-/usr/local}"
unitdir="${UNITDIR:-/etc/systemd/system}"
etc="${ETC:-/etc/cairn}"
state="${STATE:-/var/lib/cairn}"
case "$role" in
  controller) bins=(cairn-controller cairnctl) ;;
  agent) bins=(cairn-agent) ;;
  *) echo "install.sh: unknown role $role (controller or agent)" >&2; exit 64 ;;
esac
bindir="${CAIRN_BIN_DIR:-}"
if [ -z "$bindir" ]; then
  args=()
  for b in "${bins[@]}"; do args+=(--bin "$b"); done
  cargo build --release --quiet "${args[@]}"
  bindir=target/release
fi
install -d -m 0755 "$prefix/bin" "$unitdir" "$prefix/share/doc/cairn"
for b in "${bins[@]}"; do install -m 0755 "$bindir/$b" "$prefix/bin/$b"; done
# The unit starts the binaries where they were installed.
sed "s|/usr/bin/|$prefix/bin/|" "deploy/cairn-$role.service" > "$unitdir/cairn-$role.service"
chmod 0644 "$unitdir/cairn-$role.service"
install -m 0644 "deploy/$role.toml" "$prefix/share/doc/cairn/$role.toml.example"
if [ "$role" = controller ]; then
  # init writes the config here, and the unit runs it: one path.
  if ! id cairn >/dev/null 2>&1 && [ -z "${NO_USER:-}" ]; then
    useradd --system --home-dir "$state" --shell /usr/sbin/nologin cairn
  fi
  install -d -m 0700 "$state/controller"
  [ -n "${NO_USER:-}" ] || chown cairn:cairn "$state/controller"
else
  install -d -m 0750 "$etc"
  # enroll adds the controller to this file, and the unit runs it.
  [ -f "$etc/agent.toml" ] || install -m 0640 deploy/agent.toml "$etc/agent.toml"
fi
if [ -z "${NO_SYSTEMCTL:-}" ] && command -v systemctl >/dev/null; then
  systemctl daemon-reload
fi
case "$role" in
  controller) echo "installed cairn-controller; next: sudo -u cairn cairn-controller init --public-url https://HOST:7443 --repo DIR|s3://… --passphrase-file FILE, then systemctl enable --now cairn-controller" ;;
  agent) echo "installed cairn-agent; list domains in $etc/agent.toml if discovery misses any, run the join command from cairnctl token create, then systemctl enable --now cairn-agent" ;;
esac
