"""AXE (Ghazvininejad et al., 2020) and causal AXE (the paper, §5)."""

from __future__ import annotations

from torch import Tensor

import latalign
from latalign.translate.criteria._common import check_lengths
from latalign.translate.criteria.ce import BLANK


def axe(
    logits: Tensor,
    targets: Tensor,
    input_lengths: Tensor,
    target_lengths: Tensor,
    *,
    delta: float = 1.0,
    blank: int = BLANK,
) -> tuple[Tensor, None]:
    """Criterion ``axe``: ``{align, clone_prediction (weight delta), delimiter}``, max; summed
    over sentences (nats)."""
    return _axe(logits, targets, input_lengths, target_lengths, delta, blank, causal=False)


def causal_axe(
    logits: Tensor,
    targets: Tensor,
    input_lengths: Tensor,
    target_lengths: Tensor,
    *,
    delta: float = 1.0,
    blank: int = BLANK,
) -> tuple[Tensor, None]:
    """Criterion ``causal_axe``: AXE restricted to alignments where ``p_j`` scores ``y_i``
    only if ``i >= j``; summed over sentences (nats)."""
    return _axe(logits, targets, input_lengths, target_lengths, delta, blank, causal=True)


def _axe(
    logits: Tensor, targets: Tensor, input_lengths: Tensor, target_lengths: Tensor,
    delta: float, blank: int, *, causal: bool,
) -> tuple[Tensor, None]:  # fmt: skip
    check_lengths(logits, targets, input_lengths, target_lengths)
    loss = latalign.axe_loss(
        logits, targets, input_lengths, target_lengths, blank=blank, delta=delta,
        causal=causal, reduction="sum", zero_infinity=True, from_logits=True,
    )  # fmt: skip
    return loss, None
