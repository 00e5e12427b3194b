"""MASS at test time (also MASS_gold: the same procedure, a checkpoint meta-trained with outer=gold).

With a meta-trained checkpoint (`--checkpoint DIR` from `mass meta-train`): the meta-trained
generator writes m examples for T, the meta-trained scorer weights them, K SGD steps on the
generator's LoRA give phi_K, and phi_K answers T. Paper inference settings: m=6, K=1.
"""

from __future__ import annotations

from mass.adaptation import synthesise_adapt_answer
from mass.checkpoint import load_meta_checkpoint
from mass.errors import MassError
from mass.methods.context import MethodContext
from mass.problem import Problem


def answer(problems: list[Problem], ctx: MethodContext) -> list[dict]:
    if "peft" not in ctx.state:
        if not ctx.cfg.checkpoint:
            raise MassError(f"--method {ctx.cfg.method} needs --checkpoint DIR (the output of `mass meta-train`)")
        peft_model, scorer, phi0 = load_meta_checkpoint(ctx.model, ctx.cfg.checkpoint)
        ctx.state.update(peft=peft_model, scorer=scorer, phi0=phi0)
    return synthesise_adapt_answer(ctx.state["peft"], ctx.tokenizer, problems, ctx.state["phi0"], ctx.state["scorer"],
                            ctx.cfg.adapt, ctx.task, ctx.cfg.sampling, ctx.rng)
