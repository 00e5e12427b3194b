"""The shared pieces of test-time adaptation: the example batch, the weights, and use_lora."""

import torch

from mass.adaptation import example_batch, example_weights, use_lora
from mass.models import attach_lora
from mass.prompts import SynthExample
from tests.conftest import tiny_llama

EXAMPLES = [SynthExample(problem="What is $1+1$?", solution="It is $\\boxed{2}$.", answer="2"),
            SynthExample(problem="What is $20+22$?", solution="Add: $\\boxed{42}$.", answer="42")]


def test_the_example_batch_scores_exactly_the_worked_answer_and_eos(tiny_tokenizer):
    batch = example_batch(tiny_tokenizer, EXAMPLES, "cpu")
    for row, example in enumerate(EXAMPLES):
        labels = batch.input_ids[row, 1:][batch.target_mask[row].bool()].tolist()
        answer = tiny_tokenizer(f" {example.solution}", add_special_tokens=False)["input_ids"]
        assert labels == answer + [tiny_tokenizer.eos_token_id]


def test_without_a_scorer_the_weights_are_uniform(tiny_tokenizer):
    model = tiny_llama(tiny_tokenizer)
    assert torch.equal(example_weights(model, tiny_tokenizer, None, "T", EXAMPLES), torch.full((2,), 0.5))


def test_use_lora_runs_with_other_values_and_restores_the_adapter_bit_for_bit(tiny_tokenizer):
    model = attach_lora(tiny_llama(tiny_tokenizer), rank=2)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in params.items()}
    other = {n: torch.randn_like(p) for n, p in params.items()}
    ids = torch.tensor([[1, 5, 7, 9]])
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with use_lora(model, other):
            assert all(torch.equal(params[n], other[n]) for n in params)
            moved = model(input_ids=ids).logits
        after = model(input_ids=ids).logits
    assert not torch.allclose(plain, moved)
    assert all(torch.equal(params[n], before[n]) for n in params) and torch.equal(plain, after)


def test_weights_of_many_targets_together_equal_each_target_alone(tiny_tokenizer):
    from mass.adaptation import group_weights
    from mass.scorer import STATS, Scorer

    model = attach_lora(tiny_llama(tiny_tokenizer), rank=2)
    scorer = Scorer(model.config.hidden_size, width=8, normalise="sigmoid", n_stats=len(STATS))
    torch.manual_seed(0)
    with torch.no_grad():  # a scorer that is not uniform, so that the features matter
        for p in scorer.parameters():
            p.normal_(0, 0.5)
    targets = ["What is $3+4$?", "Solve $2x = 10$ for $x$, please, showing every step."]
    sets = [EXAMPLES, [EXAMPLES[1], EXAMPLES[0], EXAMPLES[1]]]
    with torch.no_grad():
        together = group_weights(model, tiny_tokenizer, scorer, targets, sets)
        alone = [example_weights(model, tiny_tokenizer, scorer, t, e) for t, e in zip(targets, sets)]
    assert [w.shape for w in together] == [(2,), (3,)]
    assert not torch.allclose(together[1], torch.full((3,), 1 / 3))  # the scorer does weigh them
    for a, b in zip(together, alone):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
