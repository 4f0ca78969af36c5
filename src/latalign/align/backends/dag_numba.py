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
the ``-inf`` fill of rows ``i < n``.

**Sum: scaled products, exact.** A log-space step costs an ``exp`` per edge. Instead each
transition row is exponentiated once per sequence, ``P[u, v] = exp(trans[u, v] − r_u)`` with
``r_u`` the row's max (so ``P ≤ 1``), and a step is a product of ``P`` with a vector of
``exp``-ed prefix (or suffix) masses shifted by a running max (so every factor is ``≤ 1`` and
the best predecessor's factor is 1): one ``exp`` per vertex and step, multiply-adds per edge.
Such a sum can only lose terms by underflow, each below ``1e-307``; where a sum comes out
below :data:`TINY` (its vertex's mass ``> 575`` nats below its best neighbour's) that vertex
is recomputed by the two-pass log-space logsumexp, so the result is exact to rounding
always. Max (Viterbi) runs in log space (adds and compares only).
"""

from __future__ import annotations

import math

import numba
import numpy as np

NEG_INF = -np.inf

#: a scaled sum below this is recomputed in log space (lost terms are < 1e-307 each)
TINY = 1e-250


@numba.njit(inline="always", cache=True)
def _feasible(n: int, lb: int) -> bool:
    # a path visits n >= 1 distinct vertices, the first (0) and the last (lb - 1) among them
    return n >= 1 and n <= lb and (n > 1 or lb == 1)


@numba.njit(cache=True)
def _scaled_rows(trans_b, lb, r, p):
    """``r[u] = max_{u<v<lb} trans[u, v]`` and ``p[u, v] = exp(trans[u, v] − r[u])``."""
    for u in range(lb):
        top = NEG_INF
        for v in range(u + 1, lb):
            if trans_b[u, v] > top:
                top = trans_b[u, v]
        r[u] = top
        if top == NEG_INF:
            continue
        for v in range(u + 1, lb):
            p[u, v] = math.exp(trans_b[u, v] - top)


@numba.njit(cache=True)
def _prefix_lse(alpha_b, trans_b, i, v):
    """Exact ``logsumexp_{i-1 ≤ u < v} alpha[i-1, u] + trans[u, v]`` (two passes)."""
    top = NEG_INF
    for u in range(i - 1, v):
        x = alpha_b[i - 1, u] + trans_b[u, v]
        if x > top:
            top = x
    if top == NEG_INF:
        return NEG_INF
    s = 0.0
    for u in range(i - 1, v):
        x = alpha_b[i - 1, u] + trans_b[u, v]
        if x > NEG_INF:
            s += math.exp(x - top)
    return top + math.log(s)


@numba.njit(parallel=True, cache=True)
def dag_forward(et, trans, vert_len, tg_len, use_max, tiny, alpha, bp, out):
    """Fill ``alpha`` (rows ``i < n``) and ``out[b]`` = log-sum (or max) over all paths.

    ``use_max``: Viterbi; ``bp[b, i, v]`` (int32, ``(N, S, L)``) gets the best predecessor
    of ``v`` at step ``i`` (the smallest ``u`` of a tie; ``-1`` if unreachable). Otherwise
    ``bp`` is not touched. ``out[b] = -inf`` where there is no path. ``tiny``: the scaled
    sums below it are recomputed in log space (:data:`TINY`; ``inf``: always, 0: only zeros).
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
        if use_max:
            _viterbi(et[b], trans[b], n, lb, alpha[b], bp[b])
        else:
            _forward_sum(et[b], trans[b], n, lb, tiny, alpha[b])
        out[b] = alpha[b, n - 1, lb - 1]


@numba.njit(cache=True)
def _viterbi(et_b, trans_b, n, lb, alpha_b, bp_b):
    mx = np.empty(lb)
    for i in range(1, n):
        hi = lb - n + i
        for v in range(i, hi + 1):
            mx[v] = NEG_INF
        # predecessors u of step i - 1 (its band ends at hi - 1), successors v in (u, hi]
        for u in range(i - 1, hi):
            a = alpha_b[i - 1, u]
            if a == NEG_INF:
                continue
            for v in range(max(u + 1, i), hi + 1):
                x = a + trans_b[u, v]
                if x > mx[v]:  # strict: the smallest u keeps a tie
                    mx[v] = x
                    bp_b[i, v] = u
        for v in range(i, hi + 1):
            if mx[v] > NEG_INF:
                alpha_b[i, v] = mx[v] + et_b[i, v]


@numba.njit(inline="always", cache=True)
def _grow_max(s, x, acc, lo, hi):
    # a running max s < x grows to x: rescale the terms acc[lo:hi] (held relative to s)
    if s > NEG_INF:
        scale = math.exp(s - x)
        for v in range(lo, hi):
            acc[v] *= scale
    return x


@numba.njit(cache=True)
def _forward_sum(et_b, trans_b, n, lb, tiny, alpha_b):
    r = np.empty(lb)
    p = np.zeros((lb, lb))
    _scaled_rows(trans_b, lb, r, p)
    acc = np.empty(lb)
    for i in range(1, n):
        hi = lb - n + i
        for v in range(i, hi + 1):
            acc[v] = 0.0
        # u in increasing order: s = max over the predecessors seen so far of alpha + r_u;
        # acc[v] holds sum_u exp(alpha_u + r_u - s) p[u, v], rescaled when s grows, and v is
        # complete (all its predecessors u < v seen) right after u = v - 1
        s = NEG_INF
        for u in range(i - 1, hi):
            x = alpha_b[i - 1, u] + r[u]
            if x > NEG_INF:
                if x > s:
                    s = _grow_max(s, x, acc, u + 1, hi + 1)
                w = math.exp(x - s)
                for v in range(u + 1, hi + 1):
                    acc[v] += w * p[u, v]
            v = u + 1
            if s == NEG_INF:
                continue  # no predecessor term is finite: stays -inf
            if acc[v] >= tiny and acc[v] > 0.0:
                alpha_b[i, v] = s + math.log(acc[v]) + et_b[i, v]
            else:
                alpha_b[i, v] = _prefix_lse(alpha_b, trans_b, i, v) + et_b[i, v]


@numba.njit(parallel=True, cache=True)
def dag_backward(et, trans, vert_len, tg_len, alpha, logz, gscale, tiny, beta, g_et, g_trans):
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
        _backward_sum(et[b], trans[b], n, lb, alpha[b], z, g, tiny, beta[b], g_et[b], g_trans[b])


@numba.njit(cache=True)
def _backward_sum(et_b, trans_b, n, lb, alpha_b, z, g, tiny, beta_b, g_et_b, g_tr_b):
    r = np.empty(lb)
    p = np.zeros((lb, lb))
    _scaled_rows(trans_b, lb, r, p)
    h = np.empty(lb)
    ht = np.empty(lb)
    for i in range(n - 2, -1, -1):
        hi = lb - n + i
        for v in range(i + 1, hi + 2):  # the band of step i + 1
            h[v] = et_b[i + 1, v] + beta_b[i + 1, v]
        # u in decreasing order: d = max_{v > u} h[v] (the successors seen so far);
        # ht[v] = exp(h[v] - d), rescaled when d grows
        d = NEG_INF
        for u in range(hi, i - 1, -1):
            hv = h[u + 1]
            if hv > NEG_INF:
                if hv > d:
                    d = _grow_max(d, hv, ht, u + 2, hi + 2)
                ht[u + 1] = math.exp(hv - d)
            else:
                ht[u + 1] = 0.0
            a = alpha_b[i, u]
            if a == NEG_INF or d == NEG_INF or r[u] == NEG_INF:
                # no prefix reaches u (so no predecessor's sum needs beta[i, u]: its edge
                # terms are -inf already), or no suffix leaves it: beta stays -inf
                continue
            su = 0.0
            for v in range(u + 1, hi + 2):
                su += p[u, v] * ht[v]
            if su >= tiny and su > 0.0:
                bu = r[u] + d + math.log(su)
                gamma = math.exp(a + bu - z)
                # edge posterior exp(a + trans + h - z) = gamma * p * ht / su
                c = g * gamma / su
                for v in range(u + 1, hi + 2):
                    g_tr_b[u, v] -= c * p[u, v] * ht[v]
            else:
                bu = _suffix_lse_and_posteriors(trans_b, h, u, hi, a, z, g, g_tr_b)
                gamma = math.exp(a + bu - z) if bu > NEG_INF else 0.0
            beta_b[i, u] = bu
            g_et_b[i, u] = -g * gamma


@numba.njit(cache=True)
def _suffix_lse_and_posteriors(trans_b, h, u, hi, a, z, g, g_tr_b):
    """Exact ``beta = logsumexp_{u < v ≤ hi+1} trans[u, v] + h[v]`` (two passes), adding the
    edge posteriors ``exp(a + trans + h − z)`` (one ``exp`` per edge) to ``−g_trans / g``."""
    top = NEG_INF
    for v in range(u + 1, hi + 2):
        x = trans_b[u, v] + h[v]
        if x > top:
            top = x
    if top == NEG_INF:
        return NEG_INF
    # exp(a + x - z) = c * exp(x - top), c <= 1 (a posterior bound)
    c = math.exp(a + top - z)
    s = 0.0
    for v in range(u + 1, hi + 2):
        x = trans_b[u, v] + h[v]
        if x > NEG_INF:
            t = math.exp(x - top)
            s += t
            g_tr_b[u, v] -= g * c * t
    return top + math.log(s)


def forward(
    et: np.ndarray, trans: np.ndarray, vert_len, tg_len, use_max: bool, tiny: float | None = None
):
    """Run :func:`dag_forward` on fresh arrays: ``(out (N,), alpha (N, S, L), bp or None)``;
    ``tiny`` defaults to the module's :data:`TINY` at call time."""
    nb, smax, lmax = et.shape
    alpha = np.empty((nb, smax, lmax), dtype=np.float64)
    bp = np.empty((nb, smax, lmax) if use_max else (1, 1, 1), dtype=np.int32)
    out = np.empty(nb, dtype=np.float64)
    tiny = TINY if tiny is None else tiny
    dag_forward(et, trans, vert_len, tg_len, use_max, tiny, alpha, bp, out)
    return out, alpha, (bp if use_max else None)


def backward(et, trans, vert_len, tg_len, alpha, logz, gscale, tiny: float | None = None):
    """Run :func:`dag_backward`: ``(g_et (N, S, L), g_trans (N, L, L))``."""
    g_et = np.zeros_like(et)
    g_trans = np.zeros_like(trans)
    tiny = TINY if tiny is None else tiny
    dag_backward(
        et,
        trans,
        vert_len,
        tg_len,
        alpha,
        logz,
        gscale,
        tiny,
        np.empty_like(alpha),
        g_et,
        g_trans,
    )
    return g_et, g_trans
