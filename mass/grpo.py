"""`mass grpo`: the Solver GRPO baseline: GRPO directly on solving the meta-training problems.

The same budget as MASS: the same problems (minimath-meta, last `heldout` held out), steps and
batch size, and as many sampled sequences per problem as one MASS meta-step draws (m=12
synthesised examples + k=4 verifier solutions = 16 solutions here). Each step, for each problem
T: sample k solutions from the current LoRA, reward 1/0 from the answer checker, group-normalised
advantages, and one GRPO step (`mass/losses.py`) on the LoRA. At test time the trained solver
answers directly, with no adaptation (`mass eval --method solver-grpo --checkpoint DIR`).

    mass grpo out=runs/solver-grpo                 # 100 steps, as MASS
    mass grpo out=runs/solver-grpo --resume        # continue exactly where it stopped
    torchrun --nproc_per_node 4 -m mass grpo out=runs/solver-grpo   # data-parallel, the same steps

The checkpoint is a MASS checkpoint without a scorer: DIR/adapter/ (PEFT adapter), mass.json,
metrics.jsonl (per step: reward, loss; held-out greedy accuracy every `eval_every` steps).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from mass import dist
from mass.budget import DEFAULT_BUDGET
from mass.checkpoint import resume_or_start, save_meta_checkpoint
from mass.config import config_to_dict, nested, setting
from mass.errors import MassError
from mass.guard import all_finite
from mass.inner import scored_logprobs
from mass.losses import group_advantages, grpo_loss
from mass.models import (LoraSettings, SamplingConfig, fit_problems, generate, load_model, make_sft_batch,
                         resolve_model_name, uses_chat_template)
from mass.tasks import Task, load_task
from mass.training import (StepBatch, join_ranks, run_steps, solve_sampling_default, split_training_problems,
                           training_device)


@dataclass
class SolverGRPOConfig:
    model: str = setting("", "base model: local path, hub id or .gguf file; empty means the embedded MiniMath model")
    data: str = setting(DEFAULT_BUDGET.data, "training problems (the same as MASS meta-training)")
    limit: int | None = setting(DEFAULT_BUDGET.limit, "use the first N problems of data only (the paper: 1,000)")
    heldout: int = setting(DEFAULT_BUDGET.heldout, "the last N problems are held out (as in meta-training), never "
                                                   "trained on (the 100 of minimath-dev)")
    out: str = setting("runs/solver-grpo", "checkpoint directory")
    steps: int = setting(DEFAULT_BUDGET.steps, "GRPO steps (as MASS's meta-training steps; the paper: 100)")
    batch_size: int = setting(DEFAULT_BUDGET.batch_size, "problems per step (as MASS)")
    k: int = setting(16, "solutions sampled per problem: MASS's m + k = 12 + 4 sequences per problem")
    lr: float = setting(1e-4, "LoRA learning rate (Adam), as MASS's generator")
    clip: float = setting(0.2, "PPO/GRPO clip range")
    lora: LoraSettings = nested(LoraSettings, "the solver's LoRA adapter")
    solve_sampling: SamplingConfig = nested(solve_sampling_default, "sampling of the k solutions")
    eval_every: int = setting(25, "steps between held-out greedy evaluations (0: only at the start and end)")
    save_every: int = setting(10, "steps between checkpoints")
    seed: int = setting(DEFAULT_BUDGET.seed, "seed: step t's problems and samples depend only on (seed, t)")
    dtype: str = setting("float32", "base model dtype (the LoRA stays float32)")
    device: str = setting("auto", "auto, cpu or cuda")
    tensorboard: bool = setting(False, "also write TensorBoard scalars to DIR/tb")
    max_bad_steps: int = setting(5, "stop after this many steps in a row with only NaN/Inf losses or gradients "
                                    "(each is skipped, not applied; 0: never stop)")

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.k < 2 or self.heldout < 0:
            raise MassError("grpo needs steps >= 1, batch_size >= 1, k >= 2, heldout >= 0")


def run(cfg: SolverGRPOConfig, resume: bool = False) -> Path:
    join_ranks(cfg.batch_size, cfg.device)
    out = Path(cfg.out)
    task = load_task(cfg.data)
    train, heldout = split_training_problems(task, cfg.limit, cfg.heldout, cfg.batch_size)
    device = training_device(cfg.device)
    base, tok = load_model(cfg.model or None, cfg.dtype, device)
    train, heldout = fit_problems(train, tok, base), fit_problems(heldout, tok, base)
    model, live, state, start = resume_or_start(base, out, cfg.lora, cfg.seed, resume)
    opt = torch.optim.Adam(live.values(), lr=cfg.lr)
    if state is not None:
        opt.load_state_dict(state["opt"])
    info = {"model": cfg.model, "model_path": resolve_model_name(cfg.model or None), "kind": "solver-grpo",
            "config": config_to_dict(cfg)}

    run_steps(cfg, out, start, train, device, "solver grpo",
              step=lambda batch: grpo_step(model, tok, task, live, batch, cfg, device),
              params=live.values(), optimizers=[opt],
              evaluate=lambda: heldout_accuracy(model, tok, task, heldout, cfg),
              save=lambda step: save_meta_checkpoint(out, model, None, info, {"step": step, "opt": opt.state_dict()}),
              postfix=("reward_mean",))
    dist.print0(f"saved Solver GRPO checkpoint to {out}")
    return out


def grpo_step(model, tok, task: Task, live: dict, batch: StepBatch, cfg: SolverGRPOConfig, device) -> list[dict]:
    """Sample k solutions per target of this rank's share, each from its own rng (StepBatch),
    reward them (the task's reward), accumulate the GRPO gradient (mean over the global batch);
    one metrics row per target."""
    targets = batch.problems
    prompts = [task.render_prompt(t, uses_chat_template(tok)) for t in targets for _ in range(cfg.k)]
    with torch.no_grad():
        solutions = generate(model, tok, prompts, cfg.solve_sampling, batch.rngs("solve", cfg.k))
    rows = []
    for j, target in enumerate(targets):
        mine = solutions[j * cfg.k : (j + 1) * cfg.k]
        r = torch.tensor(task.reward(target, mine))
        sols = make_sft_batch(tok, prompts[j * cfg.k : (j + 1) * cfg.k], mine, device)
        logp, scored = scored_logprobs(model, live, sols)  # from the solutions' first token on
        loss, diag = grpo_loss(logp, logp.detach(), scored, group_advantages(r), cfg.clip)
        finite = all_finite(loss)
        if finite:  # a NaN/Inf loss contributes nothing (mass/guard.py)
            (loss / batch.total).backward()
        rows.append({"reward_mean": float(r.mean()), "loss": float(loss.detach()), "clip_frac": diag["clip_frac"],
                     "nonfinite": float(not finite)})
    return rows


@torch.no_grad()
def heldout_accuracy(model, tok, task: Task, heldout: list, cfg: SolverGRPOConfig) -> dict:
    if not heldout:
        return {}
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=cfg.solve_sampling.max_new_tokens)
    texts = generate(model, tok, [task.render_prompt(t, uses_chat_template(tok)) for t in heldout], greedy)
    correct = [r for t, x in zip(heldout, texts) for r in task.reward(t, [x])]
    return {"heldout_acc": sum(correct) / len(heldout)}
