"""Synthesis: m samples per target, parsed into (problem, solution) pairs; bad ones dropped and counted."""

import torch

from mass.synthesis import synthesise
from mass.models import Generation, SamplingConfig
from mass.prompts import parse_synthesised, synth_completion, synth_prompt


def test_samples_are_parsed_kept_in_order_and_the_unusable_counted(monkeypatch):
    completions = [" What is $1+1$?\nSolution: It is $\\boxed{2}$.",  # usable
                   " a story with no solution line",                  # dropped
                   " What is $2+2$?\nSolution: $\\boxed{4}$.",         # usable
                   " What is $3+3$?\nSolution: no boxed answer"]      # dropped
    seen = {}

    def fake_generate(model, tok, prompts, sampling, rng=None, **kwargs):
        seen["prompts"] = prompts
        return [Generation(c, token_ids=[], logprobs=[], end_id=None, end_logprob=None) for c in completions]

    monkeypatch.setattr("mass.synthesis.generate_scored", fake_generate)
    monkeypatch.setattr("mass.synthesis.uses_chat_template", lambda tok: False)
    out = synthesise(None, None, ["T1", "T2"], m=2, sampling=SamplingConfig())
    assert seen["prompts"] == [synth_prompt("T1")] * 2 + [synth_prompt("T2")] * 2  # m per target, target order
    assert [s.n_dropped for s in out] == [1, 1]
    assert [e.problem for s in out for e in s.examples] == ["What is $1+1$?", "What is $2+2$?"]
    assert [e.answer for s in out for e in s.examples] == ["2", "4"]
    assert out[0].completions == completions[:2] and out[0].example_completions == [completions[0]]
    assert parse_synthesised(completions[1]) is None and parse_synthesised(completions[3]) is None
    assert [s.sample_nll for s in out] == [[None], [None]]  # no end token: not known from sampling


def test_the_samples_own_nll_is_what_a_forward_pass_of_the_example_gives():
    from mass.models import load_model
    from mass.scorer import _completion_nll

    model, tok = load_model(None)
    targets = ["What is the remainder when $100$ is divided by $7$?", "Solve $3x + 2 = 11$."]
    out = synthesise(model, tok, targets, m=4, sampling=SamplingConfig(temperature=1.0, max_new_tokens=160),
                     rng=torch.Generator().manual_seed(0))
    pairs = [(t, e, nll) for t, s in zip(targets, out) for e, nll in zip(s.examples, s.sample_nll)]
    known = [(t, e, nll) for t, e, nll in pairs if nll is not None]
    assert len(known) >= len(pairs) - 1 >= 4  # nearly every sample is exactly its example then EOS
    with torch.no_grad():
        expected = _completion_nll(model, tok, [synth_prompt(t) for t, _, _ in known],
                                   [synth_completion(e.problem, e.solution) for _, e, _ in known], chunk=8)
    torch.testing.assert_close(torch.tensor([nll for _, _, nll in known]), expected, rtol=1e-4, atol=1e-4)


def test_the_embedded_model_writes_parseable_examples():
    from mass.models import load_model

    model, tok = load_model(None)
    out = synthesise(model, tok, ["What is the remainder when $100$ is divided by $7$?"], m=4,
                     sampling=SamplingConfig(temperature=1.0, max_new_tokens=160), rng=torch.Generator().manual_seed(0))
    assert len(out) == 1 and len(out[0].completions) == 4
    assert len(out[0].examples) + out[0].n_dropped == 4 and out[0].examples  # the shipped model follows its format
    assert all(e.problem and e.solution and e.answer for e in out[0].examples)
