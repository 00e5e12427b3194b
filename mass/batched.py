"""Batched test-time adaptation: many problems at once, each with its own LoRA values.

One problem at a time, a tiny model spends its time in per-call overhead, not arithmetic: an
inner step on 6 examples and a greedy answer are a few small matrix products each. Here P
problems share every forward pass. Their LoRA values are stacked, phi[name]: (P, *shape), and
every row of a batch says which problem it belongs to; a forward hook on each LoRA layer adds

    delta_row = scaling * (x_row @ A[p(row)]^T) @ B[p(row)]^T

to the frozen layer's output (the PEFT adapter itself is switched off meanwhile). The summed
inner loss sum_p sum_i s_p,i l_p,i has problem p's gradient in slice p, so one SGD step on the
stack is P independent SGD steps, and a problem with no examples keeps phi0. The same hooks
answer all P problems in one batched generation. Results equal one-at-a-time adaptation up to
float rounding (tests/test_batched.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

from mass.inner import Params, SFTBatch, scored_logprobs
from mass.losses import masked_mean_ce
from mass.models import generate
from mass.scorer import nll_summary


def stack_params(phi0: Params, n: int) -> Params:
    """phi0 for each of n problems, stacked on a new leading dimension: {name: (n, *shape)}
    (expanded views: no copy; an SGD step makes new tensors)."""
    return {name: p.detach().unsqueeze(0).expand(n, *p.shape) for name, p in phi0.items()}


def lora_layers(model: torch.nn.Module, phi: Params) -> dict[str, tuple[torch.nn.Module, str, str, str]]:
    """{layer name: (PEFT LoRA layer, name of its A in phi, name of its B in phi, adapter name)}."""
    modules = dict(model.named_modules())
    layers = {}
    for name in phi:
        if ".lora_A." not in name:
            continue
        layer_name, adapter = name.split(".lora_A.")
        adapter = adapter.removesuffix(".weight")
        b_name = f"{layer_name}.lora_B.{adapter}.weight"
        if b_name not in phi:
            raise ValueError(f"LoRA parameter {name} has no matching {b_name}")
        layers[layer_name] = (modules[layer_name], name, b_name, adapter)
    return layers


@contextlib.contextmanager
def per_row_lora(model: torch.nn.Module, phi: Params, rows: torch.Tensor) -> Iterator[Callable[[torch.Tensor], None]]:
    """Run `model` (a PEFT model) with LoRA values phi[name][rows[j]] for batch row j.

    Yields `keep(positions)`: a generation that drops finished rows calls it to drop them here too."""
    gathered = {}  # layer name -> [A^T, scaled B^T] of each row, gathered once: a generation runs
    hooks = []     # hundreds of forward passes with the same rows (scaled here: r columns, not out)

    def hook_for(layer_name: str):
        def add_delta(module, args, output):
            a_t, b_t = gathered[layer_name]
            delta = torch.bmm(torch.bmm(args[0].to(a_t.dtype), a_t), b_t)
            return (output.to(delta.dtype) + delta).to(output.dtype)  # one rounding, as PEFT's own forward
        return add_delta

    def keep(positions: torch.Tensor) -> None:
        for pair in gathered.values():
            pair[0], pair[1] = pair[0][positions], pair[1][positions]

    try:
        for layer_name, (layer, a_name, b_name, adapter) in lora_layers(model, phi).items():
            gathered[layer_name] = [phi[a_name][rows].transpose(1, 2),  # (B, in, r)
                                    (phi[b_name][rows] * layer.scaling[adapter]).transpose(1, 2)]  # (B, r, out)
            hooks.append(layer.register_forward_hook(hook_for(layer_name)))
        with model.disable_adapter():
            yield keep
    finally:
        for h in hooks:
            h.remove()


def batched_example_losses(model: torch.nn.Module, phi: Params, rows: torch.Tensor, batch: SFTBatch,
                           chunk: int = 16) -> torch.Tensor:
    """l_j for every example row j of `batch`, each under its own problem's LoRA values.  -> (N,)

    Rows go through the model `chunk` at a time, sorted by length and cut to the longest of each
    chunk: many problems' examples padded to the longest of all would waste about a quarter of the
    compute. Right padding never changes the real tokens' logits, so the losses are the same."""
    return batched_losses_and_answer_nll(model, phi, rows, batch, chunk)[0]


def batched_losses_and_answer_nll(model: torch.nn.Module, phi: Params, rows: torch.Tensor, batch: SFTBatch,
                                  chunk: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """`batched_example_losses`, and the (mean, largest, count) of each row's answer token NLLs,
    detached (the scorer's `answer_*` features, mass/scorer.py).  -> (N,), (N, 3)"""
    lengths = batch.attention_mask.sum(-1)
    order = torch.argsort(lengths)
    losses, summaries = [], []
    for idx in order.split(chunk):
        width = int(lengths[idx].max())
        part = SFTBatch(batch.input_ids[idx, :width], batch.attention_mask[idx, :width],
                        batch.target_mask[idx, : width - 1])
        with per_row_lora(model, phi, rows[idx]):
            logp, scored = scored_logprobs(model, {}, part)
        losses.append(masked_mean_ce(logp, scored))
        summaries.append(nll_summary(-logp, scored))  # elementwise on (rows, k): nothing next to the pass
    back = torch.argsort(order)
    return torch.cat(losses)[back], torch.cat(summaries)[back]


Weights = torch.Tensor | Callable[[torch.Tensor], torch.Tensor]


def batched_trajectory(model: torch.nn.Module, phi0: Params, n_problems: int, batch: SFTBatch, rows: torch.Tensor,
                       s: Weights, alpha: float, steps: int) -> Iterator[Params]:
    """phi_1, ..., phi_K of every problem, stacked: SGD on sum_j s_j l_j, problem p only on its rows.

    `s` may be a function of the rows' answer statistics under phi0 (`batched_losses_and_answer_nll`),
    called once the first step's forward pass has them: the scorer's features then cost no pass."""
    phi = stack_params(phi0, n_problems)
    for _ in range(steps):
        leaves = {name: p.clone().requires_grad_(True) for name, p in phi.items()}
        with torch.enable_grad():
            losses, answer_nll = batched_losses_and_answer_nll(model, leaves, rows, batch)
            s = (s(answer_nll) if callable(s) else s).detach()
            grads = torch.autograd.grad((s.to(losses.dtype) * losses).sum(), list(leaves.values()),
                                        allow_unused=True)
        phi = {name: (p - alpha * g).detach() if g is not None else p.detach()
               for (name, p), g in zip(leaves.items(), grads)}
        yield phi


def batched_adapt(model: torch.nn.Module, phi0: Params, n_problems: int, batch: SFTBatch, rows: torch.Tensor,
                  s: Weights, alpha: float, steps: int) -> Params:
    """phi_K of every problem, stacked (phi0 for K = 0, where a function `s` is never called)."""
    phi = None
    for phi in batched_trajectory(model, phi0, n_problems, batch, rows, s, alpha, steps):
        pass
    return stack_params(phi0, n_problems) if phi is None else phi


def batched_answers(model: torch.nn.Module, tokenizer, prompts: list, phi: Params, sampling,
                    rng: torch.Generator | None = None) -> list[str]:
    """prompts[p] answered under problem p's LoRA values phi[name][p], all in one batched generation."""
    problem_of_row = torch.arange(len(prompts), device=next(iter(phi.values())).device)
    return generate(model, tokenizer, prompts, sampling, rng,
                    around_batch=lambda idx: per_row_lora(model, phi, problem_of_row[idx]))
