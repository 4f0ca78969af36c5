"""The plugin's tensor layout, in plain torch (no fairseq import: tested in CI).

- :func:`sentence_targets`: fairseq's padded ``sample["target"]`` (``y_1 .. y_n eos``, or
  ``bos y_1 .. y_n eos`` under ``translation_lev``) -> the sentence ``y_1 .. y_n``,
  left-packed, and its lengths ``n``: what every latalign criterion of the plugin aligns.
- :func:`upsampled_lengths` and :func:`upsampled_decoder_input`: the ``λ·S`` decoder
  positions of the CTC and DAG archs and the tokens fed there.
- :func:`dag_transitions`: a DAG's transition log-probabilities from scores between vertex
  states, masked to later vertices, normalised per row.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "ctc_collapse",
    "dag_lookahead",
    "dag_transitions",
    "has_alignment",
    "sentence_targets",
    "upsampled_decoder_input",
    "upsampled_lengths",
]


def sentence_targets(target: Tensor, *, pad: int, bos: int, eos: int) -> tuple[Tensor, Tensor]:
    """Drop ``pad``, ``bos`` and ``eos`` from each row and pack what is left to the left.

    Args:
        target: (N, T) token ids as fairseq batches them (right-padded with ``pad``).
    Returns:
        ``(targets (N, S), lengths (N,))``: ``S = max(lengths)`` (at least 1 column), rows
        right-padded with ``pad``; ``lengths`` int64 on ``target``'s device.
    """
    if target.dim() != 2:
        raise ValueError(f"expected target of shape (N, T), found {tuple(target.shape)}")
    keep = (target != pad) & (target != bos) & (target != eos)  # (N, T)
    return _pack_left(keep, target, pad), keep.sum(1)


def _pack_left(keep: Tensor, values: Tensor, fill: float | int) -> Tensor:
    """(N, W) the entries of ``values`` (N, T) where ``keep`` (N, T), in order, moved to the
    left; ``fill`` after them; ``W = max(keep.sum(1))``, at least 1."""
    counts = keep.sum(1)
    width = max(int(counts.max()) if keep.size(0) else 0, 1)
    if values.size(1) < width:  # T == 0
        return values.new_full((values.size(0), width), fill)
    # a stable sort of ~keep moves the kept entries to the front in their order
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices[:, :width]
    col = torch.arange(width, device=values.device)[None, :]
    return values.gather(1, order).masked_fill(col >= counts[:, None], fill)


def upsampled_lengths(
    lengths: Tensor, scale: float, *, minimum: int = 1, maximum: int | None = None
) -> Tensor:
    """``ceil(scale * lengths)``, clamped to ``[minimum, maximum]`` (int64, same device).

    ``lengths`` (N,) source (or target) lengths; ``scale`` the upsampling ratio λ > 0.
    """
    if not (isinstance(scale, int | float) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"expected a finite upsample scale > 0, found {scale!r}")
    if minimum < 1 or (maximum is not None and maximum < minimum):
        raise ValueError(f"expected 1 <= minimum <= maximum, found {minimum} and {maximum}")
    # float64 so that e.g. 3 * 7 stays 21 and does not round up to 22
    out = torch.ceil(lengths.to(torch.float64) * float(scale)).to(torch.int64)
    out = out.clamp(min=minimum)
    return out if maximum is None else out.clamp(max=maximum)


def upsampled_decoder_input(
    lengths: Tensor, *, fill: int, pad: int, bos: int | None = None, eos: int | None = None
) -> Tensor:
    """The decoder's input tokens for ``lengths`` (N,) positions per sentence.

    Row ``b`` is ``fill`` at positions ``0 .. lengths[b] - 1`` (fairseq's NAT feeds ``unk``,
    its mask symbol), with ``bos`` at the first and ``eos`` at the last position when given
    (as fairseq's own NAT models initialise their outputs), then ``pad`` up to
    ``max(lengths)``. Returns (N, max(lengths)) int64.
    """
    if lengths.dim() != 1 or (lengths.numel() and int(lengths.min()) < 1):
        raise ValueError(f"expected lengths (N,) >= 1, found {lengths.tolist()}")
    width = int(lengths.max()) if lengths.numel() else 0
    col = torch.arange(width, device=lengths.device)[None, :]
    tokens = torch.full((lengths.numel(), width), fill, dtype=torch.int64, device=lengths.device)
    if bos is not None:
        tokens[:, 0] = bos
    if eos is not None:
        tokens.scatter_(1, (lengths - 1)[:, None], eos)
    return tokens.masked_fill(col >= lengths[:, None], pad)


def dag_transitions(scores: Tensor, lengths: Tensor) -> Tensor:
    """Transition log-probabilities of a DAG over ``lengths[b]`` vertices.

    Args:
        scores: (N, L, L) unnormalised scores of the edges ``u -> v`` (e.g. scaled dot
            products of vertex states).
        lengths: (N,) vertices per graph, ``1 <= lengths[b] <= L``.
    Returns:
        (N, L, L) log-probabilities in ``scores``' dtype: row ``u`` of graph ``b`` is a
        log-softmax over the later vertices ``u < v < lengths[b]``; every other entry is
        ``-inf`` (rows without a later vertex are all ``-inf``). Gradients are finite:
        masked entries take no part in the softmax and get a zero gradient.
    """
    if scores.dim() != 3 or scores.size(1) != scores.size(2):
        raise ValueError(f"expected scores of shape (N, L, L), found {tuple(scores.shape)}")
    n, length, _ = scores.shape
    if lengths.shape != (n,):
        raise ValueError(f"expected lengths of shape ({n},), found {tuple(lengths.shape)}")
    idx = torch.arange(length, device=scores.device)
    later = idx[None, :] > idx[:, None]  # (L, L): v > u
    valid = later[None] & (idx[None, None, :] < lengths.to(scores.device)[:, None, None])
    empty = ~valid.any(-1, keepdim=True)  # (N, L, 1): no successor (the last vertex, padding)
    # an all-masked row would give NaN in log_softmax and in its backward: give it zeros
    masked = scores.masked_fill(~valid, float("-inf")).masked_fill(empty, 0.0)
    return masked.log_softmax(-1).masked_fill(~valid, float("-inf"))


def has_alignment(
    loss: str, targets: Tensor, target_lengths: Tensor, input_lengths: Tensor
) -> Tensor:
    """(N,) bool: whether ``loss`` has any path for each sentence.

    ``"ctc"``: ``input_lengths >= n + (number of i with y_i == y_(i-1))`` (a blank between
    repeats); ``"axe"``: always (``input_lengths >= 1``); ``"dag"``: a path ``0 = a_1 < … <
    a_n = L - 1`` exists iff ``n == L == 1`` or ``2 <= n <= L``. ``targets`` (N, S) padded,
    lengths (N,).
    """
    n = target_lengths.to(input_lengths.device)
    m = input_lengths
    if loss == "ctc":
        t = targets.to(m.device)
        same = t[:, 1:] == t[:, :-1]  # (N, S-1)
        inside = torch.arange(1, t.size(1), device=m.device)[None, :] < n[:, None]
        return m >= n + (same & inside).sum(1)
    if loss == "axe":
        return m >= 1
    if loss == "dag":
        return ((n == 1) & (m == 1)) | ((n >= 2) & (n <= m))
    raise ValueError(f"expected loss 'ctc', 'axe' or 'dag', found {loss!r}")


def ctc_collapse(
    tokens: Tensor, scores: Tensor, lengths: Tensor, *, pad: int
) -> tuple[Tensor, Tensor]:
    """Merge consecutive repeats of each row's first ``lengths[b]`` tokens (CTC's collapse;
    blanks stay: removing them is left to the caller, fairseq drops ``<s>`` from text).

    ``tokens``, ``scores`` (N, L) (e.g. argmax ids and their log-probs). Returns both packed to
    the left, (N, W) with ``W`` the longest kept row; ``pad`` / 0 after each row.
    """
    col = torch.arange(tokens.size(1), device=tokens.device)[None, :]
    keep = col < lengths.to(tokens.device)[:, None]
    keep[:, 1:] &= tokens[:, 1:] != tokens[:, :-1]
    return _pack_left(keep, tokens, pad), _pack_left(keep, scores, 0.0)


def dag_lookahead(
    transitions: Tensor, tokens: Tensor, scores: Tensor, lengths: Tensor, *, pad: int
) -> tuple[Tensor, Tensor]:
    """DA-Transformer's lookahead decoding: from vertex 0, step to
    ``argmax_v transitions[b, u, v] + scores[b, v]`` until vertex ``lengths[b] - 1``, emitting
    ``tokens`` at every visited vertex.

    ``transitions`` (N, L, L) as :func:`dag_transitions` gives them; ``tokens``, ``scores``
    (N, L) each vertex's best token and its log-probability. Returns the visited vertices'
    tokens and scores packed to the left, (N, W); ``pad`` / 0 after each path.
    """
    n, length = tokens.shape
    rows = torch.arange(n, device=tokens.device)
    last = lengths.to(tokens.device) - 1
    cur = torch.zeros(n, dtype=torch.long, device=tokens.device)
    visited = torch.zeros(n, length, dtype=torch.bool, device=tokens.device)
    visited[:, 0] = True
    done = cur >= last
    for _ in range(length - 1):
        if bool(done.all()):
            break
        step = (transitions[rows, cur] + scores.to(transitions.dtype)).argmax(-1)  # (N,)
        cur = torch.where(done, cur, step)
        visited[rows, cur] = True
        done = done | (cur >= last)
    return _pack_left(visited, tokens, pad), _pack_left(visited, scores, 0.0)
