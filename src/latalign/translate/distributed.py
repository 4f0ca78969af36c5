"""Process-group setup for data-parallel training under ``torchrun`` (NCCL on CUDA, gloo on the
CPU), the device of this process, and the few collectives the training loop needs.

Gradients are synchronised by :class:`torch.nn.parallel.DistributedDataParallel`
(:func:`wrap_ddp`), which averages them over ranks during the backward pass (bucketed, overlapped
with it). The loop keeps fairseq's normalisation — gradient = d(sum over ranks of the summed
loss) / (target tokens of the update over all ranks) — by scaling each rank's loss by
``world_size / total_tokens`` before ``backward`` (:func:`loss_scale`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch.nn.parallel import DistributedDataParallel

from latalign.translate.device import resolve_device


@dataclass
class DistInfo:
    """Process-group facts: ``rank``/``world_size`` (1 when not distributed), ``device``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Read ``torchrun``'s ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; init the process group
    (NCCL on CUDA, gloo on the CPU) when ``WORLD_SIZE > 1``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank=local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    return DistInfo(rank, world_size, local_rank, dev)


def all_reduce_sum(values: list[float], dist: DistInfo) -> list[float]:
    """Element-wise sum of ``values`` over ranks (float64, on the process's device)."""
    if not dist.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=dist.device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def any_rank(flag: bool, dist: DistInfo) -> bool:
    """True on every rank when ``flag`` is True on at least one."""
    if not dist.distributed:
        return flag
    return all_reduce_sum([1.0 if flag else 0.0], dist)[0] > 0


def barrier(dist: DistInfo) -> None:
    if dist.distributed:
        torch.distributed.barrier()


def wrap_ddp(model: torch.nn.Module, dist: DistInfo) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` when distributed (rank 0's parameters are broadcast
    to every rank on construction), else ``model`` itself.

    Buffers are not re-broadcast at every forward (``broadcast_buffers=False``: the model's
    buffers are constants), so a forward pass is not a collective and ranks may run different
    numbers of no-grad passes (validation, a regime's first pass).
    """
    if not dist.distributed:
        return model
    device_ids = [dist.device.index] if dist.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)


def loss_scale(local_tokens: float, dist: DistInfo) -> tuple[float, float]:
    """``(scale, total_tokens)``: multiply the rank's summed loss by ``scale`` before backward
    so that DDP's average over ranks gives d(sum of losses)/d params / total_tokens.

    ``total_tokens`` = target tokens of the update over all ranks (at least 1)."""
    total = max(all_reduce_sum([float(local_tokens)], dist)[0], 1.0)
    return dist.world_size / total, total


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a ``DistributedDataParallel`` wrapper (or ``model`` itself)."""
    return getattr(model, "module", model)
