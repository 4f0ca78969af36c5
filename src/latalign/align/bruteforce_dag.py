"""Brute-force oracle for the DAG latent alignment: enumerate every path (tests and teaching).

Follows SPEC.md ("DAG latent alignment") literally, one path at a time, and shares no code
with the backends. Exponential in the graph size: tiny inputs only.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

Matrix = Sequence[Sequence[float]]


def dag_paths(num_vertices: int, n: int) -> list[tuple[int, ...]]:
    """Every path ``0 = a_1 < … < a_n = num_vertices − 1`` (empty when there is none)."""
    if n < 1 or n > num_vertices or (n == 1 and num_vertices > 1):
        return []
    if n == 1:
        return [(0,)]
    middle = itertools.combinations(range(1, num_vertices - 1), n - 2)
    return [(0, *mid, num_vertices - 1) for mid in middle]


def dag_path_score(
    log_probs: Matrix, transitions: Matrix, target: Sequence[int], path: Sequence[int]
) -> float:
    """``Σ_i log_probs[a_i][y_i] + Σ_{i<n} transitions[a_i][a_{i+1}]`` (log space)."""
    score = sum(log_probs[a][y] for a, y in zip(path, target))
    return score + sum(transitions[u][v] for u, v in zip(path, path[1:]))


def dag_scores(
    log_probs: Matrix, transitions: Matrix, target: Sequence[int]
) -> list[tuple[tuple[int, ...], float]]:
    """Every path of a graph with ``len(log_probs)`` vertices and its score."""
    return [
        (p, dag_path_score(log_probs, transitions, target, p))
        for p in dag_paths(len(log_probs), len(target))
    ]


def dag_loss(log_probs: Matrix, transitions: Matrix, target: Sequence[int], aggregate="sum"):
    """``−logsumexp`` (or ``−max``) over every path's score; ``inf`` with no path."""
    scores = [s for _, s in dag_scores(log_probs, transitions, target) if s != -math.inf]
    if not scores:
        return math.inf
    top = max(scores)
    if aggregate == "max":
        return -top
    return -(top + math.log(sum(math.exp(s - top) for s in scores)))
