"""Test-time methods the evaluation harness can run: one file per method.

A method module defines `answer(problems, ctx) -> list[dict]`: one dict per problem with at
least `generated` (the final solution text) and any per-problem details worth keeping (they go
into the record). `ctx` is a `MethodContext` (mass/methods/context.py) with the loaded model,
tokenizer, task and settings.
"""

from __future__ import annotations

from types import ModuleType

from mass.errors import MassError
from mass.methods import base, mass, solver_grpo, ttss, ttt
from mass.methods.context import MethodContext

__all__ = ["METHODS", "MethodContext", "get_method"]

METHODS: dict[str, ModuleType] = {  # the paper's Table 1 rows, in its order
    "base": base,
    "ttt": ttt,
    "ttss": ttss,
    "solver-grpo": solver_grpo,
    "mass-gold": mass,  # same test-time procedure; a checkpoint meta-trained with outer=gold
    "mass": mass,
}


def get_method(name: str) -> ModuleType:
    if name not in METHODS:
        raise MassError(f"unknown method '{name}': use one of {', '.join(METHODS)}")
    return METHODS[name]
