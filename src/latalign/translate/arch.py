"""Architectures the one training loop can train: a registry of :class:`Arch` entries.

An arch says how to build a model from a :class:`~latalign.translate.train.TrainConfig`, how to
rebuild it from a checkpoint's ``model_config`` (for ``load_model``), and how to build the
per-step loss (:class:`~latalign.translate.loss.LossFn`) that :func:`train` calls. ``"ar"`` is
the autoregressive :class:`~latalign.translate.model.Transformer` trained under a decoder-input
regime (teacher forcing by default) with any criterion of
:data:`~latalign.translate.criteria.CRITERIA`.

Other packages register theirs with :func:`register_arch` at import time; the modules named in
:data:`EXTENSIONS` are imported on the first registry lookup (``latalign.translate.nat`` for
``--arch nat``, ``latalign.translate.regimes`` for the decoder-input regimes), so an extension
needs no edit here. See ``/work/coord/TRAINER_API.md`` (the plug-in contract).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # pragma: no cover
    from latalign.translate.loss import LossFn
    from latalign.translate.train import TrainConfig

#: Modules imported (when present) before the first registry lookup; each registers its
#: archs/regimes. A module that does not exist is skipped; any other import error propagates.
EXTENSIONS = ("latalign.translate.nat", "latalign.translate.regimes")


@dataclass(frozen=True)
class Arch:
    """One architecture of the stack.

    - ``build(cfg, vocab_size) -> nn.Module``: a fresh model (the loop seeds the RNG first).
      The model must have ``.cfg.to_dict()`` (saved as the checkpoint's ``model_config``).
    - ``load(model_config: dict) -> nn.Module``: the same model rebuilt from a checkpoint's
      ``model_config`` (``load_model`` then loads the state dict).
    - ``make_loss(cfg, tokenizer) -> LossFn``: the per-step loss for this run.
    - ``options``: TrainConfig fields this arch reads; setting another arch's field (not None)
      is a config error.
    - ``criteria``: criteria it can train with (None: all of ``CRITERIA``).
    - ``regimes``: decoder-input regimes it can train with (None: all of ``REGIMES``).
    - ``check(cfg)``: extra validation, raises ``ValueError`` (run by ``TrainConfig``).
    """

    name: str
    build: Callable[[TrainConfig, int], torch.nn.Module]
    load: Callable[[dict[str, Any]], torch.nn.Module]
    make_loss: Callable[[TrainConfig, Any], LossFn]
    options: frozenset[str] = field(default_factory=frozenset)
    criteria: frozenset[str] | None = None
    regimes: frozenset[str] | None = None
    check: Callable[[TrainConfig], None] | None = None
    help: str = ""


ARCHS: dict[str, Arch] = {}
_extensions_loaded = False


def register_arch(arch: Arch) -> Arch:
    """Add ``arch`` to :data:`ARCHS` (``ValueError`` if the name is taken); returns it."""
    if arch.name in ARCHS and ARCHS[arch.name] is not arch:
        raise ValueError(f"expected a new arch name; found {arch.name!r} registered already")
    ARCHS[arch.name] = arch
    return arch


def load_extensions() -> None:
    """Import the :data:`EXTENSIONS` that exist (once)."""
    global _extensions_loaded
    if _extensions_loaded:
        return
    _extensions_loaded = True
    for name in EXTENSIONS:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise


def get_arch(name: str) -> Arch:
    """The arch registered under ``name``; ``ValueError`` listing the known names."""
    load_extensions()
    try:
        return ARCHS[name]
    except KeyError:
        raise ValueError(f"expected an arch in {{{', '.join(ARCHS)}}}; found {name!r}") from None


# --------------------------------------------------------------------------- "ar"


def _build_ar(cfg: TrainConfig, vocab_size: int) -> torch.nn.Module:
    from latalign.translate.config import ModelConfig
    from latalign.translate.model import Transformer

    return Transformer(ModelConfig.preset(cfg.preset, vocab_size, **cfg.model))


def _load_ar(model_config: dict[str, Any]) -> torch.nn.Module:
    from latalign.translate.config import ModelConfig
    from latalign.translate.model import Transformer

    return Transformer(ModelConfig(**model_config))


def _ar_loss(cfg: TrainConfig, tokenizer: Any) -> LossFn:
    from latalign.translate.loss import DecoderInputLoss

    return DecoderInputLoss.from_config(cfg, tokenizer)


AR = register_arch(
    Arch(
        name="ar",
        build=_build_ar,
        load=_load_ar,
        make_loss=_ar_loss,
        help="autoregressive transformer (teacher forcing or another decoder-input regime)",
    )
)
