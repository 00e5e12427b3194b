"""What the training recipes share (`mass meta-train`, `mass grpo`; `mass pretrain` its seeding):
the train/held-out split, the device, per-step randomness, and the metrics log.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from mass.errors import MassError
from mass.models import SamplingConfig
from mass.tasks import load_task


def step_seed(seed: int, step: int) -> int:
    """Step t's seed depends only on (seed, t): a resumed run draws what an unbroken one would."""
    return seed * 1_000_003 + step


def step_randomness(seed: int, step: int, device) -> tuple[random.Random, torch.Generator]:
    """(the problem sampler, the torch generator for sampling) of step t."""
    return random.Random(step_seed(seed, step)), torch.Generator(device=device).manual_seed(step_seed(seed, step))


def solve_sampling_default() -> SamplingConfig:
    return SamplingConfig(temperature=1.0, top_p=1.0, max_new_tokens=320, batch_size=64)


def split_training_problems(data: str, limit: int | None, heldout: int, batch_size: int) -> tuple[list, list]:
    """(training problems, the last `heldout` problems kept for evaluation)."""
    problems = load_task(data).load(limit)
    if len(problems) <= heldout + batch_size:
        raise MassError(f"{data} has {len(problems)} problems: too few for heldout={heldout}, batch_size={batch_size}")
    return problems[: len(problems) - heldout], problems[len(problems) - heldout :]


def training_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def log_metrics(out: Path, writer, row: dict) -> None:
    with (out / "metrics.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")
    if writer is not None:
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)):
                writer.add_scalar(k, v, row["step"])
        writer.flush()


def tensorboard_writer(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise MassError("tensorboard=true needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter(str(out / "tb"))
