"""What the training recipes share (`mass meta-train`, `mass grpo`; `mass pretrain` its seeding):
the train/held-out split, the device, per-step randomness, the metrics log, and the step loop
itself (`run_steps`): sample the step's problems, accumulate gradients, skip a non-finite step,
step the optimizers, evaluate, log, checkpoint.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from mass.errors import MassError
from mass.guard import BadStepGuard, grads_finite
from mass.models import SamplingConfig
from mass.tasks import Task


def step_seed(seed: int, step: int) -> int:
    """Step t's seed depends only on (seed, t): a resumed run draws what an unbroken one would."""
    return seed * 1_000_003 + step


def step_randomness(seed: int, step: int, device) -> tuple[random.Random, torch.Generator]:
    """(the problem sampler, the torch generator for sampling) of step t."""
    return random.Random(step_seed(seed, step)), torch.Generator(device=device).manual_seed(step_seed(seed, step))


def solve_sampling_default() -> SamplingConfig:
    return SamplingConfig(temperature=1.0, top_p=1.0, max_new_tokens=320, batch_size=64)


def split_training_problems(task: Task, limit: int | None, heldout: int, batch_size: int) -> tuple[list, list]:
    """(training problems, the last `heldout` problems kept for evaluation)."""
    problems = task.load(limit)
    if len(problems) <= heldout + batch_size:
        raise MassError(f"{task.name} has {len(problems)} problems: too few for heldout={heldout}, "
                        f"batch_size={batch_size}")
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


def run_steps(cfg, out: Path, start: int, train: list, device, desc: str,
              step: Callable[[list, torch.Generator], dict], params: Iterable[torch.Tensor],
              optimizers: Sequence[torch.optim.Optimizer], evaluate: Callable[[], dict],
              save: Callable[[int], None], writer=None, postfix: Sequence[str] = ()) -> None:
    """Steps `start` .. cfg.steps - 1 of a training recipe. `step(problems, generator)` samples and
    accumulates the gradients of one step and returns its metrics; a step with a non-finite
    contribution or gradient is not taken (mass/guard.py). `evaluate()` runs at step 0 (a fresh
    run), every cfg.eval_every steps and at the end; `save(step)` every cfg.save_every steps and
    at the end. cfg: steps, seed, batch_size, eval_every, save_every, max_bad_steps."""
    params = list(params)
    if start == 0:
        log_metrics(out, writer, {"step": 0, **evaluate()})
    guard, last_saved = BadStepGuard(cfg.max_bad_steps, out), start
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=desc, dynamic_ncols=True)
    for t in bar:
        t0 = time.perf_counter()
        rng, gen = step_randomness(cfg.seed, t, device)
        metrics = step(rng.sample(train, cfg.batch_size), gen)
        skip = metrics.get("nonfinite") == 1.0 or not grads_finite(params)
        for opt in optimizers:
            if not skip:
                opt.step()
            opt.zero_grad(set_to_none=True)
        row = {"step": t + 1, **metrics, "skipped_step": float(skip), "seconds": round(time.perf_counter() - t0, 2)}
        if cfg.eval_every and (t + 1) % cfg.eval_every == 0 or t + 1 == cfg.steps:
            row.update(evaluate())
        log_metrics(out, writer, row)
        bar.set_postfix({k: row[k] for k in postfix if k in row})
        guard.record(skip, t + 1, last_saved)
        if (t + 1) % cfg.save_every == 0 or t + 1 == cfg.steps:
            save(t + 1)
            last_saved = t + 1
