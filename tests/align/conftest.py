"""Shared helpers for the alignment-library tests: a differentiable brute-force oracle.

Without CUDA, the Triton backend is tested on CPU tensors through Triton's interpreter,
which only takes effect if ``TRITON_INTERPRET=1`` is set before the kernels are defined:
this file sets it (unless already set) before any test module imports them.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from latalign.align.backends import triton_available  # noqa: E402

#: Triton joins when it can run here: on CUDA, or on CPU tensors through the interpreter.
HAS_TRITON = triton_available(torch.device("cpu"))
BACKENDS = ["numba", "torch", *(["triton"] if HAS_TRITON else [])]

from latalign.align import bruteforce  # noqa: E402
from latalign.align.objective import MOVE_BY_NAME, OPERATORS, Objective  # noqa: E402


def torch_ctc(logits: torch.Tensor, targets: torch.Tensor, in_len, tg_len, **kw) -> torch.Tensor:
    """The reference: torch's ``F.ctc_loss`` on batch-first logits ``(N, T, V)``."""
    return F.ctc_loss(logits.log_softmax(-1).transpose(0, 1), targets, in_len, tg_len, **kw)


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
