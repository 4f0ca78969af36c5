"""Triton backend: the dynamic programs as GPU kernels (also runs under Triton's interpreter).

Layout as :mod:`.numba_cpu` and :mod:`.torch_vec`: gathered emissions ``em (N, T, S+1)``
(column 0 = blank, column ``i`` = ``y_i``), grids ``(N, S+1, T+1)`` of cells ``(i, j)``.

Organisation (``docs/gpu.md``), one launch per line:

- From logits, forward: one program per row ``(b, t)`` computes the row's ``logsumexp``
  (online, tiles of the vocabulary, any strides) and gathers the ``S+1`` emissions.
  Backward: one program per row writes ``−softmax · Σg`` over the vocabulary and, after a
  barrier, the gathered entries ``−softmax · Σg + g`` (duplicate ids summed in registers,
  no atomics); rows ``t ≥ m`` are exactly 0.
- Operator algebra, forward: one program per sequence walks the anti-diagonals
  ``d = i + j`` of its own grid (``i ≤ n``, ``j ≤ m``), a diagonal in tiles of ``BLOCK``
  cells; ``tl.debug_barrier()`` orders one diagonal's stores before the next one's loads.
  Max stores the move code of the winner (canonical order, strict ``>``: the earlier move
  keeps an exact tie, as numba), sum a 4-way logsumexp. For max the same program then walks
  the back-pointers from ``(n, m)`` (the *tail*): the best path's weighted move counts on
  the emissions (what the backward needs), or the path itself (best alignments).
- Max backward: one elementwise pass ``counts · g`` (NaN where there is no path).
- Sum backward: the mirror recursion (``beta``) over the diagonals in reverse, then one
  program per (sequence, tile of columns ``j``) turns ``alpha + score + beta`` into
  posteriors and writes each emission's gradient once (no atomics, no zero fill needed).
- Real CTC: one program per sequence steps over time, states in tiles; the backward
  fuses ``beta`` with the gradient (label states write their column, blank states sum).

Every launch goes through :func:`_launch`: under the tensors' CUDA device, counted for
:mod:`latalign.align._counting`. Sizes and lengths are never specialised on
(``do_not_specialize``), and tiles come from a few buckets (:data:`DP_BUCKETS`,
:data:`VOCAB_BUCKETS`), so a training run with variable-length batches compiles a handful
of variants per kernel (``benchmarks/triton_variants.py``). Offsets inside a sequence or a
row are int32; only the per-sequence and per-row bases are int64.

No cell outside a sequence's grid and no frame ``t ≥ m`` is ever loaded into a dynamic
program: masks replace them by the constant ``-inf`` (never a finite "-1e5").
Every dynamic program computes in the dtype of ``em`` (float64 from :mod:`..losses`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import triton
import triton.language as tl

from .._counting import note_launch, paused
from ..objective import (
    FRAME_J_AT_LEAST_1,
    MOVE_BY_NAME,
    MOVE_NONE,
    MOVES,
    TARGET,
    Objective,
)
from .base import AlgebraState, CTCState, constant, torch_emissions, torch_emissions_backward
from .torch_vec import paths_from_steps

#: Largest tile (cells of a diagonal, CTC states, columns, vocabulary entries) per step;
#: longer ranges loop over tiles. Tests lower it to exercise the tiling on tiny inputs.
MAX_BLOCK = 1024
#: Tile buckets: a diagonal, CTC's states or a block of frames take the smallest bucket
#: that holds them (the largest, looping, beyond); the vocabulary is read in 128 or 1024.
DP_BUCKETS = (32, 128, 512)
VOCAB_BUCKETS = (128, 1024)
#: Gathered columns (blank + targets) handled per step by the row kernels.
K_TILE = 32
#: Elements per program of the elementwise max backward.
EW_BLOCK = 1024


def _bucket(size: int, buckets: tuple[int, ...] = DP_BUCKETS) -> int:
    """The smallest bucket holding ``size`` (the largest bucket beyond), at most ``MAX_BLOCK``."""
    for b in buckets:
        if size <= b:
            return min(b, MAX_BLOCK)
    return min(buckets[-1], MAX_BLOCK)


def _warps(block: int, per_warp: int = 32) -> int:
    """Warps for a tile: one warp per ``per_warp`` lanes, 1 … 8 (a short diagonal gets one
    warp, whose barrier is nearly free)."""
    return max(1, min(8, block // per_warp))


# --------------------------------------------------------------------------------------
# the launcher: device guard, launch counting, recording (benchmarks/triton_variants.py)
# --------------------------------------------------------------------------------------

_RECORDER: list[Callable | None] = [None]


@contextmanager
def record_launches(fn: Callable, *, execute: bool = False) -> Iterator[None]:
    """Call ``fn(kernel, grid, args, kwargs)`` for every launch inside the block; with
    ``execute=False`` the kernels do not run (outputs stay uninitialised): enough to
    enumerate what a run would compile, on any machine."""

    def record(kernel, grid, args, kwargs):
        fn(kernel, grid, args, kwargs)
        return execute

    _RECORDER[0] = record
    try:
        yield
    finally:
        _RECORDER[0] = None


def kernel_name(kernel) -> str:
    fn = getattr(kernel, "fn", kernel)
    return fn.__name__


_TYPE_NAMES = {
    torch.float64: "fp64",
    torch.float32: "fp32",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.int64: "i64",
    torch.int32: "i32",
    torch.int8: "i8",
    torch.bool: "i1",
}


def launch_signature(kernel, args: tuple, kwargs: dict) -> tuple[dict, dict, dict]:
    """A recorded launch as the compiler sees it: ``(signature, constexprs, options)`` —
    parameter name -> ``"*fp64"``/``"i32"``/``"constexpr"``…, constexpr values, and the
    launch options (``num_warps``, …). Used to compile every launch ahead of time
    (``tests/align/triton_aot.py``) and to enumerate variants
    (``benchmarks/triton_variants.py``)."""
    names = list(getattr(kernel, "arg_names", None) or kernel.fn.__code__.co_varnames)
    bound = dict(zip(names, args)) | {k: v for k, v in kwargs.items() if k in names}
    signature: dict[str, str] = {}
    constexprs: dict[str, object] = {}
    for name in names:
        value = bound[name]
        if name in kwargs:
            signature[name] = "constexpr"
            constexprs[name] = value
        elif isinstance(value, torch.Tensor):
            signature[name] = "*" + _TYPE_NAMES[value.dtype]
        elif isinstance(value, bool):
            signature[name] = "i1"
        elif isinstance(value, int):
            signature[name] = "i32" if -(2**31) <= value < 2**31 else "i64"
        else:
            signature[name] = "fp32"
    options = {k: v for k, v in kwargs.items() if k not in names}
    return signature, constexprs, options


def _launch(kernel, grid: tuple[int, ...], device: torch.device, *args, **kwargs) -> None:
    """Launch ``kernel[grid](*args, **kwargs)`` under ``device`` (the tensors' GPU, not the
    current one), counted for :func:`~latalign.align._counting.count_host_syncs`."""
    note_launch(kernel_name(kernel))
    record = _RECORDER[0]
    if record is not None and not record(kernel, grid, args, kwargs):
        return
    if device.type == "cuda":
        with torch.cuda.device(device):
            kernel[grid](*args, **kwargs)
    else:  # the interpreter copies arguments through torch: not the caller's work
        with paused():
            kernel[grid](*args, **kwargs)


def _compiled_only(**options) -> dict:
    return {} if interpreted() else options


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
    # this program's sequence b and its lengths (int32): m frames, n targets
    b = tl.program_id(0)
    return b, tl.load(in_len_ptr + b).to(tl.int32), tl.load(tg_len_ptr + b).to(tl.int32)


@triton.jit
def _load_weights(w_ptr):
    # the four move weights, canonical order
    return tl.load(w_ptr + 0), tl.load(w_ptr + 1), tl.load(w_ptr + 2), tl.load(w_ptr + 3)


@triton.jit
def _algebra_program(in_len_ptr, tg_len_ptr, w_ptr, em_ptr, T, S1):
    # an algebra kernel's program: its sequence b (and b as int64 for offsets), its lengths,
    # the four move weights and the sequence's rows of em (T, S1)
    b, m, n = _lengths(in_len_ptr, tg_len_ptr)
    wa, wct, wcp, wd = _load_weights(w_ptr)
    b64 = b.to(tl.int64)
    return b, b64, m, n, wa, wct, wcp, wd, em_ptr + b64 * T * S1


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


@triton.jit
def _cell(i, j, t1, S1, ROLL: tl.constexpr):
    # the offset of cell (i, j) in a sequence's alpha: the whole grid (S1, t1), or (ROLL, max
    # only) three rolling anti-diagonals (3, S1), diagonal d = i + j in slot d % 3
    if ROLL:
        off = ((i + j) % 3) * S1 + i
    else:
        off = i * t1 + j
    return off


@triton.jit
def _by_code(code, C_A: tl.constexpr, C_CT: tl.constexpr, C_CP: tl.constexpr, a, ct, cp, d):
    # the entry of move ``code`` in a per-move table given as four values (canonical order)
    return tl.where(code == C_A, a, tl.where(code == C_CT, ct, tl.where(code == C_CP, cp, d)))


# --------------------------------------------------------------------------------------
# operator algebra
# --------------------------------------------------------------------------------------


@triton.jit(do_not_specialize=["T", "S1", "L"])
def _algebra_forward_kernel(
    em_ptr,  # (N, T, S1)
    in_len_ptr,
    tg_len_ptr,
    alpha_ptr,  # (N, S1, T+1); max: (N, 3, S1), three rolling anti-diagonals
    codes_ptr,  # (N, S1, T+1) int8 (max only)
    loss_ptr,  # (N,) -alpha[n, m]
    w_ptr,  # (4,) weights in canonical order, em's dtype
    cnt_ptr,  # (N, T, S1): minus the best path's weighted move counts (TAIL == 1)
    steps_ptr,  # (N, L) int8: the best path's codes from the end backwards (TAIL == 2)
    plen_ptr,  # (N,) int32: its length, -1 where (n, m) is unreachable (TAIL == 2)
    T,
    S1,
    L,
    FA: tl.constexpr, FCT: tl.constexpr, FCP: tl.constexpr, FD: tl.constexpr,
    CAUSAL: tl.constexpr,
    USE_MAX: tl.constexpr,
    TAIL: tl.constexpr,  # 0: loss only, 1: move counts (max backward), 2: the path
    C_ALIGN: tl.constexpr, C_CT: tl.constexpr, C_CP: tl.constexpr, C_D: tl.constexpr,
    C_NONE: tl.constexpr,
    # the spec table (objective.MOVES), per move: source offsets, emits y_i, reads p_max(j,1)
    DI_A: tl.constexpr, DI_CT: tl.constexpr, DI_CP: tl.constexpr, DI_D: tl.constexpr,
    DJ_A: tl.constexpr, DJ_CT: tl.constexpr, DJ_CP: tl.constexpr, DJ_D: tl.constexpr,
    TG_A: tl.constexpr, TG_CT: tl.constexpr, TG_CP: tl.constexpr, TG_D: tl.constexpr,
    F1_A: tl.constexpr, F1_CT: tl.constexpr, F1_CP: tl.constexpr, F1_D: tl.constexpr,
    BLOCK: tl.constexpr,
):  # fmt: skip
    b, b64, m, n, wa, wct, wcp, wd, em_b = _algebra_program(
        in_len_ptr, tg_len_ptr, w_ptr, em_ptr, T, S1
    )
    t1 = T + 1
    per_seq = S1 * t1
    if USE_MAX:
        per_seq = S1 * 3
    al_b = alpha_ptr + b64 * per_seq
    cd_b = codes_ptr + b64 * S1 * t1
    neg = float("-inf")
    cnt_b = cnt_ptr + b64 * T * S1
    if USE_MAX and TAIL == 1:  # the counts start at 0 (the tail writes the path's entries)
        for c0 in range(0, T * S1, BLOCK):
            c = c0 + tl.arange(0, BLOCK)
            tl.store(cnt_b + c, tl.zeros((BLOCK,), dtype=em_ptr.dtype.element_ty), mask=c < T * S1)
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
            a_diag = tl.load(
                al_b + _cell(i - 1, j - 1, t1, S1, USE_MAX), mask=ipos & jpos, other=neg
            )
            a_left = tl.load(al_b + _cell(i, j - 1, t1, S1, USE_MAX), mask=jpos, other=neg)
            a_up = tl.load(al_b + _cell(i - 1, j, t1, S1, USE_MAX), mask=ipos, other=neg)
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
                tl.store(al_b + _cell(i, j, t1, S1, USE_MAX), best, mask=cell)
                tl.store(cd_b + i * t1 + j, code, mask=cell)
            else:
                tl.store(al_b + i * t1 + j, _lse4(va, vct, vcp, vd), mask=cell)
        tl.debug_barrier()
    tl.store(loss_ptr + b, -tl.load(al_b + _cell(n, m, t1, S1, USE_MAX)))
    if USE_MAX and TAIL > 0:
        # the tail: walk the back-pointers from (n, m), reading each move off the spec table
        end = tl.load(cd_b + n * t1 + m).to(tl.int32)
        reachable = (end != C_NONE) | ((n == 0) & (m == 0))
        i = n
        j = m
        k = n * 0
        prev = n * 0 - 1  # the emission offset being accumulated (-1: none yet)
        acc = wa * 0.0
        for _ in range(0, n + m):
            if reachable & ((i > 0) | (j > 0)):
                code = tl.load(cd_b + i * t1 + j).to(tl.int32)
                if TAIL == 1:
                    # the emission the move scored: (frame, column) of em
                    row = tl.where(
                        _by_code(code, C_ALIGN, C_CT, C_CP, TG_A, TG_CT, TG_CP, TG_D) != 0, i, 0
                    )
                    at1 = _by_code(code, C_ALIGN, C_CT, C_CP, F1_A, F1_CT, F1_CP, F1_D) != 0
                    col = tl.where(at1, tl.maximum(j, 1), j) - 1
                    w = _by_code(code, C_ALIGN, C_CT, C_CP, wa, wct, wcp, wd)
                    here = col * S1 + row
                    # two consecutive moves can score one emission (p_1 down column 0, then
                    # into column 1): sum them before the one store
                    if here == prev:
                        acc += w
                    else:
                        if prev >= 0:
                            tl.store(cnt_b + prev, -acc)
                        prev = here
                        acc = w
                else:
                    tl.store(steps_ptr + b64 * L + k, code.to(tl.int8))
                k += 1
                i = i - _by_code(code, C_ALIGN, C_CT, C_CP, DI_A, DI_CT, DI_CP, DI_D)
                j = j - _by_code(code, C_ALIGN, C_CT, C_CP, DJ_A, DJ_CT, DJ_CP, DJ_D)
        if TAIL == 1:
            if prev >= 0:
                tl.store(cnt_b + prev, -acc)
        else:
            tl.store(plen_ptr + b, tl.where(reachable, k, -1))


@triton.jit(do_not_specialize=["TS1", "SG"])
def _path_grad_kernel(cnt_ptr, loss_ptr, gscale_ptr, grad_ptr, TS1, SG, BLOCK: tl.constexpr):
    # grad = counts · g per sequence, NaN for a sequence with no path whose g != 0
    b = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < TS1
    base = b.to(tl.int64) * TS1
    g = tl.load(gscale_ptr + b * SG)
    bad = (tl.load(loss_ptr + b) == float("inf")) & (g != 0.0)
    c = tl.load(cnt_ptr + base + offs, mask=mask, other=0.0)
    tl.store(grad_ptr + base + offs, tl.where(bad, float("nan"), c * g), mask=mask)


@triton.jit(do_not_specialize=["T", "S1"])
def _algebra_beta_kernel(
    em_ptr,
    in_len_ptr,
    tg_len_ptr,
    beta_ptr,  # (N, S1, T+1)
    w_ptr,  # (4,) weights in canonical order, em's dtype
    T,
    S1,
    FA: tl.constexpr, FCT: tl.constexpr, FCP: tl.constexpr, FD: tl.constexpr,
    CAUSAL: tl.constexpr,
    BLOCK: tl.constexpr,
):  # fmt: skip
    b, b64, m, n, wa, wct, wcp, wd, em_b = _algebra_program(
        in_len_ptr, tg_len_ptr, w_ptr, em_ptr, T, S1
    )
    t1 = T + 1
    be_b = beta_ptr + b64 * S1 * t1
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


@triton.jit(do_not_specialize=["T", "S1", "SG"])
def _algebra_posterior_kernel(
    em_ptr,
    in_len_ptr,
    tg_len_ptr,
    alpha_ptr,
    beta_ptr,
    gscale_ptr,
    grad_ptr,  # (N, T, S1): every entry of this program's frames is written
    w_ptr,  # (4,) weights in canonical order, em's dtype
    T,
    S1,
    SG,  # stride of gscale (0 when it is expanded)
    FA: tl.constexpr, FCT: tl.constexpr, FCP: tl.constexpr, FD: tl.constexpr,
    CAUSAL: tl.constexpr,
    BLOCK_T: tl.constexpr,
):  # fmt: skip
    j = tl.program_id(1) * BLOCK_T + 1 + tl.arange(0, BLOCK_T)  # columns 1..T
    b, b64, m, n, wa, wct, wcp, wd, em_b = _algebra_program(
        in_len_ptr, tg_len_ptr, w_ptr, em_ptr, T, S1
    )
    t1 = T + 1
    al_b = alpha_ptr + b64 * S1 * t1
    be_b = beta_ptr + b64 * S1 * t1
    gr_b = grad_ptr + b64 * T * S1
    neg = float("-inf")
    z = tl.load(al_b + n * t1 + m)
    g = tl.load(gscale_ptr + b * SG)
    frames = j <= T
    col = j <= m
    feasible = z > neg
    # first every entry of these frames: 0, or NaN for a sequence with no path (g != 0)
    fill = tl.where(feasible | (g == 0.0), 0.0, float("nan")).to(em_ptr.dtype.element_ty)
    zeros = tl.zeros((BLOCK_T,), dtype=em_ptr.dtype.element_ty) + fill
    for i in range(0, S1):
        tl.store(gr_b + (j - 1) * S1 + i, zeros, mask=frames)
    tl.debug_barrier()
    # every exponent below is -inf or finite (alpha, beta are; loads outside give -inf),
    # so a weight 0 contributes exactly 0 and no NaN arises
    if feasible & (g != 0.0):
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


def _flags(objective: Objective) -> dict[str, bool]:
    fa, fct, fcp, fd = objective.flags
    return dict(FA=fa, FCT=fct, FCP=fcp, FD=fd)


def _move_constexprs() -> dict[str, int]:
    """The spec table :data:`~latalign.align.objective.MOVES` as the kernels' constexprs."""
    out: dict[str, int] = {}
    for tag, op in zip(
        ("A", "CT", "CP", "D"), ("align", "clone_target", "clone_prediction", "delimiter")
    ):
        mv = MOVE_BY_NAME[op]
        out[f"DI_{tag}"] = mv.di
        out[f"DJ_{tag}"] = mv.dj
        out[f"TG_{tag}"] = int(mv.emits == TARGET)
        out[f"F1_{tag}"] = int(mv.frame == FRAME_J_AT_LEAST_1)
    codes = {mv.operator: mv.code for mv in MOVES}
    out.update(
        C_ALIGN=codes["align"],
        C_CT=codes["clone_target"],
        C_CP=codes["clone_prediction"],
        C_D=codes["delimiter"],
        C_NONE=MOVE_NONE,
    )
    return out


_MOVE_CONSTEXPRS = _move_constexprs()


def _weights(objective: Objective, em: torch.Tensor) -> torch.Tensor:
    # in em's dtype (float64): a weight such as delta = 0.3 keeps every bit, as in numba;
    # copied to the device once per objective (cached)
    return constant(objective.weights, em.dtype, em.device)


def _diag_block(s1: int, tmax: int) -> int:
    # a diagonal holds at most min(n, m) + 1 cells
    return _bucket(min(s1, tmax + 1))


def algebra_forward(
    em: torch.Tensor,
    in_len: torch.Tensor,
    tg_len: torch.Tensor,
    objective: Objective,
    *,
    tail: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, ...]]:
    """``(loss (N,), alpha, codes int8 or None, tail outputs)``: for sum, ``alpha (N, S+1, T+1)``
    (cells outside a grid unset); for max, ``None`` (three rolling anti-diagonals inside the
    call) and the move codes ``(N, S+1, T+1)``. ``tail`` (max only): 1 → ``(counts (N, T, S+1),)`` minus the best path's
    weighted move counts; 2 → ``(steps (N, L) int8, length (N,) int32)``, the best path's
    codes from the end backwards (−1: no path)."""
    nb, tmax, s1 = em.shape
    dev = em.device
    em = em.contiguous()
    use_max = objective.aggregate == "max"
    tail = tail if use_max else 0
    alpha = torch.empty(
        (nb, 3 if use_max else s1, s1 if use_max else tmax + 1), dtype=em.dtype, device=dev
    )
    codes = torch.empty((nb, s1, tmax + 1) if use_max else (1,), dtype=torch.int8, device=dev)
    loss = torch.empty(nb, dtype=em.dtype, device=dev)
    max_len = max(s1 - 1 + tmax, 1)
    cnt = torch.empty(em.shape if tail == 1 else (1,), dtype=em.dtype, device=dev)
    steps = torch.empty((nb, max_len) if tail == 2 else (1,), dtype=torch.int8, device=dev)
    plen = torch.empty(nb if tail == 2 else 1, dtype=torch.int32, device=dev)
    block = _diag_block(s1, tmax)
    if nb:
        _launch(
            _algebra_forward_kernel,
            (nb,),
            dev,
            em,
            in_len,
            tg_len,
            alpha,
            codes,
            loss,
            _weights(objective, em),
            cnt,
            steps,
            plen,
            tmax,
            s1,
            max_len,
            CAUSAL=objective.causal,
            USE_MAX=use_max,
            TAIL=tail,
            BLOCK=block,
            num_warps=_warps(block),
            **_MOVE_CONSTEXPRS,
            **_flags(objective),
            # ``alpha + w·e`` rounded as numba rounds it (a mul, then an add; no fused
            # multiply-add), so that exact ties between moves, and hence best paths, agree
            **_compiled_only(enable_fp_fusion=False),
        )
    outputs = {0: (), 1: (cnt,), 2: (steps, plen)}[tail]
    return loss, (None if use_max else alpha), (codes if use_max else None), outputs


def path_gradient(cnt: torch.Tensor, loss: torch.Tensor, gscale: torch.Tensor) -> torch.Tensor:
    """Max backward: ``counts · gscale`` per sequence, NaN where no path and ``gscale ≠ 0``."""
    nb = cnt.shape[0]
    ts1 = cnt.shape[1] * cnt.shape[2]
    grad = torch.empty_like(cnt)
    g = gscale.to(cnt.dtype)
    if nb and ts1:
        block = min(EW_BLOCK, MAX_BLOCK)
        _launch(
            _path_grad_kernel,
            (nb, triton.cdiv(ts1, block)),
            cnt.device,
            cnt,
            loss,
            g,
            grad,
            ts1,
            g.stride(0),
            BLOCK=block,
        )
    return grad


def algebra_backward_sum(
    em: torch.Tensor,
    in_len: torch.Tensor,
    tg_len: torch.Tensor,
    objective: Objective,
    alpha: torch.Tensor,
    gscale: torch.Tensor,
) -> torch.Tensor:
    """Gradient of ``gscale · (−logZ)`` w.r.t. ``em``: ``(N, T, S+1)``; NaN where there is
    no path and ``gscale ≠ 0``, else 0 for such a sequence."""
    nb, tmax, s1 = em.shape
    dev = em.device
    em = em.contiguous()
    beta = torch.empty_like(alpha)
    grad = torch.empty_like(em)
    if nb == 0 or tmax == 0:
        return grad
    fw = _flags(objective)
    w = _weights(objective, em)
    block = _diag_block(s1, tmax)
    _launch(
        _algebra_beta_kernel,
        (nb,),
        dev,
        em,
        in_len,
        tg_len,
        beta,
        w,
        tmax,
        s1,
        CAUSAL=objective.causal,
        BLOCK=block,
        num_warps=_warps(block),
        **fw,
    )
    block_t = _bucket(tmax, DP_BUCKETS[:2])
    g = gscale.to(em.dtype)
    _launch(
        _algebra_posterior_kernel,
        (nb, triton.cdiv(tmax, block_t)),
        dev,
        em,
        in_len,
        tg_len,
        alpha,
        beta,
        g,
        grad,
        w,
        tmax,
        s1,
        g.stride(0),
        CAUSAL=objective.causal,
        BLOCK_T=block_t,
        num_warps=_warps(block_t),
        **fw,
    )
    return grad


# --------------------------------------------------------------------------------------
# real CTC on the extended label sequence ε y1 ε y2 … yn ε
# --------------------------------------------------------------------------------------


@triton.jit(do_not_specialize=["T", "S1", "S", "NS"])
def _ctc_forward_kernel(
    em_ptr,  # (N, T, S1)
    tg_ptr,  # (N, ·) int64 targets, row stride S, unit column stride
    in_len_ptr,
    tg_len_ptr,
    alpha_ptr,  # (N, T, NS)
    loss_ptr,  # (N,) -log p(y|x)
    T,
    S1,
    S,
    NS,
    BLOCK: tl.constexpr,
):
    b, m, n = _lengths(in_len_ptr, tg_len_ptr)
    ns = 2 * n + 1
    b64 = b.to(tl.int64)
    em_b = em_ptr + b64 * T * S1
    al_b = alpha_ptr + b64 * T * NS
    tg_b = tg_ptr + b64 * S
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
    tl.store(loss_ptr + b, -(safe + tl.log(tl.exp(last - safe) + tl.exp(prev - safe))))


@triton.jit(do_not_specialize=["T", "S1", "S", "NS", "SG"])
def _ctc_backward_kernel(
    em_ptr,
    tg_ptr,
    in_len_ptr,
    tg_len_ptr,
    alpha_ptr,  # (N, T, NS)
    loss_ptr,  # (N,) -log p(y|x)
    gscale_ptr,
    beta_ptr,  # (N, 2, NS) scratch, rolling over time
    grad_ptr,  # (N, T, S1): every entry of the sequence is written
    T,
    S1,
    S,
    NS,
    SG,  # stride of gscale (0 when it is expanded)
    BLOCK: tl.constexpr,
):
    b, m, n = _lengths(in_len_ptr, tg_len_ptr)
    ns = 2 * n + 1
    z = -tl.load(loss_ptr + b)
    g = tl.load(gscale_ptr + b * SG)
    b64 = b.to(tl.int64)
    em_b = em_ptr + b64 * T * S1
    al_b = alpha_ptr + b64 * T * NS
    be_b = beta_ptr + b64 * 2 * NS
    tg_b = tg_ptr + b64 * S
    gr_b = grad_ptr + b64 * T * S1
    neg = float("-inf")
    feasible = z > neg
    # first every entry: 0, or NaN for a sequence with no path whose g != 0
    fill = tl.where(feasible | (g == 0.0), 0.0, float("nan")).to(em_ptr.dtype.element_ty)
    for t in range(0, T):
        for c0 in range(0, S1, BLOCK):
            c = c0 + tl.arange(0, BLOCK)
            tl.store(
                gr_b + t * S1 + c,
                tl.zeros((BLOCK,), dtype=em_ptr.dtype.element_ty) + fill,
                mask=c < S1,
            )
    tl.debug_barrier()
    if feasible & (g != 0.0):
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


def _rows(targets: torch.Tensor) -> torch.Tensor:
    # int64 with unit column stride (the view idx[:, 1:] that the losses pass is, uncopied)
    tg = targets.to(torch.int64)
    return tg if tg.stride(1) == 1 else tg.contiguous()


def ctc_forward(
    em: torch.Tensor, targets: torch.Tensor, in_len: torch.Tensor, tg_len: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(alpha (N, T, 2S+1), loss = −logZ (N,))``; ``targets (N, S ≥ 1)``."""
    nb, tmax, s1 = em.shape
    em = em.contiguous()
    tg = _rows(targets)
    ns = 2 * (s1 - 1) + 1
    alpha = torch.empty((nb, tmax, ns), dtype=em.dtype, device=em.device)
    loss = torch.empty(nb, dtype=em.dtype, device=em.device)
    block = _bucket(ns)
    if nb:
        _launch(
            _ctc_forward_kernel, (nb,), em.device, em, tg, in_len, tg_len, alpha, loss,
            tmax, s1, tg.stride(0), ns, BLOCK=block, num_warps=_warps(block),
        )  # fmt: skip
    return alpha, loss


def ctc_backward(
    em: torch.Tensor,
    targets: torch.Tensor,
    in_len: torch.Tensor,
    tg_len: torch.Tensor,
    alpha: torch.Tensor,
    loss: torch.Tensor,
    gscale: torch.Tensor,
) -> torch.Tensor:
    """Gradient of ``gscale · (−log p(y|x))`` w.r.t. ``em (N, T, S+1)``; NaN where there is
    no path and ``gscale ≠ 0``, else 0 for such a sequence."""
    nb, tmax, s1 = em.shape
    em = em.contiguous()
    tg = _rows(targets)
    ns = alpha.shape[2]
    grad = torch.empty_like(em)
    block = _bucket(ns)
    if nb:
        beta = torch.empty((nb, 2, ns), dtype=em.dtype, device=em.device)
        g = gscale.to(em.dtype)
        _launch(
            _ctc_backward_kernel, (nb,), em.device, em, tg, in_len, tg_len, alpha, loss, g,
            beta, grad, tmax, s1, tg.stride(0), ns, g.stride(0), BLOCK=block,
            num_warps=_warps(block),
        )  # fmt: skip
    return grad


# --------------------------------------------------------------------------------------
# from logits: one row kernel forward (logsumexp + gather), one row kernel backward
# --------------------------------------------------------------------------------------


@triton.jit
def _logits_row(x_ptr, T, SX_B, SX_T):
    # this program's row (b, t) of the logits (one program per row) and its first entry
    row = tl.program_id(0)
    b = row // T
    t = row % T
    return row, b, t, x_ptr + b.to(tl.int64) * SX_B + t.to(tl.int64) * SX_T


@triton.jit(do_not_specialize=["T", "V", "K", "SX_B", "SX_T"])
def _emissions_kernel(
    x_ptr,  # (N, T, V) logits, strides SX_B, SX_T, SX_V
    idx_ptr,  # (N, K) int64, ids < V
    em_ptr,  # (N, T, K) float64
    lse_ptr,  # (N, T) ACC
    T, V, K, SX_B, SX_T, SX_V,  # sizes, then the logits' strides
    ACC: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    row, b, t, base = _logits_row(x_ptr, T, SX_B, SX_T)
    neg = float("-inf")
    run_max = tl.full((BLOCK_V,), neg, ACC)
    run_sum = tl.zeros((BLOCK_V,), dtype=ACC)
    for v0 in range(0, V, BLOCK_V):
        offs = v0 + tl.arange(0, BLOCK_V)
        x = tl.load(base + offs * SX_V, mask=offs < V, other=neg).to(ACC)
        new_max = tl.maximum(run_max, x)
        safe = tl.where(new_max == neg, 0.0, new_max)
        run_sum = run_sum * tl.exp(run_max - safe) + tl.exp(x - safe)
        run_max = new_max
    top = tl.max(run_max, axis=0)
    safe_top = tl.where(top == neg, 0.0, top)
    lse = safe_top + tl.log(tl.sum(run_sum * tl.exp(run_max - safe_top), axis=0))
    tl.store(lse_ptr + row, lse)
    idx_b = idx_ptr + b.to(tl.int64) * K
    em_r = em_ptr + row.to(tl.int64) * K
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        mk = k < K
        ids = tl.load(idx_b + k, mask=mk, other=0)
        picked = tl.load(base + ids * SX_V, mask=mk, other=0.0).to(ACC)
        tl.store(em_r + k, (picked - lse).to(tl.float64), mask=mk)


@triton.jit(do_not_specialize=["T", "V", "K", "SX_B", "SX_T"])
def _logits_grad_kernel(
    x_ptr,  # (N, T, V) logits, strides SX_B, SX_T, SX_V
    lse_ptr,  # (N, T) ACC
    g_ptr,  # (N, T, K) float64: the gradient w.r.t. the emissions
    idx_ptr,  # (N, K) int64
    in_len_ptr,
    grad_ptr,  # (N, T, V) contiguous, the logits' dtype: every entry is written
    T, V, K, SX_B, SX_T, SX_V,  # sizes, then the logits' strides
    ACC: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    row, b, t, base = _logits_row(x_ptr, T, SX_B, SX_T)
    out = grad_ptr + row.to(tl.int64) * V
    g_r = g_ptr + row.to(tl.int64) * K
    idx_b = idx_ptr + b.to(tl.int64) * K
    live = t < tl.load(in_len_ptr + b)  # padding rows: exactly zero, whatever they hold
    lse = tl.load(lse_ptr + row)
    gs = tl.zeros((BLOCK_K,), dtype=ACC)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        gs += tl.load(g_r + k, mask=k < K, other=0.0).to(ACC)
    gsum = tl.sum(gs, axis=0)
    # the dense part -softmax · Σg, once over the vocabulary
    for v0 in range(0, V, BLOCK_V):
        offs = v0 + tl.arange(0, BLOCK_V)
        mask = offs < V
        x = tl.load(base + offs * SX_V, mask=mask, other=0.0).to(ACC)
        val = tl.where(live, -gsum * tl.exp(x - lse), 0.0)
        tl.store(out + offs, val.to(grad_ptr.dtype.element_ty), mask=mask)
    tl.debug_barrier()  # the gathered entries below overwrite some of those stores
    # the gathered entries: -softmax · Σg + (sum of g over the columns with that id); each
    # id is written once, by its first column (ids repeat: padding = blank, repeated words)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        mk = k < K
        ids = tl.load(idx_b + k, mask=mk, other=-1)
        g_tot = tl.zeros((BLOCK_K,), dtype=ACC)
        earlier = tl.zeros((BLOCK_K,), dtype=tl.int32)
        for k1 in range(0, K, BLOCK_K):
            k2 = k1 + tl.arange(0, BLOCK_K)
            mk2 = k2 < K
            ids2 = tl.load(idx_b + k2, mask=mk2, other=-2)
            g2 = tl.load(g_r + k2, mask=mk2, other=0.0).to(ACC)
            same = ids[:, None] == ids2[None, :]
            g_tot += tl.sum(tl.where(same, g2[None, :], 0.0), axis=1)
            before = same & (k2[None, :] < k[:, None])
            earlier += tl.sum(tl.where(before, 1, 0), axis=1)
        first = mk & (earlier == 0)
        x = tl.load(base + ids * SX_V, mask=first, other=0.0).to(ACC)
        val = tl.where(live, -gsum * tl.exp(x - lse) + g_tot, 0.0)
        tl.store(out + ids, val.to(grad_ptr.dtype.element_ty), mask=first)


_TL_DTYPE = {torch.float32: tl.float32, torch.float64: tl.float64}


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _row_view(logits: torch.Tensor) -> torch.Tensor:
    # strides are passed to the kernels; only a layout whose in-row offsets overflow int32
    # is copied first
    nb, tmax, ncls = logits.shape
    if abs(logits.stride(2)) * max(ncls, 1) >= 2**31:
        return logits.contiguous()
    return logits


def _launch_rows(kernel, x: torch.Tensor, k: int, *tensors: torch.Tensor) -> None:
    """A row kernel over the logits view ``x (N, T, V)``: one program per row, ``K = k``
    gathered columns, reduced in :func:`_acc_dtype`; no launch for an empty ``x``."""
    nb, tmax, ncls = x.shape
    if nb * tmax == 0:
        return
    block_v = _bucket(ncls, VOCAB_BUCKETS)
    _launch(
        kernel,
        (nb * tmax,),
        x.device,
        x,
        *tensors,
        tmax,
        ncls,
        k,
        *x.stride(),
        ACC=_TL_DTYPE[_acc_dtype(x)],
        BLOCK_V=block_v,
        BLOCK_K=min(K_TILE, MAX_BLOCK),
        num_warps=_warps(block_v, 256),
    )


def emissions_from_logits(
    logits: torch.Tensor, idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``em[b, t, k] = log_softmax(logits[b, t])[idx[b, k]]`` in float64, and the row ``lse``.

    ``logits (N, T, V)`` any float dtype and strides (reduced in float32, float64 stays
    float64), ``idx (N, K)`` int64 ids in ``[0, V)``. One launch.
    """
    nb, tmax, ncls = logits.shape
    x = _row_view(logits)
    acc = _acc_dtype(x)
    k = idx.shape[1]
    idx = idx.contiguous()
    lse = torch.empty((nb, tmax), dtype=acc, device=x.device)
    em = torch.empty((nb, tmax, k), dtype=torch.float64, device=x.device)
    _launch_rows(_emissions_kernel, x, k, idx, em, lse)
    return em, lse


def logits_gradient(
    logits: torch.Tensor,
    lse: torch.Tensor,
    idx: torch.Tensor,
    grad_em: torch.Tensor,
    in_len: torch.Tensor,
) -> torch.Tensor:
    """``d/dlogits = scatter(g) − softmax · Σg`` per row, written once; rows ``t ≥ m`` are 0.
    One launch; the result is contiguous ``(N, T, V)`` in the logits' dtype."""
    nb, tmax, ncls = logits.shape
    x = _row_view(logits)
    k = idx.shape[1]
    g = grad_em.to(torch.float64).contiguous()
    grad = torch.empty((nb, tmax, ncls), dtype=logits.dtype, device=logits.device)
    _launch_rows(_logits_grad_kernel, x, k, lse, g, idx.contiguous(), in_len, grad)
    return grad


def interpreted() -> bool:
    """Whether these kernels run under Triton's interpreter (``TRITON_INTERPRET=1`` at import)."""
    return type(_algebra_forward_kernel).__name__ == "InterpretedFunction"


# --------------------------------------------------------------------------------------
# The backend interface (:class:`~latalign.align.backends.base.Backend`).
# --------------------------------------------------------------------------------------


class TritonBackend:
    """The kernels above behind :class:`~latalign.align.backends.base.Backend`.

    A loss from logits launches: emissions (1), the dynamic program's forward (1; max with
    its backtracking tail), its backward (max: 1 elementwise pass; sum: beta + posteriors;
    CTC: 1), the logits' gradient (1).
    """

    name = "triton"

    def emissions(self, src, idx, in_len, from_logits, *, keep=False):
        if not from_logits:
            return (*torch_emissions(src, idx, from_logits), [])
        em, lse = emissions_from_logits(src, idx)
        return em, (lse,), []

    def emissions_backward(self, src, idx, in_len, from_logits, saved, scratch, grad_em):
        if not from_logits:
            return torch_emissions_backward(
                src, idx, in_len, from_logits, grad_em, sparse_rows=False
            )
        return logits_gradient(src, saved[0], idx, grad_em, in_len)

    def algebra_forward(
        self, em, in_len, tg_len, objective: Objective, *, keep: bool, paths: bool = False
    ) -> AlgebraState:
        use_max = objective.aggregate == "max"
        tail = (2 if paths else 1 if keep else 0) if use_max else 0
        loss, alpha, codes, out = algebra_forward(em, in_len, tg_len, objective, tail=tail)
        if use_max:  # the grids stay inside the forward call: only the tail's output is kept
            saved = (*out, codes) if paths else out
        else:
            saved = (alpha if keep else None,)
        return AlgebraState(objective, loss, saved)

    def algebra_backward(self, state, em, in_len, tg_len, gscale):
        if state.objective.aggregate == "max":
            return path_gradient(state.saved[0], state.loss, gscale)
        return algebra_backward_sum(em, in_len, tg_len, state.objective, state.saved[0], gscale)

    def best_paths(self, state, in_len, tg_len):
        steps, length = state.saved[:2]
        return paths_from_steps(steps.long(), length)

    def ctc_forward(self, em, targets, in_len, tg_len, *, keep: bool) -> CTCState:
        alpha, loss = ctc_forward(em, targets, in_len, tg_len)
        return CTCState(loss, (alpha if keep else None,))

    def ctc_backward(self, state, em, targets, in_len, tg_len, gscale):
        return ctc_backward(em, targets, in_len, tg_len, state.saved[0], state.loss, gscale)
