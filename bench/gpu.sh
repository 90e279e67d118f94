#!/usr/bin/env bash
# The GPU run, fitted to 8 minutes on a lent H200 (one command): wheels from .whl/ when it is there
# (bench/gpu_wheels.sh fetches them), the `-m gpu` tests of the GPU decode, CUDA graphs and devices
# (at most JEPA_GPU_TESTS_TIMEOUT s, default 100, 0 skips them), then bench/gpu_bench.py (at most
# JEPA_GPU_BENCH_TIMEOUT s, default 340): the card's bf16 matmul rate; ViT-H/14 (random weights)
# model-only ceiling; the service at 64 clients on small and 3 MP JPEGs with GPU decode (the
# default), CPU decode and 8 decode processes; the naive IJepaModel server on the
# same GPU in bf16; the model's kernels (SDPA backends, CUDA graph) and torch.compile.
# Results: OUT/results.md and OUT/results.json (written after every part), OUT/gpu_tests.txt.
#
#   bench/gpu.sh OUT [extra flags for python -m bench.gpu_bench, e.g. --parts ceiling,onnx]
#   JEPA_GPU_BENCH_CPU_CHECK=1 bench/gpu.sh /tmp/gpu_check     # the same logic on CPU, tiny model
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: bench/gpu.sh OUT_DIR [flags]}"
shift
mkdir -p "$OUT"
PY="${PYTHON:-python}"
START=$SECONDS
if [[ -d .whl && "${JEPA_GPU_BENCH_CPU_CHECK:-0}" != 1 ]]; then  # a box without network: the service's wheels, carried (bench/gpu_wheels.sh)
  { "$PY" -m pip install -q --no-index --find-links .whl -r .whl/requirements.txt pytest pytest-timeout \
    || while read -r req; do  # one wheel missing must not keep the others out
         "$PY" -m pip install -q --no-index --find-links .whl "$req" || echo "not installed: $req"
       done < <(cat .whl/requirements.txt; echo pytest; echo pytest-timeout); } > "$OUT/pip.txt" 2>&1
  export JEPA_BENCH_PHOTO_DIR="$PWD/.whl/photos"  # scikit-image's photos, without its wheel
fi
{ nvidia-smi || true; } > "$OUT/nvidia-smi.txt" 2>&1
"$PY" -m pip list 2>/dev/null | grep -i -E "torch|onnx|fastapi|uvicorn|httpx|pydantic|numpy|pillow|scikit|simplejpeg|transformers" > "$OUT/packages.txt" || true
# Preflight: name every missing module up front (the parts still run; those that need it fail alone).
"$PY" - <<'EOF' | tee "$OUT/preflight.txt"
import importlib.util
need = ["torch", "numpy", "PIL", "safetensors", "pydantic", "pydantic_settings", "fastapi", "uvicorn",
        "multipart", "orjson", "prometheus_client", "httpx", "uvloop", "httptools", "simplejpeg",
        "torchvision", "transformers", "onnx", "onnxruntime"]
missing = [m for m in need if importlib.util.find_spec(m) is None]
print("missing modules:", ", ".join(missing) or "none")
try:
    import torch
    from service.gpu_decode import nvjpeg_problem
    if torch.cuda.is_available():
        print("nvJPEG:", nvjpeg_problem(torch.device("cuda")) or "ok")
except Exception as e:
    print("nvJPEG:", e)
try:
    from bench.images import PHOTO_NAMES, photo_dir
    absent = [n for n in PHOTO_NAMES if not (photo_dir() / n).is_file()]
    print("benchmark photos:", "ok" if not absent else f"missing {absent}")
except Exception as e:
    print("benchmark photos:", e)
EOF
if [[ "${JEPA_GPU_BENCH_CPU_CHECK:-0}" == "1" ]]; then
  set -- --size tiny --patch 16 --image-size 64 --device cpu --matmul 512 --batch-sizes 1,4 --min-time 0.3 \
         --concurrency 8 --client-procs 2 --duration 3 --quick --profile 2 \
         --variants torch-bf16-graphs,graphs-procs8 --full 1 \
         --service-args "--max-batch-size 16 --max-concurrent-requests 512 --max-queue 1024" \
         --parts matmul,ceiling,service,naive,kernels --kernels sdpa-auto,sdpa-math "$@"
  JEPA_GPU_TESTS_TIMEOUT="${JEPA_GPU_TESTS_TIMEOUT:-0}"
  JEPA_GPU_BENCH_TIMEOUT="${JEPA_GPU_BENCH_TIMEOUT:-900}"  # 2 shared cores, not a GPU box
fi
TESTS_TIMEOUT="${JEPA_GPU_TESTS_TIMEOUT:-100}"
if [[ "$TESTS_TIMEOUT" != "0" ]]; then
  timeout -k 5 "$TESTS_TIMEOUT" "$PY" -m pytest -q -p no:cacheprovider -m gpu -rs \
    tests/service/test_gpu_decode.py tests/service/test_devices.py > "$OUT/gpu_tests.txt" 2>&1
  echo "gpu tests exit code: $? (after $((SECONDS - START)) s)" | tee -a "$OUT/gpu_tests.txt"
fi
timeout -k 10 "${JEPA_GPU_BENCH_TIMEOUT:-340}" "$PY" -m bench.gpu_bench "$OUT" "$@"
rc=$?
echo "gpu_bench exit code: $rc (whole script $((SECONDS - START)) s)" | tee -a "$OUT/results.md"
exit $rc
