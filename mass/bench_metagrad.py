"""`mass bench metagrad`: time and peak memory of one meta-step in each meta-gradient mode.

One meta-step is K inner SGD steps on m examples plus the meta-gradient dL_outer/ds (outer loss:
the CE of one gold sequence), as in `mass meta-train`. The modes (mass/metagrad.py, mass/recompute.py):

    sft               one plain LoRA SFT gradient of the m examples (the yardstick, not a meta-step)
    unrolled          reverse-over-reverse through the unrolled K steps
    hybrid            forward-over-reverse adjoint recurrence
    hybrid-recompute  the same, holding one decoder block's activations at a time

Each mode runs in a fresh process (so one mode's freed memory cannot hide another's peak) on the
same random batch: token ids drawn from the vocabulary, the second half of each sequence scored.
Peak memory is above the loaded model and batch, two ways: the peak of tensor storage alive at
once (`TensorPeak`, one more run: what `torch.cuda.max_memory_allocated` counts, without an
allocator's rounding, on any device; the ratios are of this one), and what the process saw: on
GPU `torch.cuda.max_memory_allocated`, on CPU the peak resident set size (Linux VmHWM, reset
after loading; the C heap keeps freed blocks, so it reads up to 2x the tensors' peak). A mode
that runs out of memory is a row saying so. Every mode's dL/ds is compared with the first
meta-gradient mode's, so a fast mode that is wrong shows. Writes OUT/metagrad-NAME.json and .md.

    mass bench metagrad                                   # the embedded model, m=6, K=2, 256 tokens
    mass bench metagrad model=random:minimath layers=8 tokens=512
    mass bench metagrad model=random:llama-3.1-8b dtype=bfloat16 m=12 tokens=1024 device=cuda
    mass bench metagrad model=/path/SmolLM2-135M-Instruct.Q4_1.gguf

`model=random:NAME` builds a model with random weights from architecture dimensions (nothing is
downloaded): `minimath` (the embedded model's), `smollm2-135m`, `llama-3.2-1b`, `llama-3.1-8b`,
or a path to a config.json.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import platform
import statistics
import time
import weakref
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path
from unittest import mock

import torch
from torch.func import grad
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

from mass.cli import quiet_libraries
from mass.config import config_to_dict, setting
from mass.errors import MassError
from mass.inner import SFTBatch, example_losses, inner_loss
from mass.models import DTYPES, EMBEDDED_MODEL, attach_lora, load_model
from mass.metagrad import META_GRADS
from mass.recompute import check_blockwise_once, decoder_of
from mass.results import write_report
from mass.training import training_device

MODES = ("sft", "unrolled", "hybrid", "hybrid-recompute")

# architecture dimensions of public models (their config.json), for random-weight benchmarks
PRESETS = {
    "minimath": None,  # the embedded model's own config
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192,
                         tie_word_embeddings=True, rope_theta=100000.0),
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=64, vocab_size=128256, max_position_embeddings=131072,
                         tie_word_embeddings=True, rope_theta=500000.0),
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=128, vocab_size=128256, max_position_embeddings=131072,
                         tie_word_embeddings=False, rope_theta=500000.0),
}


@dataclass
class MetaGradBenchConfig:
    model: str = setting("", "model: empty (the embedded one), a local path, a .gguf file, or random:NAME "
                             "(minimath, smollm2-135m, llama-3.2-1b, llama-3.1-8b, or a config.json path)")
    layers: int | None = setting(None, "random:NAME only: this many decoder layers instead of the preset's")
    m: int = setting(6, "examples in the inner batch")
    steps: int = setting(2, "inner SGD steps K")
    tokens: int = setting(256, "tokens per example (and in the outer loss's gold sequence)")
    lr: float = setting(1.0, "inner SGD learning rate")
    rank: int = setting(8, "LoRA rank")
    targets: list[str] = setting(["q_proj", "v_proj"], "LoRA target modules")
    dtype: str = setting("float32", "base model dtype (LoRA, adjoints and meta-gradients stay float32)")
    device: str = setting("auto", "auto (cuda if available), cpu or cuda")
    modes: list[str] = setting(list(MODES), f"what to run: any of {', '.join(MODES)}")
    repeats: int = setting(3, "timed runs per mode (the median is reported)")
    warmup: int = setting(1, "untimed runs before them (0 for a model whose one run takes minutes)")
    name: str = setting("", "name of the result files (default: from the model, layers and tokens)")
    out: str = setting("results/bench", "directory of the JSON and Markdown results")
    seed: int = setting(0, "seed of the random batch, LoRA and weights")

    def __post_init__(self) -> None:
        unknown = [m for m in self.modes if m not in MODES]
        if unknown or not self.modes:
            raise MassError(f"modes must be some of {', '.join(MODES)}; got {', '.join(unknown) or 'none'}")
        if self.m < 1 or self.steps < 1 or self.tokens < 4 or self.repeats < 1 or self.rank < 1 or self.warmup < 0:
            raise MassError("bench metagrad needs m >= 1, steps >= 1, tokens >= 4, repeats >= 1, rank >= 1, "
                            "warmup >= 0")
        if self.layers is not None and not self.model.startswith("random:"):
            raise MassError("layers= applies to model=random:NAME only (a pretrained model keeps its layers)")
        if self.model.startswith("random:"):
            preset = self.model.removeprefix("random:")
            if preset not in PRESETS and not Path(preset).is_file():
                raise MassError(f"model=random:{preset}: use one of {', '.join(PRESETS)}, or a config.json path")


def run(cfg: MetaGradBenchConfig) -> dict:
    device = training_device(cfg.device)
    rows = []
    for mode in cfg.modes:  # one fresh process each: a peak is never hidden by another mode's memory
        print(f"bench metagrad: {mode} ...", flush=True)
        rows.append(_in_fresh_process(cfg, mode))
        print(f"  {_format_row(rows[-1])}", flush=True)
    measured = [r for r in rows if "error" not in r]
    result = {"config": config_to_dict(cfg), "device": _device_name(device), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "model_info": measured[0]["model_info"] if measured else {},
              "rows": [{k: v for k, v in r.items() if k not in ("model_info", "ds")} for r in rows]}
    reference = next((r for r in measured if r["mode"] != "sft"), None)
    for row, full in zip(result["rows"], rows):
        if reference is not None and full.get("ds") is not None:
            ref = torch.tensor(reference["ds"], dtype=torch.float64)
            row["ds_rel_diff"] = float((torch.tensor(full["ds"], dtype=torch.float64) - ref).norm() / ref.norm())
            row["ds_reference"] = reference["mode"]
    _add_ratios(result["rows"])
    write_report(result, format_table(result), Path(cfg.out), f"metagrad-{cfg.name or _default_name(cfg)}")
    return result


def _default_name(cfg: MetaGradBenchConfig) -> str:
    model = cfg.model.removeprefix("random:") or "embedded"
    model = Path(model).stem if "/" in model else model
    layers = f"-{cfg.layers}L" if cfg.layers else ""
    return f"{model}{layers}-m{cfg.m}-K{cfg.steps}-{cfg.tokens}tok-{cfg.dtype}"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def _in_fresh_process(cfg: MetaGradBenchConfig, mode: str) -> dict:
    # tqdm reads TQDM_* once, when imported, and the child imports it before it runs anything of
    # ours: it must inherit the setting that hides the GGUF loader's bar (we show no bar there)
    with mock.patch.dict(os.environ, {"TQDM_DISABLE": "1"}), \
            ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(measure_mode, asdict(cfg), mode).result()
        except BrokenProcessPool:  # killed from outside: on CPU, the kernel's answer to running out of memory
            return {"mode": mode, "error": "the measuring process was killed (out of memory?)"}


def measure_mode(cfg_dict: dict, mode: str) -> dict:
    """Load the model, build the batch, run `mode` `warmup` times untimed and `repeats` times timed."""
    quiet_libraries(False)
    cfg = MetaGradBenchConfig(**cfg_dict)
    device = training_device(cfg.device)
    try:
        return _measure(cfg, mode, device)
    except torch.OutOfMemoryError as e:  # a result too: this mode does not fit on this device
        return {"mode": mode, "error": "out of memory: " + str(e).splitlines()[0][:200]}


def _measure(cfg: MetaGradBenchConfig, mode: str, device: torch.device) -> dict:
    model, info = _load(cfg, device)
    batch, gold = _random_batches(cfg, model.config.vocab_size, device)
    phi0 = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    s = torch.full((cfg.m,), 1.0 / cfg.m, device=device)
    step = _mode_fn(mode, model, phi0, batch, gold, s, cfg)
    baseline = _memory_baseline(device)
    for _ in range(cfg.warmup):  # allocator pools, kernels
        step()
    seconds = []
    for _ in range(cfg.repeats):
        _sync(device)
        t0 = time.perf_counter()
        ds = step()
        _sync(device)
        seconds.append(time.perf_counter() - t0)
    peak = _peak_above(device, baseline)
    with TensorPeak() as tensors:
        step()
    return {"mode": mode, "seconds": round(statistics.median(seconds), 4),
            "tensor_peak_gb": round(tensors.peak / 2**30, 4), "peak_gb": round(peak / 2**30, 4),
            "ds": None if ds is None else [float(x) for x in ds], "model_info": info}


class TensorPeak(TorchDispatchMode):
    """The most bytes of tensor storage alive at once among those created while it is active.

    Every operation's new output storage is counted from its creation until it is freed (a weak
    reference's callback); views and in-place results are not new storage, and what existed
    before (the model, the batch) is never counted. Runs on any device."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._counted: dict[int, weakref.ref] = {}  # id(storage) -> reference that uncounts it

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not any(r.alias_info for r in func._schema.returns):  # views and in-place ops make no storage
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    self._count(t.untyped_storage())
        return out

    def _count(self, storage: torch.UntypedStorage) -> None:
        key, size = id(storage), storage.nbytes()
        if key in self._counted:
            return
        self._counted[key] = weakref.ref(storage, lambda _, key=key, size=size: self._uncount(key, size))
        self.live += size
        self.peak = max(self.peak, self.live)

    def _uncount(self, key: int, size: int) -> None:
        self.live -= size
        self._counted.pop(key, None)


def _load(cfg: MetaGradBenchConfig, device: torch.device):
    torch.manual_seed(cfg.seed)
    if cfg.model.startswith("random:"):
        preset = cfg.model.removeprefix("random:")
        if preset == "minimath":
            config = AutoConfig.from_pretrained(EMBEDDED_MODEL)
        elif preset in PRESETS:
            config = LlamaConfig(**PRESETS[preset])
        else:
            config = AutoConfig.from_pretrained(Path(preset).parent if preset.endswith(".json") else preset)
        if cfg.layers:
            config.num_hidden_layers = cfg.layers
        config._attn_implementation = "mass_math"
        with torch.device(device):
            base = AutoModelForCausalLM.from_config(config, dtype=DTYPES[cfg.dtype]).eval()
    else:
        base, _ = load_model(cfg.model or None, cfg.dtype, device, attn_implementation="mass_math")
    model = attach_lora(base, rank=cfg.rank, alpha=2.0 * cfg.rank, target_modules=cfg.targets, seed=cfg.seed)
    with torch.no_grad():  # B != 0 as after meta-training, so that every LoRA matrix carries signal
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.01)
    c = base.config
    info = {"layers": c.num_hidden_layers, "hidden": c.hidden_size, "heads": c.num_attention_heads,
            "kv_heads": getattr(c, "num_key_value_heads", c.num_attention_heads), "vocab": c.vocab_size,
            "base_params_m": round(sum(p.numel() for p in base.parameters()) / 1e6, 2),
            "lora_params_m": round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 3)}
    return model, info


def _random_batches(cfg: MetaGradBenchConfig, vocab: int, device: torch.device):
    """m examples and one gold sequence of `tokens` random ids each; the second half is scored."""
    g = torch.Generator().manual_seed(cfg.seed)

    def batch(rows: int) -> SFTBatch:
        ids = torch.randint(3, vocab, (rows, cfg.tokens), generator=g)
        target = torch.zeros(rows, cfg.tokens - 1)
        target[:, cfg.tokens // 2 - 1 :] = 1.0
        return SFTBatch(ids.to(device), torch.ones_like(ids).to(device), target.to(device))

    return batch(cfg.m), batch(1)


def _mode_fn(mode: str, model, phi0, batch, gold, s, cfg: MetaGradBenchConfig):
    if mode == "sft":
        g = grad(lambda phi: inner_loss(model, phi, batch, s))
        return lambda: (g(phi0), None)[1]
    outer = lambda phi: example_losses(model, phi, gold).mean()  # noqa: E731
    if mode == "hybrid-recompute":  # its once-per-model check, outside what is timed and measured
        check_blockwise_once(model, phi0, batch, decoder_of(model))
    meta_grad = META_GRADS[mode]
    return lambda: meta_grad(model, phi0, batch, s, cfg.lr, cfg.steps, outer).ds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _memory_baseline(device: torch.device) -> int:
    """What is resident now (model, batch); the peak counter starts again from here."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    try:  # hand freed heap back to the system, so that reuse of it cannot hide a peak
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak RSS (VmHWM) to the current RSS
    except OSError as e:
        raise MassError(f"bench metagrad on CPU measures the peak RSS through /proc (Linux only): {e}") from None
    return _proc_status_kb("VmRSS") * 1024


def _peak_above(device: torch.device, baseline: int) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) - baseline
    return _proc_status_kb("VmHWM") * 1024 - baseline


def _proc_status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise MassError(f"/proc/self/status has no {key}")


def _add_ratios(rows: list[dict]) -> None:
    by_mode = {r["mode"]: r for r in rows if "error" not in r}
    for r in by_mode.values():
        for ref in ("unrolled", "sft"):
            if ref in by_mode and by_mode[ref]["tensor_peak_gb"] > 0:
                r[f"memory_vs_{ref}"] = round(r["tensor_peak_gb"] / by_mode[ref]["tensor_peak_gb"], 3)
                r[f"time_vs_{ref}"] = round(r["seconds"] / by_mode[ref]["seconds"], 3)


def _format_row(row: dict) -> str:
    if "error" in row:
        return f"{row['mode']}: {row['error']}"
    return (f"{row['mode']}: {row['seconds']:.3f} s, tensors' peak {row['tensor_peak_gb']:.3f} GB above the model "
            f"(process: {row['peak_gb']:.3f} GB)")


def format_table(result: dict) -> str:
    c, info = result["config"], result["model_info"]
    about = f" ({info['layers']} layers, d={info['hidden']}, {info['base_params_m']}M params)" if info else ""
    lines = [f"meta-step: m={c['m']}, K={c['steps']}, {c['tokens']} tokens, {c['dtype']}, LoRA r={c['rank']} on "
             f"{','.join(c['targets'])}; model {c['model'] or 'embedded'}{about}; {result['device']}", "",
             "| mode | seconds | tensors' peak GB | process peak GB | memory / unrolled | memory / SFT step "
             "| time / unrolled | dL/ds rel. diff |", "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['mode']} | {r['error']} |" + " |" * 6)
            continue
        diff = f"{r['ds_rel_diff']:.1e}" if "ds_rel_diff" in r else "-"
        lines.append(f"| {r['mode']} | {r['seconds']:.3f} | {r['tensor_peak_gb']:.3f} | {r['peak_gb']:.3f} "
                     f"| {r.get('memory_vs_unrolled', '-')} | {r.get('memory_vs_sft', '-')} "
                     f"| {r.get('time_vs_unrolled', '-')} | {diff} |")
    process = "torch.cuda.max_memory_allocated" if "CPU" not in result["device"] else "peak resident set size"
    lines += ["", f"Peaks above the loaded model and batch. Tensors' peak: the most tensor storage alive at once "
                  f"(the memory ratios are of it); process peak: {process}."]
    return "\n".join(lines)
