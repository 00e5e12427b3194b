"""Ablations of MASS on minimath-500, each a config setting of `mass eval` / `mass meta-train`.

    python scripts/ablations.py                      # all of minimath-500, shipped MASS checkpoint
    python scripts/ablations.py --limit 100 --out runs/ablations-100 --train-steps 30

Rows (test-time settings are the paper's m=6, K=1 unless the row changes them):
  MASS                         the checkpoint as shipped (scorer weights)
  uniform weights              adapt.weights=uniform: the meta-trained generator, no scorer
  K=2 at inference             adapt.steps=2
  m=2, m=12                    adapt.m=2 / adapt.m=12
  no generator RL              a MASS checkpoint meta-trained with generator_lr=0 (scorer only)
  hybrid vs unrolled           `mass meta-train outer=gold` for a few steps with meta_grad=hybrid and
                               meta_grad=unrolled: seconds per step, and the largest difference of
                               the resulting scorer parameters (the same meta-gradient, different cost)

Writes OUT/<row>.json (the `mass eval` results), OUT/ablations.md and OUT/ablations.json.
A row whose JSON already exists is reused (delete it, or pass --force, to recompute).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from mass.cli import main as mass
from mass.checkpoint import SHIPPED_CHECKPOINTS


def evaluate(name: str, out: Path, args, checkpoint: Path, *settings: str) -> dict:
    path = out / f"{name}.json"
    if args.force or not path.is_file():
        limit = ["--limit", str(args.limit)] if args.limit else []
        code = mass(["eval", "--method", "mass", "--checkpoint", str(checkpoint), "--data", args.data,
                     "--out", str(path), *limit, *settings])
        if code != 0:
            sys.exit(f"ablation '{name}' failed (exit {code})")
    return json.loads(path.read_text())


def meta_train(out_dir: Path, args, *settings: str) -> Path:
    if args.force or not (out_dir / "mass.json").is_file():
        if mass(["meta-train", f"out={out_dir}", *settings]) != 0:
            sys.exit(f"meta-training into {out_dir} failed")
    return out_dir


def compare_meta_grads(out: Path, args) -> dict:
    """Same few gold meta-steps with both meta-gradients: cost per step and scorer agreement."""
    from mass.scorer import load_scorer

    common = ["outer=gold", f"steps={args.grad_steps}", "eval_every=0", "heldout=16", "generator_lr=0"]
    runs = {}
    for kind in ("hybrid", "unrolled"):
        directory = meta_train(out / "checkpoints" / f"gold-{kind}", args, *common, f"meta_grad={kind}")
        rows = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
        seconds = [r["seconds"] for r in rows if "seconds" in r]
        runs[kind] = {"seconds_per_step": sum(seconds) / len(seconds), "scorer": load_scorer(directory / "scorer")}
    diff = max(float((a - b).abs().max()) for a, b in zip(runs["hybrid"]["scorer"].state_dict().values(),
                                                          runs["unrolled"]["scorer"].state_dict().values()))
    return {"steps": args.grad_steps, "hybrid_seconds_per_step": runs["hybrid"]["seconds_per_step"],
            "unrolled_seconds_per_step": runs["unrolled"]["seconds_per_step"], "scorer_max_abs_diff": diff}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="minimath-500")
    p.add_argument("--limit", type=int, default=None, help="evaluate on the first N problems only")
    p.add_argument("--checkpoint", default=str(SHIPPED_CHECKPOINTS / "mass"), help="the MASS checkpoint")
    p.add_argument("--out", default="results/ablations")
    p.add_argument("--train-steps", type=int, default=100, help="meta-training steps of the no-RL checkpoint")
    p.add_argument("--grad-steps", type=int, default=3, help="meta-steps of the hybrid vs unrolled comparison")
    p.add_argument("--force", action="store_true", help="recompute rows whose results exist")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    ckpt = Path(args.checkpoint)

    rows = {
        "MASS": evaluate("mass", out, args, ckpt),
        "uniform weights": evaluate("uniform_weights", out, args, ckpt, "adapt.weights=uniform"),
        "K=2 at inference": evaluate("k2", out, args, ckpt, "adapt.steps=2"),
        "m=2": evaluate("m2", out, args, ckpt, "adapt.m=2"),
        "m=12": evaluate("m12", out, args, ckpt, "adapt.m=12"),
    }
    no_rl = meta_train(out / "checkpoints" / "mass-no-rl", args, "outer=verifier", "generator_lr=0",
                       f"steps={args.train_steps}")
    rows["no generator RL"] = evaluate("no_generator_rl", out, args, no_rl)
    grads = compare_meta_grads(out, args)

    summary = {name: {"accuracy": r["accuracy"], "ci95": r["ci95"], "n": r["n"],
                      "seconds_per_problem": r["seconds_per_problem"]} for name, r in rows.items()}
    base = rows["MASS"]["accuracy"]
    lines = [f"# MASS ablations on {args.data} (n={rows['MASS']['n']})", "",
             "| Setting | Accuracy (%) | 95% CI | Δ vs MASS | s/problem |", "|---|---:|---:|---:|---:|"]
    for name, r in summary.items():
        lo, hi = r["ci95"]
        lines.append(f"| {name} | {100 * r['accuracy']:.1f} | {100 * lo:.1f}–{100 * hi:.1f} | "
                     f"{100 * (r['accuracy'] - base):+.1f} | {r['seconds_per_problem']:.2f} |")
    lines += ["", f"Meta-gradient, {grads['steps']} gold meta-steps (m=12, K=2): hybrid "
              f"{grads['hybrid_seconds_per_step']:.1f} s/step, unrolled {grads['unrolled_seconds_per_step']:.1f} "
              f"s/step; largest scorer parameter difference {grads['scorer_max_abs_diff']:.2e}.", "",
              f"Command: `python scripts/ablations.py {' '.join(sys.argv[1:])}`; wall time "
              f"{time.perf_counter() - started:.0f} s (rows reused from earlier runs take none)."]
    (out / "ablations.md").write_text("\n".join(lines) + "\n")
    (out / "ablations.json").write_text(json.dumps({"rows": summary, "meta_grad": grads}, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
