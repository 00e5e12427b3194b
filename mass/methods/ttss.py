"""TT-SS (test-time self-synthesis): the base model writes m examples for T, takes K SGD steps
on a fresh LoRA with uniform weights 1/m, then answers. No meta-learning (the paper's "Base TT-SS")."""

from __future__ import annotations

from dataclasses import replace

from mass.adaptation import synthesise_adapt_answer
from mass.methods.context import MethodContext, fresh_adapter
from mass.problem import Problem


def answer(problems: list[Problem], ctx: MethodContext) -> list[dict]:
    fresh_adapter(ctx)
    adapt_cfg = replace(ctx.cfg.adapt, weights="uniform")
    return synthesise_adapt_answer(ctx.state["peft"], ctx.tokenizer, problems, ctx.state["phi0"], None, adapt_cfg,
                            ctx.task, ctx.cfg.sampling, ctx.rng)
