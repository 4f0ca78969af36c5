"""Compiled CPU backend (numba), parallel over the batch.

Every kernel works on *gathered emissions* ``em`` of shape ``(N, T, S+1)`` in float64:
``em[b, t, 0] = log p_{t+1}(ε)`` and ``em[b, t, i] = log p_{t+1}(y_i)`` for ``i = 1..S``.
Gradients come back in the same layout; the caller scatters them into the vocabulary.

Grid arrays are ``(N, S+1, T+1)``: cell ``(i, j)`` = first ``i`` targets and first ``j``
predictions consumed (SPEC.md). Move codes: 0 none, 1 align, 2 clone_target,
3 clone_prediction, 4 delimiter (the tie-break order: earlier wins an exact tie).
"""

from __future__ import annotations

import math

import numba
import numpy as np

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
# --------------------------------------------------------------------------------------


@numba.njit(parallel=True, cache=True)
def algebra_forward(em, in_len, tg_len, w, flags, causal, use_max, alpha, bp, out):
    """Fill ``alpha`` (log space) and, for max, back-pointers ``bp``; ``out[b] = alpha[n, m]``."""
    nb = em.shape[0]
    wa, wct, wcp, wd = w[0], w[1], w[2], w[3]
    fa, fct, fcp, fd = flags[0], flags[1], flags[2], flags[3]
    for b in numba.prange(nb):
        m = in_len[b]
        n = tg_len[b]
        for i in range(n + 1):
            for j in range(m + 1):
                if i == 0 and j == 0:
                    alpha[b, 0, 0] = 0.0
                    if use_max:
                        bp[b, 0, 0] = 0
                    continue
                ok = (not causal) or j <= i
                acc = NEG_INF
                code = 0
                if fa and i >= 1 and j >= 1 and ok:
                    v = alpha[b, i - 1, j - 1] + _scaled(wa, em[b, j - 1, i])
                    if use_max:
                        if v > acc:
                            acc = v
                            code = 1
                    else:
                        acc = _logaddexp(acc, v)
                if fct and i >= 1 and j >= 1 and ok:
                    v = alpha[b, i, j - 1] + _scaled(wct, em[b, j - 1, i])
                    if use_max:
                        if v > acc:
                            acc = v
                            code = 2
                    else:
                        acc = _logaddexp(acc, v)
                if fcp and i >= 1 and ok:
                    jj = j if j >= 1 else 1
                    v = alpha[b, i - 1, j] + _scaled(wcp, em[b, jj - 1, i])
                    if use_max:
                        if v > acc:
                            acc = v
                            code = 3
                    else:
                        acc = _logaddexp(acc, v)
                if fd and j >= 1:
                    v = alpha[b, i, j - 1] + _scaled(wd, em[b, j - 1, 0])
                    if use_max:
                        if v > acc:
                            acc = v
                            code = 4
                    else:
                        acc = _logaddexp(acc, v)
                alpha[b, i, j] = acc
                if use_max:
                    bp[b, i, j] = code
        out[b] = alpha[b, n, m]


@numba.njit(parallel=True, cache=True)
def algebra_backward_sum(em, in_len, tg_len, w, flags, causal, alpha, gscale, grad):
    """Gradient of ``-logZ`` (times ``gscale[b]``) w.r.t. ``em`` by forward–backward.

    ``grad`` must be zero on entry. Sequences with ``logZ = -inf`` (no path) or
    ``gscale[b] == 0`` are left at zero.
    """
    nb = em.shape[0]
    wa, wct, wcp, wd = w[0], w[1], w[2], w[3]
    fa, fct, fcp, fd = flags[0], flags[1], flags[2], flags[3]
    for b in numba.prange(nb):
        m = in_len[b]
        n = tg_len[b]
        z = alpha[b, n, m]
        g = gscale[b]
        if z == NEG_INF or g == 0.0:
            continue
        beta = np.full((n + 2, m + 2), NEG_INF)
        beta[n, m] = 0.0
        for i in range(n, -1, -1):
            for j in range(m, -1, -1):
                if not (i == n and j == m):
                    # successors of (i, j)
                    acc = NEG_INF
                    if i + 1 <= n and j + 1 <= m:
                        if fa and ((not causal) or j + 1 <= i + 1):
                            acc = _logaddexp(acc, beta[i + 1, j + 1] + _scaled(wa, em[b, j, i + 1]))
                    if j + 1 <= m:
                        if fct and i >= 1 and ((not causal) or j + 1 <= i):
                            acc = _logaddexp(acc, beta[i, j + 1] + _scaled(wct, em[b, j, i]))
                        if fd:
                            acc = _logaddexp(acc, beta[i, j + 1] + _scaled(wd, em[b, j, 0]))
                    if i + 1 <= n and fcp and ((not causal) or j <= i + 1):
                        jj = j if j >= 1 else 1
                        acc = _logaddexp(acc, beta[i + 1, j] + _scaled(wcp, em[b, jj - 1, i + 1]))
                    beta[i, j] = acc
                bij = beta[i, j]
                if bij == NEG_INF:
                    continue
                # posteriors of the moves into (i, j)
                ok = (not causal) or j <= i
                base = bij - z
                if fa and i >= 1 and j >= 1 and ok and wa != 0.0:
                    p = math.exp(alpha[b, i - 1, j - 1] + _scaled(wa, em[b, j - 1, i]) + base)
                    grad[b, j - 1, i] -= g * wa * p
                if fct and i >= 1 and j >= 1 and ok and wct != 0.0:
                    p = math.exp(alpha[b, i, j - 1] + _scaled(wct, em[b, j - 1, i]) + base)
                    grad[b, j - 1, i] -= g * wct * p
                if fcp and i >= 1 and ok and wcp != 0.0:
                    jj = j if j >= 1 else 1
                    p = math.exp(alpha[b, i - 1, j] + _scaled(wcp, em[b, jj - 1, i]) + base)
                    grad[b, jj - 1, i] -= g * wcp * p
                if fd and j >= 1 and wd != 0.0:
                    p = math.exp(alpha[b, i, j - 1] + _scaled(wd, em[b, j - 1, 0]) + base)
                    grad[b, j - 1, 0] -= g * wd * p


@numba.njit(parallel=True, cache=True)
def algebra_backward_max(in_len, tg_len, w, bp, gscale, grad):
    """Gradient of ``-max`` w.r.t. ``em``: minus the weighted move counts of the best path."""
    nb = bp.shape[0]
    for b in numba.prange(nb):
        g = gscale[b]
        i = tg_len[b]
        j = in_len[b]
        if g == 0.0 or (bp[b, i, j] == 0 and not (i == 0 and j == 0)):
            continue
        while i > 0 or j > 0:
            code = bp[b, i, j]
            if code == 1:
                grad[b, j - 1, i] -= g * w[0]
                i -= 1
                j -= 1
            elif code == 2:
                grad[b, j - 1, i] -= g * w[1]
                j -= 1
            elif code == 3:
                jj = j if j >= 1 else 1
                grad[b, jj - 1, i] -= g * w[2]
                i -= 1
            elif code == 4:
                grad[b, j - 1, 0] -= g * w[3]
                j -= 1
            else:
                break


@numba.njit(parallel=True, cache=True)
def algebra_backtrack(in_len, tg_len, bp, paths, plen):
    """Best paths as move codes, in order from (0, 0): ``paths[b, :plen[b]]``; -1 if none."""
    nb = bp.shape[0]
    for b in numba.prange(nb):
        i = tg_len[b]
        j = in_len[b]
        if bp[b, i, j] == 0 and not (i == 0 and j == 0):
            plen[b] = -1
            continue
        k = 0
        while i > 0 or j > 0:
            code = bp[b, i, j]
            paths[b, k] = code
            k += 1
            if code == 1:
                i -= 1
                j -= 1
            elif code == 3:
                i -= 1
            else:
                j -= 1
        # reverse in place
        for q in range(k // 2):
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
