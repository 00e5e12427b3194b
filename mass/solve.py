"""`mass solve`: adapt to one problem (or a file of them) at test time and show the work.

Runs MASS at the paper's inference settings (m=6 synthesised examples, K=1 step) with a
meta-trained checkpoint, and prints the synthesised examples, their scorer weights, and the
answer of the adapted model. Without --checkpoint it runs TT-SS (uniform weights, fresh LoRA).

    mass solve "What is the remainder when $1234$ is divided by $7$?" --checkpoint runs/mass
    mass solve --file problems.txt --checkpoint runs/mass --out solved.json   # one problem per line
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from mass.adaptation import AdaptConfig, synthesise_adapt_answer
from mass.checker import extract_final_answer
from mass.checkpoint import checkpoint_model, load_meta_checkpoint
from mass.config import nested, setting
from mass.errors import MassError
from mass.results import write_json
from mass.inner import lora_params
from mass.models import LoraSettings, SamplingConfig, attach_lora, fit_problems, load_model
from mass.tasks import Task, decode_utf8
from mass.problem import Problem


@dataclass
class SolveConfig:
    problem: str = setting("", "the problem text (or use --file)")
    file: str = setting("", "a text file with one problem per line")
    checkpoint: str = setting("", "meta-trained MASS checkpoint; empty runs TT-SS (uniform weights)")
    model: str = setting("", "base model; empty means the checkpoint's, else the embedded model")
    seed: int = setting(0, "sampling seed")
    out: str = setting("", "optionally write the full details as JSON here")
    adapt: AdaptConfig = nested(AdaptConfig, "test-time adaptation (paper inference: m=6, K=1)")
    lora: LoraSettings = nested(LoraSettings, "LoRA of TT-SS when there is no checkpoint")
    sampling: SamplingConfig = nested(SamplingConfig, "decoding of the final answer")


def read_problems(cfg: SolveConfig) -> list[str]:
    if cfg.problem and cfg.file:
        raise MassError("give a problem or --file, not both")
    if cfg.file:
        path = Path(cfg.file)
        if not path.is_file():
            raise MassError(f"problem file not found: {path}")
        problems = [line.strip() for line in decode_utf8(path.read_bytes(), str(path)).splitlines() if line.strip()]
        if not problems:
            raise MassError(f"{path} holds no problems")
        return problems
    if not cfg.problem.strip():
        raise MassError('give a problem: mass solve "What is $2+3$?" (or --file problems.txt)')
    return [cfg.problem.strip()]


def run(cfg: SolveConfig) -> list[dict]:
    texts = read_problems(cfg)
    model_name = cfg.model or checkpoint_model(cfg.checkpoint)
    model, tok = load_model(model_name or None)
    if cfg.checkpoint:
        peft_model, scorer, phi0 = load_meta_checkpoint(model, cfg.checkpoint)
        adapt_cfg = cfg.adapt
    else:
        print("no --checkpoint: running TT-SS (uniform weights on a fresh LoRA)")
        peft_model = attach_lora(model, cfg.lora.rank, cfg.lora.alpha, cfg.lora.targets, seed=cfg.seed, init=cfg.lora.init)
        scorer, phi0 = None, lora_params(peft_model)
        adapt_cfg = replace(cfg.adapt, weights="uniform")
    problems = fit_problems([Problem(id=str(i), problem=t, solution=None, answer="", subject="", level=None)
                             for i, t in enumerate(texts)], tok, model)
    task = Task(name="solve", load=lambda limit: problems)
    results = synthesise_adapt_answer(peft_model, tok, problems, phi0, scorer, adapt_cfg, task, cfg.sampling,
                               torch.Generator().manual_seed(cfg.seed))
    for problem, r in zip(problems, results):
        r.update(problem=problem.problem, answer=extract_final_answer(r["generated"]))
        print(format_result(r))
    if cfg.out:
        write_json({"checkpoint": cfg.checkpoint, "results": results}, Path(cfg.out))
        print(f"wrote {cfg.out}")
    return results


def format_result(r: dict) -> str:
    lines = [f"Problem: {r['problem']}", f"Synthesised examples: {r['n_parsed']} parsed, {r['n_dropped']} dropped"]
    for i, e in enumerate(r.get("examples", []), 1):
        lines.append(f"  [{i}] weight {e['weight']:.3f}  {e['problem']}")
        lines.append(f"      answer: {e['answer']}")
    if not r["adapted"]:
        lines.append("  (no usable example: answered without adaptation)")
    lines += [f"Solution:{r['generated']}", f"Answer: {r['answer']}",
              f"Time: generate {r['seconds_generate']:.2f}s, score {r['seconds_score']:.2f}s, "
              f"update {r['seconds_update']:.2f}s, "
              f"answer {r['seconds_answer']:.2f}s", ""]
    return "\n".join(lines)
