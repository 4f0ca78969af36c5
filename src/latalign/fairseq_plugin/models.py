"""fairseq archs that give a latent alignment loss more decoder positions than target tokens.

Both are fairseq's ``nonautoregressive_transformer`` (its encoder, decoder and
``--src-embedding-copy``) with one change each:

- ``latalign_nat_upsampled`` (CTC; AXE works too): the decoder runs at ``L = ceil(λ·S)``
  positions, ``S`` the source length (its eos included) and ``λ = --upsample-scale``
  (default 2), clamped to ``[2, max target positions]``, fed ``bos unk … unk eos`` like
  fairseq's NAT. No length predictor (its parameters are removed): ``L`` is known from the
  source, at training and at inference alike.
- ``latalign_nat_dag`` (DAG, DA-Transformer's graph): the same ``L`` vertices (default
  ``λ = 4``) plus a transition head: ``scores = (W_q h)(W_k h)ᵀ / √d`` between the vertex
  states ``h``, masked to later vertices and log-softmaxed per row
  (:func:`latalign.fairseq_plugin.layout.dag_transitions`).

The output is fairseq's NAT dict, ``word_ins`` extended by ``lengths`` (N,) and, for the DAG,
``transitions`` (N, L, L); ``out`` are logits (N, L, V).

Decoding (``fairseq-generate --task translation_lev --iter-decode-max-iter 0``): one pass;
CTC: the argmax token per position, consecutive repeats merged (the blank stays and is dropped
from the text by fairseq when it is ``<s>``, the criteria's default); DAG: DA-Transformer's
lookahead path (:func:`latalign.fairseq_plugin.layout.dag_lookahead`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from fairseq.iterative_refinement_generator import DecoderOut
from fairseq.models import register_model, register_model_architecture
from fairseq.models.nat.nonautoregressive_transformer import (
    NATransformerModel,
)
from fairseq.models.nat.nonautoregressive_transformer import (
    base_architecture as nat_base_architecture,
)
from torch import Tensor, nn

from latalign.fairseq_plugin.layout import (
    ctc_collapse,
    dag_lookahead,
    dag_transitions,
    upsampled_decoder_input,
    upsampled_lengths,
)

__all__ = ["DAGNATModel", "UpsampledNATModel"]


@register_model("latalign_nat_upsampled")
class UpsampledNATModel(NATransformerModel):
    """fairseq's NAT transformer at ``ceil(λ·S)`` decoder positions (no length predictor)."""

    def __init__(self, args: Any, encoder: Any, decoder: Any) -> None:
        super().__init__(args, encoder, decoder)
        self.decoder.embed_length = None  # the length is λ·S: no predictor to train

    @staticmethod
    def add_args(parser: Any) -> None:
        NATransformerModel.add_args(parser)
        parser.add_argument(
            "--upsample-scale",
            type=float,
            metavar="λ",
            help="decoder positions per source token (L = ceil(λ·S))",
        )

    @property
    def allow_length_beam(self) -> bool:
        return False

    def decoder_lengths(self, src_lengths: Tensor) -> Tensor:
        """(N,) decoder positions ``ceil(λ·S)`` for source lengths (N,)."""
        return upsampled_lengths(
            src_lengths,
            self.args.upsample_scale,
            minimum=2,  # fairseq's source copy divides by L - 1
            maximum=self.decoder.max_positions(),
        )

    def decode_positions(
        self, src_lengths: Tensor, encoder_out: dict[str, Any]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Decoder ``(features (N, L, d), logits (N, L, V), lengths (N,))``."""
        lengths = self.decoder_lengths(src_lengths)
        tokens = upsampled_decoder_input(
            lengths, fill=self.unk, pad=self.pad, bos=self.bos, eos=self.eos
        )
        features, _ = self.decoder.extract_features(
            tokens, encoder_out=encoder_out, embedding_copy=self.decoder.src_embedding_copy
        )
        return features, self.decoder.output_layer(features), lengths

    def forward(
        self,
        src_tokens: Tensor,
        src_lengths: Tensor,
        prev_output_tokens: Tensor | None,
        tgt_tokens: Tensor,
        **kwargs: Any,
    ) -> dict[str, dict[str, Any]]:
        """``prev_output_tokens`` is not read: the decoder input is ``λ·S`` mask tokens."""
        encoder_out = self.encoder(src_tokens, src_lengths=src_lengths, **kwargs)
        _, logits, lengths = self.decode_positions(src_lengths, encoder_out)
        mask = torch.arange(logits.size(1), device=logits.device)[None, :] < lengths[:, None]
        return {"word_ins": {"out": logits, "tgt": tgt_tokens, "mask": mask, "lengths": lengths}}

    def initialize_output_tokens(self, encoder_out: dict[str, Any], src_tokens: Tensor):
        lengths = self.decoder_lengths(src_tokens.ne(self.pad).sum(1))
        tokens = upsampled_decoder_input(
            lengths, fill=self.unk, pad=self.pad, bos=self.bos, eos=self.eos
        )
        scores = tokens.new_zeros(tokens.shape).type_as(encoder_out["encoder_out"][0])
        return DecoderOut(
            output_tokens=tokens,
            output_scores=scores,
            attn=None,
            step=0,
            max_step=0,
            history=None,
        )

    def _src_lengths(self, encoder_out: dict[str, Any], n: int) -> Tensor:
        mask = encoder_out["encoder_padding_mask"]
        if len(mask) > 0:
            return (~mask[0]).sum(1)
        src_len = encoder_out["encoder_out"][0].size(0)  # T x B x C
        return torch.full((n,), src_len, dtype=torch.long)

    def forward_decoder(self, decoder_out: Any, encoder_out: dict[str, Any], **kwargs: Any):
        n = decoder_out.output_tokens.size(0)
        src_lengths = self._src_lengths(encoder_out, n).to(decoder_out.output_tokens.device)
        _, logits, lengths = self.decode_positions(src_lengths, encoder_out)
        scores, tokens = logits.log_softmax(-1).max(-1)  # (N, L)
        tokens, scores = ctc_collapse(tokens, scores, lengths, pad=self.pad)
        return decoder_out._replace(
            output_tokens=tokens, output_scores=scores.type_as(decoder_out.output_scores)
        )


@register_model("latalign_nat_dag")
class DAGNATModel(UpsampledNATModel):
    """:class:`UpsampledNATModel` whose ``L`` positions are DAG vertices with transitions."""

    def __init__(self, args: Any, encoder: Any, decoder: Any) -> None:
        super().__init__(args, encoder, decoder)
        d = decoder.output_embed_dim
        self.link_query = nn.Linear(d, d)
        self.link_key = nn.Linear(d, d)

    def transitions(self, features: Tensor, lengths: Tensor) -> Tensor:
        """(N, L, L) transition log-probabilities from vertex states (N, L, d)."""
        q, k = self.link_query(features), self.link_key(features)
        scores = torch.bmm(q, k.transpose(1, 2)) / math.sqrt(q.size(-1))
        return dag_transitions(scores.float(), lengths)

    def forward(self, src_tokens, src_lengths, prev_output_tokens, tgt_tokens, **kwargs):
        encoder_out = self.encoder(src_tokens, src_lengths=src_lengths, **kwargs)
        features, logits, lengths = self.decode_positions(src_lengths, encoder_out)
        mask = torch.arange(logits.size(1), device=logits.device)[None, :] < lengths[:, None]
        word_ins = {
            "out": logits,
            "tgt": tgt_tokens,
            "mask": mask,
            "lengths": lengths,
            "transitions": self.transitions(features, lengths),
        }
        return {"word_ins": word_ins}

    def forward_decoder(self, decoder_out: Any, encoder_out: dict[str, Any], **kwargs: Any):
        n = decoder_out.output_tokens.size(0)
        src_lengths = self._src_lengths(encoder_out, n).to(decoder_out.output_tokens.device)
        features, logits, lengths = self.decode_positions(src_lengths, encoder_out)
        scores, tokens = logits.log_softmax(-1).max(-1)  # (N, L)
        tokens, scores = dag_lookahead(
            self.transitions(features, lengths), tokens, scores, lengths, pad=self.pad
        )
        return decoder_out._replace(
            output_tokens=tokens, output_scores=scores.type_as(decoder_out.output_scores)
        )


@register_model_architecture("latalign_nat_upsampled", "latalign_nat_upsampled")
def latalign_nat_upsampled(args: Any) -> None:
    args.upsample_scale = getattr(args, "upsample_scale", None) or 2.0
    nat_base_architecture(args)


@register_model_architecture("latalign_nat_dag", "latalign_nat_dag")
def latalign_nat_dag(args: Any) -> None:
    args.upsample_scale = getattr(args, "upsample_scale", None) or 4.0
    nat_base_architecture(args)
