"""What every test-time method gets: the loaded model, tokenizer, task and settings (`MethodContext`),
and the fresh LoRA adapter that the methods adapting from scratch share (`fresh_adapter`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mass.inner import lora_params
from mass.models import attach_lora


@dataclass
class MethodContext:
    model: Any
    tokenizer: Any
    task: Any  # mass.tasks.Task
    cfg: Any  # mass.evaluate.EvalConfig
    rng: Any  # torch.Generator seeded from cfg.seed
    state: dict = field(default_factory=dict)  # what a method sets up once per run (adapters, scorer)


def fresh_adapter(ctx: MethodContext) -> None:
    """Once per run, for methods that adapt from scratch (ttt, ttss): a fresh LoRA on the base
    model, initialised from the run's seed, in ctx.state["peft"], and its values in ctx.state["phi0"]."""
    if "peft" in ctx.state:
        return
    lora = ctx.cfg.lora
    peft_model = attach_lora(ctx.model, rank=lora.rank, alpha=lora.alpha, target_modules=lora.targets,
                             seed=ctx.cfg.seed, init=lora.init)
    ctx.state.update(peft=peft_model, phi0=lora_params(peft_model))
