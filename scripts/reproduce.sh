#!/usr/bin/env bash
# The whole MiniMath reproduction from scratch on this machine: pretrain the embedded model,
# then `mass table`, which meta-trains MASS and MASS_gold, trains Solver GRPO (60 steps each;
# the paper: 100) and evaluates all six methods on minimath-500.
# Usage: bash scripts/reproduce.sh [OUT_ROOT]          (default runs/reproduce)
# Everything goes under OUT_ROOT: pretrain/, table/ (table.md, JSON, figures, checkpoints/).
set -euo pipefail
root=${1:-runs/reproduce}
start=$(date +%s)
mass pretrain out="$root/pretrain"
mass table --model "$root/pretrain" out="$root/table"
echo "reproduction finished in $(( ($(date +%s) - start) / 60 )) minutes; table: $root/table/table.md"
