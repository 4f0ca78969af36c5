"""One call per dynamic program, whatever the backend: a lookup, tensors in, tensors out.

All functions take gathered emissions ``em (N, T, S+1)`` float64 (column 0 = blank) and
int64 lengths on the same device; gradients are w.r.t. ``em`` and already multiplied by
the per-sequence upstream gradient ``gscale (N,)``. The interface the backends implement:
:class:`latalign.align.backends.Backend`.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .backends import AlgebraState, CTCState, get
from .objective import Objective


def algebra_forward(
    em: torch.Tensor,
    in_len: torch.Tensor,
    tg_len: torch.Tensor,
    objective: Objective,
    backend: str,
    keep: bool,
    paths: bool = False,
) -> AlgebraState:
    """Losses of ``objective`` (``keep``: for a backward pass; ``paths``: for best paths)."""
    state = get(backend).algebra_forward(em, in_len, tg_len, objective, keep=keep, paths=paths)
    return replace(state, backend=backend)


def algebra_backward(state: AlgebraState, *em_lengths_gscale: torch.Tensor) -> torch.Tensor:
    """``Backend.algebra_backward(state, em, in_len, tg_len, gscale)`` of ``state``'s backend."""
    return get(state.backend).algebra_backward(state, *em_lengths_gscale)


def best_paths(
    state: AlgebraState, in_len: torch.Tensor, tg_len: torch.Tensor
) -> list[list[int] | None]:
    """Move codes of each best path from (0, 0) to (n, m); ``None`` where there is no path.
    ``state`` from ``algebra_forward(..., paths=True)`` of a max objective."""
    return get(state.backend).best_paths(state, in_len, tg_len)


def ctc_targets(targets: torch.Tensor) -> torch.Tensor:
    """The targets as every backend's CTC takes them: at least one column (a batch whose
    targets are all empty, ``S = 0``, gets one padding column that no length reaches)."""
    if targets.shape[1] > 0:
        return targets
    return torch.zeros((targets.shape[0], 1), dtype=torch.int64, device=targets.device)


def ctc_forward(
    em: torch.Tensor,
    targets: torch.Tensor,
    in_len: torch.Tensor,
    tg_len: torch.Tensor,
    backend: str,
    keep: bool,
) -> CTCState:
    state = get(backend).ctc_forward(em, ctc_targets(targets), in_len, tg_len, keep=keep)
    return replace(state, backend=backend)


def ctc_backward(
    state: CTCState, em: torch.Tensor, targets: torch.Tensor, *lengths_gscale: torch.Tensor
) -> torch.Tensor:
    """``Backend.ctc_backward(state, em, targets, in_len, tg_len, gscale)`` of ``state``'s
    backend, the targets padded as for :func:`ctc_forward`."""
    return get(state.backend).ctc_backward(state, em, ctc_targets(targets), *lengths_gscale)
