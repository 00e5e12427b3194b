"""What the lean forward-mode rules (mass/tangents.py) save: matrix-product FLOPs of one meta-step
with PyTorch's stock tangent rules and with `lean_linears`, and the time of one attention softmax's
jvp with the stock rule and with `tangents.softmax`, on the embedded model (`mass bench metagrad`'s
batch: m=6, K=2, 256 tokens, LoRA r=8 on q,v).

    OMP_NUM_THREADS=1 python scripts/tangent_cost.py          # prints a table, writes results/bench/tangent-cost.json
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from pathlib import Path

import torch
from torch.func import jvp
from torch.profiler import profile

import mass.metagrad
from mass.bench_metagrad import MetaGradBenchConfig, _load, _mode_fn, _random_batches
from mass.tangents import softmax


def matmul_gflop(fn) -> float:
    with profile(with_flops=True) as prof:
        fn()
    return sum(e.flops for e in prof.key_averages() if e.key in ("aten::mm", "aten::bmm", "aten::addmm")) / 1e9


def meta_step_flops(mode: str) -> dict:
    cfg = MetaGradBenchConfig()
    model, _ = _load(cfg, torch.device("cpu"))
    batch, gold = _random_batches(cfg, model.config.vocab_size, torch.device("cpu"))
    phi0 = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    step = _mode_fn(mode, model, phi0, batch, gold, torch.full((cfg.m,), 1.0 / cfg.m), cfg)
    lean = matmul_gflop(step)
    real = mass.metagrad.lean_linears
    mass.metagrad.lean_linears = contextlib.nullcontext  # the stock rules
    try:
        stock = matmul_gflop(step)
    finally:
        mass.metagrad.lean_linears = real
    return {"mode": mode, "stock_gflop": round(stock, 1), "lean_gflop": round(lean, 1)}


def median_ms(fn, repeats: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(1e3 * statistics.median(times), 2)


def softmax_jvp_ms() -> dict:
    """One causal attention softmax (6 rows x 4 heads x 256 x 256) pushed forward along a tangent."""
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 4, 256, 256, generator=g)
    tangent = torch.randn(6, 4, 256, 256, generator=g)
    masked = scores + torch.full((256, 256), torch.finfo(torch.float32).min).triu(1)
    return {"stock_ms": median_ms(lambda: jvp(lambda s: torch.softmax(s, -1), (masked,), (tangent,))),
            "lean_ms": median_ms(lambda: jvp(lambda s: softmax(s, -1), (masked,), (tangent,))),
            "exp_ms_arguments_near_0": median_ms(lambda: torch.exp(scores)),
            "exp_ms_arguments_near_minus_100": median_ms(lambda: torch.exp(scores - 100))}


def main() -> None:
    torch.set_num_threads(1)
    result = {"torch": torch.__version__, "threads": 1,
              "meta_step_matmul": [meta_step_flops(m) for m in ("hybrid", "hybrid-recompute")],
              "attention_softmax_jvp": softmax_jvp_ms()}
    for row in result["meta_step_matmul"]:
        print(f"{row['mode']:17s} matrix products per meta-step: stock rules {row['stock_gflop']} GFLOP, "
              f"lean_linears {row['lean_gflop']} GFLOP")
    sm = result["attention_softmax_jvp"]
    print(f"attention softmax jvp: stock {sm['stock_ms']} ms, tangents.softmax {sm['lean_ms']} ms; "
          f"exp of 1.6M floats near 0: {sm['exp_ms_arguments_near_0']} ms, near -100: {sm['exp_ms_arguments_near_minus_100']} ms")
    out = Path("results/bench/tangent-cost.json")
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
