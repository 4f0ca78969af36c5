"""The DAG latent alignment (DA-Transformer) as Triton kernels (also under Triton's interpreter).

Layout as :mod:`.dag_numba`: ``et (N, S, L)`` (``et[b, i, v] = log p_v(y_{i+1})``),
``trans (N, L, L)``, ``alpha``/``beta (N, S, L)``. Organisation:

- Forward: one launch per target step ``i`` (the steps are sequential; a step's vertices
  are independent), a program per (sequence, tile of ``BLOCK_V`` vertices ``v``) reduces
  over the predecessors ``u`` in tiles of ``BLOCK_U``: an online logsumexp (sum) or a
  running max with the first arg-max (max: the smallest ``u`` keeps a tie, as numba).
- Backward: one launch per step in reverse, a program per (sequence, tile of ``u``) reduces
  ``trans[u, v] + et[i+1, v] + beta[i+1, v]`` over ``v`` and writes the posterior of ``u``
  emitting ``y_{i+1}`` (the emission gradient) at once; then one launch, a program per
  (sequence, tile of ``u`` × tile of ``v``), sums each edge's posterior over the steps and
  writes each transition gradient once (no atomics).

The host only launches: lengths are read inside the kernels, sizes and the step index are
``do_not_specialize``d (one compiled kernel for every step and size), and every launch runs
under the tensors' device. (Under the interpreter a scalar condition cannot be ``&``-ed with a tile's lanes:
``tl.where(cond, lanes, False)`` does it in both modes.) Every load outside a sequence's graph (vertices ``≥ L_b``,
edges ``u ≥ v``, steps ``≥ n``, vertices off the step's band) is masked to the constant
``-inf``, never a finite stand-in: padding never enters, whatever it holds.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch import Tensor

from .dag_torch import logz_of

#: largest vertex tile per program (tests lower it to exercise the tiling on tiny graphs)
MAX_BLOCK = 64


def _block(size: int) -> int:
    return max(16, min(MAX_BLOCK, triton.next_power_of_2(max(int(size), 1))))


def _on_device(t: torch.Tensor):
    # launch on the tensors' GPU, not the current one
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


@triton.jit
def _sequence(vl_ptr, tl_ptr):
    # this program's sequence b (int64 offsets), its vertices lb and its target length n
    b = tl.program_id(0).to(tl.int64)
    return b, tl.load(vl_ptr + b), tl.load(tl_ptr + b)


@triton.jit
def _step(vl_ptr, tl_ptr, et_ptr, grid_ptr, tr_ptr, i, L, S, BLOCK: tl.constexpr):
    # a step kernel's program: its sequence (b, lb, n), its tile x of vertices, which of them
    # lie in step i's band i <= x <= hi = lb - n + i, and the sequence's rows of et, the grid
    # (alpha or beta) and the transitions
    b, lb, n = _sequence(vl_ptr, tl_ptr)
    x = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    hi = lb - n + i
    on = tl.where(i < n, (x >= i) & (x <= hi), False)
    return b, lb, n, x, hi, on, et_ptr + b * S * L, grid_ptr + b * S * L, tr_ptr + b * L * L


@triton.jit
def _running(et_ptr, BLOCK: tl.constexpr):
    # an empty running logsumexp over BLOCK lanes, in et's dtype: maximum -inf, scaled sum 0
    dtype = et_ptr.dtype.element_ty
    return tl.full((BLOCK,), float("-inf"), dtype), tl.zeros((BLOCK,), dtype=dtype)


@triton.jit(do_not_specialize=["i", "L", "S"])
def _forward_step_kernel(
    et_ptr,  # (N, S, L)
    tr_ptr,  # (N, L, L)
    vl_ptr,
    tl_ptr,
    alpha_ptr,  # (N, S, L): row i written in full (-inf off the band)
    bp_ptr,  # (N, S, L) int32 (max only)
    i, L, S,  # the step, the vertices and target positions of the widest sequence
    USE_MAX: tl.constexpr, BLOCK_U: tl.constexpr, BLOCK_V: tl.constexpr,
):  # fmt: skip
    b, lb, n, v, hi, on, et_b, al_b, tr_b = _step(
        vl_ptr, tl_ptr, et_ptr, alpha_ptr, tr_ptr, i, L, S, BLOCK_V
    )
    neg = float("-inf")
    run_m, run_s = _running(et_ptr, BLOCK_V)
    arg = tl.full((BLOCK_V,), -1, tl.int32)
    if i == 0:
        run_m = tl.where(v == 0, 0.0, neg).to(et_ptr.dtype.element_ty)
        run_s = tl.where(v == 0, 1.0, 0.0).to(et_ptr.dtype.element_ty)
    else:
        # predecessors: step i-1's band [i-1, hi-1], and u < v
        u_stop = tl.minimum(hi, (tl.program_id(1) + 1) * BLOCK_V - 1)
        for u0 in range(i - 1, u_stop, BLOCK_U):
            u = u0 + tl.arange(0, BLOCK_U)
            u_on = u < hi
            a = tl.load(al_b + (i - 1) * L + u, mask=u_on, other=neg)
            edge = u_on[:, None] & on[None, :] & (u[:, None] < v[None, :])
            e = tl.load(tr_b + u[:, None] * L + v[None, :], mask=edge, other=neg)
            x = tl.where(edge, a[:, None] + e, neg)  # (BLOCK_U, BLOCK_V)
            if USE_MAX:
                tile_m, tile_arg = tl.max(x, axis=0, return_indices=True)
                better = tile_m > run_m  # strict: the earlier tile (smaller u) keeps a tie
                arg = tl.where(better, (u0 + tile_arg).to(tl.int32), arg)
                run_m = tl.where(better, tile_m, run_m)
            else:
                new_m = tl.maximum(run_m, tl.max(x, axis=0))
                safe = tl.where(new_m == neg, 0.0, new_m)
                run_s = run_s * tl.exp(run_m - safe) + tl.sum(tl.exp(x - safe[None, :]), axis=0)
                run_m = new_m
    e_v = tl.load(et_b + i * L + v, mask=on, other=0.0)
    if USE_MAX:
        val = run_m + e_v
        tl.store(bp_ptr + b * S * L + i * L + v, arg, mask=v < L)
    else:
        reached = run_m > neg
        val = tl.where(reached, run_m + tl.log(tl.where(reached, run_s, 1.0)), neg) + e_v
    val = tl.where(on & (run_m > neg), val, neg)
    tl.store(al_b + i * L + v, val, mask=v < L)


@triton.jit(do_not_specialize=["i", "L", "S"])
def _backward_step_kernel(
    et_ptr,
    tr_ptr,
    vl_ptr,
    tl_ptr,
    alpha_ptr,
    beta_ptr,  # (N, S, L): row i written in full (-inf off the band)
    logz_ptr,
    gscale_ptr,
    g_et_ptr,  # (N, S, L): row i written in full
    i, L, S,  # the step, the vertices and target positions of the widest sequence
    BLOCK_U: tl.constexpr, BLOCK_V: tl.constexpr,
):  # fmt: skip
    b, lb, n, u, hi, on, et_b, be_b, tr_b = _step(
        vl_ptr, tl_ptr, et_ptr, beta_ptr, tr_ptr, i, L, S, BLOCK_U
    )
    neg = float("-inf")
    run_m, run_s = _running(et_ptr, BLOCK_U)
    # successors: step i+1's band [i+1, hi+1], and v > u
    v_start = tl.maximum(i + 1, tl.program_id(1) * BLOCK_U + 1)
    for v0 in range(v_start, hi + 2, BLOCK_V):
        v = v0 + tl.arange(0, BLOCK_V)
        v_on = tl.where(i + 1 < n, v <= hi + 1, False)
        h = tl.load(et_b + (i + 1) * L + v, mask=v_on, other=neg) + tl.load(
            be_b + (i + 1) * L + v, mask=v_on, other=neg
        )
        edge = on[:, None] & v_on[None, :] & (u[:, None] < v[None, :])
        e = tl.load(tr_b + u[:, None] * L + v[None, :], mask=edge, other=neg)
        x = tl.where(edge, e + h[None, :], neg)  # (BLOCK_U, BLOCK_V)
        new_m = tl.maximum(run_m, tl.max(x, axis=1))
        safe = tl.where(new_m == neg, 0.0, new_m)
        run_s = run_s * tl.exp(run_m - safe) + tl.sum(tl.exp(x - safe[:, None]), axis=1)
        run_m = new_m
    reached = run_m > neg
    bt = tl.where(reached, run_m + tl.log(tl.where(reached, run_s, 1.0)), neg)
    bt = tl.where(i == n - 1, tl.where(u == lb - 1, 0.0, neg), bt)
    bt = tl.where(on, bt, neg)
    tl.store(be_b + i * L + u, bt, mask=u < L)
    z = tl.load(logz_ptr + b)
    g = tl.load(gscale_ptr + b)
    a = tl.load(alpha_ptr + b * S * L + i * L + u, mask=on, other=neg)
    live = tl.where(z > neg, on & (a > neg) & (bt > neg), False)
    post = tl.exp(tl.where(live, a + bt - z, neg))
    tl.store(g_et_ptr + b * S * L + i * L + u, tl.where(live, -g * post, 0.0), mask=u < L)


@triton.jit(do_not_specialize=["L", "S"])
def _transition_grad_kernel(
    et_ptr,
    tr_ptr,
    vl_ptr,
    tl_ptr,
    alpha_ptr,
    beta_ptr,
    logz_ptr,
    gscale_ptr,
    g_tr_ptr,  # (N, L, L): written in full
    L,
    S,
    BLOCK_U: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    b, lb, n = _sequence(vl_ptr, tl_ptr)
    u = tl.program_id(1) * BLOCK_U + tl.arange(0, BLOCK_U)
    v = tl.program_id(2) * BLOCK_V + tl.arange(0, BLOCK_V)
    neg = float("-inf")
    z = tl.load(logz_ptr + b)
    g = tl.load(gscale_ptr + b)
    edge = (u[:, None] < v[None, :]) & (v[None, :] < lb)
    edge = tl.where(z > neg, edge, False)
    e = tl.load(tr_ptr + b * L * L + u[:, None] * L + v[None, :], mask=edge, other=neg)
    acc = tl.zeros((BLOCK_U, BLOCK_V), dtype=et_ptr.dtype.element_ty)
    al_b = alpha_ptr + b * S * L
    be_b = beta_ptr + b * S * L
    et_b = et_ptr + b * S * L
    u_on = u < lb
    v_on = v < lb
    # the edge u -> v between steps i and i+1: alpha_i(u) + trans + et_{i+1}(v) + beta_{i+1}(v)
    for i in range(0, n - 1):
        a = tl.load(al_b + i * L + u, mask=u_on, other=neg)
        h = tl.load(et_b + (i + 1) * L + v, mask=v_on, other=neg) + tl.load(
            be_b + (i + 1) * L + v, mask=v_on, other=neg
        )
        x = a[:, None] + e + h[None, :]
        acc += tl.exp(tl.where(edge & (x > neg), x - z, neg))
    out = tl.where(edge, -g * acc, 0.0)
    tl.store(
        g_tr_ptr + b * L * L + u[:, None] * L + v[None, :],
        out,
        mask=(u[:, None] < L) & (v[None, :] < L),
    )


def forward(
    et: Tensor, trans: Tensor, vert_len: Tensor, tg_len: Tensor, use_max: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """As :func:`.dag_torch.forward`: ``(logZ or max (N,), alpha (N, S, L), bp or None)``."""
    nb, smax, lmax = et.shape
    et = et.contiguous()
    trans = trans.contiguous()
    alpha = torch.full((nb, smax, lmax), float("-inf"), dtype=et.dtype, device=et.device)
    bp = torch.full((nb, smax, lmax) if use_max else (1,), -1, dtype=torch.int32, device=et.device)
    block = _block(lmax)
    with _on_device(et):
        for i in range(smax if nb else 0):
            _forward_step_kernel[(nb, triton.cdiv(lmax, block))](
                et,
                trans,
                vert_len,
                tg_len,
                alpha,
                bp,
                i,
                lmax,
                smax,
                USE_MAX=use_max,
                BLOCK_U=block,
                BLOCK_V=block,
            )
    return logz_of(alpha, vert_len, tg_len), alpha, (bp if use_max else None)


def backward(
    et: Tensor, trans: Tensor, vert_len: Tensor, tg_len: Tensor,
    alpha: Tensor, logz: Tensor, gscale: Tensor,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """As :func:`.dag_torch.backward`: gradients w.r.t. ``et (N, S, L)`` and ``trans``."""
    nb, smax, lmax = et.shape
    et = et.contiguous()
    trans = trans.contiguous()
    beta = torch.empty_like(alpha)
    g_et = torch.empty_like(et)
    g_tr = torch.empty_like(trans)
    gscale = gscale.to(et.dtype).contiguous()
    logz = logz.contiguous()
    block = _block(lmax)
    common = (et, trans, vert_len, tg_len, alpha, beta, logz, gscale)  # both kernels' first
    with _on_device(et):
        for i in range(smax - 1 if nb else -1, -1, -1):
            _backward_step_kernel[(nb, triton.cdiv(lmax, block))](
                *common, g_et, i, lmax, smax, BLOCK_U=block, BLOCK_V=block
            )
        if nb:
            _transition_grad_kernel[(nb, triton.cdiv(lmax, block), triton.cdiv(lmax, block))](
                *common, g_tr, lmax, smax, BLOCK_U=block, BLOCK_V=block
            )
    return g_et, g_tr
