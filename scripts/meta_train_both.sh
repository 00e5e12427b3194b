#!/usr/bin/env bash
# Meta-train MASS_gold and MASS on minimath-meta with the embedded model, at the paper's
# defaults (100 steps, batch 4, m=12, K=2, k=4). About 20 + 30 minutes on 2 CPU cores.
# Usage: bash scripts/meta_train_both.sh [OUT_ROOT] [extra key=value settings...]
set -euo pipefail
root=${1:-runs}
shift || true
mass meta-train outer=gold out="$root/mass-gold" "$@"
mass meta-train outer=verifier out="$root/mass" "$@"
