"""One call per dynamic program, whatever the backend: tensors in, tensors out.

All functions take gathered emissions ``em (N, T, S+1)`` float64 (column 0 = blank) and
int64 lengths on the same device; gradients are w.r.t. ``em`` and already multiplied by
the per-sequence upstream gradient ``gscale (N,)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .backends import numba_cpu, torch_vec
from .objective import Objective


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


@dataclass
class AlgebraState:
    """What the forward pass keeps for the backward pass and for best paths."""

    backend: str
    objective: Objective
    loss: torch.Tensor  # (N,) float64, -logZ or -max; +inf where no path
    alpha: torch.Tensor | None  # (N, S+1, T+1) float64 (sum)
    codes: torch.Tensor | None  # (N, S+1, T+1) int8 move codes (max)
    scores: torch_vec.AlgebraScores | None  # torch backend only


def algebra_forward(
    em: torch.Tensor,
    in_len: torch.Tensor,
    tg_len: torch.Tensor,
    objective: Objective,
    backend: str,
    keep: bool,
) -> AlgebraState:
    use_max = objective.aggregate == "max"
    nb, tmax, s1 = em.shape
    if backend == "numba":
        rows = 2 if use_max else s1  # max needs back-pointers only: keep two rows of alpha
        alpha = np.empty((nb, rows, tmax + 1), dtype=np.float64)
        bp = np.zeros((nb, s1, tmax + 1) if use_max else (1, 1, 1), dtype=np.int8)
        out = np.empty(nb, dtype=np.float64)
        numba_cpu.algebra_forward(
            _np(em.transpose(1, 2)),
            _np(in_len),
            _np(tg_len),
            np.asarray(objective.weights, dtype=np.float64),
            np.asarray(objective.flags, dtype=np.bool_),
            objective.causal,
            use_max,
            alpha,
            bp,
            out,
        )
        loss = -torch.from_numpy(out)
        return AlgebraState(
            backend,
            objective,
            loss,
            torch.from_numpy(alpha) if keep and not use_max else None,
            torch.from_numpy(bp) if use_max else None,
            None,
        )
    scores = torch_vec.AlgebraScores(
        em, in_len, tg_len, objective.weights, objective.flags, objective.causal, use_max
    )
    alpha, codes = torch_vec.algebra_forward(scores, use_max)
    loss = -alpha[torch.arange(nb, device=em.device), tg_len, in_len]
    return AlgebraState(
        backend, objective, loss, alpha if keep else None, codes, scores if keep else None
    )


def algebra_backward(
    state: AlgebraState,
    em: torch.Tensor,
    in_len: torch.Tensor,
    tg_len: torch.Tensor,
    gscale: torch.Tensor,
) -> torch.Tensor:
    obj = state.objective
    nb, tmax, s1 = em.shape
    if state.backend == "numba":
        grad = np.zeros((nb, s1, tmax), dtype=np.float64)  # transposed, as the kernels see em
        w = np.asarray(obj.weights, dtype=np.float64)
        g = _np(gscale.to(torch.float64))
        if obj.aggregate == "max":
            numba_cpu.algebra_backward_max(_np(in_len), _np(tg_len), w, _np(state.codes), g, grad)
        else:
            alpha = _np(state.alpha)
            numba_cpu.algebra_backward_sum(
                _np(em.transpose(1, 2)),
                _np(in_len),
                _np(tg_len),
                w,
                np.asarray(obj.flags, dtype=np.bool_),
                obj.causal,
                alpha,
                np.empty_like(alpha),
                g,
                grad,
            )
        return torch.from_numpy(grad).transpose(1, 2)
    if obj.aggregate == "max":
        grad = torch_vec.algebra_backward_max(state.codes, in_len, tg_len, obj.weights, tmax)
    else:
        grad, _ = torch_vec.algebra_backward_sum(
            state.scores, state.alpha, in_len, tg_len, obj.weights
        )
    return grad * gscale.to(grad.dtype).view(nb, 1, 1)


def best_paths(
    state: AlgebraState, in_len: torch.Tensor, tg_len: torch.Tensor
) -> list[list[int] | None]:
    """Move codes of each best path from (0, 0) to (n, m); ``None`` where there is no path."""
    codes = state.codes
    nb, s1, t1 = codes.shape
    if state.backend == "numba":
        paths = np.zeros((nb, max(s1 + t1 - 2, 1)), dtype=np.int8)
        plen = np.zeros(nb, dtype=np.int64)
        numba_cpu.algebra_backtrack(_np(in_len), _np(tg_len), _np(codes), paths, plen)
        return [None if plen[b] < 0 else paths[b, : plen[b]].tolist() for b in range(nb)]
    steps, _, _, length = torch_vec.backtrack(codes, in_len, tg_len)
    steps, length = steps.cpu(), length.cpu()
    out: list[list[int] | None] = []
    for b in range(nb):
        k = int(length[b])
        out.append(None if k < 0 else steps[b, :k].flip(0).tolist())
    return out


@dataclass
class CTCState:
    backend: str
    loss: torch.Tensor  # (N,) float64
    alpha: torch.Tensor | None


def ctc_forward(
    em: torch.Tensor,
    targets: torch.Tensor,
    in_len: torch.Tensor,
    tg_len: torch.Tensor,
    backend: str,
    keep: bool,
) -> CTCState:
    nb, tmax, s1 = em.shape
    if backend == "numba":
        alpha = np.empty((nb, tmax, 2 * (s1 - 1) + 1), dtype=np.float64)
        out = np.empty(nb, dtype=np.float64)
        tg = targets if targets.shape[1] > 0 else torch.zeros((nb, 1), dtype=torch.int64)
        numba_cpu.ctc_forward(_np(em), _np(tg), _np(in_len), _np(tg_len), alpha, out)
        return CTCState(backend, -torch.from_numpy(out), torch.from_numpy(alpha) if keep else None)
    tg = (
        targets
        if targets.shape[1] > 0
        else torch.zeros((nb, 1), dtype=torch.int64, device=em.device)
    )
    alpha, logz = torch_vec.ctc_forward(em, tg, in_len, tg_len)
    return CTCState(backend, -logz, alpha if keep else None)


def ctc_backward(
    state: CTCState,
    em: torch.Tensor,
    targets: torch.Tensor,
    in_len: torch.Tensor,
    tg_len: torch.Tensor,
    gscale: torch.Tensor,
) -> torch.Tensor:
    nb, tmax, s1 = em.shape
    tg = (
        targets
        if targets.shape[1] > 0
        else torch.zeros((nb, 1), dtype=torch.int64, device=em.device)
    )
    if state.backend == "numba":
        grad = np.zeros((nb, tmax, s1), dtype=np.float64)
        numba_cpu.ctc_backward(
            _np(em),
            _np(tg),
            _np(in_len),
            _np(tg_len),
            _np(state.alpha),
            _np(-state.loss),
            _np(gscale.to(torch.float64)),
            grad,
        )
        return torch.from_numpy(grad)
    grad = torch_vec.ctc_backward(em, tg, in_len, tg_len, state.alpha, -state.loss)
    return grad * gscale.to(grad.dtype).view(nb, 1, 1)
