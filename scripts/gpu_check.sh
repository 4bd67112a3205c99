#!/usr/bin/env bash
# make gpu-check: scripts/gpu_check.py where it can run.
# - On a machine whose python3 has torch with CUDA (a GPU image, no network): r1pipe's missing dependencies are
#   installed from .gpu-check/wheels (made beforehand by `make gpu-wheels`) into a scratch path, first; every
#   module the check imports is tried before any GPU work, so a missing one costs seconds, not the lease.
# - Elsewhere: this repository's venv (make install) and --device cpu, the toy sizes CI runs.
# Results: $OUT (the GPU tool's output folder) if set, else runs/gpu-check; GPU_CHECK_ARGS adds arguments.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
OUTDIR="${OUT:-runs/gpu-check}"
if python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  if [ ! -d .gpu-check/wheels ]; then
    echo "gpu-check: .gpu-check/wheels is missing: run \`make gpu-wheels\` on a machine with network and bring .gpu-check along" >&2
    exit 2
  fi
  SITE="${GPU_CHECK_SITE:-/tmp/r1pipe-site}"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .gpu-check/wheels/*.whl
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  python3 -c 'import trl, datasets, hydra, omegaconf, math_verify, transformers, accelerate, typer, rich, r1pipe.cli, r1pipe.runner, r1pipe.stages.reasoning_rl'
  mkdir -p "$OUTDIR"
  nvidia-smi > "$OUTDIR/nvidia-smi.txt" 2>&1 || true
  GPU_CHECK_WORK="${GPU_CHECK_WORK:-/tmp/r1pipe-gpu-check}" python3 scripts/gpu_check.py --device cuda --out "$OUTDIR" ${GPU_CHECK_ARGS:-}
else
  make install smollm2 >/dev/null
  .venv/bin/python scripts/gpu_check.py --device cpu --out "$OUTDIR" ${GPU_CHECK_ARGS:-}
fi
