"""`mass headroom`: how much can test-time adaptation help this model on this task, at best?

Before tuning a scorer or a generator, measure the ceiling. For each problem T, a fresh LoRA
(the `lora.*` settings) takes K plain SGD steps (uniform weights) on one of these data sets,
then answers T greedily:

  base        no adaptation (one answer, the reference line);
  memorise    T itself with its gold solution: the memorisation ceiling (can the step learn at all?);
  curriculum  m gold problems of T's kind: the curriculum ceiling (can related examples teach?).
              MiniMath: fresh problems of T's own template and level. Other tasks: the m nearest
              problems of `train_data` (same subject and level first, then most word overlap);
  ttss        m examples the model writes itself for T (TT-SS, what MASS starts from);
  ttss-right  only those self-written examples whose answers are right: the ideal-scorer
              ceiling (MiniMath only, where every synthesised problem can be re-solved).

over a grid of inner learning rates (`lrs`) and step counts (`steps`). It prints and writes a
table (`headroom.md`), every figure and per-problem outcome (`headroom.json`) and a plot of
accuracy against lr, one line per condition (`headroom.png`), under `out`. It is the first
thing to run on a new model: it tells whether adaptation can matter and which `adapt.lr` to use.

    mass headroom --data minimath-meta --per-subject 20            # tune on development data
    mass headroom --data minimath-500 lora.targets=[q_proj,v_proj] lrs=[0.1,1]
    mass headroom --model ./tiny-llama --data ../shared/data/math500_test.jsonl \\
        --train-data ../shared/data/math_train.jsonl --limit 20
    torchrun --standalone --nproc_per_node 2 -m mass headroom     # problems split over ranks
"""

from __future__ import annotations

import random
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from mass import dist
from mass.adaptation import example_batch, synth_sampling_default, use_lora
from mass.checker import is_equivalent
from mass.config import config_to_dict, nested, setting
from mass.errors import MassError
from mass.results import wilson_interval, write_json
from mass.synthesis import synthesise
from mass.batched import batched_answers, batched_trajectory, stack_params
from mass.inner import lora_params
from mass.minimath import grade_synthesised, kindred_problems, problem_kind, solve_text
from mass.models import (LoraSettings, SamplingConfig, attach_lora, fit_problems, load_model, resolve_model_name,
                         uses_chat_template)
from mass.prompts import SynthExample
from mass.tasks import load_task
from mass.problem import Problem
from mass.training import training_device

CONDITIONS = ("base", "memorise", "curriculum", "ttss", "ttss-right")


@dataclass
class HeadroomConfig:
    model: str = setting("", "model: local path, hub id or .gguf file; empty means the embedded MiniMath model")
    data: str = setting("minimath-500", "task name or .jsonl file whose problems are adapted to")
    per_subject: int = setting(20, "first N problems of each subject (0: no per-subject cap)")
    limit: int | None = setting(None, "then at most this many problems")
    train_data: str = setting("minimath-train", "non-MiniMath tasks: pool the curriculum's nearest problems come from")
    conditions: list[str] = setting(list(CONDITIONS), "what to adapt on (see above)")
    lrs: list[float] = setting([1.0, 3.0], "inner SGD learning rates to try")
    steps: list[int] = setting([1, 2, 4], "inner step counts K to try (one trajectory of max(K) steps per lr)")
    m: int = setting(6, "examples per problem for curriculum and ttss")
    batch_problems: int = setting(16, "problems adapted and answered together, each with its own LoRA values")
    lora: LoraSettings = nested(LoraSettings, "the fresh test-time LoRA adapter")
    synth: SamplingConfig = nested(synth_sampling_default, "sampling of the ttss examples (as TT-SS and MASS)")
    sampling: SamplingConfig = nested(SamplingConfig, "decoding of the answers (greedy by default)")
    seed: int = setting(0, "seed for the adapter, the curriculum and the synthesis")
    out: str = setting("results/headroom", "output directory: headroom.json, headroom.md, headroom.png")
    dtype: str = setting("float32", "model dtype")
    device: str = setting("auto", "auto, cpu or cuda")

    def __post_init__(self) -> None:
        unknown = [c for c in self.conditions if c not in CONDITIONS]
        if unknown or not self.conditions:
            raise MassError(f"conditions must be a non-empty list of {', '.join(CONDITIONS)}; got {self.conditions}")
        if not self.lrs or any(lr <= 0 for lr in self.lrs):
            raise MassError(f"lrs must be a non-empty list of positive learning rates; got {self.lrs}")
        if not self.steps or any(k < 1 for k in self.steps):
            raise MassError(f"steps must be a non-empty list of step counts >= 1; got {self.steps}")
        if self.m < 1 or self.per_subject < 0 or (self.limit is not None and self.limit < 1) or self.batch_problems < 1:
            raise MassError("headroom needs m >= 1, per_subject >= 0, limit >= 1 and batch_problems >= 1")


def run(cfg: HeadroomConfig) -> dict:
    task = load_task(cfg.data)
    problems = select_problems(task.load(None), cfg.per_subject, cfg.limit)
    if not all(p.solution for p in problems) and {"memorise"} & set(cfg.conditions):
        raise MassError(f"the memorise condition needs gold solutions, and {task.name} lacks some; drop it from "
                        "conditions")
    pool = curriculum_pool(cfg, problems)
    device = dist.init()
    device = device if cfg.device == "auto" else training_device(cfg.device)
    model, tok = load_model(cfg.model or None, cfg.dtype, device)
    problems = fit_problems(problems, tok, model)
    peft_model = attach_lora(model, cfg.lora.rank, cfg.lora.alpha, cfg.lora.targets, seed=cfg.seed, init=cfg.lora.init)
    phi0 = lora_params(peft_model)
    rng = torch.Generator(device=device).manual_seed(cfg.seed + dist.rank())

    mine = dist.shard(list(enumerate(problems)))
    records, t0 = [], time.perf_counter()
    chunk = cfg.batch_problems
    bar = tqdm(total=len(mine), desc="headroom", disable=not dist.is_main(), dynamic_ncols=True)
    for start in range(0, len(mine), chunk):
        part = mine[start : start + chunk]
        examples = adaptation_sets(cfg, [p for _, p in part], pool, peft_model, tok, phi0, rng)
        measured = measure_problems(cfg, peft_model, tok, task, phi0, [p for _, p in part], examples)
        records += [{"index": index, **record} for (index, _), record in zip(part, measured)]
        bar.update(len(part))
    bar.close()

    records = sorted(dist.gather_lists(records), key=lambda r: r.pop("index"))
    result = summarise(cfg, records, model_name=resolve_model_name(cfg.model or None), data=task.name,
                       seconds=time.perf_counter() - t0)
    if dist.is_main():
        out = Path(cfg.out)
        table = format_table(result)
        print(table)
        write_json(result, out / "headroom.json")
        (out / "headroom.md").write_text(table + "\n")
        plot_headroom(result, out / "headroom.png")
        print(f"wrote {out}/headroom.json, headroom.md, headroom.png")
    dist.barrier()
    return result


def select_problems(problems: list[Problem], per_subject: int, limit: int | None) -> list[Problem]:
    """The first `per_subject` problems of each subject (task order kept), then the first `limit`."""
    if per_subject:
        taken: dict[str, int] = defaultdict(int)
        kept = []
        for p in problems:
            if taken[p.subject] < per_subject:
                taken[p.subject] += 1
                kept.append(p)
        problems = kept
    return problems[:limit] if limit is not None else problems


def curriculum_pool(cfg: HeadroomConfig, problems: list[Problem]) -> list[Problem]:
    """Where non-MiniMath problems take their curriculum from (empty when every T is MiniMath)."""
    if "curriculum" not in cfg.conditions or all(solve_text(p.problem) for p in problems):
        return []
    test_texts = {p.problem for p in problems}
    pool = [p for p in load_task(cfg.train_data).load(None) if p.solution and p.problem not in test_texts]
    if len(pool) < cfg.m:
        raise MassError(f"the curriculum needs at least m={cfg.m} solved problems in --train-data {cfg.train_data}")
    return pool


_WORD = re.compile(r"[A-Za-z]+|\d+|\\[A-Za-z]+")


def nearest_problems(problem: Problem, pool: list[Problem], m: int) -> list[Problem]:
    """The m pool problems nearest T: same subject and level first, then the most shared words (Jaccard)."""
    words = set(_WORD.findall(problem.problem))

    def key(p: Problem) -> tuple:
        other = set(_WORD.findall(p.problem))
        jaccard = len(words & other) / max(1, len(words | other))
        return (p.subject == problem.subject and p.level == problem.level, p.subject == problem.subject, jaccard)

    return sorted(pool, key=key, reverse=True)[:m]


def as_example(p: Problem) -> SynthExample:
    return SynthExample(problem=p.problem, solution=p.solution or "", answer=p.answer)


def adaptation_sets(cfg: HeadroomConfig, problems: list[Problem], pool: list[Problem], model, tok, phi0,
                    rng: torch.Generator) -> list[dict]:
    """Per problem: {condition: examples to adapt on (None: not available for this problem)}.
    Synthesis is one batched call for all `problems`."""
    wanted = set(cfg.conditions)
    syntheses = None
    if wanted & {"ttss", "ttss-right"}:
        with use_lora(model, phi0):
            syntheses = synthesise(model, tok, [p.problem for p in problems], cfg.m, cfg.synth, rng)
    out = []
    for j, p in enumerate(problems):
        sets: dict = {}
        if "memorise" in wanted:
            sets["memorise"] = [as_example(p)]
        if "curriculum" in wanted:
            rng = random.Random(f"{cfg.seed}:{p.id}")
            kin = kindred_problems(rng, p, cfg.m)
            sets["curriculum"] = [as_example(q) for q in (kin if kin is not None else nearest_problems(p, pool, cfg.m))]
        if syntheses is not None:
            examples = syntheses[j].examples
            sets["ttss"] = examples
            gradable = solve_text(p.problem) is not None  # MiniMath: every example can be re-solved
            sets["ttss-right"] = ([e for e in examples if grade_synthesised(p.problem, e.problem, e.answer)["correct"]]
                                  if gradable else None)
        out.append(sets)
    return out


def measure_problems(cfg: HeadroomConfig, model, tok, task, phi0, problems: list[Problem], sets: list[dict]) -> list[dict]:
    """Adapt on each condition's examples over the (lr, K) grid and grade each greedy answer; all
    `problems` adapt and answer together, each with its own LoRA values (mass/batched.py)."""
    chat, device = uses_chat_template(tok), next(model.parameters()).device
    prompts = [task.render_prompt(p, chat) for p in problems]

    def grade(texts: list[str], which: list[int]) -> list[bool]:
        return [bool(is_equivalent(problems[j].answer, task.extract_answer(t))) for j, t in zip(which, texts)]

    everyone = list(range(len(problems)))
    base = grade(batched_answers(model, tok, prompts, stack_params(phi0, len(problems)), cfg.sampling), everyone)
    records = []
    for p, problem_sets, correct in zip(problems, sets, base):
        right = problem_sets.get("ttss-right")
        records.append({"id": p.id, "subject": p.subject, "level": p.level, "kind": problem_kind(p.problem),
                        "base": correct,
                        "synthesis": None if right is None else {"parsed": len(problem_sets["ttss"]),
                                                                 "right": len(right)},
                        "n_examples": {}, "correct": {}})
    for condition in cfg.conditions:
        if condition == "base":
            continue
        learners = []  # problems with something to learn from under this condition
        for j, record in enumerate(records):
            examples = sets[j].get(condition)
            record["n_examples"][condition] = None if examples is None else len(examples)
            if examples is None:  # not measurable for this problem (e.g. ttss-right off MiniMath)
                continue
            record["correct"][condition] = {str(k): {} for k in cfg.steps}
            if examples:
                learners.append(j)
            else:  # nothing to learn from: the answer is the unadapted one
                record["correct"][condition] = {str(k): {str(lr): base[j] for lr in cfg.lrs} for k in cfg.steps}
        if not learners:
            continue
        used = [(i, e) for i, j in enumerate(learners) for e in sets[j][condition]]
        batch = example_batch(tok, [e for _, e in used], device)
        rows = torch.tensor([i for i, _ in used], device=device)
        s = torch.tensor([1.0 / len(sets[learners[i]][condition]) for i, _ in used], device=device)
        for lr in cfg.lrs:
            trajectory = batched_trajectory(model, phi0, len(learners), batch, rows, s, lr, max(cfg.steps))
            for k, phi in enumerate(trajectory, start=1):
                if k not in cfg.steps:
                    continue
                answers = batched_answers(model, tok, [prompts[j] for j in learners], phi, cfg.sampling)
                for j, correct in zip(learners, grade(answers, learners)):
                    records[j]["correct"][condition][str(k)][str(lr)] = correct
    return records


def summarise(cfg: HeadroomConfig, records: list[dict], model_name: str, data: str, seconds: float) -> dict:
    """Accuracy (with 95% CI and per subject) of every condition at every (K, lr), and each one's best."""
    n = len(records)
    base_k = sum(r["base"] for r in records)
    conditions: dict = {"base": {"accuracy": base_k / n, "ci95": list(wilson_interval(base_k, n)), "n": n,
                                 "by_subject": by_subject(records, lambda r: r["base"]),
                                 "by_kind": by_subject(records, lambda r: r["base"], key="kind")}}
    best: dict = {"base": {"accuracy": base_k / n, "lr": None, "steps": None}}
    for condition in cfg.conditions:
        if condition == "base":
            continue
        rows = [r for r in records if condition in r["correct"]]
        if not rows:
            conditions[condition] = None
            continue
        grid: dict = {}
        for k in cfg.steps:
            for lr in cfg.lrs:
                hits = sum(r["correct"][condition][str(k)][str(lr)] for r in rows)
                grid.setdefault(str(k), {})[str(lr)] = {
                    "accuracy": hits / len(rows), "ci95": list(wilson_interval(hits, len(rows))), "n": len(rows),
                    "by_subject": by_subject(rows, lambda r, k=k, lr=lr: r["correct"][condition][str(k)][str(lr)]),
                    "by_kind": by_subject(rows, lambda r, k=k, lr=lr: r["correct"][condition][str(k)][str(lr)],
                                          key="kind")}
        conditions[condition] = grid
        k, lr = max(((k, lr) for k in grid for lr in grid[k]), key=lambda kl: grid[kl[0]][kl[1]]["accuracy"])
        best[condition] = {"accuracy": grid[k][lr]["accuracy"], "steps": int(k), "lr": float(lr), "n": len(rows)}
    synthesis = [r["synthesis"] for r in records if r["synthesis"]]
    parsed = sum(s["parsed"] for s in synthesis)
    return {
        "model": model_name, "data": data, "n": n, "seconds": round(seconds, 1), "world_size": dist.world_size(),
        "conditions": conditions, "best": best,
        "synthesis": {"parsed": parsed, "right": sum(s["right"] for s in synthesis),
                      "right_share": sum(s["right"] for s in synthesis) / parsed if parsed else None},
        "config": config_to_dict(cfg), "records": records,
    }


def by_subject(records: list[dict], hit, key: str = "subject") -> dict[str, dict]:
    """Accuracy per subject (or per MiniMath problem kind, key="kind")."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for r in records:
        groups[r[key] or "(none)"].append(bool(hit(r)))
    return {s: {"accuracy": sum(v) / len(v), "n": len(v)} for s, v in sorted(groups.items())}


def format_table(result: dict) -> str:
    cfg, best, base = result["config"], result["best"], result["best"]["base"]["accuracy"]
    lines = [f"# Headroom of test-time adaptation: {result['data']}, n={result['n']}",
             "", f"Model `{result['model']}`; fresh LoRA rank {cfg['lora']['rank']}, alpha {cfg['lora']['alpha']}, "
             f"init {cfg['lora']['init']}, targets {', '.join(cfg['lora']['targets'])}; m={cfg['m']}; "
             f"uniform weights, plain SGD, greedy answers.", ""]
    lrs = [str(lr) for lr in cfg["lrs"]]
    for k in (str(k) for k in cfg["steps"]):
        lines += [f"Accuracy (%) after K={k} step(s), by inner lr:", "",
                  "| condition | " + " | ".join(f"lr {lr}" for lr in lrs) + " |",
                  "|---|" + "---:|" * len(lrs)]
        lines.append("| base | " + " | ".join(f"{100 * base:.1f}" for _ in lrs) + " |")
        for condition, grid in result["conditions"].items():
            if condition == "base" or grid is None:
                continue
            lines.append(f"| {condition} | " + " | ".join(f"{100 * grid[k][lr]['accuracy']:.1f}" for lr in lrs) + " |")
        lines.append("")
    lines += ["Best of each condition:", "", "| condition | accuracy (%) | Δ vs base | K | lr | n |", "|---|---:|---:|---:|---:|---:|"]
    for condition, b in best.items():
        if condition == "base":
            lines.append(f"| base | {100 * base:.1f} | | | | {result['n']} |")
        else:
            lines.append(f"| {condition} | {100 * b['accuracy']:.1f} | {100 * (b['accuracy'] - base):+.1f} | "
                         f"{b['steps']} | {b['lr']} | {b['n']} |")
    kinds = list(result["conditions"]["base"]["by_kind"])
    if kinds != ["(none)"]:
        lines += ["", "By MiniMath problem kind, each condition at its best (K, lr):", "",
                  "| condition | " + " | ".join(f"{k} (n={result['conditions']['base']['by_kind'][k]['n']})"
                                                for k in kinds) + " |", "|---|" + "---:|" * len(kinds)]
        for condition, b in best.items():
            cell = (result["conditions"]["base"] if condition == "base"
                    else result["conditions"][condition][str(b["steps"])][str(b["lr"])])["by_kind"]
            lines.append(f"| {condition} | " + " | ".join(
                f"{100 * cell[k]['accuracy']:.1f}" if k in cell else "" for k in kinds) + " |")
    missing = [c for c, g in result["conditions"].items() if g is None]
    if missing:
        lines += ["", f"Not measurable on this task: {', '.join(missing)} (needs a task that can re-solve "
                  "synthesised problems, i.e. MiniMath)."]
    syn = result["synthesis"]
    if syn["parsed"]:
        share = "" if syn["right_share"] is None else f", {100 * syn['right_share']:.1f}% with right answers"
        lines += ["", f"Self-written examples: {syn['parsed']} parsed{share}."]
    lines += ["", f"{result['seconds']:.0f} s over {result['world_size']} process(es)."]
    return "\n".join(lines)


def plot_headroom(result: dict, png: Path) -> None:
    """Accuracy against inner lr, one line per condition, one panel per K; base as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = result["config"]
    ks = [str(k) for k in cfg["steps"]]
    fig, axes = plt.subplots(1, len(ks), figsize=(4.6 * len(ks), 3.4), dpi=130, squeeze=False, sharey=True)
    base = 100 * result["best"]["base"]["accuracy"]
    for ax, k in zip(axes[0], ks):
        ax.axhline(base, color="grey", ls="--", lw=1, label="base")
        for condition, grid in result["conditions"].items():
            if condition == "base" or grid is None:
                continue
            lrs = sorted(grid[k], key=float)
            ax.plot([float(lr) for lr in lrs], [100 * grid[k][lr]["accuracy"] for lr in lrs], marker="o", lw=1.5,
                    label=condition)
        ax.set_xscale("log")
        ax.set_xticks([float(lr) for lr in cfg["lrs"]], [f"{lr:g}" for lr in cfg["lrs"]])
        ax.minorticks_off()
        ax.set_xlabel("inner learning rate")
        ax.set_title(f"K = {k}")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%)")
    axes[0][-1].legend(fontsize=8, loc="best")
    fig.suptitle(f"Headroom of test-time adaptation on {Path(result['data']).name} (n={result['n']})", fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)
