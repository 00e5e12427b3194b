"""The training budget that MASS's meta-training and the Solver GRPO baseline share.

The paper compares MASS with Solver GRPO at the same budget: the same training problems, steps,
problems per step and seed, and the same number of sequences sampled per problem and step (MASS:
m synthesised examples + k verifier samples; GRPO: that many solutions). The defaults of both
commands come from `DEFAULT_BUDGET`, and `mass table` trains Solver GRPO with the budget of its
meta-training (`grpo_budget_from`), so the comparison cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class TrainingBudget:
    data: str = "minimath-meta"
    limit: int | None = None
    heldout: int = 100
    # 60, not the paper's 100: on 2 CPU cores a step takes ~25-40 s, and the whole reproduction
    # (three trainings and the table) has to fit in a working session
    steps: int = 60
    batch_size: int = 4
    seed: int = 0


DEFAULT_BUDGET = TrainingBudget()
SHARED = tuple(f.name for f in fields(TrainingBudget))  # the settings both commands take from the budget


def grpo_budget_from(meta_train_cfg) -> dict:
    """The Solver GRPO settings that give it MASS's budget: the shared fields, and k = m + k
    sequences per problem and step."""
    return {**{name: getattr(meta_train_cfg, name) for name in SHARED},
            "k": meta_train_cfg.adapt.m + meta_train_cfg.k}
