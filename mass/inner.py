"""The differentiable inner update, as pure functions.

The adapted model is the frozen base model plus LoRA parameters phi (a `dict[str, Tensor]`),
run through `torch.func.functional_call`; the base weights are never written. One inner step is
plain SGD on the weighted SFT loss (never Adam: its first step is ~sign(g), with Jacobian ~ 0):

    L_in(phi; s) = sum_i s_i * l_i(phi)        l_i = mean token CE of the answer part of example i
    phi_{k+1}    = phi_k - alpha * grad L_in(phi_k; s),    k = 0 .. K-1

`adapt` runs the K steps without a graph, `adapt_unrolled` keeps it; the meta-gradients
dL_outer(phi_K)/ds built on them are in mass/metagrad.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import functional_call, grad

from mass.losses import masked_mean_ce

Params = dict[str, torch.Tensor]


@dataclass
class SFTBatch:
    """m examples, right-padded. `target_mask` marks the label positions that are scored."""
    input_ids: torch.Tensor  # (m, L)
    attention_mask: torch.Tensor  # (m, L)
    target_mask: torch.Tensor  # (m, L-1): 1 where token t+1 is part of the answer (completion + EOS)

    def rows(self, index: slice | torch.Tensor) -> SFTBatch:
        """The examples `index` picks, as a batch of their own."""
        return SFTBatch(self.input_ids[index], self.attention_mask[index], self.target_mask[index])


def row_slices(n: int, size: int | None) -> list[slice]:
    """0..n-1 in consecutive slices of `size` rows (one slice of all n for None)."""
    size = size or max(n, 1)
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def lora_params(model: torch.nn.Module) -> Params:
    """The trainable (LoRA) parameters of a PEFT model, as detached copies (PEFT keeps them fp32)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def next_token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log p(token t+1 | tokens <= t) from the logits (B, L, V) of input_ids (B, L).  -> (B, L-1)"""
    logits = logits[:, :-1]
    logp = torch.log_softmax(logits.float() if logits.dtype in (torch.bfloat16, torch.float16) else logits, dim=-1)
    return logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)


def scored_start(batch: SFTBatch) -> int:
    """The first position whose next token some row scores. The logits before it (the prompts')
    are never used, and with a large vocabulary they are most of a step's memory (Llama 3's
    128k-entry logits of 12 x 1,024 tokens: 6 GB in float32), so callers skip them."""
    scored = batch.target_mask.any(0).nonzero()
    return int(scored[0]) if len(scored) else batch.target_mask.shape[1]


def window_logprobs(logits: torch.Tensor, batch: SFTBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(token t+1 | tokens <= t) and the target mask, from the logits of the batch's last
    logits.shape[1] positions (all of them, or from `scored_start` on).  -> (B, k-1), (B, k-1)"""
    start = batch.input_ids.shape[1] - logits.shape[1]
    return next_token_logprobs(logits, batch.input_ids[:, start:]), batch.target_mask[:, start:]


def answer_ce(logits: torch.Tensor, batch: SFTBatch) -> torch.Tensor:
    """l_i: mean token cross-entropy of each answer part, from logits as `window_logprobs` takes them.  -> (m,)"""
    return masked_mean_ce(*window_logprobs(logits, batch))


def scored_logprobs(model: torch.nn.Module, params: Params, batch: SFTBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """`window_logprobs` under base + params from `scored_start` on (the model computes no logits
    before it).  -> (B, k), (B, k)"""
    logits = functional_call(model, params, args=(), strict=False, kwargs={
        "input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
        "logits_to_keep": batch.input_ids.shape[1] - scored_start(batch)}).logits  # >= 1: the mask is one shorter
    return window_logprobs(logits, batch)


def example_losses(model: torch.nn.Module, params: Params, batch: SFTBatch) -> torch.Tensor:
    """l_i: mean token cross-entropy of each example's answer part.  -> (m,)"""
    return masked_mean_ce(*scored_logprobs(model, params, batch))


def inner_loss(model: torch.nn.Module, params: Params, batch: SFTBatch, s: torch.Tensor) -> torch.Tensor:
    """L_in = sum_i s_i l_i."""
    losses = example_losses(model, params, batch)  # (m,)
    return (s.to(losses.dtype) * losses).sum()


def sgd_step(params: Params, grads: Params, alpha: float) -> Params:
    return {n: params[n] - alpha * grads[n] for n in params}


def adapt(model: torch.nn.Module, phi0: Params, batch: SFTBatch, s: torch.Tensor, alpha: float,
          steps: int) -> list[Params]:
    """The inner trajectory [phi_0, ..., phi_K], computed without a graph (all detached)."""
    s = s.detach()
    trajectory = [{n: p.detach() for n, p in phi0.items()}]
    step_grad = grad(lambda phi: inner_loss(model, phi, batch, s))
    for _ in range(steps):
        phi = trajectory[-1]
        trajectory.append({n: p.detach() for n, p in sgd_step(phi, step_grad(phi), alpha).items()})
    return trajectory


def adapt_unrolled(model: torch.nn.Module, phi0: Params, batch: SFTBatch, s: torch.Tensor, alpha: float,
                   steps: int) -> Params:
    """phi_K with the autograd graph of all K steps kept (reverse-over-reverse reference)."""
    phi = {n: p if p.requires_grad else p.detach().requires_grad_(True) for n, p in phi0.items()}
    for _ in range(steps):
        loss = inner_loss(model, phi, batch, s)
        grads = torch.autograd.grad(loss, list(phi.values()), create_graph=True)
        phi = sgd_step(phi, dict(zip(phi, grads)), alpha)
    return phi
