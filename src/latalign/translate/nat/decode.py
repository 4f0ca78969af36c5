"""Decoding a :class:`~latalign.translate.nat.model.NATransformer`: one decoder pass.

- Length-predicting models (``ce``, ``axe``): :func:`length_beam_decode`. The ``length_beam``
  most likely lengths of every sentence are decoded together in one batch (B * k rows), each
  position takes its argmax token, and the candidate with the best **mean token
  log-probability** (sum of the chosen tokens' log-probs divided by the length) wins; the
  mean, not the sum, so that longer candidates are not penalised for having more tokens
  (Mask-Predict's rule). ε is removed afterwards (AXE may emit it).
- Upsampling models (``ctc``, ``latent``): :func:`ctc_decode`: argmax per position, then the
  CTC collapse: merge repeated tokens, drop ε.

pad, bos and eos are never produced (NAT targets carry no eos). Results are token id lists
without specials; :meth:`latalign.translate.run.TrainedRun.translate` adds tokenisation,
batching and BPE undoing (through :func:`~latalign.translate.nat.plugin.nat_decoder`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from latalign.translate.decode import ctc_collapse, decoding_context
from latalign.translate.nat.model import NATransformer
from latalign.translate.tokenizer import DEFAULT_IDS, SpecialIds

__all__ = [
    "ctc_collapse",
    "ctc_decode",
    "decode_batch",
    "length_beam_decode",
]


def _best_tokens(logits: Tensor, banned: Sequence[int], scores: bool) -> tuple[Tensor, Tensor]:
    """(B, T, V) logits -> (B, T) argmax tokens among the ids not ``banned`` and, when
    ``scores``, their log-probabilities under the softmax over the whole vocabulary (else an
    empty tensor). The argmax of the logits is the argmax of the log-probs, so the (B, T, V)
    log-softmax is never written: one logsumexp per position gives the chosen log-probs."""
    logits = logits.float()
    lse = torch.logsumexp(logits, dim=-1) if scores else logits.new_empty(0)
    for i in banned:  # in place; no index tensor to copy to the device
        logits[..., i].fill_(-math.inf)
    best, tokens = logits.max(dim=-1)
    return tokens, (best - lse) if scores else lse


def _ragged(tokens: Tensor, keep: Tensor) -> list[list[int]]:
    """(B, T) tokens and a (B, T) bool mask -> B lists of the kept tokens, in order; one host
    copy for the whole batch (no per-row indexing, no boolean-mask indexing)."""
    rows = torch.where(keep, tokens, -1).tolist()  # token ids are >= 0: -1 marks a dropped one
    return [[t for t in row if t >= 0] for row in rows]


def length_beam_decode(
    model: NATransformer,
    src_tokens: Tensor,
    *,
    length_beam: int = 3,
    ids: SpecialIds = DEFAULT_IDS,
    return_lengths: bool = False,
) -> list[list[int]] | tuple[list[list[int]], Tensor]:
    """src_tokens (B, S) right-padded -> B token-id lists (ε removed).

    The k candidate lengths of a sentence share its encoder output and the decoder's projected
    encoder keys/values (``decode_all(..., rows=)``); with k = 1 no score is computed.
    With ``return_lengths`` also the (B,) chosen output lengths (before ε removal).
    """
    if length_beam < 1:
        raise ValueError(f"expected length_beam >= 1, found {length_beam}")
    b = src_tokens.size(0)
    enc = model.encode(src_tokens)
    length_logits = model.length_logits(enc)  # (B, L)
    k = min(length_beam, length_logits.size(1))
    if k == 1:
        lengths = model.lengths_of_classes(length_logits.argmax(dim=1), src_tokens)  # (B,)
        logits = model.decode_all(enc, src_tokens, lengths)  # (B, T, V)
        tokens, _ = _best_tokens(logits, (ids.pad, ids.bos, ids.eos), scores=False)  # (B, T)
    else:
        classes = length_logits.topk(k, dim=1).indices  # (B, k)
        cand = model.lengths_of_classes(classes, src_tokens).reshape(-1)  # (B*k,)
        rows = torch.arange(b, device=src_tokens.device).repeat_interleave(k, output_size=b * k)
        logits = model.decode_all(enc, src_tokens, cand, rows=rows)  # (B*k, T, V)
        tokens, best = _best_tokens(logits, (ids.pad, ids.bos, ids.eos), scores=True)  # (B*k, T)
        valid = torch.arange(tokens.size(1), device=tokens.device)[None, :] < cand[:, None]
        score = (best * valid).sum(dim=1) / cand  # (B*k,) mean token log-prob
        chosen = torch.arange(b, device=score.device) * k + score.view(b, k).argmax(dim=1)
        tokens, lengths = tokens.index_select(0, chosen), cand.index_select(0, chosen)
    keep = torch.arange(tokens.size(1), device=tokens.device)[None, :] < lengths[:, None]
    out = _ragged(tokens, keep & tokens.ne(ids.blank))
    if return_lengths:
        return out, lengths
    return out


def ctc_decode(
    model: NATransformer,
    src_tokens: Tensor,
    *,
    ids: SpecialIds = DEFAULT_IDS,
) -> list[list[int]]:
    """src_tokens (B, S) -> B token-id lists: argmax at ``upsample * S`` positions, collapsed
    (repeats merged, ε dropped: :func:`ctc_collapse`, done on the whole batch at once)."""
    enc = model.encode(src_tokens)
    lengths = model.upsampled_lengths(src_tokens)  # (B,)
    logits = model.decode_all(enc, src_tokens, lengths)  # (B, T, V)
    tokens, _ = _best_tokens(logits, (ids.pad, ids.bos, ids.eos), scores=False)  # (B, T)
    keep = torch.arange(tokens.size(1), device=tokens.device)[None, :] < lengths[:, None]
    keep[:, 1:] &= tokens[:, 1:].ne(tokens[:, :-1])  # first of each run
    return _ragged(tokens, keep & tokens.ne(ids.blank))


def decode_batch(
    model: NATransformer,
    src_tokens: Tensor,
    *,
    length_beam: int = 3,
    ids: SpecialIds = DEFAULT_IDS,
) -> list[list[int]]:
    """Decode a batch with the model's own rule (length beam or CTC collapse) in the decoding
    context (:func:`~latalign.translate.decode.decoding_context`: eval and inference mode);
    token ids without specials or ε."""
    with decoding_context(model):
        if model.cfg.length == "upsample":
            return ctc_decode(model, src_tokens, ids=ids)
        return length_beam_decode(model, src_tokens, length_beam=length_beam, ids=ids)  # type: ignore[return-value]
