"""Meta-training checkpoints: the generator LoRA as a standard PEFT adapter, the scorer as
safetensors, and the training state that makes `--resume` exact.

    DIR/generator/          adapter_config.json, adapter_model.safetensors (PEFT)
    DIR/scorer/             scorer.json, scorer.safetensors
    DIR/mass.json           which base model, outer loss, and the full meta-training config
    DIR/train_state.pt      step and optimizer states (for --resume only)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mass.errors import MassError
from mass.inner import Params, lora_params
from mass.scorer import Scorer, load_scorer, save_scorer


def save_meta_checkpoint(directory: Path, peft_model, scorer: Scorer | None, info: dict, state: dict) -> None:
    """Save a checkpoint; `mass grpo` (Solver GRPO) saves one with no scorer."""
    directory.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(directory / "generator")
    if scorer is not None:
        save_scorer(scorer, directory / "scorer")
    (directory / "mass.json").write_text(json.dumps(info, indent=2) + "\n")
    tmp = directory / "train_state.pt.tmp"
    torch.save(state, tmp)
    tmp.replace(directory / "train_state.pt")


def read_meta_info(directory: str | Path) -> dict:
    path = Path(directory) / "mass.json"
    if not path.is_file():
        raise MassError(f"{directory} is not a MASS checkpoint (no mass.json); make one with `mass meta-train`")
    return json.loads(path.read_text())


def checkpoint_model(directory: str | Path | None) -> str:
    """The base model a MASS checkpoint was meta-trained on ('' for the embedded one, or no checkpoint)."""
    return read_meta_info(directory).get("model", "") if directory else ""


def load_generator(model, directory: str | Path):
    """The PEFT model with the checkpoint's LoRA (the meta-trained generator, or the GRPO solver)."""
    from peft import PeftModel

    directory = Path(directory)
    read_meta_info(directory)
    peft_model = PeftModel.from_pretrained(model, directory / "generator", is_trainable=True)
    return peft_model.eval()


def load_meta_checkpoint(model, directory: str | Path) -> tuple[object, Scorer, Params]:
    """(PEFT model with the meta-trained generator LoRA, scorer, its LoRA values phi_0)."""
    directory = Path(directory)
    if not (directory / "scorer").is_dir():
        raise MassError(f"{directory} has no scorer/: it is not a `mass meta-train` checkpoint")
    peft_model = load_generator(model, directory)
    device = next(model.parameters()).device
    scorer = load_scorer(directory / "scorer").to(device).eval()
    return peft_model, scorer, lora_params(peft_model)


def load_train_state(path: Path) -> dict:
    """A saved training state (tensors, numbers, optimizer state dicts). `weights_only=True`: a
    file that would run code when unpickled is refused, never executed."""
    import pickle

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
    """
    from peft import PeftModel

    from mass.models import attach_lora

    if resume and (out / "generator").is_dir():
        model = PeftModel.from_pretrained(base, out / "generator", is_trainable=True)
        state = load_train_state(out / "train_state.pt")
        print(f"resuming from step {state['step']} in {out}")
        drop_metrics_after(out / "metrics.jsonl", state["step"])
    else:
        torch.manual_seed(seed)
        model = attach_lora(base, lora.rank, lora.alpha, lora.targets, init=lora.init)
        state = None
        (out / "metrics.jsonl").unlink(missing_ok=True)
    model.eval()
    live = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for p in live.values():
        p.data = p.data.float()
    return model, live, state, state["step"] if state else 0
