"""Closed forms and the paper's claims about the objectives, on constructed inputs."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import BACKENDS  # numba, torch, and triton (interpreted on CPU) when installed

import latalign as la

# the interpreter runs every program in Python: gradcheck and the larger batches stay on
# the compiled CPU backends (test_triton.py checks triton's gradients against the oracle)
CPU_BACKENDS = ["numba", "torch"]
# numpy warns about log(0) and inf - inf in the interpreter's masked-off lanes
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def delannoy(n: int, m: int) -> int:
    return sum(math.comb(n, k) * math.comb(m, k) * 2**k for k in range(min(n, m) + 1))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n,m", [(0, 1), (1, 1), (2, 3), (3, 2), (4, 4), (5, 7), (7, 5)])
def test_path_counts_have_closed_forms(backend, n, m):
    # all scores 0: -loss of the sum objective is log(number of paths)
    lp = torch.zeros(1, m, 3, dtype=torch.float64)
    targets = torch.ones(1, max(n, 1), dtype=torch.int64)
    axe_moves = la.latent_alignment_loss(
        lp,
        targets,
        [m],
        [n],
        operators=la.AXE_OPERATORS,
        aggregate="sum",
        reduction="none",
        backend=backend,
    )
    assert -axe_moves.item() == pytest.approx(math.log(delannoy(n, m)))
    no_clone = la.latent_alignment_loss(
        lp, targets, [m], [n], operators=("align", "delimiter"), reduction="none", backend=backend
    )
    expected = math.comb(m, n) if m >= n else 0
    assert (
        (-no_clone.item() == pytest.approx(math.log(expected)))
        if expected
        else math.isinf(no_clone.item())
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_schematic_ctc_equals_cross_entropy_at_equal_lengths(backend):
    gen = torch.Generator().manual_seed(0)
    lp = torch.randn(6, 9, 11, generator=gen, dtype=torch.float64).log_softmax(-1)
    targets = torch.randint(1, 11, (6, 9), generator=gen)
    targets[:, 4] = targets[:, 3]  # equal neighbours do not matter here (no blank rule)
    n = torch.tensor([9, 8, 5, 1, 3, 9])
    ce = torch.stack([-lp[b, torch.arange(n[b]), targets[b, : n[b]]].sum() for b in range(6)])
    got = la.latent_alignment_loss(lp, targets, n, n, reduction="none", backend=backend)
    torch.testing.assert_close(got, ce, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_axe_is_below_cross_entropy_and_works_for_all_length_orders(backend):
    gen = torch.Generator().manual_seed(1)
    lp = torch.randn(3, 7, 6, generator=gen, dtype=torch.float64).log_softmax(-1)
    targets = torch.randint(1, 6, (3, 7), generator=gen)
    m = torch.tensor([7, 7, 3])  # m == n, m > n, m < n
    n = torch.tensor([7, 4, 6])
    loss = la.axe_loss(lp, targets, m, n, reduction="none", backend=backend)
    assert torch.isfinite(loss).all()
    ce = -lp[0, torch.arange(7), targets[0]].sum()
    assert loss[0] <= ce + 1e-12


def figure3_batch(n: int, eps: float = 1e-4):
    """p_1 puts its mass on ε; p_j (j ≥ 2) copies y_{j-1}; p_n also likes y_n a little."""
    vocab = n + 2
    targets = torch.arange(2, 2 + n).view(1, n)
    probs = torch.full((1, n, vocab), eps)
    probs[0, 0, 0] = 1.0
    for j in range(2, n + 1):
        probs[0, j - 1, targets[0, j - 2]] = 1.0
    probs[0, n - 1, targets[0, n - 1]] = 0.6
    lp = (probs / probs.sum(-1, keepdim=True)).log().double()
    return lp, targets


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", [2, 3, 6, 12])
def test_figure3_degenerate_path(backend, n):
    lp, targets = figure3_batch(n)
    (best,) = la.best_alignment(lp, targets, [n], [n], backend=backend)
    assert best.operators == ("delimiter",) + ("align",) * (n - 1) + ("clone_prediction",)
    assert best.alpha == tuple((j,) for j in range(2, n + 1)) + ((n,),)  # the paper: 2 3 … n n
    loss = la.axe_loss(lp, targets, [n], [n], reduction="none", backend=backend)
    assert best.score == pytest.approx(-loss.item())


@pytest.mark.parametrize("backend", BACKENDS)
def test_causal_axe_forbids_the_copy_path(backend):
    n = 6
    lp, targets = figure3_batch(n)
    (best,) = la.best_alignment(lp, targets, [n], [n], causal=True, backend=backend)
    for i, positions in enumerate(best.alpha, start=1):
        assert all(j <= i for j in positions)
    assert best.operators != ("delimiter",) + ("align",) * (n - 1) + ("clone_prediction",)


@pytest.mark.parametrize("backend", BACKENDS)
def test_best_alignment_score_equals_max_loss_and_ties_are_stable(backend):
    gen = torch.Generator().manual_seed(5)
    lp = torch.randn(4, 8, 5, generator=gen, dtype=torch.float64).log_softmax(-1)
    targets = torch.randint(1, 5, (4, 6), generator=gen)
    m, n = torch.tensor([8, 5, 3, 8]), torch.tensor([6, 6, 2, 0])
    for ops in [la.AXE_OPERATORS, ("align", "clone_target", "delimiter"), la.OPERATORS]:
        paths = la.best_alignment(lp, targets, m, n, operators=ops, backend=backend)
        loss = la.latent_alignment_loss(
            lp, targets, m, n, operators=ops, aggregate="max", reduction="none"
        )
        for b, path in enumerate(paths):
            if math.isinf(loss[b].item()):
                assert not path.feasible
                continue
            assert path.score == pytest.approx(-loss[b].item(), abs=1e-12)
            assert len(path.alpha) == int(n[b])
    # uniform distributions: every path ties; align wins ties, so the trivial path is chosen
    flat = torch.zeros(1, 4, 5, dtype=torch.float64)
    (p,) = la.best_alignment(flat, torch.tensor([[1, 2, 3, 4]]), [4], [4], backend=backend)
    assert p.operators == ("align",) * 4


def test_all_backends_agree_on_larger_batches():
    gen = torch.Generator().manual_seed(2)
    nb, tmax, smax, v = 6, 40, 30, 50
    logits = torch.randn(nb, tmax, v, generator=gen)
    targets = torch.randint(1, v, (nb, smax), generator=gen)
    m = torch.tensor([40, 30, 17, 40, 1, 25])
    n = torch.tensor([30, 30, 20, 0, 1, 12])
    for ops, agg, causal in [
        (la.AXE_OPERATORS, "max", False),
        (la.AXE_OPERATORS, "max", True),
        (la.OPERATORS, "sum", False),
        (("align", "clone_target", "delimiter"), "sum", True),
    ]:
        grads, losses = [], []
        for backend in CPU_BACKENDS:
            x = logits.clone().requires_grad_()
            loss = la.latent_alignment_loss(
                x,
                targets,
                m,
                n,
                operators=ops,
                aggregate=agg,
                causal=causal,
                reduction="none",
                from_logits=True,
                backend=backend,
                zero_infinity=True,
            )
            loss.sum().backward()
            losses.append(loss)
            grads.append(x.grad)
        # float32 emissions: numba's come from the kept softmax, torch's from log_softmax
        # (rounding apart, ~1e-7 of a loss summed over 30 targets)
        torch.testing.assert_close(losses[0], losses[1], rtol=1e-6, atol=1e-5)
        torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-5)
    x = logits.clone().requires_grad_()
    c = [
        la.ctc_loss(x, targets, m, n, from_logits=True, backend=b, reduction="none")
        for b in CPU_BACKENDS
    ]
    torch.testing.assert_close(c[0], c[1], rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradcheck_sum_objectives(backend):
    gen = torch.Generator().manual_seed(3)
    lp = torch.randn(2, 4, 4, generator=gen, dtype=torch.float64).requires_grad_()
    targets = torch.tensor([[1, 2, 3], [3, 3, 1]])
    for ops in [la.OPERATORS, ("align", "clone_target", "delimiter"), la.AXE_OPERATORS]:
        for causal in (False, True):
            assert torch.autograd.gradcheck(
                lambda x, ops=ops, causal=causal: la.latent_alignment_loss(
                    x,
                    targets,
                    [4, 3],
                    [3, 2],
                    operators=ops,
                    causal=causal,
                    backend=backend,
                    weights={"align": 1.3},
                    zero_infinity=True,
                ),
                (lp,),
            )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_half_inputs_compute_in_float32_and_return_their_dtype(dtype):
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 10, 20, generator=gen)
    targets = torch.randint(1, 20, (3, 10), generator=gen)
    x = logits.to(dtype).requires_grad_()
    loss = la.axe_loss(x, targets, [10, 9, 8], [10, 7, 9], from_logits=True)
    assert loss.dtype == dtype
    loss.backward()
    assert x.grad.dtype == dtype
    ref = la.axe_loss(logits.to(dtype).float(), targets, [10, 9, 8], [10, 7, 9], from_logits=True)
    assert abs(loss.float().item() - ref.item()) <= 1e-2 * abs(ref.item())
    lp = x.detach().float().log_softmax(-1).to(dtype)
    assert la.ctc_loss(lp, targets, [10, 9, 8], [3, 2, 1]).dtype == dtype


def test_from_logits_equals_log_softmax_for_axe():
    gen = torch.Generator().manual_seed(6)
    logits = torch.randn(3, 9, 30, generator=gen, dtype=torch.float64)
    targets = torch.randint(1, 30, (3, 9), generator=gen)
    x1, x2 = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    a = la.axe_loss(x1, targets, [9, 9, 5], [9, 4, 7], from_logits=True, delta=0.7)
    b = la.axe_loss(x2.log_softmax(-1), targets, [9, 9, 5], [9, 4, 7], delta=0.7)
    torch.testing.assert_close(a, b)
    a.backward()
    b.backward()
    torch.testing.assert_close(x1.grad, x2.grad)


def test_reductions():
    gen = torch.Generator().manual_seed(8)
    lp = torch.randn(3, 6, 7, generator=gen, dtype=torch.float64).log_softmax(-1)
    targets = torch.randint(1, 7, (3, 6), generator=gen)
    m, n = [6, 5, 4], [6, 0, 3]
    none = la.axe_loss(lp, targets, m, n, reduction="none")
    assert none.shape == (3,)
    assert la.axe_loss(lp, targets, m, n, reduction="sum").item() == pytest.approx(
        none.sum().item()
    )
    mean = (none / torch.tensor([6.0, 1.0, 3.0], dtype=torch.float64)).mean()
    assert la.axe_loss(lp, targets, m, n, reduction="mean").item() == pytest.approx(mean.item())
