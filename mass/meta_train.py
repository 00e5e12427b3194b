"""`mass meta-train`: learn the scorer and the generator of MASS (the whole algorithm, top to bottom).

Each meta-step takes a batch of training problems T and, for each:
  1. the generator (the model with its LoRA theta = phi_0) samples m examples (p_i, a_i);
  2. the scorer gives weights s = s_eta(T, p_i, a_i);
  3. K inner SGD steps on sum_i s_i l_i give phi_K (mass/inner.py);
  4. the outer loss on phi_K:  gold: CE of T's gold solution (MASS_gold);
                               verifier: GRPO on k solutions of T sampled from phi_K (MASS);
  5. the exact meta-gradient dL_outer/ds_i (hybrid forward-over-reverse, or unrolled);
  6. scorer:    eta   <- eta - lr * sum_i dL/ds_i * ds_i/deta          (Adam);
     generator: theta <- GRPO on the synthesis tokens of (p_i, a_i) with reward r_i = -dL/ds_i,
                normalised within the m samples of T, plus gamma * L_solve          (Adam),
     where L_solve is the gold CE of T (gold) or GRPO on the k verifier samples (verifier), both
     at theta, so the solver does not degrade while the generator learns.
Problems whose samples all fail to parse (fewer than 2 usable) are skipped and counted; so is a
problem whose meta-gradient or losses are NaN/Inf (mass/guard.py).

Every `eval_every` steps, the first `heldout_eval` of the last `heldout` problems of the data
(never trained on: minimath-dev) are adapted
to with the current generator and scorer, and the post-adaptation gold CE and greedy accuracy
are logged. Metrics go to DIR/metrics.jsonl (and TensorBoard with tensorboard=true).

    mass meta-train outer=verifier out=runs/mass            # MASS, the paper's defaults
    mass meta-train outer=gold out=runs/mass-gold           # MASS_gold
    mass meta-train out=runs/mass --resume                  # continue exactly where it stopped
    torchrun --nproc_per_node 4 -m mass meta-train out=runs/mass   # data-parallel: the same steps, 4 processes

Under torchrun each process meta-trains on its share of every step's problems (its own
synthesis and inner loops) and the scorer's and generator's gradients are summed over the
processes: the same global batch gives the same result as one process (mass/training.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from mass import dist
from mass.adaptation import AdaptConfig, example_batch, example_weights, use_lora
from mass.budget import DEFAULT_BUDGET
from mass.checkpoint import resume_or_start, save_meta_checkpoint
from mass.config import config_to_dict, nested, setting
from mass.errors import MassError
from mass.synthesis import synthesise
from mass.guard import all_finite
from mass.inner import SFTBatch, adapt, example_losses, lora_params, scored_logprobs
from mass.losses import group_advantages, grpo_loss
from mass.models import (LoraSettings, SamplingConfig, fit_problems, generate, load_model, make_sft_batch,
                         resolve_model_name, uses_chat_template)
from mass.prompts import synth_prompt
from mass.metagrad import META_GRADS
from mass.minimath import grade_synthesised, solve_text
from mass.scorer import STATS, Scorer, load_scorer, within_group_auc
from mass.tasks import Task, load_task
from mass.training import (StepBatch, join_ranks, run_steps, solve_sampling_default, split_training_problems,
                           training_device)


def _train_adapt() -> AdaptConfig:
    return AdaptConfig(m=12, steps=2, lr=3.0)


@dataclass
class MetaTrainConfig:
    outer: Literal["gold", "verifier"] = setting("verifier", "outer loss: gold (MASS_gold) or verifier (MASS, GRPO)")
    model: str = setting("", "base model: local path, hub id or .gguf file; empty means the embedded MiniMath model")
    data: str = setting(DEFAULT_BUDGET.data, "meta-training problems (the paper: 1,000)")
    limit: int | None = setting(DEFAULT_BUDGET.limit, "use the first N problems of data only (the paper: 1,000)")
    heldout: int = setting(DEFAULT_BUDGET.heldout, "the last N problems of data are held out for evaluation, never "
                                                   "trained on (the 100 of minimath-dev)")
    heldout_eval: int = setting(32, "held-out problems evaluated every eval_every steps (the first N of heldout)")
    out: str = setting("runs/mass", "checkpoint directory")
    steps: int = setting(DEFAULT_BUDGET.steps, "meta-training steps (the paper: 100; mass/budget.py)")
    batch_size: int = setting(DEFAULT_BUDGET.batch_size, "problems T per meta-step")
    k: int = setting(4, "solutions sampled from phi_K per T for the verifier outer loss")
    meta_grad: Literal["hybrid", "unrolled", "hybrid-recompute"] = setting(
        "hybrid-recompute", "meta-gradient: hybrid-recompute (forward-over-reverse holding one decoder block's "
                            "activations at a time: Llama-style decoders), hybrid (forward-over-reverse, any model) "
                            "or unrolled (reverse-over-reverse); the same gradient, `mass bench metagrad` times them")
    adapt: AdaptConfig = nested(_train_adapt, "inner loop (paper: m=12, K=2 in meta-training)")
    lora: LoraSettings = nested(LoraSettings, "the generator's LoRA adapter (phi)")
    scorer_lr: float = setting(3e-2, "scorer learning rate (Adam)")
    scorer_width: int = setting(64, "scorer hidden width")
    scorer_stats: bool = setting(True, "scorer also sees the model's own surprise at each example (mass/scorer.py)")
    # sigmoid, not softmax: softmax weights always sum to one, so every adaptation is a full SGD step;
    # independent weights let the scorer also learn how far to move (on the embedded model an
    # unweighted step on self-synthesised data raises the held-out gold CE, so that matters here)
    scorer_normalise: Literal["softmax", "sigmoid"] = setting("sigmoid", "scorer weights: 2*sigmoid/m each, or softmax over m")
    generator_lr: float = setting(1e-4, "generator LoRA learning rate (Adam); 0 turns generator RL off")
    clip: float = setting(0.2, "PPO/GRPO clip range")
    gamma: float = setting(1.0, "weight of L_solve in the generator objective")
    solve_sampling: SamplingConfig = nested(solve_sampling_default, "sampling of the verifier's k solutions")
    eval_every: int = setting(20, "steps between held-out evaluations (0: only at the start and end)")
    save_every: int = setting(10, "steps between checkpoints")
    seed: int = setting(DEFAULT_BUDGET.seed, "seed: step t's problems and samples depend only on (seed, t)")
    dtype: str = setting("float32", "base model dtype (the LoRA, scorer and meta-gradients stay float32)")
    device: str = setting("auto", "auto, cpu or cuda")
    tensorboard: bool = setting(False, "also write TensorBoard scalars to DIR/tb")
    max_bad_steps: int = setting(5, "stop after this many steps in a row with only NaN/Inf losses or gradients "
                                    "(each is skipped, not applied; 0: never stop)")

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.k < 2 or self.heldout < 0 or self.heldout_eval < 0:
            raise MassError("meta-train needs steps >= 1, batch_size >= 1, k >= 2, heldout >= 0")


def run(cfg: MetaTrainConfig, resume: bool = False) -> Path:
    join_ranks(cfg.batch_size, cfg.device)
    out = Path(cfg.out)
    task = load_task(cfg.data)
    train, heldout = split_training_problems(task, cfg.limit, cfg.heldout, cfg.batch_size)
    heldout = heldout[: cfg.heldout_eval]
    if cfg.outer == "gold" and any(p.solution is None for p in train + heldout):
        raise MassError(f"outer=gold needs gold solutions, and {cfg.data} lacks some; use outer=verifier")
    device = training_device(cfg.device)
    base, tok = load_model(cfg.model or None, cfg.dtype, device, attn_implementation="mass_math")
    train, heldout = fit_problems(train, tok, base), fit_problems(heldout, tok, base)
    # no dropout anywhere: the inner trajectory and its jvps must see the same function
    model, live, state, start = resume_or_start(base, out, cfg.lora, cfg.seed, resume)  # live: theta, the LoRA
    if state is not None:
        scorer = load_scorer(out / "scorer").to(device)
    else:  # initialised right after the LoRA, from the same seed
        scorer = Scorer(base.config.hidden_size, cfg.scorer_width, cfg.scorer_normalise,
                        n_stats=len(STATS) if cfg.scorer_stats else 0).to(device)
    opt_scorer = torch.optim.Adam(scorer.parameters(), lr=cfg.scorer_lr)
    opt_gen = torch.optim.Adam(live.values(), lr=cfg.generator_lr) if cfg.generator_lr > 0 else None
    if state is not None:
        opt_scorer.load_state_dict(state["opt_scorer"])
        if opt_gen is not None and state.get("opt_gen"):
            opt_gen.load_state_dict(state["opt_gen"])
    info = {"model": cfg.model, "model_path": resolve_model_name(cfg.model or None), "outer": cfg.outer,
            "config": config_to_dict(cfg)}

    optimizers = [opt_scorer] + ([opt_gen] if opt_gen is not None else [])

    def save(step: int) -> None:
        save_meta_checkpoint(out, model, scorer, info, {
            "step": step, "opt_scorer": opt_scorer.state_dict(),
            "opt_gen": opt_gen.state_dict() if opt_gen is not None else None})

    run_steps(cfg, out, start, train, device, f"meta-train ({cfg.outer})",
              step=lambda batch: meta_step(model, tok, task, scorer, live, batch, cfg, device),
              params=[*scorer.parameters(), *live.values()], optimizers=optimizers,
              evaluate=lambda: evaluate_heldout(model, tok, task, scorer, heldout, cfg, device), save=save,
              postfix=("outer_after", "parse_rate"))
    dist.print0(f"saved MASS checkpoint to {out}")
    return out


def meta_step(model, tok, task: Task, scorer: Scorer, live: dict, batch: StepBatch, cfg: MetaTrainConfig,
              device) -> list[dict]:
    """One meta-step over this rank's share of the step's problems: accumulates the scorer's and
    the generator's gradients (each problem's divided by the global batch size) and returns one
    metrics row per problem. Every sampled sequence draws from its own rng (StepBatch)."""
    phi0 = {n: p.detach().clone() for n, p in live.items()}
    targets, n = batch.problems, batch.total
    syntheses = synthesise(model, tok, [t.problem for t in targets], cfg.adapt.m, cfg.adapt.synth,
                           batch.rngs("synthesis", cfg.adapt.m))
    rows = []
    for index, target, syn in zip(batch.indices, targets, syntheses):
        if len(syn.examples) < 2:
            rows.append({"skipped": 1.0, "parse_rate": len(syn.examples) / cfg.adapt.m})
            continue
        examples = example_batch(tok, syn.examples, device)
        s = example_weights(model, tok, scorer, target.problem, syn.examples)  # (m,), graph to eta
        gold = gold_batch(tok, task, target, device)  # tokenised once: outer loss, L_solve and the CE metrics
        outer, solve_loss, extra = outer_objective(model, tok, task, target, gold, phi0, examples, s, live, cfg,
                                                   batch.rngs("verifier", cfg.k, [index]), device)
        mg = META_GRADS[cfg.meta_grad](model, phi0, examples, s, cfg.adapt.lr, cfg.adapt.steps, outer)

        # generator: GRPO on its own synthesis tokens, reward r_i = -dL/ds_i normalised within T's group
        reward = -mg.ds.float()
        kept = syn.example_completions
        synth_batch = make_sft_batch(tok, [synth_prompt(target.problem, uses_chat_template(tok))] * len(kept), kept, device)
        logp, scored = scored_logprobs(model, live, synth_batch)  # from the samples' first token on
        gen_loss, gen_diag = grpo_loss(logp, logp.detach(), scored, group_advantages(reward), cfg.clip)
        if not all_finite(s, mg.ds, mg.outer_loss, gen_loss, solve_loss):  # this problem contributes nothing
            rows.append({"nonfinite": 1.0, "skipped": 0.0, "parse_rate": len(syn.examples) / cfg.adapt.m})
            continue
        # scorer: eta.grad += sum_i dL/ds_i * ds_i/deta; generator: theta.grad += d(gen + gamma * solve)
        ((s * mg.ds.to(s.dtype)).sum() + gen_loss + cfg.gamma * solve_loss).div(n).backward()

        if cfg.outer == "gold":  # the gold CE at theta is L_solve, at phi_K the outer loss: no new passes
            gold_before, gold_after = float(solve_loss.detach()), mg.outer_loss
        else:
            with torch.no_grad():
                gold_before, gold_after = _gold_ce(model, phi0, gold), _gold_ce(model, mg.phi_K, gold)
        right = graded_examples(target, syn.examples)
        if right is not None:
            extra["right_share"] = sum(right) / len(right)
            auc = within_group_auc([([float(w) for w in s.detach()], right)])
            if auc is not None:
                extra["weight_auc"] = auc
                # does the training signal itself prefer right examples? (-dL/ds_i: how much
                # more weight on example i would lower the outer loss)
                extra["signal_auc"] = within_group_auc([([float(-d) for d in mg.ds], right)])  # same pairs: never None
        rows.append({
            "skipped": 0.0, "nonfinite": 0.0, "parse_rate": len(syn.examples) / cfg.adapt.m,
            "outer_after": mg.outer_loss if cfg.outer == "gold" else 1.0 - extra["reward_after"],
            "gold_ce_before": gold_before, "gold_ce_after": gold_after,
            "reward_mean": float(reward.mean()), "meta_grad_norm": float(mg.ds.norm()),
            "s_max": float(s.detach().max()), "s_min": float(s.detach().min()),
            "s_entropy": float(-(s * s.clamp(min=1e-12).log()).sum().detach()) if cfg.scorer_normalise == "softmax" else float("nan"),
            "gen_loss": float(gen_loss.detach()), "solve_loss": float(solve_loss.detach()), "clip_frac": gen_diag["clip_frac"], **extra,
        })
    return rows


def outer_objective(model, tok, task: Task, target, gold: SFTBatch | None, phi0, batch, s, live,
                    cfg: MetaTrainConfig, rngs: list[torch.Generator], device):
    """(L_outer as a function of phi, L_solve at theta, diagnostics) for one target T; `gold` is
    T's gold solution as an SFT batch (`gold_batch`); `rngs`: one for each of the
    verifier's k solutions (unused under outer=gold)."""
    prompt = task.render_prompt(target, uses_chat_template(tok))
    if cfg.outer == "gold":
        solve_loss = example_losses(model, live, gold).mean()
        return (lambda phi: example_losses(model, phi, gold).mean()), solve_loss, {}
    # verifier: k solutions of T sampled from phi_K (no gradient through sampling), rewards 1/0.
    # The meta-gradient call recomputes these K steps; they are cheap next to the sampling.
    phi_K = adapt(model, phi0, batch, s.detach(), cfg.adapt.lr, cfg.adapt.steps)[-1]
    with use_lora(model, phi_K):
        solutions = generate(model, tok, [prompt] * cfg.k, cfg.solve_sampling, rngs)
    rewards = torch.tensor(task.reward(target, solutions))
    adv = group_advantages(rewards)
    sols = make_sft_batch(tok, [prompt] * cfg.k, solutions, device)
    with torch.no_grad():  # log-probabilities from the solutions' first token on (no prompt logits)
        logp_old, scored = scored_logprobs(model, phi_K, sols)

    def outer(phi):
        logp = scored_logprobs(model, phi, sols)[0]
        return grpo_loss(logp, logp_old, scored, adv, cfg.clip)[0]

    # L_solve at theta: the same samples, importance-weighted from phi_K to theta and clipped
    logp_theta = scored_logprobs(model, live, sols)[0]
    solve_loss = grpo_loss(logp_theta, logp_old, scored, adv, cfg.clip)[0]
    return outer, solve_loss, {"reward_after": float(rewards.mean())}


def gold_batch(tok, task: Task, target, device) -> SFTBatch | None:
    """T's gold solution after its solving prompt, as an SFT batch; None when T has none."""
    if target.solution is None:
        return None
    return make_sft_batch(tok, [task.render_prompt(target, uses_chat_template(tok))], [f" {target.solution}"], device)


def _gold_ce(model, phi, gold: SFTBatch | None) -> float:
    return float("nan") if gold is None else float(example_losses(model, phi, gold).mean())


@torch.no_grad()
def evaluate_heldout(model, tok, task: Task, scorer, heldout: list, cfg: MetaTrainConfig, device) -> dict:
    """Adapt to each held-out problem with the current generator and scorer (seeded); report the
    post-adaptation gold CE (the gold outer loss) and greedy accuracy, before and after."""
    if not heldout:
        return {}
    phi0 = lora_params(model)
    rng = torch.Generator(device=device).manual_seed(cfg.seed + 12345)
    syntheses = synthesise(model, tok, [t.problem for t in heldout], cfg.adapt.m, cfg.adapt.synth, rng)
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=cfg.solve_sampling.max_new_tokens)

    before, after, correct_before, correct_after, groups = [], [], [], [], []
    for target, syn in zip(heldout, syntheses):
        phi = phi0
        if syn.examples:
            s = example_weights(model, tok, scorer, target.problem, syn.examples)
            right = graded_examples(target, syn.examples)
            if right is not None:
                groups.append(([float(w) for w in s], right))
            with torch.enable_grad():
                phi = adapt(model, phi0, example_batch(tok, syn.examples, device), s, cfg.adapt.lr, cfg.adapt.steps)[-1]
        gold = gold_batch(tok, task, target, device)
        before.append(_gold_ce(model, phi0, gold))
        after.append(_gold_ce(model, phi, gold))
        for values, correct in ((phi0, correct_before), (phi, correct_after)):
            with use_lora(model, values):
                text = generate(model, tok, [task.render_prompt(target, uses_chat_template(tok))], greedy)[0]
            correct += task.reward(target, [text])
    n = len(heldout)
    row = {"heldout_gold_ce_before": sum(before) / n, "heldout_gold_ce_after": sum(after) / n,
           "heldout_acc_before": sum(correct_before) / n, "heldout_acc_after": sum(correct_after) / n}
    graded = [c for _, right in groups for c in right]
    if graded:  # MiniMath: the generator's share of right answers, and how well the scorer ranks them
        row["heldout_right_share"] = sum(graded) / len(graded)
        auc = within_group_auc(groups)
        if auc is not None:
            row["heldout_weight_auc"] = auc
    return row


def graded_examples(target, examples) -> list[bool] | None:
    """Whether each synthesised example's answer is right (MiniMath re-solves it); None elsewhere."""
    if solve_text(target.problem) is None:
        return None
    return [bool(grade_synthesised(target.problem, e.problem, e.answer)["correct"]) for e in examples]
