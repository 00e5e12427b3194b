"""Losses of MASS as small pure functions; each states its normalisation and returns
(loss, detached diagnostics).

GRPO (Shao et al. 2024, DeepSeekMath, eq. 3), as used here for the verifier outer loss, the
generator update and the Solver-GRPO baseline. For a group of k samples o_1..o_k of one prompt
with scalar rewards r_j:

    A_j     = (r_j - mean(r)) / (std(r) + eps)          group-normalised advantage, std with ddof=0
    rho_j,t = exp(logp_new(o_j,t) - logp_old(o_j,t))    per-token probability ratio
    L       = -(1/k) sum_j (1/|o_j|) sum_t min(rho_j,t A_j, clip(rho_j,t, 1-eps_c, 1+eps_c) A_j)

i.e. a mean over each sample's tokens, then a mean over the group (the original GRPO
normalisation; no KL term). A group whose rewards are all equal has A = 0 and contributes
no gradient. On-policy (logp_old = logp_new.detach()) the ratio is 1 and the gradient is the
policy gradient -(1/k) sum_j A_j mean_t grad logp(o_j,t).
"""

from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """(r - mean r) / (std r + eps) within one group; std with ddof=0.  (k,) -> (k,)"""
    rewards = rewards.to(torch.float64 if rewards.dtype == torch.float64 else torch.float32)
    return (rewards - rewards.mean()) / (rewards.std(unbiased=False) + eps)


def grpo_loss(logp_new: torch.Tensor, logp_old: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor,
              clip: float = 0.2) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped GRPO surrogate (module docstring).

    logp_new, logp_old, mask: (k, L) per-token log-probs of the sampled tokens and their mask;
    advantages: (k,).
    """
    mask = mask.to(logp_new.dtype)
    ratio = torch.exp(logp_new - logp_old.detach())  # (k, L)
    adv = advantages.to(logp_new.dtype)[:, None]  # (k, 1)
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)  # (k, L)
    per_sample = (surrogate * mask).sum(-1) / mask.sum(-1).clamp(min=1)  # (k,)
    loss = -per_sample.mean()
    clipped = ((ratio - 1).abs() > clip).to(mask.dtype)
    diag = {"clip_frac": float((clipped * mask).sum() / mask.sum().clamp(min=1)),
            "ratio_mean": float((ratio.detach() * mask).sum() / mask.sum().clamp(min=1))}
    return loss, diag


def masked_mean_ce(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean token cross-entropy of each sequence's masked tokens.  (k, L) -> (k,)"""
    mask = mask.to(logp.dtype)
    return -(logp * mask).sum(-1) / mask.sum(-1).clamp(min=1)
