"""MiniMath tasks: the procedural benchmark's fixed splits (see mass/minimath)."""

from __future__ import annotations

from mass.minimath import make_split
from mass.tasks import Task


# The last DEV_SIZE problems of minimath-meta: meta-training and Solver GRPO hold them out (their
# default `heldout`), so inference settings are tuned on them, never on minimath-500.
DEV_SIZE = 100


def _loader(split: str, last: int | None = None):
    def load(limit: int | None) -> list:
        problems = make_split(split)
        if last is not None:
            problems = problems[-last:]
        return problems if limit is None else problems[:limit]

    return load


TASKS = {
    "minimath-500": Task("minimath-500", _loader("minimath-500")),  # test: MATH-500's subject and level mix
    "minimath-meta": Task("minimath-meta", _loader("minimath-meta")),  # meta-training set: 1,000 problems
    # the last 100 minimath-meta problems, held out of meta-training: tune inference settings here
    "minimath-dev": Task("minimath-dev", _loader("minimath-meta", last=DEV_SIZE)),
    "minimath-train": Task("minimath-train", _loader("minimath-train")),  # the pretraining-distribution pool
}
