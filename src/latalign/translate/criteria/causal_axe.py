"""Causal AXE: AXE restricted to alignments where p_j scores y_i only if i >= j."""

from __future__ import annotations

from typing import Any

import torch

from latalign.translate.criteria._common import check_logits, make_stats
from latalign.translate.criteria.axe import axe_sum


def causal_axe(
    logits: torch.Tensor, batch: Any, blank_id: int, pad_id: int, *, delta: float = 1.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """Criterion ``causal_axe`` (the paper, Section 5): summed loss in nats."""
    check_logits(logits, batch)
    loss = axe_sum(logits, batch, blank_id, delta=delta, causal=True)
    return loss, make_stats(loss, batch)
