"""Backends of the dynamic programs, chosen from the tensors' device (overridable).

==========  ===============================================  ==================================
name        runs on                                          what it is
==========  ===============================================  ==================================
``numba``   CPU                                              compiled kernels, parallel over batch
``torch``   any device (CPU, CUDA, …)                        vectorized PyTorch, anti-diagonals
``triton``  CUDA; CPU tensors under ``TRITON_INTERPRET=1``   Triton kernels (:mod:`.triton_kernels`)
==========  ===============================================  ==================================

Every backend implements one interface, :class:`~.base.Backend` (a ``typing.Protocol``):
the emissions and their gradient, the algebra's forward, backward and best paths, and the
real-CTC pair, over gathered emissions ``em (N, T, S+1)`` (column 0 = blank). :func:`get`
returns the backend of a name (each built once); :mod:`latalign.align.dispatch` is a lookup.

``backend=None`` (or ``"auto"``) picks ``numba`` on CPU, ``triton`` on CUDA when triton
imports (``pip install "latalign[gpu]"``), ``torch`` otherwise.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

import torch

from .base import AlgebraState, Backend, CTCState

BACKENDS: tuple[str, ...] = ("numba", "torch", "triton")

# name -> (module, class): imported on first use (numba compiles, triton may be missing)
_IMPLEMENTATIONS = {
    "numba": (".numba_cpu", "NumbaBackend"),
    "torch": (".torch_vec", "TorchBackend"),
    "triton": (".triton_kernels", "TritonBackend"),
}
_BUILT: dict[str, Backend] = {}

__all__ = [
    "BACKENDS",
    "AlgebraState",
    "Backend",
    "CTCState",
    "get",
    "resolve",
    "set_numba_threads",
    "triton_available",
    "triton_module",
]


def get(name: str) -> Backend:
    """The backend called ``name`` (one of :data:`BACKENDS`; see :func:`resolve`)."""
    backend = _BUILT.get(name)
    if backend is None:
        if name not in _IMPLEMENTATIONS:
            raise ValueError(f"expected backend in {BACKENDS}, found {name!r}")
        module, cls = _IMPLEMENTATIONS[name]
        backend = _BUILT[name] = getattr(importlib.import_module(module, __name__), cls)()
    return backend


def triton_module() -> ModuleType:
    """The Triton kernels module (imports triton; raises ``ImportError`` without it)."""
    return importlib.import_module(".triton_kernels", __name__)


def triton_available(device: torch.device) -> bool:
    """Whether ``backend="triton"`` can run on tensors of ``device``."""
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        kernels = triton_module()
    except ImportError:
        return False
    if device.type == "cuda":
        return not kernels.interpreted()
    return device.type == "cpu" and kernels.interpreted()


def resolve(backend: str | None, device: torch.device) -> str:
    """The backend to run on tensors of ``device``; ``None``/``"auto"`` picks one (see above)."""
    if backend is None or backend == "auto":
        if device.type == "cpu":
            return "numba"
        return "triton" if device.type == "cuda" and triton_available(device) else "torch"
    if backend not in BACKENDS:
        raise ValueError(f"expected backend in {('auto', *BACKENDS)}, found {backend!r}")
    if backend == "numba" and device.type != "cpu":
        raise ValueError(f"expected CPU tensors for backend 'numba', found device {device}")
    if backend == "triton" and not triton_available(device):
        if importlib.util.find_spec("triton") is None:
            raise ValueError(
                "expected the triton package for backend 'triton' (pip install "
                '"latalign[gpu]"), found it not installed'
            )
        if device.type == "cuda":
            raise ValueError(
                "expected TRITON_INTERPRET unset for backend 'triton' on CUDA tensors (the "
                "kernels were imported under Triton's interpreter), found it set"
            )
        raise ValueError(
            "expected CUDA tensors for backend 'triton' (or CPU tensors with TRITON_INTERPRET=1 "
            f"set before latalign's Triton kernels are first imported), found device {device}"
        )
    return backend


def set_numba_threads(n: int | None) -> int | None:
    """Set numba's thread count (the CPU kernels run in parallel over the batch) to ``n``
    when given (clipped to ``1..NUMBA_NUM_THREADS``); returns the previous count, or None
    when numba is unavailable. Match it to torch's threads: idle numba workers spinning
    beside a one-thread torch made training several times slower on 2 cores."""
    try:
        import numba
    except ImportError:
        return None
    old = numba.get_num_threads()
    if n:
        numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    return old
