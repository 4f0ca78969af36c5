"""Shared helpers for the alignment-library tests: a differentiable brute-force oracle."""

from __future__ import annotations

import torch

from latalign.align import bruteforce
from latalign.align.objective import MOVE_BY_NAME, OPERATORS, Objective


def oracle_loss(
    lp: torch.Tensor, target: list[int], objective: Objective, blank: int = 0
) -> torch.Tensor:
    """Brute force in torch: enumerate every path, score it with autograd, aggregate.

    ``lp`` is ``(m, C)``. Gradients of the result are the exact gradients of the objective.
    """
    paths = bruteforce.enumerate_paths(lp.detach().tolist(), target, objective, blank)
    weight = dict(zip(OPERATORS, objective.weights))
    scores = []
    for moves, _ in paths:
        i = j = 0
        s = lp.new_zeros(())
        for op in moves:
            move = MOVE_BY_NAME[op]
            i, j = i + move.di, j + move.dj
            e = lp[move.frame_at(j) - 1, move.symbol(i, target, blank)]
            if weight[op] != 0.0:
                s = s + weight[op] * e
        scores.append(s)
    if not scores:
        return lp.new_full((), float("inf"))
    stacked = torch.stack(scores)
    if objective.aggregate == "max":
        return -stacked.max()
    return -torch.logsumexp(stacked, dim=0)
