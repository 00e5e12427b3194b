"""Solver GRPO: the model with the LoRA trained by `mass grpo` (GRPO on solving the meta-training
problems, MASS's budget) answers directly, with no test-time adaptation."""

from __future__ import annotations

from mass.checkpoint import load_adapter
from mass.errors import MassError
from mass.methods.context import MethodContext
from mass.methods.base import answer_directly
from mass.problem import Problem


def answer(problems: list[Problem], ctx: MethodContext) -> list[dict]:
    if "peft" not in ctx.state:
        if not ctx.cfg.checkpoint:
            raise MassError("--method solver-grpo needs --checkpoint DIR (the output of `mass grpo`)")
        ctx.state["peft"] = load_adapter(ctx.model, ctx.cfg.checkpoint)
    return answer_directly(ctx.state["peft"], problems, ctx)
