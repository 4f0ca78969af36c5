"""The DAG latent alignment of DA-Transformer (Huang et al., 2022): ``dag_loss``, best paths.

Semantics: SPEC.md, "DAG latent alignment". The decoder has ``L`` vertices, each with a
token distribution and a transition distribution to the later vertices; the loss
marginalises over every path ``0 = a_1 < … < a_n = L_b − 1`` that emits the target, one
token per visited vertex.

Two autograd steps, as the other losses (:mod:`.losses`): the targets' log-probabilities
are gathered once (``em (N, L, S)``, the log-softmax fused in from logits, by the same
``_Emissions`` step), then a dynamic program with a hand-written backward runs over
``em`` and the transitions (:mod:`.backends.dag_numba`, :mod:`.backends.dag_torch`,
:mod:`.backends.dag_triton`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

import torch

from .backends import dag_numba, dag_torch, resolve
from .checks import (
    LengthsLike,
    _lengths,
    check_reduction,
    float_tensor,
    index_tensor,
    raise_if_out_of_range,
)
from .losses import _Emissions, _reduce

NEG_INF = float("-inf")


@dataclass(frozen=True)
class DagInputs:
    """Validated inputs of the DAG losses, lengths as int64 on the device of ``log_probs``."""

    log_probs: torch.Tensor  # (N, L, V)
    transitions: torch.Tensor  # (N, L, L)
    targets: torch.Tensor  # (N, S) int64, padding replaced by id 0
    vertex_lengths: torch.Tensor  # (N,) int64
    target_lengths: torch.Tensor  # (N,) int64


def check_dag_inputs(
    log_probs: torch.Tensor,
    transitions: torch.Tensor,
    targets: torch.Tensor,
    vertex_lengths: LengthsLike,
    target_lengths: LengthsLike,
    reduction: str | None = "mean",
) -> DagInputs:
    """Validate the DAG inputs (SPEC.md): shapes, dtypes, devices, lengths, target ids."""
    lp = float_tensor("log_probs", log_probs, "(N, L, V) (batch first)")
    tr = float_tensor("transitions", transitions, "(N, L, L)")
    nb, lmax, ncls = lp.shape
    if tuple(tr.shape) != (nb, lmax, lmax):
        raise ValueError(
            f"expected transitions of shape (N, L, L) = {(nb, lmax, lmax)} (from log_probs), "
            f"found shape {tuple(tr.shape)}"
        )
    if tr.device != lp.device:
        raise ValueError(
            f"expected transitions on the device of log_probs ({lp.device}), found {tr.device}"
        )
    index_tensor("targets", targets)
    if targets.dim() != 2 or targets.shape[0] != nb:
        raise ValueError(
            f"expected targets of shape (N, S) = ({nb}, S) (padded), found shape "
            f"{tuple(targets.shape)}"
        )
    check_reduction(reduction)
    dev = lp.device
    vl = _lengths("vertex_lengths", vertex_lengths, nb, dev)
    tl = _lengths("target_lengths", target_lengths, nb, dev)
    smax = targets.shape[1]
    raise_if_out_of_range("vertex_lengths", vl, 1, lmax, "L")
    raise_if_out_of_range("target_lengths", tl, 0, smax, "S")
    tg = targets.to(device=dev, dtype=torch.int64)
    used = torch.arange(smax, device=dev).view(1, smax) < tl.view(nb, 1)  # (N, S)
    out_of_range = used & ((tg < 0) | (tg >= ncls))
    if bool(out_of_range.any()):
        b, s = (int(v) for v in torch.nonzero(out_of_range)[0])
        raise ValueError(
            f"expected target ids in [0, V = {ncls}), found targets[{b}, {s}] = {int(tg[b, s])}"
        )
    return DagInputs(lp, tr, torch.where(used, tg, 0), vl, tl)


def _check_used_entries(em: torch.Tensor, tr: torch.Tensor, inputs: DagInputs, what: str) -> None:
    """Raise if a NaN or ``+inf`` sits where the loss reads: ``em[b, v, i]`` for ``v < L_b``,
    ``i < n``, and ``transitions[b, u, v]`` for ``u < v < L_b``."""
    nb, lmax, smax = em.shape
    dev = em.device
    vert = torch.arange(lmax, device=dev).view(1, lmax) < inputs.vertex_lengths.view(nb, 1)
    step = torch.arange(smax, device=dev).view(1, smax) < inputs.target_lengths.view(nb, 1)
    bad = (torch.isnan(em) | (em == float("inf"))) & vert.unsqueeze(2) & step.unsqueeze(1)
    if bool(bad.any()):
        b, v, i = (int(x) for x in torch.nonzero(bad)[0])
        raise ValueError(
            f"expected {what} without NaN or +inf at the used entries, found "
            f"{float(em[b, v, i])} for targets[{b}, {i}] at vertex {v}"
        )
    upper = torch.ones(lmax, lmax, dtype=torch.bool, device=dev).triu(1)
    edge = upper.unsqueeze(0) & vert.unsqueeze(2) & vert.unsqueeze(1)
    bad = (torch.isnan(tr) | (tr == float("inf"))) & edge
    if bool(bad.any()):
        b, u, v = (int(x) for x in torch.nonzero(bad)[0])
        raise ValueError(
            f"expected transitions without NaN or +inf at the used edges u < v < "
            f"vertex_lengths[b], found {float(tr[b, u, v])} at transitions[{b}, {u}, {v}]"
        )


def _backend_module(name: str) -> ModuleType:
    if name == "numba":
        return _NumbaDag
    if name == "triton":  # imports triton: only when asked for
        return importlib.import_module(".backends.dag_triton", __package__)
    return dag_torch


class _NumbaDag:
    """:mod:`.backends.dag_numba` behind the tensor interface of the other DAG backends."""

    @staticmethod
    def forward(et, trans, vert_len, tg_len, use_max):
        out, alpha, bp = dag_numba.forward(_np(et), _np(trans), _np(vert_len), _np(tg_len), use_max)
        return (
            torch.from_numpy(out),
            torch.from_numpy(alpha),
            None if bp is None else torch.from_numpy(bp),
        )

    @staticmethod
    def backward(et, trans, vert_len, tg_len, alpha, logz, gscale):
        g_et, g_tr = dag_numba.backward(
            _np(et),
            _np(trans),
            _np(vert_len),
            _np(tg_len),
            _np(alpha),
            _np(logz),
            _np(gscale.to(torch.float64)),
        )
        return torch.from_numpy(g_et), torch.from_numpy(g_tr)


def _np(t: torch.Tensor):
    return t.detach().contiguous().numpy()


class _DagDP(torch.autograd.Function):
    """``−logZ (N,)`` from ``et (N, S, L)`` and ``trans (N, L, L)`` (float64), hand-written
    backward. ``alpha`` travels as a saved tensor so that autograd frees it after backward."""

    @staticmethod
    def forward(ctx, et, trans, vert_len, tg_len, backend: str):
        module = _backend_module(backend)
        logz, alpha, _ = module.forward(et, trans, vert_len, tg_len, False)
        logz = logz.to(et.device)
        ctx.module = module
        ctx.save_for_backward(et, trans, vert_len, tg_len, alpha.to(et.device), logz)
        return -logz

    @staticmethod
    def backward(ctx, grad_loss):
        et, trans, vert_len, tg_len, alpha, logz = ctx.saved_tensors
        g_et, g_tr = ctx.module.backward(et, trans, vert_len, tg_len, alpha, logz, grad_loss)
        # as torch's CTC: an infinite loss that reaches the output back-propagates NaN
        nb = et.shape[0]
        bad = (torch.isinf(logz) & (grad_loss != 0)).view(nb, 1, 1)
        g_et = torch.where(bad, float("nan"), g_et.to(et.device))
        g_tr = torch.where(bad, float("nan"), g_tr.to(et.device))
        return g_et, g_tr, None, None, None


def _emissions_and_transitions(inputs: DagInputs, from_logits: bool, backend: str):
    """``(et (N, S, L), trans (N, L, L))`` in float64, differentiable, checked."""
    em = _Emissions.apply(
        inputs.log_probs, inputs.targets, inputs.vertex_lengths, from_logits, backend
    )  # (N, L, S)
    trans = inputs.transitions.to(torch.float64)
    _check_used_entries(
        em.detach(), trans.detach(), inputs, "logits" if from_logits else "log_probs"
    )
    return em.transpose(1, 2), trans


def dag_loss(
    log_probs: torch.Tensor,
    transitions: torch.Tensor,
    targets: torch.Tensor,
    vertex_lengths: LengthsLike,
    target_lengths: LengthsLike,
    *,
    reduction: str = "mean",
    zero_infinity: bool = False,
    from_logits: bool = False,
    backend: str | None = None,
) -> torch.Tensor:
    """The DA-Transformer loss: ``−logsumexp`` over every path through the graph, in nats.

    Args:
        log_probs: ``(N, L, V)`` per-vertex token log-probabilities (logits with
            ``from_logits=True``), any float dtype.
        transitions: ``(N, L, L)`` log-probability of the edge ``u → v`` (the caller
            normalises its rows), read only for ``u < v < vertex_lengths[b]``; any float dtype.
        targets: ``(N, S)`` int64/int32 token ids, padded; any id in ``[0, V)`` (no blank).
        vertex_lengths: ``(N,)`` vertices of each graph, ``1 ≤ L_b ≤ L``.
        target_lengths: ``(N,)`` targets per sequence, ``0 ≤ n ≤ S``.
        reduction: ``"none"`` → ``(N,)``; ``"sum"``; ``"mean"`` = loss / max(n, 1), batch mean.
        zero_infinity: sequences with no path (``n = 0``, ``n > L_b``, ``n = 1 < L_b``) get
            loss 0 and gradient 0 (else ``inf`` and a NaN gradient, as torch's CTC).
        from_logits: ``log_probs`` holds unnormalised logits; the log-softmax is fused in.
        backend: ``None``/``"auto"`` (numba on CPU, triton on CUDA when installed, else
            torch), ``"numba"``, ``"torch"``, ``"triton"``.

    Returns:
        The loss in nats, in the dtype of ``log_probs``; differentiable w.r.t. ``log_probs``
        and ``transitions``.
    """
    inputs = check_dag_inputs(
        log_probs, transitions, targets, vertex_lengths, target_lengths, reduction
    )
    name = resolve(backend, log_probs.device)
    et, trans = _emissions_and_transitions(inputs, from_logits, name)
    loss = _DagDP.apply(et, trans, inputs.vertex_lengths, inputs.target_lengths, name)
    return _reduce(loss, inputs.target_lengths, reduction, zero_infinity, log_probs.dtype)


@dataclass(frozen=True)
class DagPath:
    """The best (Viterbi) path of one sequence through its graph.

    Attributes:
        vertices: ``(a_1, …, a_n)``, 0-based vertex indices, ``a_1 = 0``, ``a_n = L_b − 1``;
            vertex ``a_i`` emits ``y_i``. ``()`` where there is no path.
        score: the path's score in nats (log space) = ``−`` the max loss; ``-inf`` if none.
    """

    vertices: tuple[int, ...]
    score: float

    @property
    def feasible(self) -> bool:
        return self.score != NEG_INF


def dag_best_vertices(
    log_probs: torch.Tensor,
    transitions: torch.Tensor,
    targets: torch.Tensor,
    vertex_lengths: LengthsLike,
    target_lengths: LengthsLike,
    *,
    from_logits: bool = False,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The best path of each sequence as tensors on the inputs' device (for glancing).

    Arguments as :func:`dag_loss`. Returns ``(vertices (N, S) int64, scores (N,) float64)``:
    ``vertices[b, i] = a_{i+1}`` (0-based), ``-1`` beyond ``target_lengths[b]`` and where
    there is no path (``scores[b] = -inf``). Ties between predecessors go to the smallest
    vertex, in every backend. No gradient; no host synchronisation after the checks.
    """
    inputs = check_dag_inputs(
        log_probs, transitions, targets, vertex_lengths, target_lengths, reduction=None
    )
    name = resolve(backend, log_probs.device)
    with torch.no_grad():
        et, trans = _emissions_and_transitions(inputs, from_logits, name)
        module = _backend_module(name)
        score, _, bp = module.forward(et, trans, inputs.vertex_lengths, inputs.target_lengths, True)
        dev = log_probs.device
        score, bp = score.to(dev), bp.to(dev)
        verts = dag_torch.backtrack(bp, score, inputs.vertex_lengths, inputs.target_lengths)
    return verts, score


def dag_best_path(
    log_probs: torch.Tensor,
    transitions: torch.Tensor,
    targets: torch.Tensor,
    vertex_lengths: LengthsLike,
    target_lengths: LengthsLike,
    *,
    from_logits: bool = False,
    backend: str | None = None,
) -> list[DagPath]:
    """The best (Viterbi) path of each sequence: a :class:`DagPath` per sequence.

    Arguments as :func:`dag_loss`; ties between predecessors go to the smallest vertex,
    identically in every backend. ``DagPath.score`` is ``−`` the loss of the max objective.
    """
    verts, score = dag_best_vertices(
        log_probs,
        transitions,
        targets,
        vertex_lengths,
        target_lengths,
        from_logits=from_logits,
        backend=backend,
    )
    rows = verts.cpu().tolist()
    result = []
    for row, s in zip(rows, score.cpu().tolist()):
        if s == NEG_INF:
            result.append(DagPath((), NEG_INF))
        else:
            result.append(DagPath(tuple(v for v in row if v >= 0), float(s)))
    return result
