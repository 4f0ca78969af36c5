"""Every objective of the operator algebra against brute-force enumeration (SPEC.md)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import oracle_loss
from hypothesis import given, settings
from hypothesis import strategies as st

import latalign as la
from latalign.align import bruteforce
from latalign.align.objective import OPERATORS, Objective

OTHER = [op for op in OPERATORS if op != "align"]
SUBSETS = [("align", *[o for k, o in enumerate(OTHER) if mask >> k & 1]) for mask in range(8)]


@st.composite
def problems(draw):
    n_batch = draw(st.integers(1, 3))
    tmax = draw(st.integers(1, 5))
    smax = draw(st.integers(0, 5))
    ncls = draw(st.integers(2, 5))
    blank = draw(st.integers(0, ncls - 1))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    lp = torch.randn(n_batch, tmax, ncls, generator=gen, dtype=torch.float64).log_softmax(-1)
    labels = [c for c in range(ncls) if c != blank]
    targets = torch.tensor(
        [
            [labels[int(v)] for v in torch.randint(len(labels), (smax,), generator=gen)]
            for _ in range(n_batch)
        ],
        dtype=torch.int64,
    ).view(n_batch, smax)
    in_len = torch.tensor([draw(st.integers(1, tmax)) for _ in range(n_batch)])
    tg_len = torch.tensor([draw(st.integers(0, smax)) for _ in range(n_batch)])
    return lp, targets, in_len, tg_len, blank


objectives = st.builds(
    lambda ops, agg, causal, ws: Objective.make(
        ops, agg, {op: w for op, w in zip(ops, ws)}, causal
    ),
    st.sampled_from(SUBSETS),
    st.sampled_from(["sum", "max"]),
    st.booleans(),
    st.lists(st.sampled_from([1.0, 0.5, 2.0, 0.0, 1.5]), min_size=4, max_size=4),
)


def run(lp, targets, in_len, tg_len, blank, obj, backend, reduction="none"):
    weights = dict(zip(OPERATORS, obj.weights))
    return la.latent_alignment_loss(
        lp,
        targets,
        in_len,
        tg_len,
        operators=obj.operators,
        aggregate=obj.aggregate,
        weights={op: weights[op] for op in obj.operators},
        causal=obj.causal,
        blank=blank,
        reduction=reduction,
        backend=backend,
    )


def unique_best(lp_b, target, obj, blank) -> bool:
    scores = sorted(
        (s for _, s in bruteforce.enumerate_paths(lp_b.tolist(), target, obj, blank)), reverse=True
    )
    return len(scores) < 2 or scores[0] - scores[1] > 1e-9


@pytest.mark.parametrize("backend", ["numba", "torch"])
@settings(max_examples=60, deadline=None)
@given(problem=problems(), obj=objectives)
def test_values_and_gradients_match_enumeration(backend, problem, obj):
    lp, targets, in_len, tg_len, blank = problem
    lp = lp.clone().requires_grad_()
    loss = run(lp, targets, in_len, tg_len, blank, obj, backend)
    for b in range(lp.shape[0]):
        target = targets[b, : tg_len[b]].tolist()
        lp_ref = lp.detach().clone().requires_grad_()
        ref = oracle_loss(lp_ref[b, : in_len[b]], target, obj, blank)
        plain = bruteforce.algebra_loss(lp[b, : in_len[b]].tolist(), target, obj, blank)
        got = loss[b].item()
        if math.isinf(plain):
            assert math.isinf(got) and math.isinf(ref.item())
            continue
        assert math.isclose(plain, ref.item(), rel_tol=1e-9, abs_tol=1e-9)
        assert math.isclose(got, plain, rel_tol=1e-9, abs_tol=1e-9)
        if obj.aggregate == "max" and not unique_best(
            lp[b, : in_len[b]].detach(), target, obj, blank
        ):
            continue  # tied best paths: the subgradient is any of them (tie-break tested elsewhere)
        (g,) = torch.autograd.grad(loss[b] + 0.0 * lp.sum(), lp, retain_graph=True)
        (g_ref,) = torch.autograd.grad(ref + 0.0 * lp_ref.sum(), lp_ref)
        torch.testing.assert_close(g, g_ref, rtol=1e-7, atol=1e-9)


def test_weights_zero_operator_still_counts_paths():
    # weight 0 on an operator: its moves score 0 (p**0 = 1), even against log p = -inf
    lp = torch.full((1, 2, 3), -math.inf, dtype=torch.float64)
    lp[0, :, 1] = 0.0
    obj = Objective.make(("align", "delimiter"), "sum", {"delimiter": 0.0})
    got = la.latent_alignment_loss(
        lp,
        torch.tensor([[1]]),
        [2],
        [1],
        operators=obj.operators,
        weights={"delimiter": 0.0},
        reduction="none",
    )
    assert got.item() == pytest.approx(bruteforce.algebra_loss(lp[0].tolist(), [1], obj))
    assert got.item() == pytest.approx(-math.log(2))  # two paths, each with score 0
