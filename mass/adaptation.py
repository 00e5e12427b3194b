"""Test-time adaptation to one problem T: synthesise, weight, take K LoRA SGD steps, answer.

The pieces shared by `mass meta-train`, the `mass`/`mass-gold`/`ttss` methods and `mass solve`:
turning synthesised examples into an SFT batch, scoring them, and running the model with a
given set of LoRA values. `use_lora` swaps LoRA values in and restores them on exit, so the
base weights and the meta-trained adapter are left bit-identical by an adaptation.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch

from mass.batched import batched_adapt, batched_answers, stack_params
from mass.config import nested, setting
from mass.errors import MassError
from mass.inner import Params, SFTBatch
from mass.models import SamplingConfig, make_sft_batch, merged_lora, uses_chat_template
from mass.prompts import SynthExample, solve_prompt
from mass.scorer import Scorer, embed_texts, group_stats
from mass.synthesis import synthesise


def synth_sampling_default() -> SamplingConfig:
    return SamplingConfig(temperature=1.0, top_p=0.95, max_new_tokens=256, batch_size=64)


@dataclass
class AdaptConfig:
    m: int = setting(6, "synthesised examples per problem (paper: 12 in meta-training, 6 at inference)")
    # the embedded model's: on minimath-dev, K=4 steps at lr 3 learn T's own gold solution 90% of
    # the time, K=1 at any lr under half (docs/method.md, "The inner step"); `mass headroom` finds a
    # new model's
    steps: int = setting(4, "inner SGD steps K (paper: 2 in meta-training, 1 at inference)")
    lr: float = setting(3.0, "inner SGD learning rate alpha on the LoRA parameters")
    weights: Literal["scorer", "uniform"] = setting("scorer", "example weights: the learnt scorer, or uniform 1/m")
    batch_problems: int = setting(16, "problems whose inner steps share forward passes, each with its own LoRA "
                                      "values (1: one at a time; lower it if memory is short); answering then "
                                      "takes sampling.batch_size problems at a time")
    synth: SamplingConfig = nested(synth_sampling_default, "sampling of the synthesised examples")

    def __post_init__(self) -> None:
        if self.m < 1 or self.steps < 0 or self.lr < 0 or self.batch_problems < 1:
            raise MassError("adaptation needs m >= 1, steps >= 0, lr >= 0 and batch_problems >= 1")


def example_batch(tokenizer, examples: list[SynthExample], device) -> SFTBatch:
    """The SFT batch of synthesised examples: prompt "Problem: p_i", scored part the worked answer a_i."""
    chat = uses_chat_template(tokenizer)
    return make_sft_batch(tokenizer, [solve_prompt(e.problem, chat) for e in examples],
                          [f" {e.solution}" for e in examples], device)


def example_weights(model, tokenizer, scorer: Scorer | None, target: str, examples: list[SynthExample]) -> torch.Tensor:
    """s (m,): the scorer's weights (differentiable in its parameters), or uniform 1/m."""
    return group_weights(model, tokenizer, scorer, [target], [examples])[0]


def group_weights(model, tokenizer, scorer: Scorer | None, targets: list[str], example_sets: list[list[SynthExample]],
                  answer_nll: torch.Tensor | None = None, synth_nll: torch.Tensor | None = None) -> list[torch.Tensor]:
    """`example_weights` of many targets at once: their features share forward passes. Each
    group is scored on its own (the scorer standardises within a group). `answer_nll`,
    `synth_nll`: confidence statistics a caller has already (`mass.scorer.group_stats`)."""
    device = next(model.parameters()).device
    if scorer is None or not example_sets:
        return [torch.full((len(examples),), 1.0 / len(examples), device=device) for examples in example_sets]
    texts = [text for target, examples in zip(targets, example_sets)
             for text in [f"Problem: {target}"] + [f"Problem: {e.problem}\nSolution: {e.solution}" for e in examples]]
    feats = embed_texts(model, tokenizer, texts).split([1 + len(examples) for examples in example_sets])
    stats = (group_stats(model, tokenizer, targets, example_sets, answer_nll=answer_nll, synth_nll=synth_nll)
             if scorer.n_stats else [None] * len(targets))
    return [scorer(f[0], f[1:], st) for f, st in zip(feats, stats)]


@contextlib.contextmanager
def use_lora(model, phi: Params) -> Iterator[None]:
    """Run `model` with LoRA values `phi`; the previous values are restored exactly on exit."""
    params = dict(model.named_parameters())
    saved = {n: params[n].detach().clone() for n in phi}
    try:
        with torch.no_grad():
            for n, value in phi.items():
                params[n].copy_(value)
        yield
    finally:
        with torch.no_grad():
            for n, value in saved.items():
                params[n].copy_(value)


def synthesise_with(model, tokenizer, targets: list[str], phi0: Params, cfg: AdaptConfig,
                    rng: torch.Generator | None) -> list:
    """`cfg.m` examples per target, sampled by the generator phi0 with its LoRA folded into the weights."""
    with use_lora(model, phi0), merged_lora(model):
        return synthesise(model, tokenizer, targets, cfg.m, cfg.synth, rng)


def synthesise_adapt_answer(model, tokenizer, problems: list, phi0: Params, scorer: Scorer | None, cfg: AdaptConfig,
                            task, answer_sampling: SamplingConfig, rng: torch.Generator | None) -> list[dict]:
    """For each problem: synthesise m examples, weight them, adapt phi0 -> phi_K, answer with phi_K.

    Synthesis is one batched sampling call for all `problems`; adapting and answering are batched
    too (`adapt_answer`), each problem with its own LoRA values. A problem whose samples all fail
    to parse is answered with phi0 (the unadapted model) and its record says `adapted: false`.
    """
    if cfg.weights == "scorer" and scorer is None:
        raise MassError("weights=scorer needs a meta-trained scorer (--checkpoint DIR), or use weights=uniform")
    t0 = time.perf_counter()
    syntheses = synthesise_with(model, tokenizer, [p.problem for p in problems], phi0, cfg, rng)
    generate_seconds = (time.perf_counter() - t0) / max(1, len(problems))
    records = adapt_answer(model, tokenizer, problems, [s.examples for s in syntheses], phi0, scorer, cfg,
                           task, answer_sampling, rng, [s.sample_nll for s in syntheses])
    for record, syn in zip(records, syntheses):
        record.update(n_dropped=syn.n_dropped, seconds_generate=round(generate_seconds, 4))
        if syn.n_dropped:  # what the model wrote that could not be used, to see why (first 2, cut)
            kept = set(syn.example_completions)
            record["dropped_samples"] = [c[:400] for c in syn.completions if c not in kept][:2]
    return records


def adapt_answer(model, tokenizer, problems: list, example_sets: list[list[SynthExample]], phi0: Params,
                 scorer: Scorer | None, cfg: AdaptConfig, task, answer_sampling: SamplingConfig,
                 rng: torch.Generator | None, sample_nlls: list[list] | None = None) -> list[dict]:
    """Adapt phi0 to each problem's own examples (weighted by the scorer, or uniformly), then answer.

    `cfg.batch_problems` problems at a time share every forward pass of the inner steps, each with
    its own LoRA values (mass/batched.py); then `answer_sampling.batch_size` problems at a time
    (as many adapted LoRA values as are held at once) are answered in one generation, like Base.
    With no examples a problem is answered by phi0 and its record says `adapted: false`.
    `sample_nlls`: each example's `Synthesis.sample_nll` where it was synthesised (scorer features).
    """
    sample_nlls = sample_nlls or [[None] * len(examples) for examples in example_sets]
    records = []
    for start in range(0, len(problems), answer_sampling.batch_size):
        part = slice(start, start + answer_sampling.batch_size)
        records += _adapt_answer_batch(model, tokenizer, problems[part], example_sets[part], sample_nlls[part], phi0,
                                       scorer, cfg, task, answer_sampling, rng)
    return records


def _adapt_answer_batch(model, tokenizer, problems: list, example_sets: list[list[SynthExample]], sample_nlls: list,
                        phi0: Params, scorer: Scorer | None, cfg: AdaptConfig, task, answer_sampling: SamplingConfig,
                        rng: torch.Generator | None) -> list[dict]:
    records, phis = [], []
    for start in range(0, len(problems), cfg.batch_problems):
        part = slice(start, start + cfg.batch_problems)
        part_records, phi = _adapt_together(model, tokenizer, problems[part], example_sets[part], sample_nlls[part],
                                            phi0, scorer, cfg)
        records += part_records
        phis.append(phi)
    phi = {name: torch.cat([p[name] for p in phis]) for name in phi0}
    chat = uses_chat_template(tokenizer)
    t0 = time.perf_counter()
    generated = batched_answers(model, tokenizer, [task.render_prompt(p, chat) for p in problems], phi,
                                answer_sampling, rng)
    seconds_answer = round((time.perf_counter() - t0) / max(1, len(problems)), 4)
    for record, text in zip(records, generated):
        record.update(generated=text, seconds_answer=seconds_answer)
    return records


def _adapt_together(model, tokenizer, problems: list, example_sets: list[list[SynthExample]], sample_nlls: list,
                    phi0: Params, scorer: Scorer | None, cfg: AdaptConfig) -> tuple[list[dict], Params]:
    """(records, phi_K stacked over `problems`): weight each problem's examples, then K inner steps.

    The scorer's confidence features come from passes that run anyway: the answer statistics from
    the first inner step's forward pass (same inputs, same LoRA values phi0), the sample's from
    its sampling where it has them; so the weights are computed inside the first step."""
    device = next(model.parameters()).device
    t1 = time.perf_counter()
    records = [{"n_parsed": len(examples), "adapted": bool(examples)} for examples in example_sets]
    having = [j for j, examples in enumerate(example_sets) if examples]
    nan = (float("nan"),) * 3
    synth_nll = torch.tensor([nll or nan for j in having for nll in sample_nlls[j]], device=device).reshape(-1, 3)
    seconds_score = 0.0

    def weigh(answer_nll: torch.Tensor | None = None) -> torch.Tensor:
        nonlocal seconds_score
        t = time.perf_counter()
        with torch.no_grad():
            weights = group_weights(model, tokenizer, scorer if cfg.weights == "scorer" else None,
                                    [problems[j].problem for j in having], [example_sets[j] for j in having],
                                    answer_nll=answer_nll, synth_nll=synth_nll)
        for j, s in zip(having, weights):
            records[j]["examples"] = [{"problem": e.problem, "solution": e.solution, "answer": e.answer,
                                       "weight": round(float(w), 5)} for e, w in zip(example_sets[j], s)]
        seconds_score += time.perf_counter() - t
        return torch.cat(weights)

    used = [e for examples in example_sets for e in examples]
    n = len(problems)
    phi = stack_params(phi0, n)  # no examples: phi0 for all
    if used:
        rows = torch.tensor([p for p, examples in enumerate(example_sets) for _ in examples], device=device)
        phi = batched_adapt(model, phi0, n, example_batch(tokenizer, used, device), rows,
                            weigh if cfg.steps else weigh(), cfg.lr, cfg.steps)
    seconds_update = time.perf_counter() - t1 - seconds_score
    for record in records:
        record.update(seconds_score=round(seconds_score / n, 4), seconds_update=round(seconds_update / n, 4))
    return records, phi
