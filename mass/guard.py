"""NaN/Inf guards for the training loops (`mass meta-train`, `mass grpo`).

A non-finite meta-gradient, loss or gradient is skipped, not applied: the problem that produced
it contributes nothing to the step, and a step whose gradients are still non-finite is not taken.
Both are counted in the metrics (`nonfinite`, `skipped_step`). Steps that are skipped whole, too
many in a row, stop the run with a message that names the last checkpoint, which is intact.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from mass.errors import MassError


def all_finite(*values: torch.Tensor | float) -> bool:
    """True when every value (tensors or numbers) is free of NaN and Inf."""
    for value in values:
        tensor = value.detach() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
        if not bool(torch.isfinite(tensor).all()):
            return False
    return True


def grads_finite(params: Iterable[torch.Tensor]) -> bool:
    return all_finite(*[p.grad for p in params if p.grad is not None])


@dataclass
class BadStepGuard:
    """Counts steps in a row that were skipped whole; at `limit` the run stops."""
    limit: int
    out: Path
    in_a_row: int = 0

    def record(self, skipped: bool, step: int, last_saved: int) -> None:
        self.in_a_row = self.in_a_row + 1 if skipped else 0
        if self.limit and self.in_a_row >= self.limit:
            saved = (f"the last checkpoint (step {last_saved}) in {self.out} is intact; lower the learning rates "
                     f"and continue with --resume" if last_saved else "no checkpoint was saved before it")
            raise MassError(f"stopped at step {step}: {self.in_a_row} steps in a row had only NaN/Inf losses or "
                            f"gradients; {saved}")
