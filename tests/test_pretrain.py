import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mass.cli import main
from mass.pretrain import PretrainConfig, corpus_documents, step_batch

TINY = ["model.layers=1", "model.hidden_size=32", "model.intermediate_size=64", "model.heads=2",
        "batch_size=2", "seq_len=64", "tokenizer_docs=300", "vocab_size=300", "log_every=1", "warmup=10"]


def test_corpus_mixes_solving_and_synthesis_and_downweights_the_weak_subject():
    docs = corpus_documents(0, 2000, PretrainConfig())
    synth = [d for d in docs if d[0].endswith("New problem:")]
    assert 0.2 < len(synth) / len(docs) < 0.4
    assert all(d[1].rstrip().endswith("$.") and "\\boxed{" in d[1] for d in docs)
    flat = corpus_documents(0, 2000, PretrainConfig(weak_subject=""))
    weak = lambda ds: sum("r^2 + s^2" in d[0] or "Remainder Theorem" in d[1] or "|x -" in d[0] or "arithmetic" in d[0] for d in ds)
    assert weak(docs) < 0.7 * weak(flat)


@pytest.mark.slow
def test_pretrain_smoke_saves_a_loadable_checkpoint_and_resumes_exactly(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["pretrain", f"out={straight}", "steps=4", "save_every=100", *TINY]) == 0
    assert main(["pretrain", f"out={split}", "steps=2", "save_every=100", *TINY]) == 0
    assert main(["pretrain", f"out={split}", "steps=4", "save_every=100", "--resume", *TINY]) == 0

    model = AutoModelForCausalLM.from_pretrained(straight)
    tok = AutoTokenizer.from_pretrained(straight)
    assert model.config.num_hidden_layers == 1 and len(tok) <= 300
    rows = [json.loads(line) for line in (split / "pretrain_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3] and all(r["loss"] > 0 for r in rows)
    resumed = AutoModelForCausalLM.from_pretrained(split)
    for (name, a), (_, b) in zip(model.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name  # 2 + 2 resumed steps == 4 straight steps, bit for bit
    assert (straight / "training_curve.png").stat().st_size > 1000


def test_step_batches_are_a_pure_function_of_the_step(tiny_tokenizer):
    cfg = PretrainConfig(batch_size=2, seq_len=32)
    assert torch.equal(step_batch(tiny_tokenizer, cfg, 5), step_batch(tiny_tokenizer, cfg, 5))
    assert not torch.equal(step_batch(tiny_tokenizer, cfg, 5), step_batch(tiny_tokenizer, cfg, 6))
