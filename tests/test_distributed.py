"""Data-parallel training under torchrun: per-sequence sampling, gradient all-reduce, and that
N processes on a global batch train what one process does (2 processes on gloo, the embedded model)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from mass.cli import main
from mass.models import SamplingConfig, generate, load_model
from mass.training import sequence_rngs

# batch_size=2: one problem per rank under 2 processes, both in one process
TINY = ["steps=2", "batch_size=2", "heldout=2", "eval_every=0", "save_every=1", "adapt.m=3",
        "adapt.synth.max_new_tokens=120", "k=2", "solve_sampling.max_new_tokens=100", "lora.rank=2"]
TINY_GRPO = ["steps=2", "batch_size=2", "heldout=2", "eval_every=0", "save_every=1", "k=4",
             "solve_sampling.max_new_tokens=200", "lora.rank=2"]
# the verifier needs some right solutions among its k for any gradient at all: more of them, longer,
# from a gentler inner step
VERIFIER = [*TINY, "k=4", "solve_sampling.max_new_tokens=200", "adapt.lr=0.3"]
# each run in a process of its own with the same thread count: float sums depend on it
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _one_process(*args) -> None:
    done = subprocess.run([sys.executable, "-m", "mass", *args], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def _torchrun(*args, script: str | None = None) -> subprocess.CompletedProcess:
    what = [script] if script else ["-m", "mass", *args]
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           *what], env=ENV, capture_output=True, text=True)


def _two_processes(*args) -> None:
    done = _torchrun(*args)
    assert done.returncode == 0, done.stderr[-3000:]


def _rows(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _assert_same_weights(a, b) -> None:
    items = ["adapter/adapter_model.safetensors"] + (["scorer/scorer.safetensors"] if (a / "scorer").is_dir() else [])
    for item in items:
        x, y = load_file(a / item), load_file(b / item)
        assert x.keys() == y.keys() and x, item
        for name in x:
            assert torch.allclose(x[name], y[name], atol=1e-5), f"{item}: {name}"


def _assert_same_rows(expected: list[dict], got: list[dict]) -> None:
    """Every metric of `expected` in the row of the same step of `got` (which may have more: a run
    stopped at a step evaluates there)."""
    assert [r["step"] for r in got] == [r["step"] for r in expected]
    for want, row in zip(expected, got):
        for key, value in want.items():
            if key != "seconds":
                assert row[key] == pytest.approx(value, rel=1e-4, abs=1e-6), (row["step"], key)


def _trained(out) -> None:
    """The generator LoRA moved off its initialisation (B = 0): equal weights prove something."""
    lora = load_file(out / "adapter" / "adapter_model.safetensors")
    assert any(bool(t.abs().sum() > 0) for name, t in lora.items() if "lora_B" in name)


def test_a_rows_sample_does_not_depend_on_the_prompts_beside_it(tiny_model_dir):
    """With one generator per prompt, each prompt's sample is the same alone, in any order, in any
    batch; with one shared generator it is not (so the check can fail)."""
    model, tok = load_model(str(tiny_model_dir))
    prompts = ["Problem: a\nSolution:", "Problem: Compute $1 + 2$.\nSolution:", "Problem: x\nSolution:",
               "Problem: A much longer prompt than the others.\nSolution:", "Problem: a\nSolution:"]

    def gens(indices):  # the generators of these prompts: seeded by the prompt's index alone
        return [g for i in indices for g in sequence_rngs(7, 3, [i], "solve", 1, "cpu")]

    def sample(order, batch_size):
        sampling = SamplingConfig(temperature=1.0, top_p=0.95, max_new_tokens=16, batch_size=batch_size)
        texts = generate(model, tok, [prompts[i] for i in order], sampling, gens(order))
        return dict(zip(order, texts))

    together = sample(range(5), 5)
    assert len(set(together.values())) == 5  # sampled, and the two equal prompts got samples of their own
    assert sample([4, 2, 0, 3, 1], 2) == together
    assert sample([3, 1], 1) == {i: together[i] for i in (3, 1)}
    for i in range(5):
        assert sample([i], 1) == {i: together[i]}

    shared = SamplingConfig(temperature=1.0, max_new_tokens=16, batch_size=5)
    one = generate(model, tok, prompts, shared, torch.Generator().manual_seed(0))
    alone = generate(model, tok, prompts[2:3], shared, torch.Generator().manual_seed(0))
    assert alone[0] != one[2]  # one shared generator: a row's sample depends on its neighbours
    with pytest.raises(ValueError, match="one per prompt"):
        generate(model, tok, prompts, shared, gens(range(4)))


def test_sequence_seeds_depend_on_every_part_of_their_key():
    draw = [float(torch.rand(1, generator=g)) for g in sequence_rngs(0, 1, [0, 1], "synthesis", 2, "cpu")]
    assert len(set(draw)) == 4  # per problem and per sample
    again = [float(torch.rand(1, generator=g)) for g in sequence_rngs(0, 1, [1], "synthesis", 2, "cpu")]
    assert again == draw[2:]  # problem 1's samples whatever else is in the shard
    for other in ((1, 1, [0], "synthesis"), (0, 2, [0], "synthesis"), (0, 1, [0], "verifier")):
        g = sequence_rngs(*other, 1, "cpu")[0]
        assert float(torch.rand(1, generator=g)) != draw[0], other


def test_batch_smaller_than_the_processes_is_a_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for command in ("meta-train", "grpo"):
        assert main([command, f"out={tmp_path / command}", "batch_size=1"]) == 2
        err = capsys.readouterr().err
        assert "batch_size=1 is smaller than the 2 processes torchrun started" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # before any work


ALL_REDUCE = textwrap.dedent("""
    import json, os, sys
    import torch
    from mass import dist

    dist.init()
    r = dist.rank()
    params = [torch.zeros(2, requires_grad=True) for _ in range(3)]
    params[0].grad = torch.tensor([1.0, 2.0]) * (r + 1)  # both ranks
    if r == 1:
        params[1].grad = torch.tensor([5.0, 7.0])  # rank 1 only; params[2]: no rank
    dist.all_reduce_grads(params)
    grads = [None if p.grad is None else p.grad.tolist() for p in params]
    with open(os.path.join(sys.argv[1], f"{r}.json"), "w") as f:
        json.dump(grads, f)
    dist.close()
""")


def test_gradients_are_summed_over_ranks_and_none_stays_none(tmp_path):
    script = tmp_path / "reduce.py"
    script.write_text(ALL_REDUCE)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(tmp_path)], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    for r in (0, 1):
        assert json.loads((tmp_path / f"{r}.json").read_text()) == [[3.0, 6.0], [5.0, 7.0], None]


@pytest.mark.slow
def test_two_processes_meta_train_what_one_does(tmp_path):
    """MASS_gold, 2 steps: one process, and 2 processes under torchrun (one problem each)."""
    one, two = tmp_path / "one", tmp_path / "two"
    _one_process("meta-train", "outer=gold", f"out={one}", *TINY)
    _two_processes("meta-train", "outer=gold", f"out={two}", *TINY)
    _trained(one)
    _assert_same_weights(one, two)
    assert [r.keys() for r in _rows(two)] == [r.keys() for r in _rows(one)]  # rank 0 alone logged, once a step
    _assert_same_rows(_rows(one), _rows(two))


@pytest.mark.slow
def test_verifier_meta_train_resumed_under_torchrun_reaches_the_one_process_run(tmp_path):
    """MASS (outer=verifier, its k solutions sampled per rank): 1 step under torchrun, then
    --resume to 2 under torchrun, against 2 unbroken steps in one process."""
    one, split = tmp_path / "one", tmp_path / "split"
    _one_process("meta-train", "outer=verifier", f"out={one}", *VERIFIER)
    _two_processes("meta-train", "outer=verifier", f"out={split}", *VERIFIER, "steps=1")
    assert [r["step"] for r in _rows(split)] == [0, 1]
    done = _torchrun("meta-train", "outer=verifier", f"out={split}", *VERIFIER, "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("resuming from step 1") == 1  # rank 0 speaks for both
    _trained(one)
    assert any("reward_after" in r for r in _rows(one))
    _assert_same_weights(one, split)
    _assert_same_rows(_rows(one), _rows(split))
    from mass.checkpoint import load_train_state
    assert load_train_state(split / "train_state.pt")["step"] == 2


@pytest.mark.slow
def test_two_processes_train_solver_grpo_as_one_does(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _one_process("grpo", f"out={one}", *TINY_GRPO)
    _two_processes("grpo", f"out={two}", *TINY_GRPO)
    _trained(one)
    _assert_same_weights(one, two)
    _assert_same_rows(_rows(one), _rows(two))
