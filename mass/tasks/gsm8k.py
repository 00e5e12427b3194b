"""GSM8K: grade-school word problems; gold answers follow '####' (openai/gsm8k, config 'main').

The model is asked for a \\boxed{} answer like every other task; a '#### n' line is accepted too.
Offline, pass the JSONL path, e.g. `--data ../shared/data/gsm8k_test.jsonl`.
"""

from __future__ import annotations

from mass.checker import extract_hashes
from mass.errors import MassError
from mass.tasks import Task, require
from mass.problem import Problem


def problem_from_gsm8k(row: dict, default_id: str, where: str) -> Problem:
    question = require(row, "question", where)
    solution = require(row, "answer", where)
    answer = extract_hashes(solution)
    if answer is None:
        raise MassError(f"{where}: the 'answer' field has no '#### <number>' final answer")
    worked = solution.rsplit("####", 1)[0].strip() + f" The answer is $\\boxed{{{answer}}}$."
    return Problem(id=str(row.get("id", default_id)), problem=question, solution=worked, answer=answer,
                   subject="", level=None)


def load_hub(split: str, limit: int | None) -> list[Problem]:
    try:
        import datasets

        rows = datasets.load_dataset("openai/gsm8k", "main", split=split)
    except Exception as e:
        raise MassError(f"could not load 'openai/gsm8k' from the Hugging Face hub ({type(e).__name__}); "
                        f"offline, pass a local JSONL path with --data instead") from None
    rows = rows if limit is None else rows.select(range(min(limit, len(rows))))
    return [problem_from_gsm8k(dict(r), default_id=f"gsm8k/{i}", where=f"openai/gsm8k[{i}]") for i, r in enumerate(rows)]


TASKS = {
    "gsm8k": Task("gsm8k", lambda limit: load_hub("test", limit)),  # openai/gsm8k from the hub
    "gsm8k-train": Task("gsm8k-train", lambda limit: load_hub("train", limit)),
}
