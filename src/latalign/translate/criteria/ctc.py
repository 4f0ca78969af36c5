"""Real CTC (Graves et al., 2006)."""

from __future__ import annotations

from torch import Tensor

import latalign
from latalign.translate.criteria._common import check_lengths
from latalign.translate.criteria.ce import BLANK


def ctc(
    logits: Tensor, targets: Tensor, input_lengths: Tensor, target_lengths: Tensor, *,
    blank: int = BLANK,
) -> tuple[Tensor, None]:  # fmt: skip
    """Criterion ``ctc`` (and ``doubled_ctc``): summed CTC loss in nats
    (``zero_infinity=True``: an infeasible sentence contributes 0, no gradient).

    Under teacher forcing (``m = n`` predictions) only the trivial alignment exists, so this
    equals cross entropy unless a target has two equal neighbours (infeasible).
    """
    check_lengths(logits, targets, input_lengths, target_lengths)
    loss = latalign.ctc_loss(
        logits, targets, input_lengths, target_lengths, blank=blank, reduction="sum",
        zero_infinity=True, from_logits=True,
    )  # fmt: skip
    return loss, None
