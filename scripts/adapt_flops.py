"""How much arithmetic test-time adaptation does: matrix-product FLOPs and tokens per problem.

`mass bench adapt` times MASS by part against the floor (m+1) x Base; this counts what each part
computes (torch's FlopCounterMode: matmuls and attention, no elementwise work) on the embedded
model with the shipped MASS checkpoint at MASS's tuned inference settings, the tokens sampled
per problem (the m examples against Base's one answer), how many examples' NLLs came from
sampling them (the rest cost the scorer a pass), and this core's float32 matrix-product rate:
FLOPs / rate is the time no implementation on this CPU goes below. (Timings under the counter
are slower than plain runs; take seconds from `mass bench adapt`.)

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

from mass.adaptation import AdaptConfig, _adapt_together, synthesise_with
from mass.batched import batched_answers
from mass.checkpoint import load_meta_checkpoint
from mass.evaluate import Tunings, tuned_adapt
from mass.models import SamplingConfig, generate, load_model
from mass.prompts import solve_prompt
from mass.tasks import load_task


def counted(fn):
    """(result, matrix-product FLOPs) of fn()."""
    counter = FlopCounterMode(display=False)
    with counter:
        out = fn()
    return out, counter.get_total_flops()


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
    n = len(problems)
    flops = {}
    syntheses, flops["generate"] = counted(lambda: synthesise_with(peft, tok, [p.problem for p in problems], phi0,
                                                                   cfg, rng))
    # one count for both: the scorer's features come from the first inner step's forward pass
    (_, phi), flops["score + update"] = counted(lambda: _adapt_together(
        peft, tok, problems, [s.examples for s in syntheses], [s.sample_nll for s in syntheses], phi0, scorer, cfg))
    answers, flops["answer"] = counted(lambda: batched_answers(peft, tok, prompts, phi, SamplingConfig(), rng))
    with peft.disable_adapter():
        base_answers, base_flops = counted(lambda: generate(peft, tok, prompts, SamplingConfig(), rng))
    rate = matmul_rate()

    def tokens(texts: list[str]) -> float:
        return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts) / n

    sampled = {"synthesis": tokens([c for s in syntheses for c in s.completions]), "answer": tokens(answers),
               "base answer": tokens(base_answers)}
    examples = sum(len(s.examples) for s in syntheses)
    known = sum(nll is not None for s in syntheses for nll in s.sample_nll)  # the rest cost the scorer a pass
    parts = {name: {"gflop": f / n / 1e9, "bound_seconds": f / n / rate} for name, f in flops.items()}
    total = sum(flops.values()) / n
    result = {"problems": n, "adapt": {"m": cfg.m, "steps": cfg.steps, "lr": cfg.lr},
              "matmul_gflop_per_second": rate / 1e9, "parts": parts, "total_gflop": total / 1e9,
              "total_bound_seconds": total / rate, "base_gflop": base_flops / n / 1e9,
              "tokens_sampled_per_problem": sampled, "examples": examples, "sample_nll_from_sampling": known}
    print(f"matrix products on this core: {rate / 1e9:.0f} GFLOP/s; {n} problems, MASS at K={cfg.steps}, m={cfg.m}")
    print(f"{'part':16s} {'GFLOP/problem':>14s} {'bound s/problem':>16s}")
    for name, r in parts.items():
        print(f"{name:16s} {r['gflop']:14.2f} {r['bound_seconds']:16.3f}")
    print(f"{'total':16s} {total / 1e9:14.2f} {total / rate:16.3f}")
    print(f"Base: {base_flops / n / 1e9:.2f} GFLOP/problem, so (m+1) x Base = {(cfg.m + 1) * base_flops / n / 1e9:.2f}")
    print(f"tokens sampled per problem: {sampled['synthesis']:.0f} in the {cfg.m} examples, "
          f"{sampled['answer']:.0f} in MASS's answer, {sampled['base answer']:.0f} in Base's")
    print(f"examples whose NLLs came from sampling them: {known} of {examples}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
