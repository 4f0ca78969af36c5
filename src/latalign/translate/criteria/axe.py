"""AXE (Ghazvininejad et al., 2020) under teacher forcing."""

from __future__ import annotations

from typing import Any

import torch

import latalign
from latalign.translate.criteria._common import at_least_float32, check_logits, make_stats


def axe_sum(
    logits: torch.Tensor,
    batch: Any,
    blank_id: int,
    *,
    delta: float,
    causal: bool,
) -> torch.Tensor:
    """Summed AXE loss in nats (a 0-dim tensor), predictions and targets of equal length m."""
    lengths = batch.target_lengths
    return latalign.axe_loss(
        at_least_float32(logits),
        batch.target,
        lengths,
        lengths,
        blank=blank_id,
        delta=delta,
        causal=causal,
        reduction="sum",
        zero_infinity=True,
        from_logits=True,
    )


def axe(
    logits: torch.Tensor, batch: Any, blank_id: int, pad_id: int, *, delta: float = 1.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """Criterion ``axe``: ``{align, clone_prediction (weight delta), delimiter}``, max."""
    check_logits(logits, batch)
    loss = axe_sum(logits, batch, blank_id, delta=delta, causal=False)
    return loss, make_stats(loss, batch)
