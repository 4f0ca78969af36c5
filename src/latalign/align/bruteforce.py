"""Brute-force oracles: enumerate every path on tiny sizes (exponential; for tests and teaching).

These follow SPEC.md literally, one path at a time, and share no code with the backends:
the moves (source cell, emission, frame, causal rule) come from the spec table
:data:`latalign.align.objective.MOVES` only.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from .objective import MOVE_BY_NAME, OPERATORS, Objective

Matrix = Sequence[Sequence[float]]  # lp[j][c]: log p_{j+1}(c), j = 0..m-1


def enumerate_paths(
    lp: Matrix, target: Sequence[int], objective: Objective, blank: int = 0
) -> list[tuple[tuple[str, ...], float]]:
    """Every path from ``(0, 0)`` to ``(n, m)`` with its score (log space), in no set order."""
    n, m = len(target), len(lp)
    weight = dict(zip(OPERATORS, objective.weights))
    causal = objective.causal
    paths: list[tuple[tuple[str, ...], float]] = []

    def term(w: float, e: float) -> float:
        return 0.0 if w == 0.0 else w * e

    def walk(i: int, j: int, moves: list[str], score: float) -> None:
        if i == n and j == m:
            paths.append((tuple(moves), score))
            return
        # moves out of (i, j), into (i + di, j + dj), read off the spec table
        for op in objective.operators:
            move = MOVE_BY_NAME[op]
            i2, j2 = i + move.di, j + move.dj
            if not move.allowed(i2, j2, n, m, causal):
                continue
            e = lp[move.frame_at(j2) - 1][move.symbol(i2, target, blank)]
            walk(i2, j2, moves + [op], score + term(weight[op], e))

    walk(0, 0, [], 0.0)
    return paths


def algebra_loss(lp: Matrix, target: Sequence[int], objective: Objective, blank: int = 0) -> float:
    """``-logsumexp`` or ``-max`` over all enumerated path scores; ``inf`` with no path."""
    scores = [s for _, s in enumerate_paths(lp, target, objective, blank)]
    scores = [s for s in scores if s != -math.inf]
    if not scores:
        return math.inf
    if objective.aggregate == "max":
        return -max(scores)
    top = max(scores)
    return -(top + math.log(sum(math.exp(s - top) for s in scores)))


def ctc_loss(lp: Matrix, target: Sequence[int], blank: int = 0) -> float:
    """Real CTC by enumerating every frame labelling that collapses to ``target``."""
    alphabet = sorted({blank, *target})
    total: list[float] = []
    for labels in itertools.product(alphabet, repeat=len(lp)):
        collapsed = [
            c for k, c in enumerate(labels) if c != blank and (k == 0 or labels[k - 1] != c)
        ]
        if collapsed == list(target):
            total.append(sum(lp[t][c] for t, c in enumerate(labels)))
    total = [s for s in total if s != -math.inf]
    if not total:
        return math.inf
    top = max(total)
    return -(top + math.log(sum(math.exp(s - top) for s in total)))
