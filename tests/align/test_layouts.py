"""Every public function gives the contiguous int64 call's result for any input layout.

Log-probabilities or logits transposed (a ``(T, N, C)`` tensor viewed as ``(N, T, C)``, the
layout torch's own CTC uses), sliced (offsets, strides in time and in the vocabulary),
expanded over the batch (stride 0) or channels-first; targets transposed, sliced or
expanded; int32 or int64 targets and lengths, lengths as a column of a 2-D tensor, strided,
or a Python list. Values and gradients must equal those of the same call on contiguous
int64 inputs, on every backend (Triton through its interpreter on the CPU).
"""

from __future__ import annotations

import pytest
import torch
from conftest import BACKENDS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import latalign as la

pytestmark = [  # the interpreter evaluates log(0) and inf - inf in masked-off lanes
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]

LP_LAYOUTS = ("contiguous", "transposed", "sliced", "vocab_strided", "expanded", "channels_first")
TG_LAYOUTS = ("contiguous", "transposed", "sliced", "expanded")
LEN_LAYOUTS = ("contiguous", "column", "strided", "list")


def _layout_lp(layout: str, nb: int, tmax: int, ncls: int, gen):
    """A leaf tensor and the ``(N, T, C)`` view of it that the call receives."""
    shapes = {
        "contiguous": (nb, tmax, ncls),
        "transposed": (tmax, nb, ncls),
        "sliced": (nb, 2 * tmax, ncls + 3),
        "vocab_strided": (nb, tmax, 2 * ncls),
        "expanded": (1, tmax, ncls),
        "channels_first": (nb, ncls, tmax),
    }
    leaf = (2 * torch.randn(shapes[layout], generator=gen, dtype=torch.float64)).requires_grad_()
    views = {
        "contiguous": lambda x: x,
        "transposed": lambda x: x.transpose(0, 1),
        "sliced": lambda x: x[:, ::2, 1 : ncls + 1],
        "vocab_strided": lambda x: x[..., ::2],
        "expanded": lambda x: x.expand(nb, tmax, ncls),
        "channels_first": lambda x: x.transpose(1, 2),
    }
    return leaf, views[layout]


def _layout_targets(targets: torch.Tensor, layout: str, dtype: torch.dtype) -> torch.Tensor:
    t = targets.to(dtype)
    if layout == "transposed":
        return t.t().contiguous().t()
    if layout == "sliced":
        wide = torch.zeros(t.shape[0], 2 * t.shape[1] + 1, dtype=dtype)
        wide[:, 1::2] = t
        return wide[:, 1::2]
    if layout == "expanded":
        return t[:1].expand_as(t)
    return t


def _layout_lengths(lengths: torch.Tensor, layout: str, dtype: torch.dtype):
    t = lengths.to(dtype)
    if layout == "column":  # as a user would: one column of a (N, 2) table
        return torch.stack([t, torch.full_like(t, 10**6)], dim=1)[:, 0]
    if layout == "strided":
        return torch.stack([t, t], dim=1).view(-1)[::2]
    if layout == "list":
        return t.tolist()
    return t


@st.composite
def problems(draw):
    nb = draw(st.integers(1, 3))
    tmax = draw(st.integers(1, 5))
    smax = draw(st.integers(0, 4))
    ncls = draw(st.integers(3, 7))
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    lp_layout = draw(st.sampled_from(LP_LAYOUTS))
    if lp_layout == "expanded":
        targets = torch.randint(1, ncls, (1, smax), generator=gen).expand(nb, smax)
    else:
        targets = torch.randint(1, ncls, (nb, smax), generator=gen)
    in_len = torch.randint(1, tmax + 1, (nb,), generator=gen)
    tg_len = torch.randint(0, smax + 1, (nb,), generator=gen)
    return dict(
        nb=nb,
        tmax=tmax,
        ncls=ncls,
        gen=gen,
        lp_layout=lp_layout,
        tg_layout=draw(st.sampled_from(TG_LAYOUTS)),
        in_layout=draw(st.sampled_from(LEN_LAYOUTS)),
        tg_len_layout=draw(st.sampled_from(LEN_LAYOUTS)),
        tg_dtype=draw(st.sampled_from((torch.int32, torch.int64))),
        len_dtype=draw(st.sampled_from((torch.int32, torch.int64))),
        from_logits=draw(st.booleans()),
        targets=targets.contiguous(),
        in_len=in_len,
        tg_len=tg_len,
    )


def _call(fn, p, backend, x, targets, in_len, tg_len):
    src = x if p["from_logits"] else x.log_softmax(-1)
    return fn(src, targets, in_len, tg_len, from_logits=p["from_logits"], backend=backend)


def _check(fn, p, differentiable: bool = True):
    leaf, view = _layout_lp(p["lp_layout"], p["nb"], p["tmax"], p["ncls"], p["gen"])
    targets = p["targets"]
    if p["tg_layout"] == "expanded" and p["lp_layout"] != "expanded":
        targets = targets[:1].expand_as(targets).contiguous()  # same values in both calls
    odd = (
        _layout_targets(targets, p["tg_layout"], p["tg_dtype"]),
        _layout_lengths(p["in_len"], p["in_layout"], p["len_dtype"]),
        _layout_lengths(p["tg_len"], p["tg_len_layout"], p["len_dtype"]),
    )
    for backend in BACKENDS:
        got = _call(fn, p, backend, view(leaf), *odd)
        ref = _call(fn, p, backend, view(leaf).contiguous(), targets, p["in_len"], p["tg_len"])
        if not differentiable:
            assert got == ref, backend
            continue
        (g,) = torch.autograd.grad(got.sum(), leaf)
        (g_ref,) = torch.autograd.grad(ref.sum(), leaf)
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12, msg=f"{backend} values")
        torch.testing.assert_close(
            g, g_ref, rtol=1e-10, atol=1e-12, equal_nan=True, msg=f"{backend} gradients"
        )


LAYOUT_SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@LAYOUT_SETTINGS
@given(problems())
def test_ctc_any_layout(p):
    _check(lambda *a, **k: la.ctc_loss(*a, reduction="none", zero_infinity=True, **k), p)


@LAYOUT_SETTINGS
@given(problems(), st.booleans())
def test_axe_any_layout(p, causal):
    _check(lambda *a, **k: la.axe_loss(*a, reduction="none", causal=causal, delta=0.5, **k), p)


@LAYOUT_SETTINGS
@given(problems())
def test_latent_sum_any_layout(p):
    _check(
        lambda *a, **k: la.latent_alignment_loss(
            *a, operators=la.OPERATORS, reduction="none", zero_infinity=True, **k
        ),
        p,
    )


@LAYOUT_SETTINGS
@given(problems())
def test_best_alignment_any_layout(p):
    _check(la.best_alignment, p, differentiable=False)


def test_lengths_column_on_triton_as_the_issue_reports():
    # issue 16: lengths taken as a column of a 2-D tensor gave wrong losses on triton
    if "triton" not in BACKENDS:
        pytest.skip("triton not runnable here")
    gen = torch.Generator().manual_seed(0)
    lp = torch.randn(4, 6, 7, generator=gen, dtype=torch.float64).log_softmax(-1)
    tg = torch.randint(1, 7, (4, 4), generator=gen)
    lens = torch.tensor([[6, 4], [3, 2], [5, 3], [4, 4]])
    ref = la.axe_loss(lp, tg, lens[:, 0].clone(), lens[:, 1].clone(), reduction="none")
    for backend in BACKENDS:
        got = la.axe_loss(lp, tg, lens[:, 0], lens[:, 1], reduction="none", backend=backend)
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12, msg=backend)
