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


# --- issue 16: layouts, host synchronisations, launches, the device guard -------------------------


@pytest.mark.parametrize("loss", ["axe", "ctc"])
def test_any_layout_and_host_lengths_match_the_contiguous_call(loss):
    # transposed logits (torch CTC's (T, N, C) viewed as (N, T, C)), sliced targets, int32
    # lengths as a column of a 2-D tensor, on the CPU while the logits are on CUDA
    logits, targets, lengths = _batch(8, 30, 500)
    if loss == "ctc":
        targets = 5 + (torch.arange(30, device="cuda") % 7).repeat(8, 1)
    fn = la.ctc_loss if loss == "ctc" else la.axe_loss
    base = logits.transpose(0, 1).contiguous().requires_grad_()  # (T, N, C)
    wide = torch.zeros(8, 61, dtype=torch.int32, device="cuda")
    wide[:, 1::2] = targets
    table = torch.stack([lengths, lengths * 0 + 10**6], 1).to(torch.int32).cpu()
    kw = dict(blank=4, from_logits=True, backend="triton", reduction="none")
    got = fn(base.transpose(0, 1), wide[:, 1::2], table[:, 0], lengths.cpu().int(), **kw)
    (g,) = torch.autograd.grad(got.sum(), base)
    ref_x = base.detach().transpose(0, 1).contiguous().requires_grad_()
    ref = fn(ref_x, targets, lengths, lengths, **kw)
    (g_ref,) = torch.autograd.grad(ref.sum(), ref_x)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    torch.testing.assert_close(g.transpose(0, 1), g_ref, rtol=0, atol=0)


@pytest.mark.parametrize("validate", [True, False])
@pytest.mark.parametrize("loss", ["axe", "ctc", "latent"])
def test_host_synchronisations_per_call_on_cuda(loss, validate):
    from latalign.align._counting import count_host_syncs

    logits, targets, lengths = _batch(64, 30, 8000)
    targets = 5 + (torch.arange(30, device="cuda") % 7).repeat(64, 1)
    x = logits.requires_grad_()
    fns = {"axe": la.axe_loss, "ctc": la.ctc_loss, "latent": la.latent_alignment_loss}
    kw = dict(blank=4, from_logits=True, validate=validate, zero_infinity=True)
    fns[loss](x, targets, lengths, lengths, **kw).backward()  # compile, cache the constants
    with count_host_syncs(cpu_as_device=False) as counts:
        fns[loss](x, targets, lengths, lengths, **kw).backward()
    assert counts.syncs == (1 if validate else 0), counts.sync_ops
    assert counts.host_to_device == 0
    assert counts.triton_launches == (5 if loss == "latent" else 4)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_tensors_on_another_device_than_the_current_one():
    logits, targets, lengths = _batch(4, 20, 100, device="cuda:1")
    x = logits.requires_grad_()
    with torch.cuda.device(0):
        loss = la.axe_loss(x, targets, lengths, lengths, blank=4, from_logits=True)
        loss.backward()
    ref_x = logits.detach().cpu().requires_grad_()
    ref = la.axe_loss(ref_x, targets.cpu(), lengths.cpu(), lengths.cpu(), blank=4, from_logits=True)
    ref.backward()
    torch.testing.assert_close(loss.cpu(), ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(x.grad.cpu(), ref_x.grad, rtol=1e-4, atol=1e-5)
