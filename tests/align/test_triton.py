"""The Triton backend against numba, the brute-force oracle and torch's CTC.

On a machine without CUDA this runs Triton's interpreter on CPU tensors
(``TRITON_INTERPRET=1``, set by ``conftest.py`` before the kernels are imported). Sizes are
tiny on purpose: the interpreter executes every program in Python.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import HAS_TRITON, oracle_loss, torch_ctc

import latalign as la
from latalign.align import bruteforce
from latalign.align.backends import resolve
from latalign.align.objective import OPERATORS, Objective

# the interpreter evaluates log(0) = -inf and inf - inf in masked-off lanes with numpy
INTERPRETER_NOISE = [
    pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
]
pytestmark = [
    *INTERPRETER_NOISE,
    pytest.mark.skipif(
        not HAS_TRITON,
        reason="needs triton and, for CPU tensors, its interpreter (set when there is no CUDA; "
        "on a GPU machine tests/gpu/test_kernels_gpu.py runs the compiled kernels)",
    ),
]

CASES = [  # (operators, aggregate, weights, causal)
    (la.SCHEMATIC_CTC_OPERATORS, "sum", None, False),
    (la.AXE_OPERATORS, "max", {"clone_prediction": 0.3}, False),
    (la.AXE_OPERATORS, "max", None, True),
    (OPERATORS, "sum", {"clone_target": 0.5, "delimiter": 2.0}, True),
    (OPERATORS, "max", {"clone_prediction": 1.5}, False),
    (("align", "clone_prediction"), "sum", {"clone_prediction": 0.0}, False),
    (("align", "delimiter"), "sum", None, False),  # infeasible when m < n
]


def _problem(seed: int, nb: int = 3, tmax: int = 4, smax: int = 3, ncls: int = 5):
    gen = torch.Generator().manual_seed(seed)
    lp = torch.randn(nb, tmax, ncls, generator=gen, dtype=torch.float64).log_softmax(-1)
    targets = torch.randint(1, ncls, (nb, smax), generator=gen)
    in_len = torch.randint(1, tmax + 1, (nb,), generator=gen)
    tg_len = torch.randint(0, smax + 1, (nb,), generator=gen)
    in_len[0], tg_len[0] = tmax, smax  # one full-size sequence; the others m != n mostly
    return lp, targets, in_len, tg_len


def _loss(lp, targets, in_len, tg_len, case, backend, **kw):
    ops, agg, weights, causal = case
    return la.latent_alignment_loss(
        lp,
        targets,
        in_len,
        tg_len,
        operators=ops,
        aggregate=agg,
        weights=weights,
        causal=causal,
        backend=backend,
        reduction="none",
        **kw,
    )


def _numba_and_triton(inputs, targets, in_len, tg_len, case, grad_rtol, **kw):
    """Loss and gradient w.r.t. ``inputs`` from both backends, checked equal; triton's pair."""
    out = {}
    for backend in ("numba", "triton"):
        x = inputs.clone().requires_grad_()
        loss = _loss(x, targets, in_len, tg_len, case, backend, **kw)
        (g,) = torch.autograd.grad(loss.sum(), x)
        out[backend] = (loss.detach(), g)
    torch.testing.assert_close(out["triton"][0], out["numba"][0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out["triton"][1], out["numba"][1], rtol=grad_rtol, atol=1e-12)
    return out["triton"]


def _unique_best(lp_b, target, obj) -> bool:
    scores = sorted((s for _, s in bruteforce.enumerate_paths(lp_b, target, obj)), reverse=True)
    return len(scores) < 2 or scores[0] - scores[1] > 1e-9


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{'+'.join(c[0])}-{c[1]}-{c[3]}")
def test_values_and_gradients_match_numba_and_enumeration(case):
    lp, targets, in_len, tg_len = _problem(seed=len(case[0]) + 7 * case[3])
    loss, grad = _numba_and_triton(lp, targets, in_len, tg_len, case, 1e-10, zero_infinity=True)
    ops, agg, weights, causal = case
    obj = Objective.make(ops, agg, weights, causal)
    for b in range(lp.shape[0]):
        target = targets[b, : tg_len[b]].tolist()
        rows = lp[b, : in_len[b]]
        ref = bruteforce.algebra_loss(rows.tolist(), target, obj)
        got = loss[b].item()
        assert (got == 0.0) if math.isinf(ref) else math.isclose(got, ref, rel_tol=1e-10)
        if math.isinf(ref) or (agg == "max" and not _unique_best(rows.tolist(), target, obj)):
            continue
        x = rows.clone().requires_grad_()
        (g_ref,) = torch.autograd.grad(oracle_loss(x, target, obj), x)
        torch.testing.assert_close(grad[b, : in_len[b]], g_ref, rtol=1e-9, atol=1e-12)


def test_infeasible_is_inf_with_nan_gradient_unless_zero_infinity():
    lp, targets, _, _ = _problem(seed=3, nb=1, tmax=2, smax=3)
    case = (("align", "delimiter"), "sum", None, False)
    x = lp.clone().requires_grad_()
    loss = _loss(x, targets, [2], [3], case, "triton")
    assert torch.isinf(loss).all()
    (g,) = torch.autograd.grad(loss.sum(), x)
    y = lp.clone().requires_grad_()
    (g_ref,) = torch.autograd.grad(_loss(y, targets, [2], [3], case, "numba").sum(), y)
    assert torch.isnan(g).any()
    torch.testing.assert_close(g, g_ref, equal_nan=True)


def test_tiles_longer_than_one_block(monkeypatch):
    # lower the tile to 16 so that diagonals, columns, CTC states and the vocabulary loop
    from latalign.align.backends import triton_module

    monkeypatch.setattr(triton_module(), "MAX_BLOCK", 16)
    gen = torch.Generator().manual_seed(5)
    nb, tmax, smax, ncls = 2, 18, 17, 40
    logits = torch.randn(nb, tmax, ncls, generator=gen, dtype=torch.float64)
    targets = torch.randint(1, ncls, (nb, smax), generator=gen)
    in_len, tg_len = torch.tensor([18, 17]), torch.tensor([17, 12])
    for case in (CASES[3], CASES[4]):
        _numba_and_triton(logits, targets, in_len, tg_len, case, 1e-9, from_logits=True)
    tg_ctc = torch.arange(1, smax + 1).repeat(nb, 1)  # no equal neighbours: feasible
    x = logits.clone().requires_grad_()
    got = la.ctc_loss(x, tg_ctc, in_len, tg_len, from_logits=True, backend="triton")
    (g,) = torch.autograd.grad(got, x)
    y = logits.clone().requires_grad_()
    ref = torch_ctc(y, tg_ctc, in_len, tg_len)
    (g_ref,) = torch.autograd.grad(ref, y)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g, g_ref, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("n", [1, 4])
def test_uniform_distributions_give_the_trivial_path(n):
    # every path through p_j(y_i) = p_j(ε) ties; the canonical order makes align win
    lp = torch.full((1, n, 5), -math.log(5), dtype=torch.float64)
    targets = torch.arange(1, n + 1).view(1, n)
    for ops in (la.AXE_OPERATORS, OPERATORS):
        (got,) = la.best_alignment(lp, targets, [n], [n], operators=ops, backend="triton")
        (ref,) = la.best_alignment(lp, targets, [n], [n], operators=ops, backend="numba")
        assert got.operators == ("align",) * n == ref.operators
        assert got.alpha == tuple((j,) for j in range(1, n + 1))
        assert got.score == pytest.approx(n * -math.log(5))


def test_best_paths_and_ties_match_numba():
    lp, targets, in_len, tg_len = _problem(seed=11, nb=4, tmax=5, smax=5)
    lp = (lp * 2).round() / 2  # coarse values: many exact ties between moves
    for case in CASES[1:5]:
        ops, _, weights, causal = case
        kw = dict(operators=ops, weights=weights, causal=causal)
        got = la.best_alignment(lp, targets, in_len, tg_len, backend="triton", **kw)
        ref = la.best_alignment(lp, targets, in_len, tg_len, backend="numba", **kw)
        assert got == ref


@pytest.mark.parametrize("zero_infinity", [False, True])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_ctc_matches_torch(zero_infinity, reduction):
    gen = torch.Generator().manual_seed(2)
    nb, tmax, smax, ncls = 4, 6, 3, 5
    logits = torch.randn(nb, tmax, ncls, generator=gen, dtype=torch.float64)
    targets = torch.randint(1, ncls, (nb, smax), generator=gen)
    targets[3] = torch.tensor([2, 2, 2])  # needs 5 frames: infeasible with m = 4
    in_len, tg_len = torch.tensor([6, 5, 3, 4]), torch.tensor([3, 2, 0, 3])
    x = logits.clone().requires_grad_()
    got = la.ctc_loss(
        x,
        targets,
        in_len,
        tg_len,
        reduction=reduction,
        zero_infinity=zero_infinity,
        from_logits=True,
        backend="triton",
    )
    y = logits.clone().requires_grad_()
    ref = torch_ctc(y, targets, in_len, tg_len, reduction=reduction, zero_infinity=zero_infinity)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    if zero_infinity:
        (g,) = torch.autograd.grad(got.sum(), x)
        (g_ref,) = torch.autograd.grad(ref.sum(), y)
        torch.testing.assert_close(g, g_ref, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_logits_path_equals_log_softmax_path(dtype):
    gen = torch.Generator().manual_seed(4)
    logits = (3 * torch.randn(2, 4, 37, generator=gen, dtype=torch.float64)).to(dtype)
    targets = torch.randint(1, 37, (2, 3), generator=gen)
    in_len, tg_len = torch.tensor([4, 3]), torch.tensor([3, 2])
    out = []
    for from_logits in (True, False):
        x = logits.clone().requires_grad_()
        src = x if from_logits else x.log_softmax(-1)
        loss = la.axe_loss(src, targets, in_len, tg_len, from_logits=from_logits, backend="triton")
        (g,) = torch.autograd.grad(loss, x)
        out.append((loss.detach(), g))
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out[0][0], out[1][0], **tol)
    torch.testing.assert_close(out[0][1], out[1][1], **tol)
    assert out[0][0].dtype == dtype and out[0][1].dtype == dtype


def test_auto_picks_numba_on_cpu():
    assert resolve(None, torch.device("cpu")) == "numba"
    assert resolve("triton", torch.device("cpu")) == "triton"  # the interpreter is on here


@pytest.mark.parametrize("sm", [80, 90])
def test_every_kernel_compiles_for_a_gpu(sm, tmp_path):
    # the interpreter accepts programs the compiler refuses (loop-carried types, branch dtypes):
    # compile every kernel to a cubin (triton ships ptxas), no GPU needed, in a fresh process
    script = Path(__file__).with_name("triton_aot.py")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    out = subprocess.run(
        [sys.executable, str(script), str(sm)], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0 and "0 failed" in out.stdout, out.stdout + out.stderr[-3000:]
