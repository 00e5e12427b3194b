"""Meta-training checkpoints: the LoRA adapter (MASS's generator, or Solver GRPO's solver) as a
standard PEFT adapter, the scorer as safetensors, and the training state that makes `--resume` exact.

    DIR/adapter/            adapter_config.json, adapter_model.safetensors (PEFT); checkpoints
                            written before 2026-11-22 call it generator/, and still load
    DIR/scorer/             scorer.json, scorer.safetensors
    DIR/mass.json           which base model, outer loss, and the full meta-training config
    DIR/train_state.pt      step and optimizer states (for --resume only)

Writes are atomic as a whole: a checkpoint is written into DIR/.incoming/, which is renamed to
DIR/.ready/ once complete (the commit point), and only then moved into place item by item,
under a lock on DIR/.lock. A process killed before the commit point leaves the previous
checkpoint untouched (the next save or `--resume` deletes the partial .incoming/); killed after
it, the next reader or writer finishes the move. So every load sees the previous checkpoint or
the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError

from mass import dist
from mass.errors import MassError
from mass.inner import Params, lora_params
from mass.models import attach_lora
from mass.scorer import Scorer, load_scorer, save_scorer


ADAPTER, OLD_ADAPTER = "adapter", "generator"  # the adapter folder's name, and its name before 2026-11-22
# what a save replaces (an old-named adapter folder too, so a save over an old checkpoint leaves one)
CHECKPOINT_ITEMS = (ADAPTER, OLD_ADAPTER, "scorer", "mass.json", "train_state.pt")
# the embedded model's meta-trained checkpoints, shipped in the package: mass, mass-gold, solver-grpo
SHIPPED_CHECKPOINTS = Path(__file__).parent / "assets" / "checkpoints"


def is_shipped(path: Path) -> bool:
    return Path(path).resolve().is_relative_to(SHIPPED_CHECKPOINTS.resolve())


def default_checkpoint(method: str, model: str) -> Path | None:
    """The shipped checkpoint of `method` for the embedded model (model ''), else None."""
    path = SHIPPED_CHECKPOINTS / method
    return path if not model and (path / "mass.json").is_file() else None


def save_meta_checkpoint(directory: Path, peft_model, scorer: Scorer | None, info: dict, state: dict) -> None:
    """Save a checkpoint atomically (module docstring); `mass grpo` (Solver GRPO) saves one with no scorer."""
    directory.mkdir(parents=True, exist_ok=True)
    discard_unfinished_write(directory)
    incoming = directory / ".incoming"
    incoming.mkdir()
    peft_model.save_pretrained(incoming / ADAPTER)
    if scorer is not None:
        save_scorer(scorer, incoming / "scorer")
    (incoming / "mass.json").write_text(json.dumps(info, indent=2) + "\n")
    torch.save(state, incoming / "train_state.pt")
    (incoming / "manifest.json").write_text(json.dumps(sorted(p.name for p in incoming.iterdir())) + "\n")
    _sync_tree(incoming)
    with _locked(directory):
        incoming.replace(directory / ".ready")  # the commit point
        _move_ready(directory)


def discard_unfinished_write(directory: Path) -> None:
    """For the writer only (a save, a resume): finish a committed save a kill interrupted, and
    delete an uncommitted one."""
    shutil.rmtree(Path(directory) / ".incoming", ignore_errors=True)
    finish_committed_write(directory)


def finish_committed_write(directory: Path) -> None:
    """Move a committed checkpoint (.ready/) into place, if a kill left one; safe for readers too
    (the move holds the directory's lock, as the writer's does). Idempotent."""
    directory = Path(directory)
    if (directory / ".ready").is_dir():
        with _locked(directory):
            _move_ready(directory)


def _move_ready(directory: Path) -> None:
    ready = directory / ".ready"
    if not ready.is_dir():  # another process finished it
        return
    manifest = json.loads((ready / "manifest.json").read_text())
    for name in CHECKPOINT_ITEMS:
        new, old = ready / name, directory / name
        if name not in manifest:  # the new checkpoint has no such item (Solver GRPO: no scorer)
            _remove(old)
        elif new.exists():  # not moved yet (once moved, directory/name is already the new one)
            _remove(old)
            new.replace(old)
    shutil.rmtree(ready)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive advisory lock on directory/.lock (POSIX; elsewhere no lock)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with (directory / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _sync_tree(root: Path) -> None:
    """fsync every file under root, so the commit rename never points at data still in the page cache."""
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with path.open("rb") as f:
                os.fsync(f.fileno())


def read_meta_info(directory: str | Path) -> dict:
    finish_committed_write(Path(directory))
    path = Path(directory) / "mass.json"
    if not path.is_file():
        raise MassError(f"{directory} is not a MASS checkpoint (no mass.json); make one with `mass meta-train`")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MassError(f"{path} is not valid JSON ({str(e).splitlines()[0][:120]}): the checkpoint is damaged") from None
    if not isinstance(info, dict):
        raise MassError(f"{path} should hold a JSON object: the checkpoint is damaged")
    return info


def checkpoint_model(directory: str | Path | None) -> str:
    """The base model a MASS checkpoint was meta-trained on ('' for the embedded one, or no checkpoint)."""
    return read_meta_info(directory).get("model", "") if directory else ""


def adapter_dir(directory: str | Path) -> Path | None:
    """The checkpoint's PEFT adapter folder (adapter/, or generator/ in an older checkpoint), or None."""
    for name in (ADAPTER, OLD_ADAPTER):
        if (Path(directory) / name / "adapter_config.json").is_file():
            return Path(directory) / name
    return None


def load_adapter(model, directory: str | Path):
    """The PEFT model with the checkpoint's LoRA (the meta-trained generator, or the GRPO solver)."""
    from peft import PeftModel

    directory = Path(directory)
    read_meta_info(directory)
    folder = adapter_dir(directory)
    if folder is None:
        raise MassError(f"{directory} has no {ADAPTER}/adapter_config.json: the checkpoint is incomplete")
    try:
        peft_model = PeftModel.from_pretrained(model, folder, is_trainable=True)
    except (ValueError, TypeError, RuntimeError, OSError, KeyError, SafetensorError) as e:
        raise MassError(f"the LoRA adapter in {directory} is damaged or does not fit this model "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
    return peft_model.eval()


def load_meta_checkpoint(model, directory: str | Path) -> tuple[object, Scorer, Params]:
    """(PEFT model with the meta-trained generator LoRA, scorer, its LoRA values phi_0)."""
    directory = Path(directory)
    if not (directory / "scorer").is_dir():
        raise MassError(f"{directory} has no scorer/: it is not a `mass meta-train` checkpoint")
    peft_model = load_adapter(model, directory)
    device = next(model.parameters()).device
    scorer = load_scorer(directory / "scorer").to(device).eval()
    return peft_model, scorer, lora_params(peft_model)


def load_train_state(path: Path) -> dict:
    """A saved training state (tensors, numbers, optimizer state dicts). `weights_only=True`: a
    file that would run code when unpickled is refused, never executed."""
    try:
        return torch.load(path, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise MassError(f"{path} is not a training state this program wrote (refused to load it: "
                        f"{str(exc).splitlines()[0][:200]})") from None


def drop_metrics_after(path: Path, step: int) -> None:
    """Keep only the metric rows up to `step`: those logged after the last checkpoint are redone."""
    if path.is_file():
        rows = [line for line in path.read_text().splitlines() if line.strip()]
        path.write_text("".join(f"{line}\n" for line in rows if json.loads(line).get("step", 0) <= step))


def resume_or_start(base, out: Path, lora, seed: int, resume: bool) -> tuple[object, dict, dict | None, int]:
    """(trainable PEFT model, its LoRA parameters in float32, saved training state or None, first step).

    With `resume` and a checkpoint in `out`, continues from it; otherwise seeds torch with `seed`
    (so the LoRA initialisation, and whatever the caller initialises next, depend on it alone),
    attaches a fresh LoRA and clears `out/metrics.jsonl`. The model is in eval mode: no dropout.
    Under torchrun every rank loads the same checkpoint, once rank 0 (the only one that writes
    into `out`) has finished a save a kill interrupted.
    """
    from peft import PeftModel

    if resume and dist.is_main():
        discard_unfinished_write(out)
    dist.barrier()  # no rank reads the checkpoint before it is whole
    folder = adapter_dir(out) if resume else None
    if resume and folder is None and any((out / name).exists() for name in (ADAPTER, OLD_ADAPTER)):
        raise MassError(f"cannot resume from {out}: its {ADAPTER}/ folder has no adapter_config.json (an "
                        "incomplete checkpoint); start afresh without --resume, or into another directory")
    if folder is not None:
        model = PeftModel.from_pretrained(base, folder, is_trainable=True)
        state = load_train_state(out / "train_state.pt")
        dist.print0(f"resuming from step {state['step']} in {out}")
        if dist.is_main():
            drop_metrics_after(out / "metrics.jsonl", state["step"])
    else:
        torch.manual_seed(seed)
        model = attach_lora(base, lora.rank, lora.alpha, lora.targets, init=lora.init)
        state = None
        if dist.is_main():
            (out / "metrics.jsonl").unlink(missing_ok=True)
    model.eval()
    live = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for p in live.values():
        p.data = p.data.float()
    return model, live, state, state["step"] if state else 0
