#!/usr/bin/env bash
# The GPU benchmark (about 5 minutes on an H200): ViT-H/14 random weights, model-only ceiling
# (torch bf16/fp16 at batch 1/8/32/64, ONNX Runtime CUDA fp16 when onnxruntime-gpu is installed) vs
# the service at concurrency 64 with real JPEGs (torch with CUDA graphs, eager torch, ONNX Runtime),
# against the card's measured bf16 matmul rate. Results: OUT/results.md and OUT/results.json.
#
#   bench/gpu.sh OUT [extra flags for python -m bench.gpu_bench, e.g. --variants torch-bf16,ort-fp16]
#   JEPA_GPU_BENCH_CPU_CHECK=1 bench/gpu.sh /tmp/gpu_check     # the same logic on CPU, tiny model
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: bench/gpu.sh OUT_DIR [flags]}"
shift
mkdir -p "$OUT"
PY="${PYTHON:-python}"
{ nvidia-smi || true; } > "$OUT/nvidia-smi.txt" 2>&1
"$PY" -m pip list 2>/dev/null | grep -i -E "torch|onnx|fastapi|uvicorn|httpx|pydantic|numpy|pillow|scikit" > "$OUT/packages.txt" || true
# Preflight: name every missing module up front (the parts still run; those that need it fail alone).
"$PY" - <<'EOF' | tee "$OUT/preflight.txt"
import importlib.util
need = ["torch", "numpy", "PIL", "safetensors", "pydantic", "pydantic_settings", "fastapi", "uvicorn",
        "multipart", "orjson", "prometheus_client", "httpx", "onnxruntime", "uvloop", "httptools", "onnx"]
missing = [m for m in need if importlib.util.find_spec(m) is None]
print("missing modules:", ", ".join(missing) or "none")
try:
    import onnxruntime
    print("onnxruntime", onnxruntime.__version__, "providers:", onnxruntime.get_available_providers())
except Exception as e:
    print("onnxruntime:", e)
try:
    from bench.images import PHOTO_NAMES, photo_dir
    absent = [n for n in PHOTO_NAMES if not (photo_dir() / n).is_file()]
    print("benchmark photos:", "ok" if not absent else f"missing {absent}")
except Exception as e:
    print("benchmark photos:", e)
EOF
if [[ "${JEPA_GPU_BENCH_CPU_CHECK:-0}" == "1" ]]; then
  set -- --size tiny --patch 16 --device cpu --matmul 512 --batch-sizes 1,4 --min-time 0.3 \
         --concurrency 8 --client-procs 2 --duration 3 --quick --profile 2 \
         --variants torch-bf16,torch-bf16-2workers,ort-fp16 --full 1 "$@"
fi
timeout -k 10 "${JEPA_GPU_BENCH_TIMEOUT:-480}" "$PY" -m bench.gpu_bench "$OUT" "$@"
rc=$?
echo "gpu_bench exit code: $rc" | tee -a "$OUT/results.md"
exit $rc
