#!/usr/bin/env bash
# The GPU measurements of the performance work, in as few calls of a lent GPU machine as fit its
# 10-minute limit per command (the `device` tool runs this in a copy of the checkout; its image
# has PyTorch, transformers and PEFT, and no network):
#
#     bash scripts/gpu_checks.sh metagrad-1b    # Llama-3.2-1B dimensions
#     bash scripts/gpu_checks.sh metagrad-8b    # Llama-3.1-8B dimensions
#     bash scripts/gpu_checks.sh adapt          # `mass bench adapt` on the embedded model
#
# metagrad-*: `mass bench metagrad` with random weights (nothing is downloaded), bf16 base weights,
# fp32 LoRA and adjoints, m=12, K=2, 1,024-token examples, every mode; a mode that does not fit
# is a row saying so ("out of memory"), not a failed run. adapt: Base and every adapting method
# on the first 128 minimath-500 problems. Results (JSON + Markdown) go to $OUT (the device
# tool's folder that comes back) or runs/gpu; commit them under docs/ with the machine named.
# Grading answers needs math-verify: if the image lacks it, `pip download math-verify==0.9.0
# -d .wheels` here, list .wheels in .git/info/exclude, carry it, and this installs from it.
set -euo pipefail
case "${1:-}" in
    metagrad-1b | metagrad-8b | adapt) ;;
    *) echo "usage: bash scripts/gpu_checks.sh metagrad-1b | metagrad-8b | adapt" >&2; exit 2 ;;
esac
out=${OUT:-runs/gpu}
mkdir -p "$out"
python=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$out/machine.txt"
$python -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers',
transformers.__version__, 'peft', peft.__version__)" | tee -a "$out/machine.txt"

metagrad() {  # $1: preset
    $python -m mass bench metagrad "model=random:$1" dtype=bfloat16 m=12 steps=2 tokens=1024 device=cuda \
        repeats=2 warmup=1 "out=$out"
}

case "$1" in
    metagrad-1b) metagrad llama-3.2-1b ;;
    metagrad-8b) metagrad llama-3.1-8b ;;
    adapt)
        if ! $python -c "import math_verify" 2>/dev/null; then
            [ -d .wheels ] || { echo "math-verify is missing and no .wheels folder was carried" >&2; exit 1; }
            $python -m pip install -q --no-index --find-links .wheels math-verify==0.9.0
        fi
        $python -m mass bench adapt device=cuda limit=128 "out=$out" ;;
esac
