"""TT-SS (test-time self-synthesis): the base model writes m examples for T, takes K SGD steps
on a fresh LoRA with uniform weights 1/m, then answers. No meta-learning (the paper's "Base TT-SS")."""

from __future__ import annotations

from dataclasses import replace

from mass.adaptation import adapt_and_answer
from mass.inner import lora_params
from mass.methods import MethodContext
from mass.models import attach_lora
from mass.tasks.problem import Problem


def answer(problems: list[Problem], ctx: MethodContext) -> list[dict]:
    if "peft" not in ctx.state:
        cfg = ctx.cfg
        peft_model = attach_lora(ctx.model, rank=cfg.lora.rank, alpha=cfg.lora.alpha, target_modules=cfg.lora.targets,
                                 seed=cfg.seed)
        ctx.state.update(peft=peft_model, phi0=lora_params(peft_model))
    adapt_cfg = replace(ctx.cfg.adapt, weights="uniform")
    return adapt_and_answer(ctx.state["peft"], ctx.tokenizer, problems, ctx.state["phi0"], None, adapt_cfg,
                            ctx.task, ctx.cfg.sampling, ctx.generator)
