"""Benchmarks. A task owns its loading, prompt rendering and answer extraction.

Adding a benchmark is adding one file in this folder that defines `TASKS = {name: Task(...)}`
and listing the module in `_MODULES`. `load_task` also takes a path to a local JSONL file in
the MATH format (problem, solution/answer, subject, level) or the GSM8K format (question, answer).

    task = load_task("minimath-500"); problems = task.load(limit=20)
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mass.checker import extract_final_answer, is_equivalent
from mass.errors import MassError
from mass.prompts import solve_prompt
from mass.problem import Problem

_MODULES = ("mass.tasks.minimath", "mass.tasks.math", "mass.tasks.gsm8k")


@dataclass(frozen=True)
class Task:
    name: str
    load: Callable[[int | None], list[Problem]]  # limit -> the first `limit` problems (all if None)
    render_prompt: Callable[[Problem, bool], object] = field(default=lambda p, chat: solve_prompt(p.problem, chat))
    extract_answer: Callable[[str], str | None] = extract_final_answer

    def reward(self, problem: Problem, completions: list[str]) -> list[float]:
        """The verifier's reward of each completion: 1.0 when its extracted answer equals the
        gold answer (mass.checker), else 0.0. Training (GRPO, MASS's verifier outer loss) and
        held-out accuracy use it, so a task's own answer format holds there too."""
        return [float(is_equivalent(problem.answer, self.extract_answer(c))) for c in completions]


def registry() -> dict[str, Task]:
    tasks: dict[str, Task] = {}
    for module in _MODULES:
        tasks.update(importlib.import_module(module).TASKS)
    return tasks


def load_task(name_or_path: str) -> Task:
    """A registered task by name, or a local `.jsonl` file (MATH or GSM8K fields)."""
    tasks = registry()
    if name_or_path in tasks:
        return tasks[name_or_path]
    path = Path(name_or_path)
    if path.suffix == ".jsonl" or path.exists():
        if not path.is_file():
            raise MassError(f"data file not found: {path}")
        return Task(name=str(path), load=lambda limit: read_jsonl_problems(path, limit))
    raise MassError(f"unknown data '{name_or_path}': use one of {', '.join(sorted(tasks))}, or a path to a .jsonl file")


def read_jsonl_problems(path: Path, limit: int | None) -> list[Problem]:
    """Problems from a JSONL file; each line must be a JSON object in MATH or GSM8K form."""
    from mass.tasks.gsm8k import problem_from_gsm8k
    from mass.tasks.math import problem_from_math

    problems, skipped = [], []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = decode_utf8(raw, f"{path}:{lineno}")
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise MassError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise MassError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            where = f"{path}:{lineno}"
            read = problem_from_gsm8k if "question" in row else problem_from_math
            try:
                problems.append(read(row, default_id=f"{path.stem}/{len(problems)}", where=where))
            except EmptyField as e:  # a row that cannot be posed or graded (MATH's train set has one)
                skipped.append(str(e))
                continue
            if limit is not None and len(problems) >= limit:
                break
    if skipped:
        print(f"warning: skipped {len(skipped)} problem(s) with an empty field: {'; '.join(skipped[:3])}"
              f"{' ...' if len(skipped) > 3 else ''}", file=sys.stderr)
    if not problems:
        raise MassError(f"{path}: no problems in the file")
    return problems


def decode_utf8(raw: bytes, where: str) -> str:
    """Bytes as UTF-8 text, or a clear error naming where and which byte is wrong."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MassError(f"{where}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})") from None


class EmptyField(MassError):
    """A data row whose problem or answer is empty: skipped with a warning, not fatal."""


def require(row: dict, key: str, where: str) -> str:
    """A required string field of a data row, or a clear error naming the line."""
    if key not in row or row[key] is None:
        raise MassError(f"{where}: missing field '{key}' (have: {', '.join(row) or 'none'})")
    if not str(row[key]).strip():
        raise EmptyField(f"{where}: field '{key}' is empty")
    return str(row[key])
