"""The ``ar`` arch: the autoregressive :class:`~latalign.translate.model.Transformer` trained
under a decoder-input regime (teacher forcing by default) with any criterion, decoded with
the stack's beam search (or its regime's own decoder: delayed inputs, the doubled layout).

A plugin of :mod:`latalign.translate.registry` like ``nat`` and ``ar_aux_ctc``;
:func:`autoregressive_decoder` is shared with ``ar_aux_ctc``.
"""

from __future__ import annotations

from typing import Any

from latalign.translate.config import ModelConfig, TrainConfig
from latalign.translate.decode import BatchDecoder, OptionError, SearchOptions, search_decoder
from latalign.translate.loss import DecoderInputLoss
from latalign.translate.model import Transformer
from latalign.translate.registry import Arch, get_regime, register_arch

__all__ = ["AR", "autoregressive_decoder"]


def autoregressive_decoder(
    cfg: TrainConfig, tokenizer: Any, options: SearchOptions
) -> BatchDecoder:
    """How an autoregressive run decodes: its regime's decoder when it has one, else beam
    search (greedy for beam 1). ``length_beam`` is refused: beam search sets the length."""
    if options.length_beam is not None:
        raise OptionError(
            "length_beam",
            "expected a non-autoregressive run (--arch nat) for {name}; found an "
            "autoregressive run, whose beam search sets the length",
        )
    regime = get_regime(cfg.regime)
    if regime.decoder is not None:
        return regime.decoder(cfg, tokenizer, options)
    return search_decoder(options, tokenizer)


def model_config_of(cfg: TrainConfig, vocab_size: int) -> ModelConfig:
    """The model config of an AR run: the preset with ``cfg.model`` overrides."""
    return ModelConfig.preset(cfg.preset, vocab_size, **cfg.model)


AR = register_arch(
    Arch(
        name="ar", model=Transformer, config=ModelConfig, config_of=model_config_of,
        make_loss=DecoderInputLoss.from_config, decoder=autoregressive_decoder,
        help="autoregressive transformer (teacher forcing or another decoder-input regime)",
    )
)  # fmt: skip
