"""Shared fixtures: a tiny random Llama with a MiniMath tokenizer, saved as a real HF checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mass.minimath import make_split
from mass.tokenizer import build_tokenizer

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def tiny_llama(tokenizer, seed: int = 0, layers: int = 2, hidden: int = 32) -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=2048, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def _rmsnorm_in_input_dtype(self, hidden_states):
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))


def keep_float64(model):
    """HF's LlamaRMSNorm computes in float32 even for float64 inputs, which caps gradient
    comparisons at ~1e-7; for float64 checks, compute the norms in the input dtype."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    for module in model.modules():
        if isinstance(module, LlamaRMSNorm):
            module.forward = _rmsnorm_in_input_dtype.__get__(module)
    return model.to(torch.float64)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    texts = [p.problem + " " + p.solution for p in make_split("minimath-train")[:500]]
    return build_tokenizer(texts, vocab_size=300)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A tiny random Llama saved locally (config, safetensors, tokenizer), as a user would have one."""
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama(tiny_tokenizer).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA
