"""Synthesis: the generator (the model) writes itself m practice problems with worked answers
for a target T.

Samples m completions of the synthesis prompt (see mass/prompts.py) per target problem and
parses each into a (problem p_i, worked answer a_i) pair. Unparseable samples are dropped and
counted, never raised. The same model is solver and generator; a separate generator model can be
passed in just as well.

    examples = synthesise(model, tok, ["What is $2+3 \\times 4$?"], m=6, sampling=SamplingConfig(temperature=1.0))
"""

from __future__ import annotations

from dataclasses import dataclass

from mass.models import Generation, Rng, SamplingConfig, generate_scored, uses_chat_template
from mass.prompts import SynthExample, parse_synthesised, synth_completion, synth_prompt


@dataclass
class Synthesis:
    completions: list[str]  # the m raw samples
    examples: list[SynthExample]  # the parseable ones, in sample order
    example_completions: list[str]  # the raw completion each example was parsed from
    n_dropped: int  # samples that did not parse
    # each example's (mean token NLL, largest token NLL, tokens) under the generator, its end token
    # included, from sampling it; None where the sample is not exactly the example's text then EOS
    sample_nll: list[tuple[float, float, int] | None]


def synthesise(model, tokenizer, targets: list[str], m: int, sampling: SamplingConfig,
               rng: Rng = None) -> list[Synthesis]:
    """m synthesised (p_i, a_i) per target problem, parsed; one batched sampling call for all.
    `rng`: one torch.Generator for all samples, or a list of m per target, target-major (`models.generate`)."""
    chat = uses_chat_template(tokenizer)
    prompts = [synth_prompt(t, chat) for t in targets for _ in range(m)]
    generations = generate_scored(model, tokenizer, prompts, sampling, rng)
    out = []
    for j in range(len(targets)):
        raw = generations[j * m : (j + 1) * m]
        parsed = [(parse_synthesised(g.text), g) for g in raw]
        kept = [(s, g) for s, g in parsed if s is not None]
        out.append(Synthesis(completions=[g.text for g in raw], examples=[s for s, _ in kept],
                             example_completions=[g.text for _, g in kept], n_dropped=m - len(kept),
                             sample_nll=[sample_nll(tokenizer, s, g, chat) for s, g in kept]))
    return out


def sample_nll(tokenizer, example: SynthExample, generation: Generation,
               chat: bool) -> tuple[float, float, int] | None:
    """(mean, largest, count) of the token NLLs of `synth_completion(example)` + EOS after the
    synthesis prompt, read off the sample (mass.scorer's `synth_*` statistics without a forward
    pass), or None where the sample was not exactly those tokens (cut, run on, or tokenised
    differently): then the scorer computes them."""
    if generation.end_id is None or generation.end_id != tokenizer.eos_token_id:
        return None
    ids = tokenizer(synth_completion(example.problem, example.solution, chat), add_special_tokens=False)["input_ids"]
    if ids != generation.token_ids:
        return None
    nll = [-lp for lp in generation.logprobs + [generation.end_logprob]]
    return sum(nll) / len(nll), max(nll), len(nll)
