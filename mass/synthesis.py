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

from mass.models import Rng, SamplingConfig, generate, uses_chat_template
from mass.prompts import SynthExample, parse_synthesised, synth_prompt


@dataclass
class Synthesis:
    completions: list[str]  # the m raw samples
    examples: list[SynthExample]  # the parseable ones, in sample order
    example_completions: list[str]  # the raw completion each example was parsed from
    n_dropped: int  # samples that did not parse


def synthesise(model, tokenizer, targets: list[str], m: int, sampling: SamplingConfig,
               rng: Rng = None) -> list[Synthesis]:
    """m synthesised (p_i, a_i) per target problem, parsed; one batched sampling call for all.
    `rng`: one torch.Generator for all samples, or a list of m per target, target-major (`models.generate`)."""
    chat = uses_chat_template(tokenizer)
    prompts = [synth_prompt(t, chat) for t in targets for _ in range(m)]
    completions = generate(model, tokenizer, prompts, sampling, rng)
    out = []
    for j in range(len(targets)):
        raw = completions[j * m : (j + 1) * m]
        parsed = [(parse_synthesised(c), c) for c in raw]
        kept = [(s, c) for s, c in parsed if s is not None]
        out.append(Synthesis(completions=raw, examples=[s for s, _ in kept],
                             example_completions=[c for _, c in kept], n_dropped=m - len(kept)))
    return out
