"""Compiled CPU backend (numba), parallel over the batch.

Kernels work on *gathered emissions* in float64: ``em (N, T, S+1)`` for CTC and its
transpose ``et (N, S+1, T)`` for the operator algebra, with ``em[b, t, 0] = log p_{t+1}(ε)``
and ``em[b, t, i] = log p_{t+1}(y_i)``. Gradients come back in the layout they were given.

Grid arrays are ``(N, S+1, T+1)``: cell ``(i, j)`` = first ``i`` targets and first ``j``
predictions consumed (SPEC.md). Back-pointers hold the named move codes ``MOVE_*`` of
:mod:`latalign.align.objective` (``MOVE_NONE`` = start cell or unreachable); a lower code
wins an exact tie (the canonical order). Backtracking reads the moves' source cells and
emissions off the spec table (``MOVE_DI``, ``MOVE_DJ``, ``MOVE_EMITS_TARGET``, …).
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

from ..objective import (
    MOVE_ALIGN,
    MOVE_CLONE_PREDICTION,
    MOVE_CLONE_TARGET,
    MOVE_DELIMITER,
    MOVE_DI,
    MOVE_DJ,
    MOVE_EMITS_TARGET,
    MOVE_FRAME_AT_LEAST_1,
    MOVE_NONE,
    Objective,
)
from .base import (
    AlgebraState,
    CTCState,
    TorchEmissions,
    nan_where_infeasible,
)

NEG_INF = -np.inf


@numba.njit(inline="always", cache=True)
def _scaled(w: float, e: float) -> float:
    # w · log p with the convention 0 · (−inf) = 0 (p**0 == 1).
    if w == 0.0:
        return 0.0
    return w * e


@numba.njit(inline="always", cache=True)
def _logaddexp(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    if a > b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))


# --------------------------------------------------------------------------------------
# The operator algebra: forward (sum or max), backward for sum (posteriors), backward for
# max (the best path's move counts), and the best path itself.
#
# Algebra kernels take *transposed* emissions ``et (N, S+1, T)`` (``et[b, i, j-1]`` is
# ``log p_j(y_i)``, row 0 the blank) so that the inner loop over ``j`` reads memory in
# order. Disabled operators enter as an additive ``-inf`` mask rather than a branch: a
# branch per operator in the inner loop costs ~4x here (measured).
# --------------------------------------------------------------------------------------


@numba.njit(inline="always", cache=True)
def _mask(flag: bool) -> float:
    return 0.0 if flag else NEG_INF


@numba.njit(inline="always", cache=True)
def _move_terms(w, flags):
    # per move in canonical order: its weight, then 0 or -inf as the objective has it or not
    return (
        w[0],
        w[1],
        w[2],
        w[3],
        _mask(flags[0]),
        _mask(flags[1]),
        _mask(flags[2]),
        _mask(flags[3]),
    )


@numba.njit(inline="always", cache=True)
def _lse4(a: float, b: float, c: float, d: float) -> float:
    mx = max(max(a, b), max(c, d))
    if mx == NEG_INF:
        return NEG_INF
    return mx + math.log(math.exp(a - mx) + math.exp(b - mx) + math.exp(c - mx) + math.exp(d - mx))


@numba.njit(parallel=True, cache=True)
def algebra_forward(et, in_len, tg_len, w, flags, causal, use_max, alpha, bp, out):
    """Fill ``alpha`` (log space) and, for max, back-pointers ``bp``; ``out[b] = alpha[n, m]``.

    ``alpha`` is ``(N, S+1, T+1)``, or ``(N, 2, T+1)`` to keep only two rows (enough when
    the backward pass needs back-pointers only, as for max: halves the memory).
    """
    rolling = alpha.shape[1] == 2
    nb = et.shape[0]
    wa, wct, wcp, wd, ma, mct, mcp, md = _move_terms(w, flags)
    for b in numba.prange(nb):
        m = in_len[b]
        n = tg_len[b]
        alpha[b, 0, 0] = 0.0
        if use_max:
            bp[b, 0, 0] = MOVE_NONE
        r = 0
        for j in range(1, m + 1):  # row 0: only delimiter
            v = alpha[b, 0, j - 1] + _scaled(wd, et[b, 0, j - 1]) + md
            alpha[b, 0, j] = v
            if use_max:
                bp[b, 0, j] = MOVE_DELIMITER if v > NEG_INF else MOVE_NONE
        for i in range(1, n + 1):
            p = r  # the previous row
            r = (i & 1) if rolling else i
            # column 0: only clone_prediction (scored with p_1)
            v = alpha[b, p, 0] + _scaled(wcp, et[b, i, 0]) + mcp
            alpha[b, r, 0] = v
            if use_max:
                bp[b, i, 0] = MOVE_CLONE_PREDICTION if v > NEG_INF else MOVE_NONE
            jc = min(i, m) if causal else m
            for j in range(1, jc + 1):
                e = et[b, i, j - 1]
                va = alpha[b, p, j - 1] + _scaled(wa, e) + ma
                vct = alpha[b, r, j - 1] + _scaled(wct, e) + mct
                vcp = alpha[b, p, j] + _scaled(wcp, e) + mcp
                vd = alpha[b, r, j - 1] + _scaled(wd, et[b, 0, j - 1]) + md
                if use_max:
                    # canonical order, strict ">": the earlier move keeps an exact tie
                    best = va
                    code = MOVE_ALIGN
                    if vct > best:
                        best = vct
                        code = MOVE_CLONE_TARGET
                    if vcp > best:
                        best = vcp
                        code = MOVE_CLONE_PREDICTION
                    if vd > best:
                        best = vd
                        code = MOVE_DELIMITER
                    alpha[b, r, j] = best
                    bp[b, i, j] = code if best > NEG_INF else MOVE_NONE
                else:
                    alpha[b, r, j] = _lse4(va, vct, vcp, vd)
            for j in range(jc + 1, m + 1):  # causal: beyond the diagonal only delimiter
                v = alpha[b, r, j - 1] + _scaled(wd, et[b, 0, j - 1]) + md
                alpha[b, r, j] = v
                if use_max:
                    bp[b, i, j] = MOVE_DELIMITER if v > NEG_INF else MOVE_NONE
        out[b] = alpha[b, r, m]


@numba.njit(parallel=True, cache=True)
def algebra_backward_sum(et, in_len, tg_len, w, flags, causal, alpha, beta, gscale, grad):
    """Gradient of ``-logZ`` (times ``gscale[b]``) w.r.t. ``et`` by forward–backward.

    ``beta`` is scratch of ``alpha``'s shape; ``grad`` (``et``'s shape) must be zero on
    entry. Sequences with ``logZ = -inf`` (no path) or ``gscale[b] == 0`` stay zero.
    """
    nb = et.shape[0]
    wa, wct, wcp, wd, ma, mct, mcp, md = _move_terms(w, flags)
    for b in numba.prange(nb):
        m = in_len[b]
        n = tg_len[b]
        z = alpha[b, n, m]
        g = gscale[b]
        if z == NEG_INF or g == 0.0:
            continue
        for i in range(n, -1, -1):
            for j in range(m, -1, -1):
                if i == n and j == m:
                    bij = 0.0
                else:
                    # successors of (i, j): align (i+1, j+1), clone_target/delimiter (i, j+1),
                    # clone_prediction (i+1, j); causal moves into (i', j') need j' <= i'
                    va = NEG_INF
                    vcp = NEG_INF
                    vct = NEG_INF
                    vd = NEG_INF
                    if i < n:
                        jj = j if j >= 1 else 1
                        if (not causal) or j <= i + 1:
                            vcp = beta[b, i + 1, j] + _scaled(wcp, et[b, i + 1, jj - 1]) + mcp
                        if j < m and ((not causal) or j + 1 <= i + 1):
                            va = beta[b, i + 1, j + 1] + _scaled(wa, et[b, i + 1, j]) + ma
                    if j < m:
                        vd = beta[b, i, j + 1] + _scaled(wd, et[b, 0, j]) + md
                        if i >= 1 and ((not causal) or j + 1 <= i):
                            vct = beta[b, i, j + 1] + _scaled(wct, et[b, i, j]) + mct
                    bij = _lse4(va, vct, vcp, vd)
                beta[b, i, j] = bij
                if bij == NEG_INF:
                    continue
                # posteriors of the moves into (i, j)
                base = bij - z
                if j >= 1:
                    if wd != 0.0:
                        p = math.exp(alpha[b, i, j - 1] + _scaled(wd, et[b, 0, j - 1]) + md + base)
                        grad[b, 0, j - 1] -= g * wd * p
                if i >= 1 and ((not causal) or j <= i):
                    e_row = i
                    if j >= 1:
                        e = et[b, e_row, j - 1]
                        acc = 0.0
                        if wa != 0.0:
                            acc += wa * math.exp(
                                alpha[b, i - 1, j - 1] + _scaled(wa, e) + ma + base
                            )
                        if wct != 0.0:
                            acc += wct * math.exp(alpha[b, i, j - 1] + _scaled(wct, e) + mct + base)
                        if wcp != 0.0:
                            acc += wcp * math.exp(alpha[b, i - 1, j] + _scaled(wcp, e) + mcp + base)
                        grad[b, e_row, j - 1] -= g * acc
                    elif wcp != 0.0:
                        p = math.exp(
                            alpha[b, i - 1, 0] + _scaled(wcp, et[b, e_row, 0]) + mcp + base
                        )
                        grad[b, e_row, 0] -= g * wcp * p


@numba.njit(inline="always", cache=True)
def _move_back(code: int, i: int, j: int) -> tuple[int, int, int, int]:
    """One step back along a best path from cell (i, j) by move ``code``, read off the spec
    table: ``(row, col, i', j')`` where ``et[b, row, col]`` is the emission the move scored
    (row ``i`` for the target ``y_i``, 0 for the blank; column ``j - 1``, or ``max(j, 1) - 1``)
    and ``(i', j') = (i - di, j - dj)`` the cell it came from."""
    row = i if MOVE_EMITS_TARGET[code] else 0
    col = (max(j, 1) if MOVE_FRAME_AT_LEAST_1[code] else j) - 1
    return row, col, i - MOVE_DI[code], j - MOVE_DJ[code]


@numba.njit(inline="always", cache=True)
def _path_end(in_len, tg_len, bp, b):
    # the best path's last cell (n, m) of sequence b, and whether any path reaches it
    i = tg_len[b]
    j = in_len[b]
    return i, j, bp[b, i, j] != MOVE_NONE or (i == 0 and j == 0)


@numba.njit(parallel=True, cache=True)
def algebra_backward_max(in_len, tg_len, w, bp, gscale, grad):
    """Gradient of ``-max`` w.r.t. ``et``: minus the weighted move counts of the best path."""
    nb = bp.shape[0]
    for b in numba.prange(nb):
        g = gscale[b]
        i, j, feasible = _path_end(in_len, tg_len, bp, b)
        if g == 0.0 or not feasible:
            continue
        while i > 0 or j > 0:
            code = bp[b, i, j]
            if code == MOVE_NONE:
                break
            row, col, i, j = _move_back(code, i, j)
            grad[b, row, col] -= g * w[code - 1]


@numba.njit(parallel=True, cache=True)
def algebra_backtrack(in_len, tg_len, bp, paths, plen):
    """Best paths as move codes, in order from (0, 0): ``paths[b, :plen[b]]``; -1 if none."""
    nb = bp.shape[0]
    for b in numba.prange(nb):
        i, j, feasible = _path_end(in_len, tg_len, bp, b)
        if not feasible:
            plen[b] = -1
            continue
        k = 0
        while i > 0 or j > 0:
            code = bp[b, i, j]
            paths[b, k] = code
            k += 1
            _, _, i, j = _move_back(code, i, j)
        for q in range(k // 2):  # reverse in place
            tmp = paths[b, q]
            paths[b, q] = paths[b, k - 1 - q]
            paths[b, k - 1 - q] = tmp
        plen[b] = k


# --------------------------------------------------------------------------------------
# Real CTC (Graves et al., 2006) on the extended label sequence ε y1 ε y2 … yn ε.
# --------------------------------------------------------------------------------------


@numba.njit(inline="always", cache=True)
def _ctc_emit_index(s: int) -> int:
    # state s of the extended sequence -> column of em (0 = blank, i = y_i)
    if s % 2 == 0:
        return 0
    return (s + 1) // 2


@numba.njit(inline="always", cache=True)
def _ctc_can_skip(tg, b: int, s: int) -> bool:
    # into state s from s-2: s is a label state and its label differs from the previous one
    if s % 2 == 0 or s < 2:
        return False
    k = (s + 1) // 2  # 1-based target position
    return tg[b, k - 1] != tg[b, k - 2]


@numba.njit(parallel=True, cache=True)
def ctc_forward(em, tg, in_len, tg_len, alpha, out):
    """``alpha[b, t, s]`` over time ``t < m`` and states ``s ≤ 2n``; ``out[b] = log p(y|x)``."""
    nb = em.shape[0]
    for b in numba.prange(nb):
        m = in_len[b]
        n = tg_len[b]
        ns = 2 * n + 1
        for s in range(ns):
            alpha[b, 0, s] = NEG_INF
        alpha[b, 0, 0] = em[b, 0, 0]
        if n >= 1:
            alpha[b, 0, 1] = em[b, 0, 1]
        for t in range(1, m):
            for s in range(ns):
                acc = alpha[b, t - 1, s]
                if s >= 1:
                    acc = _logaddexp(acc, alpha[b, t - 1, s - 1])
                if _ctc_can_skip(tg, b, s):
                    acc = _logaddexp(acc, alpha[b, t - 1, s - 2])
                if acc == NEG_INF:
                    alpha[b, t, s] = NEG_INF
                else:
                    alpha[b, t, s] = acc + em[b, t, _ctc_emit_index(s)]
        z = alpha[b, m - 1, ns - 1]
        if n >= 1:
            z = _logaddexp(z, alpha[b, m - 1, ns - 2])
        out[b] = z


@numba.njit(parallel=True, cache=True)
def ctc_backward(em, tg, in_len, tg_len, alpha, logz, gscale, grad):
    """Gradient of ``-log p(y|x)`` (times ``gscale``) w.r.t. ``em``; zero where infeasible."""
    nb = em.shape[0]
    for b in numba.prange(nb):
        m = in_len[b]
        n = tg_len[b]
        ns = 2 * n + 1
        z = logz[b]
        g = gscale[b]
        if z == NEG_INF or g == 0.0:
            continue
        beta = np.full((2, ns + 2), NEG_INF)  # rolling: beta excludes the emission at t
        cur = (m - 1) % 2
        beta[cur, ns - 1] = 0.0
        if n >= 1:
            beta[cur, ns - 2] = 0.0
        for t in range(m - 1, -1, -1):
            cur = t % 2
            if t < m - 1:
                nxt = (t + 1) % 2
                for s in range(ns):
                    acc = beta[nxt, s] + em[b, t + 1, _ctc_emit_index(s)]
                    if s + 1 < ns:
                        acc = _logaddexp(
                            acc, beta[nxt, s + 1] + em[b, t + 1, _ctc_emit_index(s + 1)]
                        )
                    if s + 2 < ns and _ctc_can_skip(tg, b, s + 2):
                        acc = _logaddexp(
                            acc, beta[nxt, s + 2] + em[b, t + 1, _ctc_emit_index(s + 2)]
                        )
                    beta[cur, s] = acc
            for s in range(ns):
                a = alpha[b, t, s]
                bb = beta[cur, s]
                if a == NEG_INF or bb == NEG_INF:
                    continue
                grad[b, t, _ctc_emit_index(s)] -= g * math.exp(a + bb - z)


# --------------------------------------------------------------------------------------
# The backend interface (:class:`~latalign.align.backends.base.Backend`) over these kernels.
# --------------------------------------------------------------------------------------


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


class NumbaBackend(TorchEmissions):
    """The compiled CPU kernels behind :class:`~latalign.align.backends.base.Backend`."""

    name = "numba"
    sparse_rows = True  # CPU only: finding the padding rows costs no synchronisation here
    keep_softmax = True  # from logits, the backward reuses the forward's softmax

    def algebra_forward(
        self, em, in_len, tg_len, objective: Objective, *, keep: bool, paths: bool = False
    ) -> AlgebraState:
        use_max = objective.aggregate == "max"
        nb, tmax, s1 = em.shape
        rows = 2 if use_max else s1  # max needs back-pointers only: keep two rows of alpha
        alpha = np.empty((nb, rows, tmax + 1), dtype=np.float64)
        bp = np.zeros((nb, s1, tmax + 1) if use_max else (1, 1, 1), dtype=np.int8)
        out = np.empty(nb, dtype=np.float64)
        algebra_forward(
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
        saved = (
            torch.from_numpy(alpha) if keep and not use_max else None,
            torch.from_numpy(bp) if use_max and (keep or paths) else None,
        )
        return AlgebraState(objective, -torch.from_numpy(out), saved)

    def algebra_backward(self, state, em, in_len, tg_len, gscale):
        obj = state.objective
        alpha_t, codes = state.saved
        nb, tmax, s1 = em.shape
        grad = np.zeros((nb, s1, tmax), dtype=np.float64)  # transposed, as the kernels see em
        w = np.asarray(obj.weights, dtype=np.float64)
        g = _np(gscale.to(torch.float64))
        if obj.aggregate == "max":
            algebra_backward_max(_np(in_len), _np(tg_len), w, _np(codes), g, grad)
        else:
            alpha = _np(alpha_t)
            algebra_backward_sum(
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
        out = torch.from_numpy(grad).transpose(1, 2)
        return nan_where_infeasible(out, state.loss, gscale)

    def best_paths(self, state, in_len, tg_len):
        codes = state.saved[1]
        nb, s1, t1 = codes.shape
        paths = np.zeros((nb, max(s1 + t1 - 2, 1)), dtype=np.int8)
        plen = np.zeros(nb, dtype=np.int64)
        algebra_backtrack(_np(in_len), _np(tg_len), _np(codes), paths, plen)
        return [None if plen[b] < 0 else paths[b, : plen[b]].tolist() for b in range(nb)]

    def ctc_forward(self, em, targets, in_len, tg_len, *, keep: bool) -> CTCState:
        nb, tmax, s1 = em.shape
        alpha = np.empty((nb, tmax, 2 * (s1 - 1) + 1), dtype=np.float64)
        out = np.empty(nb, dtype=np.float64)
        ctc_forward(_np(em), _np(targets), _np(in_len), _np(tg_len), alpha, out)
        return CTCState(-torch.from_numpy(out), (torch.from_numpy(alpha) if keep else None,))

    def ctc_backward(self, state, em, targets, in_len, tg_len, gscale):
        nb, tmax, s1 = em.shape
        grad = np.zeros((nb, tmax, s1), dtype=np.float64)
        ctc_backward(
            _np(em),
            _np(targets),
            _np(in_len),
            _np(tg_len),
            _np(state.saved[0]),
            _np(-state.loss),
            _np(gscale.to(torch.float64)),
            grad,
        )
        return nan_where_infeasible(torch.from_numpy(grad), state.loss, gscale)
