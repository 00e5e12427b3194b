"""Batched test-time adaptation (mass/batched.py) equals adapting one problem at a time."""

from __future__ import annotations

import pytest
import torch

import mass.models  # noqa: F401  (registers the mass_math attention)
from mass.adaptation import AdaptConfig, adapt_answer, example_batch, use_lora
from mass.batched import batched_adapt, per_row_lora
from mass.inner import adapt, lora_params
from mass.models import SamplingConfig, attach_lora
from mass.prompts import SynthExample
from mass.tasks import Task
from mass.problem import Problem

from conftest import keep_float64, tiny_llama

EXAMPLE_SETS = [
    [SynthExample("What is $1+1$?", "$1+1=2$. \\boxed{2}", "2"),
     SynthExample("What is $2+2$?", "$2+2=4$, so the answer is \\boxed{4}", "4")],
    [],  # nothing parsed: the problem keeps phi0
    [SynthExample("Solve $2x=4$.", "$x=2$. \\boxed{2}", "2"),
     SynthExample("Solve $3x=9$.", "Divide by 3: $x=3$. \\boxed{3}", "3"),
     SynthExample("What is $5-1$?", "\\boxed{4}", "4")],
]
PROBLEMS = [Problem(id=str(i), problem=p, solution=None, answer="0", subject="", level=None)
            for i, p in enumerate(["What is $3+3$?", "What is $7 \\times 2$?", "Solve $4x=8$."])]


@pytest.fixture(scope="module")
def peft_model(tiny_tokenizer):
    base = tiny_llama(tiny_tokenizer, seed=3, layers=2, hidden=16)
    model = keep_float64(attach_lora(base, rank=2)).eval()
    torch.manual_seed(0)
    with torch.no_grad():  # a non-zero B, so that every LoRA matrix moves and shapes the output
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    return model


def test_batched_steps_equal_one_problem_at_a_time(peft_model, tiny_tokenizer):
    phi0 = lora_params(peft_model)
    weights = [torch.rand(len(ex), dtype=torch.float64) for ex in EXAMPLE_SETS]
    used = [e for ex in EXAMPLE_SETS for e in ex]
    rows = torch.tensor([p for p, ex in enumerate(EXAMPLE_SETS) for _ in ex])
    stacked = batched_adapt(peft_model, phi0, len(EXAMPLE_SETS), example_batch(tiny_tokenizer, used, "cpu"), rows,
                            torch.cat(weights), alpha=0.5, steps=2)
    for p, (examples, s) in enumerate(zip(EXAMPLE_SETS, weights)):
        expected = adapt(peft_model, phi0, example_batch(tiny_tokenizer, examples, "cpu"), s, 0.5, 2)[-1] \
            if examples else phi0
        moved = False
        for name, value in expected.items():
            torch.testing.assert_close(stacked[name][p], value, rtol=1e-9, atol=1e-11)
            moved |= not torch.equal(value, phi0[name])
        assert moved == bool(examples)


def test_per_row_lora_is_the_peft_forward_with_each_rows_values(peft_model, tiny_tokenizer):
    phi0 = lora_params(peft_model)
    other = {n: p + 0.2 * torch.randn_like(p) for n, p in phi0.items()}
    stacked = {n: torch.stack([phi0[n], other[n]]) for n in phi0}
    batch = example_batch(tiny_tokenizer, EXAMPLE_SETS[2], "cpu")
    rows = torch.tensor([1, 0, 1])
    with torch.no_grad(), per_row_lora(peft_model, stacked, rows):
        logits = peft_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    for j, p in enumerate(rows.tolist()):
        with torch.no_grad(), use_lora(peft_model, other if p else phi0):
            alone = peft_model(input_ids=batch.input_ids[j:j + 1], attention_mask=batch.attention_mask[j:j + 1]).logits
        torch.testing.assert_close(logits[j:j + 1], alone, rtol=1e-9, atol=1e-10)
        if p:  # and the row's own values matter
            with torch.no_grad(), use_lora(peft_model, phi0):
                assert not torch.allclose(alone, peft_model(input_ids=batch.input_ids[j:j + 1],
                                                            attention_mask=batch.attention_mask[j:j + 1]).logits)


def test_answers_batched_equal_answers_one_at_a_time(peft_model, tiny_tokenizer):
    phi0 = lora_params(peft_model)
    task = Task(name="toy", load=lambda limit: PROBLEMS)
    answers = {}
    for together, answered_together in ((1, 64), (3, 64), (3, 2)):  # inner steps / answers batched by so many
        cfg = AdaptConfig(m=3, steps=2, lr=0.5, weights="uniform", batch_problems=together)
        records = adapt_answer(peft_model, tiny_tokenizer, PROBLEMS, EXAMPLE_SETS, phi0, None, cfg, task,
                               SamplingConfig(max_new_tokens=12, batch_size=answered_together), None)
        answers[together, answered_together] = [r["generated"] for r in records]
        assert [r["adapted"] for r in records] == [True, False, True]
    assert answers[1, 64] == answers[3, 64] == answers[3, 2]
    assert adapt_answer(peft_model, tiny_tokenizer, [], [], phi0, None, cfg, task, SamplingConfig(), None) == []
    answers[3] = answers[3, 64]
    base = adapt_answer(peft_model, tiny_tokenizer, PROBLEMS, [[], [], []], phi0, None,
                                 AdaptConfig(weights="uniform"), task, SamplingConfig(max_new_tokens=12), None)
    assert base[1]["generated"] == answers[3][1]  # unadapted problem: phi0's answer


def test_length_sorted_chunks_give_the_same_losses(peft_model, tiny_tokenizer):
    from mass.batched import batched_example_losses, stack_params
    from mass.inner import example_losses

    phi0 = lora_params(peft_model)
    phi = stack_params(phi0, 3)
    for name in phi:  # a different LoRA per problem
        phi[name] = phi[name] + 0.1 * torch.randn_like(phi[name])
    used = [e for ex in EXAMPLE_SETS for e in ex]
    rows = torch.tensor([p for p, ex in enumerate(EXAMPLE_SETS) for _ in ex])
    batch = example_batch(tiny_tokenizer, used, "cpu")
    with torch.no_grad():
        chunked = batched_example_losses(peft_model, phi, rows, batch, chunk=2)
        whole = batched_example_losses(peft_model, phi, rows, batch, chunk=100)
        alone = torch.cat([example_losses(peft_model, {n: v[p] for n, v in phi.items()},
                                          example_batch(tiny_tokenizer, [e], "cpu"))
                           for p, e in zip(rows.tolist(), used)])
    torch.testing.assert_close(chunked, whole, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(chunked, alone, rtol=1e-10, atol=1e-12)


def test_rows_that_finish_early_leave_the_batch_and_the_others_answer_the_same(peft_model, tiny_tokenizer,
                                                                                monkeypatch):
    from mass import models
    from mass.batched import batched_answers, stack_params

    monkeypatch.setattr(models, "stop_ids", lambda model, tokenizer: list(range(5, 200, 3)))  # rows end early
    kept = []
    select = models.ReservedLayer.batch_select_indices
    monkeypatch.setattr(models.ReservedLayer, "batch_select_indices",
                        lambda layer, positions: (kept.append(len(positions)), select(layer, positions)))
    torch.manual_seed(1)
    phi = {n: v + 0.3 * torch.randn_like(v) for n, v in stack_params(lora_params(peft_model), 6).items()}
    prompts = [f"Problem: What is ${i} + {i}$?\nSolution:" for i in range(6)]
    sampling = SamplingConfig(max_new_tokens=24, batch_size=6)
    together = batched_answers(peft_model, tiny_tokenizer, prompts, phi, sampling)
    assert kept and min(kept) < 6  # finished rows did leave the batch
    alone = []
    for p, prompt in enumerate(prompts):
        with use_lora(peft_model, {n: v[p] for n, v in phi.items()}):
            alone.append(models.generate(peft_model, tiny_tokenizer, [prompt], sampling)[0])
    assert len({len(a) for a in alone}) > 1  # of different lengths
    assert together == alone


def test_scorer_features_from_the_first_step_and_the_samples_give_the_weights_of_their_own_passes(
        peft_model, tiny_tokenizer, monkeypatch):
    from mass import scorer as scorer_module
    from mass.adaptation import _adapt_together, group_weights
    from mass.scorer import STATS, Scorer

    phi0 = lora_params(peft_model)
    scorer = Scorer(peft_model.config.hidden_size, width=8, normalise="softmax", n_stats=len(STATS))
    torch.manual_seed(0)
    with torch.no_grad():  # a scorer that is not uniform, so that the features matter
        for p in scorer.parameters():
            p.normal_(0, 0.5)
    having = [j for j, ex in enumerate(EXAMPLE_SETS) if ex]
    targets, sets = [PROBLEMS[j].problem for j in having], [EXAMPLE_SETS[j] for j in having]
    with torch.no_grad():
        expected = group_weights(peft_model, tiny_tokenizer, scorer, targets, sets)  # every feature by its own pass
        synth_stats = scorer_module.group_stats(peft_model, tiny_tokenizer, targets, sets)
    # what sampling would have recorded: known for all but the last example (which a pass fills in)
    known = [[tuple(synth_stats[g][i, :2].tolist()) + (1,) for i in range(len(ex))] for g, ex in enumerate(sets)]
    known[-1][-1] = None
    sample_nlls = [known[having.index(j)] if j in having else [] for j in range(len(EXAMPLE_SETS))]
    passes = []
    real = scorer_module._completion_nll
    monkeypatch.setattr(scorer_module, "_completion_nll", lambda model, tok, prompts, *rest: (
        passes.append(len(prompts)), real(model, tok, prompts, *rest))[1])
    cfg = AdaptConfig(m=3, steps=2, lr=0.5)
    records, phi = _adapt_together(peft_model, tiny_tokenizer, PROBLEMS, EXAMPLE_SETS, sample_nlls, phi0, scorer, cfg)
    assert passes == [1]  # only the one example whose sample statistics were not known
    got = [torch.tensor([e["weight"] for e in records[j]["examples"]]) for j in having]
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-5)  # the records round to 5 digits
    assert not torch.allclose(expected[1], torch.full((3,), 1 / 3))
    rows = torch.tensor([p for p, ex in enumerate(EXAMPLE_SETS) for _ in ex])
    used = [e for ex in EXAMPLE_SETS for e in ex]
    reference = batched_adapt(peft_model, phi0, len(PROBLEMS), example_batch(tiny_tokenizer, used, "cpu"), rows,
                              torch.cat(expected), 0.5, 2)
    for name in phi0:  # the same up to the float32 scorer's rounding of the weights
        torch.testing.assert_close(phi[name], reference[name], rtol=1e-5, atol=1e-5)
