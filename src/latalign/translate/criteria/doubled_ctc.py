"""Real CTC with the prediction sequence doubled (the exploit the paper argued in §5, run here).

Layout (target ``y_1 … y_n eos``, ``L = n + 1`` tokens; regime ``doubled``)::

    decoder input   bos bos y_1 y_1 y_2 y_2 … y_n y_n      (2L positions: the usual input,
                                                             each token repeated)
    predictions     p_1 p_2 p_3 p_4 …           p_2L        (m = 2L)
    CTC targets     y_1 y_2 … y_n eos                       (the usual L targets)

So the pair of predictions ``(p_{2k−1}, p_{2k})`` has seen ``y_1 … y_{k−1}``; the honest
alignment gives pair ``k`` to ``y_k``. CTC also admits ``ε ε`` for pair 1 and ``y_{k−1}``
for pair ``k`` — each pair copying its own input — which is the exploit: with ``m = 2L`` a
prediction can score a target it has already seen. Decoding: :mod:`latalign.translate.doubled`.
"""

from __future__ import annotations

from typing import Any

import torch

import latalign
from latalign.translate.criteria._common import at_least_float32, make_stats


def doubled_ctc_sum(
    logits: torch.Tensor, target: torch.Tensor, target_lengths: torch.Tensor, blank: int
) -> torch.Tensor:
    """Summed real CTC (nats) of ``2L`` predictions against the ``L`` targets.

    logits (B, 2T, V) unnormalised; target (B, T) padded; target_lengths (B,) = L.
    Infeasible sentences (none exist at ``m = 2L``) would contribute 0.
    """
    return latalign.ctc_loss(
        at_least_float32(logits),
        target,
        2 * target_lengths,
        target_lengths,
        blank=blank,
        reduction="sum",
        zero_infinity=True,
        from_logits=True,
    )


def doubled_ctc(
    logits: torch.Tensor, batch: Any, blank_id: int, pad_id: int
) -> tuple[torch.Tensor, dict[str, float]]:
    """Criterion ``doubled_ctc`` (regime ``doubled``): logits (B, 2T, V) against the (B, T)
    targets; summed loss in nats, ``ntokens`` counts the L target tokens."""
    b, t = batch.target.shape
    if logits.dim() != 3 or tuple(logits.shape[:2]) != (b, 2 * t):
        raise ValueError(
            f"expected logits (B, 2T, V) with (B, T) = {(b, t)} (regime 'doubled'); "
            f"found {tuple(logits.shape)}"
        )
    loss = doubled_ctc_sum(logits, batch.target, batch.target_lengths, blank_id)
    return loss, make_stats(loss, batch)
