"""The distributed layer without torchrun (mass/dist.py): one process is rank 0 of 1, and every
collective is a no-op, so nothing in the project needs a process group to run."""

import pytest
import torch
import torch.distributed

from mass import dist


@pytest.fixture(autouse=True)
def one_process(monkeypatch):
    """As run without torchrun, whatever the environment of the test run; a collective reached
    in one process would be a bug, so make any call to one fail loudly."""
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)

    def no_collective(*args, **kwargs):
        raise AssertionError("a collective was called in one process")

    for name in ("all_reduce", "all_gather_object", "barrier", "init_process_group"):
        monkeypatch.setattr(torch.distributed, name, no_collective)


def test_one_process_is_rank_0_of_1():
    assert dist.rank() == 0 and dist.world_size() == 1 and dist.is_main()
    assert not torch.distributed.is_initialized()


def test_rank_and_world_come_from_torchruns_environment(monkeypatch):
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert dist.rank() == 2 and dist.world_size() == 3 and not dist.is_main()


def test_shard_in_one_process_is_everything_in_order():
    items = ["a", "b", "c", "d", "e"]
    assert dist.shard(items) == items
    assert dist.shard([]) == []


def test_shards_of_the_ranks_partition_the_items(monkeypatch):
    """Every world-th item from the rank on: together the ranks cover each item once."""
    items = list(range(11))
    monkeypatch.setenv("WORLD_SIZE", "3")
    shares = []
    for rank in range(3):
        monkeypatch.setenv("RANK", str(rank))
        shares.append(dist.shard(items))
    assert shares == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]


def test_gather_lists_in_one_process_returns_the_local_list():
    local = [("x", 1), ("y", 2)]
    gathered = dist.gather_lists(local)
    assert gathered == local
    gathered.append("more")
    assert local == [("x", 1), ("y", 2)]  # a new list: the caller's is left alone
    assert dist.gather_lists([]) == []


def test_shard_then_gather_in_one_process_is_the_identity():
    items = list(range(7))
    assert dist.gather_lists(dist.shard(items)) == items


def test_collectives_under_torchrun_without_init_say_so(monkeypatch):
    """WORLD_SIZE > 1 without `dist.init()`: gathering or summing alone would be silently wrong."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="needs dist.init"):
        dist.gather_lists([1])
    p = torch.zeros(2, requires_grad=True)
    p.grad = torch.ones(2)
    with pytest.raises(RuntimeError, match="needs dist.init"):
        dist.all_reduce_grads([p])


def test_barrier_in_one_process_is_a_no_op(monkeypatch):
    dist.barrier()
    monkeypatch.setenv("WORLD_SIZE", "2")  # no process group yet: nothing to wait for either
    dist.barrier()


def test_all_reduce_grads_in_one_process_leaves_gradients_as_they_are():
    """The same tensors with the same values, and a missing gradient stays missing (not zeros,
    which Adam would step on)."""
    model = torch.nn.Linear(3, 2)
    frozen = torch.zeros(4, requires_grad=True)
    half = torch.zeros(2, dtype=torch.float16, requires_grad=True)
    model(torch.arange(3.0)).sum().backward()
    half.grad = torch.tensor([1.5, -2.0], dtype=torch.float16)
    params = [*model.parameters(), frozen, half]
    before = [None if p.grad is None else (p.grad, p.grad.clone()) for p in params]
    dist.all_reduce_grads(iter(params))
    for p, was in zip(params, before):
        if was is None:
            assert p.grad is None
        else:
            assert p.grad is was[0] and torch.equal(p.grad, was[1])
    dist.all_reduce_grads([])


def test_init_without_torchrun_joins_no_group():
    device = dist.init()
    assert not torch.distributed.is_initialized()
    assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_close_leaves_a_joined_group_and_is_a_no_op_without_one(monkeypatch):
    destroyed = []
    monkeypatch.setattr(torch.distributed, "destroy_process_group", lambda: destroyed.append(True))
    dist.close()  # one process: no group to leave
    assert destroyed == []
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)  # as under torchrun after init()
    dist.close()
    assert destroyed == [True]


def test_print0_prints_on_rank_0(capsys):
    dist.print0("step", 3, sep="=", end="!\n")
    assert capsys.readouterr().out == "step=3!\n"


def test_print0_is_silent_on_other_ranks(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    dist.print0("from rank 1")
    assert capsys.readouterr().out == ""
