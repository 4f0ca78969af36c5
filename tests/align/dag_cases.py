"""Shared inputs and the differentiable brute-force oracle of the DAG tests."""

from __future__ import annotations

import torch

from latalign.align import bruteforce_dag


def problem(
    seed: int,
    vert_len: list[int],
    tg_len: list[int],
    ncls: int = 5,
    smax: int | None = None,
    lmax: int | None = None,
    scale: float = 1.0,
):
    """Random ``(logits (N, L, V), transitions (N, L, L), targets (N, S))`` in float64.

    Transitions are log-softmax rows over the later vertices of each graph (as a model's
    transition head gives); entries the loss never reads hold finite junk.
    """
    gen = torch.Generator().manual_seed(seed)
    nb = len(vert_len)
    lmax = lmax or max(vert_len)
    smax = smax if smax is not None else max(tg_len)
    logits = scale * torch.randn(nb, lmax, ncls, generator=gen, dtype=torch.float64)
    scores = scale * torch.randn(nb, lmax, lmax, generator=gen, dtype=torch.float64)
    later = torch.ones(lmax, lmax, dtype=torch.bool).triu(1)
    trans = scores.masked_fill(~later, float("-inf")).log_softmax(-1)
    trans = torch.where(later, trans, scores)  # the last row (all -inf) and u >= v: junk
    targets = torch.randint(0, ncls, (nb, smax), generator=gen)
    return logits, trans, targets, torch.tensor(vert_len), torch.tensor(tg_len)


def oracle(lp: torch.Tensor, trans: torch.Tensor, target: list[int], aggregate: str = "sum"):
    """Every path of one graph (``lp (L_b, V)``, ``trans (L_b, L_b)``) scored with autograd,
    then ``−logsumexp`` (or ``−max``): its gradients are the exact ones of the loss."""
    paths = bruteforce_dag.dag_paths(lp.shape[0], len(target))
    if not paths:
        return lp.new_full((), float("inf"))
    scores = []
    for path in paths:
        s = sum(lp[a, y] for a, y in zip(path, target))
        s = s + sum((trans[u, v] for u, v in zip(path, path[1:])), lp.new_zeros(()))
        scores.append(s)
    stacked = torch.stack(scores)
    return -stacked.max() if aggregate == "max" else -torch.logsumexp(stacked, dim=0)
