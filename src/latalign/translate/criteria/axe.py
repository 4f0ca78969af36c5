"""AXE (Ghazvininejad et al., 2020) and its causal restriction (the paper, §5)."""

from __future__ import annotations

from torch import Tensor

import latalign
from latalign.translate.criteria._common import check_lengths
from latalign.translate.criteria.ce import BLANK


def axe(
    logits: Tensor, targets: Tensor, input_lengths: Tensor, target_lengths: Tensor, *,
    delta: float = 1.0, causal: bool = False, blank: int = BLANK,
) -> tuple[Tensor, None]:  # fmt: skip
    """Criteria ``axe`` (``causal=False``) and ``causal_axe`` (``causal=True``: ``p_j`` scores
    ``y_i`` only if ``i >= j``): ``{align, clone_prediction (weight delta), delimiter}``, max;
    summed over sentences (nats)."""
    check_lengths(logits, targets, input_lengths, target_lengths)
    loss = latalign.axe_loss(
        logits, targets, input_lengths, target_lengths, blank=blank, delta=delta,
        causal=causal, reduction="sum", zero_infinity=True, from_logits=True,
    )  # fmt: skip
    return loss, None
