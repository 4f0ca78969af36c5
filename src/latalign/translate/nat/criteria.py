"""The NAT wrapper of the stack's criteria (:data:`latalign.translate.registry.CRITERIA`,
the same functions the autoregressive loss calls, with the decoder's output lengths as
``input_lengths``), plus the length-predictor term.

Targets carry **no eos**: a NAT model predicts the sentence ``y_1 .. y_n`` itself (its length
is the output length, so eos would only be one more token to place). The batch's target ``y_1
.. y_n eos`` is cut by :func:`nat_targets`.

==================  ===========  =============================================================
criterion           length       predictions T the criterion scores against the n targets
==================  ===========  =============================================================
``ce``              predict      the gold length (T = n), position by position
``label_smoothed_ce`` predict    the same, with label smoothing (``epsilon``)
``axe``             predict      the gold length (T = n), ``delta``
``ctc``             upsample     T = upsample * S, ``zero_infinity``
``latent``          upsample     T = upsample * S, any operator set (not causal)
==================  ===========  =============================================================

``causal_axe`` is refused: its causality restricts alignments to those an autoregressive
decoder can realise, which has no meaning for a decoder that sees every position.

The length predictor (predict mode) adds ``length_loss_weight * mean sentence length NLL``
to the per-token loss: its summed NLL is scaled by ``ntokens / nsentences`` so that after the
trainer divides the sum by the batch's target tokens the term is exactly
``length_loss_weight`` times the mean length cross entropy (fairseq's ``nat_loss`` weighting).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from latalign.translate.criteria import criterion_loss
from latalign.translate.criteria._common import IGNORE, position_targets
from latalign.translate.nat.model import NATOutput
from latalign.translate.registry import get_criterion

__all__ = [
    "LENGTH_MODE_OF",
    "check_nat_criterion",
    "length_mode",
    "nat_loss",
    "nat_targets",
]

#: the criteria a NAT model trains with -> how its output length is chosen
LENGTH_MODE_OF: dict[str, str] = {
    "ce": "predict",
    "label_smoothed_ce": "predict",
    "axe": "predict",
    "ctc": "upsample",
    "latent": "upsample",
}


def length_mode(criterion: str) -> str:
    """``"predict"`` or ``"upsample"`` for a NAT criterion; ``ValueError`` for the others."""
    check_nat_criterion(criterion, {})
    return LENGTH_MODE_OF[criterion]


def check_nat_criterion(criterion: str, options: dict[str, Any]) -> None:
    """``ValueError`` (one line) for a criterion or option the NAT model cannot train with."""
    if criterion not in LENGTH_MODE_OF:
        raise ValueError(
            f"expected a NAT criterion in {{{', '.join(LENGTH_MODE_OF)}}} with --arch nat, "
            f"found {criterion!r}"
        )
    known = get_criterion(criterion).options
    bad = sorted(set(options) - set(known))
    if bad:
        raise ValueError(
            f"expected options of NAT criterion {criterion!r} among "
            f"{sorted(known) or 'none'}, found {bad}"
        )
    if options.get("causal"):
        raise ValueError("expected causal=False for a NAT criterion, found causal=True")


def nat_targets(target: Tensor, target_lengths: Tensor, pad_id: int) -> tuple[Tensor, Tensor]:
    """A batch's ``y_1 .. y_n eos`` (B, T) and lengths n + 1 -> ``y_1 .. y_n`` (B, T - 1)
    padded with ``pad_id`` and lengths n (B,)."""
    n = target_lengths - 1
    out = target[:, :-1] if target.size(1) > 1 else target[:, :0]
    keep = torch.arange(out.size(1), device=out.device)[None, :] < n[:, None]
    return out.masked_fill(~keep, pad_id), n


def nat_loss(
    output: NATOutput,
    target: Tensor,
    target_lengths: Tensor,
    src_tokens: Tensor,
    model: Any,
    criterion: str,
    *,
    blank_id: int,
    pad_id: int | None = None,
    length_loss_weight: float = 0.1,
    **options: Any,
) -> tuple[Tensor, dict[str, Any]]:
    """Summed NAT loss (nats, 0-dim) and stats for one batch.

    ``target`` (B, N) ``y_1 .. y_n`` without eos, ``target_lengths`` (B,) n (see
    :func:`nat_targets`); ``output`` from ``model(src_tokens, ..., target_lengths)``. Stats:
    ``loss``, ``ntokens`` (sum of n; for the ``ce`` family less the positions where
    ``target`` holds ``pad_id``: glancing leaves its glanced positions out so), ``nsentences``, ``nll_loss`` (``ce`` family),
    ``length_loss`` (predict mode: the length NLL scaled so that ``length_loss / ntokens``, the
    loop's ``train_length_loss``, is the mean length NLL per sentence).
    """
    check_nat_criterion(criterion, options)
    if length_loss_weight < 0:
        raise ValueError(f"expected length_loss_weight >= 0, found {length_loss_weight}")
    left_out = pad_id is not None and criterion in ("ce", "label_smoothed_ce")
    if left_out:  # glanced positions (pad_id inside the lengths) score nothing
        target = target.masked_fill(target.eq(pad_id), IGNORE)
    loss, stats = criterion_loss(
        criterion, output.logits, target, output.output_lengths, target_lengths,
        blank=blank_id, **options,
    )  # fmt: skip
    if left_out:
        stats["ntokens"] = position_targets(output.logits, target, target_lengths).ne(IGNORE).sum()
    nsent = max(stats["nsentences"], 1)
    if output.length_logits is not None:
        classes = model.length_classes(target_lengths, src_tokens)
        length_nll = F.cross_entropy(output.length_logits, classes, reduction="sum")
        # float64 on the device, not read back: a sum whose ratio to ntokens (how the loop
        # logs it) is the mean length NLL
        ntokens = torch.as_tensor(stats["ntokens"], dtype=torch.float64, device=loss.device)
        stats["length_loss"] = length_nll.detach().double() * ntokens / nsent
        loss = loss + length_loss_weight * length_nll * (ntokens / nsent).to(length_nll.dtype)
    stats["loss"] = loss.detach()
    return loss, stats
