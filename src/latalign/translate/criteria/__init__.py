"""Training criteria: a pure loss function per file, registered in
:data:`latalign.translate.registry.CRITERIA`.

A criterion is ``fn(logits (B, T, V), targets (B, N), input_lengths (B,), target_lengths
(B,), *, blank, **options) -> (loss_sum, nll_sum or None)``: sums over the batch in nats (the
trainer divides by the target tokens, like fairseq), the NLL only for the cross-entropy
family. The autoregressive loss (:class:`latalign.translate.loss.DecoderInputLoss`) and the
NAT loss (:func:`latalign.translate.nat.criteria.nat_loss`) both call :func:`criterion_loss`;
they differ only in the lengths they pass (``input_lengths = target_lengths`` under teacher
forcing, twice that for the doubled layout, the decoder's output lengths for NAT).

Adding a criterion: write the function in one file and register it below (with its layout
when its logits are not position-aligned with the target).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from torch import Tensor

from latalign.translate.criteria._common import at_least_float32
from latalign.translate.criteria.axe import axe
from latalign.translate.criteria.ce import ce, cross_entropy_sum
from latalign.translate.criteria.ctc import ctc
from latalign.translate.criteria.label_smoothed_ce import label_smoothed_ce, label_smoothed_nll_loss
from latalign.translate.criteria.latent import latent
from latalign.translate.registry import Criterion, get_criterion, register_criterion

__all__ = [
    "axe",
    "ce",
    "criterion_loss",
    "cross_entropy_sum",
    "ctc",
    "label_smoothed_ce",
    "label_smoothed_nll_loss",
    "latent",
]

for _entry in (
    Criterion("ce", ce, help="cross entropy"),
    Criterion("label_smoothed_ce", label_smoothed_ce, help="label-smoothed cross entropy"),
    Criterion("ctc", ctc, help="real CTC"),
    Criterion(
        "axe", partial(axe, causal=False), help="aligned cross entropy (max over alignments)"
    ),
    Criterion("causal_axe", partial(axe, causal=True), help="AXE, p_j scoring y_i only if i >= j"),
    Criterion("latent", latent, help="any operator set x sum/max x causal of latalign.align"),
    Criterion(
        "doubled_ctc",
        ctc,
        layout="doubled",
        help="real CTC over the doubled decoder input (2L predictions; regime doubled)",
    ),  # fmt: skip
):
    register_criterion(_entry)


def criterion_loss(
    criterion: str | Criterion,
    logits: Tensor,
    targets: Tensor,
    input_lengths: Tensor,
    target_lengths: Tensor,
    *,
    blank: int,
    **options: Any,
) -> tuple[Tensor, dict[str, Tensor | int]]:
    """The one call of a criterion: logits upcast to at least float32 (sums over thousands of
    tokens), the function, and the stats a training step logs: ``loss`` (nats), ``ntokens``
    (the sum of ``target_lengths``), ``nsentences`` and ``nll_loss`` when the criterion has
    one. Returns ``(loss_sum (0-dim), stats)``; the stats are 0-dim tensors on the logits'
    device (``nsentences`` an int), not read back, so that a training step makes no host
    synchronisation (the loop reads its sums once per log interval)."""
    entry = get_criterion(criterion) if isinstance(criterion, str) else criterion
    loss, nll = entry.fn(
        at_least_float32(logits), targets, input_lengths, target_lengths, blank=blank, **options
    )
    stats: dict[str, Tensor | int] = {
        "loss": loss.detach(),
        "ntokens": target_lengths.sum(),
        "nsentences": int(targets.size(0)),
    }
    if nll is not None:
        stats["nll_loss"] = nll.detach()
    return loss, stats
