"""NaN/Inf guards of the training loops (mass/guard.py): what counts as finite, and when too many
skipped steps in a row stop a run, with a message that says what is left."""

import math

import pytest
import torch

from mass.errors import MassError
from mass.guard import BadStepGuard, all_finite, grads_finite


def test_all_finite_accepts_finite_tensors_and_numbers():
    assert all_finite(torch.zeros(3), torch.tensor([[1.0, -2.0], [1e30, -1e-30]]), 0.5, 3, torch.tensor(7))
    assert all_finite()  # nothing to check


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_all_finite_finds_nan_and_inf_anywhere(bad):
    """In a number, or in one element of a larger tensor among finite values."""
    assert not all_finite(bad)
    assert not all_finite(1.0, bad)
    values = torch.ones(4, 5)
    values[2, 3] = bad
    assert not all_finite(torch.zeros(2), values)


def test_all_finite_takes_tensors_that_require_grad():
    """Losses are checked before backward: the check must not fail on (or change) a graph tensor."""
    w = torch.ones(3, requires_grad=True)
    loss = (w * 2).sum()
    assert all_finite(loss)
    assert not all_finite(loss * math.nan)
    loss.backward()
    assert torch.equal(w.grad, torch.full((3,), 2.0))


def test_grads_finite_ignores_parameters_without_a_gradient():
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    assert grads_finite([a, b])  # no gradients at all: nothing non-finite
    a.grad = torch.tensor([1.0, 2.0])
    assert grads_finite([a, b])
    b.grad = torch.tensor([0.0, math.nan])
    assert not grads_finite([a, b])
    assert grads_finite([a])


def test_grads_finite_reads_a_generator_of_parameters():
    """Callers pass `model.parameters()`: a one-shot iterator must be enough."""
    model = torch.nn.Linear(2, 1)
    model(torch.ones(1, 2)).sum().backward()
    assert grads_finite(model.parameters())
    model.weight.grad[0, 0] = math.inf
    assert not grads_finite(model.parameters())


def test_guard_stops_at_the_limit_of_skipped_steps_in_a_row(tmp_path):
    guard = BadStepGuard(limit=3, out=tmp_path)
    guard.record(True, step=1, last_saved=0)
    guard.record(True, step=2, last_saved=0)
    assert guard.in_a_row == 2
    with pytest.raises(MassError, match="stopped at step 3: 3 steps in a row"):
        guard.record(True, step=3, last_saved=0)


def test_a_taken_step_resets_the_count(tmp_path):
    """Only steps skipped in a row count: scattered bad steps never stop a run."""
    guard = BadStepGuard(limit=2, out=tmp_path)
    for step in range(1, 21):
        guard.record(step % 2 == 1, step=step, last_saved=0)  # skipped, taken, skipped, ...
    assert guard.in_a_row == 0
    guard.record(True, step=21, last_saved=0)
    with pytest.raises(MassError):
        guard.record(True, step=22, last_saved=0)


def test_limit_one_stops_at_the_first_skipped_step(tmp_path):
    guard = BadStepGuard(limit=1, out=tmp_path)
    guard.record(False, step=1, last_saved=0)
    with pytest.raises(MassError, match="stopped at step 2: 1 steps"):
        guard.record(True, step=2, last_saved=0)


def test_limit_zero_never_stops(tmp_path):
    """max_bad_steps=0: every bad step is skipped, none stops the run."""
    guard = BadStepGuard(limit=0, out=tmp_path)
    for step in range(1, 101):
        guard.record(True, step=step, last_saved=0)
    assert guard.in_a_row == 100


def test_the_message_names_the_intact_checkpoint_and_how_to_continue(tmp_path):
    out = tmp_path / "runs" / "mass"
    guard = BadStepGuard(limit=2, out=out)
    guard.record(True, step=11, last_saved=10)
    with pytest.raises(MassError) as err:
        guard.record(True, step=12, last_saved=10)
    message = str(err.value)
    assert "stopped at step 12" in message and "2 steps in a row" in message and "NaN/Inf" in message
    assert "the last checkpoint (step 10)" in message and str(out) in message
    assert "--resume" in message and "learning rate" in message
    assert "no checkpoint" not in message


def test_the_message_says_when_no_checkpoint_was_saved(tmp_path):
    guard = BadStepGuard(limit=1, out=tmp_path / "run")
    with pytest.raises(MassError) as err:
        guard.record(True, step=1, last_saved=0)
    message = str(err.value)
    assert "no checkpoint was saved before it" in message
    assert "--resume" not in message and str(tmp_path / "run") not in message
