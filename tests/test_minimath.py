import hashlib
import itertools
import random
import subprocess
import sys
from collections import Counter

import pytest

from mass.checker import extract_boxed, is_equivalent
from mass.minimath import SUBJECTS, TEMPLATES, make_split, pretraining_problems, sample_problem, solve_text
from mass.minimath.templates import BY_SUBJECT


def _digest(name):
    return hashlib.sha256("\n".join(p.problem + p.solution for p in make_split(name)).encode()).hexdigest()


def test_splits_are_reproducible_across_processes():
    code = "from mass.minimath import make_split; import hashlib; print(hashlib.sha256('\\n'.join(" \
           "p.problem + p.solution for p in make_split('minimath-500')).encode()).hexdigest())"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == _digest("minimath-500")


def test_split_sizes_and_math500_subject_counts():
    test = make_split("minimath-500")
    assert len(test) == 500 and len(make_split("minimath-meta")) == 1000
    assert Counter(p.subject for p in test) == {
        "Algebra": 124, "Intermediate Algebra": 97, "Prealgebra": 82, "Number Theory": 62,
        "Precalculus": 56, "Geometry": 41, "Counting & Probability": 38}
    assert set(Counter(p.level for p in test)) == {1, 2, 3, 4, 5}


def test_splits_share_no_problem_text():
    test = {p.problem for p in make_split("minimath-500")}
    meta = {p.problem for p in make_split("minimath-meta")}
    train = {p.problem for p in make_split("minimath-train")}
    stream = {p.problem for p in itertools.islice(pretraining_problems(seed=123), 20000)}
    assert len(test) == 500 and len(meta) == 1000  # no duplicates inside a split either
    assert not test & meta and not test & train and not meta & train
    assert not (test | meta) & stream


def test_every_template_has_several_wordings_and_all_subjects_are_covered():
    assert {t.subject for t in TEMPLATES} == set(SUBJECTS)
    assert all(len(BY_SUBJECT[s]) >= 3 for s in SUBJECTS)
    assert all(len(t.wordings) >= 2 for t in TEMPLATES)


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.name)
def test_solutions_are_short_boxed_and_regradable(template):
    rng = random.Random(template.name)
    for level in range(1, 6):
        for _ in range(20):
            p = sample_problem(rng, template, level, "x")
            assert len(p.problem) + len(p.solution) < 450
            assert extract_boxed(p.solution) == p.answer
            solved = solve_text(p.problem)  # the text alone determines the answer
            assert solved is not None and solved[0] is template and solved[2] == p.answer


def test_gold_answers_pass_the_checker():
    for p in make_split("minimath-500")[:60]:
        assert is_equivalent(p.answer, extract_boxed(p.solution))


def test_solve_text_rejects_foreign_or_invalid_text():
    assert solve_text("What is the meaning of life?") is None
    assert solve_text("What is the remainder when $10$ is divided by $0$?") is None
    assert solve_text("How many positive divisors does $12$ have?")[2] == "6"
