"""Tune each adapting method's inference settings on minimath-dev, never on minimath-500.

Every adapting method of the table (Base TTT, Base TT-SS, MASS_gold, MASS) gets the same search:
`mass eval --data minimath-dev` over a grid of inner learning rates (and step counts), each with
its own checkpoint where it needs one. The best setting of each method (ties go to the smaller
lr) is what `mass table` should use, given as `tuned.<method>.*` settings:

    python scripts/tune.py                                   # the table's checkpoints, lr in {0.3, 1, 3}, K in {2, 4}
    python scripts/tune.py --lrs 0.1 0.3 1 --steps 1 2 --limit 60 --out runs/tuning
    torchrun --standalone --nproc_per_node 2 scripts/tune.py # the evaluations over 2 processes

Writes OUT/<method>_lr<lr>_k<K>.json (the `mass eval` results), OUT/tuning.json and OUT/tuning.md,
and prints the `tuned.*` overrides. An existing result is reused unless --force is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mass import dist
from mass.cli import main as mass
from mass.checkpoint import SHIPPED_CHECKPOINTS

ADAPTING = ("ttt", "ttss", "mass-gold", "mass")


def evaluate(method: str, lr: float, steps: int, args) -> dict:
    path = Path(args.out) / f"{method}_lr{lr}_k{steps}.json"
    if args.force or not path.is_file():
        checkpoint = ["--checkpoint", str(Path(args.checkpoints) / method)] if method.startswith("mass") else []
        limit = ["--limit", str(args.limit)] if args.limit else []
        code = mass(["eval", "--method", method, "--data", args.data, "--out", str(path), f"adapt.lr={lr}",
                     f"adapt.steps={steps}", *checkpoint, *limit])
        if code != 0:
            sys.exit(f"{method} at lr={lr}, K={steps} failed (exit {code})")
    dist.barrier()
    return json.loads(path.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=list(ADAPTING), choices=ADAPTING)
    p.add_argument("--lrs", nargs="+", type=float, default=[0.3, 1.0, 3.0])
    p.add_argument("--steps", nargs="+", type=int, default=[2, 4])
    p.add_argument("--data", default="minimath-dev", help="development problems (never minimath-500)")
    p.add_argument("--limit", type=int, default=None)
    shipped = SHIPPED_CHECKPOINTS if (SHIPPED_CHECKPOINTS / "mass").is_dir() else Path("results/minimath-500/checkpoints")
    p.add_argument("--checkpoints", default=str(shipped), help="folder with mass/ and mass-gold/ (default: the "
                   "shipped ones, else those `make demo` trained)")
    p.add_argument("--out", default="results/tuning")
    p.add_argument("--force", action="store_true")
    args = p.parse_args()
    if args.data.startswith("minimath-500") or "math500" in args.data:
        sys.exit("tune on development data (minimath-dev), never on a test split")

    grid = {m: {(lr, k): evaluate(m, lr, k, args)["accuracy"] for lr in args.lrs for k in args.steps}
            for m in args.methods}
    if not dist.is_main():
        return
    best = {m: min(g, key=lambda lk: (-g[lk], lk)) for m, g in grid.items()}
    lines = [f"# Inference settings tuned on {args.data}" + (f" (first {args.limit})" if args.limit else ""), "",
             "| method | " + " | ".join(f"lr {lr}, K={k}" for lr in args.lrs for k in args.steps) + " | best |",
             "|---|" + "---:|" * (len(args.lrs) * len(args.steps) + 1)]
    for m, g in grid.items():
        cells = " | ".join(f"{100 * g[(lr, k)]:.1f}" for lr in args.lrs for k in args.steps)
        lines.append(f"| {m} | {cells} | lr {best[m][0]}, K={best[m][1]} |")
    overrides = " ".join(f"tuned.{m.replace('-', '_')}.lr={best[m][0]} tuned.{m.replace('-', '_')}.steps={best[m][1]}"
                         for m in grid)
    lines += ["", f"Command: `python {' '.join(sys.argv)}`", "", f"For `mass table`: `{overrides}`"]
    out = Path(args.out)
    (out / "tuning.md").write_text("\n".join(lines) + "\n")
    (out / "tuning.json").write_text(json.dumps(
        {"data": args.data, "limit": args.limit, "accuracy": {m: {f"lr={lr},K={k}": v for (lr, k), v in g.items()}
                                                              for m, g in grid.items()},
         "best": {m: {"lr": b[0], "steps": b[1]} for m, b in best.items()}}, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
