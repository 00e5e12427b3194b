"""How close each meta-gradient mode comes to the exact one with a bf16 base model: dL/ds of every
mode in bf16 (fp32 LoRA) against `unrolled` run on the same weights cast to float64, on the
embedded model (`mass bench metagrad dtype=bfloat16 tokens=64 m=3`'s batch).

    OMP_NUM_THREADS=1 python scripts/bf16_error.py
"""

import torch

from mass.bench_metagrad import MetaGradBenchConfig, _load, _mode_fn, _random_batches

MODES = ("unrolled", "hybrid", "hybrid-recompute")


def main() -> None:
    torch.set_num_threads(1)
    cfg = MetaGradBenchConfig(dtype="bfloat16", tokens=64, m=3)
    model, _ = _load(cfg, torch.device("cpu"))
    batch, gold = _random_batches(cfg, model.config.vocab_size, torch.device("cpu"))
    phi0 = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    s = torch.full((cfg.m,), 1.0 / cfg.m)
    in_bf16 = {mode: _mode_fn(mode, model, phi0, batch, gold, s, cfg)().double() for mode in MODES}
    model.double()  # bf16 weights are exact in float64: this is the same model, computed exactly
    exact = _mode_fn("unrolled", model, {n: p.double() for n, p in phi0.items()}, batch, gold, s.double(), cfg)()
    for mode, ds in in_bf16.items():
        print(f"{mode:17s} relative error of dL/ds against float64: {float((ds - exact).norm() / exact.norm()):.2e}")


if __name__ == "__main__":
    main()
