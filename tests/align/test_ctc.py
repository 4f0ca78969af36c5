"""Real CTC against torch.nn.functional.ctc_loss and brute-force enumeration."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import torch_ctc
from hypothesis import given, settings
from hypothesis import strategies as st

import latalign as la
from latalign.align import bruteforce

BACKENDS = ["numba", "torch"]


def random_batch(seed: int, nb=4, tmax=12, smax=5, ncls=6, blank=0, repeats=True):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(nb, tmax, ncls, generator=gen, dtype=torch.float64)
    labels = torch.tensor([c for c in range(ncls) if c != blank])
    pick = torch.randint(len(labels), (nb, smax), generator=gen)
    if not repeats:
        for k in range(1, smax):  # shift by 1..L-1: never equal to the left neighbour
            step = 1 + torch.randint(len(labels) - 1, (nb,), generator=gen)
            pick[:, k] = (pick[:, k - 1] + step) % len(labels)
    targets = labels[pick]
    in_len = torch.randint(1, tmax + 1, (nb,), generator=gen)
    in_len[0] = tmax
    tg_len = torch.randint(0, smax + 1, (nb,), generator=gen)
    return logits, targets, in_len, tg_len


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("zero_infinity", [False, True])
@pytest.mark.parametrize("blank", [0, 3])
def test_matches_torch_values_and_logit_gradients(backend, reduction, zero_infinity, blank):
    for seed in range(3):
        logits, targets, in_len, tg_len = random_batch(seed, blank=blank)
        x1 = logits.clone().requires_grad_()
        x2 = logits.clone().requires_grad_()
        ours = la.ctc_loss(
            x1.log_softmax(-1),
            targets,
            in_len,
            tg_len,
            blank=blank,
            reduction=reduction,
            zero_infinity=zero_infinity,
            backend=backend,
        )
        ref = torch_ctc(
            x2,
            targets,
            in_len,
            tg_len,
            blank=blank,
            reduction=reduction,
            zero_infinity=zero_infinity,
        )
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
        if not zero_infinity and not torch.isfinite(ref).all():
            continue  # both give NaN gradients for infeasible sequences (checked below)
        ours.sum().backward()
        ref.sum().backward()
        torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_infeasible_gives_inf_and_nan_gradient_like_torch(backend):
    lp = torch.randn(1, 3, 4, dtype=torch.float64).log_softmax(-1).requires_grad_()
    targets = torch.tensor([[1, 1, 2]])  # needs 4 frames: a blank between the repeats
    loss = la.ctc_loss(lp, targets, [3], [3], reduction="sum", backend=backend)
    assert math.isinf(loss.item())
    loss.backward()
    assert torch.isnan(lp.grad).any()
    lp.grad = None
    loss = la.ctc_loss(lp, targets, [3], [3], reduction="sum", zero_infinity=True, backend=backend)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(lp.grad, torch.zeros_like(lp))


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), tmax=st.integers(1, 5), smax=st.integers(0, 3))
def test_matches_enumeration(backend, seed, tmax, smax):
    logits, targets, in_len, tg_len = random_batch(seed, nb=2, tmax=tmax, smax=smax, ncls=4)
    lp = logits.log_softmax(-1)
    got = la.ctc_loss(lp, targets, in_len, tg_len, reduction="none", backend=backend)
    for b in range(2):
        ref = bruteforce.ctc_loss(lp[b, : in_len[b]].tolist(), targets[b, : tg_len[b]].tolist())
        assert (math.isinf(ref) and math.isinf(got[b].item())) or math.isclose(
            got[b].item(), ref, rel_tol=1e-9
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_wrt_log_probs_is_sparse_and_exact(backend):
    # gradcheck w.r.t. log_probs themselves (torch's own CTC fails this: it returns
    # exp(lp) - posterior); ours is the true gradient, non-zero only on gathered entries.
    logits, targets, in_len, tg_len = random_batch(7, nb=2, tmax=5, smax=2, ncls=5, repeats=False)
    lp = logits.log_softmax(-1).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: la.ctc_loss(
            x, targets, in_len, tg_len, reduction="sum", backend=backend, zero_infinity=True
        ),
        (lp,),
    )
    la.ctc_loss(
        lp, targets, in_len, tg_len, reduction="sum", backend=backend, zero_infinity=True
    ).backward()
    used = torch.zeros_like(lp, dtype=torch.bool)
    used[:, :, 0] = True
    for b in range(2):
        used[b, :, targets[b, : tg_len[b]]] = True
    assert torch.all(lp.grad[~used] == 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_equal_lengths_is_cross_entropy_without_equal_neighbours(backend):
    logits, targets, _, _ = random_batch(3, nb=5, tmax=6, smax=6, ncls=9, repeats=False)
    lp = logits.log_softmax(-1)
    n = torch.full((5,), 6)
    ce = -lp.gather(2, targets.unsqueeze(2)).squeeze(2).sum(1)
    torch.testing.assert_close(
        la.ctc_loss(lp, targets, n, n, reduction="none", backend=backend), ce
    )
    with_repeat = targets.clone()
    with_repeat[:, 3] = with_repeat[:, 2]
    assert torch.isinf(la.ctc_loss(lp, with_repeat, n, n, reduction="none", backend=backend)).all()


def test_from_logits_equals_log_softmax_path():
    logits, targets, in_len, tg_len = random_batch(11, nb=3, tmax=8, smax=3, ncls=7)
    x1 = logits.clone().requires_grad_()
    x2 = logits.clone().requires_grad_()
    a = la.ctc_loss(x1, targets, in_len, tg_len, from_logits=True, zero_infinity=True)
    b = la.ctc_loss(x2.log_softmax(-1), targets, in_len, tg_len, zero_infinity=True)
    torch.testing.assert_close(a, b)
    a.backward()
    b.backward()
    torch.testing.assert_close(x1.grad, x2.grad)
