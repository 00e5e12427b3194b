"""Loading causal LMs (the embedded checkpoint or any Hugging Face model), LoRA, and sampling.

`load_model(None)` gives the embedded MiniMath model shipped in the package; any local path or
hub id works the same way through `AutoModelForCausalLM` / `AutoTokenizer`, and so does a
llama.cpp `.gguf` file (dequantised by transformers; `pip install gguf`). Prompts are plain
strings or chat messages; a tokenizer with a chat template renders messages with it.

    model, tok = load_model("meta-llama/Llama-3.1-8B-Instruct", dtype="bfloat16", device="cuda")
    texts = generate(model, tok, ["Problem: 1+1?\\nSolution:"], SamplingConfig(max_new_tokens=64))
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ContextManager

import torch
from transformers import (AttentionInterface, AutoModelForCausalLM, AutoTokenizer, DynamicCache, PreTrainedModel,
                          PreTrainedTokenizerBase)
from transformers.cache_utils import DynamicLayer

from mass.config import setting
from mass.errors import MassError
from mass.inner import SFTBatch
from mass.tangents import softmax

def _math_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Plain-matmul attention that forward-mode AD (jvp) can differentiate.

    SDPA kernels have no forward-mode rule, and HF's eager attention takes its softmax in
    float32 even for float64 inputs; this one uses float32 only for half-precision inputs.
    Registered as attn_implementation="mass_math"; the meta-gradient code path uses it.
    """
    groups = query.shape[1] // key.shape[1]
    key = key.repeat_interleave(groups, dim=1)  # grouped-query attention: (B, H, T, D)
    value = value.repeat_interleave(groups, dim=1)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, Tq, Tk)
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, :, : key.shape[-2]]
    wide = torch.float32 if query.dtype in (torch.float16, torch.bfloat16) else query.dtype
    weights = softmax(scores, dim=-1, dtype=wide).to(query.dtype)  # its jvp is lean: mass/tangents.py
    weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


AttentionInterface.register("mass_math", _math_attention)
try:  # the attention-mask builder must also know the name (transformers >= 4.53)
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

    ALL_MASK_ATTENTION_FUNCTIONS.register("mass_math", eager_mask)
except ImportError:  # pragma: no cover
    pass

EMBEDDED_MODEL = Path(__file__).parent / "assets" / "minimath-llama"
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}

Prompt = str | list[dict[str, str]]
# the random number generator(s) of sampling: one torch.Generator shared by every row, one per row
# (prompt), or none (the global RNG). Named `rng` throughout: "generator" is the synthesising model
Rng = torch.Generator | list[torch.Generator] | None


@dataclass
class SamplingConfig:
    temperature: float = setting(0.0, "sampling temperature; 0 means greedy decoding")
    top_p: float = setting(1.0, "nucleus sampling: keep the smallest token set with this much probability")
    max_new_tokens: int = setting(320, "longest completion, in tokens")
    stop: list[str] = setting([], "extra stop strings (the EOS token always stops)")
    batch_size: int = setting(64, "prompts sampled together")

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise MassError("sampling needs temperature >= 0, 0 < top_p <= 1, max_new_tokens >= 1, batch_size >= 1")


@dataclass
class LoraSettings:
    # rank 16 on every linear layer: on the embedded model a test-time step on q, k, v, o at rank 8
    # could hardly learn even T's own solution (`mass headroom`, results/inner-step/README.md)
    rank: int = setting(16, "LoRA rank")
    alpha: float = setting(16.0, "LoRA alpha (scale alpha/rank)")
    targets: list[str] = setting(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                                 "module names that get LoRA adapters")
    init: str = setting("default", "LoRA initialisation: default (B = 0, A random), gaussian, orthogonal "
                        "(A and B both random with BA = 0, so the first SGD step moves both)")

    def __post_init__(self) -> None:
        if self.init not in LORA_INITS:
            raise MassError(f"lora.init must be one of {', '.join(LORA_INITS)}, got '{self.init}'")
        if self.init == "orthogonal" and self.rank % 2:
            raise MassError(f"lora.init=orthogonal needs an even rank, got {self.rank}")


# PEFT initialisations that leave the base weights alone (pissa/olora rewrite them, which would
# change the model every other method answers with)
LORA_INITS = {"default": True, "gaussian": "gaussian", "orthogonal": "orthogonal"}


def resolve_model_name(name: str | None) -> str:
    """None or "embedded" means the checkpoint shipped inside the package."""
    if name in (None, "", "embedded"):
        if not (EMBEDDED_MODEL / "config.json").is_file():
            raise MassError(f"the embedded model is missing from {EMBEDDED_MODEL}; reinstall, or run `mass pretrain`")
        return str(EMBEDDED_MODEL)
    return name


def looks_like_a_path(name: str) -> bool:
    """A name no hub id can be: absolute, ~, ./ or ../, more than one '/', or a Windows path."""
    return (name.startswith(("/", "~", "./", "../", ".\\")) or name.count("/") > 1 or "\\" in name
            or (len(name) > 1 and name[1] == ":"))


def load_model(name: str | None = None, dtype: str = "float32", device: str | torch.device = "cpu",
               attn_implementation: str = "sdpa") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model in eval mode, tokenizer with left padding) from a local path or hub id."""
    path = resolve_model_name(name)
    if dtype not in DTYPES:
        raise MassError(f"unknown dtype '{dtype}'; use one of {', '.join(DTYPES)}")
    path = str(Path(path).expanduser()) if path.startswith("~") else path
    where, extra = path, {}
    if looks_like_a_path(path) and not Path(path).exists():
        raise MassError(f"model path not found: {path} (a local directory with config.json, or a .gguf file)")
    if path.endswith(".gguf"):  # a llama.cpp file: transformers dequantises it (needs the `gguf` package)
        if not Path(path).is_file():
            raise MassError(f"GGUF file not found: {path}")
        where, extra = str(Path(path).parent), {"gguf_file": Path(path).name}
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **extra)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=DTYPES[dtype], attn_implementation=attn_implementation,
                                                     **extra)
    except ImportError as e:
        raise MassError(f"could not load model '{path}': {str(e).splitlines()[0]}") from None
    except (OSError, ValueError) as e:
        hint = "" if Path(path).exists() else " (not a local directory; as a hub id it needs the network)"
        raise MassError(f"could not load model '{path}'{hint}: {str(e).splitlines()[0]}") from None
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


def uses_chat_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: Prompt) -> list[int]:
    """Token ids of a prompt: chat messages through the chat template, plain text with BOS."""
    if isinstance(prompt, list):
        ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    return tokenizer(prompt)["input_ids"]


def fit_problems(problems: list, tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel,
                 reserve: int = 512) -> list:
    """The problems, each cut to what the model can take: its context length less `reserve`
    tokens for the prompt around it and the answer. One warning line says how many were cut
    (a 100,000-character problem would otherwise run for minutes, or past the position table)."""
    context = getattr(model.config, "max_position_embeddings", None) or 4096
    limit = max(32, context - reserve)
    out, cut = [], 0
    for p in problems:
        if len(p.problem) <= limit:  # a token is at least one character: nothing to count
            out.append(p)
            continue
        ids = tokenizer(p.problem, add_special_tokens=False, verbose=False)["input_ids"]
        if len(ids) <= limit:
            out.append(p)
            continue
        out.append(replace(p, problem=tokenizer.decode(ids[:limit], skip_special_tokens=True)))
        cut += 1
    if cut:
        print(f"warning: {cut} problem(s) longer than {limit} tokens were cut to that length to fit the model's "
              f"context ({context} tokens)", file=sys.stderr)
    return out


def attach_lora(model: PreTrainedModel, rank: int = 8, alpha: float = 16.0,
                target_modules: list[str] | None = None, seed: int | None = None, init: str = "default") -> Any:
    """Wrap `model` with a PEFT LoRA adapter (dropout 0: the inner loop must be deterministic).

    With `seed`, the random initialisation of the LoRA A matrices depends on it alone (the global
    RNG is left as it was), so a fresh test-time adapter is the same in every run.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                        target_modules=target_modules or LoraSettings().targets,
                        init_lora_weights=LORA_INITS[init])
    if seed is None:
        return get_peft_model(model, config)
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        torch.manual_seed(seed)
        return get_peft_model(model, config)


@contextlib.contextmanager
def merged_lora(model) -> Iterator[None]:
    """Run a PEFT model with its active LoRA folded into the base weights, W + scaling * B A, and
    the adapter layers off: one matrix product per layer instead of three, for long generations
    with fixed LoRA values (on the embedded model the LoRA layers cost about 40% of a synthesis).
    The base weights are restored bit for bit on exit. CPU only: it holds a copy of every adapted
    weight meanwhile, which a large model on a GPU cannot spare (there it runs the adapter as is)."""
    if not hasattr(model, "disable_adapter") or next(model.parameters()).device.type != "cpu":
        yield
        return
    from peft.tuners.lora import LoraLayer

    saved = []
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoraLayer) and not module.disable_adapters:
                weight = module.get_base_layer().weight
                saved.append((weight, weight.detach().clone()))
                for adapter in module.active_adapters:
                    if adapter in module.lora_A:
                        weight.add_(module.get_delta_weight(adapter).to(weight.dtype))
    try:
        with model.disable_adapter():
            yield
    finally:
        with torch.no_grad():
            for weight, original in saved:
                weight.copy_(original)


def length_sorted_batches(lengths: list[int], size: int) -> Iterator[list[int]]:
    """Indices in order of length, `size` at a time: rows of similar lengths pad less. Callers put
    each batch's results back by index."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    for start in range(0, len(order), size):
        yield order[start : start + size]


@dataclass
class Generation:
    """One sampled completion: its text (cut at stop strings) and what it was sampled as."""
    text: str
    token_ids: list[int]  # the new tokens before the first end-of-sequence token
    logprobs: list[float]  # log p(token | all before it) of each, under the model (no temperature)
    end_id: int | None  # the end-of-sequence token it stopped with; None: it ran out of tokens
    end_logprob: float | None


@torch.no_grad()
def generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[Prompt],
             sampling: SamplingConfig, rng: Rng = None,
             around_batch: Callable[[list[int]], ContextManager] | None = None) -> list[str]:
    """Completions for `prompts` (same order), batched with the KV cache, cut at stop strings.

    `rng`: one torch.Generator that all rows draw from in turn, or a list of one per prompt:
    then each row draws from its own alone, wherever the length sort and the batching put it, so
    its sample does not depend on which prompts share its batch (up to the float rounding of a
    padded batch). Training seeds one per sequence (mass/training.py), so a step's samples are
    the same however its problems are split over torchrun ranks.

    `around_batch(indices)`, if given, is entered around the sampling of each batch, with the
    indices (into `prompts`) of its rows: batched adaptation uses it to give each row its LoRA.
    What it yields, if not None, is called with the positions of the rows kept whenever finished
    rows leave the batch (see `_sample`).
    """
    return [g.text for g in generate_scored(model, tokenizer, prompts, sampling, rng, around_batch, logprobs=False)]


@torch.no_grad()
def generate_scored(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[Prompt],
                    sampling: SamplingConfig, rng: Rng = None,
                    around_batch: Callable[[list[int]], ContextManager] | None = None,
                    logprobs: bool = True) -> list[Generation]:
    """`generate`, keeping each completion's tokens and their log-probabilities: what the model
    thinks of its own sample comes free with sampling it (the scorer's confidence features use it)."""
    if isinstance(rng, list) and len(rng) != len(prompts):
        raise ValueError(f"{len(rng)} random generators for {len(prompts)} prompts: give one per prompt")
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    out: list[Generation | None] = [None] * len(prompts)
    device = next(model.parameters()).device
    eos_ids = stop_ids(model, tokenizer)
    for idx in length_sorted_batches([len(ids) for ids in encoded], sampling.batch_size):
        batch = [encoded[i] for i in idx]
        width = max(len(ids) for ids in batch)
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in batch], device=device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch], device=device)
        with around_batch(idx) if around_batch else contextlib.nullcontext() as keep_rows:
            rows_rng = [rng[i] for i in idx] if isinstance(rng, list) else rng
            tokens, token_logprobs = _sample(model, input_ids, mask, sampling, eos_ids, pad, rows_rng, keep_rows,
                                             logprobs)
        for row, i in enumerate(idx):
            ids = _until_eos(tokens[row], eos_ids)
            ended = len(ids) < len(tokens[row])
            lp = token_logprobs[row] if logprobs else []
            out[i] = Generation(text=_cut(tokenizer.decode(ids, skip_special_tokens=True), sampling.stop),
                                token_ids=ids, logprobs=lp[: len(ids)],
                                end_id=tokens[row][len(ids)] if ended else None,
                                end_logprob=lp[len(ids)] if ended and logprobs else None)
    return out


def stop_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every end-of-sequence id: the tokenizer's and the generation config's (Llama 3 has several)."""
    ids = {tokenizer.eos_token_id}
    extra = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(extra) if isinstance(extra, (list, tuple)) else {extra}
    return sorted(i for i in ids if i is not None)


def _sample(model: PreTrainedModel, input_ids: torch.Tensor, mask: torch.Tensor, sampling: SamplingConfig,
            eos_ids: list[int], pad_id: int, rng: Rng,
            keep_rows: Callable[[torch.Tensor], None] | None = None,
            logprobs: bool = False) -> tuple[list[list[int]], list[list[float]] | None]:
    """Sample with the KV cache; returns each row's new tokens (what follows its first EOS is
    padding) and, if `logprobs`, each token's log-probability under the model (no temperature).

    Finished rows leave the batch once they are a quarter of it (a batch runs as long as its
    longest row: a third of the work was on finished rows), and `keep_rows(positions)` hears of
    it; only with our own cache (`reserved_cache`): other caches (linear attention, convolution
    states) would keep the dropped rows' states. A row's tokens do not depend on its batch-mates
    with greedy decoding or one rng per row; with one shared rng, which rows are left decides the
    draws (still seeded)."""
    B = input_ids.shape[0]
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    past = reserved_cache(model, input_ids.shape[1] + sampling.max_new_tokens)
    can_drop_rows = past is not None
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, past_key_values=past,
                use_cache=True)
    past, logits = out.past_key_values, out.logits[:, -1]
    eos = torch.tensor(eos_ids, device=input_ids.device)
    alive = torch.arange(B, device=input_ids.device)  # the original row of each row still in the batch
    # each row's tokens; what a finished row gets after its EOS (pad, or nothing once it left) is cut
    tokens = torch.full((B, sampling.max_new_tokens), pad_id, dtype=torch.long, device=input_ids.device)
    scores = torch.zeros(tokens.shape, device=input_ids.device) if logprobs else None
    done = torch.zeros(B, dtype=torch.bool, device=input_ids.device)  # of the rows alive
    for step in range(sampling.max_new_tokens):
        logits = logits.float()
        next_tok = _pick(logits, sampling, rng)  # (rows alive,)
        tokens[alive, step] = next_tok
        if scores is not None:
            scores[alive, step] = torch.log_softmax(logits, -1).gather(-1, next_tok[:, None]).squeeze(-1)
        done |= torch.isin(next_tok, eos)
        n_done = int(done.sum())
        if n_done == len(alive) or step + 1 == sampling.max_new_tokens:
            break
        if can_drop_rows and 4 * n_done >= len(alive):
            keep = (~done).nonzero().squeeze(1)
            past.batch_select_indices(keep)
            alive, done, next_tok = alive[keep], done[keep], next_tok[keep]
            mask, position_ids = mask[keep], position_ids[keep]
            if isinstance(rng, list):
                rng = [rng[int(i)] for i in keep]
            if keep_rows is not None:
                keep_rows(keep)
        next_tok = torch.where(done, torch.full_like(next_tok, pad_id), next_tok)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
        position_ids = position_ids[:, -1:] + 1
        out = model(input_ids=next_tok[:, None], attention_mask=mask, position_ids=position_ids,
                    past_key_values=past, use_cache=True)
        past, logits = out.past_key_values, out.logits[:, -1]
    return tokens[:, : step + 1].tolist(), None if scores is None else scores[:, : step + 1].tolist()


class ReservedLayer(DynamicLayer):
    """A KV-cache layer that writes each new token into a buffer reserved for the whole generation.

    The default `DynamicLayer` concatenates, copying the whole cache at every token: on a small
    model that copying (quadratic in the length) took more time than the attention itself.
    `keys`/`values` are views of the filled part, so attention sees the same values."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity, self.length = capacity, 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            shape = (*key_states.shape[:2], self.capacity, key_states.shape[-1])
            self._keys, self._values = key_states.new_empty(shape), value_states.new_empty(shape)
        end = self.length + key_states.shape[-2]
        if end > self._keys.shape[-2]:  # more than reserved: grow (by doubling), never fail
            grow = max(end, 2 * self._keys.shape[-2]) - self._keys.shape[-2]
            self._keys, self._values = (torch.cat([t, t.new_empty(*t.shape[:2], grow, t.shape[-1])], -2)
                                        for t in (self._keys, self._values))
        self._keys[:, :, self.length : end] = key_states
        self._values[:, :, self.length : end] = value_states
        self.length = end
        self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self._keys, self._values = self._keys[indices], self._values[indices]
            self.keys, self.values = self._keys[:, :, : self.length], self._values[:, :, : self.length]

    def reset(self) -> None:
        super().reset()
        self.length = 0

    def crop(self, tokens_to_remove: int) -> None:  # what `_sample` never needs: refused, not half done
        raise NotImplementedError("ReservedLayer does not crop")

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError("ReservedLayer does not repeat rows")

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        raise NotImplementedError("ReservedLayer does not reorder rows (use batch_select_indices)")

    def offload(self) -> None:
        raise NotImplementedError("ReservedLayer is not offloaded")


def reserved_cache(model: PreTrainedModel, capacity: int) -> DynamicCache | None:
    """A KV cache of `ReservedLayer`s for `capacity` tokens, or None (the model's own default)
    where the model's cache is not plain full-attention layers (sliding windows, linear attention)."""
    cache = DynamicCache(config=model.config)
    if not cache.layers or any(type(layer) is not DynamicLayer for layer in cache.layers):
        return None
    cache.layers = [ReservedLayer(capacity) for _ in cache.layers]
    return cache


def _until_eos(row: list[int], eos_ids: list[int]) -> list[int]:
    ends = [row.index(e) for e in eos_ids if e in row]
    return row[: min(ends)] if ends else row


def _pick(logits: torch.Tensor, sampling: SamplingConfig, rng: Rng) -> torch.Tensor:
    """Greedy at temperature 0, else temperature + nucleus (top-p) sampling.  logits: (B, V).
    With a list of generators, row j's token is drawn from rng[j] alone."""
    if sampling.temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_p, sorted_i = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < sampling.top_p  # always keeps the top token
        sorted_p = sorted_p * keep
        probs = torch.zeros_like(probs).scatter(-1, sorted_i, sorted_p)
    if isinstance(rng, list):  # one draw per row: a row's token never depends on the other rows
        return torch.cat([torch.multinomial(row, 1, generator=g) for row, g in zip(probs, rng, strict=True)])
    return torch.multinomial(probs, 1, generator=rng).squeeze(-1)


def _cut(text: str, stops: list[str]) -> str:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


def make_sft_batch(tokenizer, prompts: list, completions: list[str], device: torch.device | str = "cpu") -> SFTBatch:
    """Tokenise (prompt, completion) pairs into an SFT batch (mass.inner takes tensors only); only the
    completion and its EOS are scored."""
    rows, masks = [], []
    for prompt, completion in zip(prompts, completions):
        p = encode_prompt(tokenizer, prompt)
        c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(p + c)
        masks.append([0] * (len(p) - 1) + [1] * len(c))  # aligned with labels input_ids[1:]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
    attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
    target = torch.tensor([m + [0] * (width - 1 - len(m)) for m in masks], device=device, dtype=torch.float32)
    return SFTBatch(input_ids, attention, target)
