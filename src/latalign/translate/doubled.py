"""Doubled CTC: real CTC with the prediction sequence doubled (the exploit the paper argued in
§5, run here): regime ``doubled`` (:func:`double_inputs`) + criterion ``doubled_ctc`` (the
criterion ``ctc`` given ``2L`` predictions for the ``L`` targets), and its greedy decoding.

Layout (target ``y_1 … y_n eos``, ``L = n + 1`` tokens)::

    decoder input   bos bos y_1 y_1 y_2 y_2 … y_n y_n      (2L positions: the usual input,
                                                             each token repeated)
    predictions     p_1 p_2 p_3 p_4 …           p_2L        (m = 2L)
    CTC targets     y_1 y_2 … y_n eos                       (the usual L targets)

So the pair of predictions ``(p_{2k−1}, p_{2k})`` has seen ``y_1 … y_{k−1}``; the honest
alignment gives pair ``k`` to ``y_k``. CTC also admits ``ε ε`` for pair 1 and ``y_{k−1}``
for pair ``k`` — each pair copying its own input — which is the exploit: with ``m = 2L`` a
prediction can score a target it has already seen.

Inference mirrors training: decoding proceeds one *pair* at a time. The model reads the
pairs fed so far (``bos bos``, then each fed token twice), greedily picks the two predictions
``z_{2k−1}, z_{2k}`` of the new pair, and the token fed next (twice) is the pair's last
non-blank prediction, or ε when both are blank (as an AXE model is fed its own ε). The output
is the CTC collapse of ``z_1 z_2 …`` (merge repeats, drop ε) up to the first eos.

:func:`doubled_greedy_decode` plugs into :func:`latalign.translate.decode.translate_sentences`
(``decode_batch=``), which does the sorting, batching, padding and detokenising.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from latalign.translate.decode import _D, ctc_collapse, decoding_context, max_lengths


def double_inputs(prev_output_tokens: Tensor) -> Tensor:
    """(B, T) ``bos y_1 … y_n`` (+pad) -> (B, 2T) ``bos bos y_1 y_1 … y_n y_n`` (+pad)."""
    return prev_output_tokens.repeat_interleave(2, dim=1)


def doubled_greedy_decode(
    model: Any, src_tokens: Tensor, src_lengths: Tensor, *, blank_id: int, pad_id: int = 0,
    bos_id: int = 1, eos_id: int = 2, max_len_a: float = _D.max_len_a,
    max_len_b: int = _D.max_len_b, autocast_bf16: bool = False,
) -> list[list[int]]:  # fmt: skip
    """Greedy decoding with the doubled layout (module docstring): B token-id lists, CTC
    collapsed, without eos. At most ``int(a · src_len + b) + 1`` pairs per sentence (the
    sentence plus its eos), capped by the model's positions."""
    with decoding_context(model, autocast_bf16):
        enc = model.encode(src_tokens, src_lengths)
        limits = max_lengths(src_tokens, pad_id=pad_id, max_len_a=max_len_a, max_len_b=max_len_b)
        limits = limits.tolist()
        limit = min(max(limits) + 1, (model.cfg.max_positions - 1) // 2)
        bsz = src_tokens.size(0)
        fed = torch.full((bsz, 1), bos_id, dtype=torch.long, device=src_tokens.device)
        streams: list[list[int]] = [[] for _ in range(bsz)]
        done = [False] * bsz
        for k in range(limit):
            logits = model.decode(double_inputs(fed), enc)[:, -2:, :].float()  # (B, 2, V)
            logits[..., pad_id] = -math.inf
            logits[..., bos_id] = -math.inf
            z = logits.argmax(dim=-1).tolist()  # (B, 2)
            nxt = []
            for b in range(bsz):
                if done[b]:
                    nxt.append(eos_id)
                    continue
                streams[b].extend(z[b])
                non_blank = [t for t in z[b] if t != blank_id]
                g = non_blank[-1] if non_blank else blank_id
                if g == eos_id or k + 1 >= limits[b] + 1:
                    done[b] = True
                nxt.append(g)
            if all(done):
                break
            fed = torch.cat([fed, torch.tensor(nxt, device=fed.device)[:, None]], dim=1)
        return [ctc_collapse(s, blank_id, eos_id) for s in streams]
