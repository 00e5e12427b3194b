import json

import pytest

from mass.errors import MassError
from mass.tasks import load_task, registry


def test_registry_names():
    assert {"minimath-500", "minimath-meta", "minimath-train", "math500", "math-train", "gsm8k"} <= set(registry())


def test_shared_math500_jsonl(shared_data):
    problems = load_task(str(shared_data / "math500_test.jsonl")).load(None)
    assert len(problems) == 500
    assert problems[0].subject == "Precalculus" and problems[0].level == 2
    assert problems[0].answer == "\\left( 3, \\frac{\\pi}{2} \\right)"


def test_shared_gsm8k_jsonl(shared_data):
    problems = load_task(str(shared_data / "gsm8k_test.jsonl")).load(3)
    assert len(problems) == 3 and problems[0].answer == "18"
    assert problems[0].solution.endswith("\\boxed{18}$.")


def test_shared_math_train_has_null_levels_and_two_empty_answers(shared_data, capsys):
    problems = load_task(str(shared_data / "math_train.jsonl")).load(None)
    assert len(problems) == 11998 and sum(p.level is None for p in problems) == 2
    assert "skipped 2 problem(s) with an empty field: " in capsys.readouterr().err  # \\boxed{} in the source


def test_prompt_rendering_and_extraction():
    task = load_task("minimath-500")
    p = task.load(1)[0]
    assert task.render_prompt(p, False) == f"Problem: {p.problem}\nSolution:"
    assert task.extract_answer(p.solution) == p.answer


@pytest.mark.parametrize("content, message", [
    ('{"problem": "x", "answer": "1"}\nnot json\n', "bad.jsonl:2: not valid JSON"),
    ('{"answer": "1"}\n', "bad.jsonl:1: missing field 'problem'"),
    ('{"problem": "x", "solution": "no box"}\n', "bad.jsonl:1: missing field 'answer'"),
    ('{"question": "x", "answer": "no hashes"}\n', "has no '#### <number>'"),
    ('[1, 2]\n', "expected a JSON object"),
    ('\n', "no problems"),
])
def test_bad_jsonl_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(MassError, match=message.replace("(", r"\(").replace("*", r"\*")):
        load_task(str(path)).load(None)


def test_non_utf8_jsonl_names_the_line_and_byte(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"problem": "x", "answer": "1"}\n{"problem": "What is 2+2?\xff\xfe", "answer": "4"}\n')
    with pytest.raises(MassError, match=r"bad.jsonl:2: not UTF-8 text \(byte 0xff at offset 25\)"):
        load_task(str(path)).load(None)


def test_rows_with_an_empty_problem_or_answer_are_skipped_with_one_warning(tmp_path, capsys):
    path = tmp_path / "d.jsonl"
    path.write_text('{"problem": " \\n ", "answer": "1"}\n{"problem": "x", "answer": "2"}\n'
                    '{"problem": "y", "answer": " "}\n{"question": "", "answer": "#### 3"}\n')
    assert [p.answer for p in load_task(str(path)).load(None)] == ["2"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: skipped 3 problem(s) with an empty field")
    assert "d.jsonl:1: field 'problem' is empty" in err[0] and "d.jsonl:3: field 'answer' is empty" in err[0]
    path.write_text('{"problem": "", "answer": "1"}\n')
    with pytest.raises(MassError, match="no problems"):
        load_task(str(path)).load(None)


def test_unknown_data_and_missing_file():
    with pytest.raises(MassError, match="unknown data 'minimath-5000'"):
        load_task("minimath-5000")
    with pytest.raises(MassError, match="data file not found"):
        load_task("/nonexistent/file.jsonl")


def test_limit(tmp_path):
    path = tmp_path / "ok.jsonl"
    path.write_text("".join(json.dumps({"problem": f"p{i}", "answer": str(i)}) + "\n" for i in range(5)))
    assert [p.answer for p in load_task(str(path)).load(2)] == ["0", "1"]
