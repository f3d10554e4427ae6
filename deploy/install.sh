#!/usr/bin/env bash
# Installs Cairn's binaries, systemd units and example configs on this machine.
#   sudo bash deploy/install.sh controller|agent
# Then: controller: `cairn-controller init …` as the cairn user, start the unit;
#       agent: `CAIRN_TOKEN=… cairn-agent enroll …` (from `cairnctl token create`).
set -euo pipefail
cd "$(dirname "$0")/.."
role="${1:?usage: install.sh controller|agent}"
prefix="${PREFIX:-/usr/local}"
unitdir="${UNITDIR:-/etc/systemd/system}"
etc="${ETC:-/etc/cairn}"
case "$role" in
  controller) bins=(cairn-controller cairnctl) ;;
  agent) bins=(cairn-agent) ;;
  *) echo "install.sh: unknown role $role (controller or agent)" >&2; exit 64 ;;
esac
args=()
for b in "${bins[@]}"; do args+=(--bin "$b"); done
cargo build --release --quiet "${args[@]}"
install -d -m 0755 "$prefix/bin" "$unitdir"
install -d -m 0750 "$etc"
for b in "${bins[@]}"; do install -m 0755 "target/release/$b" "$prefix/bin/$b"; done
install -m 0644 "deploy/cairn-$role.service" "$unitdir/cairn-$role.service"
[ -f "$etc/$role.toml" ] || install -m 0640 "deploy/$role.toml" "$etc/$role.toml"
if [ "$role" = controller ] && ! id cairn >/dev/null 2>&1 && [ -z "${NO_USER:-}" ]; then
  useradd --system --home-dir /var/lib/cairn --shell /usr/sbin/nologin cairn
fi
if [ -z "${NO_SYSTEMCTL:-}" ] && command -v systemctl >/dev/null; then
  systemctl daemon-reload
fi
echo "installed cairn-$role; edit $etc/$role.toml, then: systemctl enable --now cairn-$role"
