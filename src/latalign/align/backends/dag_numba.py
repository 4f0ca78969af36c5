"""The DAG latent alignment (DA-Transformer) on CPU: numba kernels, parallel over the batch.

Semantics: SPEC.md, "DAG latent alignment". Layout, shared by every DAG backend:

- ``et (N, S, L)`` float64: ``et[b, i, v] = log_probs[b, v, y_{i+1}]`` (target step ``i``
  0-based, vertex ``v``), the gathered emissions transposed so that a step's row is
  contiguous;
- ``trans (N, L, L)`` float64: ``trans[b, u, v]`` the edge ``u → v``, read for
  ``u < v < L_b`` only;
- ``alpha (N, S, L)``: ``alpha[b, i, v]`` = log-sum (or max) of the scores of the path
  prefixes ``0 = a_1 < … < a_{i+1} = v`` emitting ``y_1 … y_{i+1}``, emissions included.

Step ``i`` can only sit on the band of vertices ``i ≤ v ≤ L_b − n + i`` (``i`` vertices
before it, ``n − 1 − i`` after it); nothing outside the band is read or written except
the ``-inf`` fill of rows ``i < n``. A logsumexp runs in two passes (max, then the sum of
``exp``), row by row of ``trans`` (contiguous in ``v``); the backward pass reuses each
``exp`` of its ``beta`` sum for the edge posterior (one ``exp`` per edge and step).
"""

from __future__ import annotations

import math

import numba
import numpy as np

NEG_INF = -np.inf


@numba.njit(inline="always", cache=True)
def _feasible(n: int, lb: int) -> bool:
    # a path visits n >= 1 distinct vertices, the first (0) and the last (lb - 1) among them
    return n >= 1 and n <= lb and (n > 1 or lb == 1)


@numba.njit(parallel=True, cache=True)
def dag_forward(et, trans, vert_len, tg_len, use_max, alpha, bp, out):
    """Fill ``alpha`` (rows ``i < n``) and ``out[b]`` = log-sum (or max) over all paths.

    ``use_max``: Viterbi; ``bp[b, i, v]`` (int32, ``(N, S, L)``) gets the best predecessor
    of ``v`` at step ``i`` (the smallest ``u`` of a tie; ``-1`` if unreachable). Otherwise
    ``bp`` is not touched. ``out[b] = -inf`` where there is no path.
    """
    nb = et.shape[0]
    for b in numba.prange(nb):
        n = tg_len[b]
        lb = vert_len[b]
        if not _feasible(n, lb):
            out[b] = NEG_INF
            continue
        for i in range(n):
            for v in range(lb):
                alpha[b, i, v] = NEG_INF
                if use_max:
                    bp[b, i, v] = -1
        alpha[b, 0, 0] = et[b, 0, 0]
        mx = np.empty(lb)
        acc = np.empty(lb)
        for i in range(1, n):
            lo = i
            hi = lb - n + i
            for v in range(lo, hi + 1):
                mx[v] = NEG_INF
                acc[v] = 0.0
            # predecessors u of step i - 1 (its band ends at hi - 1), successors v in (u, hi]
            for u in range(i - 1, hi):
                a = alpha[b, i - 1, u]
                if a == NEG_INF:
                    continue
                for v in range(max(u + 1, lo), hi + 1):
                    x = a + trans[b, u, v]
                    if x > mx[v]:  # strict: the smallest u keeps a tie
                        mx[v] = x
                        if use_max:
                            bp[b, i, v] = u
            if not use_max:
                for u in range(i - 1, hi):
                    a = alpha[b, i - 1, u]
                    if a == NEG_INF:
                        continue
                    for v in range(max(u + 1, lo), hi + 1):
                        x = a + trans[b, u, v]
                        if x > NEG_INF:
                            acc[v] += math.exp(x - mx[v])
            for v in range(lo, hi + 1):
                if mx[v] == NEG_INF:
                    continue  # stays -inf
                if use_max:
                    alpha[b, i, v] = mx[v] + et[b, i, v]
                else:
                    alpha[b, i, v] = mx[v] + math.log(acc[v]) + et[b, i, v]
        out[b] = alpha[b, n - 1, lb - 1]


@numba.njit(parallel=True, cache=True)
def dag_backward(et, trans, vert_len, tg_len, alpha, logz, gscale, beta, g_et, g_trans):
    """Gradient of ``gscale[b] · (−logZ_b)`` w.r.t. ``et`` and ``trans`` (forward–backward).

    ``beta (N, S, L)`` is scratch: ``beta[b, i, u]`` = log-sum of the path suffixes after
    vertex ``u`` at step ``i`` (emissions after ``u`` only). ``g_et`` and ``g_trans`` must be
    zero on entry; sequences with no path or ``gscale[b] == 0`` stay zero.
    """
    nb = et.shape[0]
    for b in numba.prange(nb):
        z = logz[b]
        g = gscale[b]
        if z == NEG_INF or g == 0.0:
            continue
        n = tg_len[b]
        lb = vert_len[b]
        for i in range(n):
            for u in range(lb):
                beta[b, i, u] = NEG_INF
        beta[b, n - 1, lb - 1] = 0.0
        g_et[b, n - 1, lb - 1] = -g * math.exp(alpha[b, n - 1, lb - 1] - z)
        h = np.empty(lb)
        for i in range(n - 2, -1, -1):
            hi = lb - n + i
            for v in range(i + 1, hi + 2):  # the band of step i + 1
                h[v] = et[b, i + 1, v] + beta[b, i + 1, v]
            for u in range(i, hi + 1):
                a = alpha[b, i, u]
                if a == NEG_INF:
                    # no prefix reaches u: its suffixes carry no posterior, and no
                    # predecessor's sum needs beta[i, u] (their edge terms are -inf already)
                    continue
                top = NEG_INF
                for v in range(u + 1, hi + 2):
                    x = trans[b, u, v] + h[v]
                    if x > top:
                        top = x
                if top == NEG_INF:
                    continue
                # edge posterior exp(a + x - z) = c · exp(x - top); c <= 1 (a posterior bound)
                c = math.exp(a + top - z)
                s = 0.0
                for v in range(u + 1, hi + 2):
                    x = trans[b, u, v] + h[v]
                    if x > NEG_INF:
                        t = math.exp(x - top)
                        s += t
                        g_trans[b, u, v] -= g * c * t
                bu = top + math.log(s)
                beta[b, i, u] = bu
                g_et[b, i, u] = -g * math.exp(a + bu - z)


def forward(et: np.ndarray, trans: np.ndarray, vert_len, tg_len, use_max: bool):
    """Run :func:`dag_forward` on fresh arrays: ``(out (N,), alpha (N, S, L), bp or None)``."""
    nb, smax, lmax = et.shape
    alpha = np.empty((nb, smax, lmax), dtype=np.float64)
    bp = np.empty((nb, smax, lmax) if use_max else (1, 1, 1), dtype=np.int32)
    out = np.empty(nb, dtype=np.float64)
    dag_forward(et, trans, vert_len, tg_len, use_max, alpha, bp, out)
    return out, alpha, (bp if use_max else None)


def backward(et, trans, vert_len, tg_len, alpha, logz, gscale):
    """Run :func:`dag_backward`: ``(g_et (N, S, L), g_trans (N, L, L))``."""
    g_et = np.zeros_like(et)
    g_trans = np.zeros_like(trans)
    dag_backward(
        et, trans, vert_len, tg_len, alpha, logz, gscale, np.empty_like(alpha), g_et, g_trans
    )
    return g_et, g_trans
