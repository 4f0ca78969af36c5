"""The DAG Triton kernels against numba and the brute-force oracle.

Without CUDA this runs Triton's interpreter on CPU tensors (``TRITON_INTERPRET=1``, set by
``conftest.py`` before the kernels are imported); sizes are tiny on purpose. Every kernel is
also compiled to a GPU binary without a GPU (``triton_aot_dag.py``).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import HAS_TRITON
from dag_cases import oracle, problem

import latalign as la

pytestmark = [
    # the interpreter evaluates log(0) = -inf and inf - inf in masked-off lanes with numpy
    pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
    pytest.mark.skipif(not HAS_TRITON, reason="needs triton and, for CPU tensors, its interpreter"),
]

# (L_b, n): feasible graphs of several shapes and each kind of "no path"
SHAPES = ([6, 5, 3, 1, 4, 2], [4, 5, 2, 1, 0, 3])


def _run(backend, src, trans, targets, vl, tl, **kw):
    x = src.clone().requires_grad_()
    t = trans.clone().requires_grad_()
    loss = la.dag_loss(x, t, targets, vl, tl, reduction="none", backend=backend, **kw)
    return (loss.detach(), *torch.autograd.grad(loss.sum(), (x, t)))


@pytest.mark.parametrize("from_logits", [False, True])
def test_values_gradients_and_best_paths_match_numba_and_enumeration(from_logits):
    logits, trans, targets, vl, tl = problem(21, *SHAPES)
    src = logits if from_logits else logits.log_softmax(-1)
    got = _run("triton", src, trans, targets, vl, tl, zero_infinity=True, from_logits=from_logits)
    ref = _run("numba", src, trans, targets, vl, tl, zero_infinity=True, from_logits=from_logits)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13)
    loss, gx, gt = got
    for b in range(len(vl)):
        lb, n = int(vl[b]), int(tl[b])
        xb = src[b, :lb].clone().requires_grad_()
        tb = trans[b, :lb, :lb].clone().requires_grad_()
        o = oracle(xb.log_softmax(-1) if from_logits else xb, tb, targets[b, :n].tolist())
        if math.isinf(o.item()):
            assert loss[b] == 0 and not gx[b].any() and not gt[b].any()
            continue
        assert math.isclose(loss[b].item(), o.item(), rel_tol=1e-12)
        rx, rt = torch.autograd.grad(o, (xb, tb), allow_unused=True, materialize_grads=True)
        torch.testing.assert_close(gx[b, :lb], rx, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(gt[b, :lb, :lb], rt.triu(1), rtol=1e-9, atol=1e-12)
    # from logits the Triton log-softmax kernel rounds differently in the last bit: same
    # paths, scores to 1e-12 (bit-identical from log-probabilities: see the ties test)
    got = la.dag_best_path(src, trans, targets, vl, tl, backend="triton", from_logits=from_logits)
    ref = la.dag_best_path(src, trans, targets, vl, tl, backend="numba", from_logits=from_logits)
    assert [p.vertices for p in got] == [p.vertices for p in ref]
    for p, q in zip(got, ref):
        assert (
            p.score == q.score
            if math.isinf(q.score)
            else math.isclose(p.score, q.score, rel_tol=1e-12)
        )


def test_ties_and_coarse_values_give_numbas_paths_bit_for_bit():
    logits, trans, targets, vl, tl = problem(22, *SHAPES)
    lp = (logits.log_softmax(-1) * 2).round() / 2  # many exact ties between predecessors
    tr = (trans * 2).round() / 2
    got = la.dag_best_vertices(lp, tr, targets, vl, tl, backend="triton")
    ref = la.dag_best_vertices(lp, tr, targets, vl, tl, backend="numba")
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
    uniform = torch.zeros(1, 7, 3, dtype=torch.float64)
    (path,) = la.dag_best_path(
        uniform, torch.zeros(1, 7, 7), torch.tensor([[2, 0, 1, 1]]), [7], [4], backend="triton"
    )
    assert path.vertices == (0, 1, 2, 6)


def test_tiles_longer_than_one_block(monkeypatch):
    from latalign.align.backends import dag_triton

    monkeypatch.setattr(dag_triton, "MAX_BLOCK", 16)
    logits, trans, targets, vl, tl = problem(23, [34, 20], [9, 18], ncls=7)
    for a, b in zip(
        _run("triton", logits, trans, targets, vl, tl, from_logits=True),
        _run("numba", logits, trans, targets, vl, tl, from_logits=True),
    ):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)
    lp = logits.log_softmax(-1)
    got = la.dag_best_vertices(lp, trans, targets, vl, tl, backend="triton")
    ref = la.dag_best_vertices(lp, trans, targets, vl, tl, backend="numba")
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])


@pytest.mark.parametrize("poison", [math.nan, math.inf, -math.inf])
def test_padding_never_enters(poison):
    logits, trans, targets, vl, tl = problem(24, [5, 3, 4], [3, 2, 4], lmax=6, smax=5)
    lp = logits.log_softmax(-1)
    dirty, dirty_tr, dirty_tg = lp.clone(), trans.clone(), targets.clone()
    later = torch.ones(6, 6, dtype=torch.bool).triu(1)
    for b in range(3):
        lb, n = int(vl[b]), int(tl[b])
        dirty[b, lb:] = poison
        dirty_tr[b, lb:] = poison
        dirty_tr[b, :, lb:] = poison
        dirty_tr[b][~later] = poison
        dirty_tg[b, n:] = [10**6, -3, 2][b]
    clean = _run("triton", lp, trans, targets, vl, tl)
    got = _run("triton", dirty, dirty_tr, dirty_tg, vl, tl)
    for a, b in zip(got, clean):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_no_path_gives_numbas_nan_gradient():
    logits, trans, targets, vl, tl = problem(25, [3, 2, 4, 3], [0, 3, 1, 2], smax=3)
    got = _run("triton", logits, trans, targets, vl, tl, from_logits=True)
    ref = _run("numba", logits, trans, targets, vl, tl, from_logits=True)
    assert torch.isinf(got[0][:3]).all()
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, equal_nan=True)


def test_gradcheck():
    logits, trans, targets, vl, tl = problem(26, [4, 3], [3, 2], ncls=3)
    x = logits.clone().requires_grad_()
    t = trans.clone().requires_grad_()

    def f(a, b):
        return la.dag_loss(a, b, targets, vl, tl, backend="triton")

    assert torch.autograd.gradcheck(f, (x, t), eps=1e-6, atol=1e-8, fast_mode=True)


def test_single_vertex_and_empty_batch():
    lp = torch.randn(1, 3, 4, dtype=torch.float64).log_softmax(-1)
    got = la.dag_loss(lp, torch.zeros(1, 3, 3), torch.tensor([[2]]), [1], [1], backend="triton")
    assert math.isclose(got.item(), -lp[0, 0, 2].item(), rel_tol=1e-15)
    empty = la.dag_loss(
        torch.zeros(0, 3, 4),
        torch.zeros(0, 3, 3),
        torch.zeros(0, 2, dtype=torch.int64),
        torch.zeros(0, dtype=torch.int64),
        torch.zeros(0, dtype=torch.int64),
        reduction="sum",
        backend="triton",
    )
    assert empty.item() == 0.0


def test_every_kernel_compiles_for_a_gpu(tmp_path):
    # the interpreter accepts programs the compiler refuses: compile each DAG kernel to a
    # cubin (triton ships ptxas), no GPU needed, in a fresh process without the interpreter
    script = Path(__file__).with_name("triton_aot_dag.py")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    out = subprocess.run(
        [sys.executable, str(script), "80"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0 and "0 failed" in out.stdout, out.stdout + out.stderr[-3000:]
