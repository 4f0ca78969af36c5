"""From logits, the CPU backend keeps the forward's softmax and turns it into the gradient.

Oracle: the same call with the backward recomputing the softmax (``keep_softmax`` off), and
``log_softmax`` first (``from_logits=False``). A second backward through the same graph
(``retain_graph``) finds the buffer taken and recomputes it: the same gradient again.
"""

from __future__ import annotations

import pytest
import torch

import latalign as la
from latalign.align.backends import get
from latalign.align.backends.base import softmax_emissions
from latalign.align.backends.numba_cpu import NumbaBackend


def _problem(dtype, seed=0, nb=3, tmax=9, ncls=11, smax=4):
    gen = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(nb, tmax, ncls, generator=gen, dtype=dtype)
    targets = torch.randint(1, ncls, (nb, smax), generator=gen, dtype=torch.int32)
    in_len = torch.tensor([tmax, tmax - 2, 5])
    tg_len = torch.tensor([smax, 3, 2])
    return logits, targets, in_len, tg_len


def _ctc(x, targets, in_len, tg_len):
    return la.ctc_loss(x, targets, in_len, tg_len, from_logits=True, backend="numba")


def _axe(x, targets, in_len, tg_len):
    return la.axe_loss(x, targets, in_len, tg_len, from_logits=True, backend="numba")


def _dag(x, targets, in_len, tg_len):
    nb, tmax, _ = x.shape
    gen = torch.Generator().manual_seed(7)
    trans = torch.randn(nb, tmax, tmax, generator=gen, dtype=torch.float64).log_softmax(-1)
    return la.dag_loss(
        x, trans.to(x.dtype), targets, in_len, tg_len, from_logits=True, backend="numba"
    )


LOSSES = {"ctc": _ctc, "axe": _axe, "dag": _dag}


def _value_and_grad(loss_fn, logits, *args):
    x = logits.clone().requires_grad_()
    loss = loss_fn(x, *args)
    (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kept_softmax_equals_recomputed(monkeypatch, name, dtype):
    logits, *args = _problem(dtype)
    logits = logits.transpose(0, 1).contiguous().transpose(0, 1)  # a (T, N, C) layout
    kept = _value_and_grad(LOSSES[name], logits, *args)
    monkeypatch.setattr(NumbaBackend, "keep_softmax", False)
    recomputed = _value_and_grad(LOSSES[name], logits, *args)
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 0}
    # float32: the emissions round differently (x[y] - lse against log_softmax's output)
    torch.testing.assert_close(kept[0].double(), recomputed[0].double(), **tol)
    torch.testing.assert_close(kept[1], recomputed[1], **tol)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_kept_softmax_equals_log_softmax_first(name):
    logits, *args = _problem(torch.float64, seed=1)
    loss, grad = _value_and_grad(LOSSES[name], logits, *args)
    x = logits.clone().requires_grad_()
    fn = {"ctc": la.ctc_loss, "axe": la.axe_loss}.get(name)
    if fn is None:
        nb, tmax, _ = x.shape
        gen = torch.Generator().manual_seed(7)
        trans = torch.randn(nb, tmax, tmax, generator=gen, dtype=torch.float64).log_softmax(-1)
        ref = la.dag_loss(x.log_softmax(-1), trans, *args, backend="numba")
    else:
        ref = fn(x.log_softmax(-1), *args, backend="numba")
    (ref_grad,) = torch.autograd.grad(ref, x)
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_second_backward_through_the_same_graph_recomputes(name):
    logits, *args = _problem(torch.float32, seed=2)
    x = logits.clone().requires_grad_()
    loss = LOSSES[name](x, *args)
    (first,) = torch.autograd.grad(loss, x, retain_graph=True)
    (second,) = torch.autograd.grad(loss, x)
    torch.testing.assert_close(first, second, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_a_target_far_below_the_row_keeps_its_log_probability(name):
    # float32's softmax underflows to 0 ~87 nats below a row's mass; the emissions stay
    # finite and exact: from the blank's column (CTC, AXE), from the row's logsumexp (DAG,
    # whose gathered columns are all targets)
    logits, targets, in_len, tg_len = _problem(torch.float32, seed=3)
    logits[:, :, 0] = 150.0  # id 0 (the blank, never a target) holds the row's mass
    x = logits.clone().requires_grad_()
    loss, grad = _value_and_grad(LOSSES[name], logits, targets, in_len, tg_len)
    ref, ref_grad = _value_and_grad(
        LOSSES[name], logits.double(), targets, in_len, tg_len
    )  # float64: nothing underflows
    assert torch.isfinite(loss) and torch.isfinite(x).all()
    torch.testing.assert_close(loss.double(), ref, rtol=1e-6, atol=0)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-4, atol=1e-6)


def test_emissions_from_the_softmax_equal_log_softmax():
    gen = torch.Generator().manual_seed(4)
    src = (5 * torch.randn(4, 6, 50, generator=gen)).transpose(0, 1)  # a strided view
    src[0, 0, :] = -200.0
    src[0, 0, 7] = 0.0  # row (0, 0): every gathered column 200 nats below the mass
    src[1, 2, 3] = float("-inf")  # a gathered column of probability 0
    idx = torch.tensor([[3, 9, 20]] * 6)
    em, p = softmax_emissions(src, idx)
    ref = src.double().log_softmax(-1).gather(2, idx.view(6, 1, 3).expand(6, 4, 3))
    torch.testing.assert_close(em, ref, rtol=0, atol=2e-6)
    assert em[1, 2, 0] == float("-inf") and p.shape == src.shape
    assert torch.isfinite(em[0, 0]).all() and (p[0, 0, idx[0]] == 0).all()


def test_no_buffer_kept_without_a_backward():
    logits, targets, in_len, _ = _problem(torch.float32)
    backend = get("numba")
    idx = targets.long()
    _, _, scratch = backend.emissions(logits, idx, in_len, True, keep=False)
    assert scratch == []
    _, _, scratch = backend.emissions(logits, idx, in_len, True, keep=True)
    assert len(scratch) == 1 and scratch[0].shape == logits.shape
    _, _, scratch = backend.emissions(logits.half(), idx, in_len, True, keep=True)
    assert scratch == []  # half precision: the chunked path, no float32 copy of the logits
