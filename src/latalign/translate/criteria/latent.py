"""Any latent alignment objective of the library: operator set x aggregate x causal."""

from __future__ import annotations

from typing import Any

import torch

import latalign
from latalign.translate.criteria._common import at_least_float32, check_logits, make_stats

DEFAULT_OPERATORS = ("align", "clone_target", "delimiter")


def latent(
    logits: torch.Tensor,
    batch: Any,
    blank_id: int,
    pad_id: int,
    *,
    operators: tuple[str, ...] | list[str] = DEFAULT_OPERATORS,
    aggregate: str = "sum",
    causal: bool = False,
    weights: dict[str, float] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Criterion ``latent``: :func:`latalign.latent_alignment_loss` summed over sentences (nats).

    ``operators`` from {align, clone_target, clone_prediction, delimiter}; ``aggregate``
    "sum" (forward–backward) or "max" (Viterbi). Infeasible sentences contribute 0.
    """
    check_logits(logits, batch)
    lengths = batch.target_lengths
    loss = latalign.latent_alignment_loss(
        at_least_float32(logits),
        batch.target,
        lengths,
        lengths,
        operators=tuple(operators),
        aggregate=aggregate,
        weights=weights,
        blank=blank_id,
        causal=causal,
        reduction="sum",
        zero_infinity=True,
        from_logits=True,
    )
    return loss, make_stats(loss, batch)
