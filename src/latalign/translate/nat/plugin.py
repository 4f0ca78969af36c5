"""``--arch nat`` in the one training loop: build/load the model, the per-step loss, checks,
decoding.

Registered in :data:`latalign.translate.registry.ARCHS` when this module is imported
(:mod:`latalign.translate` imports it). TrainConfig fields read (defaults: :class:`NATConfig`'s
and the length-loss weight below): ``nat_input`` (copy / mask), ``upsample`` (ctc / latent),
``length_loss_weight`` and ``length_beam`` (ce / label_smoothed_ce / axe); model overrides
(``--model``) go to the :class:`~latalign.translate.config.ModelConfig` part.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from latalign.translate.config import ModelConfig, TrainConfig
from latalign.translate.decode import BatchDecoder, OptionError, SearchOptions
from latalign.translate.distributed import unwrap
from latalign.translate.nat.criteria import (
    LENGTH_MODE_OF,
    check_nat_criterion,
    nat_loss,
    nat_targets,
)
from latalign.translate.nat.decode import decode_batch
from latalign.translate.nat.glancing import (
    GLANCING_OPTIONS,
    GlancingSchedule,
    check_glancing,
    glancing_forward,
)
from latalign.translate.nat.model import NATConfig, NATransformer
from latalign.translate.registry import Arch, register_arch
from latalign.translate.tokenizer import SpecialIds

__all__ = ["NAT", "NATLoss", "check_nat", "nat_config_of", "nat_decoder"]

_PREDICT_ONLY = ("length_loss_weight", "length_beam")


def check_nat(cfg: TrainConfig) -> None:
    """``ValueError`` (one line, before any work) for a config ``--arch nat`` cannot train."""
    check_nat_criterion(cfg.criterion, cfg.criterion_options())
    mode = LENGTH_MODE_OF[cfg.criterion]
    if mode == "upsample":
        bad = [f"--{n.replace('_', '-')}" for n in _PREDICT_ONLY if getattr(cfg, n) is not None]
        if bad:
            raise ValueError(
                f"expected no {', '.join(bad)} with criterion {cfg.criterion!r} (it has no "
                "length predictor; it decodes at upsample x source length), found it set"
            )
    elif cfg.upsample is not None:
        raise ValueError(
            f"expected --upsample only with criterion ctc or latent, found it with "
            f"{cfg.criterion!r} (which decodes at a predicted length)"
        )
    if cfg.upsample is not None and (
        not isinstance(cfg.upsample, int) or isinstance(cfg.upsample, bool) or cfg.upsample < 1
    ):
        raise ValueError(f"expected upsample >= 1, found {cfg.upsample!r}")
    if cfg.length_beam is not None and cfg.length_beam < 1:
        raise ValueError(f"expected length_beam >= 1, found {cfg.length_beam}")
    if cfg.length_loss_weight is not None and cfg.length_loss_weight < 0:
        raise ValueError(f"expected length_loss_weight >= 0, found {cfg.length_loss_weight}")
    if cfg.nat_input is not None and cfg.nat_input not in ("copy", "mask"):
        raise ValueError(f"expected nat_input copy or mask, found {cfg.nat_input!r}")
    check_glancing(cfg)


def nat_config_of(cfg: TrainConfig, vocab_size: int) -> NATConfig:
    """The model config of a NAT run: the preset with ``cfg.model`` overrides, plus the NAT
    fields the run sets (the others keep :class:`NATConfig`'s defaults)."""
    base = ModelConfig.preset(cfg.preset, vocab_size, **cfg.model)
    return NATConfig.from_model_config(
        base, length=LENGTH_MODE_OF[cfg.criterion], decoder_input=cfg.option("nat_input"),
        upsample=cfg.option("upsample"), length_beam=cfg.option("length_beam"),
    )  # fmt: skip


class NATLoss:
    """The LossFn of ``--arch nat``: one forward ``model(src, src_len, n)`` (n = gold lengths
    without eos), then :func:`~latalign.translate.nat.criteria.nat_loss`. ``ntokens`` is the
    number of target tokens without eos (what NAT predicts)."""

    def __init__(self, cfg: TrainConfig, tokenizer: Any) -> None:
        self.criterion = cfg.criterion
        self.options = cfg.criterion_options()
        self.length_loss_weight = float(cfg.option("length_loss_weight"))
        self.blank_id = tokenizer.blank_id
        self.pad_id = tokenizer.pad_id
        self.glancing = GlancingSchedule.from_config(cfg)

    def __call__(
        self, model: torch.nn.Module, batch: Any, *, update: int | None
    ) -> tuple[Tensor, dict[str, Any]]:
        target, lengths = nat_targets(batch.target, batch.target_lengths, self.pad_id)
        # plain NAT without a schedule, in validation or at ratio 0; the width read off the
        # shapes either way: no host synchronisation
        output, loss_target, extra = glancing_forward(
            model, batch, target, lengths, schedule=self.glancing, update=update,
            criterion=self.criterion, blank_id=self.blank_id, pad_id=self.pad_id,
            options=self.options,
        )  # fmt: skip
        loss, stats = nat_loss(
            output, loss_target, lengths, batch.src_tokens, unwrap(model), self.criterion,
            blank_id=self.blank_id, pad_id=self.pad_id,
            length_loss_weight=self.length_loss_weight, **self.options,
        )  # fmt: skip
        return loss, {**stats, **extra}


def nat_decoder(cfg: TrainConfig, tokenizer: Any, options: SearchOptions) -> BatchDecoder:
    """How a NAT run decodes: one decoder pass with its own length rule (the length beam of
    ``options.length_beam``, default the run's, or the CTC collapse); beam options do not
    apply. ``length_beam`` is refused for a run without a length predictor."""
    if options.length_beam is not None and LENGTH_MODE_OF[cfg.criterion] != "predict":
        raise OptionError(
            "length_beam",
            "expected a NAT run with a length predictor (criterion ce or axe) for {name}; "
            f"found one that decodes at {cfg.option('upsample')} x the source length "
            "(criterion ctc or latent: no length to search)",
        )
    k = cfg.option("length_beam") if options.length_beam is None else options.length_beam
    ids = SpecialIds.of(tokenizer)
    return lambda model, src, _lengths: decode_batch(model, src, length_beam=k, ids=ids)


NAT = register_arch(
    Arch(
        name="nat", model=NATransformer, config=NATConfig, config_of=nat_config_of,
        make_loss=NATLoss, decoder=nat_decoder,
        options={
            "upsample": NATConfig.upsample,
            "length_loss_weight": 0.1,
            "length_beam": NATConfig.length_beam,
            "nat_input": NATConfig.decoder_input,
        }
        | dict.fromkeys(GLANCING_OPTIONS),
        criteria=frozenset(LENGTH_MODE_OF),
        autoregressive=False,
        regimes=frozenset({"teacher_forcing"}),
        check=check_nat,
        help="non-autoregressive transformer (one decoder pass; docs/nat.md)",
    )
)  # fmt: skip
