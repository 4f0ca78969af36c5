"""Cross entropy (negative log likelihood of the reference under teacher forcing)."""

from __future__ import annotations

from typing import Any

import torch

from latalign.translate.criteria._common import at_least_float32, check_logits, make_stats
from latalign.translate.criteria._xent import smoothed_cross_entropy


def cross_entropy_sum(logits: torch.Tensor, target: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Summed token cross entropy in nats.

    logits (B, T, V) unnormalised; target (B, T) with ``pad_id`` at padding (ignored).
    Returns a 0-dim float32 tensor. Computed in at least float32 (bf16 autocast output is upcast)
    by the fused kernel of :mod:`latalign.translate.criteria._xent` (equal to
    ``F.cross_entropy(..., reduction="sum")``, with less memory traffic).
    """
    x = at_least_float32(logits).reshape(-1, logits.size(-1))
    loss, _ = smoothed_cross_entropy(x, target.reshape(-1), 0.0, pad_id)
    return loss


def ce(
    logits: torch.Tensor, batch: Any, blank_id: int, pad_id: int
) -> tuple[torch.Tensor, dict[str, float]]:
    """Criterion ``ce``: returns (loss_sum in nats, stats with ``loss``/``nll_loss``)."""
    check_logits(logits, batch)
    loss = cross_entropy_sum(logits, batch.target, pad_id)
    return loss, make_stats(loss, batch, nll_loss_sum=loss)
