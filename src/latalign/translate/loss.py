"""The per-step loss of the one training loop, and the autoregressive archs' loss.

:func:`~latalign.translate.train.train` knows nothing about models or criteria: each update it
calls a :class:`LossFn` ``loss_fn(model, batch, update=step)`` under autocast and
backpropagates the returned sum; validation calls the same object with ``update=None`` under
``torch.no_grad()`` with the model in eval mode. The arch of the run builds the loss
(:attr:`latalign.translate.registry.Arch.make_loss`).

For the autoregressive archs the loss is a :class:`DecoderInputLoss`: the run's *regime*
(:mod:`latalign.translate.regimes`) makes the decoder input of the batch (teacher forcing:
``bos y_1 … y_n``; ``doubled``: every token twice), one forward pass gives logits, the
criterion scores them (:func:`latalign.translate.criteria.criterion_loss`).

Stats contract (what the log and validation read): ``stats`` is a dict of *sums* over the
batch, numbers or 0-dim device tensors (not read back: the loop sums them on the device and
reads them once per log interval; a ``float()`` here would cost a host synchronisation) with at least ``loss`` (nats), ``ntokens`` (target tokens incl. eos, the
normaliser), ``nsentences``; optional ``nll_loss`` and ``ce`` (plain cross entropy under
teacher forcing, nats; the loss adds it in validation). Every other key is logged as
``train_<key>`` / ``valid_<key>`` divided by the summed ``ntokens``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor

from latalign.translate.config import TrainConfig
from latalign.translate.criteria import criterion_loss, cross_entropy_sum
from latalign.translate.regimes import teacher_forcing
from latalign.translate.registry import LAYOUTS, Criterion, get_criterion, get_regime

__all__ = ["DecoderInput", "DecoderInputLoss", "LossFn", "teacher_forced_loss"]


class LossFn(Protocol):
    """``loss_fn(model, batch, *, update) -> (loss_sum, stats)``.

    ``model`` is what the loop trains: under ``torchrun`` the ``DistributedDataParallel``
    wrapper, so every computation that carries gradient must go through ONE call of
    ``model(...)`` (its forward); use :func:`~latalign.translate.distributed.unwrap` for no-grad passes or attributes.
    ``batch`` is a :class:`~latalign.translate.batching.Batch` on the model's device.
    ``update``: updates done before this one (0 for the first; schedules read it), or None in
    validation. ``loss_sum``: 0-dim tensor, nats summed over the batch (the loop divides the
    gradient by the update's total ``ntokens`` over ranks). ``stats``: see the module docstring.
    """

    def __call__(
        self, model: torch.nn.Module, batch: Any, *, update: int | None
    ) -> tuple[Tensor, dict[str, float]]: ...


class DecoderInput(Protocol):
    """A regime instance: ``decoder_input(model, batch, *, update) -> (B, T') int64`` tokens.

    Runs under the loop's autocast; a first pass through the model (scheduled sampling, free
    running) must be wrapped in ``torch.no_grad()`` and may call ``distributed.unwrap(model)``. Random
    choices must use torch's global RNG (checkpointed: resume stays exact). ``update=None``
    (validation): the input inference feeds, with gold tokens.
    """

    def __call__(self, model: torch.nn.Module, batch: Any, *, update: int | None) -> Tensor: ...


class DecoderInputLoss:
    """Regime + criterion: ``criterion(model(src, src_len, regime(batch)), batch)``.

    The criterion gets ``input_lengths = k · target_lengths`` for a regime whose layout gives
    ``k`` predictions per target position (1 shifted, 2 doubled). In validation
    (``update=None``) it adds ``stats["ce"]``, the plain cross entropy of the same logits
    when they are position-aligned with the target (layout ``"shifted"``).
    """

    def __init__(
        self,
        decoder_input: DecoderInput,
        criterion: Criterion,
        options: dict[str, Any],
        *,
        blank_id: int,
    ) -> None:
        self.decoder_input = decoder_input
        self.criterion = criterion
        self.options = dict(options)
        self.blank_id = blank_id

    @classmethod
    def from_config(cls, cfg: TrainConfig, tokenizer: Any, **extra: Any) -> DecoderInputLoss:
        return cls(
            get_regime(cfg.regime).make(cfg, tokenizer),
            get_criterion(cfg.criterion),
            cfg.criterion_options(),
            blank_id=tokenizer.blank_id,
            **extra,
        )

    def __call__(
        self, model: torch.nn.Module, batch: Any, *, update: int | None
    ) -> tuple[Tensor, dict[str, float]]:
        prev = self.decoder_input(model, batch, update=update)
        return self.score(model(batch.src_tokens, batch.src_lengths, prev), batch, update)

    def score(
        self, logits: Tensor, batch: Any, update: int | None
    ) -> tuple[Tensor, dict[str, float]]:
        """The criterion on decoder logits (B, k·T, V) of ``batch`` (targets (B, T))."""
        k = LAYOUTS[self.criterion.layout]
        b, t = batch.target.shape
        if logits.dim() != 3 or tuple(logits.shape[:2]) != (b, k * t):
            raise ValueError(
                f"expected logits (B, {k if k > 1 else ''}T, V) with (B, T) = {(b, t)}, the "
                f"targets' shape; found {tuple(logits.shape)}"
            )
        lengths = batch.target_lengths
        loss, stats = criterion_loss(
            self.criterion, logits, batch.target, k * lengths, lengths, blank=self.blank_id,
            **self.options,
        )  # fmt: skip
        if update is None and k == 1:
            stats["ce"] = float(cross_entropy_sum(logits, batch.target, lengths))
        return loss, stats


def teacher_forced_loss(
    criterion: str | Criterion | Callable[..., tuple[Tensor, Tensor | None]],
    options: dict[str, Any] | None = None,
    *,
    blank_id: int = 4,
) -> DecoderInputLoss:
    """A :class:`DecoderInputLoss` with teacher forcing (benchmarks, tests); ``criterion``: a
    registered name, an entry, or a criterion function."""
    if isinstance(criterion, str):
        entry = get_criterion(criterion)
    elif isinstance(criterion, Criterion):
        entry = criterion
    else:
        entry = Criterion(getattr(criterion, "__name__", "criterion"), criterion)
    return DecoderInputLoss(teacher_forcing, entry, options or {}, blank_id=blank_id)
