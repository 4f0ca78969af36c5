"""Triton kernels on a real GPU: against numba on real shapes, memory, long sequences.

Skipped without CUDA. On CUDA, ``TRITON_INTERPRET`` must be unset (tests/align/conftest.py
only sets it when there is no GPU).
"""

from __future__ import annotations

import pytest
import torch

import latalign as la

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _batch(nb: int, n: int, vocab: int, seed: int = 0, device: str = "cuda"):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(nb, n, vocab, generator=gen)
    targets = torch.randint(5, vocab, (nb, n), generator=gen)
    lengths = torch.randint(max(1, n // 2), n + 1, (nb,), generator=gen)
    lengths[0] = n
    return logits.to(device), targets.to(device), lengths.to(device)


def test_auto_picks_triton_on_cuda():
    from latalign.align.backends import resolve

    assert resolve(None, torch.device("cuda")) == "triton"


@pytest.mark.parametrize("n", [30, 100])
@pytest.mark.parametrize("loss", ["axe", "causal_axe", "ctc", "schematic_ctc"])
def test_triton_matches_numba_on_real_shapes(n, loss):
    logits, targets, lengths = _batch(64, n, 8000)
    if loss == "ctc":  # no equal neighbours: every sequence feasible
        targets = 5 + (torch.arange(n, device="cuda") % 7).repeat(64, 1)

    def run(x, backend):
        args = (x, targets.to(x.device), lengths.to(x.device), lengths.to(x.device))
        kw = dict(from_logits=True, backend=backend, reduction="sum", blank=4)
        if loss == "ctc":
            return la.ctc_loss(*args, **kw)
        if loss == "schematic_ctc":
            return la.latent_alignment_loss(*args, **kw)
        return la.axe_loss(*args, causal=loss == "causal_axe", **kw)

    xg = logits.clone().requires_grad_()
    got = run(xg, "triton")
    got.backward()
    xc = logits.cpu().clone().requires_grad_()
    ref = run(xc, "numba")
    ref.backward()
    torch.testing.assert_close(got.cpu(), ref, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(xg.grad.cpu(), xc.grad, rtol=1e-4, atol=1e-5)


def test_best_alignment_matches_numba():
    logits, targets, lengths = _batch(16, 30, 64)
    lp = logits.log_softmax(-1).double()
    got = la.best_alignment(lp, targets, lengths, lengths, blank=4, backend="triton")
    ref = la.best_alignment(lp.cpu(), targets.cpu(), lengths.cpu(), lengths.cpu(), blank=4)
    assert got == ref


@pytest.mark.parametrize("loss", ["axe", "ctc"])
def test_n1000_batch64_peak_below_2gib(loss):
    # the dynamic program's memory: a small vocabulary keeps the logits out of the figure
    logits, targets, lengths = _batch(64, 1000, 64)
    if loss == "ctc":
        targets = 5 + (torch.arange(1000, device="cuda") % 7).repeat(64, 1)
    x = logits.requires_grad_()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn = la.ctc_loss if loss == "ctc" else la.axe_loss
    fn(x, targets, lengths, lengths, blank=4, from_logits=True, backend="triton").backward()
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() < 2 * 1024**3


def test_n4000_batch8_runs():
    logits, targets, lengths = _batch(8, 4000, 64)
    x = logits.requires_grad_()
    loss = la.axe_loss(x, targets, lengths, lengths, blank=4, from_logits=True, backend="triton")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
