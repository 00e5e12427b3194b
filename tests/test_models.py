import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache, MistralConfig, MistralForCausalLM
from transformers.cache_utils import Cache

from mass.errors import MassError
from mass.models import SamplingConfig, attach_lora, generate, load_model, reserved_cache


def test_checkpoint_loads_with_auto_classes(tiny_model_dir):
    model, tok = load_model(str(tiny_model_dir))
    again = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    assert tok.padding_side == "left"


def test_greedy_batched_generation_matches_one_by_one_and_hf_generate(tiny_model_dir):
    model, tok = load_model(str(tiny_model_dir))
    prompts = ["Problem: Compute $1 + 2$.\nSolution:", "Problem: x\nSolution:", "Problem: A longer prompt here.\nSolution:"]
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=12, batch_size=3)
    batched = generate(model, tok, prompts, sampling)
    single = [generate(model, tok, [p], sampling)[0] for p in prompts]
    assert batched == single  # left padding and the KV cache change nothing
    ids = tok(prompts[2], return_tensors="pt")
    ref = model.generate(**ids, do_sample=False, max_new_tokens=12, eos_token_id=tok.eos_token_id)
    assert batched[2]  # a non-empty generation, so the prefix check below means something
    assert tok.decode(ref[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).startswith(batched[2])


@pytest.mark.parametrize("capacity", [64, 3])  # 3: less than the prompt, so the buffer must grow
def test_the_reserved_kv_cache_gives_the_default_caches_logits(tiny_model_dir, capacity):
    model, tok = load_model(str(tiny_model_dir))
    enc = tok(["Problem: x\nSolution:", "Problem: a longer one\nSolution:"], return_tensors="pt", padding=True)
    runs = []
    for cache in (DynamicCache(config=model.config), reserved_cache(model, capacity)):
        ids, mask, logits = enc["input_ids"], enc["attention_mask"], []
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        for step in range(6):
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True)
            logits.append(out.logits[:, -1])
            ids = out.logits[:, -1].argmax(-1, keepdim=True)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
            positions = positions[:, -1:] + 1
            if step == 3:  # drop the first row, as a generation may drop finished rows
                cache.batch_select_indices(torch.tensor([1]))
                ids, mask, positions = ids[1:], mask[1:], positions[1:]
        runs.append(logits)
    assert type(reserved_cache(model, 8).layers[0]).__name__ == "ReservedLayer"
    for default, reserved in zip(*runs):
        torch.testing.assert_close(reserved, default, rtol=0, atol=1e-6)


def test_sampling_is_seeded_and_stop_strings_cut(tiny_model_dir):
    model, tok = load_model(str(tiny_model_dir))
    sampling = SamplingConfig(temperature=1.0, top_p=0.9, max_new_tokens=20)
    a = generate(model, tok, ["Problem: a\nSolution:"] * 4, sampling, torch.Generator().manual_seed(1))
    b = generate(model, tok, ["Problem: a\nSolution:"] * 4, sampling, torch.Generator().manual_seed(1))
    assert a == b and len(set(a)) > 1  # same seed, same samples; rows differ from each other
    stop = a[0][len(a[0]) // 2: len(a[0]) // 2 + 1] or "x"
    cut = generate(model, tok, ["Problem: a\nSolution:"], SamplingConfig(temperature=1.0, max_new_tokens=20, stop=[stop]),
                   torch.Generator().manual_seed(1))[0]
    assert stop not in cut


def test_lora_attaches_trainable_adapters_only(tiny_model_dir):
    model, _ = load_model(str(tiny_model_dir))
    peft_model = attach_lora(model, rank=4)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_missing_model_is_a_clear_error(tmp_path):
    for missing in (str(tmp_path / "nope"), "./nope", "../models/nope", "~/nope-mass-test", "a/b/c"):
        with pytest.raises(MassError, match="model path not found: .*nope|model path not found: a/b/c"):
            load_model(missing)  # plainly "not found", not a hub-id syntax error


def test_seeded_lora_init_is_reproducible_and_leaves_the_global_rng_alone(tiny_tokenizer):
    from conftest import tiny_llama

    models = [tiny_llama(tiny_tokenizer) for _ in range(3)]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = {n: p.detach() for n, p in attach_lora(models[0], seed=3).named_parameters() if "lora_A" in n}
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(7)  # a different global state must not matter
    b = {n: p.detach() for n, p in attach_lora(models[1], seed=3).named_parameters() if "lora_A" in n}
    c = {n: p.detach() for n, p in attach_lora(models[2], seed=4).named_parameters() if "lora_A" in n}
    assert a and all(torch.equal(a[n], b[n]) for n in a) and not all(torch.equal(a[n], c[n]) for n in a)


def test_a_missing_gguf_file_is_a_clear_error(tmp_path):
    with pytest.raises(MassError, match="model path not found: .*model.Q4_1.gguf"):
        load_model(str(tmp_path / "model.Q4_1.gguf"))
    with pytest.raises(MassError, match="GGUF file not found: model.Q4_1.gguf"):  # a bare name: not a hub id either
        load_model("model.Q4_1.gguf")


@pytest.mark.parametrize("init", ["default", "gaussian", "orthogonal"])
def test_every_lora_init_starts_as_a_no_op(tiny_model_dir, init):
    from mass.models import LoraSettings

    model, tok = load_model(str(tiny_model_dir))
    ids = tok(["Problem: Compute $1 + 2$."], return_tensors="pt")
    with torch.no_grad():
        before = model(**ids).logits
    lora = LoraSettings(rank=4, init=init, targets=["q_proj", "v_proj", "gate_proj"])
    peft_model = attach_lora(model, lora.rank, lora.alpha, lora.targets, seed=0, init=init)
    with torch.no_grad():
        after = peft_model(**ids).logits
    b = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert torch.allclose(before, after, atol=1e-5)
    assert any(p.abs().sum() > 0 for p in b) == (init == "orthogonal")  # orthogonal: both A and B move at step 1


def test_lora_settings_reject_unknown_inits_and_odd_orthogonal_ranks():
    from mass.models import LoraSettings

    with pytest.raises(MassError, match="lora.init"):
        LoraSettings(init="pissa")
    with pytest.raises(MassError, match="even rank"):
        LoraSettings(rank=5, init="orthogonal")


def test_overlong_problems_are_cut_to_the_context_with_one_warning(capsys):
    from mass.models import fit_problems, load_model
    from mass.problem import Problem

    model, tok = load_model(None)
    short = Problem(id="a", problem="What is $2+3$?", solution=None, answer="5", subject="", level=None)
    huge = Problem(id="b", problem="What is $2+3$? " * 20000, solution=None, answer="5", subject="", level=None)
    out = fit_problems([short, huge], tok, model)
    assert out[0] is short
    limit = model.config.max_position_embeddings - 512
    assert len(tok(out[1].problem, add_special_tokens=False)["input_ids"]) <= limit + 2  # re-tokenising may merge
    assert out[1].problem.startswith("What is $2+3$?")
    err = capsys.readouterr().err
    assert err.count("warning: 1 problem(s) longer than") == 1 and "Token indices" not in err


def test_merged_lora_generates_what_the_adapter_does_and_restores_the_weights(tiny_model_dir):
    from mass.models import merged_lora

    model, tok = load_model(str(tiny_model_dir))
    peft_model = attach_lora(model, rank=4, seed=0)
    with torch.no_grad():  # B != 0: the adapter really changes the model
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)
    before = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
    prompts = ["Problem: 1+1?\nSolution:", "Problem: what is 7 times 8?\nSolution:"]
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=24)
    plain = generate(peft_model, tok, prompts, greedy)
    with peft_model.disable_adapter():
        without = generate(peft_model, tok, prompts, greedy)
    with merged_lora(peft_model):
        merged = generate(peft_model, tok, prompts, greedy)
    assert merged == plain and plain != without  # the LoRA matters, and merging keeps it
    for n, p in peft_model.named_parameters():
        assert torch.equal(p, before[n]), n


def _early_stopping(monkeypatch, tok, every: int = 3):
    """Many end tokens (every `every`-th id), so that rows finish at different steps and leave the batch."""
    from mass import models

    monkeypatch.setattr(models, "stop_ids", lambda model, tokenizer: list(range(5, len(tok), every)))
    dropped = []
    select = models.ReservedLayer.batch_select_indices
    monkeypatch.setattr(models.ReservedLayer, "batch_select_indices",
                        lambda layer, positions: (dropped.append(len(positions)), select(layer, positions)))
    return dropped


def test_sampled_rows_with_their_own_rngs_are_the_same_alone_when_rows_leave_the_batch(tiny_model_dir, monkeypatch):
    model, tok = load_model(str(tiny_model_dir))
    dropped = _early_stopping(monkeypatch, tok)
    prompts = [f"Problem: {i} + {i}\nSolution:" for i in range(8)]
    sampling = SamplingConfig(temperature=1.0, top_p=0.95, max_new_tokens=24, batch_size=8)

    def rngs(indices):
        return [torch.Generator().manual_seed(100 + i) for i in indices]

    together = generate(model, tok, prompts, sampling, rngs(range(8)))
    assert dropped  # rows did leave the batch
    alone = [generate(model, tok, [p], sampling, rngs([i]))[0] for i, p in enumerate(prompts)]
    assert len({len(a) for a in alone}) > 1 and together == alone


def test_a_model_with_its_own_cache_layers_samples_without_dropping_rows(tiny_tokenizer, monkeypatch):
    """Sliding-window (or linear-attention) caches keep per-row state our row dropping would not
    cut: such a model keeps its own cache and every row to the end."""
    config = MistralConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, sliding_window=6,
                           bos_token_id=tiny_tokenizer.bos_token_id, eos_token_id=tiny_tokenizer.eos_token_id,
                           pad_token_id=tiny_tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = MistralForCausalLM(config).eval()
    assert reserved_cache(model, 16) is None
    _early_stopping(monkeypatch, tiny_tokenizer, every=11)
    dropped = []
    monkeypatch.setattr(Cache, "batch_select_indices", lambda cache, positions: dropped.append(positions))
    prompts = [f"Problem: {i} + {i}\nSolution:" for i in range(6)]
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=20, batch_size=6)

    def rngs(indices):
        return [torch.Generator().manual_seed(7 + i) for i in indices]

    together = generate(model, tiny_tokenizer, prompts, sampling, rngs(range(6)))
    alone = [generate(model, tiny_tokenizer, [p], sampling, rngs([i]))[0] for i, p in enumerate(prompts)]
    assert not dropped and len({len(a) for a in alone}) > 1 and together == alone
