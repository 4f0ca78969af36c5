"""Cross entropy: position j scores ``targets[j]`` (the reference's negative log likelihood)."""

from __future__ import annotations

from torch import Tensor

from latalign.translate.criteria._common import IGNORE, check_lengths, position_targets
from latalign.translate.criteria._xent import smoothed_cross_entropy

BLANK = 4


def ce(
    logits: Tensor, targets: Tensor, input_lengths: Tensor, target_lengths: Tensor, *,
    blank: int = BLANK,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Criterion ``ce``: summed token cross entropy (nats) and the same sum as the NLL.

    logits (B, T, V) unnormalised; targets (B, N); position ``j < target_lengths[b]`` scores
    ``targets[b, j]`` (``input_lengths >= target_lengths`` is required: one prediction per
    target). ``blank`` is not used. Computed by the fused kernel of
    :mod:`latalign.translate.criteria._xent` (equal to ``F.cross_entropy(...,
    reduction="sum")``, with less memory traffic).
    """
    return label_smoothed_sums(logits, targets, input_lengths, target_lengths, 0.0)


def label_smoothed_sums(
    logits: Tensor, targets: Tensor, input_lengths: Tensor, target_lengths: Tensor, epsilon: float
) -> tuple[Tensor, Tensor]:
    """``(label-smoothed loss, NLL)`` summed over target positions (nats); ``epsilon = 0`` is
    cross entropy."""
    check_lengths(logits, targets, input_lengths, target_lengths, one_per_target=True)
    rows = position_targets(logits, targets, target_lengths).reshape(-1)
    return smoothed_cross_entropy(logits.reshape(-1, logits.size(-1)), rows, epsilon, IGNORE)


def cross_entropy_sum(logits: Tensor, targets: Tensor, lengths: Tensor) -> Tensor:
    """Summed cross entropy (nats, 0-dim) of logits (B, T, V) against targets (B, T) with
    ``lengths`` (B,) target tokens each: the ``ce`` statistic validation logs."""
    loss, _ = ce(logits, targets, lengths, lengths)
    return loss
