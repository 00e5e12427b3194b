"""Can the scorer learn to rank right synthesised examples above wrong ones from the meta-gradient?

An offline stand-in for the scorer half of `mass meta-train outer=gold`, fast enough to compare
update rules. Phase 1 (`collect`) synthesises m examples for N training problems of minimath-meta
and the first H held-out ones (minimath-dev) with a fresh generator, and keeps per example: the
scorer's inputs (embeddings, confidence statistics), whether its answer is right, and the gold
meta-gradient dL/ds_i at uniform weights (the signal the scorer is trained on at step 0). Phase 2
(`fit`) trains a fresh scorer on the training groups with the signal held fixed (first order:
the scorer's loss is sum_i s_i * g_i per group) under several rules, and reports the held-out
within-T AUC of its weights against correctness; and the AUC of the signal and of single features.

    python scripts/scorer_probe.py collect 48 24 runs/scorer_probe/data.pt    # N train, H held-out
    python scripts/scorer_probe.py fit runs/scorer_probe/data.pt
"""
import sys
from pathlib import Path

import torch

from mass.adaptation import example_batch, synth_sampling_default
from mass.synthesis import synthesise
from mass.inner import example_losses, lora_params
from mass.metagrad import meta_grad_hybrid
from mass.meta_train import _train_adapt, graded_examples
from mass.tasks import load_task
from mass.training import split_training_problems
from mass.models import LoraSettings, attach_lora, load_model, make_sft_batch
from mass.prompts import solve_prompt
from mass.scorer import STATS, Scorer, embed_texts, example_stats, within_group_auc


def collect(n_train: int, n_held: int, path: Path) -> None:
    base, tok = load_model(None, "float32", "cpu", attn_implementation="mass_math")
    torch.manual_seed(0)
    lora = LoraSettings()
    model = attach_lora(base, lora.rank, lora.alpha, lora.targets, init=lora.init)
    model.eval()
    phi0 = lora_params(model)
    cfg = _train_adapt()
    train, held = split_training_problems(load_task("minimath-meta"), None, 100, 4)
    groups = []
    for split, problems in (("train", train[:n_train]), ("heldout", held[:n_held])):
        gen = torch.Generator().manual_seed(1 if split == "train" else 2)
        syntheses = synthesise(model, tok, [t.problem for t in problems], cfg.m, synth_sampling_default(), gen)
        for t, syn in zip(problems, syntheses):
            if len(syn.examples) < 2:
                continue
            right = graded_examples(t, syn.examples)
            batch = example_batch(tok, syn.examples, "cpu")
            gold = make_sft_batch(tok, [solve_prompt(t.problem)], [f" {t.solution}"], "cpu")
            m = len(syn.examples)
            mg = meta_grad_hybrid(model, phi0, batch, torch.full((m,), 1 / m), cfg.lr, cfg.steps,
                                  lambda phi: example_losses(model, phi, gold).mean())
            feats = embed_texts(model, tok, [f"Problem: {t.problem}"] +
                                [f"Problem: {e.problem}\nSolution: {e.solution}" for e in syn.examples])
            stats = example_stats(model, tok, t.problem, syn.examples)
            groups.append({"split": split, "id": t.id, "target": feats[0], "examples": feats[1:], "stats": stats,
                           "right": right, "g": mg.ds.float()})
            print(split, t.id, f"right {sum(right)}/{m}", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(groups, path)


def shaped_signal(g: torch.Tensor, rule: str) -> torch.Tensor:
    """The per-example signal the scorer descends on, from the meta-gradient g = dL/ds."""
    if rule == "raw":
        return g
    if rule == "centred":  # no common part: the scorer cannot learn 'move further' from it
        return g - g.mean()
    if rule == "standardised":  # centred and scaled per T, as GRPO does with rewards
        return (g - g.mean()) / (g.std() + 1e-12)
    if rule == "sign":  # which half of its group an example is in
        return torch.sign(g - g.median())
    raise ValueError(rule)


def fit(path: Path, normalise: str, rule: str, epochs: int = 6, lr: float = 3e-2, seed: int = 0) -> tuple:
    groups = torch.load(path)
    train = [g for g in groups if g["split"] == "train"]
    held = [g for g in groups if g["split"] == "heldout" and 0 < sum(g["right"]) < len(g["right"])]
    torch.manual_seed(seed)
    scorer = Scorer(train[0]["target"].shape[-1], 64, normalise, n_stats=len(STATS))
    opt = torch.optim.Adam(scorer.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(train), generator=order).tolist()
        for start in range(0, len(perm), 4):
            loss = sum((scorer(train[i]["target"], train[i]["examples"], train[i]["stats"]) *
                        shaped_signal(train[i]["g"], rule)).sum() for i in perm[start:start + 4]) / 4
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        weights = [([float(w) for w in scorer(g["target"], g["examples"], g["stats"])], g["right"]) for g in held]
    return within_group_auc(weights), sum(sum(w) for w, _ in weights) / len(weights)


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ranks = torch.stack([a.argsort().argsort().float(), b.argsort().argsort().float()])
    return float(torch.corrcoef(ranks)[0, 1])


def report(path: Path) -> None:
    groups = torch.load(path)
    for split in ("train", "heldout"):
        gs = [g for g in groups if g["split"] == split]
        share = sum(sum(g["right"]) for g in gs) / sum(len(g["right"]) for g in gs)
        print(f"{split}: {len(gs)} groups, right share {share:.3f}, "
              f"signal AUC (-dL/ds) {within_group_auc([(list(-g['g']), g['right']) for g in gs]):.3f}")
        for j, name in enumerate(STATS):
            auc = within_group_auc([(list(-g["stats"][:, j]), g["right"]) for g in gs])
            rho = [_spearman(-g["g"], g["stats"][:, j]) for g in gs]
            rho = [r for r in rho if r == r]
            print(f"   AUC of -{name}: {auc:.3f}; its within-T Spearman with -dL/ds: {sum(rho) / len(rho):+.3f}")
        right = [float(-x) for g in gs for x, c in zip(g["g"], g["right"]) if c]
        wrong = [float(-x) for g in gs for x, c in zip(g["g"], g["right"]) if not c]
        print(f"   mean -dL/ds over all groups: right examples {sum(right) / len(right):.2e}, "
              f"wrong {sum(wrong) / len(wrong):.2e}")
    for normalise in ("sigmoid", "softmax"):
        for rule in ("raw", "centred", "standardised", "sign"):
            aucs = [fit(path, normalise, rule, seed=seed) for seed in range(3)]
            print(f"{normalise:8s} {rule:13s} held-out weight AUC " +
                  " ".join(f"{a:.3f}" for a, _ in aucs) + f"   mean weight sum {aucs[0][1]:.2f}", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "collect":
        collect(int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
    else:
        report(Path(sys.argv[2]))
