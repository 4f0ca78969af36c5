"""Count what a GPU would wait for: host synchronisations, host→device copies, kernel launches.

    from latalign.align._counting import count_host_syncs

    with count_host_syncs() as counts:
        loss = la.axe_loss(logits, targets, m, n, from_logits=True)
        loss.backward()
    counts.syncs            # device→host synchronisations (.item(), int(), bool(), nonzero, …)
    counts.host_to_device   # host→device copies (torch.tensor(data, device=…), .to(device))
    counts.launches         # device kernels: torch ops that compute + Triton launches
    counts.triton_launches  # Triton launches alone (reported by the kernels' launcher)
    counts.sync_ops         # the op behind each sync, in order (for messages)

A :class:`~torch.utils._python_dispatch.TorchDispatchMode` sees every ATen op below autograd
(backward included; under ``torch.inference_mode`` a scalar read shows as ``item`` or
``is_nonzero`` instead of ``_local_scalar_dense``, and counts the same). An op
**synchronises** when it needs a device value on the host: ``aten._local_scalar_dense`` (what ``.item()``, ``int()``, ``bool()``, ``float()`` of a
tensor call), ops whose output size depends on values (``nonzero``, ``masked_select``,
``unique``, boolean-mask indexing, ``repeat_interleave`` without ``output_size``) and copies
from a device to the CPU. On a machine without CUDA, ``cpu_as_device=True`` (the default
there) counts CPU tensors as if they lived on a device: each op above counts, and so does
``torch.tensor(data)`` as a host→device copy. ``.tolist()`` and ``.numpy()`` of a CPU
tensor run no ATen op (on CUDA they show as a copy to the CPU): while a counter is open
with ``cpu_as_device``, those two methods are wrapped so that each call counts as a sync
(``sync_ops`` names them ``tolist``/``numpy``). Tensors that stay on the host on a GPU
machine too (an optimizer's step counters: ``torch.optim`` keeps them on the CPU) are
named with ``host=``; ops whose tensors are all host tensors are not counted.

A **launch** is any op that is not a view, an allocation without fill (``empty*``), a
scalar read or a metadata query; one ATen op may launch more than one kernel on a real
device, so the figure is a lower bound there. Ops that the Triton interpreter runs to move
a kernel's arguments (CPU only) are not counted: the launcher pauses counting around them.
Counters nest; each open one sees everything.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

aten = torch.ops.aten

_SYNC_PACKETS = (
    aten._local_scalar_dense,
    aten.item,  # under torch.inference_mode, .item()/int() dispatch as item, not the above
    aten.is_nonzero,  # and bool() as is_nonzero
    aten.nonzero,
    aten.nonzero_static,
    aten.masked_select,
    aten.unique_consecutive,
    aten.unique_dim,
    aten._unique,
    aten._unique2,
    aten.argwhere,
)
_BOOL_INDEX_PACKETS = (aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_)
_COPY_PACKETS = (aten._to_copy, aten.copy_, aten._copy_from)
_NO_LAUNCH_PACKETS = (
    aten.empty,
    aten.empty_strided,
    aten.empty_like,
    aten.new_empty,
    aten.new_empty_strided,
    aten.lift_fresh,
    aten.lift_fresh_copy,
    aten.set_,
    aten.resize_,
    aten.is_same_size,
    aten.sym_size,
    aten.sym_stride,
    aten.sym_numel,
    aten.sym_storage_offset,
    aten.is_coalesced,
    aten._has_compatible_shallow_copy_type,
)


@dataclass
class HostSyncCounts:
    """What one :func:`count_host_syncs` block saw (updated live while it is open)."""

    syncs: int = 0
    host_to_device: int = 0
    launches: int = 0
    triton_launches: int = 0
    sync_ops: list[str] = field(default_factory=list)
    ops: Counter = field(default_factory=Counter)  # launching op (or Triton kernel) -> calls


_OPEN: list[HostSyncCounts] = []
_PAUSED = [0]


def note_launch(name: str) -> None:
    """Record one Triton kernel launch in every open counter (called by the launcher)."""
    if _PAUSED[0]:
        return
    for counts in _OPEN:
        counts.launches += 1
        counts.triton_launches += 1
        counts.ops[name] += 1


@contextmanager
def paused() -> Iterator[None]:
    """Stop counting inside the block (the Triton interpreter's own argument copies)."""
    _PAUSED[0] += 1
    try:
        yield
    finally:
        _PAUSED[0] -= 1


def _packet(func) -> object:
    return getattr(func, "overloadpacket", func)


def _storage(t: torch.Tensor) -> int:
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # tensors without storage
        return -1


class _Counter(TorchDispatchMode):
    def __init__(self, counts: HostSyncCounts, cpu_as_device: bool, host: frozenset[int]) -> None:
        super().__init__()
        self.counts = counts
        self.cpu_as_device = cpu_as_device
        self.host = host

    def on_device(self, t: torch.Tensor) -> bool:
        if t.device.type in ("cpu", "meta"):
            return self.cpu_as_device and not (self.host and _storage(t) in self.host)
        return True

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not _PAUSED[0]:
            self._classify(func, args, kwargs, out)
        return out

    def _classify(self, func, args, kwargs, out) -> None:
        counts, on_device = self.counts, self.on_device
        packet = _packet(func)
        name = str(packet).removeprefix("aten.")
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        if packet in _SYNC_PACKETS:
            if any(on_device(t) for t in inputs):
                counts.syncs += 1
                counts.sync_ops.append(name)
            return
        if packet in _BOOL_INDEX_PACKETS:
            flat = tree_flatten(args[1] if len(args) > 1 else ())[0]
            if any(
                isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in flat
            ) and on_device(args[0]):
                counts.syncs += 1
                counts.sync_ops.append(f"{name} (boolean mask)")
        if packet is aten.repeat_interleave and kwargs.get("output_size") is None:
            if any(on_device(t) for t in inputs):
                counts.syncs += 1
                counts.sync_ops.append(name)
        if packet in (aten.lift_fresh, aten.lift_fresh_copy):
            if any(on_device(t) for t in outputs):
                counts.host_to_device += 1
            return
        if packet in _COPY_PACKETS:
            src = args[1] if packet is not aten._to_copy else args[0]
            dst = outputs[0] if outputs else None
            if isinstance(src, torch.Tensor) and dst is not None and src.device != dst.device:
                if src.device.type == "cpu":
                    counts.host_to_device += 1
                elif dst.device.type == "cpu":
                    counts.syncs += 1
                    counts.sync_ops.append(f"{name} to the CPU")
                return
        if getattr(func, "is_view", False) or packet in _NO_LAUNCH_PACKETS:
            return
        counts.launches += 1
        counts.ops[name] += 1


_HOST_READS: list[tuple[HostSyncCounts, _Counter]] = []  # counters that count .tolist()
_ORIGINAL_READS = {name: getattr(torch.Tensor, name) for name in ("tolist", "numpy")}


def _counted_read(name: str):
    original = _ORIGINAL_READS[name]

    def read(self: torch.Tensor, *args, **kwargs):
        if not _PAUSED[0] and self.device.type == "cpu":
            for counts, mode in _HOST_READS:
                if mode.on_device(self):
                    counts.syncs += 1
                    counts.sync_ops.append(name)
        return original(self, *args, **kwargs)

    read.__name__ = read.__qualname__ = name
    read.__doc__ = original.__doc__
    return read


@contextmanager
def _host_reads_counted(counts: HostSyncCounts, mode: _Counter) -> Iterator[None]:
    """``Tensor.tolist``/``Tensor.numpy`` of CPU tensors counted while the block runs."""
    if not _HOST_READS:
        for name in _ORIGINAL_READS:
            setattr(torch.Tensor, name, _counted_read(name))
    _HOST_READS.append((counts, mode))
    try:
        yield
    finally:
        _HOST_READS.remove((counts, mode))
        if not _HOST_READS:
            for name, original in _ORIGINAL_READS.items():
                setattr(torch.Tensor, name, original)


@contextmanager
def count_host_syncs(
    *, cpu_as_device: bool | None = None, host: Iterable[torch.Tensor] = ()
) -> Iterator[HostSyncCounts]:
    """Count syncs, host→device copies and launches of the code run inside the block.

    Args:
        cpu_as_device: count CPU tensors as device tensors (see the module docstring).
            Default: True when CUDA is not available, so that a CPU-only CI asserts the
            counts a GPU would see.
        host: CPU tensors that stay on the host on a GPU machine too (e.g. the ``step``
            counters in ``optimizer.state``): ops that touch only these are not counted.

    Yields:
        A :class:`HostSyncCounts`, filled while the block runs.
    """
    if cpu_as_device is None:
        cpu_as_device = not torch.cuda.is_available()
    counts = HostSyncCounts()
    mode = _Counter(counts, cpu_as_device, frozenset(_storage(t) for t in host))
    _OPEN.append(counts)
    try:
        with mode:
            if cpu_as_device:
                with _host_reads_counted(counts, mode):
                    yield counts
            else:
                yield counts
    finally:
        _OPEN.remove(counts)
