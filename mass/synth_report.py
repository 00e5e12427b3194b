"""`mass synth`: how good is the model as a generator? Parse rate and answer correctness.

For each target problem, samples m synthesised (problem, worked answer) pairs with the synthesis
prompt, and reports: the parse rate (usable pairs), and on MiniMath, where every template can
recompute the true answer of a problem written in its wording, how many parsed problems are
recognised, how many of their answers are correct, and how many are similar (same template as
the target). Writes a JSON report; prints a per-subject table.

    mass synth --data minimath-500 --limit 100 --m 4 --out results/synthesis.json
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from mass.config import config_to_dict, nested, setting
from mass.errors import MassError
from mass.results import write_json
from mass.synthesis import synthesise
from mass.minimath import grade_synthesised
from mass.models import SamplingConfig, load_model, resolve_model_name
from mass.tasks import load_task


@dataclass
class SynthConfig:
    model: str = setting("", "model: local path, hub id or .gguf file; empty means the embedded MiniMath model")
    data: str = setting("minimath-500", "task whose problems are the targets")
    limit: int | None = setting(100, "number of target problems (null: all)")
    m: int = setting(4, "synthesised examples per target")
    seed: int = setting(0, "sampling seed")
    out: str = setting("synthesis.json", "JSON report path")
    sampling: SamplingConfig = nested(SamplingConfig, "sampling of the synthesised examples")

    def __post_init__(self) -> None:
        if self.m < 1:
            raise MassError("m must be at least 1")
        if self.sampling.temperature == 0.0 and self.m > 1:
            self.sampling.temperature = 1.0  # greedy would write the same example m times


def run(cfg: SynthConfig) -> dict:
    problems = load_task(cfg.data).load(cfg.limit)
    model, tok = load_model(cfg.model or None)
    rng = torch.Generator().manual_seed(cfg.seed)
    rows, t0 = [], time.perf_counter()
    batch = max(1, cfg.sampling.batch_size // cfg.m)
    for start in tqdm(range(0, len(problems), batch), desc="synthesise", dynamic_ncols=True):
        part = problems[start : start + batch]
        for p, syn in zip(part, synthesise(model, tok, [p.problem for p in part], cfg.m, cfg.sampling, rng)):
            graded = [grade_synthesised(p.problem, e.problem, e.answer) | {"problem": e.problem, "solution": e.solution,
                      "answer": e.answer} for e in syn.examples]
            rows.append({"id": p.id, "subject": p.subject, "target": p.problem, "n_parsed": len(syn.examples),
                         "n_dropped": syn.n_dropped, "examples": graded})
    report = summarise(rows, cfg.m)
    report.update(model=resolve_model_name(cfg.model or None), data=cfg.data, m=cfg.m,
                  seconds=round(time.perf_counter() - t0, 1), config=config_to_dict(cfg), targets=rows)
    print(format_report(report))
    write_json(report, Path(cfg.out))
    print(f"wrote {cfg.out}")
    return report


def rates(rows: list[dict], m: int) -> dict:
    examples = [e for r in rows for e in r["examples"]]
    recognised = [e for e in examples if e["recognised"]]
    return {
        "samples": m * len(rows),
        "parse_rate": len(examples) / max(1, m * len(rows)),
        "recognised_rate": len(recognised) / max(1, len(examples)),
        "correct_rate": sum(bool(e["correct"]) for e in recognised) / max(1, len(recognised)),
        "similar_rate": sum(e["similar"] for e in examples) / max(1, len(examples)),
    }


def summarise(rows: list[dict], m: int) -> dict:
    by_subject = defaultdict(list)
    for r in rows:
        by_subject[r["subject"] or "(none)"].append(r)
    return {"overall": rates(rows, m), "by_subject": {s: rates(rs, m) for s, rs in sorted(by_subject.items())}}


def format_report(report: dict) -> str:
    head = f"  {'subject':<24} {'parsed':>7} {'recognised':>11} {'correct':>8} {'similar':>8}"
    lines = [f"synthesis quality ({report['m']} samples per target)", head]
    for name, r in [("overall", report["overall"]), *report["by_subject"].items()]:
        lines.append(f"  {name:<24} {100 * r['parse_rate']:6.1f}% {100 * r['recognised_rate']:10.1f}% "
                     f"{100 * r['correct_rate']:7.1f}% {100 * r['similar_rate']:7.1f}%")
    lines.append("parsed: of all samples; recognised and similar: of parsed; correct: of recognised")
    return "\n".join(lines)
