"""Checkpoints are written atomically: a save killed at any point leaves a whole checkpoint, the
previous one or the new one, never a mix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from mass.checkpoint import (discard_unfinished_write, load_meta_checkpoint, load_train_state, read_meta_info,
                             resume_or_start, save_meta_checkpoint)
from mass.errors import MassError
from mass.models import LoraSettings, attach_lora
from mass.scorer import Scorer
from tests.conftest import tiny_llama


class Killed(BaseException):
    """Stands for the process dying: nothing after it runs, no cleanup."""


def _checkpoint(tiny_tokenizer, version: int):
    torch.manual_seed(version)
    model = attach_lora(tiny_llama(tiny_tokenizer), 4, 4.0, ["q_proj", "v_proj"])
    for p in model.parameters():
        if p.requires_grad:
            p.data.normal_()
    scorer = Scorer(32, 8, "sigmoid")
    for p in scorer.parameters():
        p.data.normal_()
    return model, scorer, {"outer": "gold", "version": version}, {"step": version}


def _saved_version(directory: Path, tiny_tokenizer, versions: dict) -> int:
    """Which of the saved versions `directory` holds, checked item by item (all must agree)."""
    version = read_meta_info(directory)["version"]
    assert load_train_state(directory / "train_state.pt")["step"] == version
    model, scorer, _ = load_meta_checkpoint(tiny_llama(tiny_tokenizer), directory)
    expected_model, expected_scorer, _, _ = versions[version]
    lora = {n: p for n, p in model.named_parameters() if "lora" in n}
    for name, value in expected_model.named_parameters():
        if "lora" in name:
            assert torch.equal(lora[name], value), name
    for (name, a), b in zip(scorer.state_dict().items(), expected_scorer.state_dict().values()):
        assert torch.equal(a, b), name
    return version


def _count_renames(monkeypatch) -> list:
    calls = []
    original = Path.replace

    def counting(self, target):
        calls.append(self)
        return original(self, target)

    monkeypatch.setattr(Path, "replace", counting)
    return calls


def test_a_save_killed_at_any_rename_leaves_a_whole_checkpoint(tmp_path, tiny_tokenizer, monkeypatch):
    versions = {v: _checkpoint(tiny_tokenizer, v) for v in (1, 2)}
    with monkeypatch.context() as patch:  # how many renames one save makes
        reference = tmp_path / "reference"
        save_meta_checkpoint(reference, *versions[1])
        calls = _count_renames(patch)
        save_meta_checkpoint(reference, *versions[2])
        n_renames = len(calls)
    assert n_renames >= 5  # the commit, then one per item
    for kill_at in range(n_renames):
        directory = tmp_path / f"kill-{kill_at}"
        save_meta_checkpoint(directory, *versions[1])
        original, seen = Path.replace, []

        def dying(self, target, kill_at=kill_at, seen=seen):
            if len(seen) == kill_at:
                raise Killed
            seen.append(self)
            return original(self, target)

        with monkeypatch.context() as patch:
            patch.setattr(Path, "replace", dying)
            with pytest.raises(Killed):
                save_meta_checkpoint(directory, *versions[2])
        # killed before the commit: the old checkpoint; after it: the new one, finished by the reader
        assert _saved_version(directory, tiny_tokenizer, versions) == (1 if kill_at == 0 else 2)
        assert not (directory / ".ready").exists()


def test_a_save_killed_while_writing_files_keeps_the_previous_checkpoint(tmp_path, tiny_tokenizer, monkeypatch):
    versions = {v: _checkpoint(tiny_tokenizer, v) for v in (1, 2)}
    save_meta_checkpoint(tmp_path, *versions[1])

    def dying_save(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(torch, "save", dying_save)  # the training state is written last
    with pytest.raises(Killed):
        save_meta_checkpoint(tmp_path, *versions[2])
    monkeypatch.undo()
    assert (tmp_path / ".incoming").is_dir()  # the half-written one is still there ...
    assert _saved_version(tmp_path, tiny_tokenizer, versions) == 1  # ... and no reader sees it
    discard_unfinished_write(tmp_path)  # what --resume does first
    assert not (tmp_path / ".incoming").exists()
    save_meta_checkpoint(tmp_path, *versions[2])
    assert _saved_version(tmp_path, tiny_tokenizer, versions) == 2


def test_a_checkpoint_without_a_scorer_replaces_one_with_it(tmp_path, tiny_tokenizer):
    model, scorer, info, state = _checkpoint(tiny_tokenizer, 1)
    save_meta_checkpoint(tmp_path, model, scorer, info, state)
    save_meta_checkpoint(tmp_path, model, None, {**info, "version": 3}, {"step": 3})
    assert not (tmp_path / "scorer").exists()  # no stale scorer from the previous save
    assert json.loads((tmp_path / "mass.json").read_text())["version"] == 3
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "adapter", "mass.json", "train_state.pt"]


def test_a_checkpoint_missing_its_adapter_is_a_clear_error(tmp_path, tiny_tokenizer):
    save_meta_checkpoint(tmp_path, *_checkpoint(tiny_tokenizer, 1))
    shutil.rmtree(tmp_path / "adapter")
    with pytest.raises(MassError, match="no adapter"):
        load_meta_checkpoint(tiny_llama(tiny_tokenizer), tmp_path)


def test_a_checkpoint_from_before_the_adapter_rename_loads_and_a_save_over_it_leaves_one_adapter(
        tmp_path, tiny_tokenizer):
    versions = {v: _checkpoint(tiny_tokenizer, v) for v in (1, 2)}
    save_meta_checkpoint(tmp_path, *versions[1])
    (tmp_path / "adapter").rename(tmp_path / "generator")  # as written before 2026-11-22
    assert _saved_version(tmp_path, tiny_tokenizer, versions) == 1  # its LoRA values, from generator/
    save_meta_checkpoint(tmp_path, *versions[2])
    assert (tmp_path / "adapter").is_dir() and not (tmp_path / "generator").exists()
    assert _saved_version(tmp_path, tiny_tokenizer, versions) == 2


@pytest.mark.parametrize("damage", ["mass.json", "scorer.json", "scorer.safetensors", "adapter_model.safetensors"])
def test_a_damaged_checkpoint_is_a_clear_error(tmp_path, tiny_tokenizer, damage):
    save_meta_checkpoint(tmp_path, *_checkpoint(tiny_tokenizer, 1))
    folder = {"mass.json": "", "adapter_model.safetensors": "adapter"}.get(damage, "scorer")
    path = tmp_path / folder / damage
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # a file cut short
    with pytest.raises(MassError, match="damaged"):
        load_meta_checkpoint(tiny_llama(tiny_tokenizer), tmp_path)


def test_resuming_from_an_adapter_folder_without_its_config_is_a_clear_error(tmp_path, tiny_tokenizer):
    """Not a silent fresh start, which would clear metrics.jsonl and overwrite the checkpoint."""
    save_meta_checkpoint(tmp_path, *_checkpoint(tiny_tokenizer, 1))
    (tmp_path / "adapter" / "adapter_config.json").unlink()
    with pytest.raises(MassError, match="cannot resume"):
        resume_or_start(tiny_llama(tiny_tokenizer), tmp_path, LoraSettings(rank=4), seed=0, resume=True)
    assert (tmp_path / "train_state.pt").is_file()
