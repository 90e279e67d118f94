#!/usr/bin/env bash
# Test-only: make a stand-in for python:3.11-slim-bookworm on a machine that reaches no image
# registry. Debian bookworm (debootstrap, minbase) with Debian's python3.11 + venv, `python` on
# PATH as in the official image, and the host's CA bundle (so pip inside builds trusts the same
# TLS proxies the host does). Usage: make_base_image.sh [TAG] [WORKDIR]
set -euo pipefail

TAG="${1:-python:3.11-slim-bookworm}"
WORK="${2:-/var/tmp/jepa-deploy}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
ROOTFS="$WORK/rootfs"

if [ ! -x "$ROOTFS/usr/bin/python3" ]; then
    rm -rf "$ROOTFS"
    mkdir -p "$WORK"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$ROOTFS" "$MIRROR"
fi

# Slim it the way Debian's slim images are: no package caches, lists, docs or man pages.
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
    "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/*
ln -sf /usr/bin/python3 "$ROOTFS/usr/local/bin/python"
cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"

tar -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$TAG" >/dev/null
echo "made base image $TAG ($(docker image inspect --format '{{.Size}}' "$TAG") bytes)"
