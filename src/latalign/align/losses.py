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
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch

from . import dispatch
from .backends import get, resolve
from .checks import LengthsLike, check_inputs, validate_values
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


class _Emissions(torch.autograd.Function):
    """``em[b, t, k] = log p_t(idx[b, k])`` in float64, from log-probabilities or logits,
    by the backend's :meth:`~latalign.align.backends.Backend.emissions`."""

    @staticmethod
    def forward(ctx, src, idx, in_len, from_logits: bool, backend: str) -> torch.Tensor:
        impl = get(backend)
        em, saved, scratch = impl.emissions(
            src, idx, in_len, from_logits, keep=ctx.needs_input_grad[0]
        )
        ctx.impl, ctx.from_logits, ctx.scratch = impl, from_logits, scratch
        ctx.save_for_backward(src, idx, in_len, *saved)
        return em

    @staticmethod
    def backward(ctx, grad_em: torch.Tensor):
        src, idx, in_len, *saved = ctx.saved_tensors
        grad = ctx.impl.emissions_backward(
            src, idx, in_len, ctx.from_logits, tuple(saved), ctx.scratch, grad_em
        )
        return grad, None, None, None, None


class _AlgebraDP(torch.autograd.Function):
    # The grids travel as saved tensors, not as ctx attributes, so that autograd frees them
    # as soon as this node's backward has run (unless retain_graph).
    @staticmethod
    def forward(ctx, em, in_len, tg_len, objective: Objective, backend: str):
        state = dispatch.algebra_forward(
            em, in_len, tg_len, objective, backend, keep=ctx.needs_input_grad[0]
        )
        ctx.state = replace(state, saved=())
        ctx.save_for_backward(em, in_len, tg_len, *state.saved)
        return state.loss.to(em.device)

    @staticmethod
    def backward(ctx, grad_loss):
        em, in_len, tg_len, *saved = ctx.saved_tensors
        state = replace(ctx.state, saved=tuple(saved))
        grad = dispatch.algebra_backward(state, em, in_len, tg_len, grad_loss)
        return grad.to(em.device), None, None, None, None


class _CTCDP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, em, targets, in_len, tg_len, backend: str):
        state = dispatch.ctc_forward(
            em, targets, in_len, tg_len, backend, keep=ctx.needs_input_grad[0]
        )
        ctx.state = replace(state, saved=())
        ctx.save_for_backward(em, targets, in_len, tg_len, *state.saved)
        return state.loss.to(em.device)

    @staticmethod
    def backward(ctx, grad_loss):
        em, targets, in_len, tg_len, *saved = ctx.saved_tensors
        state = replace(ctx.state, saved=tuple(saved))
        grad = dispatch.ctc_backward(state, em, targets, in_len, tg_len, grad_loss)
        return grad.to(em.device), None, None, None, None


def _emissions(checked, from_logits: bool, backend: str) -> torch.Tensor:
    em = _Emissions.apply(
        checked.log_probs, checked.idx, checked.input_lengths, from_logits, backend
    )
    validate_values(checked, em.detach(), "logits" if from_logits else "log_probs")
    return em


def _reduce(
    loss: torch.Tensor,
    target_lengths: torch.Tensor,
    reduction: str,
    zero_infinity: bool,
    dtype: torch.dtype,
) -> torch.Tensor:
    if zero_infinity:
        loss = loss.masked_fill(torch.isinf(loss), 0.0)
    if reduction == "mean":
        loss = (loss / target_lengths.clamp(min=1)).mean()
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
    validate: bool | None = None,
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
        backend: ``None``/``"auto"`` (numba on CPU, triton on CUDA when installed, else
            torch), ``"numba"``, ``"torch"``, ``"triton"`` (CUDA; CPU under
            ``TRITON_INTERPRET=1``).
        validate: check lengths, target ids and NaN (one host synchronisation on a GPU);
            ``False`` trusts the input (no synchronisation); ``None`` follows
            :func:`latalign.align.set_validation` (on by default).

    Returns:
        The loss in nats.
    """
    objective = Objective.make(operators, aggregate, weights, causal)
    return _run_loss(
        _algebra_program(objective),
        (log_probs, targets, input_lengths, target_lengths),
        _Options(blank, reduction, zero_infinity, from_logits, backend, validate),
    )


def _algebra_program(objective: Objective):
    def program(em, checked, name):
        return _AlgebraDP.apply(em, checked.input_lengths, checked.target_lengths, objective, name)

    return program


def _ctc_program(em, checked, name):
    return _CTCDP.apply(em, checked.targets, checked.input_lengths, checked.target_lengths, name)


class _Options(NamedTuple):
    """The keyword options every loss takes, in one order (each loss passes them on once)."""

    blank: int
    reduction: str
    zero_infinity: bool
    from_logits: bool
    backend: str | None
    validate: bool | None


def _run_loss(program, inputs: tuple, options: _Options) -> torch.Tensor:
    """Check the inputs, gather the emissions, run ``program(em, checked, backend)``, reduce."""
    log_probs = inputs[0]
    o = options
    checked = check_inputs(*inputs, blank=o.blank, reduction=o.reduction, validate=o.validate)
    name = resolve(o.backend, log_probs.device)
    em = _emissions(checked, o.from_logits, name)
    loss = program(em, checked, name)
    return _reduce(loss, checked.target_lengths, o.reduction, o.zero_infinity, log_probs.dtype)


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
    validate: bool | None = None,
) -> torch.Tensor:
    """Aligned cross entropy (Ghazvininejad et al., 2020) for any ``m`` and ``n`` (``m == n`` too).

    The objective ``{align, clone_prediction (weight delta), delimiter}`` with ``max``;
    ``causal=True`` gives the paper's causal AXE. Arguments as
    :func:`latent_alignment_loss`. Returns the loss in nats.
    """
    return _run_loss(
        _algebra_program(axe_objective(delta, causal)),
        (log_probs, targets, input_lengths, target_lengths),
        _Options(blank, reduction, zero_infinity, from_logits, backend, validate),
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
    validate: bool | None = None,
) -> torch.Tensor:
    """Connectionist temporal classification (Graves et al., 2006), batch first.

    Equal to ``torch.nn.functional.ctc_loss(log_probs.transpose(0, 1), …)`` in values for
    every reduction and ``zero_infinity``, and in gradients w.r.t. the logits of a
    ``log_softmax``. One difference, on purpose: the gradient w.r.t. ``log_probs`` itself is
    the true one (``−posterior``, sparse: only the blank and target entries), where torch
    returns ``exp(log_probs) − posterior`` (dense over the vocabulary). Through a
    ``log_softmax`` both give the same gradient. Returns the loss in nats.
    """

    return _run_loss(
        _ctc_program,
        (log_probs, targets, input_lengths, target_lengths),
        _Options(blank, reduction, zero_infinity, from_logits, backend, validate),
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
    validate: bool | None = None,
) -> list[Alignment]:
    """The best (Viterbi) path of each sequence under a max objective (default: AXE).

    Ties between moves into a cell are broken in the order ``align``, ``clone_target``,
    ``clone_prediction``, ``delimiter`` (the earlier wins), identically in every backend.
    """
    objective = Objective.make(operators, "max", weights, causal)
    checked = check_inputs(
        log_probs,
        targets,
        input_lengths,
        target_lengths,
        blank=blank,
        reduction=None,
        validate=validate,
    )
    name = resolve(backend, log_probs.device)
    with torch.no_grad():
        em = _emissions(checked, from_logits, name)
        state = dispatch.algebra_forward(
            em,
            checked.input_lengths,
            checked.target_lengths,
            objective,
            name,
            keep=False,
            paths=True,
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
