"""Non-autoregressive transformer: the encoder of :mod:`latalign.translate.model`, a decoder
without causal mask or target prefix, and (for ``ce``/``axe``) a length predictor.

Every output position is predicted in one pass from the encoder output. Two decoder inputs
(``NATConfig.decoder_input``):

- ``"copy"``: the source token embeddings copied uniformly to the output length (Gu et al.
  2018): output position ``j`` of ``T`` takes source position ``round(j * (S - 1) / (T - 1))``
  of the ``S`` non-pad source tokens (eos included), plus the decoder's sinusoidal position.
- ``"mask"``: one learned mask vector at every position plus the sinusoidal position.

The output length comes from the source (``NATConfig.length``):

- ``"predict"`` (``ce``, ``axe``): a linear classifier on the mean-pooled encoder output over
  the offset ``target length - source length`` clipped to ``[-K, K]`` (``K =
  max_length_offset``; lengths count non-pad tokens: the source with its eos, the target
  without eos). Training decodes at the gold length; inference decodes the top-k lengths
  (:mod:`latalign.translate.nat.decode`).
- ``"upsample"`` (``ctc``, ``latent``): ``upsample * source length`` positions, no predictor.

Shapes: B batch, S source length, T output length, C = d_model, V vocabulary, L = 2K + 1
length classes. Source padding must be on the right (as :func:`collate` pads).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from latalign.align import validation_enabled
from latalign.translate.config import ModelConfig
from latalign.translate.model import EncoderOut, Transformer

__all__ = ["DECODER_INPUTS", "LENGTH_MODES", "NATConfig", "NATOutput", "NATransformer"]

DECODER_INPUTS = ("copy", "mask")
LENGTH_MODES = ("predict", "upsample")


@dataclass
class NATConfig(ModelConfig):
    """A :class:`ModelConfig` plus what makes the decoder non-autoregressive (saved whole as
    the checkpoint's ``model_config``).

    ``decoder_input``: ``"copy"`` (uniform copy of the source embeddings) or ``"mask"``
    (learned mask vector); ``"copy"`` is the default because it trained better on the
    synthetic corpus in the same number of updates (docs/nat.md). ``length``: ``"predict"``
    or ``"upsample"``. ``upsample``: output positions per source token (``upsample`` mode,
    >= 1). ``max_length_offset``: K of the length classifier's ``2K + 1`` offset classes.
    ``length_beam``: lengths decoded at inference (predict mode; a decoding default kept
    with the model so that ``translate`` finds it).
    """

    decoder_input: str = "copy"
    length: str = "predict"
    upsample: int = 2
    max_length_offset: int = 32
    length_beam: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.decoder_input not in DECODER_INPUTS:
            raise ValueError(
                f"expected decoder_input in {DECODER_INPUTS}, found {self.decoder_input!r}"
            )
        if self.length not in LENGTH_MODES:
            raise ValueError(f"expected length in {LENGTH_MODES}, found {self.length!r}")
        for name in ("upsample", "max_length_offset", "length_beam"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"expected an int {name} >= 1, found {value!r}")

    @classmethod
    def from_model_config(cls, cfg: ModelConfig, **nat: Any) -> NATConfig:
        """``cfg``'s fields plus the NAT fields ``nat``."""
        return cls(**{**cfg.to_dict(), **nat})


@dataclass
class NATOutput:
    """``logits`` (B, T, V) float; ``output_lengths`` (B,) valid positions per row (the rest
    is padding); ``length_logits`` (B, L) of the offset classifier, None in upsample mode."""

    logits: Tensor
    output_lengths: Tensor
    length_logits: Tensor | None


class NATransformer(Transformer):
    """The :class:`Transformer`'s modules (encoder, decoder layers, embeddings, output
    projection) run non-autoregressively, plus a length classifier or a mask vector."""

    def __init__(self, cfg: NATConfig) -> None:
        if not isinstance(cfg, NATConfig):
            raise ValueError(f"expected a NATConfig, found {type(cfg).__name__}")
        super().__init__(cfg)
        self.cfg: NATConfig = cfg
        if not (cfg.share_decoder_input_output_embed or cfg.share_all_embeddings):
            # the NAT decoder reads no target tokens: an untied decoder embedding would be an
            # unused parameter (DDP refuses those)
            del self.decoder_embed
            self.decoder_embed = None
        d = cfg.d_model
        self.mask_embed = None
        if self.cfg.decoder_input == "mask":
            self.mask_embed = nn.Parameter(torch.empty(d).normal_(0.0, d**-0.5))
        self.length_classifier = None
        if self.cfg.length == "predict":
            self.length_classifier = nn.Linear(d, 2 * self.cfg.max_length_offset + 1)
            nn.init.normal_(self.length_classifier.weight, mean=0.0, std=d**-0.5)
            nn.init.zeros_(self.length_classifier.bias)

    # ------------------------------------------------------------------ lengths
    @staticmethod
    def source_lengths(src_tokens: Tensor, pad_id: int) -> Tensor:
        """(B, S) -> (B,) non-pad source tokens (eos included)."""
        return src_tokens.ne(pad_id).sum(dim=1)

    def upsampled_lengths(self, src_tokens: Tensor) -> Tensor:
        """(B,) output lengths of upsample mode: ``upsample * source length``."""
        lengths = self.cfg.upsample * self.source_lengths(src_tokens, self.pad_id)
        return lengths.clamp(max=self.cfg.max_positions)

    def length_logits(self, encoder_out: EncoderOut) -> Tensor:
        """Mean-pooled encoder output -> (B, L) logits over offsets ``-K .. K``."""
        if self.length_classifier is None:
            raise ValueError("expected a model with a length predictor, found length='upsample'")
        keep = (~encoder_out.padding_mask).to(encoder_out.out.dtype)[..., None]  # (B, S, 1)
        pooled = (encoder_out.out * keep).sum(dim=1) / keep.sum(dim=1)  # (B, C)
        return self.length_classifier(pooled).float()

    def length_classes(self, target_lengths: Tensor, src_tokens: Tensor) -> Tensor:
        """(B,) offset class of gold output lengths: ``clip(n - S, -K, K) + K``."""
        k = self.cfg.max_length_offset
        offset = target_lengths - self.source_lengths(src_tokens, self.pad_id)
        return offset.clamp(-k, k) + k

    def lengths_of_classes(self, classes: Tensor, src_tokens: Tensor) -> Tensor:
        """Offset classes (B, ...) -> output lengths ``S + class - K`` in [1, max_positions]."""
        src_len = self.source_lengths(src_tokens, self.pad_id)
        src_len = src_len.view(-1, *([1] * (classes.dim() - 1)))
        lengths = src_len + classes - self.cfg.max_length_offset
        return lengths.clamp(1, self.cfg.max_positions)

    # ------------------------------------------------------------------ decoder
    def batch_width(self, src_tokens: Tensor, target: Tensor) -> int:
        """The output width T (= the longest output length) of a training batch padded to its
        longest sentence (as :func:`~latalign.translate.batching.collate` pads), read off the
        shapes: the gold width of ``target`` (B, N) (``y_1 .. y_n``, at least 1) in predict
        mode, ``upsample`` x the source width in upsample mode (capped at max_positions). Pass
        it as ``output_width`` so that the forward pass needs no host synchronisation."""
        if self.cfg.length == "upsample":
            return min(self.cfg.upsample * src_tokens.size(1), self.cfg.max_positions)
        return max(target.size(1), 1)

    def decoder_input(
        self,
        src_tokens: Tensor,
        output_lengths: Tensor,
        glanced: Tensor | None = None,
        *,
        output_width: int | None = None,
    ) -> Tensor:
        """(B, T, C) decoder input for ``output_lengths`` (B,), before the decoder layers.

        ``glanced`` (B, T) int64 (glancing training, :mod:`.glancing`): a token id at the
        positions that are fed the reference token's embedding instead of the normal input,
        -1 elsewhere; None = no glancing. ``output_width``: T when the caller knows it (it
        must be ``max(output_lengths)``, e.g. :meth:`batch_width`); None reads it (one host
        synchronisation)."""
        b = src_tokens.size(0)
        t_max = int(output_lengths.max()) if output_width is None else int(output_width)
        if t_max > self.cfg.max_positions:
            raise ValueError(
                f"expected at most max_positions={self.cfg.max_positions} output positions, "
                f"found {t_max}"
            )
        t = torch.arange(t_max, device=src_tokens.device)  # (T,)
        out_mask = t[None, :] < output_lengths[:, None]  # (B, T)
        if self.mask_embed is not None:
            x = self.mask_embed.expand(b, t_max, -1)  # (B, T, C)
        else:
            src_pad = src_tokens.eq(self.pad_id)
            if validation_enabled() and bool((src_pad[:, :-1] & ~src_pad[:, 1:]).any()):
                raise ValueError("expected right-padded source tokens, found a pad before a token")
            src_len = src_tokens.size(1) - src_pad.sum(dim=1)  # (B,)
            steps = (src_len - 1).float() / (output_lengths - 1).clamp(min=1).float()  # (B,)
            index = torch.round(steps[:, None] * t[None, :].float()).long()  # (B, T)
            index = torch.minimum(index, (src_len - 1)[:, None])
            x = self.embed_scale * self.encoder_embed(src_tokens.gather(1, index))  # (B, T, C)
        if glanced is not None:
            embed = self.decoder_embed if self.decoder_embed is not None else self.encoder_embed
            ref = self.embed_scale * embed(glanced.clamp(min=0))  # (B, T, C)
            x = torch.where(glanced.ge(0)[..., None], ref, x)
        x = (x + self.positions_table[1 : t_max + 1]) * out_mask[..., None]
        return self.dropout(x)

    def decode_all(
        self, encoder_out: EncoderOut, src_tokens: Tensor, output_lengths: Tensor, **options: Any
    ) -> Tensor:
        """Every position in one pass: ``output_lengths`` (N,) -> logits (N, T, V) float,
        T = max length; positions past a row's length are padding (attended by nobody).
        ``options`` as for :meth:`decode_states` (``glanced``, ``rows``, ``output_width``),
        whose states this projects to the vocabulary."""
        return self._project(self.decode_states(encoder_out, src_tokens, output_lengths, **options))

    def decode_states(
        self,
        encoder_out: EncoderOut,
        src_tokens: Tensor,
        output_lengths: Tensor,
        glanced: Tensor | None = None,
        rows: Tensor | None = None,
        *,
        output_width: int | None = None,
    ) -> Tensor:
        """:meth:`decode_all` before the output projection: the last decoder layer's states
        (N, T, C) (a DAG's transition head reads them too, :mod:`.dag`). ``glanced``: see
        :meth:`decoder_input`. ``rows`` (N,): decoder row i reads source row ``rows[i]`` of
        ``encoder_out`` and ``src_tokens`` (B rows; the length beam's k candidates per
        sentence), so the encoder keys/values are projected once per source (None: N = B,
        row i reads source i). ``output_width``: see :meth:`decoder_input`. In training mode the
        self- and cross-attention masks are built without looking whether anything is padded
        (no host synchronisation; SDPA with an all-True mask gives the unmasked result); in
        eval mode a batch without padding skips them."""
        src = src_tokens if rows is None else src_tokens.index_select(0, rows)
        x = self.decoder_input(src, output_lengths, glanced, output_width=output_width)
        self_mask = None  # no padding among the outputs (every row as long): SDPA's fast path
        if x.size(0) > 1 and (self.training or bool(output_lengths.ne(x.size(1)).any())):
            t = torch.arange(x.size(1), device=x.device)
            self_mask = (t[None, :] < output_lengths[:, None])[:, None, None, :]  # (N, 1, 1, T)
        cross_mask = encoder_out.attn_mask(always=self.training)
        if cross_mask is not None and rows is not None:
            cross_mask = cross_mask.index_select(0, rows)
        for layer in self.decoder_layers:
            k, v = layer.cross_attn.project_kv(encoder_out.out)  # (B, H, S, D)
            if rows is not None:
                k, v = k.index_select(0, rows), v.index_select(0, rows)
            x, _, _ = layer(x, k, v, cross_mask, causal=False, self_attn_mask=self_mask)
        return x

    def forward(  # type: ignore[override]
        self,
        src_tokens: Tensor,
        src_lengths: Tensor | None = None,
        target_lengths: Tensor | None = None,
        glanced: Tensor | None = None,
        *,
        output_width: int | None = None,
    ) -> NATOutput:
        """src_tokens (B, S) -> :class:`NATOutput`.

        ``target_lengths`` (B,): gold output lengths (tokens without eos), required in predict
        mode (training decodes at the gold length); ignored in upsample mode. ``glanced``
        (B, T): reference tokens fed at some positions (glancing training; see
        :meth:`decoder_input`). ``output_width``: the longest output length when the caller
        knows it (:meth:`batch_width`), else it is read (one host synchronisation).
        """
        enc = self.encode(src_tokens, src_lengths)
        width = {"output_width": output_width}
        if self.cfg.length == "upsample":
            lengths = self.upsampled_lengths(src_tokens)
            logits = self.decode_all(enc, src_tokens, lengths, glanced=glanced, **width)
            return NATOutput(logits, lengths, None)
        if target_lengths is None:
            raise ValueError("expected target_lengths for a length-predicting NAT, found None")
        lengths = target_lengths.clamp(min=1)
        logits = self.decode_all(enc, src_tokens, lengths, glanced=glanced, **width)
        return NATOutput(logits, lengths, self.length_logits(enc))

    # ------------------------------------------------------------------ not autoregressive
    def decode_step(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        raise ValueError(
            "expected an autoregressive model for incremental decoding, found a NAT model "
            "(use latalign.translate.nat.decode)"
        )
