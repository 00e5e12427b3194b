"""What the training recipes share (`mass meta-train`, `mass grpo`; `mass pretrain` its seeding):
the train/held-out split, the device, per-step randomness, the metrics log, and the step loop
itself (`run_steps`): sample the step's problems, accumulate gradients, skip a non-finite step,
step the optimizers, evaluate, log, checkpoint.

Under `torchrun` the loop is data-parallel: every rank draws the same global batch of step t,
works on its share of it (`StepBatch`), and the ranks' gradients are summed before the step, so
N processes take the step one process would (up to float rounding). For that, every sampled
sequence has a random generator (rng) of its own, seeded from (seed, step, the problem's place
in the global batch, purpose, sample) alone (`sequence_rngs`): no sample depends on how the
batch was split, or on what else was sampled before it.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from mass import dist
from mass.errors import MassError
from mass.guard import BadStepGuard, grads_finite
from mass.models import SamplingConfig
from mass.tasks import Task


def step_seed(seed: int, step: int) -> int:
    """Step t's seed depends only on (seed, t): a resumed run draws what an unbroken one would."""
    return seed * 1_000_003 + step


def step_problems(train: list, seed: int, step: int, batch_size: int) -> list:
    """Step t's global batch: a function of (seed, t) alone, so every rank and a resumed run draw it alike."""
    return random.Random(step_seed(seed, step)).sample(train, batch_size)


def sequence_seed(seed: int, step: int, index: int, purpose: str, sample: int) -> int:
    """The seed of one sampled sequence: sample `sample` for `purpose` ("synthesis", "verifier",
    "solve") of the problem at `index` in step t's global batch. Hashed rather than summed, so
    distinct tuples do not collide (63 bits: any torch generator takes it)."""
    text = f"{seed}/{step}/{index}/{purpose}/{sample}"
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1


def sequence_rngs(seed: int, step: int, indices: Sequence[int], purpose: str, n: int,
                  device) -> list[torch.Generator]:
    """n random generators per problem, problem-major (the order in which `synthesise` and `grpo_step`
    lay out their prompts): each sequence draws from its own, so its sample is the same whichever
    rank, batch or neighbours it is sampled with (`models.generate` with a list of rngs)."""
    return [torch.Generator(device=device).manual_seed(sequence_seed(seed, step, index, purpose, i))
            for index in indices for i in range(n)]


@dataclass(frozen=True)
class StepBatch:
    """This rank's share of step t's global batch: all of it in one process."""
    seed: int
    step: int
    problems: list
    indices: list[int]  # each problem's place in the global batch (it seeds the problem's samples)
    total: int  # problems in the global batch: losses are divided by it, so the ranks' gradients sum to the mean
    device: torch.device

    def rngs(self, purpose: str, n: int, indices: Sequence[int] | None = None) -> list[torch.Generator]:
        """n random generators for each of this share's problems (or of `indices`); see `sequence_rngs`."""
        return sequence_rngs(self.seed, self.step, self.indices if indices is None else indices, purpose, n,
                             self.device)


def step_batch(train: list, seed: int, step: int, batch_size: int, device) -> StepBatch:
    """This rank's share of step t's global batch (every world_size-th problem, from its rank on)."""
    problems = step_problems(train, seed, step, batch_size)
    indices = dist.shard(list(range(batch_size)))
    return StepBatch(seed, step, [problems[i] for i in indices], indices, batch_size, device)


def join_ranks(batch_size: int, device: str) -> None:
    """What a training recipe does first: under torchrun, check that every rank gets a problem per
    step, then join the process group (gloo for a run kept on the CPU); alone, nothing."""
    require_shardable(batch_size)
    dist.init("gloo" if device == "cpu" else None)


def require_shardable(batch_size: int) -> None:
    """Under torchrun every rank needs a problem of its own each step; say so before any work starts."""
    if batch_size < dist.world_size():
        raise MassError(f"batch_size={batch_size} is smaller than the {dist.world_size()} processes torchrun "
                        f"started: each needs at least one problem per step; raise batch_size or lower "
                        f"--nproc_per_node")


def mean_rows(rows: list[dict]) -> dict:
    """The mean of each metric over the rows (problems) that have it, NaN values left out."""
    keys = {k for r in rows for k in r}
    out = {}
    for k in sorted(keys):
        values = [r[k] for r in rows if k in r and r[k] == r[k]]  # skip NaN
        if values:
            out[k] = round(sum(values) / len(values), 6)
    return out


def global_metrics(batch: StepBatch, rows: list[dict]) -> dict:
    """The step's metrics over the global batch: every rank's per-problem rows, put back in global
    batch order (so the sums run as in one process), averaged."""
    gathered = sorted(dist.gather_lists(list(zip(batch.indices, rows))), key=lambda pair: pair[0])
    return mean_rows([row for _, row in gathered])


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
    """auto: the GPU if there is one. A GPU without an index is the current one: under torchrun,
    this rank's (`dist.init` sets it), not every rank's cuda:0."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise MassError(f"unknown device '{name}': use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MassError(f"device={name}, but no CUDA device is visible (torch {torch.__version__}); use device=cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


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
              step: Callable[[StepBatch], list[dict]], params: Iterable[torch.Tensor],
              optimizers: Sequence[torch.optim.Optimizer], evaluate: Callable[[], dict],
              save: Callable[[int], None], postfix: Sequence[str] = ()) -> None:
    """Steps `start` .. cfg.steps - 1 of a training recipe. `step(batch)` samples and accumulates
    the gradients of this rank's share of the step (each loss divided by the global batch size)
    and returns one metrics row per problem; a step with a non-finite contribution or gradient is
    not taken (mass/guard.py). `evaluate()` runs at step 0 (a fresh run), every cfg.eval_every
    steps and at the end; `save(step)` every cfg.save_every steps and at the end.
    cfg: steps, seed, batch_size, eval_every, save_every, max_bad_steps, tensorboard.

    Under torchrun the gradients of `params` are summed over ranks before the step, so every rank
    takes the same step and keeps the same weights; rank 0 alone evaluates, logs and saves, and
    the others wait for its save, so a rank that stops or resumes finds the checkpoint whole."""
    params, main = list(params), dist.is_main()
    if main:  # rank 0 alone writes into out
        out.mkdir(parents=True, exist_ok=True)
    writer = tensorboard_writer(out) if cfg.tensorboard and main else None
    if start == 0 and main:
        log_metrics(out, writer, {"step": 0, **evaluate()})
    guard, last_saved = BadStepGuard(cfg.max_bad_steps, out), start
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=desc, dynamic_ncols=True,
               disable=not main)
    for t in bar:
        t0 = time.perf_counter()
        batch = step_batch(train, cfg.seed, t, cfg.batch_size, device)
        metrics = global_metrics(batch, step(batch))
        dist.all_reduce_grads(params)
        # the same metrics and summed gradients on every rank: every rank skips (and stops) alike
        skip = metrics.get("nonfinite") == 1.0 or not grads_finite(params)
        if not skip:
            for opt in optimizers:
                opt.step()
        for p in params:  # every optimizer's, and those none steps (generator_lr=0): summed anew each step
            p.grad = None
        row = {"step": t + 1, **metrics, "skipped_step": float(skip), "seconds": round(time.perf_counter() - t0, 2)}
        if main:
            if cfg.eval_every and (t + 1) % cfg.eval_every == 0 or t + 1 == cfg.steps:
                row.update(evaluate())
            log_metrics(out, writer, row)
            bar.set_postfix({k: row[k] for k in postfix if k in row})
        guard.record(skip, t + 1, last_saved)
        if (t + 1) % cfg.save_every == 0 or t + 1 == cfg.steps:
            if main:
                save(t + 1)
            dist.barrier()
            last_saved = t + 1
