"""`mass eval`: the evaluation harness for every method, on any math task.

Runs a method (`--method base|...`) over a task's problems, grades each final answer with the
Math-Verify checker, prints a per-subject and per-level table and writes one JSON file:
method, model, data, n, accuracy, ci95 (Wilson, 95%), by_subject, by_level, seconds_per_problem,
config, and records (id, subject, level, gold, prediction, correct, generated, method details).
The file is written only when the whole run succeeded, so a failed run leaves no partial result.

    mass eval --method base --data minimath-500 --out results/base.json
    mass eval --method base --model ./tiny-llama --data ../shared/data/math500_test.jsonl --limit 5
    torchrun --nproc_per_node 8 -m mass eval --method base --model meta-llama/Llama-3.1-8B-Instruct \\
        --data math500 dtype=bfloat16      # problems sharded over ranks, merged into one result
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import MISSING, dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from mass import dist
from mass.checker import is_equivalent
from mass.checkpoint import checkpoint_model, default_checkpoint
from mass.config import config_to_dict, nested, setting
from mass.errors import MassError
from mass.methods import MethodContext, get_method
from mass.adaptation import AdaptConfig
from mass.models import LoraSettings, SamplingConfig, fit_problems, load_model, resolve_model_name
from mass.results import wilson_interval, write_json
from mass.tasks import load_task
from mass.training import training_device


@dataclass
class EvalConfig:
    method: str = setting("base", "test-time method: base, ttt, ttss, solver-grpo, mass-gold, mass")
    checkpoint: str = setting("", "checkpoint directory: `mass meta-train` (mass, mass-gold) or `mass grpo` (solver-grpo)")
    model: str = setting("", "model: local path, hub id or .gguf file; empty means the embedded MiniMath model")
    data: str = setting("minimath-500", "task name (minimath-500, math500, gsm8k, ...) or a .jsonl file")
    limit: int | None = setting(None, "evaluate only the first N problems")
    train_data: str = setting("minimath-train", "ttt: training problems with gold solutions, m drawn per problem")
    out: str = setting("results.json", "where the JSON results go")
    seed: int = setting(0, "seed for sampling")
    dtype: str = setting("float32", "model dtype: float32, bfloat16, float16")
    device: str = setting("auto", "auto (cuda if available), cpu, or cuda")
    attn_implementation: str = setting("sdpa", "attention kernel: sdpa or eager")
    check_timeout: float = setting(10.0, "seconds one answer check may take before it counts as wrong")
    sampling: SamplingConfig = nested(SamplingConfig, "decoding of the final answers")
    adapt: AdaptConfig = nested(AdaptConfig, "test-time adaptation (ttt, ttss, mass): paper inference m=6, K=1")
    lora: LoraSettings = nested(LoraSettings, "the fresh LoRA adapter of ttt and ttss (mass uses the checkpoint's)")

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise MassError("limit must be a positive number of problems")
        if not self.out.endswith(".json"):
            raise MassError(f"out must be a .json path, got '{self.out}'")


@dataclass
class Tuning:
    """One adapting method's own inference settings (tuned on minimath-dev); null: eval.adapt's."""
    lr: float | None = setting(None, "inner SGD learning rate")
    steps: int | None = setting(None, "inner SGD steps K")
    m: int | None = setting(None, "examples per problem")


@dataclass
class Tunings:
    """Per-method inference settings, so that every adapting method runs at its own best
    (`scripts/tune.py` measures them on minimath-dev, never on minimath-500). `mass table` and
    `mass bench adapt` run each method with its own."""
    # measured by `python scripts/tune.py --lrs 1 3 --steps 2 4` (results/tuning/tuning.md)
    ttt: Tuning = nested(lambda: Tuning(lr=3.0, steps=2), "Base TTT")
    ttss: Tuning = nested(lambda: Tuning(lr=1.0, steps=4), "Base TT-SS")
    mass_gold: Tuning = nested(lambda: Tuning(lr=1.0, steps=2), "MASS_gold")
    mass: Tuning = nested(lambda: Tuning(lr=1.0, steps=2), "MASS")


def tuned_adapt(adapt: AdaptConfig, tuned: Tunings, method: str) -> AdaptConfig:
    """`adapt` with `method`'s own tuned settings (if any) in place."""
    tuning = getattr(tuned, method.replace("-", "_"), None)
    if tuning is None:
        return adapt
    return replace(adapt, **{k: v for k, v in vars(tuning).items() if v is not None})


# the settings only some methods read; any other method must leave them at their defaults
METHOD_SETTINGS = {"base": (), "ttt": ("adapt", "lora", "train_data"), "ttss": ("adapt", "lora"),
                   "solver-grpo": ("checkpoint",), "mass-gold": ("adapt", "checkpoint"), "mass": ("adapt", "checkpoint")}
OPTIONAL = ("adapt", "lora", "train_data", "checkpoint")


def _default(name: str):
    """EvalConfig's own default for the setting `name`."""
    f = EvalConfig.__dataclass_fields__[name]
    return f.default_factory() if f.default is MISSING else f.default


def ignored_settings(cfg: EvalConfig) -> list[str]:
    """Settings given a value that `cfg.method` never reads."""
    used = METHOD_SETTINGS.get(cfg.method, OPTIONAL)
    return [name for name in OPTIONAL if name not in used and getattr(cfg, name) != _default(name)]


def only_used_settings(cfg: EvalConfig) -> EvalConfig:
    """cfg with the settings its method does not read back at their defaults (for `mass table`,
    whose shared eval.* settings serve every method)."""
    return replace(cfg, **{name: _default(name) for name in ignored_settings(cfg)})


def run(cfg: EvalConfig) -> dict:
    method = get_method(cfg.method)
    ignored = ignored_settings(cfg)
    if ignored:
        raise MassError(f"--method {cfg.method} does not use {', '.join(ignored)}: leave "
                        f"{'it out, it' if len(ignored) == 1 else 'them out, they'} would be ignored")
    cfg = with_checkpoint(cfg)
    task = load_task(cfg.data)
    problems = task.load(cfg.limit)
    device = dist.init()  # joins the process group under torchrun
    device = device if cfg.device == "auto" else training_device(cfg.device)
    model_name = cfg.model or checkpoint_model(cfg.checkpoint) or None
    model, tokenizer = load_model(model_name, cfg.dtype, device, cfg.attn_implementation)
    problems = fit_problems(problems, tokenizer, model)
    rng = torch.Generator(device=device).manual_seed(cfg.seed + dist.rank())
    ctx = MethodContext(model=model, tokenizer=tokenizer, task=task, cfg=cfg, rng=rng)

    indexed = dist.shard(list(enumerate(problems)))
    records = []
    bar = tqdm(total=len(indexed), desc=f"eval {cfg.method}", disable=not dist.is_main(), dynamic_ncols=True)
    chunk = cfg.sampling.batch_size
    for start in range(0, len(indexed), chunk):
        part = indexed[start : start + chunk]
        t0 = time.perf_counter()
        outputs = method.answer([p for _, p in part], ctx)
        seconds = (time.perf_counter() - t0) / len(part)
        for (i, p), out in zip(part, outputs):
            records.append(make_record(i, p, task, out, seconds, cfg.check_timeout))
        bar.update(len(part))
        bar.set_postfix(acc=f"{sum(r['correct'] for r in records) / len(records):.3f}")
    bar.close()

    records = sorted(dist.gather_lists(records), key=lambda r: r.pop("index"))
    result = summarise(records, cfg, model_name=resolve_model_name(model_name), data=task.name)
    if dist.is_main():
        print(format_table(result))
        write_json(result, Path(cfg.out))
        print(f"wrote {cfg.out}")
    dist.barrier()
    return result


CHECKPOINT_METHODS = {"mass": "mass meta-train outer=verifier", "mass-gold": "mass meta-train outer=gold",
                      "solver-grpo": "mass grpo"}


def with_checkpoint(cfg: EvalConfig) -> EvalConfig:
    """A method that needs a trained checkpoint gets the shipped one for the embedded model when
    none is given; for another model it is an error, before any work starts."""
    if cfg.method not in CHECKPOINT_METHODS or cfg.checkpoint:
        return cfg
    shipped = default_checkpoint(cfg.method, cfg.model)
    if shipped is None:
        raise MassError(f"--method {cfg.method} needs --checkpoint DIR for model '{cfg.model}' "
                        f"(make one with `{CHECKPOINT_METHODS[cfg.method]} model={cfg.model}`)")
    return replace(cfg, checkpoint=str(shipped))


def make_record(index: int, problem, task, output: dict, seconds: float, timeout: float) -> dict:
    generated = output["generated"]
    prediction = task.extract_answer(generated)
    extra = {k: v for k, v in output.items() if k != "generated"}
    return {"index": index, "id": problem.id, "subject": problem.subject, "level": problem.level,
            "gold": problem.answer, "prediction": prediction,
            "correct": is_equivalent(problem.answer, prediction, timeout), "generated": generated,
            "seconds": round(seconds, 4), **extra}


def breakdown(records: list[dict], key: str) -> dict[str, dict]:
    groups: dict[str, list[bool]] = defaultdict(list)
    for r in records:
        name = r[key]
        groups["(none)" if name in (None, "") else str(name)].append(r["correct"])
    return {name: {"accuracy": sum(v) / len(v), "n": len(v)} for name, v in sorted(groups.items())}


def summarise(records: list[dict], cfg: EvalConfig, model_name: str, data: str) -> dict:
    n = len(records)
    k = sum(r["correct"] for r in records)
    return {
        "method": cfg.method, "model": model_name, "data": data, "n": n,
        "accuracy": k / n if n else 0.0, "ci95": list(wilson_interval(k, n)),
        "by_subject": breakdown(records, "subject"), "by_level": breakdown(records, "level"),
        "seconds_per_problem": sum(r["seconds"] for r in records) / n if n else 0.0,
        "world_size": dist.world_size(), "config": config_to_dict(cfg), "records": records,
    }


def format_table(result: dict) -> str:
    lo, hi = result["ci95"]
    lines = [f"{result['method']} on {result['data']}: accuracy {100 * result['accuracy']:.1f}% "
             f"(95% CI {100 * lo:.1f}-{100 * hi:.1f}), n={result['n']}, "
             f"{result['seconds_per_problem']:.2f} s/problem", ""]
    for title, key in (("subject", "by_subject"), ("level", "by_level")):
        rows = result[key]
        width = max([len(title)] + [len(name) for name in rows])
        lines.append(f"  {title:<{width}}  accuracy      n")
        for name, v in rows.items():
            lines.append(f"  {name:<{width}}  {100 * v['accuracy']:7.1f}%  {v['n']:5d}")
        lines.append("")
    return "\n".join(lines)
