"""Process-group setup for data-parallel training under ``torchrun`` (NCCL on CUDA, gloo on the
CPU), the device of this process, and the few collectives the training loop needs.

Gradients are synchronised by :class:`torch.nn.parallel.DistributedDataParallel`
(:func:`wrap_ddp`), which averages them over ranks during the backward pass (bucketed, overlapped
with it). The loop keeps fairseq's normalisation — gradient = d(sum over ranks of the summed
loss) / (target tokens of the update over all ranks) — by scaling each rank's loss by
``world_size / total_tokens`` before ``backward`` (:func:`loss_scale`); the token count stays a
device tensor (the all-reduce is queued, never read back), so an update makes no host
synchronisation.

``LATALIGN_FORCE_DDP=1`` (or ``init_distributed(force=True)``) makes a real process group and
the DDP wrapper even with one rank: under ``torchrun --nproc_per_node=1`` from torchrun's
rendezvous, in a plain single process from an in-process store (rank 0 of 1). The GPU check
uses it to run NCCL, DDP's hooks and the all-reduces on one GPU.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from latalign.translate.device import resolve_device

#: environment variable that forces a process group and DDP with one rank (``1``)
FORCE_DDP_ENV = "LATALIGN_FORCE_DDP"


@dataclass
class DistInfo:
    """Process-group facts: ``rank``/``world_size`` (1 when not distributed), ``device``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    forced: bool = False  # a process group (and DDP) although world_size is 1
    owns_group: bool = False  # the group was made in-process (shutdown_distributed ends it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether a process group runs (DDP wrapper, collectives)."""
        return self.world_size > 1 or self.forced


def force_ddp_requested() -> bool:
    """Whether :data:`FORCE_DDP_ENV` asks for a process group with one rank."""
    value = os.environ.get(FORCE_DDP_ENV, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ValueError(f"expected {FORCE_DDP_ENV} 0 or 1, found {value!r}")


def init_distributed(device: str = "auto", *, force: bool | None = None) -> DistInfo:
    """Read ``torchrun``'s ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; init the process group
    (NCCL on CUDA, gloo on the CPU) when ``WORLD_SIZE > 1`` or ``force`` (None: the
    :data:`FORCE_DDP_ENV` variable). Forced without torchrun's rendezvous (no
    ``MASTER_ADDR``), the group of one rank is made from an in-process store. Prints
    ``distributed: backend=<name> world_size=<W>`` once (rank 0) when a group is made."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    forced = force_ddp_requested() if force is None else bool(force)
    forced = forced and world_size == 1
    dev = resolve_device(device, local_rank=local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    owns = False
    if (world_size > 1 or forced) and not torch.distributed.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if forced and "MASTER_ADDR" not in os.environ:
            store = torch.distributed.HashStore()
            torch.distributed.init_process_group(backend, store=store, rank=0, world_size=1)
            owns = True
        else:
            torch.distributed.init_process_group(backend=backend)
        if rank == 0:
            print(f"distributed: backend={backend} world_size={world_size}", file=sys.stderr)
    return DistInfo(rank, world_size, local_rank, dev, forced=forced, owns_group=owns)


def shutdown_distributed(dist: DistInfo) -> None:
    """End the process group :func:`init_distributed` made in-process (a forced group
    without torchrun); torchrun's groups live as long as their processes."""
    if dist.owns_group and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


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


def loss_scale(
    local_tokens: Tensor | float, dist: DistInfo
) -> tuple[Tensor | float, Tensor | float]:
    """``(scale, total_tokens)``: multiply the rank's summed loss by ``scale`` before backward
    so that DDP's average over ranks gives d(sum of losses)/d params / total_tokens.

    ``total_tokens`` = target tokens of the update over all ranks (at least 1). A tensor
    count gives 0-dim float64 tensors on its device (the all-reduce is queued, nothing is
    read back: no host synchronisation); a number gives numbers."""
    if not isinstance(local_tokens, Tensor):
        total = max(all_reduce_sum([float(local_tokens)], dist)[0], 1.0)
        return dist.world_size / total, total
    count = local_tokens.detach().to(torch.float64).reshape(1)
    if dist.distributed:
        count = count.clone()
        torch.distributed.all_reduce(count)
    total = count.clamp(min=1.0).reshape(())
    return dist.world_size / total, total


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a ``DistributedDataParallel`` wrapper (or ``model`` itself)."""
    return getattr(model, "module", model)
