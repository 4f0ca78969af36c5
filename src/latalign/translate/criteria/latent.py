"""Any latent alignment objective of the library: operator set x aggregate x causal."""

from __future__ import annotations

from torch import Tensor

import latalign
from latalign.translate.criteria._common import check_lengths
from latalign.translate.criteria.ce import BLANK

DEFAULT_OPERATORS = ("align", "clone_target", "delimiter")


def latent(
    logits: Tensor, targets: Tensor, input_lengths: Tensor, target_lengths: Tensor, *,
    operators: tuple[str, ...] | list[str] = DEFAULT_OPERATORS, aggregate: str = "sum",
    causal: bool = False, weights: dict[str, float] | None = None, blank: int = BLANK,
) -> tuple[Tensor, None]:  # fmt: skip
    """Criterion ``latent``: :func:`latalign.latent_alignment_loss` summed over sentences (nats).

    ``operators`` from {align, clone_target, clone_prediction, delimiter}; ``aggregate``
    "sum" (forward–backward) or "max" (Viterbi). Infeasible sentences contribute 0.
    """
    check_lengths(logits, targets, input_lengths, target_lengths)
    loss = latalign.latent_alignment_loss(
        logits, targets, input_lengths, target_lengths, operators=tuple(operators),
        aggregate=aggregate, weights=weights, blank=blank, causal=causal, reduction="sum",
        zero_infinity=True, from_logits=True,
    )  # fmt: skip
    return loss, None
