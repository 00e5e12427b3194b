"""The scorer s_eta: a weight s_i >= 0 for each synthesised example (T, p_i, a_i).

A small MLP head over two kinds of features, both computed without gradient:
- text: the mean-pooled last hidden state of the base model (adapters off) of "Problem: T" (h_T)
  and of "Problem: p_i\\nSolution: a_i" (h_i);
- confidence (`example_stats`): how surprised the model itself (adapters on, i.e. the generator
  phi_0) is by each example: mean and largest token NLL of the whole sample under the synthesis
  prompt, the same of the worked answer a_i under the solving prompt, and log length. A sampled
  slip, such as a wrong digit or a wrong definition, is a low-probability token.
Examples of one T differ little in absolute terms, so both kinds also enter standardised within
the group of m: the head sees [h_T, h_i, h_T * h_i, z(h_i), stats_i, z(stats_i)] and gives a
logit z_i per example. Two normalisations (setting `normalise`):

- "softmax": s = softmax(z) over the m examples; weights sum to one (a weighted mean loss);
- "sigmoid": s_i = 2 sigmoid(z_i) / m, independent and bounded in (0, 2/m).

The last layer starts at zero, so both start at uniform weights 1/m: a fresh scorer is exactly
TT-SS's uniform weighting, and meta-training moves it from there.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from mass.errors import MassError
from mass.inner import scored_logprobs
from mass.models import length_sorted_batches, make_sft_batch, uses_chat_template
from mass.prompts import SynthExample, solve_prompt, synth_completion, synth_prompt

NORMALISATIONS = ("softmax", "sigmoid")
STATS = ("synth_mean_nll", "synth_max_nll", "answer_mean_nll", "answer_max_nll", "log_tokens")


def standardise(x: torch.Tensor) -> torch.Tensor:
    """Each column standardised over the m examples of one T (zero when they are all equal).  (m, k)"""
    if x.shape[0] < 2:
        return torch.zeros_like(x)
    return (x - x.mean(0)) / (x.std(0) + 1e-3)


class Scorer(nn.Module):
    def __init__(self, hidden_size: int, width: int = 64, normalise: str = "softmax", n_stats: int = 0) -> None:
        super().__init__()
        if normalise not in NORMALISATIONS:
            raise MassError(f"scorer normalisation must be one of {', '.join(NORMALISATIONS)}, got '{normalise}'")
        if n_stats not in (0, len(STATS)):
            raise MassError(f"a scorer takes either no confidence statistics or all {len(STATS)}; got {n_stats}")
        self.hidden_size, self.width, self.normalise, self.n_stats = hidden_size, width, normalise, n_stats
        inputs = (4 * hidden_size + 2 * n_stats) if n_stats else 3 * hidden_size  # n_stats=0: the first design
        self.net = nn.Sequential(nn.Linear(inputs, width), nn.Tanh(), nn.Linear(width, 1))
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    def logits(self, target: torch.Tensor, examples: torch.Tensor, stats: torch.Tensor | None = None) -> torch.Tensor:
        """target: (d,), examples: (m, d), stats: (m, n_stats) -> z: (m,)"""
        t = target.expand_as(examples)
        parts = [t, examples, t * examples]
        if self.n_stats:
            if stats is None or stats.shape[-1] != self.n_stats:
                raise MassError(f"this scorer needs the {self.n_stats} example statistics (mass.scorer.example_stats)")
            parts += [standardise(examples), stats, standardise(stats)]
        return self.net(torch.cat(parts, dim=-1)).squeeze(-1)

    def forward(self, target: torch.Tensor, examples: torch.Tensor, stats: torch.Tensor | None = None) -> torch.Tensor:
        """Weights s (m,), >= 0."""
        z = self.logits(target, examples, stats)
        if self.normalise == "softmax":
            return torch.softmax(z, dim=-1)
        return 2 * torch.sigmoid(z) / z.shape[-1]


def within_group_auc(groups: list[tuple[list[float], list[bool]]]) -> float | None:
    """How well weights rank right above wrong examples of the same T: the share of (right, wrong)
    pairs within a group where the right one weighs more (ties count half). None without pairs."""
    hits, pairs = 0.0, 0
    for weights, correct in groups:
        right = [w for w, c in zip(weights, correct) if c]
        wrong = [w for w, c in zip(weights, correct) if not c]
        for r in right:
            for w in wrong:
                hits += 1.0 if r > w else 0.5 if r == w else 0.0
                pairs += 1
    return hits / pairs if pairs else None


@torch.no_grad()
def embed_texts(model, tokenizer, texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """Mean-pooled last hidden states of the base model with adapters off.  -> (n, d) float32

    Texts go through the model in order of length, so that little is padded."""
    device = next(model.parameters()).device
    out = torch.zeros(len(texts), model.config.get_text_config().hidden_size, device=device)
    context = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
    with context:
        for idx in length_sorted_batches([len(t) for t in texts], batch_size):
            enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True).to(device)
            positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # padding-independent features
            hidden = model(**enc, position_ids=positions, output_hidden_states=True,  # no logits but the last
                           logits_to_keep=1).hidden_states[-1].float()  # (B, L, d)      (a 128k vocabulary's are GBs)
            mask = enc["attention_mask"][..., None].float()
            out[idx] = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    return out


@torch.no_grad()
def example_stats(model, tokenizer, target: str, examples: list[SynthExample]) -> torch.Tensor:
    """The model's own surprise at each example, with its current adapter (phi_0).  -> (m, len(STATS)) float32

    synth_*: token NLL of the whole sample "p_i / Solution: a_i" after the synthesis prompt for T
    (the generator's view); answer_*: token NLL of a_i after the solving prompt for p_i (the
    solver's view); log_tokens: log of the answer's token count.
    """
    return group_stats(model, tokenizer, [target], [examples])[0]


@torch.no_grad()
def group_stats(model, tokenizer, targets: list[str], example_sets: list[list[SynthExample]], chunk: int = 64,
                answer_nll: torch.Tensor | None = None, synth_nll: torch.Tensor | None = None) -> list[torch.Tensor]:
    """`example_stats` of many targets' examples at once (rows of all groups share forward passes).

    `answer_nll`, `synth_nll`: (rows, 3) (mean, largest, count) of the rows of all groups, in
    order, where a caller has them already (the first inner step's forward pass, the sampling
    itself; NaN rows: not known); only what is not known costs a forward pass here."""
    chat = uses_chat_template(tokenizer)
    pairs = [(t, e) for t, examples in zip(targets, example_sets) for e in examples]
    synth = _known_or_computed(model, tokenizer, synth_nll, [synth_prompt(t, chat) for t, _ in pairs],
                               [synth_completion(e.problem, e.solution, chat) for _, e in pairs], chunk)
    answer = _known_or_computed(model, tokenizer, answer_nll, [solve_prompt(e.problem, chat) for _, e in pairs],
                                [f" {e.solution}" for _, e in pairs], chunk)
    stats = torch.cat([synth[:, :2], answer[:, :2], answer[:, 2:].log()], dim=-1)  # (rows, len(STATS))
    return list(stats.split([len(examples) for examples in example_sets]))


def nll_summary(nll: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(mean, largest, count) of each row's token NLLs where `mask` is 1.  (n, L), (n, L) -> (n, 3) float32"""
    nll, mask = nll.detach().float(), mask.float()
    count = mask.sum(-1).clamp(min=1)
    return torch.stack([(nll * mask).sum(-1) / count, (nll * mask).max(-1).values, count], dim=-1)


def _known_or_computed(model, tokenizer, known: torch.Tensor | None, prompts: list, completions: list[str],
                       chunk: int) -> torch.Tensor:
    """`known` (n, 3) with its NaN rows (all rows if None) filled by `_completion_nll`."""
    device = next(model.parameters()).device
    out = torch.full((len(prompts), 3), float("nan"), device=device) if known is None else known.to(device).clone()
    missing = out.isnan().any(-1).nonzero().squeeze(1).tolist()
    if missing:
        out[missing] = _completion_nll(model, tokenizer, [prompts[i] for i in missing],
                                       [completions[i] for i in missing], chunk)
    return out


def _completion_nll(model, tokenizer, prompts: list, completions: list[str], chunk: int) -> torch.Tensor:
    """(mean token NLL, largest token NLL, token count) of each completion after its prompt.  -> (n, 3)

    Rows go through the model `chunk` at a time in order of length, so that little is padded."""
    device = next(model.parameters()).device
    out = torch.zeros(len(prompts), 3, device=device)
    for idx in length_sorted_batches([len(p) + len(c) for p, c in zip(prompts, completions)], chunk):
        batch = make_sft_batch(tokenizer, [prompts[i] for i in idx], [completions[i] for i in idx], device)
        logp, scored = scored_logprobs(model, {}, batch)
        out[idx] = nll_summary(-logp, scored)
    return out


def save_scorer(scorer: Scorer, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in scorer.state_dict().items()}, directory / "scorer.safetensors")
    (directory / "scorer.json").write_text(json.dumps(
        {"hidden_size": scorer.hidden_size, "width": scorer.width, "normalise": scorer.normalise,
         "n_stats": scorer.n_stats}, indent=2) + "\n")


def load_scorer(directory: Path) -> Scorer:
    meta_path, weights = directory / "scorer.json", directory / "scorer.safetensors"
    if not meta_path.is_file() or not weights.is_file():
        raise MassError(f"no scorer in {directory} (expected scorer.json and scorer.safetensors)")
    try:
        scorer = Scorer(**json.loads(meta_path.read_text(encoding="utf-8")))
        scorer.load_state_dict(load_file(weights))
    except (ValueError, TypeError, RuntimeError, OSError, SafetensorError) as e:  # bad JSON, keys, shapes, a cut file
        raise MassError(f"the scorer in {directory} is damaged ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:160]})") from None
    return scorer
