#!/usr/bin/env bash
# make gpu-wheels: what `make gpu-check` needs on a GPU machine with no network, gathered here where PyPI is
# reachable, into .gpu-check/ (ignored by git; carry it to the GPU machine with the working tree):
#   wheels/     r1pipe's pure-Python dependencies that a CUDA image with torch, transformers and accelerate
#               usually lacks, for Python 3.12, at the versions this venv runs (so both machines run the same
#               trl, datasets and transformers); transformers is carried too, for the same reason
#   tokenizer/  SmolLM2's tokenizer files (a real 49,152-token BPE tokenizer, no weights) from `r1pipe fetch`
# Packages the image already has (torch, numpy, pyarrow, pandas, tokenizers, huggingface_hub, ...) are not
# carried; the check lists their versions and stops at once, before any GPU work, if one is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=.gpu-check
rm -rf "$OUT/wheels" "$OUT/tokenizer"
mkdir -p "$OUT/wheels" "$OUT/tokenizer"
PKGS="trl datasets dill multiprocess hydra-core omegaconf math-verify latex2sympy2_extended transformers"
pins=$($PY - $PKGS <<'PYEOF'
import sys
from importlib import metadata
print(" ".join(f"{p}=={metadata.version(p)}" for p in sys.argv[1:]))
PYEOF
)
# Python 3.12 wheels (what the GPU image runs); pure Python, so the platform only matters for pip's matching
$PY -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any \
  -d "$OUT/wheels" $pins
# hydra-core pins antlr4-python3-runtime 4.9.*, published as a source archive only: build its (pure) wheel here
antlr=$($PY -c 'from importlib import metadata; print(metadata.version("antlr4-python3-runtime"))')
$PY -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$OUT/wheels" "antlr4-python3-runtime==$antlr"
$PY -m r1pipe.cli fetch smollm2 >/dev/null
src=$($PY -c 'from r1pipe import fetch; print(fetch.model_dir("smollm2"))')
cp "$src"/tokenizer.json "$src"/tokenizer_config.json "$src"/chat_template.jinja "$OUT/tokenizer/"
du -sh "$OUT/wheels" "$OUT/tokenizer"
ls "$OUT/wheels"
