"""The one record every task produces."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    id: str
    problem: str  # the question shown to the model
    solution: str | None  # the gold worked solution, when the dataset has one
    answer: str  # the gold final answer (what the checker compares against)
    subject: str  # "" when the dataset has no subjects
    level: int | None  # 1-5 for MATH-style data, None when unknown
