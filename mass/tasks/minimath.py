"""MiniMath tasks: the procedural benchmark's fixed splits (see mass/minimath)."""

from __future__ import annotations

from mass.minimath import make_split
from mass.tasks import Task


def _loader(split: str):
    def load(limit: int | None) -> list:
        problems = make_split(split)
        return problems if limit is None else problems[:limit]

    return load


TASKS = {
    "minimath-500": Task("minimath-500", _loader("minimath-500"), "MiniMath test: MATH-500's subject and level mix"),
    "minimath-meta": Task("minimath-meta", _loader("minimath-meta"), "MiniMath meta-training set: 1,000 problems"),
    "minimath-train": Task("minimath-train", _loader("minimath-train"), "MiniMath pretraining-distribution pool"),
}
