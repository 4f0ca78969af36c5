"""The per-step loss of the one training loop, and the decoder-input regimes.

:func:`~latalign.translate.train.train` knows nothing about models or criteria: each update it
calls a :class:`LossFn` ``loss_fn(model, batch, update=step)`` under autocast and
backpropagates the returned sum; validation calls the same object with ``update=None`` under
``torch.no_grad()`` with the model in eval mode. The arch of the run builds the loss
(:attr:`latalign.translate.arch.Arch.make_loss`).

For the autoregressive arch the loss is a :class:`DecoderInputLoss`: a *regime* makes the
decoder input of the batch (teacher forcing: ``bos y_1 … y_n``; ``doubled``: every token
twice), one forward pass gives logits, a criterion of :data:`~latalign.translate.criteria.CRITERIA`
scores them. Regimes are registered in :data:`REGIMES` (:func:`register_regime`); each declares
the decoder-input *layout* it produces, and a criterion that needs another layout than
``"shifted"`` says so in :data:`~latalign.translate.criteria.LAYOUTS`.

Stats contract (what the log and validation read): ``stats`` is a dict of float *sums* over
the batch with at least ``loss`` (nats), ``ntokens`` (target tokens incl. eos, the
normaliser), ``nsentences``; optional ``nll_loss`` and ``ce`` (plain cross entropy under
teacher forcing, nats; the loss adds it in validation). Every other key is logged as
``train_<key>`` / ``valid_<key>`` divided by the summed ``ntokens``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

from latalign.translate.arch import load_extensions
from latalign.translate.criteria import cross_entropy_sum, get_criterion, layout_of

if TYPE_CHECKING:  # pragma: no cover
    from latalign.translate.train import TrainConfig


class LossFn(Protocol):
    """``loss_fn(model, batch, *, update) -> (loss_sum, stats)``.

    ``model`` is what the loop trains: under ``torchrun`` the ``DistributedDataParallel``
    wrapper, so every computation that carries gradient must go through ONE call of
    ``model(...)`` (its forward); use :func:`unwrap` for no-grad passes or attributes.
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
    running) must be wrapped in ``torch.no_grad()`` and may call ``unwrap(model)``. Random
    choices must use torch's global RNG (checkpointed: resume stays exact).
    """

    def __call__(self, model: torch.nn.Module, batch: Any, *, update: int | None) -> Tensor: ...


@dataclass(frozen=True)
class Regime:
    """A registered decoder-input regime.

    - ``make(cfg, tokenizer) -> DecoderInput``.
    - ``layout``: what the input looks like to the criterion: ``"shifted"`` (length T, position
      j predicts ``target[j]``) or ``"doubled"`` (2T); a criterion runs only with its layout.
    - ``options``: TrainConfig fields it reads; ``check(cfg)``: raises ``ValueError``.
    """

    name: str
    make: Callable[[TrainConfig, Any], DecoderInput]
    layout: str = "shifted"
    options: frozenset[str] = field(default_factory=frozenset)
    check: Callable[[TrainConfig], None] | None = None
    help: str = ""


REGIMES: dict[str, Regime] = {}


def register_regime(regime: Regime) -> Regime:
    """Add ``regime`` to :data:`REGIMES` (``ValueError`` if the name is taken); returns it."""
    if regime.name in REGIMES and REGIMES[regime.name] is not regime:
        raise ValueError(f"expected a new regime name; found {regime.name!r} registered already")
    REGIMES[regime.name] = regime
    return regime


def get_regime(name: str) -> Regime:
    """The regime registered under ``name``; ``ValueError`` listing the known names."""
    load_extensions()
    try:
        return REGIMES[name]
    except KeyError:
        raise ValueError(f"expected a regime in {{{', '.join(REGIMES)}}}; found {name!r}") from None


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a ``DistributedDataParallel`` wrapper (or ``model`` itself)."""
    return getattr(model, "module", model)


# --------------------------------------------------------------------------- the AR loss


class DecoderInputLoss:
    """Regime + criterion: ``criterion(model(src, src_len, regime(batch)), batch)``.

    In validation (``update=None``) it adds ``stats["ce"]``, the plain cross entropy of the
    same logits when they are position-aligned with the target (layout ``"shifted"``).
    """

    def __init__(
        self,
        decoder_input: DecoderInput,
        criterion: Callable[..., tuple[Tensor, dict[str, float]]],
        options: dict[str, Any],
        *,
        blank_id: int,
        pad_id: int,
    ) -> None:
        self.decoder_input = decoder_input
        self.criterion = criterion
        self.options = dict(options)
        self.blank_id = blank_id
        self.pad_id = pad_id

    @classmethod
    def from_config(cls, cfg: TrainConfig, tokenizer: Any) -> DecoderInputLoss:
        regime = get_regime(cfg.regime).make(cfg, tokenizer)
        return cls(
            regime,
            get_criterion(cfg.criterion),
            cfg.criterion_options(),
            blank_id=tokenizer.blank_id,
            pad_id=tokenizer.pad_id,
        )

    def __call__(
        self, model: torch.nn.Module, batch: Any, *, update: int | None
    ) -> tuple[Tensor, dict[str, float]]:
        prev = self.decoder_input(model, batch, update=update)
        logits = model(batch.src_tokens, batch.src_lengths, prev)
        loss, stats = self.criterion(logits, batch, self.blank_id, self.pad_id, **self.options)
        if update is None and tuple(logits.shape[:2]) == tuple(batch.target.shape):
            stats["ce"] = float(cross_entropy_sum(logits, batch.target, self.pad_id))
        return loss, stats


def teacher_forced_loss(
    criterion: str | Callable[..., tuple[Tensor, dict[str, float]]],
    options: dict[str, Any] | None = None,
    *,
    blank_id: int = 4,
    pad_id: int = 0,
) -> DecoderInputLoss:
    """A :class:`DecoderInputLoss` with teacher forcing (benchmarks, tests)."""
    fn = get_criterion(criterion) if isinstance(criterion, str) else criterion
    return DecoderInputLoss(teacher_forcing, fn, options or {}, blank_id=blank_id, pad_id=pad_id)


# --------------------------------------------------------------------------- built-in regimes


def teacher_forcing(model: torch.nn.Module, batch: Any, *, update: int | None) -> Tensor:
    """``bos y_1 … y_n`` (+pad): the batch's ``prev_output_tokens``."""
    return batch.prev_output_tokens


def doubled(model: torch.nn.Module, batch: Any, *, update: int | None) -> Tensor:
    """Every decoder input token twice (layout ``"doubled"``; see :mod:`.doubled`)."""
    from latalign.translate.doubled import double_inputs

    return double_inputs(batch.prev_output_tokens)


register_regime(
    Regime(
        "teacher_forcing",
        lambda cfg, tok: teacher_forcing,
        help="decoder input bos y_1 … y_n (the default)",
    )
)
register_regime(
    Regime(
        "doubled",
        lambda cfg, tok: doubled,
        layout="doubled",
        help="every decoder input token fed twice (2T positions; criterion doubled_ctc)",
    )
)


def check_combination(cfg: TrainConfig) -> None:
    """One validation of arch x regime x criterion x options; ``ValueError`` naming the
    offending value. Called by ``TrainConfig.__post_init__``."""
    from latalign.translate.arch import get_arch
    from latalign.translate.train import PLUGIN_OPTION_FIELDS

    arch = get_arch(cfg.arch)
    regime = get_regime(cfg.regime)
    if arch.criteria is not None and cfg.criterion not in arch.criteria:
        raise ValueError(
            f"expected a criterion of arch {arch.name!r} among {sorted(arch.criteria)}; "
            f"found {cfg.criterion!r}"
        )
    if arch.regimes is not None and cfg.regime not in arch.regimes:
        raise ValueError(
            f"expected a regime of arch {arch.name!r} among {sorted(arch.regimes)}; "
            f"found {cfg.regime!r}"
        )
    if layout_of(cfg.criterion) != regime.layout:
        raise ValueError(
            f"expected criterion {cfg.criterion!r} with a regime of layout "
            f"{layout_of(cfg.criterion)!r}; found regime {cfg.regime!r} ({regime.layout!r})"
        )
    used = arch.options | regime.options
    unused = sorted(
        name for name in PLUGIN_OPTION_FIELDS if name not in used and getattr(cfg, name) is not None
    )
    if unused:
        raise ValueError(
            f"expected options of arch {arch.name!r} and regime {regime.name!r} among "
            f"{sorted(used) or 'none'}; found {unused}"
        )
    if arch.check is not None:
        arch.check(cfg)
    if regime.check is not None:
        regime.check(cfg)
