#!/usr/bin/env bash
# Train the default model (I-JEPA ViT-Tiny, CIFAR-10, 32 px) within a wall-clock budget, then
# evaluate it on the CIFAR-10 test split (kNN + linear probe vs raw pixels vs random weights).
#
#   bash bench/gpu_train.sh OUT_DIR [extra --section.key=value overrides for training]
#
# Environment: DATA_DIR (default ../shared/data/cifar10), TIME_BUDGET_MIN (training wall time,
# default 4.5), RUN_DIR (checkpoints + log; default OUT_DIR/run; checkpoints are deleted at the
# end unless KEEP_CHECKPOINTS=1), EVAL_ARGS (extra training.evaluate flags, e.g.
# "--train-limit 2000 --test-limit 1000" for a quick CPU check). OUT_DIR receives: ijepa-vit-tiny-cifar10/ (the model directory),
# pretrain.log, log.jsonl, config.yaml, training.png, eval.txt (the table), eval.json, env.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: bash bench/gpu_train.sh OUT_DIR [overrides...]}
shift
DATA=${DATA_DIR:-../shared/data/cifar10}
BUDGET=${TIME_BUDGET_MIN:-4.5}
RUN=${RUN_DIR:-$OUT/run}
mkdir -p "$OUT" "$RUN"
PY=${PYTHON:-python}

{
  date -u
  $PY -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__,
          "cuda", torch.cuda.is_available() and torch.cuda.get_device_name(0))'
  nproc
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

T0=$(date +%s)
$PY -m training.pretrain --config training/configs/cifar10_vit_tiny.yaml \
  --data.root_path="$DATA" --data.eval_path="$DATA/cifar10_test_jpeg.npz" \
  --logging.folder="$RUN" --meta.time_budget_min="$BUDGET" "$@" 2>&1 | tee "$OUT/pretrain.log"
T1=$(date +%s)
$PY -m training.evaluate "$RUN/model" --data "$DATA/cifar10_train_jpeg.npz" \
  --eval-data "$DATA/cifar10_test_jpeg.npz" --out "$OUT/eval.json" ${EVAL_ARGS:-} 2>&1 | tee "$OUT/eval.txt"
T2=$(date +%s)

rm -rf "$OUT/ijepa-vit-tiny-cifar10"
cp -r "$RUN/model" "$OUT/ijepa-vit-tiny-cifar10"
if [ "$RUN" != "$OUT/run" ] || [ "${KEEP_CHECKPOINTS:-0}" = 1 ]; then
  cp "$RUN/log.jsonl" "$RUN/config.yaml" "$RUN/training.png" "$OUT/"
else
  mv "$RUN/log.jsonl" "$RUN/config.yaml" "$RUN/training.png" "$OUT/"
fi
[ "${KEEP_CHECKPOINTS:-0}" = 1 ] || rm -rf "$OUT/run"
echo "pretrain $((T1 - T0)) s, evaluate $((T2 - T1)) s, total $((T2 - T0)) s" | tee -a "$OUT/eval.txt"
du -sh "$OUT/ijepa-vit-tiny-cifar10"
