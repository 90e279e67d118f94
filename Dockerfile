# syntax=docker/dockerfile:1
# The jepa-embed service image: ONNX Runtime serving, no PyTorch inside.
#
#   docker build -t jepa-embed .                 # CPU image (the default target, `runtime`)
#   docker build -t jepa-embed:gpu \
#     --build-arg RUNTIME_BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#     --build-arg ORT_PACKAGE="onnxruntime-gpu>=1.17" .
#
# Stage `export` installs CPU PyTorch, builds the project's wheel and exports the default model
# to ONNX; stage `runtime` installs the wheel without dependencies, the runtime requirements
# (deploy/requirements-runtime.txt: pyproject's dependencies minus torch) and ONNX Runtime, and
# copies the exported model directory (made world-readable: the service runs as uid 10001).
# pip itself is removed from the final venv. Mount other models under /models, set JEPA_MODEL.
#
# Models by name (README "Models by name"): `--build-arg BAKE_MODEL=ijepa-vith14-1k` (a short name,
# a Hub id org/name[@revision] or a checkpoint URL) downloads that model at build time and bakes its
# ONNX export into /models/${DEFAULT_MODEL}; or, at run time, JEPA_MODEL=org/name downloads on first
# start into HF_HOME=/data/hf (mount a volume there). This image has no torch, so a name given at
# run time must hold an exported directory (model.onnx); Meta's repositories need BAKE_MODEL.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG RUNTIME_BASE=${PYTHON_IMAGE}

FROM ${PYTHON_IMAGE} AS export
# PyTorch's CPU wheel index: PyPI's default torch is a multi-GB CUDA build, needed nowhere here.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
# The model directory under models/ that is exported and baked in, and extra export flags
# (e.g. "--fp16 --int8 --uint8-input").
ARG DEFAULT_MODEL=ijepa-vit-tiny-cifar10
ARG EXPORT_FLAGS=""
# A model to bake in by name instead of models/${DEFAULT_MODEL}: downloaded now (the Hub or the URL
# must be reachable from the build), exported into /models/${DEFAULT_MODEL}. Empty: no download.
ARG BAKE_MODEL=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv \
    && pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY jepa ./jepa
COPY export ./export
COPY service ./service
# The project itself (its ranges are in pyproject.toml), then its wheel for the runtime stage.
# hadolint ignore=DL3013
RUN pip install ".[export]" \
    && pip wheel --no-deps --wheel-dir /wheels .
COPY models/ /src/models/
# The download cache (HF_HOME) is thrown away: the exported directory holds config, weights and graphs.
RUN HF_HOME=/tmp/hf python -m export "${BAKE_MODEL:-models/${DEFAULT_MODEL}}" --out "/models/${DEFAULT_MODEL}" \
        --no-progress ${EXPORT_FLAGS} \
    && rm -rf /tmp/hf \
    && test -f "/models/${DEFAULT_MODEL}/model.onnx" \
    && chmod -R a+rX /models

FROM ${RUNTIME_BASE} AS runtime
# ONNX Runtime build to serve with: pyproject's `onnx` extra, or its `gpu` extra for CUDA images.
ARG ORT_PACKAGE="onnxruntime>=1.17"
# Anything else to install, e.g. "torch==2.13.0" (PyPI's default torch is a CUDA build) for a GPU
# image that also offers the torch backend.
ARG EXTRA_PIP_ARGS=""
ARG DEFAULT_MODEL=ijepa-vit-tiny-cifar10
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
COPY deploy/requirements-runtime.txt /tmp/requirements-runtime.txt
COPY --from=export /wheels /tmp/wheels
# One layer: the venv, its packages, and pip removed again (a later layer could not shrink it).
# CUDA base images ship no Python: install the distribution's when the base has none.
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/venv \
    && pip install -r /tmp/requirements-runtime.txt "${ORT_PACKAGE}" ${EXTRA_PIP_ARGS} \
    && pip install --no-deps /tmp/wheels/*.whl \
    && pip uninstall -y pip setuptools \
    && rm -rf /tmp/wheels /tmp/requirements-runtime.txt \
    && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin jepa \
    && mkdir -p /data/hf && chown 10001:10001 /data/hf \
    && install -d -o 10001 -g 10001 /var/cache/jepa-embed
COPY --from=export /models/${DEFAULT_MODEL} /models/${DEFAULT_MODEL}
COPY deploy/healthcheck.py /opt/jepa/healthcheck.py
# HF_HOME: where models named at run time (JEPA_MODEL=org/name) are downloaded; owned by the
# service's user, so a named volume mounted there starts writable.
ENV JEPA_MODEL=/models/${DEFAULT_MODEL} \
    HF_HOME=/data/hf \
    JEPA_BACKEND=onnxruntime \
    JEPA_HOST=0.0.0.0 \
    JEPA_PORT=8000 \
    JEPA_CACHE_DIR=/var/cache/jepa-embed
WORKDIR /opt/jepa
USER 10001:10001
EXPOSE 8000
# /ready is 503 while a start-up build runs (minutes for big models): failures in the start period do not count.
HEALTHCHECK --interval=10s --timeout=5s --start-period=900s --retries=3 CMD ["python", "/opt/jepa/healthcheck.py"]
ENTRYPOINT ["jepa-serve"]
