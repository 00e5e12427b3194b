"""Test-time methods the evaluation harness can run: one file per method.

A method module defines `answer(problems, ctx) -> list[dict]`: one dict per problem with at
least `generated` (the final solution text) and any per-problem details worth keeping (they go
into the record). `ctx` is a `MethodContext` with the loaded model, tokenizer, task and settings.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from mass.errors import MassError

METHODS = {  # the paper's Table 1 rows, in its order
    "base": "mass.methods.base",
    "ttt": "mass.methods.ttt",
    "ttss": "mass.methods.ttss",
    "solver-grpo": "mass.methods.solver_grpo",
    "mass-gold": "mass.methods.mass",  # same test-time procedure; a checkpoint meta-trained with outer=gold
    "mass": "mass.methods.mass",
}


@dataclass
class MethodContext:
    model: Any
    tokenizer: Any
    task: Any  # mass.tasks.Task
    cfg: Any  # mass.evaluate.EvalConfig
    generator: Any  # torch.Generator seeded from cfg.seed
    state: dict = field(default_factory=dict)  # what a method sets up once per run (adapters, scorer)


def get_method(name: str) -> ModuleType:
    if name not in METHODS:
        raise MassError(f"unknown method '{name}': use one of {', '.join(METHODS)}")
    return importlib.import_module(METHODS[name])


def fresh_adapter(ctx: MethodContext) -> None:
    """Once per run, for methods that adapt from scratch (ttt, ttss): a fresh LoRA on the base
    model, initialised from the run's seed, in ctx.state["peft"], and its values in ctx.state["phi0"]."""
    if "peft" in ctx.state:
        return
    from mass.inner import lora_params
    from mass.models import attach_lora

    lora = ctx.cfg.lora
    peft_model = attach_lora(ctx.model, rank=lora.rank, alpha=lora.alpha, target_modules=lora.targets,
                             seed=ctx.cfg.seed, init=lora.init)
    ctx.state.update(peft=peft_model, phi0=lora_params(peft_model))
