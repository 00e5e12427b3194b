"""`mass headroom`: selection of problems, the curriculum's examples, the grid, and the outputs."""

import json
import random
import re

from mass.cli import main
from mass.headroom import nearest_problems, select_problems
from mass.minimath import kindred_problems, make_split, solve_text
from mass.minimath.templates import NAMED_OPERATIONS
from mass.problem import Problem


def _p(i, subject, level, text):
    return Problem(id=str(i), problem=text, solution="s", answer="1", subject=subject, level=level)


def test_select_problems_caps_each_subject_in_task_order():
    problems = [_p(i, "AB"[i % 2], 1, f"q{i}") for i in range(10)]
    assert [p.id for p in select_problems(problems, 2, None)] == ["0", "1", "2", "3"]
    assert [p.id for p in select_problems(problems, 0, 3)] == ["0", "1", "2"]


def test_nearest_problems_prefer_same_subject_and_level_then_shared_words():
    target = _p(0, "Algebra", 3, "Find the slope of the line through two points")
    pool = [_p(1, "Geometry", 3, "Find the slope of the line through two points"),
            _p(2, "Algebra", 3, "Compute a sum"),
            _p(3, "Algebra", 3, "What is the slope of a line through two points"),
            _p(4, "Algebra", 2, "Find the slope of the line through two points")]
    assert [p.id for p in nearest_problems(target, pool, 3)] == ["3", "2", "4"]


def test_kindred_problems_share_template_and_level_and_are_not_held_out():
    held_out = {p.problem for p in make_split("minimath-500") + make_split("minimath-meta")}
    for target in make_split("minimath-500")[:30]:
        kin = kindred_problems(random.Random(target.id), target, 6)
        template = solve_text(target.problem)[0]
        assert len(kin) == 6 and len({k.problem for k in kin}) == 6
        assert all(solve_text(k.problem)[0] is template and k.level == target.level for k in kin)
        assert not {k.problem for k in kin} & held_out
    assert kindred_problems(random.Random(0), _p(0, "Algebra", 1, "Not a MiniMath problem"), 3) is None


def test_headroom_on_minimath_measures_every_condition_and_writes_table_and_plot(tiny_model_dir, tmp_path):
    out = tmp_path / "hr"
    assert main(["headroom", "--model", str(tiny_model_dir), "--per-subject", "1", "--limit", "3", "lrs=[0.5,2.0]",
                 "steps=[1,2]", "m=2", "synth.max_new_tokens=60", "sampling.max_new_tokens=40", f"out={out}"]) == 0
    result = json.loads((out / "headroom.json").read_text())
    assert result["n"] == 3 and (out / "headroom.png").stat().st_size > 1000
    for condition in ("memorise", "curriculum", "ttss", "ttss-right"):
        grid = result["conditions"][condition]
        assert set(grid) == {"1", "2"} and set(grid["1"]) == {"0.5", "2.0"}
        best = result["best"][condition]
        assert best["accuracy"] == max(v["accuracy"] for k in grid.values() for v in k.values())
    for r in result["records"]:
        assert r["n_examples"]["memorise"] == 1 and r["n_examples"]["curriculum"] == 2
        assert r["n_examples"]["ttss-right"] <= r["n_examples"]["ttss"] <= 2
        assert r["synthesis"]["right"] == r["n_examples"]["ttss-right"]
    table = (out / "headroom.md").read_text()
    assert "| memorise |" in table and "Best of each condition" in table


def test_headroom_off_minimath_takes_the_curriculum_from_train_data(tiny_model_dir, tmp_path, shared_data):
    out = tmp_path / "hr"
    assert main(["headroom", "--model", str(tiny_model_dir), "--data", str(shared_data / "math500_test.jsonl"),
                 "--train-data", str(shared_data / "math_train.jsonl"), "--per-subject", "0", "--limit", "2",
                 "lrs=[1.0]", "m=2", "synth.max_new_tokens=40", "sampling.max_new_tokens=30", f"out={out}"]) == 0
    result = json.loads((out / "headroom.json").read_text())
    assert result["conditions"]["ttss-right"] is None and result["conditions"]["curriculum"]["1"]["1.0"]["n"] == 2
    assert "Not measurable on this task: ttss-right" in (out / "headroom.md").read_text()


def test_headroom_rejects_unknown_conditions(capsys):
    assert main(["headroom", "conditions=[base,oracle]"]) == 2
    assert "conditions must be" in capsys.readouterr().err


def test_named_operations_are_worked_out_in_gold_but_answered_in_one_line_in_the_corpus():
    from mass.minimath import corpus_solution, sample_problem

    rng = random.Random(0)
    for template in NAMED_OPERATIONS:
        p = sample_problem(rng, template, 3, "x")
        corpus = corpus_solution(p)
        assert p.solution.startswith("By definition") and p.solution.count("=") >= 3  # worked out
        x, y = re.findall(r"\((-?\d+), (-?\d+)\)", p.problem)[0]
        assert corpus == f"$\\operatorname{{{template.name[3:]}}}({x}, {y}) = {p.answer}$. The answer is $\\boxed{{{p.answer}}}$."
    old = make_split("minimath-500")
    plain = next(p for p in old if solve_text(p.problem)[0].terse is None)
    assert corpus_solution(plain) == plain.solution


def test_tail_operations_are_rarely_solved_but_often_synthesised_in_the_corpus():
    from mass.pretrain import PretrainConfig, corpus_documents

    docs = corpus_documents(3, 3000, PretrainConfig(tail_solve_weight=0.02))
    tail = {t.name for t in NAMED_OPERATIONS if t.tail}

    def is_tail(prompt):
        solved = solve_text(prompt.split("\n")[0].removeprefix("Problem: "))
        return solved is not None and solved[0].name in tail

    solving = sum(is_tail(p) for p, _ in docs if "New problem" not in p)
    synthesis = sum(is_tail(p) for p, _ in docs if "New problem" in p)
    assert synthesis > 5 * solving
