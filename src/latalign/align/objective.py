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

#: Move codes stored by the Viterbi backends (0 = no move: the start cell or unreachable).
MOVE_CODES: dict[str, int] = {name: k + 1 for k, name in enumerate(OPERATORS)}

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
