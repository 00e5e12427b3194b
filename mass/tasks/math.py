"""MATH-style tasks: MATH-500 and the MATH train split (PRM800K), from the hub or a JSONL file.

Rows have `problem`, `solution` (with a final \\boxed{}), `answer`, `subject`, `level` and
`unique_id`. From the hub (`datasets`, needs the network):
  math500    -> HuggingFaceH4/MATH-500, split test
  math-train -> DigitalLearningGmbH/MATH-lighteval, split train (the 7,500 original MATH train problems;
                the PRM800K train split of 12,000, as in ../shared/data/math_train.jsonl, is a local file)
Offline, pass the JSONL path instead, e.g. `--data ../shared/data/math500_test.jsonl`.
"""

from __future__ import annotations

from mass.checker import extract_boxed
from mass.errors import MassError
from mass.tasks import EmptyField, Task, require
from mass.problem import Problem


def problem_from_math(row: dict, default_id: str, where: str) -> Problem:
    problem = require(row, "problem", where)
    solution = row.get("solution")
    answer = row.get("answer")
    if answer is None and solution is not None:
        answer = extract_boxed(str(solution))
    if answer is None:
        raise MassError(f"{where}: missing field 'answer' (and no \\boxed{{}} answer in 'solution')")
    if not str(answer).strip():
        raise EmptyField(f"{where}: field 'answer' is empty")
    level = row.get("level")
    if isinstance(level, str):  # the original MATH files say "Level 3"
        level = int(level.split()[-1]) if level.split() and level.split()[-1].isdigit() else None
    return Problem(id=str(row.get("unique_id", row.get("id", default_id))), problem=problem,
                   solution=None if solution is None else str(solution), answer=str(answer),
                   subject=str(row.get("subject") or row.get("type") or ""), level=level)


def load_hub(repo: str, split: str, limit: int | None) -> list[Problem]:
    try:
        import datasets

        rows = datasets.load_dataset(repo, split=split)
    except Exception as e:  # no network, no such repo: one clear line, not a deep traceback
        raise MassError(f"could not load '{repo}' from the Hugging Face hub ({type(e).__name__}); "
                        f"offline, pass a local JSONL path with --data instead") from None
    rows = rows if limit is None else rows.select(range(min(limit, len(rows))))
    return [problem_from_math(dict(r), default_id=f"{repo}/{i}", where=f"{repo}[{i}]") for i, r in enumerate(rows)]


TASKS = {
    "math500": Task("math500", lambda limit: load_hub("HuggingFaceH4/MATH-500", "test", limit)),
    "math-train": Task("math-train", lambda limit: load_hub("DigitalLearningGmbH/MATH-lighteval", "train", limit)),
}
