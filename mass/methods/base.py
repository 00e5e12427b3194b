"""Base: the model answers each problem directly, with no adaptation (the paper's "Base" row)."""

from __future__ import annotations

from mass.methods.context import MethodContext
from mass.models import generate, uses_chat_template
from mass.problem import Problem


def answer(problems: list[Problem], ctx: MethodContext) -> list[dict]:
    return answer_directly(ctx.model, problems, ctx)


def answer_directly(model, problems: list[Problem], ctx: MethodContext) -> list[dict]:
    """`model` answers each problem with no adaptation (also Solver GRPO, with its trained LoRA)."""
    chat = uses_chat_template(ctx.tokenizer)
    prompts = [ctx.task.render_prompt(p, chat) for p in problems]
    texts = generate(model, ctx.tokenizer, prompts, ctx.cfg.sampling, ctx.rng)
    return [{"generated": t} for t in texts]
