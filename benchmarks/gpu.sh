#!/usr/bin/env bash
# Every benchmark on one device, one JSON file: bash benchmarks/gpu.sh [cuda|cpu] [OUT.json] [quick]
# Sized to finish in under 5 minutes on one data-centre GPU; `quick` shrinks every benchmark so the script can be
# checked end to end on a CPU (its numbers then say nothing about a GPU). Needs Opacus (pip install -e '.[bench]').
# Python: $PYTHON if set, else the checkout's .venv when it exists, else python from PATH.
set -euo pipefail
cd "$(dirname "$0")"
DEVICE=${1:-cuda}
OUT=${2:-gpu-benchmarks.json}
QUICK=${3:-}
VENV_PY="$(cd .. && pwd)/.venv/bin/python"  # the checkout's environment (make install), else python from PATH
[ -x "$VENV_PY" ] || VENV_PY=python
PY=${PYTHON:-$VENV_PY}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
if [ -n "$QUICK" ]; then
  STEPS=(--steps 12 --warmup 2); POOL=(--models 4 --epochs 1 --set model.width=32); OPA=(--seeds 1 --epochs 1)
  PARTS=(--rounds 5 --warmup 2)
  CURV=(--models 4 --epochs 2 --every 1)
else
  STEPS=(--steps 300 --warmup 30); POOL=(--models 64 --epochs 2); OPA=(--seeds 2 --epochs 5)
  PARTS=(--rounds 200 --warmup 20)
  CURV=(--models 64 --epochs 30 --every 3)
fi
run() {  # name, then the command; each benchmark prints one JSON object as its last line
  local name=$1; shift
  echo "benchmarks/gpu.sh: $name" >&2
  "$@" | tail -n 1 > "$TMP/$name.json"
}
run step_time "$PY" step_time.py --device "$DEVICE" "${STEPS[@]}"
run dp_step "$PY" dp_step.py --device "$DEVICE" "${STEPS[@]}"
run dp_batch "$PY" dp_batch.py --device "$DEVICE" "${STEPS[@]}"
run dp_parts_mlp "$PY" dp_parts.py --device "$DEVICE" --model mlp "${PARTS[@]}"
run dp_parts_cnn1d "$PY" dp_parts.py --device "$DEVICE" --model cnn1d "${PARTS[@]}"
run pool_mlp "$PY" pool.py --device "$DEVICE" --memory "${POOL[@]}"
run pool_cnn1d "$PY" pool.py --device "$DEVICE" --set model.name=cnn1d --set model.width=32 --set model.depth=3 "${POOL[@]}"
run opacus_mlp "$PY" opacus_dp.py --device "$DEVICE" --model mlp "${OPA[@]}"
run opacus_cnn1d "$PY" opacus_dp.py --device "$DEVICE" --model cnn1d "${OPA[@]}"
run curvature_cost "$PY" curvature_cost.py --set "train.device=$DEVICE" "${CURV[@]}"
"$PY" - "$TMP" "$OUT" "$DEVICE" <<'PYEOF'
import json, pathlib, sys, torch
tmp, out, device = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
result = {"device": device, "gpu": torch.cuda.get_device_name() if device == "cuda" else None}
result.update({p.stem: json.loads(p.read_text()) for p in sorted(tmp.glob("*.json"))})
pathlib.Path(out).write_text(json.dumps(result, indent=1))
print(out)
PYEOF
