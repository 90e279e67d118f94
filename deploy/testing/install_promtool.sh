#!/usr/bin/env bash
# Put promtool (from Debian's `prometheus` package) in DEST/promtool without installing the
# package, so that no Prometheus service is set up or started. Used by .ci/run for
# tests/deploy/test_prometheus.py (which reads $PROMTOOL). Usage: install_promtool.sh DEST
set -euo pipefail

DEST="${1:?usage: install_promtool.sh DEST}"
mkdir -p "$DEST"
DEST="$(cd "$DEST" && pwd)"
if [ -x "$DEST/promtool" ]; then
    exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus >/dev/null; }
dpkg-deb -x prometheus_*.deb root
install -m 0755 root/usr/bin/promtool "$DEST/promtool"
"$DEST/promtool" --version | head -1
