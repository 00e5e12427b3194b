import json

import pytest

from mass.cli import main
from mass.evaluate import EvalConfig, run, summarise
from mass.results import wilson_interval


def test_wilson_interval_reference_values():
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0


def test_summary_breakdowns():
    records = [
        {"subject": "Algebra", "level": 1, "correct": True, "seconds": 1.0},
        {"subject": "Algebra", "level": 2, "correct": False, "seconds": 3.0},
        {"subject": "Geometry", "level": 2, "correct": True, "seconds": 2.0},
    ]
    result = summarise(records, EvalConfig(), model_name="m", data="d")
    assert result["accuracy"] == pytest.approx(2 / 3) and result["n"] == 3
    assert result["by_subject"] == {"Algebra": {"accuracy": 0.5, "n": 2}, "Geometry": {"accuracy": 1.0, "n": 1}}
    assert result["by_level"]["2"] == {"accuracy": 0.5, "n": 2}
    assert result["seconds_per_problem"] == pytest.approx(2.0)


def test_eval_tiny_model_on_shared_math500(tiny_model_dir, shared_data, tmp_path, capsys):
    out = tmp_path / "r.json"
    code = main(["eval", "--method", "base", "--model", str(tiny_model_dir), "--data",
                 str(shared_data / "math500_test.jsonl"), "--limit", "5", "--out", str(out),
                 "sampling.max_new_tokens=8"])
    assert code == 0
    result = json.loads(out.read_text())
    for key in ("method", "model", "data", "n", "accuracy", "ci95", "by_subject", "by_level",
                "seconds_per_problem", "records"):
        assert key in result
    assert result["n"] == 5 and len(result["records"]) == 5
    assert set(result["records"][0]) >= {"id", "subject", "level", "gold", "prediction", "correct", "generated"}
    assert result["records"][0]["id"] == "test/precalculus/807.json"
    assert "accuracy" in capsys.readouterr().out


def test_gold_solutions_score_100_percent(monkeypatch, tmp_path):
    """The harness grades a perfect solver as perfect: the method returns the gold solutions."""
    import mass.methods.base as base

    monkeypatch.setattr(base, "answer", lambda problems, ctx: [{"generated": p.solution} for p in problems])
    result = run(EvalConfig(data="minimath-500", limit=40, out=str(tmp_path / "gold.json")))
    assert result["accuracy"] == 1.0 and sum(v["n"] for v in result["by_subject"].values()) == 40


@pytest.mark.parametrize("args, message", [
    (["--data", "nope.jsonl"], "data file not found"),
    (["--data", "minimath-5000"], "unknown data 'minimath-5000'"),
    (["--method", "magic"], "unknown method 'magic'"),
    (["sampling.temprature=1"], "unknown config key 'sampling.temprature'"),
    (["--limit", "0"], "limit must be a positive number"),
    (["--method", "base", "adapt.lr=2"], "--method base does not use adapt: leave it out, it would be ignored"),
    (["--method", "mass", "lora.rank=4", "train_data=x"], "--method mass does not use lora, train_data"),
    (["--method", "ttss", "--checkpoint", "x"], "--method ttss does not use checkpoint"),
])
def test_bad_input_gives_one_error_line_and_no_results(tmp_path, capsys, args, message):
    out = tmp_path / "r.json"
    assert main(["eval", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]
    assert not out.exists()


def test_bad_jsonl_line_leaves_no_results(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text('{"problem": "p", "answer": "1"}\n{oops\n')
    out = tmp_path / "r.json"
    assert main(["eval", "--data", str(data), "--out", str(out)]) == 2
    assert "d.jsonl:2: not valid JSON" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_torchrun_shards_and_merges_to_the_single_process_result(tmp_path):
    import os
    import subprocess
    import sys

    single, multi = tmp_path / "single.json", tmp_path / "multi.json"
    common = ["eval", "--method", "base", "--data", "minimath-500", "--limit", "7", "sampling.max_new_tokens=100"]
    assert main([*common, "--out", str(single)]) == 0
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
                    "-m", "mass", *common, "--out", str(multi)], check=True, env=env, capture_output=True, timeout=600)
    a, b = json.loads(single.read_text()), json.loads(multi.read_text())
    assert b["world_size"] == 2 and b["n"] == a["n"] == 7
    assert [r["id"] for r in a["records"]] == [r["id"] for r in b["records"]]
    assert [r["generated"] for r in a["records"]] == [r["generated"] for r in b["records"]]
    assert a["accuracy"] == b["accuracy"] and a["by_subject"] == b["by_subject"]


def test_output_is_quiet_unless_verbose(tmp_path, capsys):
    """Library warnings and weight-loading bars are hidden; -v shows them (the embedded model's
    loading prints a "Loading weights" bar in transformers 5)."""
    import warnings

    args = ["eval", "--limit", "1", "--out", str(tmp_path / "r.json"), "sampling.max_new_tokens=4"]
    with warnings.catch_warnings():
        assert main(args) == 0
    quiet = capsys.readouterr().err
    assert "Loading weights" not in quiet and "Warning" not in quiet and "eval base" in quiet
    with warnings.catch_warnings():
        assert main([*args, "-v"]) == 0
    assert "Loading weights" in capsys.readouterr().err


def test_the_table_resets_what_a_method_does_not_read():
    from mass.adaptation import AdaptConfig
    from mass.evaluate import ignored_settings, only_used_settings

    shared = EvalConfig(method="base", adapt=AdaptConfig(lr=2.0), train_data="other")
    assert ignored_settings(shared) == ["adapt", "train_data"]
    cleaned = only_used_settings(shared)
    assert cleaned.adapt == AdaptConfig() and cleaned.train_data == "minimath-train" and not ignored_settings(cleaned)
    ttt = only_used_settings(EvalConfig(method="ttt", adapt=AdaptConfig(lr=2.0), train_data="other"))
    assert ttt.adapt.lr == 2.0 and ttt.train_data == "other"  # what ttt reads stays
