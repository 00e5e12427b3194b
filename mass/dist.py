"""A thin, explicit distributed layer: the same entry points run alone or under `torchrun`.

Rank and world size come from the environment `torchrun` sets; work is sharded with
`range(rank, N, world)` and results are gathered back in the caller; training sums its
gradients over ranks (`all_reduce_grads`). Without `torchrun` everything here is a no-op, so
nothing in the project needs a process group to run.

    torchrun --nproc_per_node 8 -m mass eval --method base --data math500
    torchrun --nproc_per_node 8 -m mass meta-train out=runs/mass
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def print0(*args: Any, **kwargs: Any) -> None:
    """print on rank 0 only."""
    if is_main():
        print(*args, **kwargs, flush=True)


# how long a rank waits at a collective: in training, rank 0 evaluates and saves alone while the
# others wait at the next one, and a held-out evaluation of a large model can take longer than
# the default (10 minutes under NCCL)
TIMEOUT = timedelta(hours=2)


def init(backend: str | None = None) -> torch.device:
    """Join the process group when launched by torchrun; return this rank's device. `backend`:
    nccl with GPUs, gloo without (or for a run kept on the CPU of a GPU machine)."""
    if world_size() > 1 and not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"), timeout=TIMEOUT)
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def shard(items: list[Any]) -> list[Any]:
    """This rank's share of `items`: every world_size-th item starting at rank."""
    return items[rank()::world_size()]


def gather_lists(local: list[Any]) -> list[Any]:
    """Concatenate each rank's list (rank order) on every rank; identity without torchrun."""
    if world_size() == 1:
        return list(local)
    if not dist.is_initialized():
        raise RuntimeError("gather_lists under torchrun needs dist.init() first")
    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, local)
    return [x for part in parts for x in part]


def barrier() -> None:
    if world_size() > 1 and dist.is_initialized():
        dist.barrier()


def close() -> None:
    """Leave the process group, if this process joined one: a gloo group still open when the
    interpreter exits can abort the process in its teardown ("terminate called without an active
    exception"), failing a run that had finished."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_grads(params: Iterable[torch.Tensor]) -> None:
    """Sum the parameters' gradients over ranks, in place; identity without torchrun.

    A rank with no gradient for a parameter (all its problems skipped) joins with zeros, so every
    rank runs the same collectives; a parameter no rank has a gradient for keeps grad None, as it
    would in one process (Adam leaves such a parameter alone, but would move it on a zero one)."""
    params = list(params)
    if world_size() == 1 or not params:
        return
    if not dist.is_initialized():
        raise RuntimeError("all_reduce_grads under torchrun needs dist.init() first")
    device = params[0].device
    present = torch.tensor([float(p.grad is not None) for p in params], device=device)
    dist.all_reduce(present)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    for dtype in sorted({g.dtype for g in grads}, key=str):  # the same order on every rank
        group = [g for g in grads if g.dtype == dtype]
        flat = torch.cat([g.reshape(-1) for g in group])  # one collective per dtype, not per tensor
        dist.all_reduce(flat)
        for g, part in zip(group, flat.split([g.numel() for g in group])):
            g.copy_(part.view_as(g))
    for p, g, n in zip(params, grads, present.tolist()):
        p.grad = g if n > 0 else None
