"""Frames beyond input_lengths and targets beyond target_lengths never enter a dynamic program.

NaN and ±inf in the padding must change neither the losses nor the gradients inside the
valid frames, in any backend, and the padding's own gradient is exactly zero.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import BACKENDS

import latalign as la
from latalign.align.objective import OPERATORS

# Triton's interpreter evaluates log(0) = -inf and inf - inf in masked-off lanes with numpy
pytestmark = [
    pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
]

OBJECTIVES = {
    "schematic_ctc_sum": dict(operators=("align", "clone_target", "delimiter"), aggregate="sum"),
    "all_sum_causal": dict(operators=OPERATORS, aggregate="sum", causal=True),
    "all_sum_weighted": dict(
        operators=OPERATORS, aggregate="sum", weights={"clone_prediction": 0.5, "delimiter": 2.0}
    ),
    "axe_max": dict(operators=("align", "clone_prediction", "delimiter"), aggregate="max"),
    "all_max_causal": dict(operators=OPERATORS, aggregate="max", causal=True),
}


def _problem(poison: float, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    nb, tmax, smax, ncls = 4, 6, 4, 6
    logits = torch.randn(nb, tmax, ncls, generator=gen, dtype=torch.float64)
    targets = torch.randint(1, ncls, (nb, smax), generator=gen)
    targets[:, 1] = (targets[:, 0] % (ncls - 1)) + 1  # no equal neighbours at the front
    in_len = torch.tensor([6, 4, 3, 5])
    tg_len = torch.tensor([4, 2, 3, 0])
    dirty_logits = logits.clone()
    dirty_targets = targets.clone()
    for b in range(nb):
        dirty_logits[b, in_len[b] :] = poison
        dirty_logits[b, in_len[b] :, 0] = -poison if math.isinf(poison) else poison
        dirty_targets[b, tg_len[b] :] = [10**6, -7, 0, ncls][b]  # padding ids: anything
    return logits, dirty_logits, targets, dirty_targets, in_len, tg_len


def _run(kind, backend, x, targets, in_len, tg_len, from_logits):
    if kind == "ctc":
        return la.ctc_loss(
            x, targets, in_len, tg_len, reduction="none", from_logits=from_logits, backend=backend
        )
    return la.latent_alignment_loss(
        x,
        targets,
        in_len,
        tg_len,
        reduction="none",
        from_logits=from_logits,
        backend=backend,
        **OBJECTIVES[kind],
    )


@pytest.mark.parametrize("kind", [*OBJECTIVES, "ctc"])
@pytest.mark.parametrize("poison", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("from_logits", [False, True])
def test_padding_never_enters_values_or_gradients(kind, poison, from_logits):
    logits, dirty, targets, dirty_targets, in_len, tg_len = _problem(poison)
    clean = logits if from_logits else logits.log_softmax(-1)
    if not from_logits:  # log-probabilities: poison the padding after the softmax
        dirty = clean.clone()
        for b in range(dirty.shape[0]):
            dirty[b, in_len[b] :] = poison
    valid = (torch.arange(dirty.shape[1]).view(1, -1) < in_len.view(-1, 1)).unsqueeze(2)
    ref_x = clean.clone().requires_grad_()
    ref = _run(kind, "numba", ref_x, targets, in_len, tg_len, from_logits)
    (ref_g,) = torch.autograd.grad(ref.sum(), ref_x)
    assert torch.isfinite(ref).all()
    for backend in BACKENDS:
        x = dirty.clone().requires_grad_()
        got = _run(kind, backend, x, dirty_targets, in_len, tg_len, from_logits)
        (g,) = torch.autograd.grad(got.sum(), x)
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9, msg=f"{backend} values")
        torch.testing.assert_close(
            torch.where(valid, g, 0.0),
            torch.where(valid, ref_g, 0.0),
            rtol=1e-7,
            atol=1e-9,
            msg=f"{backend} gradients inside the valid frames",
        )
        assert bool((g.masked_select(~valid) == 0).all()), f"{backend}: padding gradient not 0"
