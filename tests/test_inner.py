"""The inner update (mass/inner.py) and its exact meta-gradients (mass/metagrad.py): hybrid
(forward-over-reverse) == unrolled (reverse-over-reverse) == finite differences.

A tiny Hugging Face Llama with a PEFT LoRA adapter, in float64, eager attention.
"""

import pytest
import torch

from mass.inner import adapt, example_losses, lora_params
import mass.metagrad
from mass.metagrad import adapt_with_example_grads, example_grads, meta_grad_hybrid, meta_grad_unrolled
import mass.models  # noqa: F401  (registers the mass_math attention)
from mass.models import attach_lora, make_sft_batch

from conftest import keep_float64, tiny_llama


@pytest.fixture(scope="module")
def setup(tiny_tokenizer):
    base = tiny_llama(tiny_tokenizer, seed=1, layers=2, hidden=16)
    base.set_attn_implementation("mass_math")
    model = keep_float64(attach_lora(base, rank=2)).eval()  # LoRA on every linear layer (the default)
    torch.manual_seed(0)
    with torch.no_grad():  # a non-zero B so that every LoRA matrix gets a gradient
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    phi0 = lora_params(model)
    batch = make_sft_batch(tiny_tokenizer, ["Problem: 1+1?\nSolution:", "Problem: 2x=4\nSolution:", "Problem: hi\nSolution:"],
                           [" $1+1=2$. \\boxed{2}", " $x=2$", " a longer answer here \\boxed{7}"])
    target = make_sft_batch(tiny_tokenizer, ["Problem: 3+4?\nSolution:"], [" $3+4=7$. The answer is \\boxed{7}."])

    def outer(phi):
        return example_losses(model, phi, target).mean()

    return model, phi0, batch, outer


@pytest.mark.parametrize("K", [1, 2])
def test_hybrid_equals_unrolled_and_finite_differences(setup, K):
    model, phi0, batch, outer = setup
    s = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    alpha = 0.1
    hybrid = meta_grad_hybrid(model, phi0, batch, s, alpha, K, outer)
    unrolled = meta_grad_unrolled(model, phi0, batch, s, alpha, K, outer)
    assert hybrid.ds.abs().max() > 1e-6  # a real signal, not zeros on both sides
    rel = (hybrid.ds - unrolled.ds).norm() / unrolled.ds.norm()
    assert rel < 1e-8, rel
    assert hybrid.outer_loss == pytest.approx(unrolled.outer_loss, rel=1e-12)

    # Central differences. This random tiny model is strongly curved in s (at eps=1e-3 the
    # estimate is still off by 30%), so a small eps; float64 rounding stays near 1e-9.
    eps = 1e-6
    f = lambda s_: outer(adapt(model, phi0, batch, s_, alpha, K)[-1])
    fd = torch.zeros(3, dtype=torch.float64)
    for i in range(3):
        e = torch.zeros(3, dtype=torch.float64)
        e[i] = eps
        fd[i] = (f(s + e) - f(s - e)) / (2 * eps)
    assert ((hybrid.ds - fd).norm() / fd.norm()) < 1e-6


def test_adapting_never_touches_the_model_weights(setup):
    model, phi0, batch, outer = setup
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    s = torch.full((3,), 1 / 3, dtype=torch.float64)
    trajectory = adapt(model, phi0, batch, s, 0.5, 2)
    meta_grad_hybrid(model, phi0, batch, s, 0.5, 2, outer)
    assert any(not torch.equal(trajectory[-1][n], phi0[n]) for n in phi0)  # the adapter did move
    for n, p in model.state_dict().items():
        assert torch.equal(p, before[n]), n


def test_one_inner_step_lowers_the_weighted_loss(setup):
    model, phi0, batch, _ = setup
    s = torch.full((3,), 1 / 3, dtype=torch.float64)
    phi0_loss = (s * example_losses(model, phi0, batch)).sum()
    phi1 = adapt(model, phi0, batch, s, 0.1, 1)[-1]
    assert (s * example_losses(model, phi1, batch)).sum() < phi0_loss


@pytest.mark.parametrize("rows_at_once", [None, 1, 2])
def test_example_grads_are_each_examples_own_gradient(setup, rows_at_once):
    model, phi0, batch, _ = setup
    seen = []  # the rows of each forward pass: no pass holds more than rows_at_once examples
    hook = model.get_input_embeddings().register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[0]))
    try:
        grads = example_grads(model, phi0, batch, rows_at_once)
    finally:
        hook.remove()
    assert seen and max(seen) == (rows_at_once or 3) and sum(seen) == 3
    for i in range(3):
        own = torch.func.grad(lambda phi: example_losses(model, phi, batch)[i])(phi0)
        for n in phi0:
            torch.testing.assert_close(grads[n][i], own[n], rtol=1e-9, atol=1e-12)


def test_the_trajectory_with_example_grads_is_the_plain_one(setup):
    model, phi0, batch, _ = setup
    s = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    trajectory, grads = adapt_with_example_grads(model, phi0, batch, s, 0.3, 2)
    assert len(trajectory) == 3 and len(grads) == 2
    for ours, plain in zip(trajectory, adapt(model, phi0, batch, s, 0.3, 2)):
        for n in phi0:
            torch.testing.assert_close(ours[n], plain[n], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("K, products", [(1, 0), (2, 1), (3, 2)])
def test_K_steps_take_K_minus_one_forward_mode_products(setup, monkeypatch, K, products):
    model, phi0, batch, outer = setup
    calls = []
    real_jvp = mass.metagrad.jvp
    monkeypatch.setattr(mass.metagrad, "jvp", lambda *a, **k: calls.append(1) or real_jvp(*a, **k))
    s = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    hybrid = meta_grad_hybrid(model, phi0, batch, s, 0.1, K, outer)
    assert len(calls) == products
    unrolled = meta_grad_unrolled(model, phi0, batch, s, 0.1, K, outer)
    assert (hybrid.ds - unrolled.ds).norm() / unrolled.ds.norm() < 1e-8


def test_lora_outside_linear_layers_gets_its_per_example_gradient_too(tiny_tokenizer):
    """LoRA on the embedding is not a per-row linear LoRA: example_grads takes one gradient per
    example for it, and the meta-gradient stays exact."""
    base = tiny_llama(tiny_tokenizer, seed=2, layers=1, hidden=16)
    base.set_attn_implementation("mass_math")
    model = keep_float64(attach_lora(base, rank=2, target_modules=["q_proj", "embed_tokens"])).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n or "lora_embedding_B" in n:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(3))
    phi0 = lora_params(model)
    assert any("lora_embedding" in n for n in phi0)
    batch = make_sft_batch(tiny_tokenizer, ["Problem: 1+1?\nSolution:", "Problem: 2x=4\nSolution:"],
                           [" $1+1=2$. \\boxed{2}", " $x=2$"])
    grads = example_grads(model, phi0, batch)
    for i in range(2):
        own = torch.func.grad(lambda phi: example_losses(model, phi, batch)[i])(phi0)
        for n in phi0:
            torch.testing.assert_close(grads[n][i], own[n], rtol=1e-9, atol=1e-12)
    assert any(grads[n].abs().max() > 0 for n in phi0 if "lora_embedding" in n)
    target = make_sft_batch(tiny_tokenizer, ["Problem: 3+4?\nSolution:"], [" \\boxed{7}"])
    outer = lambda phi: example_losses(model, phi, target).mean()  # noqa: E731
    s = torch.tensor([0.6, 0.4], dtype=torch.float64)
    hybrid = meta_grad_hybrid(model, phi0, batch, s, 0.1, 2, outer)
    unrolled = meta_grad_unrolled(model, phi0, batch, s, 0.1, 2, outer)
    assert (hybrid.ds - unrolled.ds).norm() / unrolled.ds.norm() < 1e-8


def test_losses_need_no_logits_before_the_first_scored_position(setup):
    from mass.inner import next_token_logprobs, scored_logprobs, scored_start
    from mass.losses import grpo_loss, masked_mean_ce

    model, phi0, batch, _ = setup
    start = scored_start(batch)
    assert 0 < start == int(batch.target_mask.any(0).nonzero()[0])  # the prompts are not scored
    head_rows = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, args, out: head_rows.append(out.shape[1]))
    try:
        with torch.no_grad():
            windowed = example_losses(model, phi0, batch)
            logp, scored = scored_logprobs(model, phi0, batch)
            logits = torch.func.functional_call(model, phi0, args=(), strict=False, kwargs={
                "input_ids": batch.input_ids, "attention_mask": batch.attention_mask}).logits
            full_logp = next_token_logprobs(logits, batch.input_ids)
    finally:
        hook.remove()
    assert head_rows == [batch.input_ids.shape[1] - start] * 2 + [batch.input_ids.shape[1]]
    torch.testing.assert_close(windowed, masked_mean_ce(full_logp, batch.target_mask), rtol=1e-12, atol=1e-12)
    # GRPO (the generator's, the verifier's and Solver GRPO's loss) on the window is the full one
    old = logp.detach() + 0.3 * torch.randn(logp.shape, dtype=logp.dtype, generator=torch.Generator().manual_seed(0))
    full_old = torch.cat([full_logp[:, : start].detach(), old], dim=1)
    advantages = torch.tensor([1.0, -0.5, -0.5], dtype=torch.float64)
    ours, ours_diag = grpo_loss(logp, old, scored, advantages)
    reference, reference_diag = grpo_loss(full_logp, full_old, batch.target_mask, advantages)
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)
    assert ours_diag == pytest.approx(reference_diag, rel=1e-12) and 0 < ours_diag["clip_frac"] < 1