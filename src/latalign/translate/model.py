"""Encoder-decoder transformer (fairseq ``transformer_iwslt_de_en`` style) with a decoding cache.

Post-norm by default (``ModelConfig.normalize_before=False``), sinusoidal positions, embeddings
scaled by sqrt(d_model), source padding masked in attention. Attention is written with
:func:`torch.nn.functional.scaled_dot_product_attention` so that incremental decoding can keep a
clean per-layer cache:

- self-attention keys/values of the prefix (grown by one position per step), and
- cross-attention keys/values of the encoder output (computed once per sentence).

Shapes: B batch, S source length, T target length, C = d_model, H heads, D = C / H, V vocab.

Incremental decoding protocol (also what :mod:`latalign.translate.decode` expects of a model)::

    enc = model.encode(src_tokens, src_lengths)
    cache = model.init_cache(enc)               # or None: recompute the prefix every step
    logits, cache = model.decode_step(prefix, enc, cache)   # prefix (B, t) -> logits (B, V)
    enc = model.reorder_encoder_out(enc, order)
    cache = model.reorder_cache(cache, order)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from latalign.align import validation_enabled
from latalign.translate.config import ModelConfig

__all__ = ["DecoderCache", "EncoderOut", "Transformer", "sinusoidal_table"]


@dataclass
class EncoderOut:
    """Output of :meth:`Transformer.encode`.

    ``out`` (B, S, C) encoder states; ``padding_mask`` (B, S) bool, True at padding.
    """

    out: Tensor
    padding_mask: Tensor

    def index_select(self, order: Tensor) -> EncoderOut:
        """Rows ``order`` (N,) of the batch (used to expand for beams and drop finished rows)."""
        return EncoderOut(self.out.index_select(0, order), self.padding_mask.index_select(0, order))

    def attn_mask(self, always: bool = False) -> Tensor | None:
        """(B, 1, 1, S) bool mask for SDPA (True = attend), or None when nothing is padded
        (which costs one host synchronisation to find out). ``always``: the mask even then,
        without looking (training: SDPA with an all-True mask gives the unmasked result)."""
        if not always and not bool(self.padding_mask.any()):
            return None
        return ~self.padding_mask[:, None, None, :]


@dataclass
class DecoderCache:
    """Per-layer keys/values for incremental decoding.

    ``self_k[l]``/``self_v[l]`` (N, H, t, D): self-attention keys/values of the ``t`` prefix
    positions already fed. ``cross_k[l]``/``cross_v[l]`` (N, H, S, D): projected encoder output.
    ``cross_mask`` (N, 1, 1, S) bool (True = attend) or None when the source has no padding.
    """

    self_k: list[Tensor]
    self_v: list[Tensor]
    cross_k: list[Tensor]
    cross_v: list[Tensor]
    cross_mask: Tensor | None

    @property
    def length(self) -> int:
        """Number of target positions already in the cache."""
        return int(self.self_k[0].size(2)) if self.self_k else 0


def sinusoidal_table(num_positions: int, dim: int) -> Tensor:
    """(num_positions + 1, dim) table; row 0 (padding) is zero, row p encodes position p.

    First half of the channels are sines, second half cosines, with geometric frequencies from
    1 to 1/10000 (the fairseq layout).
    """
    half = dim // 2
    inv_freq = torch.exp(
        torch.arange(half, dtype=torch.float64) * -(math.log(10000.0) / max(half - 1, 1))
    )
    pos = torch.arange(num_positions + 1, dtype=torch.float64)[:, None]  # (P+1, 1)
    angles = pos * inv_freq[None, :]  # (P+1, half)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    table[0] = 0.0
    return table.float()


def _attend(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, dropout_p: float) -> Tensor:
    """Attention without causal masking: q (B, H, Tq, D), k/v (B, H, Tk, D) -> (B, H, Tq, D).

    A single query (incremental decoding) goes through two small batched matmuls, about twice
    as fast on CPU as SDPA's flash kernel for this shape; everything else uses SDPA.
    """
    if q.size(2) == 1 and dropout_p == 0.0:
        scores = torch.matmul(q, k.transpose(-1, -2)) * (q.size(-1) ** -0.5)  # (B, H, 1, Tk)
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, -math.inf)
        return torch.matmul(torch.softmax(scores, dim=-1), v)  # (B, H, 1, D)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)


def _split_heads(x: Tensor, heads: int) -> Tensor:
    b, t, c = x.shape  # (B, T, C)
    return x.view(b, t, heads, c // heads).transpose(1, 2)  # (B, H, T, D)


def _merge_heads(x: Tensor) -> Tensor:
    b, h, t, d = x.shape  # (B, H, T, D)
    return x.transpose(1, 2).reshape(b, t, h * d)  # (B, T, C)


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused q/k/v projection."""

    def __init__(self, d_model: int, heads: int, attention_dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.attention_dropout = attention_dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        for chunk in self.qkv.weight.data.chunk(3, dim=0):
            nn.init.xavier_uniform_(chunk, gain=1 / math.sqrt(2))
        nn.init.zeros_(self.qkv.bias)
        nn.init.xavier_uniform_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(
        self,
        x: Tensor,
        *,
        attn_mask: Tensor | None = None,
        causal: bool = False,
        past: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, T, C) -> (out (B, T, C), k (B, H, t+T, D), v (B, H, t+T, D)).

        ``past`` holds the cached (k, v) of ``t`` earlier positions; with ``causal`` the new
        positions see the past and themselves up to their own index.
        """
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # 3 x (B, T, C)
        q, k, v = (_split_heads(z, self.heads) for z in (q, k, v))  # (B, H, T, D)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)  # (B, H, t+T, D)
            v = torch.cat([past[1], v], dim=2)
        t_q, t_k = q.size(2), k.size(2)
        is_causal = False
        if causal and t_q > 1:
            if t_q == t_k and attn_mask is None:
                is_causal = True
            else:  # queries are the last t_q of t_k positions
                offset = t_k - t_q
                causal_mask = torch.ones(t_q, t_k, dtype=torch.bool, device=x.device).tril(offset)
                attn_mask = causal_mask if attn_mask is None else attn_mask & causal_mask
        dropout_p = self.attention_dropout if self.training else 0.0
        if is_causal:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        else:
            y = _attend(q, k, v, attn_mask, dropout_p)  # (B, H, T, D)
        return self.out(_merge_heads(y)), k, v


class CrossAttention(nn.Module):
    """Multi-head attention of decoder queries over (precomputable) encoder keys/values."""

    def __init__(self, d_model: int, heads: int, attention_dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.attention_dropout = attention_dropout
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        nn.init.xavier_uniform_(self.q.weight, gain=1 / math.sqrt(2))
        for chunk in self.kv.weight.data.chunk(2, dim=0):
            nn.init.xavier_uniform_(chunk, gain=1 / math.sqrt(2))
        for lin in (self.q, self.kv, self.out):
            nn.init.zeros_(lin.bias)
        nn.init.xavier_uniform_(self.out.weight)

    def project_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """memory (B, S, C) -> k, v (B, H, S, D)."""
        k, v = self.kv(memory).chunk(2, dim=-1)
        return _split_heads(k, self.heads), _split_heads(v, self.heads)

    def forward(self, x: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None) -> Tensor:
        """x (B, T, C), k/v (B, H, S, D), attn_mask (B, 1, 1, S) or None -> (B, T, C).

        Grouped (incremental beam decoding): x (B*g, 1, C) with k/v/mask of B rows, the ``g``
        consecutive rows of x sharing one row of k/v (the beams of a sentence). The ``g``
        queries then go through one (g, D) x (D, S) product per sentence and head instead of
        ``g`` copies of the encoder keys/values.
        """
        n, b = x.size(0), k.size(0)
        if n != b and x.size(1) == 1 and not self.training:
            g = n // b
            h, d = self.heads, k.size(-1)
            q = self.q(x).view(b, g, h, d).transpose(1, 2)  # (B, H, g, D)
            scores = torch.matmul(q, k.transpose(-1, -2)) * (d**-0.5)  # (B, H, g, S)
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask, -math.inf)
            y = torch.matmul(torch.softmax(scores, dim=-1), v)  # (B, H, g, D)
            return self.out(y.transpose(1, 2).reshape(n, 1, h * d))
        q = _split_heads(self.q(x), self.heads)  # (B, H, T, D)
        dropout_p = self.attention_dropout if self.training else 0.0
        y = _attend(q, k, v, attn_mask, dropout_p)  # (B, H, T, D)
        return self.out(_merge_heads(y))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, ffn_dim: int, activation_dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, d_model)
        self.activation_dropout = nn.Dropout(activation_dropout)
        for lin in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.activation_dropout(F.relu(self.fc1(x))))


def _residual(
    layer: nn.Module, x: Tensor, norm: nn.Module, sublayer: Callable[[Tensor], Tensor]
) -> Tensor:
    """One residual block of ``layer``: ``x + dropout(sublayer(x))`` with ``norm`` before the
    sublayer (pre-norm, ``normalize_before``) or after the sum (post-norm)."""
    pre = layer.normalize_before
    x = x + layer.dropout(sublayer(norm(x) if pre else x))
    return x if pre else norm(x)


class EncoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.normalize_before = cfg.normalize_before
        self.self_attn = SelfAttention(cfg.d_model, cfg.heads, cfg.attention_dropout)
        self.self_attn_norm = nn.LayerNorm(cfg.d_model)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_dim, cfg.activation_dropout)
        self.ffn_norm = nn.LayerNorm(cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        """x (B, S, C), attn_mask (B, 1, 1, S) or None -> (B, S, C)."""
        x = _residual(
            self, x, self.self_attn_norm, lambda h: self.self_attn(h, attn_mask=attn_mask)[0]
        )
        return _residual(self, x, self.ffn_norm, self.ffn)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.normalize_before = cfg.normalize_before
        self.self_attn = SelfAttention(cfg.d_model, cfg.heads, cfg.attention_dropout)
        self.self_attn_norm = nn.LayerNorm(cfg.d_model)
        self.cross_attn = CrossAttention(cfg.d_model, cfg.heads, cfg.attention_dropout)
        self.cross_attn_norm = nn.LayerNorm(cfg.d_model)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_dim, cfg.activation_dropout)
        self.ffn_norm = nn.LayerNorm(cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: Tensor,
        cross_k: Tensor,
        cross_v: Tensor,
        cross_mask: Tensor | None,
        past: tuple[Tensor, Tensor] | None = None,
        *,
        causal: bool = True,
        self_attn_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, T, C) -> (x (B, T, C), self-attn k, v (B, H, t+T, D)).

        ``causal=False`` with ``self_attn_mask`` (B, 1, 1, T) bool (True = attend) is the
        non-autoregressive decoder of :mod:`latalign.translate.nat`.
        """
        kv: list[Tensor] = []

        def attend(h: Tensor) -> Tensor:
            y, k, v = self.self_attn(h, attn_mask=self_attn_mask, causal=causal, past=past)
            kv.extend((k, v))
            return y

        x = _residual(self, x, self.self_attn_norm, attend)
        x = _residual(
            self,
            x,
            self.cross_attn_norm,
            lambda h: self.cross_attn(h, cross_k, cross_v, cross_mask),
        )
        x = _residual(self, x, self.ffn_norm, self.ffn)
        return x, kv[0], kv[1]


class Transformer(nn.Module):
    """Encoder-decoder transformer; ``forward`` returns raw float logits (B, T, V)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, vocab, pad = cfg.d_model, cfg.vocab_size, cfg.pad_id
        self.pad_id = pad
        self.embed_scale = math.sqrt(d)
        self.decoder_embed = nn.Embedding(vocab, d, padding_idx=pad)
        if cfg.share_all_embeddings:
            self.encoder_embed = self.decoder_embed
        else:
            self.encoder_embed = nn.Embedding(vocab, d, padding_idx=pad)
        self.output_projection = nn.Linear(d, vocab, bias=False)
        if cfg.share_decoder_input_output_embed:
            self.output_projection.weight = self.decoder_embed.weight
        self.register_buffer(
            "positions_table", sinusoidal_table(cfg.max_positions, d), persistent=False
        )
        self.encoder_layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.decoder_layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.decoder_layers))
        # pre-norm stacks end with a LayerNorm; post-norm layers already end normalised
        self.encoder_norm = nn.LayerNorm(d) if cfg.normalize_before else None
        self.decoder_norm = nn.LayerNorm(d) if cfg.normalize_before else None
        self.dropout = nn.Dropout(cfg.dropout)
        for emb in {id(m): m for m in (self.encoder_embed, self.decoder_embed)}.values():
            nn.init.normal_(emb.weight, mean=0.0, std=d**-0.5)
            with torch.no_grad():
                emb.weight[pad].zero_()
        if not cfg.share_decoder_input_output_embed:
            nn.init.normal_(self.output_projection.weight, mean=0.0, std=d**-0.5)

    # ------------------------------------------------------------------ embeddings
    def _positions(self, tokens: Tensor) -> Tensor:
        """(B, T) -> (B, T) 1-based positions of non-pad tokens, 0 at padding (any side)."""
        mask = tokens.ne(self.pad_id)
        positions = torch.cumsum(mask, dim=1) * mask
        return positions

    def _embed(self, embed: nn.Embedding, tokens: Tensor, positions: Tensor) -> Tensor:
        """tokens, positions (B, T) -> (B, T, C)."""
        # positions <= T (a cumulative count): only a longer T needs a look at the values
        if (
            tokens.size(1) > self.cfg.max_positions
            and int(positions.max()) > self.cfg.max_positions
        ):
            raise ValueError(
                f"expected sequences of at most max_positions={self.cfg.max_positions} tokens, "
                f"found {int(positions.max())}"
            )
        x = self.embed_scale * embed(tokens) + self.positions_table[positions]
        return self.dropout(x)

    # ------------------------------------------------------------------ encoder
    def encode(self, src_tokens: Tensor, src_lengths: Tensor | None = None) -> EncoderOut:
        """src_tokens (B, S) padded with ``pad_id`` (either side) -> :class:`EncoderOut`.

        ``src_lengths`` (B,) is accepted for API symmetry; the mask comes from the pad tokens.
        """
        if src_tokens.dim() != 2:
            raise ValueError(
                f"expected src_tokens of shape (B, S), found {tuple(src_tokens.shape)}"
            )
        padding_mask = src_tokens.eq(self.pad_id)  # (B, S)
        if validation_enabled() and bool(padding_mask.all(dim=1).any()):
            raise ValueError("expected every source sentence to have a non-pad token, found none")
        x = self._embed(self.encoder_embed, src_tokens, self._positions(src_tokens))  # (B, S, C)
        enc = EncoderOut(x, padding_mask)
        attn_mask = enc.attn_mask(always=self.training)
        for layer in self.encoder_layers:
            x = layer(x, attn_mask)
        if self.encoder_norm is not None:
            x = self.encoder_norm(x)
        return EncoderOut(x, padding_mask)

    # ------------------------------------------------------------------ decoder
    def _project(self, x: Tensor) -> Tensor:
        """(..., C) -> float logits (..., V)."""
        if self.decoder_norm is not None:
            x = self.decoder_norm(x)
        return self.output_projection(x).float()

    def decode(self, prev_output_tokens: Tensor, encoder_out: EncoderOut) -> Tensor:
        """Teacher-forced decoder: prev_output_tokens (B, T) -> logits (B, T, V)."""
        x = self._embed(
            self.decoder_embed, prev_output_tokens, self._positions(prev_output_tokens)
        )  # (B, T, C)
        cross_mask = encoder_out.attn_mask(always=self.training)
        for layer in self.decoder_layers:
            k, v = layer.cross_attn.project_kv(encoder_out.out)  # (B, H, S, D)
            x, _, _ = layer(x, k, v, cross_mask)
        return self._project(x)

    def forward(
        self, src_tokens: Tensor, src_lengths: Tensor | None, prev_output_tokens: Tensor
    ) -> Tensor:
        """src_tokens (B, S), src_lengths (B,), prev_output_tokens (B, T) -> logits (B, T, V)."""
        return self.decode(prev_output_tokens, self.encode(src_tokens, src_lengths))

    # ------------------------------------------------------------------ incremental decoding
    def init_cache(self, encoder_out: EncoderOut) -> DecoderCache:
        """Empty self-attention cache plus the cross-attention keys/values of ``encoder_out``."""
        cross_k, cross_v = [], []
        for layer in self.decoder_layers:
            k, v = layer.cross_attn.project_kv(encoder_out.out)  # (N, H, S, D)
            # contiguous once here, not copied by every step's batched matmul
            cross_k.append(k.contiguous())
            cross_v.append(v.contiguous())
        return DecoderCache([], [], cross_k, cross_v, encoder_out.attn_mask())

    def decode_step(
        self, prefix: Tensor, encoder_out: EncoderOut, cache: DecoderCache | None = None
    ) -> tuple[Tensor, DecoderCache | None]:
        """Logits for the token after ``prefix``.

        prefix (N, t): bos y_1 ... y_{t-1}, no padding. With ``cache`` (from :meth:`init_cache`,
        holding the first t-1 positions) only the last token is run and the cache grows by one
        position (updated in place and returned). With ``cache=None`` the whole prefix is
        recomputed (slow reference path) and None is returned. Returns logits (N, V) float.
        """
        if cache is None:
            return self.decode(prefix, encoder_out)[:, -1, :], None
        t = prefix.size(1)
        if cache.length != t - 1:
            raise ValueError(
                f"expected a cache of {t - 1} positions for a prefix of length {t}, "
                f"found {cache.length}"
            )
        if t > self.cfg.max_positions:
            raise ValueError(
                f"expected sequences of at most max_positions={self.cfg.max_positions} tokens, "
                f"found {t}"
            )
        tokens = prefix[:, -1:]  # (N, 1)
        x = self.embed_scale * self.decoder_embed(tokens) + self.positions_table[t]  # (N, 1, C)
        x = self.dropout(x)
        first = cache.length == 0
        for i, layer in enumerate(self.decoder_layers):
            past = None if first else (cache.self_k[i], cache.self_v[i])
            x, k, v = layer(x, cache.cross_k[i], cache.cross_v[i], cache.cross_mask, past=past)
            if first:
                cache.self_k.append(k)
                cache.self_v.append(v)
            else:
                cache.self_k[i], cache.self_v[i] = k, v
        return self._project(x[:, 0, :]), cache

    @staticmethod
    def reorder_encoder_out(encoder_out: EncoderOut, new_order: Tensor) -> EncoderOut:
        """Select rows ``new_order`` (N',) of the encoder output."""
        return encoder_out.index_select(new_order)

    #: :meth:`decode_step` accepts a cache whose cross-attention tensors hold one row per
    #: group of consecutive rows (see :meth:`reorder_cache`'s ``cross_order``).
    grouped_cross_attention = True

    @staticmethod
    def reorder_cache(
        cache: DecoderCache,
        new_order: Tensor,
        *,
        self_attn_only: bool = False,
        cross_order: Tensor | None = None,
    ) -> DecoderCache:
        """Select rows ``new_order`` (N',) of every cached tensor (beam search reordering).

        ``self_attn_only=True`` skips the cross-attention tensors: valid when every row keeps
        the encoder state of its source sentence (beams of one sentence share it).
        ``cross_order`` (B',) selects the cross-attention rows separately, with N' = B' * g:
        the ``g`` consecutive rows ``new_order[i*g:(i+1)*g]`` must all attend to encoder row
        ``cross_order[i]`` (grouped beams; the cross keys/values are not copied per beam).
        """
        sk = [k.index_select(0, new_order) for k in cache.self_k]
        sv = [v.index_select(0, new_order) for v in cache.self_v]
        if self_attn_only:
            return DecoderCache(sk, sv, cache.cross_k, cache.cross_v, cache.cross_mask)
        order = new_order if cross_order is None else cross_order
        if cross_order is not None and new_order.numel() % max(cross_order.numel(), 1):
            raise ValueError(
                f"expected new_order ({new_order.numel()} rows) to be a multiple of "
                f"cross_order ({cross_order.numel()} rows)"
            )
        ck = [k.index_select(0, order) for k in cache.cross_k]
        cv = [v.index_select(0, order) for v in cache.cross_v]
        mask = None if cache.cross_mask is None else cache.cross_mask.index_select(0, order)
        return DecoderCache(sk, sv, ck, cv, mask)

    def num_parameters(self) -> int:
        """Number of distinct parameters (tied weights counted once)."""
        return sum(p.numel() for p in self.parameters())
