#!/usr/bin/env bash
# Fetch, on a machine with PyPI, the wheels a lent GPU box (no network; Python 3.12 with CUDA torch,
# torchvision, numpy, Pillow, transformers) needs for bench/gpu.sh and the `-m gpu` tests: the
# service's runtime requirements, py-spy, pytest, and scikit-image (--no-deps, for its photos).
# They land in .whl/ (ignored by git, about 30 MB); carry it to the box, where bench/gpu.sh installs
# from it with --no-index before it runs anything.
#
#   bench/gpu_wheels.sh [PYTHON_VERSION, default 3.12]
set -euo pipefail
cd "$(dirname "$0")/.."
VER="${1:-3.12}"
PLAT=(--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64)
GET=(python -m pip download -q --only-binary=:all: --python-version "$VER" --implementation cp "${PLAT[@]}" -d .whl)
mkdir -p .whl
# numpy and Pillow come with the box's torch/torchvision (they would be most of the size), and
# huggingface_hub, filelock and tqdm with its transformers (only serving a model by name needs
# them, and replacing the box's hub could break its transformers): leave them out
grep -v -E '^(numpy|pillow|huggingface_hub|filelock|tqdm)' deploy/requirements-runtime.txt | grep -v '^#' \
  > .whl/requirements.txt
"${GET[@]}" -r .whl/requirements.txt py-spy pytest pytest-timeout lazy_loader
"${GET[@]}" --no-deps scikit-image
rm -f .whl/numpy-*.whl .whl/pillow-*.whl
du -sh .whl
