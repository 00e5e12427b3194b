"""How far test-time adaptation is from what this machine can do: matrix-product FLOPs per problem.

`mass bench adapt` times MASS by part (generate, score, update, answer); this counts each part's
matrix-product FLOPs (torch's FlopCounterMode: matmuls and attention, no elementwise work) on
the embedded model with the shipped MASS checkpoint at MASS's tuned inference settings, and
divides them by this core's float32 matrix-product rate: the seconds no implementation on this
CPU can go below. It also counts Base's answers, the unit of the floor (m+1) x Base.

    OMP_NUM_THREADS=1 python scripts/adapt_flops.py            # 32 minimath-500 problems
    OMP_NUM_THREADS=1 python scripts/adapt_flops.py --problems 64

Writes results/bench/adapt-flops.json.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from mass.adaptation import AdaptConfig, _adapt_together, use_lora
from mass.batched import batched_answers
from mass.checkpoint import load_meta_checkpoint
from mass.evaluate import Tunings, tuned_adapt
from mass.models import SamplingConfig, generate, load_model, merged_lora
from mass.prompts import solve_prompt
from mass.synthesis import synthesise
from mass.tasks import load_task


def counted(fn):
    """(result, seconds, matrix-product FLOPs) of fn()."""
    counter = FlopCounterMode(display=False)
    start = time.perf_counter()
    with counter:
        out = fn()
    return out, time.perf_counter() - start, counter.get_total_flops()


def matmul_rate() -> float:
    """FLOP/s of this core on a float32 product of the embedded model's MLP shape (best of 5)."""
    a, b = torch.randn(2400, 256), torch.randn(256, 688)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(10):
            a @ b
        best = min(best, (time.perf_counter() - start) / 10)
    return 2 * 2400 * 256 * 688 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=32)
    parser.add_argument("--out", default="results/bench/adapt-flops.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    model, tok = load_model(None)
    peft, scorer, phi0 = load_meta_checkpoint(model, "mass/assets/checkpoints/mass")
    problems = load_task("minimath-500").load(args.problems)
    cfg = replace(tuned_adapt(AdaptConfig(), Tunings(), "mass"), batch_problems=args.problems)
    prompts = [solve_prompt(p.problem) for p in problems]
    rng = torch.Generator().manual_seed(0)

    def synthesis():
        with use_lora(peft, phi0), merged_lora(peft):
            return synthesise(peft, tok, [p.problem for p in problems], cfg.m, cfg.synth, rng)

    parts = {}
    syntheses, *parts["generate"] = counted(synthesis)
    (_, phi), seconds, flops = counted(lambda: _adapt_together(
        peft, tok, problems, [s.examples for s in syntheses], [s.sample_nll for s in syntheses], phi0, scorer, cfg))
    parts["score + update"] = [seconds, flops]  # one count: the scorer's features come from the first step
    _, *parts["answer"] = counted(lambda: batched_answers(peft, tok, prompts, phi, SamplingConfig(), rng))
    with peft.disable_adapter():
        _, *base = counted(lambda: generate(peft, tok, prompts, SamplingConfig(), rng))
    rate = matmul_rate()
    n = len(problems)
    rows = {name: {"seconds": s / n, "gflop": f / n / 1e9, "bound_seconds": f / n / rate,
                   "gflop_per_second": f / s / 1e9} for name, (s, f) in parts.items()}
    result = {"problems": n, "adapt": {"m": cfg.m, "steps": cfg.steps, "lr": cfg.lr}, "threads": torch.get_num_threads(),
              "matmul_gflop_per_second": rate / 1e9,
              "parts": rows, "base_answer": {"seconds": base[0] / n, "gflop": base[1] / n / 1e9}}
    total = {k: sum(r[k] for r in rows.values()) for k in ("seconds", "gflop", "bound_seconds")}
    result["total"] = total
    floor = (cfg.m + 1) * base[0] / n
    print(f"matrix products on this core: {rate / 1e9:.0f} GFLOP/s; {n} problems, MASS at K={cfg.steps}, m={cfg.m}")
    print(f"{'part':16s} {'s/problem':>10s} {'GFLOP/problem':>14s} {'bound s':>8s} {'GFLOP/s':>8s}")
    for name, r in rows.items():
        print(f"{name:16s} {r['seconds']:10.3f} {r['gflop']:14.2f} {r['bound_seconds']:8.3f} {r['gflop_per_second']:8.1f}")
    print(f"{'total':16s} {total['seconds']:10.3f} {total['gflop']:14.2f} {total['bound_seconds']:8.3f}")
    print(f"floor (m+1) x Base = {floor:.3f} s/problem (Base {base[0] / n:.3f} s, {base[1] / n / 1e9:.2f} GFLOP); "
          f"the matrix products alone need {total['bound_seconds'] / floor:.2f}x it")
    result["floor_seconds"] = floor
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
