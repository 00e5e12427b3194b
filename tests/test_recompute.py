"""Block-level recomputation (mass/recompute.py) gives what the whole-model functions give, in float64.

The loss gradient and per-example losses equal `grad(inner_loss)` / `example_losses`, and the
`hybrid-recompute` meta-gradient equals `unrolled` and `hybrid` at K = 1 and 2, on a tiny Llama
with multi-head and with grouped-query attention (SmolLM2's kind).
"""

import pytest
import torch
from torch.func import grad

import mass.models  # noqa: F401  (registers the mass_math attention)
from mass.errors import MassError
from mass.inner import example_losses, inner_loss, lora_params
from mass.metagrad import META_GRADS, meta_grad_hybrid, meta_grad_hybrid_recompute, meta_grad_unrolled
from mass.models import attach_lora, make_sft_batch
from mass.recompute import loss_grad_blockwise, split_by_layer, decoder_of

from conftest import keep_float64
from transformers import LlamaConfig, LlamaForCausalLM


def _model(tokenizer, kv_heads: int, targets=None):
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=256,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(3)
    base = LlamaForCausalLM(config).eval()
    base.set_attn_implementation("mass_math")
    model = keep_float64(attach_lora(base, rank=2, target_modules=targets)).eval()
    with torch.no_grad():  # a non-zero B so that every LoRA matrix gets a gradient
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    return model


@pytest.fixture(scope="module", params=[4, 2], ids=["multi-head", "grouped-query"])
def setup(request, tiny_tokenizer):
    model = _model(tiny_tokenizer, request.param)
    # right-padded rows of different lengths: padding must not change anything
    batch = make_sft_batch(tiny_tokenizer, ["Problem: 1+1?\nSolution:", "Problem: 2x=4\nSolution:",
                                            "Problem: hi\nSolution:"],
                           [" $1+1=2$. \\boxed{2}", " $x=2$", " a longer answer here \\boxed{7}"])
    target = make_sft_batch(tiny_tokenizer, ["Problem: 3+4?\nSolution:"], [" $3+4=7$. The answer is \\boxed{7}."])
    return model, lora_params(model), batch, lambda phi: example_losses(model, phi, target).mean()


@pytest.mark.parametrize("head_rows", [None, 1, 2])
def test_blockwise_gradient_and_losses_equal_the_whole_model_ones(setup, head_rows):
    model, phi0, batch, _ = setup
    s = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    head = model.get_output_embeddings()
    seen = []  # rows of each pass through the LM head: never more than head_rows at once
    hook = head.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[0]))
    try:
        grads, losses = loss_grad_blockwise(model, phi0, batch, s, head_rows=head_rows)
    finally:
        hook.remove()
    assert max(seen) == (head_rows or 3) and sum(seen) == 3
    reference = grad(lambda phi: inner_loss(model, phi, batch, s))(phi0)
    assert set(grads) == set(phi0)
    for n in phi0:
        assert grads[n].abs().max() > 0, n  # every LoRA matrix gets a real gradient
        torch.testing.assert_close(grads[n], reference[n], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(losses, example_losses(model, phi0, batch), rtol=1e-12, atol=0)


@pytest.mark.parametrize("K", [1, 2])
def test_hybrid_recompute_equals_unrolled_and_hybrid(setup, K):
    model, phi0, batch, outer = setup
    s = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    recompute = meta_grad_hybrid_recompute(model, phi0, batch, s, 0.1, K, outer)
    unrolled = meta_grad_unrolled(model, phi0, batch, s, 0.1, K, outer)
    hybrid = meta_grad_hybrid(model, phi0, batch, s, 0.1, K, outer)
    assert recompute.ds.abs().max() > 1e-6  # a real signal, not zeros on both sides
    for other in (unrolled, hybrid):
        assert ((recompute.ds - other.ds).norm() / other.ds.norm()) < 1e-8
        assert recompute.outer_loss == pytest.approx(other.outer_loss, rel=1e-12)
        for n in phi0:
            torch.testing.assert_close(recompute.phi_K[n], other.phi_K[n], rtol=1e-10, atol=1e-12)


def test_every_meta_gradient_mode_is_selectable_by_name():
    assert set(META_GRADS) == {"hybrid", "unrolled", "hybrid-recompute"}


def test_lora_outside_the_decoder_layers_is_a_clear_error(tiny_tokenizer):
    model = _model(tiny_tokenizer, 4, targets=["q_proj", "lm_head"])
    with pytest.raises(MassError, match="outside them"):
        split_by_layer(decoder_of(model), lora_params(model))


def test_a_model_that_is_not_llama_shaped_is_a_clear_error():
    with pytest.raises(MassError, match="Llama-style decoder"):
        decoder_of(torch.nn.Linear(2, 2))


def _small_batch(tokenizer):
    return make_sft_batch(tokenizer, ["Problem: 1+1?\nSolution:", "Problem: 2x=4\nSolution:"],
                          [" $1+1=2$. \\boxed{2}", " $x=2$"])


def test_a_model_whose_forward_does_more_than_its_parts_is_caught_before_any_gradient(tiny_tokenizer):
    # Cohere is laid out as Llama is, but multiplies the logits by logit_scale after the LM head:
    # the blockwise pass would give a wrong gradient without a word
    from transformers import CohereConfig, CohereForCausalLM

    config = CohereConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=4, logit_scale=0.25,
                          pad_token_id=tiny_tokenizer.pad_token_id, bos_token_id=tiny_tokenizer.bos_token_id,
                          eos_token_id=tiny_tokenizer.eos_token_id)
    torch.manual_seed(0)
    base = CohereForCausalLM(config).eval()
    base.set_attn_implementation("mass_math")  # forward mode needs it (the meta-gradient's jvp)
    model = attach_lora(base, rank=2, target_modules=["q_proj", "v_proj"]).eval()
    phi0, batch = lora_params(model), _small_batch(tiny_tokenizer)
    s = torch.full((2,), 0.5)
    outer = lambda phi: example_losses(model, phi, batch).mean()  # noqa: E731
    with pytest.raises(MassError, match="does not reproduce CohereForCausalLM's own losses"):
        meta_grad_hybrid_recompute(model, phi0, batch, s, 0.1, 2, outer)
    model.get_base_model().logit_scale = 1.0  # the same model with nothing after its head: accepted, and right
    recompute = meta_grad_hybrid_recompute(model, phi0, batch, s, 0.1, 2, outer)
    reference = meta_grad_unrolled(model, phi0, batch, s, 0.1, 2, outer)
    torch.testing.assert_close(recompute.ds, reference.ds, rtol=1e-3, atol=1e-7)


def test_a_model_is_checked_once_and_then_runs_without_the_extra_pass(setup, monkeypatch):
    model, phi0, batch, outer = setup
    s = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    meta_grad_hybrid_recompute(model, phi0, batch, s, 0.1, 1, outer)  # checked here, if no other test did
    calls = []
    monkeypatch.setattr("mass.recompute.example_losses", lambda *a: calls.append(a) or example_losses(*a))
    meta_grad_hybrid_recompute(model, phi0, batch, s, 0.1, 1, outer)
    assert calls == []


def test_examples_longer_than_a_sliding_window_are_refused(tiny_tokenizer):
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, sliding_window=4,
                           pad_token_id=tiny_tokenizer.pad_token_id)
    model = attach_lora(MistralForCausalLM(config).eval(), rank=2, target_modules=["q_proj", "v_proj"]).eval()
    batch = _small_batch(tiny_tokenizer)
    with pytest.raises(MassError, match="longer than the model's sliding window \\(4\\)"):
        loss_grad_blockwise(model, lora_params(model), batch, torch.full((2,), 0.5))
