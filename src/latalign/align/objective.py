"""Objectives: an operator set, weights, an aggregate and the causal flag (SPEC.md).

The four operators of the paper's Table 1, as moves on the grid of cells ``(i, j)``
("the first ``i`` targets and the first ``j`` predictions are consumed"):

==================  ===============  ==============================  ==================
operator            comes from       scores (log space)              allowed when
==================  ===============  ==============================  ==================
``align``           ``(i-1, j-1)``   ``w_align · p_j(y_i)``           ``i ≥ 1, j ≥ 1``
``clone_target``    ``(i, j-1)``     ``w_ct · p_j(y_i)``              ``i ≥ 1, j ≥ 1``
``clone_prediction````(i-1, j)``     ``w_cp · p_max(j,1)(y_i)``       ``i ≥ 1``
``delimiter``       ``(i, j-1)``     ``w_d · p_j(ε)``                 ``j ≥ 1``
==================  ===============  ==============================  ==================

Causal (the paper, Section 5): ``align``, ``clone_target`` and ``clone_prediction``
into ``(i, j)`` need ``j ≤ i``; ``delimiter`` is unrestricted.

The machine-readable form of this table is :data:`MOVES` (one :class:`Move` per
operator, with its named move code ``MOVE_*``); backends, the brute-force oracle, the
best-path decoding and the tests derive their moves from it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

ALIGN = "align"
CLONE_TARGET = "clone_target"
CLONE_PREDICTION = "clone_prediction"
DELIMITER = "delimiter"

#: The operators in their canonical order. This order is also the tie-break order of the
#: best path: when two moves into a cell score exactly the same, the earlier one wins.
OPERATORS: tuple[str, ...] = (ALIGN, CLONE_TARGET, CLONE_PREDICTION, DELIMITER)

# Named move codes, as the Viterbi backends store them in their back-pointer grids.
MOVE_NONE = 0  # the start cell (0, 0), or a cell no path reaches
MOVE_ALIGN = 1
MOVE_CLONE_TARGET = 2
MOVE_CLONE_PREDICTION = 3
MOVE_DELIMITER = 4

# What a move emits: the cell's target y_i, or the blank ε.
TARGET = "y_i"
BLANK = "ε"
# Which prediction p_f scores it, as a function of the destination column j.
FRAME_J = "j"
FRAME_J_AT_LEAST_1 = "max(j,1)"


@dataclass(frozen=True)
class Move:
    """One row of the paper's Table 1: a move into cell ``(i, j)``.

    Attributes:
        operator: the operator's name (:data:`OPERATORS`).
        code: its named move code (``MOVE_*``), the tie-break rank in canonical order.
        di, dj: the source cell is ``(i - di, j - dj)``.
        emits: :data:`TARGET` (scores ``y_i``) or :data:`BLANK` (scores ``ε``).
        frame: :data:`FRAME_J` (prediction ``p_j``) or :data:`FRAME_J_AT_LEAST_1`
            (``p_max(j,1)``: ``clone_prediction`` down column 0 scores with ``p_1``).
        causal: whether the causal rule restricts it (into ``(i, j)`` only if ``j ≤ i``).
    """

    operator: str
    code: int
    di: int
    dj: int
    emits: str
    frame: str
    causal: bool

    def source(self, i: int, j: int) -> tuple[int, int]:
        """The cell this move comes from when it moves into ``(i, j)``."""
        return i - self.di, j - self.dj

    def frame_at(self, j: int) -> int:
        """The 1-based prediction position ``f`` whose ``p_f`` scores the move into column ``j``."""
        return max(j, 1) if self.frame == FRAME_J_AT_LEAST_1 else j

    def symbol(self, i: int, target, blank: int) -> int:
        """The vocabulary id the move into row ``i`` scores: ``y_i`` (``target[i-1]``) or ``blank``."""
        return target[i - 1] if self.emits == TARGET else blank

    def allowed(self, i: int, j: int, n: int, m: int, causal: bool) -> bool:
        """Whether the move into ``(i, j)`` exists on an ``n × m`` grid (SPEC.md "allowed when")."""
        si, sj = self.source(i, j)
        if not (0 <= si and 0 <= sj and i <= n and j <= m):
            return False
        if self.emits == TARGET and i < 1:
            return False
        if self.frame == FRAME_J and j < 1:
            return False
        return not (causal and self.causal and j > i)


#: The paper's Table 1, in canonical (tie-break) order. Everything else derives from it.
#:
#: ==================  ==========================  =====  ======  ===========  ==========  ======
#: operator            code                        di     dj      emits        frame       causal
#: ==================  ==========================  =====  ======  ===========  ==========  ======
#: align               MOVE_ALIGN (1)              1      1       y_i          j           yes
#: clone_target        MOVE_CLONE_TARGET (2)       0      1       y_i          j           yes
#: clone_prediction    MOVE_CLONE_PREDICTION (3)   1      0       y_i          max(j,1)    yes
#: delimiter           MOVE_DELIMITER (4)          0      1       ε            j           no
#: ==================  ==========================  =====  ======  ===========  ==========  ======
MOVES: tuple[Move, ...] = (
    Move(ALIGN, MOVE_ALIGN, 1, 1, TARGET, FRAME_J, True),
    Move(CLONE_TARGET, MOVE_CLONE_TARGET, 0, 1, TARGET, FRAME_J, True),
    Move(CLONE_PREDICTION, MOVE_CLONE_PREDICTION, 1, 0, TARGET, FRAME_J_AT_LEAST_1, True),
    Move(DELIMITER, MOVE_DELIMITER, 0, 1, BLANK, FRAME_J, False),
)

#: The table by operator name and by move code.
MOVE_BY_NAME: dict[str, Move] = {mv.operator: mv for mv in MOVES}
MOVE_BY_CODE: dict[int, Move] = {mv.code: mv for mv in MOVES}
#: Move codes by operator name (0 = no move: the start cell or unreachable).
MOVE_CODES: dict[str, int] = {mv.operator: mv.code for mv in MOVES}

# The same table as flat tuples indexed by move code (entry 0 = MOVE_NONE), for compiled
# kernels (numba, Triton) that cannot read dataclasses: source offsets, whether the move
# emits the target (else the blank), whether it reads p_max(j,1), and whether the causal rule restricts it.
MOVE_DI: tuple[int, ...] = (0, *(mv.di for mv in MOVES))
MOVE_DJ: tuple[int, ...] = (0, *(mv.dj for mv in MOVES))
MOVE_EMITS_TARGET: tuple[bool, ...] = (False, *(mv.emits == TARGET for mv in MOVES))
MOVE_FRAME_AT_LEAST_1: tuple[bool, ...] = (
    False,
    *(mv.frame == FRAME_J_AT_LEAST_1 for mv in MOVES),
)
MOVE_CAUSAL: tuple[bool, ...] = (False, *(mv.causal for mv in MOVES))

AGGREGATES: tuple[str, ...] = ("sum", "max")

AXE_OPERATORS: tuple[str, ...] = (ALIGN, CLONE_PREDICTION, DELIMITER)
#: The paper's schematic CTC (no blank-between-repeats rule); real CTC is :func:`ctc_loss`.
SCHEMATIC_CTC_OPERATORS: tuple[str, ...] = (ALIGN, CLONE_TARGET, DELIMITER)


@dataclass(frozen=True)
class Objective:
    """A latent alignment objective: which moves, their weights, sum or max, causal or not.

    Attributes:
        operators: the enabled operators, in canonical order (always contains ``align``).
        weights: one weight per operator of :data:`OPERATORS` (disabled ones are 0.0).
        aggregate: ``"sum"`` (−logsumexp over paths) or ``"max"`` (−max over paths).
        causal: forbid a prediction ``p_j`` from scoring a target ``y_i`` with ``i < j``.
    """

    operators: tuple[str, ...]
    weights: tuple[float, float, float, float]
    aggregate: str
    causal: bool

    @staticmethod
    def make(
        operators: Iterable[str] = SCHEMATIC_CTC_OPERATORS,
        aggregate: str = "sum",
        weights: Mapping[str, float] | None = None,
        causal: bool = False,
    ) -> Objective:
        """Validate and build an objective. Raises ``ValueError`` on bad names or values."""
        if isinstance(operators, str):
            raise ValueError(
                f"expected operators to be a collection of operator names, found the string "
                f"{operators!r}; write ({operators!r},)"
            )
        ops = list(operators)
        unknown = [op for op in ops if op not in OPERATORS]
        if unknown:
            raise ValueError(f"expected operators among {OPERATORS}, found unknown {unknown}")
        if len(set(ops)) != len(ops):
            raise ValueError(f"expected each operator at most once, found {ops}")
        if ALIGN not in ops:
            raise ValueError(f"expected the operator set to contain 'align', found {tuple(ops)}")
        if aggregate not in AGGREGATES:
            raise ValueError(f"expected aggregate in {AGGREGATES}, found {aggregate!r}")
        weights = dict(weights or {})
        bad = [k for k in weights if k not in ops]
        if bad:
            raise ValueError(
                f"expected weights only for enabled operators {tuple(ops)}, found weights for {bad}"
            )
        w = []
        for name in OPERATORS:
            value = float(weights.get(name, 1.0)) if name in ops else 0.0
            if not math.isfinite(value):
                raise ValueError(f"expected a finite weight for {name!r}, found {value}")
            w.append(value)
        canonical = tuple(name for name in OPERATORS if name in ops)
        return Objective(canonical, (w[0], w[1], w[2], w[3]), aggregate, bool(causal))

    def enabled(self, name: str) -> bool:
        return name in self.operators

    @property
    def flags(self) -> tuple[bool, bool, bool, bool]:
        """Enabled flags in :data:`OPERATORS` order (align, clone_target, clone_prediction, delimiter)."""
        a, ct, cp, d = (name in self.operators for name in OPERATORS)
        return a, ct, cp, d


def axe_objective(delta: float = 1.0, causal: bool = False) -> Objective:
    """AXE (Ghazvininejad et al., 2020): align, clone_prediction (weight ``delta``), delimiter, max."""
    if not math.isfinite(delta):
        raise ValueError(f"expected a finite delta, found {delta}")
    return Objective.make(AXE_OPERATORS, "max", {CLONE_PREDICTION: delta}, causal)
