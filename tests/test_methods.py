"""The baselines (TTT, Solver GRPO), `mass table`, and the real-model path for every method."""

import json

import pytest

from mass.cli import main
from mass.methods import METHODS
from mass.methods.ttt import training_examples
from mass.tasks import load_task
from mass.errors import MassError
from mass.adaptation import AdaptConfig
from mass.evaluate import EvalConfig
from mass.table import TRAINED

FAST_EVAL = ["adapt.m=2", "adapt.synth.max_new_tokens=100", "sampling.max_new_tokens=100"]
TINY_TRAIN = ["meta_train.steps=1", "meta_train.batch_size=1", "meta_train.heldout=2", "meta_train.eval_every=0",
              "meta_train.adapt.m=2", "meta_train.adapt.synth.max_new_tokens=80", "meta_train.k=2",
              "meta_train.solve_sampling.max_new_tokens=60", "grpo.eval_every=0",
              "grpo.solve_sampling.max_new_tokens=60"]  # grpo's budget is meta_train's (mass/budget.py)


def test_ttt_draws_m_distinct_gold_examples_reproducibly():
    pool = load_task("minimath-train").load(200)
    a = training_examples(pool, 6, "0:minimath-500/3")
    assert a == training_examples(pool, 6, "0:minimath-500/3")
    assert a != training_examples(pool, 6, "0:minimath-500/4")
    assert len({e.problem for e in a}) == 6
    by_text = {p.problem: p for p in pool}
    assert all(by_text[e.problem].solution == e.solution and "\\boxed" in e.solution for e in a)


@pytest.mark.slow
def test_ttt_adapts_on_training_problems_unrelated_to_the_target(tmp_path):
    out = tmp_path / "ttt.json"
    assert main(["eval", "--method", "ttt", "--limit", "2", "--out", str(out), *FAST_EVAL]) == 0
    records = json.loads(out.read_text())["records"]
    train_texts = {p.problem for p in load_task("minimath-train").load(None)}
    for r in records:
        assert r["adapted"] and r["n_parsed"] == 2
        assert all(e["problem"] in train_texts for e in r["examples"])
        assert [e["weight"] for e in r["examples"]] == [0.5, 0.5]
    assert records[0]["examples"] != records[1]["examples"]


@pytest.mark.slow
def test_solver_grpo_trains_a_lora_and_answers_with_it(tmp_path):
    ckpt, out = tmp_path / "sg", tmp_path / "sg.json"
    assert main(["grpo", f"out={ckpt}", "steps=2", "batch_size=2", "k=4", "heldout=2", "eval_every=0",
                 "solve_sampling.max_new_tokens=80"]) == 0
    rows = [json.loads(line) for line in (ckpt / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2] and "heldout_acc" in rows[0] and "reward_mean" in rows[1]
    assert (ckpt / "adapter" / "adapter_model.safetensors").is_file() and not (ckpt / "scorer").exists()
    from safetensors.torch import load_file

    lora_b = [v for k, v in load_file(ckpt / "adapter" / "adapter_model.safetensors").items() if "lora_B" in k]
    assert any(v.abs().sum() > 0 for v in lora_b)  # zero-initialised; GRPO moved it
    assert main(["eval", "--method", "solver-grpo", "--checkpoint", str(ckpt), "--limit", "3", "--out", str(out),
                 "sampling.max_new_tokens=100"]) == 0
    assert json.loads(out.read_text())["n"] == 3


@pytest.mark.parametrize("method", ["solver-grpo", "mass", "mass-gold"])
def test_trained_methods_on_another_model_need_a_checkpoint_before_any_work(tmp_path, capsys, method):
    out = tmp_path / "r.json"
    assert main(["eval", "--method", method, "--model", str(tmp_path / "model"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--method {method} needs --checkpoint DIR for model" in err and "eval " not in err  # no progress bar
    assert not out.exists()


def test_trained_methods_on_the_embedded_model_default_to_the_shipped_checkpoints():
    from mass.checkpoint import SHIPPED_CHECKPOINTS
    from mass.evaluate import EvalConfig, with_checkpoint

    for method in ("solver-grpo", "mass", "mass-gold"):
        assert with_checkpoint(EvalConfig(method=method)).checkpoint == str(SHIPPED_CHECKPOINTS / method)
    assert with_checkpoint(EvalConfig(method="mass", checkpoint="mine")).checkpoint == "mine"
    assert with_checkpoint(EvalConfig(method="ttss")).checkpoint == ""


def test_table_uses_shipped_checkpoints_when_present_else_trains_into_out(tmp_path, monkeypatch):
    import mass.checkpoint
    import mass.table as table

    shipped = tmp_path / "shipped"
    (shipped / "mass").mkdir(parents=True)
    (shipped / "mass" / "mass.json").write_text(json.dumps({"model": ""}))
    monkeypatch.setattr(mass.checkpoint, "SHIPPED_CHECKPOINTS", shipped)
    cfg = table.TableConfig(out=str(tmp_path / "out"), train_missing=False)
    assert table.ensure_checkpoint("mass", cfg) == shipped / "mass"
    with pytest.raises(MassError, match=f"no checkpoint for mass-gold at {tmp_path / 'out' / 'checkpoints'}"):
        table.ensure_checkpoint("mass-gold", cfg)


@pytest.mark.slow
def test_table_train_only_trains_the_missing_checkpoint_and_evaluates_nothing(tmp_path):
    out = tmp_path / "table"
    ckpt = tmp_path / "solver-grpo"  # not the shipped one: a checkpoint that does not exist yet
    assert main(["table", "train_only=true", "methods=[base,solver-grpo]", f"out={out}",
                 f"checkpoints.solver_grpo={ckpt}", *TINY_TRAIN]) == 0
    assert json.loads((ckpt / "mass.json").read_text())["model"] == ""
    assert not (out / "table.md").exists() and not (out / "base.json").exists()


@pytest.mark.slow
def test_table_on_the_embedded_model_writes_every_file(tmp_path, monkeypatch):
    """`mass table` trains the three missing checkpoints (one step each), evaluates all six methods."""
    out = tmp_path / "table"
    ckpts = [f"checkpoints.{m.replace('-', '_')}={tmp_path / m}" for m in TRAINED]
    assert main(["table", "limit=3", f"out={out}", *ckpts, *TINY_TRAIN,
                 *[f"eval.{x}" for x in FAST_EVAL]]) == 0
    for name in ["table.md", "table.json", "gains_by_subject.png", "training_curves.png",
                 *[f"{m}.json" for m in METHODS]]:
        assert (out / name).is_file(), name
    table = json.loads((out / "table.json").read_text())
    assert [r["method"] for r in table["rows"]] == list(METHODS)
    for row in table["rows"]:
        result = json.loads((out / f"{row['method']}.json").read_text())
        assert row["accuracy"] == result["accuracy"] and result["n"] == 3
        assert result["config"]["seed"] == 0 and result["config"]["limit"] == 3
    md = (out / "table.md").read_text()
    assert "| MASS |" in md and "Δ vs Base" in md and "Command: `mass table" in md
    # a second run reuses every result made with the same settings: no method is evaluated again
    import mass.table as table_module

    made = {m: (out / f"{m}.json").read_bytes() for m in METHODS}
    monkeypatch.setattr(table_module, "run_eval", lambda cfg: pytest.fail(f"{cfg.method} was evaluated again"))
    assert main(["table", "limit=3", f"out={out}", "reuse=true", *ckpts, *TINY_TRAIN,
                 *[f"eval.{x}" for x in FAST_EVAL]]) == 0
    assert {m: (out / f"{m}.json").read_bytes() for m in METHODS} == made
    assert json.loads((out / "table.json").read_text())["rows"] == table["rows"]


@pytest.mark.slow
def test_real_model_path_every_method_on_math500(tiny_model_dir, shared_data, tmp_path):
    """A local Hugging Face Llama (random, tiny) through every method on 5 MATH-500 problems."""
    out = tmp_path / "table"
    train = shared_data / "math_train.jsonl"
    assert main(["table", f"--model={tiny_model_dir}", f"--data={shared_data / 'math500_test.jsonl'}", "limit=5",
                 f"out={out}", f"eval.train_data={train}", f"meta_train.data={train}",
                 *TINY_TRAIN, "eval.adapt.m=2", "eval.adapt.synth.max_new_tokens=24",
                 "eval.sampling.max_new_tokens=16"]) == 0
    for method in METHODS:
        result = json.loads((out / f"{method}.json").read_text())
        assert result["n"] == 5 and result["model"] == str(tiny_model_dir), method
        assert result["records"][0]["id"] == "test/precalculus/807.json"
    for method in TRAINED:
        assert json.loads((out / "checkpoints" / method / "mass.json").read_text())["model"] == str(tiny_model_dir)


def test_table_refuses_a_checkpoint_of_another_model(tmp_path, tiny_model_dir, capsys):
    ckpt = tmp_path / "embedded-mass"
    ckpt.mkdir()
    (ckpt / "mass.json").write_text(json.dumps({"model": "", "outer": "verifier"}))
    args = ["table", f"--model={tiny_model_dir}", "methods=[mass]", f"checkpoints.mass={ckpt}", f"out={tmp_path}"]
    assert main(args) == 2
    assert "was trained on model 'embedded'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["embedded-mass"]  # nothing trained or written


def test_table_rejects_unknown_methods(capsys):
    assert main(["table", "methods=[base,magic]"]) == 2
    assert "unknown method(s) magic" in capsys.readouterr().err



def _fake_result(method, correct_by_subject):
    records = [{"subject": s, "level": 1, "correct": c, "seconds": 0.5} for s, cs in correct_by_subject.items()
               for c in cs]
    from mass.evaluate import EvalConfig, summarise

    return summarise(records, EvalConfig(method=method), model_name="m", data="minimath-500")


def test_table_rows_markdown_and_figures(tmp_path):
    from mass.table import format_markdown, plot_gains_by_subject, plot_training_curves, table_rows

    base = _fake_result("base", {"Algebra": [True, False, False, False], "Geometry": [True, True]})
    mass = _fake_result("mass", {"Algebra": [True, True, False, False], "Geometry": [True, True]})
    rows = table_rows({"base": base, "mass": mass})
    assert rows[1]["delta_vs_base"] == pytest.approx(1 / 6) and rows[0]["delta_vs_base"] == 0.0
    md = format_markdown(rows, {"base": base, "mass": mass},
                         {"data": "minimath-500", "seed": 0, "command": "mass table", "commit": "abc",
                          "machine": "cpu", "processes": 1, "wall_seconds": 1.0, "checkpoints": {}})
    assert "| MASS | 66.7 |" in md and "+16.7" in md and "| Algebra | 4 | 25.0 | 50.0 |" in md
    plot_gains_by_subject(base, mass, tmp_path / "gains.png")
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("\n".join(json.dumps(r) for r in [
        {"step": 0, "heldout_gold_ce_before": 0.5, "heldout_gold_ce_after": 0.6},
        {"step": 1, "reward_after": 0.5}, {"step": 2, "reward_after": 0.7, "heldout_gold_ce_before": 0.5,
                                           "heldout_gold_ce_after": 0.4}]))
    plot_training_curves({"mass": metrics}, tmp_path / "curves.png")
    for png in ("gains.png", "curves.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("override, message", [
    ("eval.limit=3", "eval.limit (set limit)"),
    ("eval.model=x", "eval.model (set model)"),
    ("eval.checkpoint=x", "eval.checkpoint (set checkpoints.<method>)"),
    ("meta_train.out=x", "meta_train.out (set checkpoints.mass / checkpoints.mass_gold)"),
    ("grpo.model=y", "grpo.model (set model)"),
    ("grpo.steps=3", "grpo.steps (set meta_train.steps: Solver GRPO trains on MASS's budget)"),
    ("grpo.k=3", "grpo.k (set meta_train.adapt.m and meta_train.k"),
    ("eval.adapt.steps=3", "eval.adapt.steps (replaced by tuned.<method>.steps for ttt, ttss, mass-gold, mass"),
])
def test_table_settings_it_would_overwrite_are_errors_before_any_work(tmp_path, capsys, override, message):
    assert main(["table", override, f"out={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the table sets these itself") and message in err[0]
    assert not any(tmp_path.iterdir())


def test_table_accepts_an_adapt_setting_no_tuned_value_replaces():
    from mass.evaluate import Tuning, Tunings
    from mass.table import TableConfig

    cfg = TableConfig(eval=EvalConfig(adapt=AdaptConfig(m=4)))  # no tuned m: it applies to every method
    assert cfg.eval.adapt.m == 4
    TableConfig(methods=["ttss"], eval=EvalConfig(adapt=AdaptConfig(lr=2.0)), tuned=Tunings(ttss=Tuning(steps=4)))


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["grpo", "meta-train"])
def test_training_uses_the_tasks_own_prompt_and_reward(tiny_model_dir, tmp_path, monkeypatch, recipe):
    """A task with its own prompt format and reward: training renders and rewards with them, not
    with MiniMath's defaults."""
    import mass.meta_train
    import mass.grpo
    from mass.tasks import load_task as real_load_task

    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"problem": f"{i} plus {i}?", "answer": str(2 * i), "solution":
                                        f"It is \\boxed{{{2 * i}}}."}) + "\n" for i in range(8)))
    prompts, rewarded = [], []

    class QATask:  # the Task interface: load, render_prompt, extract_answer, reward
        def __init__(self, task):
            self.name, self.load, self.extract_answer = task.name, task.load, task.extract_answer

        def render_prompt(self, problem, chat):
            prompts.append(f"Q: {problem.problem}\nA:")
            return prompts[-1]

        def reward(self, problem, completions):
            rewarded.append(problem.id)
            return [0.5] * len(completions)

    monkeypatch.setattr(mass.meta_train, "load_task", lambda name: QATask(real_load_task(name)))
    monkeypatch.setattr(mass.grpo, "load_task", lambda name: QATask(real_load_task(name)))
    common = [f"--model={tiny_model_dir}", f"--data={data}", "steps=1", "batch_size=2", "heldout=2", "k=2",
              "solve_sampling.max_new_tokens=8", f"out={tmp_path / 'run'}", "lora.rank=2"]
    if recipe == "grpo":
        assert main(["grpo", *common]) == 0
    else:
        assert main(["meta-train", "outer=verifier", *common, "heldout_eval=1", "adapt.m=2",
                     "adapt.synth.max_new_tokens=8"]) == 0
    assert prompts and all(p.startswith("Q: ") and p.endswith("\nA:") for p in prompts)
    assert rewarded  # the held-out accuracy at least; GRPO's samples when any example parsed
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    held = [r for r in rows if "heldout_acc" in r or "heldout_acc_before" in r]
    assert held and all(r.get("heldout_acc", r.get("heldout_acc_before")) == 0.5 for r in held)


def test_the_table_trains_solver_grpo_on_mass_budget(tmp_path, monkeypatch):
    import mass.table
    from mass.budget import SHARED, grpo_budget_from
    from mass.meta_train import MetaTrainConfig
    from mass.grpo import SolverGRPOConfig
    from mass.table import Checkpoints, TableConfig, ensure_checkpoint

    g, m = SolverGRPOConfig(), MetaTrainConfig()  # the defaults agree
    assert {n: getattr(g, n) for n in SHARED} == {n: getattr(m, n) for n in SHARED} and g.k == m.adapt.m + m.k
    meta = MetaTrainConfig(steps=7, batch_size=3, seed=5, limit=50, heldout=10, k=3)
    assert grpo_budget_from(meta) == {"data": "minimath-meta", "limit": 50, "heldout": 10, "steps": 7,
                                      "batch_size": 3, "seed": 5, "k": m.adapt.m + 3}
    trained = []
    monkeypatch.setattr(mass.table, "train_solver", lambda cfg: trained.append(cfg))
    cfg = TableConfig(out=str(tmp_path), meta_train=meta, checkpoints=Checkpoints(solver_grpo=str(tmp_path / "sg")))
    ensure_checkpoint("solver-grpo", cfg)
    assert [(c.steps, c.batch_size, c.seed, c.limit, c.heldout, c.k, c.out) for c in trained] == [
        (7, 3, 5, 50, 10, m.adapt.m + 3, str(tmp_path / "sg"))]
