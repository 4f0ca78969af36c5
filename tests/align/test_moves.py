"""The one table of moves (objective.MOVES) against SPEC.md's Table 1, and every backend's
hand-written moves against the table, cell by cell.

The numba and Triton kernels spell their moves out (which neighbour, which emission, which
causal rule) for speed; these tests recompute each grid cell, and each back-pointer, from
``MOVES`` alone and compare: a kernel whose move differs from the table fails here, and so
does every kernel if the table changes.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from conftest import BACKENDS

import latalign as la
from latalign.align import objective as ob
from latalign.align import path_alpha
from latalign.align.backends import get, numba_cpu

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # interpreter lanes

# SPEC.md, "The four operators", written out independently of the table:
# (source cell, symbol scored, prediction position, allowed when) for a move into (i, j)
SPEC = {
    "align": (lambda i, j: (i - 1, j - 1), "y", lambda j: j, lambda i, j: i >= 1 and j >= 1),
    "clone_target": (lambda i, j: (i, j - 1), "y", lambda j: j, lambda i, j: i >= 1 and j >= 1),
    "clone_prediction": (lambda i, j: (i - 1, j), "y", lambda j: max(j, 1), lambda i, j: i >= 1),
    "delimiter": (lambda i, j: (i, j - 1), "blank", lambda j: j, lambda i, j: j >= 1),
}
CAUSAL_RESTRICTED = {"align", "clone_target", "clone_prediction"}


def test_table_is_in_the_canonical_tie_break_order():
    # OPERATORS (the documented tie-break order) and MOVES are written separately
    assert tuple(mv.operator for mv in ob.MOVES) == ob.OPERATORS
    assert [mv.code for mv in ob.MOVES] == sorted(mv.code for mv in ob.MOVES)
    assert ob.MOVE_NONE not in ob.MOVE_BY_CODE


@pytest.mark.parametrize("causal", [False, True])
def test_every_move_into_every_cell_matches_the_spec(causal):
    n, m = 3, 4
    target = [7, 8, 9]
    for op, (source, sym, frame, allowed) in SPEC.items():
        mv = ob.MOVE_BY_NAME[op]
        for i, j in itertools.product(range(n + 1), range(m + 1)):
            ok = allowed(i, j) and not (causal and op in CAUSAL_RESTRICTED and j > i)
            assert mv.allowed(i, j, n, m, causal) == ok, (op, i, j)
            if ok:
                assert mv.source(i, j) == source(i, j)
                assert mv.frame_at(j) == frame(j)
                assert mv.symbol(i, target, 0) == (target[i - 1] if sym == "y" else 0)


def test_path_alpha_follows_the_table():
    ops = ("delimiter", "align", "clone_target", "clone_prediction", "align")
    assert path_alpha(ops, 3) == ((2, 3), (3,), (4,))
    assert path_alpha(("clone_prediction", "align"), 2) == ((1,), (1,))
    with pytest.raises(ValueError, match="expected operator names"):
        path_alpha(("copy",), 1)


# --------------------------------------------------------------------------------------
# the backends' moves, cell by cell, against a recursion read off MOVES
# --------------------------------------------------------------------------------------


def _score(w: float, e: float) -> float:
    return 0.0 if w == 0.0 else w * e


def _lse(values: list[float]) -> float:
    top = max(values, default=-math.inf)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in values))


def _emission(em: np.ndarray, mv: ob.Move, i: int, j: int) -> float:
    # em (T, S+1): column 0 the blank, column i the target y_i
    return em[mv.frame_at(j) - 1, i if mv.emits == ob.TARGET else 0]


def reference_forward(em: np.ndarray, n: int, m: int, obj: ob.Objective):
    """alpha and the winning move codes of every cell, from MOVES alone (strict > in
    canonical order: the earlier move keeps a tie)."""
    weight = dict(zip(ob.OPERATORS, obj.weights))
    alpha = np.full((n + 1, m + 1), -math.inf)
    codes = np.zeros((n + 1, m + 1), dtype=np.int64)
    alpha[0, 0] = 0.0
    for i, j in itertools.product(range(n + 1), range(m + 1)):
        if (i, j) == (0, 0):
            continue
        cands = []
        for mv in ob.MOVES:
            if mv.operator in obj.operators and mv.allowed(i, j, n, m, obj.causal):
                si, sj = mv.source(i, j)
                cands.append(
                    (mv.code, alpha[si, sj] + _score(weight[mv.operator], _emission(em, mv, i, j)))
                )
        if obj.aggregate == "sum":
            alpha[i, j] = _lse([v for _, v in cands])
            continue
        best, code = -math.inf, ob.MOVE_NONE
        for c, v in cands:
            if v > best:
                best, code = v, c
        alpha[i, j], codes[i, j] = best, code
    return alpha, codes


def reference_beta(em: np.ndarray, n: int, m: int, obj: ob.Objective) -> np.ndarray:
    """beta (log-sum of the paths from a cell to (n, m)), from MOVES alone."""
    weight = dict(zip(ob.OPERATORS, obj.weights))
    beta = np.full((n + 1, m + 1), -math.inf)
    for i, j in sorted(itertools.product(range(n + 1), range(m + 1)), reverse=True):
        if (i, j) == (n, m):
            beta[i, j] = 0.0
            continue
        out = []
        for mv in ob.MOVES:
            i2, j2 = i + mv.di, j + mv.dj
            if mv.operator in obj.operators and mv.allowed(i2, j2, n, m, obj.causal):
                out.append(beta[i2, j2] + _score(weight[mv.operator], _emission(em, mv, i2, j2)))
        beta[i, j] = _lse(out)
    return beta


OBJECTIVES = [
    ob.Objective.make(la.OPERATORS, "sum"),
    ob.Objective.make(la.OPERATORS, "sum", {"clone_prediction": 0.5, "delimiter": 2.0}, True),
    ob.Objective.make(la.OPERATORS, "max", {"clone_target": 0.7}),
    ob.Objective.make(la.OPERATORS, "max", causal=True),
    ob.axe_objective(0.3),
]


def _grid_problem(seed: int, coarse: bool):
    gen = torch.Generator().manual_seed(seed)
    nb, tmax, s1 = 3, 5, 5
    em = torch.randn(nb, tmax, s1, generator=gen, dtype=torch.float64)
    if coarse:  # many exact ties between moves
        em = (em * 2).round() / 2
    return em, torch.tensor([5, 3, 4]), torch.tensor([4, 4, 0])


def _grids(backend: str, em, in_len, tg_len, obj):
    """(alpha or None, codes or None) as (N, S+1, T+1) numpy grids from a backend's forward."""
    if backend == "triton":
        from latalign.align.backends import triton_module

        # max keeps three rolling anti-diagonals of alpha: move codes only
        _, alpha, codes, _ = triton_module().algebra_forward(em, in_len, tg_len, obj, tail=2)
        return (
            None if alpha is None else alpha.numpy(),
            None if codes is None else codes.numpy(),
        )
    state = get(backend).algebra_forward(em, in_len, tg_len, obj, keep=True, paths=True)
    alpha, codes = state.saved
    if obj.aggregate == "max" and backend == "numba":
        alpha = None  # numba keeps two rolling rows for max: back-pointers only
    return (
        None if alpha is None else alpha.numpy(),
        None if codes is None else codes.numpy(),
    )


@pytest.mark.parametrize("coarse", [False, True])
@pytest.mark.parametrize(
    "obj", OBJECTIVES, ids=lambda o: f"{o.aggregate}-{len(o.operators)}-{o.causal}"
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_cells_and_back_pointers_follow_moves(backend, obj, coarse):
    em, in_len, tg_len = _grid_problem(seed=len(obj.operators) + 10 * obj.causal, coarse=coarse)
    alpha, codes = _grids(backend, em, in_len, tg_len, obj)
    for b in range(em.shape[0]):
        n, m = int(tg_len[b]), int(in_len[b])
        ref_alpha, ref_codes = reference_forward(em[b].numpy(), n, m, obj)
        if alpha is not None:
            np.testing.assert_allclose(alpha[b, : n + 1, : m + 1], ref_alpha, rtol=1e-12)
        if obj.aggregate == "max":
            np.testing.assert_array_equal(codes[b, : n + 1, : m + 1], ref_codes)


@pytest.mark.parametrize("obj", [o for o in OBJECTIVES if o.aggregate == "sum"], ids=str)
def test_numba_backward_cells_follow_moves(obj):
    # numba's beta recursion spells out each move's successor: every cell against MOVES
    em, in_len, tg_len = _grid_problem(seed=3, coarse=False)
    nb, tmax, s1 = em.shape
    state = get("numba").algebra_forward(em, in_len, tg_len, obj, keep=True)
    alpha = state.saved[0].numpy()
    beta = np.full_like(alpha, np.nan)
    grad = np.zeros((nb, s1, tmax))
    numba_cpu.algebra_backward_sum(
        np.ascontiguousarray(em.transpose(1, 2).numpy()),
        in_len.numpy(),
        tg_len.numpy(),
        np.asarray(obj.weights),
        np.asarray(obj.flags),
        obj.causal,
        alpha,
        beta,
        np.ones(nb),
        grad,
    )
    for b in range(nb):
        n, m = int(tg_len[b]), int(in_len[b])
        ref = reference_beta(em[b].numpy(), n, m, obj)
        np.testing.assert_allclose(beta[b, : n + 1, : m + 1], ref, rtol=1e-12)
