"""`mass pretrain`: train the embedded MiniMath model from scratch on a CPU.

The corpus teaches the two behaviours MASS needs from one model: solving
("Problem: T / Solution: ... \\boxed{}") and synthesising ("Problem: T / write a similar problem /
New problem: p / Solution: a"). Problems come from the MiniMath pretraining stream, which never
contains a `minimath-500` or `minimath-meta` problem. One subject (Intermediate Algebra by default)
is down-weighted in the mixture, so that, like a real base LLM, the model is uneven across subjects.

Each step's batch is generated from a seed derived from (seed, step), so `--resume` continues
exactly where a run stopped. The output directory is a standard Hugging Face checkpoint
(config.json, model.safetensors, tokenizer.json) plus the training log and curve.

    mass pretrain out=runs/pretrain                 # the shipped checkpoint's command (see README)
    mass pretrain out=/tmp/smoke steps=5 model.layers=1 model.hidden_size=32  # smoke run
"""

from __future__ import annotations

import itertools
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from mass.checkpoint import load_train_state
from mass.config import config_to_dict, nested, setting
from mass.errors import MassError
from mass.minimath import SUBJECTS, corpus_solution, sample_fresh_problem, similar_problem
from mass.prompts import solve_document, synth_document
from mass.tokenizer import build_tokenizer
from mass.training import step_seed


@dataclass
class ModelShape:
    hidden_size: int = setting(256, "model width")
    layers: int = setting(4, "decoder layers")
    heads: int = setting(4, "attention heads")
    intermediate_size: int = setting(688, "MLP width")
    max_position: int = setting(1024, "longest sequence the model supports")


@dataclass
class PretrainConfig:
    out: str = setting("runs/pretrain", "output directory: a Hugging Face checkpoint plus log and curve")
    seed: int = setting(0, "seed for the corpus stream, the tokenizer sample and the weights")
    steps: int = setting(1200, "optimizer steps")
    batch_size: int = setting(32, "sequences per step")
    seq_len: int = setting(256, "tokens per sequence (documents are packed)")
    lr: float = setting(2e-3, "peak learning rate (AdamW, linear warm-up, cosine decay to 10%)")
    warmup: int = setting(100, "warm-up steps")
    weight_decay: float = setting(0.1, "AdamW weight decay")
    grad_clip: float = setting(1.0, "gradient norm clip")
    synth_fraction: float = setting(0.3, "share of synthesis documents (the rest are solving documents)")
    weak_subject: str = setting("Intermediate Algebra", "subject given less weight in the corpus mixture ('' for none)")
    weak_subject_weight: float = setting(0.35, "mixture weight of the weak subject (the others have 1.0)")
    tail_solve_weight: float = setting(0.02, "weight of the tail named operations in solving documents "
                                       "(1.0 in synthesis documents): the generation-solving gap")
    vocab_size: int = setting(512, "BPE vocabulary size")
    tokenizer_docs: int = setting(20000, "corpus documents the tokenizer is learnt from")
    model: ModelShape = nested(ModelShape, "model shape (a small Llama)")
    log_every: int = setting(10, "steps between log lines")
    save_every: int = setting(200, "steps between resumable checkpoints")
    threads: int = setting(0, "CPU threads for torch (0: torch's default)")

    def __post_init__(self) -> None:
        if self.weak_subject and self.weak_subject not in SUBJECTS:
            raise MassError(f"weak_subject must be one of {', '.join(SUBJECTS)} or ''; got '{self.weak_subject}'")
        if not 0 <= self.synth_fraction <= 1:
            raise MassError("synth_fraction must be between 0 and 1")
        if self.steps < 1 or self.batch_size < 1 or self.seq_len < 16:
            raise MassError("steps and batch_size must be >= 1, seq_len >= 16")


def subject_weights(cfg: PretrainConfig) -> dict[str, float]:
    return {s: (cfg.weak_subject_weight if s == cfg.weak_subject else 1.0) for s in SUBJECTS}


def corpus_documents(seed: int, n: int, cfg: PretrainConfig) -> list[tuple[str, str]]:
    """`n` (prompt, completion) documents of the pretraining mixture, from a seeded stream.

    A synthesis document shows T and a worked problem of T's template at T's level or easier; a
    solving document shows a problem and its corpus solution (the result alone for named operations). Tail
    named operations are drawn `tail_solve_weight` times as often for solving as for synthesis.
    """
    rng = random.Random(seed)
    weights = subject_weights(cfg)
    docs = []
    while len(docs) < n:
        if rng.random() < cfg.synth_fraction:
            p = sample_fresh_problem(rng, weights, f"pretrain/{seed}/{len(docs)}")
            other = similar_problem(rng, p)
            if other is not None:
                docs.append(synth_document(p.problem, other.problem, other.solution))
        else:
            p = sample_fresh_problem(rng, weights, f"pretrain/{seed}/{len(docs)}", tail_weight=cfg.tail_solve_weight)
            docs.append(solve_document(p.problem, corpus_solution(p)))
    return docs


def encode_documents(tok: PreTrainedTokenizerBase, docs: list[tuple[str, str]]) -> list[list[int]]:
    """BOS + prompt + completion + EOS, prompt and completion tokenized apart as at inference."""
    prompts = tok([d[0] for d in docs])["input_ids"]
    completions = tok([d[1] for d in docs], add_special_tokens=False)["input_ids"]
    return [p + c + [tok.eos_token_id] for p, c in zip(prompts, completions)]


def step_batch(tok: PreTrainedTokenizerBase, cfg: PretrainConfig, step: int) -> torch.Tensor:
    """The packed (B, T+1) token batch of one step, a pure function of (seed, step)."""
    need = cfg.batch_size * (cfg.seq_len + 1)
    seed = step_seed(cfg.seed, step)
    stream: list[int] = []
    chunk = max(8, need // 100)
    for i in itertools.count():
        stream += [t for ids in encode_documents(tok, corpus_documents(seed * 1000 + i, chunk, cfg)) for t in ids]
        if len(stream) >= need:
            break
    return torch.tensor(stream[:need]).view(cfg.batch_size, cfg.seq_len + 1)


def build_model(cfg: PretrainConfig, tok: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    m = cfg.model
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=m.hidden_size, intermediate_size=m.intermediate_size,
        num_hidden_layers=m.layers, num_attention_heads=m.heads, num_key_value_heads=m.heads,
        max_position_embeddings=m.max_position, tie_word_embeddings=True, rope_theta=10000.0,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(cfg.seed)
    return LlamaForCausalLM(config)


def lr_at(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def run(cfg: PretrainConfig, resume: bool = False) -> Path:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "train_state.pt"
    log_path = out / "pretrain_log.jsonl"

    if resume and state_path.is_file():
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(out)
        state = load_train_state(state_path)
        model = LlamaForCausalLM.from_pretrained(out, dtype=torch.float32)
        start = state["step"]
        print(f"resuming from step {start} in {out}")
    else:
        if resume:
            print(f"no training state in {out}; starting from scratch")
        texts = [a + b for a, b in corpus_documents(cfg.seed + 424242, cfg.tokenizer_docs, cfg)]
        tok = build_tokenizer(texts, cfg.vocab_size)
        model = build_model(cfg, tok)
        state, start = None, 0
        log_path.unlink(missing_ok=True)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    if state is not None:
        opt.load_state_dict(state["optimizer"])
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters, vocab {len(tok)}; {cfg.steps} steps of "
          f"{cfg.batch_size}x{cfg.seq_len} tokens")

    t0 = time.time()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="pretrain", dynamic_ncols=True)
    for step in bar:
        batch = step_batch(tok, cfg, step)  # (B, T+1)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        logits = model(input_ids=batch[:, :-1]).logits  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            row = {"step": step, "loss": round(loss.item(), 4), "lr": lr_at(step, cfg),
                   "grad_norm": round(grad_norm.item(), 3), "elapsed_s": round(time.time() - t0, 1)}
            with log_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            bar.set_postfix(loss=f"{row['loss']:.3f}")
        if (step + 1) % cfg.save_every == 0 or step == cfg.steps - 1:
            save_checkpoint(model, tok, cfg, out, step + 1, opt)
    plot_curve(log_path, out / "training_curve.png")
    print(f"saved checkpoint to {out}")
    return out


def save_checkpoint(model: LlamaForCausalLM, tok: PreTrainedTokenizerBase, cfg: PretrainConfig, out: Path,
                    step: int, opt: torch.optim.Optimizer) -> None:
    """A loadable HF checkpoint plus the optimizer state that `--resume` needs."""
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    (out / "pretrain_config.json").write_text(json.dumps(config_to_dict(cfg), indent=2) + "\n")
    tmp = out / "train_state.pt.tmp"
    torch.save({"step": step, "optimizer": opt.state_dict()}, tmp)
    tmp.replace(out / "train_state.pt")


def plot_curve(log_path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (token CE)")
    ax.set_yscale("log")
    ax.set_title("Embedded MiniMath model: pretraining")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
