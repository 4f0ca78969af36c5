"""The ``ar_aux_ctc`` arch, the positive control (Yan et al., 2023, "CTC alignments improve
autoregressive translation"): the autoregressive transformer trained under its regime with
any criterion, plus ``aux_ctc_weight ×`` CTC on the encoder states upsampled ``upsample``
times (:class:`UpsampledCTCHead`). The alignment is then not tied to the decoder's
teacher-forced positions. Decoded like ``ar`` (the head is only a training signal)::

    TrainConfig(arch="ar_aux_ctc", aux_ctc_weight=1.0, upsample=3)

Shapes: B sentences, T decoder positions, S source positions, C model width, V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

import latalign
from latalign.translate.ar import autoregressive_decoder
from latalign.translate.config import ModelConfig, TrainConfig
from latalign.translate.loss import DecoderInputLoss
from latalign.translate.model import Transformer
from latalign.translate.registry import Arch, register_arch

__all__ = [
    "AUX_CTC",
    "AuxCTCLoss",
    "AuxCTCModelConfig",
    "AuxCTCTransformer",
    "UpsampledCTCHead",
    "upsampled_ctc_sum",
]


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


class UpsampledCTCHead(nn.Module):
    """CTC head on upsampled encoder states (Yan et al., 2023, the "CTC alignments improve
    autoregressive translation" setting).

    Each encoder state (C,) becomes ``upsample`` states by one linear map C -> upsample·C,
    then ReLU, LayerNorm and a linear layer over the vocabulary:
    (B, S, C) -> logits (B, S·upsample, V); lengths ``upsample · S_b`` (source padding
    removed). Used only for the auxiliary loss; the decoder is untouched.
    """

    def __init__(self, d_model: int, vocab_size: int, upsample: int = 3) -> None:
        super().__init__()
        if not _is_int(upsample) or upsample < 1:
            raise ValueError(f"expected upsample >= 1; found {upsample!r}")
        self.upsample = upsample
        self.expand = nn.Linear(d_model, upsample * d_model)
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab_size)
        nn.init.xavier_uniform_(self.expand.weight)
        nn.init.zeros_(self.expand.bias)
        nn.init.normal_(self.out.weight, mean=0.0, std=d_model**-0.5)
        nn.init.zeros_(self.out.bias)

    def forward(self, states: Tensor, padding_mask: Tensor) -> tuple[Tensor, Tensor]:
        """states (B, S, C), padding_mask (B, S) True at padding -> (logits (B, S·u, V),
        lengths (B,)). Padding must be on the right (as :func:`collate` pads)."""
        b, s, c = states.shape
        up = self.expand(states).view(b, s * self.upsample, c)  # state i -> rows i·u … i·u+u−1
        logits = self.out(self.norm(F.relu(up)))
        lengths = (~padding_mask).sum(dim=1) * self.upsample
        return logits, lengths


@dataclass
class AuxCTCModelConfig(ModelConfig):
    """:class:`ModelConfig` plus the upsampling of the auxiliary CTC head."""

    aux_upsample: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if not _is_int(self.aux_upsample) or self.aux_upsample < 1:
            raise ValueError(f"expected upsample >= 1; found {self.aux_upsample!r}")


class AuxCTCTransformer(Transformer):
    """The positive control's model: a :class:`Transformer` (so the AR decoders and the
    analysis use it unchanged) with an :class:`UpsampledCTCHead` on
    the encoder. ``forward(..., aux=True)`` also returns the head's ``(logits (B, S·u, V),
    lengths (B,))`` from the same encoder pass (one call: what DDP needs)."""

    def __init__(self, cfg: AuxCTCModelConfig) -> None:
        super().__init__(cfg)
        self.aux_head = UpsampledCTCHead(cfg.d_model, cfg.vocab_size, cfg.aux_upsample)

    def forward(  # type: ignore[override]
        self,
        src_tokens: Tensor,
        src_lengths: Tensor | None,
        prev_output_tokens: Tensor,
        *,
        aux: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        """logits (B, T, V); with ``aux`` also the CTC head's logits and lengths."""
        enc = self.encode(src_tokens, src_lengths)
        logits = self.decode(prev_output_tokens, enc)
        if not aux:
            return logits
        aux_logits, aux_lengths = self.aux_head(enc.out, enc.padding_mask)
        return logits, aux_logits, aux_lengths


def upsampled_ctc_sum(aux_logits: Tensor, aux_lengths: Tensor, batch: Any, blank_id: int) -> Tensor:
    """Summed CTC (nats; ``latalign.ctc_loss`` with ``from_logits`` and ``zero_infinity``:
    sentences too long for the upsampled source contribute 0) of the head's logits
    (B, S·u, V) against ``batch.target`` (B, T) with ``batch.target_lengths``."""
    return latalign.ctc_loss(
        aux_logits.float(),
        batch.target,
        aux_lengths,
        batch.target_lengths,
        blank=blank_id,
        reduction="sum",
        zero_infinity=True,
        from_logits=True,
    )


class AuxCTCLoss(DecoderInputLoss):
    """The ``ar_aux_ctc`` LossFn: the run's regime makes the decoder input, one call of
    ``model(..., aux=True)`` (what DDP needs) gives the decoder's and the head's logits; the
    loss is the criterion's (as ``ar``) plus ``weight ×`` :func:`upsampled_ctc_sum`. Stats:
    the criterion's with ``loss`` the total and ``aux_ctc`` the unweighted CTC sum (nats);
    validation adds ``ce``."""

    def __init__(self, *args: Any, weight: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.weight = float(weight)

    @classmethod
    def from_config(cls, cfg: TrainConfig, tokenizer: Any, **extra: Any) -> AuxCTCLoss:
        return super().from_config(cfg, tokenizer, weight=cfg.option("aux_ctc_weight"))  # type: ignore[return-value]

    def __call__(
        self, model: nn.Module, batch: Any, *, update: int | None
    ) -> tuple[Tensor, dict[str, Any]]:
        prev = self.decoder_input(model, batch, update=update)
        logits, aux_logits, aux_lengths = model(batch.src_tokens, batch.src_lengths, prev, aux=True)
        loss, stats = self.score(logits, batch, update)
        ctc = upsampled_ctc_sum(aux_logits, aux_lengths, batch, self.blank_id)
        total = loss + self.weight * ctc
        stats["aux_ctc"] = ctc.detach()  # device tensors: the Meter reads them once per log
        stats["loss"] = total.detach()
        return total, stats


def _check(cfg: TrainConfig) -> None:
    w, u = cfg.option("aux_ctc_weight"), cfg.option("upsample")
    if not (isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w) and w >= 0):
        raise ValueError(f"expected aux_ctc_weight >= 0; found {w!r}")
    if not _is_int(u) or u < 1:
        raise ValueError(f"expected upsample >= 1; found {u!r}")


def aux_config_of(cfg: TrainConfig, vocab_size: int) -> AuxCTCModelConfig:
    """The model config of an aux-CTC run: the preset with ``cfg.model`` overrides and the
    run's ``upsample`` for the auxiliary head."""
    return AuxCTCModelConfig.preset(
        cfg.preset, vocab_size, aux_upsample=cfg.option("upsample"), **cfg.model
    )


AUX_CTC = register_arch(
    Arch(
        name="ar_aux_ctc",
        model=AuxCTCTransformer, config=AuxCTCModelConfig, config_of=aux_config_of,
        make_loss=AuxCTCLoss.from_config, decoder=autoregressive_decoder,
        options={"aux_ctc_weight": 1.0, "upsample": AuxCTCModelConfig.aux_upsample},
        regimes=frozenset(
            {"teacher_forcing", "scheduled_sampling", "free_running", "corruption", "delayed"}
        ),
        check=_check,
        help="positive control: ar transformer + auxiliary CTC on upsampled encoder states",
    )
)  # fmt: skip
