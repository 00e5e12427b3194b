"""The scorer s_eta: a weight s_i >= 0 for each synthesised example (T, p_i, a_i).

A small MLP head over frozen features of the base model (adapters off): the mean-pooled last
hidden state of "Problem: T" and of "Problem: p_i\\nSolution: a_i". Input to the head is
[h_T, h_i, h_T * h_i]; output a logit z_i per example. Two normalisations (setting `normalise`):

- "softmax": s = softmax(z) over the m examples; weights sum to one (a weighted mean loss);
- "sigmoid": s_i = 2 sigmoid(z_i) / m, independent and bounded in (0, 2/m).

The last layer starts at zero, so both start at uniform weights 1/m: a fresh scorer is exactly
TT-SS's uniform weighting, and meta-training moves it from there.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mass.errors import MassError

NORMALISATIONS = ("softmax", "sigmoid")


class Scorer(nn.Module):
    def __init__(self, hidden_size: int, width: int = 64, normalise: str = "softmax") -> None:
        super().__init__()
        if normalise not in NORMALISATIONS:
            raise MassError(f"scorer normalisation must be one of {', '.join(NORMALISATIONS)}, got '{normalise}'")
        self.hidden_size, self.width, self.normalise = hidden_size, width, normalise
        self.net = nn.Sequential(nn.Linear(3 * hidden_size, width), nn.Tanh(), nn.Linear(width, 1))
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    def logits(self, target: torch.Tensor, examples: torch.Tensor) -> torch.Tensor:
        """target: (d,), examples: (m, d) -> z: (m,)"""
        t = target.expand_as(examples)
        return self.net(torch.cat([t, examples, t * examples], dim=-1)).squeeze(-1)

    def forward(self, target: torch.Tensor, examples: torch.Tensor) -> torch.Tensor:
        """Weights s (m,), >= 0."""
        z = self.logits(target, examples)
        if self.normalise == "softmax":
            return torch.softmax(z, dim=-1)
        return 2 * torch.sigmoid(z) / z.shape[-1]


@torch.no_grad()
def embed_texts(model, tokenizer, texts: list[str], batch_size: int = 32) -> torch.Tensor:
    """Mean-pooled last hidden states of the base model with adapters off.  -> (n, d) float32"""
    device = next(model.parameters()).device
    out = []
    context = model.disable_adapter() if hasattr(model, "disable_adapter") else _null()
    with context:
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True).to(device)
            positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # padding-independent features
            hidden = model(**enc, position_ids=positions, output_hidden_states=True).hidden_states[-1].float()  # (B, L, d)
            mask = enc["attention_mask"][..., None].float()
            out.append((hidden * mask).sum(1) / mask.sum(1).clamp(min=1))
    return torch.cat(out)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def save_scorer(scorer: Scorer, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in scorer.state_dict().items()}, directory / "scorer.safetensors")
    (directory / "scorer.json").write_text(json.dumps(
        {"hidden_size": scorer.hidden_size, "width": scorer.width, "normalise": scorer.normalise}, indent=2) + "\n")


def load_scorer(directory: Path) -> Scorer:
    meta_path, weights = directory / "scorer.json", directory / "scorer.safetensors"
    if not meta_path.is_file() or not weights.is_file():
        raise MassError(f"no scorer in {directory} (expected scorer.json and scorer.safetensors)")
    scorer = Scorer(**json.loads(meta_path.read_text()))
    scorer.load_state_dict(load_file(weights))
    return scorer
