#!/usr/bin/env bash
# Fetch, on a machine with PyPI, the wheels a lent GPU box (no network; Python 3.12 with CUDA torch,
# torchvision, numpy, Pillow, transformers) needs for bench/gpu.sh and the `-m gpu` tests: the
# service's runtime requirements, pytest, and scikit-image's six photos (.whl/photos).
# They land in .whl/ (ignored by git, about 60 MB, under the 64 MiB a device call carries); carry it to the box, where bench/gpu.sh installs
# from it with --no-index before it runs anything.
#
#   bench/gpu_wheels.sh [PYTHON_VERSION, default 3.12]
set -euo pipefail
cd "$(dirname "$0")/.."
VER="${1:-3.12}"
PLAT=(--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64)
GET=(python -m pip download -q --only-binary=:all: --python-version "$VER" --implementation cp "${PLAT[@]}" -d .whl)
mkdir -p .whl
# numpy comes with the box's torch, and huggingface_hub, filelock and tqdm with its transformers
# (only serving a model by name needs them, and replacing the box's hub could break its
# transformers): leave them out
grep -v -E '^(numpy|huggingface_hub|filelock|tqdm)([<>=; ]|$)' deploy/requirements-runtime.txt | grep -v '^#' \
  > .whl/requirements.txt
"${GET[@]}" -r .whl/requirements.txt pytest pytest-timeout
rm -f .whl/uvloop-*.whl  # the lent image has uvloop; 4.5 MB less to carry (py-spy: add it for --profile)
# the six scikit-image photos the benchmark and the tests use, not its 14 MB wheel (the carry is 64 MiB)
mkdir -p .whl/photos
python - <<'PY'
import shutil
from bench.images import PHOTO_NAMES, photo_dir
for name in PHOTO_NAMES:
    shutil.copy(photo_dir() / name, ".whl/photos/" + name)
PY
rm -f .whl/numpy-*.whl
du -sh .whl
