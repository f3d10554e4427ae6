#!/usr/bin/env bash
# Builds the Debian packages into target/debian/ (cargo-deb, installed
# when missing) and checks them with lintian (errors fail).
#   bash deploy/package.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --quiet
cargo build --release --quiet --bin cairn-controller --bin cairnctl --bin cairn-agent
out=target/package
rm -rf "$out" && mkdir -p "$out/completions" "$out/man"
ctl=target/release/cairnctl
"$ctl" completions bash > "$out/completions/cairnctl"
"$ctl" completions zsh > "$out/completions/_cairnctl"
"$ctl" completions fish > "$out/completions/cairnctl.fish"
"$ctl" man "$out/man"
gzip -9n "$out"/man/*.1
for p in cairn-controller cairn-agent; do
  cargo deb --no-build --strip --quiet -p "$p" --output target/debian/
done
ls target/debian/*.deb
if command -v lintian >/dev/null; then
  # Errors fail the build; warnings are printed for the record.
  lintian --fail-on error --tag-display-limit 0 target/debian/*.deb
fi
