"""Base TTT: for each T, one SFT step on m random training problems with their gold solutions
(unrelated to T), on a fresh LoRA with uniform weights, then answer (the paper's "Base TTT").

The pool is `--train-data` (default minimath-train; math-train or a local MATH JSONL for
MATH-500). T's examples are drawn with a seed derived from (seed, T's id), so every run and
every rank draws the same ones.
"""

from __future__ import annotations

import random
from dataclasses import replace

from mass.adaptation import adapt_answer
from mass.errors import MassError
from mass.methods.context import MethodContext, fresh_adapter
from mass.prompts import SynthExample
from mass.tasks import load_task
from mass.problem import Problem


def answer(problems: list[Problem], ctx: MethodContext) -> list[dict]:
    cfg = ctx.cfg
    if "pool" not in ctx.state:
        pool = [p for p in load_task(cfg.train_data).load(None) if p.solution]
        if len(pool) < cfg.adapt.m:
            raise MassError(f"ttt needs at least m={cfg.adapt.m} problems with gold solutions in "
                            f"--train-data {cfg.train_data}; it has {len(pool)}")
        ctx.state["pool"] = pool
    fresh_adapter(ctx)
    example_sets = [training_examples(ctx.state["pool"], cfg.adapt.m, f"{cfg.seed}:{p.id or p.problem}")
                    for p in problems]
    records = adapt_answer(ctx.state["peft"], ctx.tokenizer, problems, example_sets, ctx.state["phi0"],
                                    None, replace(cfg.adapt, weights="uniform"), ctx.task, cfg.sampling,
                                    ctx.rng)
    for r in records:
        r.update(n_dropped=0, seconds_generate=0.0)
    return records


def training_examples(pool: list[Problem], m: int, seed: str) -> list[SynthExample]:
    """m distinct random training problems with gold solutions, as SFT examples."""
    chosen = random.Random(seed).sample(pool, m)
    return [SynthExample(problem=p.problem, solution=p.solution, answer=p.answer) for p in chosen]
