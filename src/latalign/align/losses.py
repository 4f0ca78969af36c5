"""The public losses: ``ctc_loss``, ``axe_loss``, ``latent_alignment_loss``, ``best_alignment``.

Each loss is two autograd steps:

1. :class:`_Emissions` gathers, in one gather, the blank and the targets' log-probabilities
   ``em (N, T, S+1)`` (optionally fusing ``log_softmax`` when given logits). Its backward
   writes the gradient into the vocabulary once: a scatter for log-probabilities, or
   ``scatter(g) − softmax · Σg`` for logits (one dense pass, no ``(N, T, V)`` temporaries
   beyond the gradient itself).
2. A dynamic program over ``em`` with a hand-written backward (:mod:`.dispatch`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from . import dispatch
from .backends import resolve
from .checks import LengthsLike, check_finite_emissions, check_inputs
from .objective import (
    AXE_OPERATORS,
    MOVE_BY_CODE,
    MOVE_BY_NAME,
    OPERATORS,
    SCHEMATIC_CTC_OPERATORS,
    TARGET,
    Objective,
    axe_objective,
)

# rows per chunk when a half-precision input is upcast for log_softmax (bounds the copy)
_CHUNK_ELEMENTS = 1 << 22


def _row_chunks(x: torch.Tensor):
    rows = x.shape[0] * x.shape[1]
    per = max(1, _CHUNK_ELEMENTS // max(1, x.shape[2]))
    flat = x.reshape(rows, x.shape[2])
    for start in range(0, rows, per):
        yield start, flat[start : start + per]


class _Emissions(torch.autograd.Function):
    """``em[b, t, k] = log p_t(idx[b, k])`` in float64, from log-probabilities or logits.

    From logits, the log-softmax runs chunk by chunk of rows (a bounded temporary, never a
    second ``(N, T, V)`` tensor) and only the gathered columns are kept; the backward
    recomputes the softmax into the gradient's own buffer.
    """

    @staticmethod
    def forward(ctx, src: torch.Tensor, idx: torch.Tensor, from_logits: bool) -> torch.Tensor:
        nb, tmax, _ = src.shape
        k = idx.shape[1]
        full_idx = idx.view(nb, 1, k).expand(nb, tmax, k)
        if from_logits:
            em = torch.empty((nb * tmax, k), dtype=torch.float64, device=src.device)
            flat_idx = full_idx.reshape(nb * tmax, k)
            for start, chunk in _row_chunks(src):
                stop = start + chunk.shape[0]
                work = chunk if chunk.dtype in (torch.float32, torch.float64) else chunk.float()
                lp = torch.log_softmax(work, dim=1)
                em[start:stop] = lp.gather(1, flat_idx[start:stop])
            em = em.view(nb, tmax, k)
        else:
            em = src.gather(2, full_idx).to(torch.float64)
        ctx.from_logits = from_logits
        ctx.save_for_backward(src, full_idx)
        return em

    @staticmethod
    def backward(ctx, grad_em: torch.Tensor):
        src, full_idx = ctx.saved_tensors
        g = grad_em.to(torch.float32 if src.dtype != torch.float64 else torch.float64)
        if not ctx.from_logits:
            grad = torch.zeros_like(src)
            grad.scatter_add_(2, full_idx, g.to(src.dtype))
            return grad, None, None
        # d/dlogits = scatter(g) - softmax * sum(g)
        gsum = g.sum(dim=2, keepdim=True)  # (N, T, 1)
        if src.dtype in (torch.float32, torch.float64):
            grad = torch.softmax(src, dim=2)  # one fused pass; the buffer becomes the gradient
            grad.mul_(-gsum)
        else:
            grad = torch.empty_like(src)
            gflat = grad.view(-1, src.shape[2])
            sflat = gsum.reshape(-1, 1)
            for start, chunk in _row_chunks(src):
                stop = start + chunk.shape[0]
                gflat[start:stop] = torch.softmax(chunk.float(), dim=1).mul_(-sflat[start:stop])
        grad.scatter_add_(2, full_idx, g.to(grad.dtype))
        return grad, None, None


class _AlgebraDP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, em, in_len, tg_len, objective: Objective, backend: str):
        state = dispatch.algebra_forward(
            em, in_len, tg_len, objective, backend, keep=ctx.needs_input_grad[0]
        )
        ctx.state = state
        ctx.save_for_backward(em, in_len, tg_len)
        return state.loss.to(em.device)

    @staticmethod
    def backward(ctx, grad_loss):
        em, in_len, tg_len = ctx.saved_tensors
        grad = dispatch.algebra_backward(ctx.state, em, in_len, tg_len, grad_loss).to(em.device)
        return _nan_where_infeasible(grad, ctx.state.loss, grad_loss), None, None, None, None


class _CTCDP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, em, targets, in_len, tg_len, backend: str):
        state = dispatch.ctc_forward(
            em, targets, in_len, tg_len, backend, keep=ctx.needs_input_grad[0]
        )
        ctx.state = state
        ctx.save_for_backward(em, targets, in_len, tg_len)
        return state.loss.to(em.device)

    @staticmethod
    def backward(ctx, grad_loss):
        em, targets, in_len, tg_len = ctx.saved_tensors
        grad = dispatch.ctc_backward(ctx.state, em, targets, in_len, tg_len, grad_loss).to(
            em.device
        )
        return _nan_where_infeasible(grad, ctx.state.loss, grad_loss), None, None, None, None


def _nan_where_infeasible(
    grad: torch.Tensor, loss: torch.Tensor, grad_loss: torch.Tensor
) -> torch.Tensor:
    # As torch.nn.functional.ctc_loss: an infinite loss that reaches the output (no
    # zero_infinity) back-propagates NaN, loudly, rather than a silent zero.
    bad = torch.isinf(loss.to(grad.device)) & (grad_loss != 0)
    if bool(bad.any()):
        grad = grad.clone()
        grad[bad] = float("nan")
    return grad


def _emissions(checked, blank: int, from_logits: bool) -> torch.Tensor:
    nb = checked.targets.shape[0]
    blank_col = torch.full((nb, 1), blank, dtype=torch.int64, device=checked.targets.device)
    idx = torch.cat([blank_col, checked.targets], dim=1)  # (N, S+1): ε, y_1 … y_S
    em = _Emissions.apply(checked.log_probs, idx, from_logits)
    check_finite_emissions(
        em.detach(), checked.input_lengths, "logits" if from_logits else "log_probs"
    )
    return em


def _reduce(
    loss: torch.Tensor,
    target_lengths: torch.Tensor,
    reduction: str,
    zero_infinity: bool,
    dtype: torch.dtype,
) -> torch.Tensor:
    if zero_infinity:
        loss = torch.where(torch.isinf(loss), torch.zeros_like(loss), loss)
    if reduction == "mean":
        loss = (loss / target_lengths.clamp(min=1).to(loss.dtype)).mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss.to(dtype)


def latent_alignment_loss(
    log_probs: torch.Tensor,
    targets: torch.Tensor,
    input_lengths: LengthsLike,
    target_lengths: LengthsLike,
    *,
    operators: Iterable[str] = SCHEMATIC_CTC_OPERATORS,
    aggregate: str = "sum",
    weights: Mapping[str, float] | None = None,
    blank: int = 0,
    causal: bool = False,
    reduction: str = "mean",
    zero_infinity: bool = False,
    from_logits: bool = False,
    backend: str | None = None,
) -> torch.Tensor:
    """Any objective of the operator algebra (SPEC.md): ``−logsumexp`` or ``−max`` over paths.

    Args:
        log_probs: ``(N, T, C)`` log-softmax outputs (or logits with ``from_logits=True``),
            any float dtype; computed in float64, returned in the input dtype.
        targets: ``(N, S)`` int64/int32 target ids, padded; no blank inside the lengths.
        input_lengths: ``(N,)`` predictions used per sequence, ``1 ≤ m ≤ T``.
        target_lengths: ``(N,)`` targets per sequence, ``0 ≤ n ≤ S``.
        operators: any subset of ``align, clone_target, clone_prediction, delimiter``
            containing ``align``. Default: the paper's schematic CTC.
        aggregate: ``"sum"`` (forward–backward) or ``"max"`` (Viterbi).
        weights: optional per-operator weights (default 1), e.g. ``{"clone_prediction": δ}``.
        blank: index of ε in ``C``.
        causal: a prediction ``p_j`` may score ``y_i`` only if ``i ≥ j`` (the paper, §5).
        reduction: ``"none"`` → ``(N,)``; ``"sum"``; ``"mean"`` = loss / max(n, 1), batch mean.
        zero_infinity: sequences with no path get loss 0 and gradient 0 (else ``inf``).
        from_logits: the first argument is unnormalised logits; log-softmax is fused in.
        backend: ``None``/``"auto"`` (numba on CPU, torch elsewhere), ``"numba"``, ``"torch"``.

    Returns:
        The loss in nats.
    """
    objective = Objective.make(operators, aggregate, weights, causal)
    return _algebra_loss(
        log_probs,
        targets,
        input_lengths,
        target_lengths,
        objective,
        blank,
        reduction,
        zero_infinity,
        from_logits,
        backend,
    )


def _algebra_loss(
    log_probs,
    targets,
    input_lengths,
    target_lengths,
    objective,
    blank,
    reduction,
    zero_infinity,
    from_logits,
    backend,
) -> torch.Tensor:
    def program(em, checked, name):
        return _AlgebraDP.apply(em, checked.input_lengths, checked.target_lengths, objective, name)

    return _run_loss(
        program,
        log_probs,
        targets,
        input_lengths,
        target_lengths,
        blank,
        reduction,
        zero_infinity,
        from_logits,
        backend,
    )


def _run_loss(
    program,
    log_probs,
    targets,
    input_lengths,
    target_lengths,
    blank,
    reduction,
    zero_infinity,
    from_logits,
    backend,
) -> torch.Tensor:
    """Check the inputs, gather the emissions, run ``program(em, checked, backend)``, reduce."""
    checked = check_inputs(
        log_probs, targets, input_lengths, target_lengths, blank=blank, reduction=reduction
    )
    name = resolve(backend, log_probs.device)
    em = _emissions(checked, blank, from_logits)
    loss = program(em, checked, name)
    return _reduce(loss, checked.target_lengths, reduction, zero_infinity, log_probs.dtype)


def axe_loss(
    log_probs: torch.Tensor,
    targets: torch.Tensor,
    input_lengths: LengthsLike,
    target_lengths: LengthsLike,
    *,
    blank: int = 0,
    delta: float = 1.0,
    causal: bool = False,
    reduction: str = "mean",
    zero_infinity: bool = False,
    from_logits: bool = False,
    backend: str | None = None,
) -> torch.Tensor:
    """Aligned cross entropy (Ghazvininejad et al., 2020) for any ``m`` and ``n`` (``m == n`` too).

    The objective ``{align, clone_prediction (weight delta), delimiter}`` with ``max``;
    ``causal=True`` gives the paper's causal AXE. Arguments as
    :func:`latent_alignment_loss`. Returns the loss in nats.
    """
    return _algebra_loss(
        log_probs,
        targets,
        input_lengths,
        target_lengths,
        axe_objective(delta, causal),
        blank,
        reduction,
        zero_infinity,
        from_logits,
        backend,
    )


def ctc_loss(
    log_probs: torch.Tensor,
    targets: torch.Tensor,
    input_lengths: LengthsLike,
    target_lengths: LengthsLike,
    *,
    blank: int = 0,
    reduction: str = "mean",
    zero_infinity: bool = False,
    from_logits: bool = False,
    backend: str | None = None,
) -> torch.Tensor:
    """Connectionist temporal classification (Graves et al., 2006), batch first.

    Equal to ``torch.nn.functional.ctc_loss(log_probs.transpose(0, 1), …)`` in values for
    every reduction and ``zero_infinity``, and in gradients w.r.t. the logits of a
    ``log_softmax``. One difference, on purpose: the gradient w.r.t. ``log_probs`` itself is
    the true one (``−posterior``, sparse: only the blank and target entries), where torch
    returns ``exp(log_probs) − posterior`` (dense over the vocabulary). Through a
    ``log_softmax`` both give the same gradient. Returns the loss in nats.
    """

    def program(em, checked, name):
        return _CTCDP.apply(
            em, checked.targets, checked.input_lengths, checked.target_lengths, name
        )

    return _run_loss(
        program,
        log_probs,
        targets,
        input_lengths,
        target_lengths,
        blank,
        reduction,
        zero_infinity,
        from_logits,
        backend,
    )


@dataclass(frozen=True)
class Alignment:
    """The best path of one sequence.

    Attributes:
        operators: operator names along the path from ``(0, 0)`` to ``(n, m)``.
        alpha: for each target ``i = 1..n``, the 1-based prediction positions ``j`` whose
            distributions scored ``y_i`` (the paper's ``α(i)``; ``clone_prediction`` down
            column 0 scores with ``p_1``).
        score: the path's score in nats (log space) = ``−`` the max loss; ``-inf`` if no path.
    """

    operators: tuple[str, ...]
    alpha: tuple[tuple[int, ...], ...]
    score: float

    @property
    def feasible(self) -> bool:
        return self.score != float("-inf")


def path_alpha(operators: Iterable[str], n: int) -> tuple[tuple[int, ...], ...]:
    """``α(i)`` for ``i = 1..n`` from a path's operator names (moves from :data:`MOVES`)."""
    alpha: list[list[int]] = [[] for _ in range(n)]
    i = j = 0
    for op in operators:
        move = MOVE_BY_NAME.get(op)
        if move is None:
            raise ValueError(f"expected operator names among {OPERATORS}, found {op!r}")
        i, j = i + move.di, j + move.dj
        if move.emits == TARGET:
            alpha[i - 1].append(move.frame_at(j))
    return tuple(tuple(a) for a in alpha)


def best_alignment(
    log_probs: torch.Tensor,
    targets: torch.Tensor,
    input_lengths: LengthsLike,
    target_lengths: LengthsLike,
    *,
    operators: Iterable[str] = AXE_OPERATORS,
    weights: Mapping[str, float] | None = None,
    blank: int = 0,
    causal: bool = False,
    from_logits: bool = False,
    backend: str | None = None,
) -> list[Alignment]:
    """The best (Viterbi) path of each sequence under a max objective (default: AXE).

    Ties between moves into a cell are broken in the order ``align``, ``clone_target``,
    ``clone_prediction``, ``delimiter`` (the earlier wins), identically in every backend.
    """
    objective = Objective.make(operators, "max", weights, causal)
    checked = check_inputs(
        log_probs, targets, input_lengths, target_lengths, blank=blank, reduction=None
    )
    name = resolve(backend, log_probs.device)
    with torch.no_grad():
        em = _emissions(checked, blank, from_logits)
        state = dispatch.algebra_forward(
            em, checked.input_lengths, checked.target_lengths, objective, name, keep=True
        )
        paths = dispatch.best_paths(state, checked.input_lengths, checked.target_lengths)
    scores = (-state.loss).tolist()
    tg_len = checked.target_lengths.tolist()
    result = []
    for b, path in enumerate(paths):
        if path is None:
            result.append(Alignment((), (), float("-inf")))
            continue
        ops = tuple(MOVE_BY_CODE[c].operator for c in path)
        result.append(Alignment(ops, path_alpha(ops, tg_len[b]), float(scores[b])))
    return result
