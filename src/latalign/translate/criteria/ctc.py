"""Real CTC (Graves et al., 2006) under teacher forcing: m = n predictions per target."""

from __future__ import annotations

from typing import Any

import torch

import latalign
from latalign.translate.criteria._common import at_least_float32, check_logits, make_stats


def ctc(
    logits: torch.Tensor, batch: Any, blank_id: int, pad_id: int
) -> tuple[torch.Tensor, dict[str, float]]:
    """Criterion ``ctc``: summed CTC loss in nats at equal lengths (``zero_infinity=True``).

    With m = n only the trivial alignment exists, so this equals cross entropy unless a
    target has two equal neighbours (infeasible: the sentence contributes 0, no gradient).
    """
    check_logits(logits, batch)
    lengths = batch.target_lengths
    loss = latalign.ctc_loss(
        at_least_float32(logits),
        batch.target,
        lengths,
        lengths,
        blank=blank_id,
        reduction="sum",
        zero_infinity=True,
        from_logits=True,
    )
    return loss, make_stats(loss, batch)
