"""Few-step runs of `mass meta-train` (both outer losses), resume, and test-time MASS on the embedded model."""

import json

import pytest
import torch

from mass.cli import main
from mass.scorer import load_scorer

TINY = ["steps=2", "batch_size=1", "heldout=2", "eval_every=0", "save_every=1", "adapt.m=3",
        "adapt.synth.max_new_tokens=120", "k=2", "solve_sampling.max_new_tokens=100", "lora.rank=2"]


@pytest.fixture(scope="module")
def gold_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("mass-gold")
    assert main(["meta-train", "outer=gold", f"out={out}", *TINY]) == 0
    return out


@pytest.mark.slow
def test_gold_meta_train_writes_metrics_and_a_checkpoint(gold_checkpoint):
    rows = [json.loads(line) for line in (gold_checkpoint / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert "heldout_gold_ce_after" in rows[0] and "heldout_gold_ce_after" in rows[-1]
    trained = [r for r in rows[1:] if r.get("skipped") == 0.0]
    assert trained, "every problem was skipped: the embedded model should parse its own samples"
    for key in ("outer_after", "gold_ce_before", "meta_grad_norm", "parse_rate", "s_max", "reward_mean"):
        assert key in trained[0]
    assert (gold_checkpoint / "adapter" / "adapter_config.json").is_file()
    assert (gold_checkpoint / "adapter" / "adapter_model.safetensors").is_file()
    scorer = load_scorer(gold_checkpoint / "scorer")
    assert scorer.net[2].weight.abs().sum() > 0  # the meta-gradient moved the (zero-initialised) head
    info = json.loads((gold_checkpoint / "mass.json").read_text())
    assert info["outer"] == "gold" and info["model"] == ""


@pytest.mark.slow
def test_verifier_meta_train_and_exact_resume(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["meta-train", "outer=verifier", f"out={straight}", *TINY]) == 0
    assert main(["meta-train", "outer=verifier", f"out={split}", *TINY, "steps=1"]) == 0
    assert main(["meta-train", "outer=verifier", f"out={split}", *TINY, "--resume"]) == 0
    rows = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert any("reward_after" in r for r in rows)
    a, b = load_scorer(straight / "scorer"), load_scorer(split / "scorer")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-6), name  # 1 + 1 resumed step == 2 straight steps
    assert [json.loads(line)["step"] for line in (split / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2]


@pytest.mark.slow
def test_meta_training_with_block_recomputation_takes_the_same_steps(tmp_path):
    """meta_grad=hybrid-recompute (one block, one example at a time) trains the scorer exactly as
    meta_grad=hybrid does: same meta-gradients, so the same scorer after a step."""
    runs = {}
    for mode in ("hybrid", "hybrid-recompute"):
        runs[mode] = tmp_path / mode
        assert main(["meta-train", "outer=gold", f"out={runs[mode]}", f"meta_grad={mode}", *TINY, "steps=1"]) == 0
    norms = [json.loads((runs[m] / "metrics.jsonl").read_text().splitlines()[1])["meta_grad_norm"] for m in runs]
    assert norms[0] > 0 and norms[1] == pytest.approx(norms[0], rel=1e-4)
    a, b = load_scorer(runs["hybrid"] / "scorer"), load_scorer(runs["hybrid-recompute"] / "scorer")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-6), name


@pytest.mark.slow
@pytest.mark.parametrize("method", ["mass-gold", "ttss"])
def test_eval_with_adaptation_records_the_details(gold_checkpoint, tmp_path, method):
    out = tmp_path / "r.json"
    args = ["eval", "--method", method, "--data", "minimath-500", "--limit", "2", "--out", str(out),
            "adapt.m=2", "adapt.synth.max_new_tokens=120", "sampling.max_new_tokens=120"]
    if method == "mass-gold":
        args += ["--checkpoint", str(gold_checkpoint)]
    assert main(args) == 0
    result = json.loads(out.read_text())
    for record in result["records"]:
        for key in ("n_parsed", "n_dropped", "adapted", "seconds_generate", "seconds_score", "seconds_update",
                    "seconds_answer"):
            assert key in record
    adapted = [r for r in result["records"] if r["adapted"]]
    assert adapted, "no problem was adapted: the embedded model should parse its own samples"
    for record in adapted:
        weights = [e["weight"] for e in record["examples"]]
        assert len(weights) == record["n_parsed"] > 0
        if method == "ttss":  # uniform 1/m
            assert sum(weights) == pytest.approx(1.0, abs=1e-3)
        else:  # the meta-trained scorer's default normalisation: 2*sigmoid/m, each in (0, 2/m)
            assert all(0 < w < 2 / len(weights) for w in weights)


@pytest.mark.slow
def test_adapting_leaves_base_and_meta_trained_weights_bit_identical(gold_checkpoint):
    from mass.adaptation import AdaptConfig, synthesise_adapt_answer
    from mass.checkpoint import load_meta_checkpoint
    from mass.models import SamplingConfig, load_model
    from mass.tasks import load_task

    model, tok = load_model(None)
    peft_model, scorer, phi0 = load_meta_checkpoint(model, gold_checkpoint)
    before = {n: p.detach().clone() for n, p in peft_model.state_dict().items()}
    task = load_task("minimath-500")
    cfg = AdaptConfig(m=3, steps=1)
    cfg.synth.max_new_tokens = 120
    out = synthesise_adapt_answer(peft_model, tok, task.load(2), phi0, scorer, cfg, task,
                           SamplingConfig(max_new_tokens=60), torch.Generator().manual_seed(0))
    assert any(r["adapted"] for r in out)
    after = peft_model.state_dict()
    assert before.keys() == after.keys()
    for n, p in before.items():
        assert torch.equal(p, after[n]), n


@pytest.mark.slow
def test_solve_shows_examples_weights_and_answer(gold_checkpoint, capsys):
    assert main(["solve", "What is the remainder when $100$ is divided by $7$?", "--checkpoint",
                 str(gold_checkpoint), "adapt.m=2", "adapt.synth.max_new_tokens=120"]) == 0
    text = capsys.readouterr().out
    assert "Synthesised examples:" in text and "Answer:" in text


def test_solve_file_that_is_not_utf8_is_one_clear_error(tmp_path, capsys):
    path = tmp_path / "problems.txt"
    path.write_bytes(b"What is 2+2?\xff\xfe\x00")
    assert main(["solve", "--file", str(path)]) == 2
    err = capsys.readouterr().err
    assert "not UTF-8 text (byte 0xff at offset 12)" in err and "Traceback" not in err


def test_solve_needs_a_problem(capsys):
    assert main(["solve"]) == 2
    assert "give a problem" in capsys.readouterr().err


def test_resume_drops_metric_rows_logged_after_the_checkpoint(tmp_path):
    from mass.checkpoint import drop_metrics_after

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "x": s}) + "\n" for s in (0, 1, 2, 3, 4)))
    drop_metrics_after(path, 2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [0, 1, 2]


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling would create the marker file


def test_a_training_state_that_would_run_code_is_refused_not_executed(tmp_path):
    from mass.checkpoint import load_train_state
    from mass.errors import MassError

    marker = tmp_path / "pwned"
    path = tmp_path / "train_state.pt"
    torch.save({"step": 3, "payload": _Exploit(str(marker))}, path)
    with pytest.raises(MassError, match="refused"):
        load_train_state(path)
    assert not marker.exists()


def _nan_meta_grads_from(monkeypatch, first_bad_call: int) -> None:
    """From its `first_bad_call`-th call on, the default meta-gradient comes back NaN."""
    import mass.meta_train as mt

    default = mt.MetaTrainConfig.__dataclass_fields__["meta_grad"].default
    real, calls = mt.META_GRADS[default], []

    def faulty(*args, **kwargs):
        calls.append(1)
        result = real(*args, **kwargs)
        if len(calls) >= first_bad_call:
            result.ds = torch.full_like(result.ds, float("nan"))
        return result

    monkeypatch.setitem(mt.META_GRADS, default, faulty)


@pytest.mark.slow
def test_nan_meta_gradients_are_skipped_and_too_many_in_a_row_stop_the_run(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    _nan_meta_grads_from(monkeypatch, first_bad_call=2)  # step 1 is fine, every later one is NaN
    args = ["meta-train", "outer=gold", f"out={out}", *TINY, "steps=4", "max_bad_steps=2"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "stopped at step 3: 2 steps in a row had only NaN/Inf" in err and "Traceback" not in err
    assert "last checkpoint (step 2)" in err  # step 2 was skipped, not applied, and saved (save_every=1)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r.get("skipped_step")) for r in rows] == [(0, None), (1, 0.0), (2, 1.0), (3, 1.0)]
    assert rows[2]["nonfinite"] == 1.0
    scorer = load_scorer(out / "scorer")  # the step-2 checkpoint: finite
    assert all(torch.isfinite(p).all() for p in scorer.parameters())
    assert json.loads((out / "mass.json").read_text())["outer"] == "gold"
    from mass.checkpoint import load_train_state
    assert load_train_state(out / "train_state.pt")["step"] == 2


def _saved_step(out) -> int:
    from mass.checkpoint import finish_committed_write, load_train_state

    finish_committed_write(out)
    path = out / "train_state.pt"
    return load_train_state(path)["step"] if path.is_file() else 0


@pytest.mark.slow
def test_kill_9_then_resume_reaches_the_uninterrupted_run(tmp_path):
    """A real SIGKILL in the middle of meta-training (after the first checkpoint, during a later
    step or save); --resume then ends with the same weights and final metrics as a run never killed."""
    import os
    import signal
    import subprocess
    import sys
    import time

    args = [sys.executable, "-m", "mass", "meta-train", "outer=gold", *TINY, "steps=3"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    # every run in a process of its own with the same thread count: float sums (and so the
    # weights after Adam) depend on how many threads share a reduction
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    proc = subprocess.Popen([*args, f"out={killed}"], **quiet)
    try:
        deadline = time.monotonic() + 600
        while _saved_step(killed) < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # into step 2
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert 1 <= _saved_step(killed) < 3
    assert subprocess.run([*args, f"out={killed}", "--resume"], **quiet).returncode == 0
    assert subprocess.run([*args, f"out={straight}"], **quiet).returncode == 0

    a, b = load_scorer(straight / "scorer"), load_scorer(killed / "scorer")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-6), name
    from safetensors.torch import load_file
    ga = load_file(straight / "adapter" / "adapter_model.safetensors")
    gb = load_file(killed / "adapter" / "adapter_model.safetensors")
    for name in ga:
        assert torch.allclose(ga[name], gb[name], atol=1e-6), name
    rows = [[json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (straight, killed)]
    assert [r["step"] for r in rows[1]] == [0, 1, 2, 3]
    for key, value in rows[0][-1].items():
        if key != "seconds":
            assert rows[1][-1][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
