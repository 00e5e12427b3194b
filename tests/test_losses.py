import math

import pytest
import torch

from mass.losses import group_advantages, grpo_loss, masked_mean_ce


def test_group_advantages_by_hand():
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), eps=0.0)
    assert adv.tolist() == pytest.approx([1.0, -1.0, -1.0, 1.0])  # mean 0.5, population std 0.5
    assert group_advantages(torch.tensor([1.0, 1.0, 1.0])).abs().max() == 0  # no signal, no gradient


def test_grpo_loss_on_policy_by_hand():
    # two samples; sample 0 has 2 tokens, sample 1 has 1 (its second token is padding)
    logp = torch.log(torch.tensor([[0.5, 0.25], [0.8, 0.1]], dtype=torch.float64)).requires_grad_(True)
    mask = torch.tensor([[1, 1], [1, 0]])
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    loss, diag = grpo_loss(logp, logp.detach(), mask, adv)
    # ratio 1: loss = -(1/2) * (1 * 1 + (-1) * 1) = 0
    assert loss.item() == pytest.approx(0.0)
    loss.backward()
    # dL/dlogp_jt = -(1/k) * A_j / |o_j| on unmasked tokens
    assert logp.grad.flatten().tolist() == pytest.approx([-0.25, -0.25, 0.5, 0.0])
    assert diag["clip_frac"] == 0.0


def test_grpo_loss_clips_by_hand():
    old = torch.zeros(1, 1, dtype=torch.float64)
    new = torch.full((1, 1), math.log(1.5), dtype=torch.float64, requires_grad=True)  # ratio 1.5
    loss, diag = grpo_loss(new, old, torch.ones(1, 1), torch.tensor([2.0], dtype=torch.float64), clip=0.2)
    assert loss.item() == pytest.approx(-1.2 * 2.0)  # min(1.5*2, 1.2*2)
    loss.backward()
    assert new.grad.item() == 0.0 and diag["clip_frac"] == 1.0  # clipped: no gradient
    new_neg = new.detach().clone().requires_grad_(True)
    loss, _ = grpo_loss(new_neg, old, torch.ones(1, 1), torch.tensor([-2.0], dtype=torch.float64), clip=0.2)
    assert loss.item() == pytest.approx(1.5 * 2.0)  # negative advantage: the unclipped term is the min
    loss.backward()
    assert new_neg.grad.item() == pytest.approx(1.5 * 2.0)


def test_masked_mean_ce():
    logp = torch.log(torch.tensor([[0.5, 0.5, 0.9], [0.25, 1.0, 1.0]]))
    ce = masked_mean_ce(logp, torch.tensor([[1, 1, 0], [1, 0, 0]]))
    assert ce.tolist() == pytest.approx([math.log(2), math.log(4)])
