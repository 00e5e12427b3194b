"""The pure helpers the training recipes share (mass/training.py), in one process: per-step and
per-sequence seeds, the step's batch, metrics, the train/held-out split, the device and the log.
What N processes do together is in tests/test_distributed.py."""

import itertools
import json
import math
import random

import pytest
import torch

from mass import training
from mass.errors import MassError
from mass.tasks import Task
from mass.training import (StepBatch, global_metrics, log_metrics, mean_rows, require_shardable, sequence_rngs,
                           sequence_seed, split_training_problems, step_batch, step_problems, step_seed,
                           training_device)

TRAIN = [f"problem {i}" for i in range(40)]


@pytest.fixture(autouse=True)
def one_process(monkeypatch):
    """As run without torchrun, whatever the environment of the test run."""
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


def test_step_seeds_are_distinct_across_seeds_and_steps():
    seeds = {step_seed(seed, step) for seed in range(5) for step in range(1000)}
    assert len(seeds) == 5 * 1000
    assert step_seed(3, 17) == step_seed(3, 17)


def test_step_problems_are_a_function_of_seed_and_step_alone():
    """Not of the global random state, nor of earlier draws: a resumed run draws what an unbroken one did."""
    random.seed(1)
    first = step_problems(TRAIN, seed=0, step=5, batch_size=4)
    random.seed(2)
    random.random()
    step_problems(TRAIN, seed=0, step=4, batch_size=4)
    assert step_problems(TRAIN, seed=0, step=5, batch_size=4) == first


def test_step_problems_are_distinct_training_problems_and_leave_the_list_alone():
    train = list(TRAIN)
    batch = step_problems(train, seed=1, step=2, batch_size=10)
    assert len(batch) == 10 and len(set(batch)) == 10 and set(batch) <= set(TRAIN)  # without replacement
    assert train == TRAIN


def test_step_problems_change_with_step_and_seed():
    by_step = {tuple(step_problems(TRAIN, 0, t, 4)) for t in range(20)}
    by_seed = {tuple(step_problems(TRAIN, s, 0, 4)) for s in range(20)}
    assert len(by_step) > 15 and len(by_seed) > 15
    # over many steps, every problem is drawn: the batches cover the training set
    assert set().union(*(step_problems(TRAIN, 0, t, 4) for t in range(200))) == set(TRAIN)


def test_sequence_seeds_are_distinct_over_every_part_of_the_key():
    keys = list(itertools.product(range(3), range(3), range(4), ("synthesis", "verifier", "solve"), range(4)))
    seeds = [sequence_seed(*key) for key in keys]
    assert len(set(seeds)) == len(keys)
    # summing the parts would collide in the first two, joining them without a separator in the third
    assert sequence_seed(1, 0, 0, "solve", 0) != sequence_seed(0, 1, 0, "solve", 0)
    assert sequence_seed(0, 0, 1, "solve", 0) != sequence_seed(0, 0, 0, "solve", 1)
    assert sequence_seed(0, 12, 3, "solve", 0) != sequence_seed(0, 1, 23, "solve", 0)


def test_sequence_seeds_are_stable_and_fit_a_torch_generator():
    """Stable across processes (no Python hash randomisation) and in [0, 2^63)."""
    for key in itertools.product((0, 1, 2**40), (0, 99), (0, 7), ("synthesis", "verifier", "solve"), (0, 15)):
        seed = sequence_seed(*key)
        assert seed == sequence_seed(*key) and 0 <= seed < 2**63
        assert torch.Generator().manual_seed(seed).initial_seed() == seed


def test_sequence_rngs_are_problem_major_with_the_seeds_of_their_key():
    rngs = sequence_rngs(3, 7, [5, 2], "verifier", 3, "cpu")
    want = [sequence_seed(3, 7, index, "verifier", i) for index in (5, 2) for i in range(3)]
    assert [g.initial_seed() for g in rngs] == want
    assert all(g.device == torch.device("cpu") for g in rngs)
    assert sequence_rngs(3, 7, [], "verifier", 3, "cpu") == [] and sequence_rngs(3, 7, [1], "solve", 0, "cpu") == []


def test_sequence_rngs_are_independent_generators():
    """Drawing from one sequence's generator does not move another's."""
    a, b = sequence_rngs(0, 0, [0], "solve", 2, "cpu")
    fresh_b = sequence_rngs(0, 0, [0], "solve", 2, "cpu")[1]
    torch.rand(100, generator=a)
    assert torch.equal(torch.rand(5, generator=b), torch.rand(5, generator=fresh_b))


def test_step_batch_in_one_process_is_the_whole_global_batch():
    batch = step_batch(TRAIN, seed=2, step=9, batch_size=5, device=torch.device("cpu"))
    assert batch.problems == step_problems(TRAIN, 2, 9, 5)
    assert batch.indices == [0, 1, 2, 3, 4] and batch.total == 5
    assert (batch.seed, batch.step, batch.device) == (2, 9, torch.device("cpu"))


def test_step_batch_rngs_are_seeded_by_global_places():
    batch = step_batch(TRAIN, seed=2, step=9, batch_size=3, device="cpu")
    assert [g.initial_seed() for g in batch.rngs("solve", 2)] == [
        sequence_seed(2, 9, i, "solve", j) for i in range(3) for j in range(2)]
    assert [g.initial_seed() for g in batch.rngs("synthesis", 1, indices=[2])] == [sequence_seed(2, 9, 2, "synthesis", 0)]


def test_the_ranks_shares_of_a_step_batch_partition_it(monkeypatch):
    """With RANK/WORLD_SIZE set (as torchrun does), each rank keeps every world-th problem from
    its rank on, at its global place, with the global batch size for the loss."""
    whole = step_batch(TRAIN, 4, 3, 5, "cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    shares = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        shares.append(step_batch(TRAIN, 4, 3, 5, "cpu"))
    assert [s.indices for s in shares] == [[0, 2, 4], [1, 3]]
    assert all(s.total == 5 for s in shares)
    for share in shares:
        assert share.problems == [whole.problems[i] for i in share.indices]
        assert [g.initial_seed() for g in share.rngs("solve", 1)] == [
            sequence_seed(4, 3, i, "solve", 0) for i in share.indices]


def test_require_shardable_in_one_process():
    require_shardable(1)
    require_shardable(64)
    with pytest.raises(MassError, match="batch_size=0"):
        require_shardable(0)


def test_require_shardable_names_the_batch_and_the_processes(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    require_shardable(4)  # one problem each is enough
    with pytest.raises(MassError) as err:
        require_shardable(3)
    assert "batch_size=3" in str(err.value) and "4 processes" in str(err.value)
    assert "--nproc_per_node" in str(err.value)


def test_mean_rows_averages_each_metric_over_the_rows_that_have_it():
    rows = [{"loss": 1.0, "acc": 1.0}, {"loss": 2.0}, {"loss": 6.0, "acc": 0.0, "extra": 5}]
    assert mean_rows(rows) == {"acc": 0.5, "extra": 5.0, "loss": 3.0}


def test_mean_rows_leaves_nan_out():
    rows = [{"a": math.nan, "b": 1.0}, {"a": 4.0, "b": 3.0}, {"c": math.nan}]
    assert mean_rows(rows) == {"a": 4.0, "b": 2.0}  # c: only NaN, so no mean at all


def test_mean_rows_rounds_sorts_and_handles_no_rows():
    out = mean_rows([{"z": 1.0, "a": 0.0}, {"z": 0.0}, {"z": 0.0}])
    assert out == {"a": 0.0, "z": 0.333333} and list(out) == ["a", "z"]
    assert mean_rows([]) == {}


def test_global_metrics_in_one_process_are_the_mean_of_the_rows():
    batch = step_batch(TRAIN, 0, 0, 3, "cpu")
    rows = [{"reward": 1.0}, {"reward": 0.0, "nonfinite": 0.0}, {"reward": 0.5, "nonfinite": 1.0}]
    assert global_metrics(batch, rows) == {"nonfinite": 0.5, "reward": 0.5}


def test_global_metrics_put_gathered_rows_in_global_batch_order(monkeypatch):
    """Rows come back from the ranks in rank order (0, 2, 4, 1, 3); they are averaged in global order."""
    other_rank = [(1, {"i": 1.0}), (3, {"i": 3.0})]
    monkeypatch.setattr(training.dist, "gather_lists", lambda local: list(local) + other_rank)
    seen = []
    monkeypatch.setattr(training, "mean_rows", lambda rows: seen.append(rows) or mean_rows(rows))
    batch = StepBatch(0, 0, ["a", "c", "e"], [0, 2, 4], 5, torch.device("cpu"))
    assert global_metrics(batch, [{"i": 0.0}, {"i": 2.0}, {"i": 4.0}]) == {"i": 2.0}
    assert seen == [[{"i": float(i)} for i in range(5)]]


def _task(n: int) -> Task:
    problems = [f"p{i}" for i in range(n)]
    return Task(name="toy", load=lambda limit: problems if limit is None else problems[:limit])


def test_split_keeps_the_last_problems_for_evaluation():
    train, heldout = split_training_problems(_task(20), limit=None, heldout=5, batch_size=4)
    assert train == [f"p{i}" for i in range(15)] and heldout == [f"p{i}" for i in range(15, 20)]


def test_split_applies_the_limit_before_holding_out():
    train, heldout = split_training_problems(_task(100), limit=12, heldout=3, batch_size=2)
    assert train == [f"p{i}" for i in range(9)] and heldout == ["p9", "p10", "p11"]


def test_split_with_nothing_held_out():
    train, heldout = split_training_problems(_task(6), limit=None, heldout=0, batch_size=2)
    assert train == [f"p{i}" for i in range(6)] and heldout == []


def test_split_needs_more_training_problems_than_a_batch():
    split_training_problems(_task(10), limit=None, heldout=5, batch_size=4)  # 5 to train on: enough
    with pytest.raises(MassError) as err:
        split_training_problems(_task(9), limit=None, heldout=5, batch_size=4)
    message = str(err.value)
    assert "toy has 9 problems" in message and "heldout=5" in message and "batch_size=4" in message
    with pytest.raises(MassError, match="toy has 3 problems"):
        split_training_problems(_task(100), limit=3, heldout=5, batch_size=4)


def test_training_device_cpu_and_auto_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training_device("cpu") == torch.device("cpu")
    assert training_device("auto") == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(MassError, match=f"device={name}, but no CUDA device is visible"):
            training_device(name)


def test_a_misspelt_device_is_a_clear_error():
    with pytest.raises(MassError, match="unknown device 'gpu'"):
        training_device("gpu")


def test_training_device_gpu_without_an_index_is_the_current_one(monkeypatch):
    """Under torchrun `dist.init` makes this rank's GPU current; "cuda" must mean that one, not cuda:0."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert training_device("auto") == torch.device("cuda", 3)
    assert training_device("cuda") == torch.device("cuda", 3)
    assert training_device("cuda:1") == torch.device("cuda", 1)
    assert training_device("cpu") == torch.device("cpu")


def test_log_metrics_appends_one_json_line_per_row(tmp_path):
    log_metrics(tmp_path, None, {"step": 0, "heldout_acc": 0.25})
    log_metrics(tmp_path, None, {"step": 1, "loss": 1.5, "note": "x"})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"step": 0, "heldout_acc": 0.25},
                                                    {"step": 1, "loss": 1.5, "note": "x"}]


class _Writer:
    def __init__(self):
        self.scalars, self.flushes = [], 0

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        self.flushes += 1


def test_log_metrics_writes_the_numbers_as_scalars_at_their_step(tmp_path):
    writer = _Writer()
    log_metrics(tmp_path, writer, {"step": 4, "loss": 0.5, "n": 3, "method": "mass", "tags": [1, 2]})
    assert writer.scalars == [("loss", 0.5, 4), ("n", 3, 4)]  # not the step itself, nor text or lists
    assert writer.flushes == 1
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 4, "loss": 0.5, "n": 3,
                                                                    "method": "mass", "tags": [1, 2]}
