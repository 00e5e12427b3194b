"""The training budget MASS's meta-training and Solver GRPO share (mass/budget.py): one source
for the defaults of both commands, and the GRPO settings that match a given meta-training."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import pytest

from mass.adaptation import AdaptConfig
from mass.budget import DEFAULT_BUDGET, SHARED, TrainingBudget, grpo_budget_from
from mass.grpo import SolverGRPOConfig
from mass.meta_train import MetaTrainConfig


def _non_default_meta() -> MetaTrainConfig:
    """A meta-training config in which every shared field, m and k differ from the defaults."""
    return MetaTrainConfig(data="minimath-train", limit=50, heldout=10, steps=7, batch_size=3, seed=5, k=2,
                           adapt=AdaptConfig(m=5, steps=2, lr=3.0))


def test_shared_fields_are_the_problems_steps_batch_and_seed():
    """The paper's budget: same problems (data, limit, held-out split), steps, problems per step, seed."""
    assert set(SHARED) == {"data", "limit", "heldout", "steps", "batch_size", "seed"}
    assert SHARED == tuple(f.name for f in dataclasses.fields(TrainingBudget))
    assert len(set(SHARED)) == len(SHARED)


def test_default_budget_is_the_default_training_budget_and_frozen():
    """A frozen default: no command can change the budget the other one reads."""
    assert DEFAULT_BUDGET == TrainingBudget()
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_BUDGET.steps = 1


@pytest.mark.parametrize("config", [MetaTrainConfig, SolverGRPOConfig])
def test_both_commands_have_every_shared_setting(config):
    names = {f.name for f in dataclasses.fields(config)}
    assert set(SHARED) <= names and "k" in names


@pytest.mark.parametrize("config", [MetaTrainConfig, SolverGRPOConfig])
def test_both_commands_default_to_the_default_budget(config):
    cfg = config()
    assert {name: getattr(cfg, name) for name in SHARED} == dataclasses.asdict(DEFAULT_BUDGET)


def test_the_defaults_are_read_from_default_budget_not_copied():
    """Change DEFAULT_BUDGET before the recipes are imported (a fresh interpreter): both configs
    follow it, so the two defaults cannot drift apart."""
    script = textwrap.dedent("""
        import dataclasses, json
        import mass.budget as budget
        budget.DEFAULT_BUDGET = budget.TrainingBudget(data="elsewhere", limit=9, heldout=3, steps=11,
                                                      batch_size=2, seed=42)
        from mass.grpo import SolverGRPOConfig
        from mass.meta_train import MetaTrainConfig
        print(json.dumps([{n: getattr(c(), n) for n in budget.SHARED} for c in (MetaTrainConfig, SolverGRPOConfig)]))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    want = {"data": "elsewhere", "limit": 9, "heldout": 3, "steps": 11, "batch_size": 2, "seed": 42}
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [want, want]


def test_grpo_budget_of_the_default_meta_training_is_the_grpo_default():
    """Solver GRPO's own defaults already match MASS's defaults: k = m + k = 12 + 4."""
    meta, grpo = MetaTrainConfig(), SolverGRPOConfig()
    assert meta.adapt.m + meta.k == 16
    assert grpo_budget_from(meta) == {name: getattr(grpo, name) for name in (*SHARED, "k")}


def test_grpo_budget_copies_every_shared_field_and_sums_the_sequences():
    meta = _non_default_meta()
    assert all(getattr(meta, name) != getattr(DEFAULT_BUDGET, name) for name in SHARED)  # each copy is seen
    budget = grpo_budget_from(meta)
    assert set(budget) == {*SHARED, "k"}  # nothing beyond the budget (model, out, lr stay GRPO's own)
    assert {name: budget[name] for name in SHARED} == {"data": "minimath-train", "limit": 50, "heldout": 10,
                                                       "steps": 7, "batch_size": 3, "seed": 5}
    assert budget["k"] == 5 + 2  # m synthesised examples + k verifier samples


def test_grpo_budget_k_follows_both_m_and_k():
    base = _non_default_meta()
    assert grpo_budget_from(dataclasses.replace(base, k=9))["k"] == 5 + 9
    assert grpo_budget_from(dataclasses.replace(base, adapt=AdaptConfig(m=1)))["k"] == 1 + 2


def test_grpo_budget_applies_to_a_grpo_config():
    """What `mass table` does with it: the GRPO config takes the budget and keeps everything else."""
    grpo = dataclasses.replace(SolverGRPOConfig(lr=3e-4, out="elsewhere"), **grpo_budget_from(_non_default_meta()))
    assert (grpo.data, grpo.limit, grpo.heldout, grpo.steps, grpo.batch_size, grpo.seed, grpo.k) == (
        "minimath-train", 50, 10, 7, 3, 5, 7)
    assert (grpo.lr, grpo.out) == (3e-4, "elsewhere")
