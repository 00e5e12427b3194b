"""A thin, explicit distributed layer: the same entry points run alone or under `torchrun`.

Rank and world size come from the environment `torchrun` sets; work is sharded with
`range(rank, N, world)` and results are gathered back in the caller. Without `torchrun`
everything here is a no-op, so nothing in the project needs a process group to run.

    torchrun --nproc_per_node 8 -m mass eval --method base --data math500
"""

from __future__ import annotations

import os
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


def init() -> torch.device:
    """Join the process group when launched by torchrun; return this rank's device."""
    if world_size() > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
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
