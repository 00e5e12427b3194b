"""`mass bench adapt`: what test-time adaptation costs, per problem, against Base.

Runs `mass eval` for Base and each adapting method on the same problems in this one process and
reports seconds per problem with the breakdown each record keeps (mass/adaptation.py): generate
(synthesising m examples), score (the scorer's features and weights), update (the K inner SGD
steps) and answer, each adapting method at its own inference settings (`tuned.*`, as in `mass
table`). The floor is what any method that writes m examples and then answers must
spend at Base's batched throughput: (m + 1) x Base's seconds per problem. Writes
OUT/adapt-NAME.json and .md; like `mass table` it orchestrates `mass eval` runs.

    mass bench adapt                                   # 64 minimath-500 problems, shipped checkpoints
    mass bench adapt limit=null methods=[base,mass]    # all of minimath-500
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from mass.config import config_to_dict, nested, setting
from mass.errors import MassError
from mass.evaluate import EvalConfig, Tunings, tuned_adapt
from mass.evaluate import run as run_eval
from mass.methods import METHODS
from mass.results import write_report

ADAPTING = ("ttt", "ttss", "mass-gold", "mass")
PARTS = ("generate", "score", "update", "answer")


@dataclass
class AdaptBenchConfig:
    methods: list[str] = setting(["base", "ttt", "ttss", "mass-gold", "mass"], "methods to time (base is always run)")
    data: str = setting("minimath-500", "task name or .jsonl file")
    limit: int | None = setting(64, "the first N problems (null: all)")
    model: str = setting("", "model; empty means the embedded one (whose shipped checkpoints mass and mass-gold use)")
    device: str = setting("auto", "auto, cpu or cuda")
    seed: int = setting(0, "seed for sampling")
    tuned: Tunings = nested(Tunings, "each adapting method's inference settings (as in `mass table`)")
    name: str = setting("", "name of the result files (default: data and limit)")
    out: str = setting("results/bench", "directory of the JSON and Markdown results")

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise MassError(f"unknown method(s) {', '.join(unknown)}: use some of {', '.join(METHODS)}")
        if self.limit is not None and self.limit < 1:
            raise MassError("limit must be a positive number of problems, or null for all")


def run(cfg: AdaptBenchConfig) -> dict:
    methods = ["base"] + [m for m in cfg.methods if m != "base"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods:
            eval_cfg = EvalConfig(method=method, model=cfg.model, data=cfg.data, limit=cfg.limit, device=cfg.device,
                                  seed=cfg.seed, out=str(Path(tmp) / f"{method}.json"))
            if method in ADAPTING:  # at its own inference settings, as in the table
                eval_cfg = replace(eval_cfg, adapt=tuned_adapt(eval_cfg.adapt, cfg.tuned, method))
            result = run_eval(eval_cfg)
            rows.append(timing_row(method, result))
    m = EvalConfig().adapt.m
    floor = (m + 1) * rows[0]["seconds"]
    for row in rows:  # each method against the floor of its own m
        row["x_base"] = round(row["seconds"] / rows[0]["seconds"], 2)
        row["x_floor"] = round(row["seconds"] / ((row["m"] or m) + 1) / rows[0]["seconds"], 2)
    result = {"config": config_to_dict(cfg), "threads": torch.get_num_threads(), "m": m,
              "floor_seconds": round(floor, 4), "rows": rows}
    name = cfg.name or f"{Path(cfg.data).stem}-{cfg.limit or 'all'}"
    write_report(result, format_table(result), Path(cfg.out), f"adapt-{name}")
    return result


def timing_row(method: str, result: dict) -> dict:
    """Mean seconds per problem of one eval result, in all and by part (parts a method lacks: 0)."""
    records = result["records"]
    n = len(records)
    adapt = result["config"].get("adapt") if method in ADAPTING else None
    row = {"method": method, "n": n, "accuracy": round(result["accuracy"], 4),
           "setting": f"K={adapt['steps']}, lr={adapt['lr']:g}, m={adapt['m']}" if adapt else "",
           "m": adapt["m"] if adapt else None,
           "seconds": round(sum(r["seconds"] for r in records) / n, 4)}
    for part in PARTS:
        row[part] = round(sum(r.get(f"seconds_{part}", 0.0) for r in records) / n, 4)
    if method not in ADAPTING:  # answering is all it does
        row["answer"] = row["seconds"]
    return row


def format_table(result: dict) -> str:
    lines = [f"seconds per problem ({result['threads']} thread(s)); floor = (m+1) x Base, each method's own m "
             f"({result['floor_seconds']:.3f} s at m={result['m']})", "",
             "| method | setting | accuracy | s/problem | generate | score | update | answer | x Base | x floor |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['method']} | {r['setting']} | {100 * r['accuracy']:.1f} | {r['seconds']:.3f} | "
                     + " | ".join(f"{r[p]:.3f}" for p in PARTS) + f" | {r['x_base']:.1f} | {r['x_floor']:.2f} |")
    return "\n".join(lines)
