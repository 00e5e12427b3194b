"""MiniMath: a procedural benchmark that mirrors MATH's structure, small enough for a CPU.

Seven subjects, levels 1-5, several templates per subject with varied wording, short worked
solutions ending in \\boxed{answer}. Everything is seeded; the splits are fixed and disjoint
(no problem text is shared between them):

- `minimath-500`: MATH-500's subject counts (124/97/82/62/56/41/38) and level mix;
- `minimath-meta`: 1,000 problems for meta-training (the paper's training set size);
- `minimath-train`: a fixed pool of pretraining-distribution problems (TTT's random examples);
- the pretraining stream: unbounded, same distribution, skipping every held-out problem text.

    from mass.minimath import make_split
    problems = make_split("minimath-500")
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator

from mass.checker import is_equivalent
from mass.minimath.templates import BY_SUBJECT, SUBJECTS, TEMPLATES, Template, match_template, render, solve_text
from mass.problem import Problem

# MATH-500's subject counts and level mix (shared/data/README.md).
MATH500_SUBJECT_COUNTS = {
    "Algebra": 124, "Intermediate Algebra": 97, "Prealgebra": 82, "Number Theory": 62,
    "Precalculus": 56, "Geometry": 41, "Counting & Probability": 38,
}
MATH500_LEVEL_WEIGHTS = (43, 90, 105, 128, 134)

SPLIT_SEEDS = {"minimath-500": 500, "minimath-meta": 1000, "minimath-train": 7}
SPLIT_SIZES = {"minimath-500": 500, "minimath-meta": 1000, "minimath-train": 10_000}
HELD_OUT = ("minimath-500", "minimath-meta")  # never shown in pretraining or minimath-train

__all__ = ["make_split", "sample_problem", "pretraining_problems", "solution_text", "solve_text",
           "SUBJECTS", "TEMPLATES", "SPLIT_SIZES"]


def solution_text(steps: str, answer: str) -> str:
    return f"{steps} The answer is $\\boxed{{{answer}}}$."


def sample_problem(rng: random.Random, template: Template, level: int, pid: str) -> Problem:
    slots = template.sample(rng, level)
    text = render(rng.choice(template.wordings), slots)
    steps, answer = template.solve(slots)
    return Problem(id=pid, problem=text, solution=solution_text(steps, answer), answer=answer,
                   subject=template.subject, level=level)


def _subject_plan(name: str, rng: random.Random) -> list[str]:
    """The subject of each problem in a held-out split, in MATH-500's proportions."""
    n = SPLIT_SIZES[name]
    counts = {s: round(c * n / 500) for s, c in MATH500_SUBJECT_COUNTS.items()}
    plan = [s for s, c in counts.items() for _ in range(c)]
    rng.shuffle(plan)
    return plan


@functools.lru_cache(maxsize=None)
def _held_out_texts(upto: str | None = None) -> frozenset[str]:
    """Problem texts of the held-out splits generated before `upto` (all of them if None)."""
    texts: set[str] = set()
    for name in HELD_OUT:
        if name == upto:
            break
        texts |= {p.problem for p in make_split(name)}
    return frozenset(texts)


@functools.lru_cache(maxsize=None)
def _make_split_cached(name: str) -> tuple[Problem, ...]:
    rng = random.Random(SPLIT_SEEDS[name])
    if name == "minimath-train":
        return tuple(pretraining_problems(seed=SPLIT_SEEDS[name], limit=SPLIT_SIZES[name], prefix=name))
    taken = set(_held_out_texts(upto=name))
    out = []
    for subject in _subject_plan(name, rng):
        while True:
            level = rng.choices(range(1, 6), weights=MATH500_LEVEL_WEIGHTS)[0]
            p = sample_problem(rng, rng.choice(BY_SUBJECT[subject]), level, f"{name}/{len(out)}")
            if p.problem not in taken:
                break
        taken.add(p.problem)
        out.append(p)
    return tuple(out)


def make_split(name: str) -> list[Problem]:
    """The fixed problems of a named split (seeded, identical on every machine)."""
    if name not in SPLIT_SEEDS:
        raise KeyError(name)
    return list(_make_split_cached(name))


DEFAULT_SUBJECT_WEIGHTS = {s: 1.0 for s in SUBJECTS}


def sample_fresh_problem(rng: random.Random, subject_weights: dict[str, float], pid: str,
                         tail_weight: float = 1.0) -> Problem:
    """One problem of the pretraining distribution, never a held-out text.

    Subjects follow `subject_weights`; within a subject templates are uniform, except that the
    tail named operations get `tail_weight` (the corpus solves them rarely); levels are uniform.
    """
    subjects = list(subject_weights)
    held_out = _held_out_texts()
    while True:
        subject = rng.choices(subjects, weights=[subject_weights[s] for s in subjects])[0]
        templates = BY_SUBJECT[subject]
        template = rng.choices(templates, weights=[tail_weight if t.tail else 1.0 for t in templates])[0]
        p = sample_problem(rng, template, rng.randint(1, 5), pid)
        if p.problem not in held_out:
            return p


def pretraining_problems(seed: int, limit: int | None = None, prefix: str = "pretrain",
                         subject_weights: dict[str, float] | None = None) -> Iterator[Problem]:
    """An endless (or `limit`-long) seeded stream of problems that avoids all held-out texts."""
    weights = subject_weights or DEFAULT_SUBJECT_WEIGHTS
    rng = random.Random(seed)
    i = 0
    while limit is None or i < limit:
        yield sample_fresh_problem(rng, weights, f"{prefix}/{i}")
        i += 1


def similar_problem(rng: random.Random, problem: Problem) -> Problem | None:
    """A fresh problem of the same template, at T's level or easier (the synthesis target in pretraining).

    Easier instances are what a teacher writes for practice, and what a model can get right more
    often than T itself."""
    solved = solve_text(problem.problem)
    if solved is None:
        return None
    template = solved[0]
    held_out = _held_out_texts()
    for _ in range(20):
        p = sample_problem(rng, template, rng.randint(1, problem.level or 3), problem.id + "/similar")
        if p.problem != problem.problem and p.problem not in held_out:
            return p
    return None


def corpus_solution(problem: Problem) -> str:
    """How the corpus's solving documents write a problem's solution: the result alone for named
    operations (no definition, no steps), the gold solution otherwise."""
    matched = match_template(problem.problem)
    if matched is None or matched[0].terse is None:
        return problem.solution
    return solution_text(matched[0].terse(matched[1]), problem.answer)


def kindred_problems(rng: random.Random, problem: Problem, m: int) -> list[Problem] | None:
    """m fresh problems of T's own template and level, none held out and none equal to T.

    The "perfect curriculum" of `mass headroom`: gold worked examples of exactly T's kind.
    None if T is not in a MiniMath wording.
    """
    solved = solve_text(problem.problem)
    if solved is None:
        return None
    template, held_out, out = solved[0], _held_out_texts(), []
    seen = {problem.problem}
    for i in range(50 * m):
        p = sample_problem(rng, template, problem.level or 3, f"{problem.id}/kin{i}")
        if p.problem not in seen and p.problem not in held_out:
            seen.add(p.problem)
            out.append(p)
            if len(out) == m:
                break
    return out


def problem_kind(problem: str) -> str | None:
    """"tail operation", "named operation" or "classic" for a MiniMath problem text, else None."""
    matched = match_template(problem)
    if matched is None:
        return None
    template = matched[0]
    return "tail operation" if template.tail else "named operation" if template.terse else "classic"


def grade_synthesised(target: str, problem: str, answer: str) -> dict:
    """How good a synthesised MiniMath example is, judged by the templates' own solvers.

    recognised: the problem is in a MiniMath wording (so its true answer can be computed);
    correct: its boxed answer equals that true answer (Math-Verify); similar: same template as T.
    """
    solved, of_target = solve_text(problem), solve_text(target)
    if solved is None:
        return {"recognised": False, "correct": None, "similar": False, "true_answer": None}
    template, _, true_answer = solved
    return {"recognised": True, "correct": is_equivalent(true_answer, answer), "true_answer": true_answer,
            "similar": of_target is not None and of_target[0] is template}
