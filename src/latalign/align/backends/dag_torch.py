"""The DAG latent alignment (DA-Transformer) in vectorized PyTorch: any device, no per-cell Python.

Layout as :mod:`.dag_numba` (``et (N, S, L)``, ``trans (N, L, L)``, ``alpha (N, S, L)``).
One step per target position ``i``, vectorized over the batch and the vertices: the
log-space matrix product ``alpha[:, i] = logsumexp_u(alpha[:, i-1, u] + trans[:, u, :]) +
et[:, i]`` (exact: a max-shifted ``exp``/``matmul``/``log`` would underflow where the best
predecessor of a vertex is far below the step's best vertex). The backward pass is
hand-written (the mirror recursion ``beta``, then posteriors), so autograd keeps nothing:
the dynamic program holds ``alpha`` and ``beta`` (O(N·L·S)) and one bounded ``(N, ·, L)``
temporary per step, never a per-step ``L × L`` tensor for the whole recursion.

Entries outside a sequence's graph (vertices ``≥ L_b``, edges ``u ≥ v``, steps ``≥ n``) are
replaced by the constant ``-inf`` before the recursion: padding never enters.
"""

from __future__ import annotations

import torch
from torch import Tensor

NEG_INF = float("-inf")

#: elements of one ``(N, rows, L)`` temporary (the recursion runs over row chunks)
CHUNK_ELEMENTS = 1 << 22


def _rows_per_chunk(nb: int, lmax: int) -> int:
    # rows (or columns) of an (N, L, L) array per chunk
    return max(1, CHUNK_ELEMENTS // max(1, nb * lmax))


def masked_inputs(
    et: torch.Tensor, trans: torch.Tensor, vert_len: torch.Tensor, tg_len: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``et`` and ``trans`` with every entry the loss does not read set to ``-inf``."""
    nb, smax, lmax = et.shape
    dev = et.device
    vert = torch.arange(lmax, device=dev).view(1, lmax) < vert_len.view(nb, 1)  # (N, L)
    step = torch.arange(smax, device=dev).view(1, smax) < tg_len.view(nb, 1)  # (N, S)
    upper = torch.ones(lmax, lmax, dtype=torch.bool, device=dev).triu(1)  # u < v
    edge = upper.unsqueeze(0) & vert.unsqueeze(2) & vert.unsqueeze(1)
    et_m = torch.where(step.unsqueeze(2) & vert.unsqueeze(1), et, NEG_INF)
    return et_m, torch.where(edge, trans, NEG_INF)


def logz_of(alpha: torch.Tensor, vert_len: torch.Tensor, tg_len: torch.Tensor) -> torch.Tensor:
    """``alpha[b, n_b - 1, L_b - 1]`` (the whole graph's log-sum or max), ``-inf`` where ``n = 0``."""
    nb = alpha.shape[0]
    if alpha.shape[1] == 0:
        return alpha.new_full((nb,), NEG_INF)
    rows = torch.arange(nb, device=alpha.device)
    last = alpha[rows, (tg_len - 1).clamp(min=0), vert_len - 1]
    return torch.where(tg_len > 0, last, NEG_INF)


def forward(
    et: Tensor, trans: Tensor, vert_len: Tensor, tg_len: Tensor, use_max: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(logZ or max (N,), alpha (N, S, L), bp (N, S, L) int32 or None)``; ``-inf`` = no path.

    ``bp[b, i, v]``: the best predecessor of ``v`` at step ``i`` (smallest ``u`` of a tie),
    meaningful where ``alpha[b, i, v] > -inf``.
    """
    nb, smax, lmax = et.shape
    et_m, tr_m = masked_inputs(et, trans, vert_len, tg_len)
    alpha = torch.full((nb, smax, lmax), NEG_INF, dtype=et.dtype, device=et.device)
    bp = torch.zeros((nb, smax, lmax), dtype=torch.int32, device=et.device) if use_max else None
    if smax:
        alpha[:, 0, 0] = et_m[:, 0, 0]
    cols = _rows_per_chunk(nb, lmax)
    for i in range(1, smax):
        prev = alpha[:, i - 1].unsqueeze(2)  # (N, L, 1)
        for v0 in range(0, lmax, cols):
            v1 = min(lmax, v0 + cols)
            x = prev + tr_m[:, :, v0:v1]  # (N, L, cols): prefix at u, then the edge u -> v
            if use_max:
                best, arg = x.max(dim=1)  # the first maximum: the smallest u keeps a tie
                bp[:, i, v0:v1] = arg.to(torch.int32)
            else:
                best = torch.logsumexp(x, dim=1)
            alpha[:, i, v0:v1] = best + et_m[:, i, v0:v1]
            del x
    return logz_of(alpha, vert_len, tg_len), alpha, bp


def backward(
    et: Tensor, trans: Tensor, vert_len: Tensor, tg_len: Tensor,
    alpha: Tensor, logz: Tensor, gscale: Tensor,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Gradient of ``gscale · (−logZ)`` w.r.t. ``et (N, S, L)`` and ``trans (N, L, L)``.

    Zero for sequences with no path or ``gscale[b] == 0`` and outside each graph.
    """
    nb, smax, lmax = et.shape
    dev = et.device
    et_m, tr_m = masked_inputs(et, trans, vert_len, tg_len)
    g = torch.where(torch.isinf(logz), 0.0, gscale.to(et.dtype))  # (N,)
    z = torch.where(torch.isinf(logz), 0.0, logz).view(nb, 1, 1)
    beta = torch.full_like(alpha, NEG_INF)
    g_trans = torch.zeros_like(trans)
    end = torch.where(
        torch.arange(lmax, device=dev).view(1, lmax) == (vert_len - 1).view(nb, 1), 0.0, NEG_INF
    ).to(et.dtype)  # (N, L): beta at the last step
    rows = _rows_per_chunk(nb, lmax)
    for i in range(smax - 1, -1, -1):
        last = (tg_len - 1 == i).view(nb, 1)
        if i == smax - 1:
            beta[:, i] = torch.where(last, end, NEG_INF)
            continue
        h = (et_m[:, i + 1] + beta[:, i + 1]).unsqueeze(1)  # (N, 1, L)
        a = alpha[:, i]
        rec = torch.empty_like(a)
        for u0 in range(0, lmax, rows):
            u1 = min(lmax, u0 + rows)
            x = tr_m[:, u0:u1] + h  # (N, rows, L): edge u -> v, then the suffix from v
            rec[:, u0:u1] = torch.logsumexp(x, dim=2)
            # edge posteriors exp(alpha_i(u) + x - logZ); -inf (unreached) gives exactly 0
            g_trans[:, u0:u1] += (a[:, u0:u1].unsqueeze(2) + x - z).exp_()
            del x
        beta[:, i] = torch.where(last, end, rec)
    g_et = (alpha + beta - z).exp_()
    scale = -g.view(nb, 1, 1)
    return g_et.mul_(scale), g_trans.mul_(scale)


def backtrack(bp: torch.Tensor, score: torch.Tensor, vert_len: torch.Tensor, tg_len: torch.Tensor):
    """Best paths from back-pointers ``bp (N, S, L)``: ``vertices (N, S)`` int64 on ``bp``'s
    device, ``vertices[b, i] = a_{i+1}``, ``-1`` beyond ``n`` and where ``score[b] = -inf``.
    Any backend's ``bp`` (int32, the smallest ``u`` of a tie); no host synchronisation."""
    nb, smax, _ = bp.shape
    dev = bp.device
    feasible = (score > NEG_INF).view(nb)
    verts = torch.full((nb, smax), -1, dtype=torch.int64, device=dev)
    cur = (vert_len - 1).to(torch.int64)  # the vertex at step i, walking back from n - 1
    rows = torch.arange(nb, device=dev)
    for i in range(smax - 1, -1, -1):
        on = feasible & (i <= tg_len - 1)
        verts[:, i] = torch.where(on, cur, -1)
        if i > 0:
            prev = bp[rows, i, cur.clamp(min=0)].to(torch.int64)
            cur = torch.where(on, prev, cur)
    return verts
