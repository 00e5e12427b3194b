"""The two prompt formats the model is used in: solving, and synthesising a similar problem.

The same model is both solver and generator in MASS. A base model without a chat template sees
plain text (the embedded model was pretrained on exactly these strings); a model with a chat
template gets the same request as a user message, and its reply is parsed the same way.

    solve:      "Problem: {T}\\nSolution:"                      -> " {worked solution with \\boxed{}}"
    synthesise: "Problem: {T}\\n{SYNTH_INSTRUCTION}\\nNew problem:" -> " {p}\\nSolution: {a}"
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mass.checker import extract_boxed

SYNTH_INSTRUCTION = "Write a new problem similar to this one, then solve it."
CHAT_SOLVE_SUFFIX = "Please reason step by step, and put your final answer within \\boxed{}."
CHAT_SYNTH_FORMAT = ("Reply in exactly this format:\nNew problem: <the new problem>\nSolution: <its worked solution, "
                     "ending with the final answer in \\boxed{}>")


def solve_prompt(problem: str, chat_template: bool = False) -> str | list[dict[str, str]]:
    """The solving prompt: a plain string, or chat messages for a model with a chat template."""
    if chat_template:
        return [{"role": "user", "content": f"{problem}\n{CHAT_SOLVE_SUFFIX}"}]
    return f"Problem: {problem}\nSolution:"


def synth_prompt(problem: str, chat_template: bool = False) -> str | list[dict[str, str]]:
    """The synthesis prompt: ask for one new similar problem with its worked solution."""
    if chat_template:
        return [{"role": "user", "content": f"Problem: {problem}\n{SYNTH_INSTRUCTION}\n{CHAT_SYNTH_FORMAT}"}]
    return f"Problem: {problem}\n{SYNTH_INSTRUCTION}\nNew problem:"


def solve_document(problem: str, solution: str) -> tuple[str, str]:
    """(prompt, completion) of a solving example, as in pretraining and in the inner SFT step."""
    return solve_prompt(problem), f" {solution}"


def synth_completion(new_problem: str, new_solution: str, chat_template: bool = False) -> str:
    """What the generator writes after the synthesis prompt (the reply, for a chat model)."""
    if chat_template:
        return f"New problem: {new_problem}\nSolution: {new_solution}"
    return f" {new_problem}\nSolution: {new_solution}"


def synth_document(problem: str, new_problem: str, new_solution: str) -> tuple[str, str]:
    """(prompt, completion) of a synthesis example, as in pretraining."""
    return synth_prompt(problem), synth_completion(new_problem, new_solution)


@dataclass(frozen=True)
class SynthExample:
    problem: str  # p_i
    solution: str  # a_i: the worked answer, ending in \boxed{}
    answer: str  # the content of its last \boxed{}


_NEW = re.compile(r"^\s*(?:New problem:)?\s*(?P<p>.+?)\s*\n\s*Solution:\s*(?P<s>.+?)\s*$", re.S)


def parse_synthesised(completion: str) -> SynthExample | None:
    """Parse a generated "p\\nSolution: a" completion; None if it is not usable training data.

    Usable means: a non-empty problem, a solution on the following line that ends in a
    \\boxed{} answer, and no second "Problem:"/"New problem:" (run-on generations are cut there).
    """
    text = re.split(r"\n\s*(?:New problem|Problem):", completion, maxsplit=1)[0]
    m = _NEW.match(text)
    if m is None:
        return None
    problem, solution = m.group("p").strip(), m.group("s").strip()
    answer = extract_boxed(solution)
    if not problem or not answer or "Solution:" in problem:
        return None
    return SynthExample(problem=problem, solution=solution, answer=answer)
