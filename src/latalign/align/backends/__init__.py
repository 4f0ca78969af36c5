"""Backends of the dynamic programs, chosen from the tensors' device (overridable).

=========  ============================================  =====================================
name       runs on                                       what it is
=========  ============================================  =====================================
``numba``  CPU                                           compiled kernels, parallel over batch
``torch``  any device (CPU, CUDA, …)                     vectorized PyTorch, anti-diagonals
``triton`` CUDA (seam)                                   not built yet: see :func:`resolve`
=========  ============================================  =====================================

Every backend implements the same four entry points over gathered emissions
``em (N, T, S+1)`` (column 0 = blank): ``algebra_forward``, ``algebra_backward``,
``best_paths`` and the real-CTC pair. :mod:`latalign.align.dispatch` holds the
adapters; a Triton backend plugs in there with the same signatures.
"""

from __future__ import annotations

import torch

BACKENDS: tuple[str, ...] = ("numba", "torch", "triton")


def resolve(backend: str | None, device: torch.device) -> str:
    """The backend to run: ``None``/``"auto"`` picks numba on CPU and torch elsewhere."""
    if backend is None or backend == "auto":
        return "numba" if device.type == "cpu" else "torch"
    if backend not in BACKENDS:
        raise ValueError(f"expected backend in {('auto', *BACKENDS)}, found {backend!r}")
    if backend == "numba" and device.type != "cpu":
        raise ValueError(f"expected CPU tensors for backend 'numba', found device {device}")
    if backend == "triton":
        raise NotImplementedError(
            "the 'triton' backend is a seam that no kernel fills yet (no GPU was available to "
            "build and test one); use backend='torch', which runs on CUDA tensors"
        )
    return backend
