"""The stack's three registries: architectures, decoder-input regimes and criteria.

A run is ``(arch, regime, criterion)`` plus their options, all fields of one
:class:`~latalign.translate.config.TrainConfig`. Each name maps to an entry here:

- :class:`Arch`: how to build the model, rebuild it from a checkpoint, make the per-step loss
  and decode it (``ar``: :mod:`latalign.translate.ar`; ``ar_aux_ctc``:
  :mod:`latalign.translate.aux_ctc`; ``nat``: :mod:`latalign.translate.nat.plugin`);
- :class:`Regime`: what an autoregressive decoder is fed in training, validation and
  decoding (:mod:`latalign.translate.regimes`);
- :class:`Criterion`: a pure loss function ``(logits, targets, input_lengths,
  target_lengths, *, blank, **options) -> (loss_sum, nll_sum | None)``
  (:mod:`latalign.translate.criteria`).

This module imports nothing of the stack (entries hold plain callables), so every layer can
read it. The built-in entries are registered when their modules are imported, which
:mod:`latalign.translate` does explicitly (no auto-loading); another package registers its
own with :func:`register_arch` / :func:`register_regime` / :func:`register_criterion`.

Options: an arch or regime lists the TrainConfig fields it reads with their defaults
(``options``); a field another arch or regime reads must stay None (``TrainConfig`` refuses
it), and :meth:`~latalign.translate.config.TrainConfig.option` returns a field's value or the
default of the entry that reads it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = [
    "ARCHS",
    "CRITERIA",
    "REGIMES",
    "Arch",
    "Criterion",
    "Regime",
    "Registry",
    "get_arch",
    "get_criterion",
    "get_regime",
    "register_arch",
    "register_criterion",
    "register_regime",
]

#: The decoder-input layouts a regime may produce and a criterion may need: ``"shifted"``
#: (T positions, position j predicts ``target[j]``) or ``"doubled"`` (2T positions).
LAYOUTS = {"shifted": 1, "doubled": 2}


def _frozen(options: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(options))


@dataclass(frozen=True)
class Criterion:
    """A training criterion: ``fn(logits (B, T, V), targets (B, N), input_lengths (B,),
    target_lengths (B,), *, blank, **options) -> (loss_sum, nll_sum or None)`` in nats.

    ``layout``: the decoder-input layout its logits come from (see :data:`LAYOUTS`); it runs
    only under a regime of that layout. ``archs``: the archs it runs under (None: any arch
    that accepts it; ``dag`` needs a DAG decoder's transitions). :attr:`options`: its
    keyword options and defaults.
    """

    name: str
    fn: Callable[..., Any]
    layout: str = "shifted"
    help: str = ""
    archs: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"expected a layout in {sorted(LAYOUTS)}; found {self.layout!r}")

    @property
    def options(self) -> dict[str, Any]:
        """Keyword options with their defaults, e.g. ``{"delta": 1.0}`` (``blank`` excluded:
        the stack passes the tokenizer's; so are options a ``functools.partial`` binds)."""
        bound = set(getattr(self.fn, "keywords", {})) | {"blank"}
        sig = inspect.signature(self.fn)
        return {
            p.name: p.default
            for p in sig.parameters.values()
            if p.kind is p.KEYWORD_ONLY and p.name not in bound
        }


@dataclass(frozen=True)
class Regime:
    """A decoder-input regime of the autoregressive archs.

    - ``make(cfg, tokenizer) -> DecoderInput``: ``decoder_input(model, batch, *, update)``
      gives the (B, T') decoder input of a training batch (``update``: updates done) or,
      with ``update=None``, of a validation batch (what inference feeds, with gold tokens);
    - ``layout``: see :data:`LAYOUTS`;
    - ``options``: TrainConfig fields it reads and their defaults; ``check(cfg)`` validates
      them (``ValueError``);
    - ``decoder(cfg, tokenizer, options) -> BatchDecoder`` when decoding a run of this regime
      differs from the stack's beam search (None: beam search / greedy of the model).
    """

    name: str
    make: Callable[..., Any]
    layout: str = "shifted"
    options: Mapping[str, Any] = field(default_factory=dict)
    check: Callable[[Any], None] | None = None
    decoder: Callable[..., Any] | None = None
    help: str = ""

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"expected a layout in {sorted(LAYOUTS)}; found {self.layout!r}")
        object.__setattr__(self, "options", _frozen(self.options))


@dataclass(frozen=True)
class Arch:
    """An architecture the one training loop can train.

    - ``model``: the model class, built from one config object, ``model(config)``; it must
      keep it as ``.cfg`` with ``.to_dict()`` (saved as the checkpoint's ``model_config``);
    - ``config``: that config's class (``config(**model_config)`` rebuilds it);
    - ``config_of(cfg, vocab_size) -> config``: the model config of a run (the preset with
      the run's overrides and arch options);
    - :meth:`build` (a fresh model; the loop seeds the RNG first) and :meth:`load` (a
      checkpoint's model, :func:`latalign.translate.run.load_run` then loads the weights)
      follow from these three;
    - ``make_loss(cfg, tokenizer) -> LossFn``: the per-step loss;
    - ``decoder(cfg, tokenizer, options) -> BatchDecoder``: how a run of this arch decodes
      (:class:`~latalign.translate.decode.SearchOptions` ``options``);
    - ``options``: TrainConfig fields it reads and their defaults; ``check(cfg)``: extra
      validation (``ValueError``);
    - ``criteria`` / ``regimes``: the names it can train with (None: every registered one);
    - ``autoregressive``: whether it decodes token by token (beam search applies).
    """

    name: str
    model: Callable[[Any], Any]
    config: Callable[..., Any]
    config_of: Callable[[Any, int], Any]
    make_loss: Callable[..., Any]
    decoder: Callable[..., Any]
    options: Mapping[str, Any] = field(default_factory=dict)
    criteria: frozenset[str] | None = None
    regimes: frozenset[str] | None = None
    check: Callable[[Any], None] | None = None
    autoregressive: bool = True
    help: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", _frozen(self.options))

    def build(self, cfg: Any, vocab_size: int) -> Any:
        """A fresh model of the run ``cfg`` (a TrainConfig) over ``vocab_size`` tokens."""
        return self.model(self.config_of(cfg, vocab_size))

    def load(self, model_config: Mapping[str, Any]) -> Any:
        """The model of a checkpoint's ``model_config``, before its weights are loaded."""
        return self.model(self.config(**model_config))


class Registry(dict[str, Any]):
    """A name -> entry table: :meth:`register` adds an entry, :meth:`lookup` finds one
    (``ValueError`` listing the known names)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, entry: Any) -> Any:
        """Add ``entry`` under ``entry.name`` (``ValueError`` if the name is taken); returns it."""
        if entry.name in self and self[entry.name] is not entry:
            raise ValueError(
                f"expected a new {self.kind} name; found {entry.name!r} registered already"
            )
        self[entry.name] = entry
        return entry

    def lookup(self, name: str) -> Any:
        """The entry registered under ``name``."""
        try:
            return self[name]
        except (KeyError, TypeError):
            article = "an" if self.kind[0] in "aeiou" else "a"
            raise ValueError(
                f"expected {article} {self.kind} in {{{', '.join(self)}}}; found {name!r}"
            ) from None


ARCHS = Registry("arch")
REGIMES = Registry("regime")
CRITERIA = Registry("criterion")

register_arch: Callable[[Arch], Arch] = ARCHS.register
register_regime: Callable[[Regime], Regime] = REGIMES.register
register_criterion: Callable[[Criterion], Criterion] = CRITERIA.register
get_arch: Callable[[str], Arch] = ARCHS.lookup
get_regime: Callable[[str], Regime] = REGIMES.lookup
get_criterion: Callable[[str], Criterion] = CRITERIA.lookup
