"""Triton backend: the dynamic programs as GPU kernels (also runs under Triton's interpreter).

Layout as :mod:`.numba_cpu` and :mod:`.torch_vec`: gathered emissions ``em (N, T, S+1)``
(column 0 = blank, column ``i`` = ``y_i``), grids ``(N, S+1, T+1)`` of cells ``(i, j)``.

Organisation (``docs/gpu.md``):

- Operator algebra, forward: one program per sequence walks the anti-diagonals
  ``d = i + j`` of its own grid (``i ≤ n``, ``j ≤ m``), a diagonal in tiles of ``BLOCK``
  cells; ``tl.debug_barrier()`` orders one diagonal's stores before the next one's loads.
  Max stores the move code of the winner (canonical order, strict ``>``: the earlier move
  keeps an exact tie, as numba), sum a 4-way logsumexp.
- Sum backward: the mirror recursion (``beta``) over the diagonals in reverse, then one
  program per (sequence, tile of columns ``j``) turns ``alpha + score + beta`` into
  posteriors and writes each emission's gradient once (no atomics).
- Max backward and best paths: one program per sequence walks the back-pointers from
  ``(n, m)``, reading each move's source offset from the spec table (passed as a tensor).
- Real CTC: one program per sequence steps over time, states in tiles; the backward
  fuses ``beta`` with the gradient (label states write their column, blank states sum).
- From logits: a row kernel computes ``logsumexp`` (online, tiles of the vocabulary); the
  emissions are one gather minus it; the backward writes ``−softmax · Σg`` once per row
  (zero on padding rows) and the gathered ``g`` is added on top.

No cell outside a sequence's grid and no frame ``t ≥ m`` is ever loaded into a dynamic
program: masks replace them by the constant ``-inf`` (never a finite "-1e5").
Every kernel computes in the dtype of ``em`` (float64 from :mod:`..losses`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..objective import (
    MOVE_ALIGN,
    MOVE_CLONE_PREDICTION,
    MOVE_CLONE_TARGET,
    MOVE_DELIMITER,
    MOVE_DI,
    MOVE_DJ,
    MOVE_NONE,
    Objective,
)

#: Largest tile (cells of a diagonal, CTC states, columns, vocabulary entries) per step;
#: longer ranges loop over tiles. Tests lower it to exercise the tiling on tiny inputs.
MAX_BLOCK = 1024


def _block(size: int, cap: int = 4096) -> int:
    """A power-of-two tile for ``size`` elements, between 16 and ``min(cap, MAX_BLOCK)``."""
    return max(16, min(cap, MAX_BLOCK, triton.next_power_of_2(max(int(size), 1))))


# --------------------------------------------------------------------------------------
# small device helpers
# --------------------------------------------------------------------------------------


@triton.jit
def _scaled(w, e):
    # w · log p with the convention 0 · (−inf) = 0 (p**0 == 1)
    return tl.where(w == 0.0, 0.0, w * e)


@triton.jit
def _lse3(a, b, c):
    mx = tl.maximum(tl.maximum(a, b), c)
    safe = tl.where(mx == float("-inf"), 0.0, mx)
    return safe + tl.log(tl.exp(a - safe) + tl.exp(b - safe) + tl.exp(c - safe))


@triton.jit
def _lse4(a, b, c, d):
    mx = tl.maximum(tl.maximum(a, b), tl.maximum(c, d))
    safe = tl.where(mx == float("-inf"), 0.0, mx)
    s = tl.exp(a - safe) + tl.exp(b - safe) + tl.exp(c - safe) + tl.exp(d - safe)
    return safe + tl.log(s)


@triton.jit
def _lengths(in_len_ptr, tg_len_ptr):
    # this program's sequence b (int64 offsets) and its lengths: m frames, n targets
    b = tl.program_id(0).to(tl.int64)
    return b, tl.load(in_len_ptr + b), tl.load(tg_len_ptr + b)


@triton.jit
def _load_weights(w_ptr):
    # the four move weights, canonical order
    return tl.load(w_ptr + 0), tl.load(w_ptr + 1), tl.load(w_ptr + 2), tl.load(w_ptr + 3)


@triton.jit
def _diagonal_tile(d, i0, hi, BLOCK: tl.constexpr):
    # the cells (i, j = d - i) of diagonal d from row i0 on, and which are on the grid (i <= hi)
    i = i0 + tl.arange(0, BLOCK)
    return i, d - i, i <= hi


@triton.jit
def _move(ON: tl.constexpr, ok, src, w, e, off):
    # a move's value ``src + w·e`` where ``ok`` holds, else -inf; ``off`` if the move is unused
    v = off
    if ON:
        v = tl.where(ok, src + _scaled(w, e), float("-inf"))
    return v


# --------------------------------------------------------------------------------------
# operator algebra
# --------------------------------------------------------------------------------------


@triton.jit
def _algebra_forward_kernel(
    em_ptr,  # (N, T, S1)
    in_len_ptr,
    tg_len_ptr,
    alpha_ptr,  # (N, S1, T+1)
    codes_ptr,  # (N, S1, T+1) int8 (max only)
    loss_ptr,  # (N,) -alpha[n, m]
    w_ptr,  # (4,) weights in canonical order, em's dtype
    T,
    S1,
    FA: tl.constexpr,
    FCT: tl.constexpr,
    FCP: tl.constexpr,
    FD: tl.constexpr,
    CAUSAL: tl.constexpr,
    USE_MAX: tl.constexpr,
    C_ALIGN: tl.constexpr,
    C_CT: tl.constexpr,
    C_CP: tl.constexpr,
    C_D: tl.constexpr,
    C_NONE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    b, m, n = _lengths(in_len_ptr, tg_len_ptr)
    t1 = T + 1
    wa, wct, wcp, wd = _load_weights(w_ptr)
    em_b = em_ptr + b * T * S1
    al_b = alpha_ptr + b * S1 * t1
    cd_b = codes_ptr + b * S1 * t1
    neg = float("-inf")
    tl.store(al_b, 0.0)
    if USE_MAX:
        tl.store(cd_b, C_NONE)
    tl.debug_barrier()
    for d in range(1, n + m + 1):
        lo = tl.maximum(d - m, 0)
        hi = tl.minimum(d, n)
        for i0 in range(lo, hi + 1, BLOCK):
            i, j, cell = _diagonal_tile(d, i0, hi, BLOCK)
            ipos = cell & (i >= 1)
            jpos = cell & (j >= 1)
            cok = cell
            if CAUSAL:
                cok = cell & (j <= i)
            # the target y_i scored with p_max(j,1); the blank with p_j
            frame = tl.maximum(j, 1) - 1
            e = tl.load(em_b + frame * S1 + i, mask=ipos, other=0.0)
            eb = tl.load(em_b + (j - 1) * S1, mask=jpos, other=0.0)
            a_diag = tl.load(al_b + (i - 1) * t1 + (j - 1), mask=ipos & jpos, other=neg)
            a_left = tl.load(al_b + i * t1 + (j - 1), mask=jpos, other=neg)
            a_up = tl.load(al_b + (i - 1) * t1 + j, mask=ipos, other=neg)
            off = tl.full((BLOCK,), neg, em_ptr.dtype.element_ty)
            va = _move(FA, ipos & jpos & cok, a_diag, wa, e, off)
            vct = _move(FCT, ipos & jpos & cok, a_left, wct, e, off)
            vcp = _move(FCP, ipos & cok, a_up, wcp, e, off)
            vd = _move(FD, jpos, a_left, wd, eb, off)
            if USE_MAX:
                # canonical order, strict ">": the earlier move keeps an exact tie
                best = va
                code = tl.full((BLOCK,), C_ALIGN, tl.int8)
                code = tl.where(vct > best, C_CT, code).to(tl.int8)
                best = tl.where(vct > best, vct, best)
                code = tl.where(vcp > best, C_CP, code).to(tl.int8)
                best = tl.where(vcp > best, vcp, best)
                code = tl.where(vd > best, C_D, code).to(tl.int8)
                best = tl.where(vd > best, vd, best)
                code = tl.where(best > neg, code, C_NONE).to(tl.int8)
                tl.store(al_b + i * t1 + j, best, mask=cell)
                tl.store(cd_b + i * t1 + j, code, mask=cell)
            else:
                tl.store(al_b + i * t1 + j, _lse4(va, vct, vcp, vd), mask=cell)
        tl.debug_barrier()
    tl.store(loss_ptr + b, -tl.load(al_b + n * t1 + m))


@triton.jit
def _algebra_beta_kernel(
    em_ptr,
    in_len_ptr,
    tg_len_ptr,
    beta_ptr,  # (N, S1, T+1)
    w_ptr,  # (4,) weights in canonical order, em's dtype
    T,
    S1,
    FA: tl.constexpr,
    FCT: tl.constexpr,
    FCP: tl.constexpr,
    FD: tl.constexpr,
    CAUSAL: tl.constexpr,
    BLOCK: tl.constexpr,
):
    b, m, n = _lengths(in_len_ptr, tg_len_ptr)
    t1 = T + 1
    wa, wct, wcp, wd = _load_weights(w_ptr)
    em_b = em_ptr + b * T * S1
    be_b = beta_ptr + b * S1 * t1
    neg = float("-inf")
    tl.store(be_b + n * t1 + m, 0.0)
    tl.debug_barrier()
    for dd in range(0, n + m):
        d = n + m - 1 - dd
        lo = tl.maximum(d - m, 0)
        hi = tl.minimum(d, n)
        for i0 in range(lo, hi + 1, BLOCK):
            i, j, cell = _diagonal_tile(d, i0, hi, BLOCK)
            down = cell & (i < n)  # (i+1, ·) exists
            right = cell & (j < m)  # (·, j+1) exists
            # successors: align (i+1, j+1), clone_target / delimiter (i, j+1),
            # clone_prediction (i+1, j); causal moves into (i', j') need j' <= i'
            e_next = tl.load(em_b + j * S1 + (i + 1), mask=down & right, other=0.0)
            e_here = tl.load(em_b + j * S1 + i, mask=right & (i >= 1), other=0.0)
            e_cp = tl.load(em_b + (tl.maximum(j, 1) - 1) * S1 + (i + 1), mask=down, other=0.0)
            eb = tl.load(em_b + j * S1, mask=right, other=0.0)
            b_diag = tl.load(be_b + (i + 1) * t1 + (j + 1), mask=down & right, other=neg)
            b_right = tl.load(be_b + i * t1 + (j + 1), mask=right, other=neg)
            b_down = tl.load(be_b + (i + 1) * t1 + j, mask=down, other=neg)
            ok_a = cell
            ok_ct = cell
            ok_cp = cell
            if CAUSAL:
                ok_a = cell & (j + 1 <= i + 1)
                ok_ct = cell & (j + 1 <= i)
                ok_cp = cell & (j <= i + 1)
            off = tl.full((BLOCK,), neg, em_ptr.dtype.element_ty)
            va = _move(FA, down & right & ok_a, b_diag, wa, e_next, off)
            vct = _move(FCT, right & (i >= 1) & ok_ct, b_right, wct, e_here, off)
            vcp = _move(FCP, down & ok_cp, b_down, wcp, e_cp, off)
            vd = _move(FD, right, b_right, wd, eb, off)
            tl.store(be_b + i * t1 + j, _lse4(va, vct, vcp, vd), mask=cell)
        tl.debug_barrier()


@triton.jit
def _algebra_posterior_kernel(
    em_ptr,
    in_len_ptr,
    tg_len_ptr,
    alpha_ptr,
    beta_ptr,
    gscale_ptr,
    grad_ptr,  # (N, T, S1), zero on entry
    w_ptr,  # (4,) weights in canonical order, em's dtype
    T,
    S1,
    FA: tl.constexpr,
    FCT: tl.constexpr,
    FCP: tl.constexpr,
    FD: tl.constexpr,
    CAUSAL: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    j = tl.program_id(1) * BLOCK_T + 1 + tl.arange(0, BLOCK_T)  # columns 1..m
    b, m, n = _lengths(in_len_ptr, tg_len_ptr)
    t1 = T + 1
    wa, wct, wcp, wd = _load_weights(w_ptr)
    em_b = em_ptr + b * T * S1
    al_b = alpha_ptr + b * S1 * t1
    be_b = beta_ptr + b * S1 * t1
    gr_b = grad_ptr + b * T * S1
    neg = float("-inf")
    z = tl.load(al_b + n * t1 + m)
    g = tl.load(gscale_ptr + b)
    col = j <= m
    # every exponent below is -inf or finite (alpha, beta are; loads outside give -inf),
    # so a weight 0 contributes exactly 0 and no NaN arises
    feasible = (z > neg) & (g != 0.0)
    if feasible:
        eb = tl.load(em_b + (j - 1) * S1, mask=col, other=0.0)
        blank_acc = tl.zeros((BLOCK_T,), dtype=em_ptr.dtype.element_ty)
        for i in range(0, n + 1):
            base = tl.load(be_b + i * t1 + j, mask=col, other=neg) - z
            a_left = tl.load(al_b + i * t1 + (j - 1), mask=col, other=neg)
            if FD:
                p = tl.exp(a_left + _scaled(wd, eb) + base)
                blank_acc += wd * p  # 0 outside the columns: loads there give -inf
            if i >= 1:
                cok = col
                if CAUSAL:
                    cok = col & (j <= i)
                e = tl.load(em_b + (j - 1) * S1 + i, mask=col, other=0.0)
                acc = tl.zeros((BLOCK_T,), dtype=em_ptr.dtype.element_ty)
                if FA:
                    a_diag = tl.load(al_b + (i - 1) * t1 + (j - 1), mask=col, other=neg)
                    acc += wa * tl.exp(a_diag + _scaled(wa, e) + base)
                if FCT:
                    acc += wct * tl.exp(a_left + _scaled(wct, e) + base)
                if FCP:
                    a_up = tl.load(al_b + (i - 1) * t1 + j, mask=col, other=neg)
                    acc += wcp * tl.exp(a_up + _scaled(wcp, e) + base)
                    # clone_prediction into (i, 0) reads p_max(0,1) = p_1: column j = 1's entry
                    first = col & (j == 1)
                    a0 = tl.load(al_b + (i - 1) * t1 + 0 * j, mask=first, other=neg)
                    b0 = tl.load(be_b + i * t1 + 0 * j, mask=first, other=neg)
                    p0 = tl.exp(a0 + _scaled(wcp, e) + b0 - z)
                    acc += tl.where(first, wcp * p0, 0.0)
                acc = tl.where(cok, acc, 0.0)
                tl.store(gr_b + (j - 1) * S1 + i, -g * acc, mask=col)
        tl.store(gr_b + (j - 1) * S1, -g * blank_acc, mask=col)


@triton.jit
def _backtrack_kernel(
    codes_ptr,  # (N, S1, T+1) int8
    in_len_ptr,
    tg_len_ptr,
    di_ptr,  # (5,) source offsets by move code, from the spec table
    dj_ptr,
    steps_ptr,  # (N, L) int64: codes from the end backwards, 0 after the path
    si_ptr,
    sj_ptr,
    length_ptr,  # (N,) int64, -1 where (n, m) is unreachable
    S1,
    T,
    L,
    C_NONE: tl.constexpr,
):
    b, m, n = _lengths(in_len_ptr, tg_len_ptr)
    t1 = T + 1
    cd_b = codes_ptr + b * S1 * t1
    end = tl.load(cd_b + n * t1 + m).to(tl.int64)
    reachable = (end != C_NONE) | ((n == 0) & (m == 0))
    i = n
    j = m
    k = n * 0
    for _ in range(0, n + m):
        if reachable & ((i > 0) | (j > 0)):
            code = tl.load(cd_b + i * t1 + j).to(tl.int64)
            tl.store(steps_ptr + b * L + k, code)
            tl.store(si_ptr + b * L + k, i)
            tl.store(sj_ptr + b * L + k, j)
            k += 1
            i = i - tl.load(di_ptr + code)
            j = j - tl.load(dj_ptr + code)
    tl.store(length_ptr + b, tl.where(reachable, k, -1))


def _flags(objective: Objective) -> dict[str, bool]:
    fa, fct, fcp, fd = objective.flags
    return dict(FA=fa, FCT=fct, FCP=fcp, FD=fd)


def _weights(objective: Objective, em: torch.Tensor) -> torch.Tensor:
    # in em's dtype (float64): a weight such as delta = 0.3 keeps every bit, as in numba
    return torch.tensor(objective.weights, dtype=em.dtype, device=em.device)


def _no_fma() -> dict[str, bool]:
    # ``alpha + w·e`` rounded as numba rounds it (a mul, then an add; no fused multiply-add),
    # so that exact ties between moves, and hence best paths, are the same on the GPU
    return {} if interpreted() else {"enable_fp_fusion": False}


def algebra_forward(
    em: torch.Tensor, in_len: torch.Tensor, tg_len: torch.Tensor, objective: Objective
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(loss (N,), alpha (N, S+1, T+1), codes int8 or None)``; cells outside a grid unset."""
    nb, tmax, s1 = em.shape
    em = em.contiguous()
    use_max = objective.aggregate == "max"
    alpha = torch.empty((nb, s1, tmax + 1), dtype=em.dtype, device=em.device)
    codes = torch.empty((nb, s1, tmax + 1) if use_max else (1,), dtype=torch.int8, device=em.device)
    loss = torch.empty(nb, dtype=em.dtype, device=em.device)
    if nb:
        _algebra_forward_kernel[(nb,)](
            em,
            in_len,
            tg_len,
            alpha,
            codes,
            loss,
            _weights(objective, em),
            tmax,
            s1,
            CAUSAL=objective.causal,
            USE_MAX=use_max,
            C_ALIGN=MOVE_ALIGN,
            C_CT=MOVE_CLONE_TARGET,
            C_CP=MOVE_CLONE_PREDICTION,
            C_D=MOVE_DELIMITER,
            C_NONE=MOVE_NONE,
            BLOCK=_block(s1),
            **_flags(objective),
            **_no_fma(),
        )
    return loss, alpha, (codes if use_max else None)


def algebra_backward_sum(
    em: torch.Tensor,
    in_len: torch.Tensor,
    tg_len: torch.Tensor,
    objective: Objective,
    alpha: torch.Tensor,
    gscale: torch.Tensor,
) -> torch.Tensor:
    """Gradient of ``gscale · (−logZ)`` w.r.t. ``em``: ``(N, T, S+1)``; zero where infeasible."""
    nb, tmax, s1 = em.shape
    em = em.contiguous()
    beta = torch.empty_like(alpha)
    grad = torch.zeros_like(em)
    if nb == 0:
        return grad
    fw = _flags(objective)
    w = _weights(objective, em)
    _algebra_beta_kernel[(nb,)](
        em, in_len, tg_len, beta, w, tmax, s1, CAUSAL=objective.causal, BLOCK=_block(s1), **fw
    )
    block_t = _block(tmax, 128)
    _algebra_posterior_kernel[(nb, triton.cdiv(tmax, block_t))](
        em,
        in_len,
        tg_len,
        alpha,
        beta,
        gscale.to(em.dtype).contiguous(),
        grad,
        w,
        tmax,
        s1,
        CAUSAL=objective.causal,
        BLOCK_T=block_t,
        **fw,
    )
    return grad


def backtrack(
    codes: torch.Tensor, in_len: torch.Tensor, tg_len: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best paths from move codes, as :func:`.torch_vec.backtrack`: ``(steps, si, sj, length)``."""
    nb, s1, t1 = codes.shape
    dev = codes.device
    max_len = max(s1 + t1 - 2, 1)
    steps = torch.zeros((nb, max_len), dtype=torch.int64, device=dev)
    si = torch.zeros_like(steps)
    sj = torch.zeros_like(steps)
    length = torch.empty(nb, dtype=torch.int64, device=dev)
    if nb:
        di = torch.tensor(MOVE_DI, dtype=torch.int64, device=dev)
        dj = torch.tensor(MOVE_DJ, dtype=torch.int64, device=dev)
        _backtrack_kernel[(nb,)](
            codes,
            in_len,
            tg_len,
            di,
            dj,
            steps,
            si,
            sj,
            length,
            s1,
            t1 - 1,
            max_len,
            C_NONE=MOVE_NONE,
        )
    return steps, si, sj, length


# --------------------------------------------------------------------------------------
# real CTC on the extended label sequence ε y1 ε y2 … yn ε
# --------------------------------------------------------------------------------------


@triton.jit
def _ctc_forward_kernel(
    em_ptr,  # (N, T, S1)
    tg_ptr,  # (N, S) int64 (S >= 1)
    in_len_ptr,
    tg_len_ptr,
    alpha_ptr,  # (N, T, NS)
    logz_ptr,
    T,
    S1,
    S,
    NS,
    BLOCK: tl.constexpr,
):
    b, m, n = _lengths(in_len_ptr, tg_len_ptr)
    ns = 2 * n + 1
    em_b = em_ptr + b * T * S1
    al_b = alpha_ptr + b * T * NS
    tg_b = tg_ptr + b * S
    neg = float("-inf")
    for t in range(0, m):
        for s0 in range(0, ns, BLOCK):
            s = s0 + tl.arange(0, BLOCK)
            live = s < ns
            emit = tl.where(s % 2 == 0, 0, (s + 1) // 2)
            e = tl.load(em_b + t * S1 + emit, mask=live, other=0.0)
            if t == 0:
                val = tl.where(live & (s < 2), e, neg)
            else:
                k = (s + 1) // 2  # 1-based label position of odd states
                lab = tl.load(tg_b + k - 1, mask=live & (s % 2 == 1), other=-1)
                prev_lab = tl.load(tg_b + k - 2, mask=live & (s % 2 == 1) & (s >= 3), other=-1)
                skip = (s % 2 == 1) & (s >= 3) & (lab != prev_lab)
                a0 = tl.load(al_b + (t - 1) * NS + s, mask=live, other=neg)
                a1 = tl.load(al_b + (t - 1) * NS + s - 1, mask=live & (s >= 1), other=neg)
                a2 = tl.load(al_b + (t - 1) * NS + s - 2, mask=live & skip, other=neg)
                acc = _lse3(a0, a1, a2)
                val = tl.where(acc == neg, neg, acc + e)
            tl.store(al_b + t * NS + s, val, mask=live)
        tl.debug_barrier()
    last = tl.load(al_b + (m - 1) * NS + 2 * n)
    prev = tl.load(al_b + (m - 1) * NS + 2 * n - 1, mask=n >= 1, other=neg)
    mx = tl.maximum(last, prev)
    safe = tl.where(mx == neg, 0.0, mx)
    tl.store(logz_ptr + b, safe + tl.log(tl.exp(last - safe) + tl.exp(prev - safe)))


@triton.jit
def _ctc_backward_kernel(
    em_ptr,
    tg_ptr,
    in_len_ptr,
    tg_len_ptr,
    alpha_ptr,  # (N, T, NS)
    logz_ptr,
    gscale_ptr,
    beta_ptr,  # (N, 2, NS) scratch, rolling over time
    grad_ptr,  # (N, T, S1), zero on entry
    T,
    S1,
    S,
    NS,
    BLOCK: tl.constexpr,
):
    b, m, n = _lengths(in_len_ptr, tg_len_ptr)
    ns = 2 * n + 1
    z = tl.load(logz_ptr + b)
    g = tl.load(gscale_ptr + b)
    em_b = em_ptr + b * T * S1
    al_b = alpha_ptr + b * T * NS
    be_b = beta_ptr + b * 2 * NS
    tg_b = tg_ptr + b * S
    gr_b = grad_ptr + b * T * S1
    neg = float("-inf")
    feasible = (z > neg) & (g != 0.0)
    if feasible:
        for tt in range(0, m):
            t = m - 1 - tt
            cur = be_b + (t % 2) * NS
            nxt = be_b + ((t + 1) % 2) * NS
            blank_acc = tl.zeros((BLOCK,), dtype=em_ptr.dtype.element_ty)
            for s0 in range(0, ns, BLOCK):
                s = s0 + tl.arange(0, BLOCK)
                live = s < ns
                if t == m - 1:
                    last = live & ((s == 2 * n) | (s == 2 * n - 1))
                    # both branches must agree on the dtype for the compiler (not the interpreter)
                    bt = tl.where(last, 0.0, neg).to(em_ptr.dtype.element_ty)
                else:
                    # beta excludes the emission at t: successors s, s+1, s+2 at t+1
                    e0 = tl.load(
                        em_b + (t + 1) * S1 + tl.where(s % 2 == 0, 0, (s + 1) // 2),
                        mask=live,
                        other=0.0,
                    )
                    s1_ = s + 1
                    e1 = tl.load(
                        em_b + (t + 1) * S1 + tl.where(s1_ % 2 == 0, 0, (s1_ + 1) // 2),
                        mask=live & (s1_ < ns),
                        other=0.0,
                    )
                    s2 = s + 2
                    k2 = (s2 + 1) // 2
                    lab = tl.load(tg_b + k2 - 1, mask=live & (s2 < ns) & (s2 % 2 == 1), other=-1)
                    prev_lab = tl.load(
                        tg_b + k2 - 2, mask=live & (s2 < ns) & (s2 % 2 == 1), other=-1
                    )
                    skip = (s2 < ns) & (s2 % 2 == 1) & (lab != prev_lab)
                    e2 = tl.load(em_b + (t + 1) * S1 + k2, mask=live & skip, other=0.0)
                    b0 = tl.load(nxt + s, mask=live, other=neg)
                    b1 = tl.load(nxt + s1_, mask=live & (s1_ < ns), other=neg)
                    b2 = tl.load(nxt + s2, mask=live & skip, other=neg)
                    bt = _lse3(b0 + e0, b1 + e1, b2 + e2)
                bt = tl.where(live, bt, neg)
                a = tl.load(al_b + t * NS + s, mask=live, other=neg)
                gamma = tl.where(live & (bt > neg) & (a > neg), tl.exp(a + bt - z), 0.0)
                odd = live & (s % 2 == 1)
                tl.store(gr_b + t * S1 + (s + 1) // 2, -g * gamma, mask=odd)
                blank_acc += tl.where(odd, 0.0, gamma)
                tl.store(cur + s, bt, mask=live)
            tl.store(gr_b + t * S1, -g * tl.sum(blank_acc, axis=0))
            tl.debug_barrier()


def _ctc_targets(targets: torch.Tensor) -> torch.Tensor:
    nb = targets.shape[0]
    if targets.shape[1] == 0:
        return torch.zeros((nb, 1), dtype=torch.int64, device=targets.device)
    return targets.to(torch.int64).contiguous()


def ctc_forward(
    em: torch.Tensor, targets: torch.Tensor, in_len: torch.Tensor, tg_len: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(alpha (N, T, 2S+1), logZ (N,))``."""
    nb, tmax, s1 = em.shape
    em = em.contiguous()
    tg = _ctc_targets(targets)
    ns = 2 * (s1 - 1) + 1
    alpha = torch.empty((nb, tmax, ns), dtype=em.dtype, device=em.device)
    logz = torch.empty(nb, dtype=em.dtype, device=em.device)
    if nb:
        _ctc_forward_kernel[(nb,)](
            em, tg, in_len, tg_len, alpha, logz, tmax, s1, tg.shape[1], ns, BLOCK=_block(ns)
        )
    return alpha, logz


def ctc_backward(
    em: torch.Tensor,
    targets: torch.Tensor,
    in_len: torch.Tensor,
    tg_len: torch.Tensor,
    alpha: torch.Tensor,
    logz: torch.Tensor,
    gscale: torch.Tensor,
) -> torch.Tensor:
    """Gradient of ``gscale · (−log p(y|x))`` w.r.t. ``em (N, T, S+1)``; zero where infeasible."""
    nb, tmax, s1 = em.shape
    em = em.contiguous()
    tg = _ctc_targets(targets)
    ns = alpha.shape[2]
    grad = torch.zeros_like(em)
    if nb:
        beta = torch.empty((nb, 2, ns), dtype=em.dtype, device=em.device)
        _ctc_backward_kernel[(nb,)](
            em,
            tg,
            in_len,
            tg_len,
            alpha,
            logz.contiguous(),
            gscale.to(em.dtype).contiguous(),
            beta,
            grad,
            tmax,
            s1,
            tg.shape[1],
            ns,
            BLOCK=_block(ns),
        )
    return grad


# --------------------------------------------------------------------------------------
# from logits: logsumexp per row, and the dense gradient written once
# --------------------------------------------------------------------------------------


@triton.jit
def _row_logsumexp_kernel(x_ptr, lse_ptr, V, ACC: tl.constexpr, BLOCK_V: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = x_ptr + row * V
    neg = float("-inf")
    run_max = tl.full((BLOCK_V,), neg, ACC)
    run_sum = tl.zeros((BLOCK_V,), dtype=ACC)
    for v0 in range(0, V, BLOCK_V):
        offs = v0 + tl.arange(0, BLOCK_V)
        x = tl.load(base + offs, mask=offs < V, other=neg).to(ACC)
        new_max = tl.maximum(run_max, x)
        safe = tl.where(new_max == neg, 0.0, new_max)
        run_sum = run_sum * tl.exp(run_max - safe) + tl.exp(x - safe)
        run_max = new_max
    top = tl.max(run_max, axis=0)
    safe_top = tl.where(top == neg, 0.0, top)
    total = tl.sum(run_sum * tl.exp(run_max - safe_top), axis=0)
    tl.store(lse_ptr + row, safe_top + tl.log(total))


@triton.jit
def _softmax_grad_kernel(
    x_ptr, lse_ptr, gsum_ptr, in_len_ptr, grad_ptr, T, V, ACC: tl.constexpr, BLOCK_V: tl.constexpr
):
    row = tl.program_id(0).to(tl.int64)
    b = row // T
    t = row % T
    base = row * V
    live = t < tl.load(in_len_ptr + b)  # padding rows: exactly zero, whatever they hold
    lse = tl.load(lse_ptr + row)
    gs = tl.load(gsum_ptr + row)
    for v0 in range(0, V, BLOCK_V):
        offs = v0 + tl.arange(0, BLOCK_V)
        mask = offs < V
        x = tl.load(x_ptr + base + offs, mask=mask, other=0.0).to(ACC)
        val = tl.where(live, -gs * tl.exp(x - lse), 0.0)
        tl.store(grad_ptr + base + offs, val.to(grad_ptr.dtype.element_ty), mask=mask)


_TL_DTYPE = {torch.float32: tl.float32, torch.float64: tl.float64}


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def emissions_from_logits(
    logits: torch.Tensor, idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``em[b, t, k] = log_softmax(logits[b, t])[idx[b, k]]`` in float64, and the row ``lse``.

    ``logits (N, T, V)`` any float dtype (reduced in float32, float64 stays float64),
    ``idx (N, K)``.
    """
    nb, tmax, ncls = logits.shape
    x = logits.contiguous()
    acc = _acc_dtype(x)
    lse = torch.empty((nb, tmax), dtype=acc, device=x.device)
    if nb * tmax:
        _row_logsumexp_kernel[(nb * tmax,)](x, lse, ncls, ACC=_TL_DTYPE[acc], BLOCK_V=_block(ncls))
    k = idx.shape[1]
    picked = x.gather(2, idx.view(nb, 1, k).expand(nb, tmax, k)).to(acc)
    em = (picked - lse.unsqueeze(2)).to(torch.float64)
    return em, lse


def logits_gradient(
    logits: torch.Tensor,
    lse: torch.Tensor,
    idx: torch.Tensor,
    grad_em: torch.Tensor,
    in_len: torch.Tensor,
) -> torch.Tensor:
    """``d/dlogits = scatter(g) − softmax · Σg`` per row, written once; rows ``t ≥ m`` are 0."""
    nb, tmax, ncls = logits.shape
    x = logits.contiguous()
    acc = _acc_dtype(x)
    g = grad_em.to(acc)
    gsum = g.sum(dim=2).contiguous()  # (N, T)
    grad = torch.empty_like(x)
    if nb * tmax:
        _softmax_grad_kernel[(nb * tmax,)](
            x, lse, gsum, in_len, grad, tmax, ncls, ACC=_TL_DTYPE[acc], BLOCK_V=_block(ncls)
        )
    k = idx.shape[1]
    grad.scatter_add_(2, idx.view(nb, 1, k).expand(nb, tmax, k), g.to(grad.dtype))
    return grad


def interpreted() -> bool:
    """Whether these kernels run under Triton's interpreter (``TRITON_INTERPRET=1`` at import)."""
    return type(_algebra_forward_kernel).__name__ == "InterpretedFunction"
