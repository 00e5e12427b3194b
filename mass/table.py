"""`mass table`: the paper's Table 1 and Figure 2, from one command.

Evaluates every method on the same problems with the same seed and writes, under `out`:

    table.md                   accuracy, 95% CI, delta vs Base, seconds per problem; per-subject accuracy
    table.json                 the same rows, machine-readable
    <method>.json              the full `mass eval` result of each method (records included)
    gains_by_subject.png       Base vs MASS per subject, subjects ordered by Base accuracy (Figure 2)
    training_curves.png        the meta-training (MASS, MASS_gold) and Solver GRPO curves

Methods that need a trained checkpoint (mass, mass-gold, solver-grpo) use the one given in
`checkpoints.<method>`; by default the checkpoints shipped in the package for the embedded
model (when it ships them), else `out/checkpoints/<method>`. A checkpoint directory that does not
exist yet is trained first (`mass meta-train` / `mass grpo` with the `meta_train.*` / `grpo.*`
settings), so one command goes from a base model to the table.

    mass table                                          # shipped checkpoints, all of minimath-500
    torchrun --standalone --nproc_per_node 2 -m mass table   # the same over 2 processes (`make demo`)
    mass table limit=100 out=runs/table-100             # a quick subset
    mass table --model ./my-llama --data ../shared/data/math500_test.jsonl eval.train_data=math-train
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path

from mass import dist
from mass.budget import SHARED, grpo_budget_from
from mass.checkpoint import default_checkpoint, is_shipped
from mass.config import config_to_dict, nested, setting
from mass.errors import MassError
from mass.evaluate import EvalConfig, Tunings, only_used_settings, tuned_adapt
from mass.evaluate import run as run_eval
from mass.grpo import SolverGRPOConfig
from mass.grpo import run as train_solver
from mass.meta_train import MetaTrainConfig
from mass.meta_train import run as meta_train
from mass.methods import METHODS
from mass.results import wilson_interval, write_json

TRAINED = ("solver-grpo", "mass-gold", "mass")  # methods that need a checkpoint
LABELS = {"base": "Base", "ttt": "Base TTT", "ttss": "Base TT-SS", "solver-grpo": "Solver GRPO",
          "mass-gold": "MASS_gold", "mass": "MASS"}


@dataclass
class Checkpoints:
    solver_grpo: str = setting("", "Solver GRPO checkpoint (`mass grpo`); empty: shipped, or out/checkpoints/solver-grpo")
    mass_gold: str = setting("", "MASS_gold checkpoint (outer=gold); empty: shipped, or out/checkpoints/mass-gold")
    mass: str = setting("", "MASS checkpoint (outer=verifier); empty: shipped, or out/checkpoints/mass")


@dataclass
class TableConfig:
    methods: list[str] = setting(list(METHODS), "methods to evaluate, in table order")
    model: str = setting("", "base model: local path, hub id or .gguf file; empty means the embedded MiniMath model")
    data: str = setting("minimath-500", "evaluation task or .jsonl file")
    limit: int | None = setting(None, "evaluate only the first N problems (a fixed subset)")
    seed: int = setting(0, "sampling seed, the same for every method")
    out: str = setting("results/minimath-500", "directory for the table, the JSON results and the figures")
    train_missing: bool = setting(True, "train a checkpoint that does not exist yet (else it is an error)")
    train_only: bool = setting(False, "only train the missing checkpoints (one process), evaluate nothing")
    reuse: bool = setting(False, "keep a method's existing JSON in out if it was made with the same settings")
    checkpoints: Checkpoints = nested(Checkpoints, "trained checkpoints per method")
    tuned: Tunings = nested(Tunings, "per-method inference settings (override eval.adapt for that method)")
    eval: EvalConfig = nested(EvalConfig, "evaluation settings shared by every method (method, model, data, "
                              "limit, seed, out, checkpoint are set by the table)")
    meta_train: MetaTrainConfig = nested(MetaTrainConfig, "meta-training of missing MASS/MASS_gold checkpoints")
    grpo: SolverGRPOConfig = nested(SolverGRPOConfig, "training of a missing Solver GRPO checkpoint")

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise MassError(f"unknown method(s) {', '.join(unknown)} in methods: use {', '.join(METHODS)}")
        if not self.methods:
            raise MassError("methods is empty: name at least one of " + ", ".join(METHODS))
        ignored = set_but_ignored(self)
        if ignored:
            raise MassError("the table sets these itself, so they would be ignored: " + "; ".join(ignored))


# settings of the nested configs that the table fills in itself, and the setting a user sets instead
TABLE_SETS = {
    "eval": {"method": "methods", "model": "model", "data": "data", "limit": "limit", "seed": "seed",
             "checkpoint": "checkpoints.<method>", "out": "out"},
    "meta_train": {"model": "model", "out": "checkpoints.mass / checkpoints.mass_gold", "outer": "methods"},
    "grpo": {"model": "model", "out": "checkpoints.solver_grpo",
             **{name: f"meta_train.{name}: Solver GRPO trains on MASS's budget" for name in SHARED},
             "k": "meta_train.adapt.m and meta_train.k: Solver GRPO samples m + k solutions"},
}


def set_but_ignored(cfg: TableConfig) -> list[str]:
    """Each nested setting given a non-default value that the table would overwrite, with what
    to set instead; and eval.adapt values that a method's tuned.* setting replaces."""
    defaults = {"eval": EvalConfig(), "meta_train": MetaTrainConfig(), "grpo": SolverGRPOConfig()}
    problems = [f"{group}.{key} (set {instead})" for group, keys in TABLE_SETS.items() for key, instead in keys.items()
                if getattr(getattr(cfg, group), key) != getattr(defaults[group], key)]
    for key in ("lr", "steps", "m"):
        if getattr(cfg.eval.adapt, key) != getattr(defaults["eval"].adapt, key):
            replaced_for = [m for m in cfg.methods if getattr(getattr(cfg.tuned, m.replace("-", "_"), None), key, None)
                            is not None]
            if replaced_for:
                problems.append(f"eval.adapt.{key} (replaced by tuned.<method>.{key} for {', '.join(replaced_for)}: "
                                f"set tuned.{replaced_for[0].replace('-', '_')}.{key}, or set it to null)")
    return problems


def run(cfg: TableConfig) -> dict:
    out = Path(cfg.out)
    started, commit = time.perf_counter(), _git_commit()  # the commit before this run rewrites results
    results, ckpts = {}, {}
    for method in cfg.methods:
        if method in TRAINED:
            ckpts[method] = ensure_checkpoint(method, cfg)
    if cfg.train_only:
        dist.print0("checkpoints: " + ", ".join(f"{m} {p}" for m, p in ckpts.items()))
        return {}
    for method in cfg.methods:
        eval_cfg = only_used_settings(replace(
            cfg.eval, method=method, model=cfg.model, data=cfg.data, limit=cfg.limit, seed=cfg.seed,
            checkpoint=str(ckpts.get(method, "")), out=str(out / f"{method}.json"), adapt=method_adapt(cfg, method)))
        results[method] = _reused(eval_cfg) if cfg.reuse else None
        if results[method] is None:
            dist.print0(f"\n== {LABELS[method]} ({method}) ==")
            results[method] = run_eval(eval_cfg)
        else:
            dist.print0(f"== {LABELS[method]}: reusing {eval_cfg.out}")
    if dist.is_main():
        rows = table_rows(results)
        meta = {"command": "mass table " + _overrides_text(cfg), "commit": commit, "machine": _machine(), "processes": dist.world_size(),
                "wall_seconds": round(time.perf_counter() - started, 1), "data": cfg.data, "limit": cfg.limit,
                "seed": cfg.seed, "checkpoints": {m: str(p) for m, p in ckpts.items()}}
        (out / "table.md").write_text(format_markdown(rows, results, meta))
        write_json({"rows": rows, **meta, "config": config_to_dict(cfg)}, out / "table.json")
        if "base" in results and "mass" in results:
            plot_gains_by_subject(results["base"], results["mass"], out / "gains_by_subject.png")
        curves = {m: Path(p) / "metrics.jsonl" for m, p in ckpts.items() if (Path(p) / "metrics.jsonl").is_file()}
        if curves:
            plot_training_curves(curves, out / "training_curves.png")
        print("\n" + format_markdown(rows, results, meta))
        print(f"wrote {out}/table.md, table.json, per-method JSON and figures "
              f"({meta['wall_seconds']:.0f} s in all)")
    return results


def method_adapt(cfg: TableConfig, method: str):
    """eval.adapt with the method's own tuned settings (if any) in place."""
    return tuned_adapt(cfg.eval.adapt, cfg.tuned, method)


def ensure_checkpoint(method: str, cfg: TableConfig) -> Path:
    """The checkpoint directory for `method`; trained first when it does not exist."""
    given = getattr(cfg.checkpoints, method.replace("-", "_"))
    if given:
        path = Path(given)
    elif shipped := default_checkpoint(method, cfg.model):
        path = shipped
    else:  # another model, or the embedded model before its checkpoints ship: trained into out/
        path = Path(cfg.out) / "checkpoints" / method
    if (path / "mass.json").is_file():
        info = json.loads((path / "mass.json").read_text())
        if info.get("model", "") != cfg.model:
            raise MassError(f"checkpoint {path} was trained on model '{info.get('model') or 'embedded'}', "
                            f"not '{cfg.model or 'embedded'}': give checkpoints.{method.replace('-', '_')}=DIR")
        return path
    if is_shipped(path):
        raise MassError(f"refusing to train into the package ({path}): give checkpoints.{method.replace('-', '_')}=DIR")
    if not cfg.train_missing:
        raise MassError(f"no checkpoint for {method} at {path} (train_missing=false)")
    if dist.world_size() > 1:
        raise MassError(f"the {method} checkpoint {path} is missing: train it in one process first "
                        "(run `mass table` without torchrun, or `mass meta-train` / `mass grpo`)")
    print(f"\n== training the {LABELS[method]} checkpoint into {path} ==")
    if method == "solver-grpo":
        train_solver(replace(cfg.grpo, model=cfg.model, out=str(path), **grpo_budget_from(cfg.meta_train)))
    else:
        meta_train(replace(cfg.meta_train, model=cfg.model, out=str(path),
                           outer="gold" if method == "mass-gold" else "verifier"))
    return path


def _reused(eval_cfg: EvalConfig) -> dict | None:
    path = Path(eval_cfg.out)
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    return result if result.get("config") == config_to_dict(eval_cfg) else None


def table_rows(results: dict[str, dict]) -> list[dict]:
    base = results.get("base")
    rows = []
    for method, r in results.items():
        rows.append({"method": method, "label": LABELS[method], "accuracy": r["accuracy"], "ci95": r["ci95"],
                     "n": r["n"], "delta_vs_base": r["accuracy"] - base["accuracy"] if base else None,
                     "seconds_per_problem": r["seconds_per_problem"],
                     "by_subject": {s: v["accuracy"] for s, v in r["by_subject"].items()}})
    return rows


def format_markdown(rows: list[dict], results: dict[str, dict], meta: dict) -> str:
    first = next(iter(results.values()))
    lines = [f"# {meta['data']}: n={first['n']}, seed {meta['seed']}", "",
             "| Method | Accuracy (%) | 95% CI | Δ vs Base | s/problem |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lo, hi = r["ci95"]
        delta = "" if r["delta_vs_base"] is None else f"{100 * r['delta_vs_base']:+.1f}"
        lines.append(f"| {r['label']} | {100 * r['accuracy']:.1f} | {100 * lo:.1f}–{100 * hi:.1f} | {delta} | "
                     f"{r['seconds_per_problem']:.2f} |")
    subjects = list(first["by_subject"])
    counts = {s: v["n"] for s, v in first["by_subject"].items()}
    lines += ["", "Accuracy (%) by subject:", "",
              "| Subject | n | " + " | ".join(r["label"] for r in rows) + " |",
              "|---|---:|" + "---:|" * len(rows)]
    for s in subjects:
        lines.append(f"| {s} | {counts[s]} | " + " | ".join(f"{100 * r['by_subject'].get(s, 0.0):.1f}" for r in rows) + " |")
    lines += ["", f"Command: `{meta['command']}`  ", f"Commit: `{meta['commit']}`, machine: {meta['machine']}, "
              f"{meta['processes']} process(es), wall time {meta['wall_seconds']:.0f} s "
              "(s/problem: compute time per problem within one process).  "]
    if meta["checkpoints"]:
        lines.append("Checkpoints: " + ", ".join(f"{m} `{p}`" for m, p in meta["checkpoints"].items()) + ".")
    return "\n".join(lines) + "\n"


def plot_gains_by_subject(base: dict, mass: dict, path: Path) -> None:
    """Figure 2: Base vs MASS accuracy per subject, weakest Base subject first, with the gain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    def accuracy(result: dict, subject: str) -> float:
        return result["by_subject"].get(subject, {"accuracy": 0.0})["accuracy"]

    subjects = sorted(base["by_subject"], key=lambda s: accuracy(base, s))
    fig, ax = plt.subplots(figsize=(9, 4.2))
    width = 0.38
    for offset, result, label, colour in ((-width / 2, base, "Base", "#9aa5b1"), (width / 2, mass, "MASS", "#1f6feb")):
        acc, lo, hi = [], [], []
        for s in subjects:
            v = result["by_subject"].get(s, {"accuracy": 0.0, "n": 0})
            k = round(v["accuracy"] * v["n"])
            a, (l, h) = 100 * v["accuracy"], wilson_interval(k, v["n"])
            acc.append(a), lo.append(a - 100 * l), hi.append(100 * h - a)
        xs = [i + offset for i in range(len(subjects))]
        ax.bar(xs, acc, width, label=label, color=colour, yerr=[lo, hi], capsize=2, error_kw={"lw": 0.8})
    for i, s in enumerate(subjects):
        gain = 100 * (accuracy(mass, s) - accuracy(base, s))
        top = 100 * max(accuracy(base, s), accuracy(mass, s))
        ax.text(i, min(top + 9, 104), f"{gain:+.1f}", ha="center", fontsize=9,
                color="#1a7f37" if gain > 0 else "#cf222e" if gain < 0 else "black")
    ax.set_xticks(range(len(subjects)))
    ax.set_xticklabels([f"{s}\n(n={base['by_subject'][s]['n']})" for s in subjects], fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 110)
    ax.set_title(f"Base vs MASS by subject on {base['data']} (weakest Base subject first; bars: 95% CI)", fontsize=10)
    ax.legend(loc="upper left", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def plot_training_curves(metrics: dict[str, Path], path: Path) -> None:
    """Four panels per trained checkpoint: the training reward (10-step mean), the scorer's
    weight scale (m * mean weight; 1 = uniform), the held-out gold CE before/after adaptation, and
    the mechanism on held-out problems: share of right synthesised answers (the generator) and the
    within-T AUC of the weights against correctness (the scorer)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"mass": "#1f6feb", "mass-gold": "#8250df", "solver-grpo": "#bc4c00"}
    fig, (reward_ax, weight_ax, held_ax, mech_ax) = plt.subplots(1, 4, figsize=(20, 4))
    for method, file in metrics.items():
        rows = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
        colour, label = colours.get(method), LABELS[method]
        key = "reward_after" if method == "mass" else "reward_mean" if method == "solver-grpo" else None
        if key:
            points = [(r["step"], r[key]) for r in rows if key in r]
            reward_ax.plot([s for s, _ in points], _smooth([v for _, v in points], 10), color=colour,
                           label=f"{label}: {'samples of T from phi_K' if method == 'mass' else 'solver samples'}")
        weighted = [r for r in rows if "s_max" in r]
        if weighted:
            info = file.parent / "mass.json"
            m = json.loads(info.read_text())["config"]["adapt"]["m"] if info.is_file() else 1
            weight_ax.plot([r["step"] for r in weighted], [m * (r["s_max"] + r["s_min"]) / 2 for r in weighted],
                           color=colour, label=label)
        held = [r for r in rows if "heldout_gold_ce_after" in r]
        if held:
            steps = [r["step"] for r in held]
            held_ax.plot(steps, [r["heldout_gold_ce_after"] for r in held], marker="o", color=colour,
                         label=f"{label}: after adaptation")
            held_ax.plot(steps, [r["heldout_gold_ce_before"] for r in held], marker="x", linestyle="--",
                         color=colour, alpha=0.6, label=f"{label}: before adaptation")
        for key, style, what in (("heldout_right_share", "-", "right answers"), ("heldout_weight_auc", "--", "weight AUC")):
            points = [(r["step"], r[key]) for r in rows if key in r]
            if points:
                mech_ax.plot([p for p, _ in points], [v for _, v in points], marker="o", linestyle=style, color=colour,
                             label=f"{label}: {what}")
    reward_ax.set(xlabel="step", ylabel="mean reward (10-step mean)", title="training reward (verifier)")
    weight_ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
    weight_ax.set(xlabel="step", ylabel="m x mean example weight (1 = uniform)", title="scorer weight scale")
    held_ax.set(xlabel="step", ylabel="gold CE (nats/token)", title="held-out meta-training problems")
    mech_ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    mech_ax.set(xlabel="step", ylabel="share / AUC", ylim=(0, 1), title="held-out: generator and scorer")
    for ax in (reward_ax, weight_ax, held_ax, mech_ax):
        ax.title.set_fontsize(10)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def _smooth(values: list[float], window: int) -> list[float]:
    return [sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1])
            for i in range(len(values))]


def _overrides_text(cfg: TableConfig) -> str:
    """The settings that differ from the defaults, as `key=value` (how to rerun this table)."""
    default, mine = _flatten(config_to_dict(TableConfig())), _flatten(config_to_dict(cfg))
    return " ".join(f"{k}={v if not isinstance(v, list) else '[' + ','.join(map(str, v)) + ']'}"
                    for k, v in mine.items() if default.get(k) != v)


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, cwd=Path(__file__).parent).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _machine() -> str:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
    return f"{device}, {platform.system()} {platform.machine()}, torch {torch.__version__}"
