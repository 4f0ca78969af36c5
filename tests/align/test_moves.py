"""The one table of moves (objective.MOVES) against SPEC.md's Table 1, cell by cell."""

from __future__ import annotations

import itertools

import pytest

from latalign.align import objective as ob
from latalign.align import path_alpha


def test_table_is_in_canonical_order_with_named_codes():
    assert tuple(mv.operator for mv in ob.MOVES) == ob.OPERATORS
    assert tuple(mv.code for mv in ob.MOVES) == (
        ob.MOVE_ALIGN,
        ob.MOVE_CLONE_TARGET,
        ob.MOVE_CLONE_PREDICTION,
        ob.MOVE_DELIMITER,
    )
    assert ob.MOVE_NONE not in ob.MOVE_BY_CODE
    for code, mv in ob.MOVE_BY_CODE.items():
        assert (ob.MOVE_DI[code], ob.MOVE_DJ[code]) == (mv.di, mv.dj)
        assert ob.MOVE_EMITS_TARGET[code] == (mv.emits == ob.TARGET)
        assert ob.MOVE_CAUSAL[code] == mv.causal
        assert ob.MOVE_FRAME_AT_LEAST_1[code] == (mv.frame == ob.FRAME_J_AT_LEAST_1)


# SPEC.md, "The four operators", written out independently of the table:
# (source cell, symbol scored, prediction position, allowed when) for a move into (i, j)
SPEC = {
    "align": (lambda i, j: (i - 1, j - 1), "y", lambda j: j, lambda i, j: i >= 1 and j >= 1),
    "clone_target": (lambda i, j: (i, j - 1), "y", lambda j: j, lambda i, j: i >= 1 and j >= 1),
    "clone_prediction": (lambda i, j: (i - 1, j), "y", lambda j: max(j, 1), lambda i, j: i >= 1),
    "delimiter": (lambda i, j: (i, j - 1), "blank", lambda j: j, lambda i, j: j >= 1),
}
CAUSAL_RESTRICTED = {"align", "clone_target", "clone_prediction"}


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
