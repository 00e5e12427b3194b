"""Solver GRPO: the model with the LoRA trained by `mass grpo` (GRPO on solving the meta-training
problems, MASS's budget) answers directly, with no test-time adaptation."""

from __future__ import annotations

from mass.checkpoint import load_generator
from mass.errors import MassError
from mass.methods import MethodContext
from mass.models import generate, uses_chat_template
from mass.tasks.problem import Problem


def answer(problems: list[Problem], ctx: MethodContext) -> list[dict]:
    if "peft" not in ctx.state:
        if not ctx.cfg.checkpoint:
            raise MassError("--method solver-grpo needs --checkpoint DIR (the output of `mass grpo`)")
        ctx.state["peft"] = load_generator(ctx.model, ctx.cfg.checkpoint)
    chat = uses_chat_template(ctx.tokenizer)
    prompts = [ctx.task.render_prompt(p, chat) for p in problems]
    texts = generate(ctx.state["peft"], ctx.tokenizer, prompts, ctx.cfg.sampling, ctx.generator)
    return [{"generated": t} for t in texts]
