"""The DAG latent alignment (SPEC.md, "DAG latent alignment") against brute-force enumeration.

Every backend that runs here (numba, torch; triton under the interpreter in
``test_dag_triton.py``) is checked against the path-by-path oracle on tiny graphs (values,
gradients w.r.t. log-probabilities, logits and transitions, the Viterbi path and its
score), by ``gradcheck``, and for padding, no-path cases, reductions, dtypes, views and
input validation.
"""

from __future__ import annotations

import math

import pytest
import torch
from dag_cases import oracle, problem
from hypothesis import given, settings
from hypothesis import strategies as st

import latalign as la
from latalign.align import bruteforce_dag
from latalign.align.backends import dag_torch

CPU_BACKENDS = ["numba", "torch"]
# (L_b, n) per sequence: feasible ones of every shape, and each kind of "no path"
SHAPES = ([6, 5, 4, 1, 3, 6, 2, 5, 4], [4, 5, 2, 1, 0, 7, 1, 2, 1])


def _loss(lp, tr, tg, vl, tl, backend, **kw):
    kw.setdefault("reduction", "none")
    return la.dag_loss(lp, tr, tg, vl, tl, backend=backend, **kw)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("from_logits", [False, True])
def test_values_and_gradients_match_enumeration(backend, from_logits):
    logits, trans, targets, vl, tl = problem(1, *SHAPES)
    src = logits if from_logits else logits.log_softmax(-1)
    x = src.clone().requires_grad_()
    t = trans.clone().requires_grad_()
    loss = _loss(x, t, targets, vl, tl, backend, zero_infinity=True, from_logits=from_logits)
    gx, gt = torch.autograd.grad(loss.sum(), (x, t))
    for b in range(len(vl)):
        lb, n = int(vl[b]), int(tl[b])
        target = targets[b, :n].tolist()
        xb = src[b, :lb].clone().requires_grad_()
        tb = trans[b, :lb, :lb].clone().requires_grad_()
        ref = oracle(xb.log_softmax(-1) if from_logits else xb, tb, target)
        if math.isinf(ref.item()):
            assert loss[b].item() == 0.0  # zero_infinity
            assert not gx[b].any() and not gt[b].any()
            continue
        assert math.isclose(loss[b].item(), ref.item(), rel_tol=1e-12)
        rx, rt = torch.autograd.grad(ref, (xb, tb), allow_unused=True, materialize_grads=True)
        torch.testing.assert_close(gx[b, :lb], rx, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(gt[b, :lb, :lb], rt.triu(1), rtol=1e-9, atol=1e-12)
        assert not gx[b, lb:].any() and not gt[b, lb:].any() and not gt[b, :, lb:].any()
        assert not gt[b].tril().any()  # u >= v is never read


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_best_path_matches_enumeration(backend):
    logits, trans, targets, vl, tl = problem(2, *SHAPES)
    lp = logits.log_softmax(-1)
    paths = la.dag_best_path(lp, trans, targets, vl, tl, backend=backend)
    verts, scores = la.dag_best_vertices(lp, trans, targets, vl, tl, backend=backend)
    assert verts.shape == targets.shape and verts.dtype == torch.int64
    for b, got in enumerate(paths):
        lb, n = int(vl[b]), int(tl[b])
        target = targets[b, :n].tolist()
        scored = bruteforce_dag.dag_scores(lp[b, :lb].tolist(), trans[b, :lb, :lb].tolist(), target)
        if not scored:
            assert got == la.DagPath((), float("-inf")) and not got.feasible
            assert (verts[b] == -1).all() and scores[b] == float("-inf")
            continue
        best_path, best = max(scored, key=lambda ps: ps[1])
        assert got.feasible and math.isclose(got.score, best, rel_tol=1e-12)
        assert got.vertices == best_path  # random scores: the best path is unique
        assert verts[b, :n].tolist() == list(best_path) and (verts[b, n:] == -1).all()
        assert scores[b].item() == got.score
        # the Viterbi score is the path's own score, and minus the max objective
        assert math.isclose(
            got.score,
            bruteforce_dag.dag_path_score(lp[b].tolist(), trans[b].tolist(), target, got.vertices),
            rel_tol=1e-12,
        )


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_ties_go_to_the_smallest_predecessor(backend):
    # every path has the same score: walking back from the last vertex, each step takes the
    # smallest possible predecessor, so the path is (0, 1, …, n-2, L-1)
    lb, n = 7, 4
    lp = torch.full((1, lb, 3), -math.log(3), dtype=torch.float64)
    tr = torch.full((1, lb, lb), -1.0, dtype=torch.float64)
    (got,) = la.dag_best_path(lp, tr, torch.tensor([[2, 0, 1, 1]]), [lb], [n], backend=backend)
    assert got.vertices == (0, 1, 2, lb - 1)
    assert got.score == pytest.approx(n * -math.log(3) - (n - 1))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradcheck(backend):
    logits, trans, targets, vl, tl = problem(3, [5, 4, 3], [3, 4, 2], ncls=4, lmax=5)
    x = logits.clone().requires_grad_()
    t = trans.clone().requires_grad_()

    def f(a, b):
        return la.dag_loss(a, b, targets, vl, tl, from_logits=True, backend=backend)

    assert torch.autograd.gradcheck(f, (x, t), eps=1e-6, atol=1e-8, fast_mode=True)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("poison", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("from_logits", [False, True])
def test_padding_never_enters(backend, poison, from_logits):
    logits, trans, targets, vl, tl = problem(4, [6, 4, 3, 5], [3, 4, 2, 2], lmax=7, smax=5)
    clean = logits if from_logits else logits.log_softmax(-1)
    dirty, dirty_tr, dirty_tg = clean.clone(), trans.clone(), targets.clone()
    lmax = clean.shape[1]
    later = torch.ones(lmax, lmax, dtype=torch.bool).triu(1)
    for b in range(len(vl)):
        lb, n = int(vl[b]), int(tl[b])
        dirty[b, lb:] = poison
        dirty_tr[b, lb:] = poison
        dirty_tr[b, :, lb:] = poison
        dirty_tr[b][~later] = poison  # u >= v
        dirty_tg[b, n:] = [10**6, -7, 0, 99][b]  # padding ids: anything
    out = []
    for src, tr, tg in ((clean, trans, targets), (dirty, dirty_tr, dirty_tg)):
        x = src.clone().requires_grad_()
        t = tr.clone().requires_grad_()
        loss = _loss(x, t, tg, vl, tl, backend, from_logits=from_logits)
        out.append((loss.detach(), *torch.autograd.grad(loss.sum(), (x, t))))
    (l0, gx0, gt0), (l1, gx1, gt1) = out
    assert torch.isfinite(l1).all()
    torch.testing.assert_close(l1, l0, rtol=0, atol=0)
    torch.testing.assert_close(gx1, gx0, rtol=0, atol=0)  # padding: exactly 0 in both
    torch.testing.assert_close(gt1, gt0, rtol=0, atol=0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_no_path_is_inf_with_nan_gradient_or_zero(backend):
    # n = 0, n > L_b, n = 1 < L_b; and one feasible sequence beside them
    logits, trans, targets, vl, tl = problem(5, [3, 2, 4, 3], [0, 3, 1, 2], smax=3)
    for zero_infinity in (False, True):
        x = logits.clone().requires_grad_()
        t = trans.clone().requires_grad_()
        loss = _loss(x, t, targets, vl, tl, backend, zero_infinity=zero_infinity)
        assert torch.isfinite(loss[3])
        gx, gt = torch.autograd.grad(loss.sum(), (x, t))
        if zero_infinity:
            assert (loss[:3] == 0).all() and not gx[:3].any() and not gt[:3].any()
        else:
            assert torch.isinf(loss[:3]).all() and (loss[:3] > 0).all()
            # as torch's CTC: NaN where the loss reads (log_probs: the gathered columns)
            assert all(torch.isnan(gx[b]).any() for b in range(3))
            assert torch.isnan(gt[:3]).all()
        assert torch.isfinite(gx[3]).all() and torch.isfinite(gt[3]).all()
    # a -inf edge cuts the only path of n = L_b: no path either
    cut = trans.clone()
    cut[3, 1, 2] = float("-inf")
    lp = logits.log_softmax(-1)
    assert _loss(lp, cut, targets, [3, 2, 4, 3], [1, 1, 1, 3], backend)[3].item() == math.inf
    assert la.dag_best_path(lp, cut, targets, vl, [1, 1, 1, 3], backend=backend)[3].vertices == ()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_single_vertex_single_token(backend):
    lp = torch.randn(2, 3, 4, dtype=torch.float64).log_softmax(-1)
    tr = torch.randn(2, 3, 3, dtype=torch.float64)
    loss = _loss(lp, tr, torch.tensor([[2], [3]]), [1, 1], [1, 1], backend)
    torch.testing.assert_close(loss, -lp[[0, 1], 0, [2, 3]])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_reductions_and_dtypes(backend):
    logits, trans, targets, vl, tl = problem(6, [5, 4, 6], [3, 2, 4])
    none = _loss(logits, trans, targets, vl, tl, backend, from_logits=True)
    total = _loss(logits, trans, targets, vl, tl, backend, from_logits=True, reduction="sum")
    mean = _loss(logits, trans, targets, vl, tl, backend, from_logits=True, reduction="mean")
    torch.testing.assert_close(total, none.sum())
    torch.testing.assert_close(mean, (none / tl.clamp(min=1)).mean())
    x = logits.float().requires_grad_()
    t = trans.to(torch.bfloat16).requires_grad_()
    got = la.dag_loss(x, t, targets, vl, tl, from_logits=True, backend=backend)
    assert got.dtype == torch.float32
    got.backward()
    assert x.grad.dtype == torch.float32 and t.grad.dtype == torch.bfloat16
    ref = la.dag_loss(
        logits.float().double(), t.detach().double(), targets, vl, tl, from_logits=True
    )
    assert math.isclose(got.item(), ref.item(), rel_tol=1e-6)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_from_logits_equals_log_softmax_first(backend):
    logits, trans, targets, vl, tl = problem(7, [6, 5, 4], [3, 4, 2], ncls=9)
    out = []
    for from_logits in (True, False):
        x = logits.clone().requires_grad_()
        t = trans.clone().requires_grad_()
        src = x if from_logits else x.log_softmax(-1)
        loss = _loss(src, t, targets, vl, tl, backend, from_logits=from_logits)
        out.append((loss.detach(), *torch.autograd.grad(loss.sum(), (x, t))))
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_views_int32_and_lists(backend):
    logits, trans, targets, vl, tl = problem(8, [6, 5, 4], [3, 4, 2], ncls=6)
    ref = _loss(logits, trans, targets, vl, tl, "numba", from_logits=True)
    lp_view = logits.transpose(0, 1).contiguous().transpose(0, 1)  # (N, L, V), not contiguous
    wide = torch.zeros(*logits.shape[:2], 2 * logits.shape[2], dtype=logits.dtype)
    wide[..., ::2] = logits  # a strided slice
    tr_view = trans.transpose(1, 2).contiguous().transpose(1, 2)
    tg32 = targets.to(torch.int32).t().contiguous().t()
    assert not lp_view.is_contiguous() and not tr_view.is_contiguous()
    for lp in (lp_view, wide[..., ::2]):
        got = _loss(lp, tr_view, tg32, vl.to(torch.int32), tl.tolist(), backend, from_logits=True)
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_exact_with_a_wide_dynamic_range(backend):
    # log-probabilities in the hundreds of nats: a max-shifted exp/matmul/log would lose the
    # vertices far below a step's best one; the log-space recursion stays exact
    logits, trans, targets, vl, tl = problem(9, [6, 6, 5], [4, 3, 5], scale=300.0)
    lp = logits.log_softmax(-1)
    got = _loss(lp, trans, targets, vl, tl, backend)
    for b in range(3):
        lb, n = int(vl[b]), int(tl[b])
        ref = bruteforce_dag.dag_loss(
            lp[b, :lb].tolist(), trans[b, :lb, :lb].tolist(), targets[b, :n].tolist()
        )
        assert math.isclose(got[b].item(), ref, rel_tol=1e-12)


def test_backends_agree_at_a_larger_size(monkeypatch):
    # many vertices, from logits; the torch backend in small chunks (its memory bound)
    logits, trans, targets, vl, tl = problem(10, [24, 17, 30, 9], [8, 17, 5, 6], ncls=11)
    monkeypatch.setattr(dag_torch, "CHUNK_ELEMENTS", 300)
    out = {}
    for backend in CPU_BACKENDS:
        x = logits.clone().requires_grad_()
        t = trans.clone().requires_grad_()
        loss = _loss(x, t, targets, vl, tl, backend, from_logits=True)
        out[backend] = (loss.detach(), *torch.autograd.grad(loss.sum(), (x, t)))
        verts = la.dag_best_vertices(x, t, targets, vl, tl, from_logits=True, backend=backend)
        out[backend + "_best"] = verts
    for a, b in zip(out["numba"], out["torch"]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)
    assert torch.equal(out["numba_best"][0], out["torch_best"][0])
    assert torch.equal(out["numba_best"][1], out["torch_best"][1])


def test_torch_backend_keeps_no_per_step_graph():
    # the autograd graph holds the emissions' inputs, alpha (N, S, L) and the transitions:
    # O(N·L·S + N·L²), never the O(N·L²·S) of autograd through the recursion
    nb, lmax, smax, ncls = 2, 32, 16, 6
    logits, trans, targets, vl, tl = problem(11, [lmax] * nb, [smax] * nb, ncls=ncls)
    x = logits.clone().requires_grad_()
    t = trans.clone().requires_grad_()
    saved: list[int] = []

    def pack(tensor):
        saved.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = la.dag_loss(x, t, targets, vl, tl, from_logits=True, backend="torch")
    loss.backward()
    bound = nb * lmax * ncls + 3 * nb * lmax * smax + 2 * nb * lmax * lmax
    assert sum(saved) <= bound < nb * lmax * lmax * smax // 4


def test_auto_backend_on_cpu_is_numba(monkeypatch):
    from latalign.align import dag

    seen = []
    real = dag._backend_module
    monkeypatch.setattr(dag, "_backend_module", lambda name: seen.append(name) or real(name))
    logits, trans, targets, vl, tl = problem(12, [3], [2])
    la.dag_loss(logits, trans, targets, vl, tl)
    assert seen == ["numba"]


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    lb=st.integers(1, 6),
    ncls=st.integers(1, 4),
    from_logits=st.booleans(),
)
def test_random_graphs_match_enumeration(data, lb, ncls, from_logits):
    n = data.draw(st.integers(0, lb + 1))
    seed = data.draw(st.integers(0, 2**16))
    logits, trans, targets, vl, tl = problem(seed, [lb], [n], ncls=ncls, smax=n + 1, lmax=lb + 1)
    src = logits if from_logits else logits.log_softmax(-1)
    lp = logits.log_softmax(-1)
    ref = bruteforce_dag.dag_loss(
        lp[0, :lb].tolist(), trans[0, :lb, :lb].tolist(), targets[0, :n].tolist()
    )
    best = -bruteforce_dag.dag_loss(
        lp[0, :lb].tolist(), trans[0, :lb, :lb].tolist(), targets[0, :n].tolist(), "max"
    )
    for backend in CPU_BACKENDS:
        got = _loss(src, trans, targets, vl, tl, backend, from_logits=from_logits).item()
        assert got == ref if math.isinf(ref) else math.isclose(got, ref, rel_tol=1e-12)
        (path,) = la.dag_best_path(
            src, trans, targets, vl, tl, from_logits=from_logits, backend=backend
        )
        assert (
            path.score == best
            if math.isinf(best)
            else math.isclose(path.score, best, rel_tol=1e-12)
        )


# ---- input validation: one clear error before any work -----------------------------------


def _good():
    logits, trans, targets, vl, tl = problem(13, [4, 3], [2, 3], ncls=5)
    return dict(
        log_probs=logits, transitions=trans, targets=targets, vertex_lengths=vl, target_lengths=tl
    )


def _with(**changes):
    kw = _good()
    kw.update(changes)
    return kw


BAD = [
    (TypeError, "log_probs to be a torch.Tensor", dict(log_probs=[[[0.0]]])),
    (
        TypeError,
        "log_probs of a floating dtype",
        dict(log_probs=torch.zeros(2, 4, 5, dtype=torch.int64)),
    ),
    (ValueError, "log_probs of shape", dict(log_probs=torch.zeros(2, 4))),
    (ValueError, "transitions of shape", dict(transitions=torch.zeros(2, 4, 3))),
    (
        TypeError,
        "transitions of a floating dtype",
        dict(transitions=torch.zeros(2, 4, 4, dtype=torch.int32)),
    ),
    (
        ValueError,
        "on the device of log_probs",
        dict(transitions=torch.zeros(2, 4, 4, device="meta")),
    ),
    (TypeError, "targets of dtype int64 or int32", dict(targets=torch.zeros(2, 3))),
    (ValueError, "targets of shape", dict(targets=torch.zeros(3, 3, dtype=torch.int64))),
    (ValueError, "1 <= vertex_lengths <= L = 4", dict(vertex_lengths=torch.tensor([0, 3]))),
    (ValueError, "1 <= vertex_lengths <= L = 4", dict(vertex_lengths=[4, 5])),
    (ValueError, "vertex_lengths of length N = 2", dict(vertex_lengths=[4])),
    (
        TypeError,
        "vertex_lengths of an integer dtype",
        dict(vertex_lengths=torch.tensor([4.0, 3.0])),
    ),
    (ValueError, "0 <= target_lengths <= S = 3", dict(target_lengths=[2, 4])),
    (ValueError, "0 <= target_lengths <= S = 3", dict(target_lengths=[-1, 2])),
    (
        ValueError,
        "target ids in [0, V = 5), found targets[1, 2] = 5",
        dict(targets=torch.tensor([[1, 2, 9], [0, 1, 5]])),
    ),
    (ValueError, "found targets[0, 1] = -1", dict(targets=torch.tensor([[1, -1, 0], [0, 1, 2]]))),
]


@pytest.mark.parametrize("error,message,changes", BAD, ids=[m for _, m, _ in BAD])
def test_bad_input_raises_one_clear_error(error, message, changes):
    with pytest.raises(error, match="expected") as info:
        la.dag_loss(**_with(**changes))
    assert message in str(info.value)
    with pytest.raises(error, match="expected"):
        la.dag_best_path(**_with(**changes))


def test_bad_values_in_used_entries_raise():
    kw = _good()
    kw["log_probs"] = kw["log_probs"].log_softmax(-1)
    y = int(kw["targets"][1, 2])
    lp = kw["log_probs"].clone()
    lp[1, 2, y] = math.nan  # vertex 2 < L_1 = 3 emitting the used target y_3
    with pytest.raises(ValueError, match=r"expected log_probs without NaN or \+inf .*vertex 2"):
        la.dag_loss(**_with(log_probs=lp))
    lp = kw["log_probs"].clone()
    lp[0, 1, 0] = math.inf
    with pytest.raises(ValueError, match="expected logits without NaN"):  # NaN after log_softmax
        la.dag_loss(**_with(log_probs=lp), from_logits=True)
    for bad in (math.nan, math.inf):
        tr = kw["transitions"].clone()
        tr[0, 1, 3] = bad
        with pytest.raises(
            ValueError, match=r"expected transitions without NaN or \+inf .*\[0, 1, 3\]"
        ):
            la.dag_loss(**_with(transitions=tr))
    with pytest.raises(ValueError, match="expected reduction in"):
        la.dag_loss(**kw, reduction="avg")
    with pytest.raises(ValueError, match="expected backend in"):
        la.dag_loss(**kw, backend="cuda")


def _subnormal_graph():
    # two paths of score -740 each, (0, 1, 4) and (0, 2, 4): in the numba kernel's scaled
    # sums both terms are subnormal (e^-740 ~ 4e-322, a few significant bits)
    lp = torch.zeros(1, 5, 1, dtype=torch.float64)
    tr = torch.full((1, 5, 5), float("-inf"), dtype=torch.float64)
    tr[0, 0, 1], tr[0, 0, 2], tr[0, 1, 2], tr[0, 1, 4], tr[0, 2, 4] = 0.0, -740.0, 0.0, -740.0, 0.0
    return lp, tr, torch.zeros(1, 3, dtype=torch.int64)


@pytest.mark.parametrize("tiny", ["default", math.inf, 0.0])
def test_numba_scaled_sums_fall_back_to_log_space(monkeypatch, tiny):
    from latalign.align.backends import dag_numba

    if tiny != "default":
        monkeypatch.setattr(dag_numba, "TINY", tiny)
    lp, tr, tg = _subnormal_graph()
    x = lp.clone().requires_grad_()
    t = tr.clone().requires_grad_()
    loss = _loss(x, t, tg, [5], [3], "numba")
    gx, gt = torch.autograd.grad(loss.sum(), (x, t))
    exact = 740.0 - math.log(2.0)
    if tiny == 0.0:  # no fallback: the subnormal sums are visibly wrong (why it exists)
        assert abs(loss.item() - exact) > 1e-6
        return
    assert math.isclose(loss.item(), exact, rel_tol=1e-15)
    # posteriors: every path visits 0 and 4, each of vertices 1 and 2 half of them
    expected = torch.tensor([-1.0, -0.5, -0.5, 0.0, -1.0], dtype=torch.float64)
    torch.testing.assert_close(gx[0, :, 0], expected, rtol=1e-12, atol=0)
    for u, v in ((0, 1), (0, 2), (1, 4), (2, 4)):  # values near 740: an ulp is 1e-13
        assert math.isclose(gt[0, u, v].item(), -0.5, rel_tol=1e-12)
    assert gt[0, 1, 2] == 0


@pytest.mark.parametrize("tiny", [math.inf, 0.0])
def test_numba_scaled_and_log_space_sums_agree(monkeypatch, tiny):
    from latalign.align.backends import dag_numba

    logits, trans, targets, vl, tl = problem(14, [9, 12, 7], [5, 6, 7], scale=30.0)
    ref = _run_both(logits, trans, targets, vl, tl)
    monkeypatch.setattr(dag_numba, "TINY", tiny)
    for a, b in zip(_run_both(logits, trans, targets, vl, tl), ref):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13)


def _run_both(logits, trans, targets, vl, tl):
    x = logits.clone().requires_grad_()
    t = trans.clone().requires_grad_()
    loss = _loss(x, t, targets, vl, tl, "numba", from_logits=True)
    return (loss.detach(), *torch.autograd.grad(loss.sum(), (x, t)))
