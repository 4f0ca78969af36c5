"""Training losses of the non-autoregressive model, all from :mod:`latalign.align` (no new
dynamic program) or the stack's fused cross entropy.

Targets carry **no eos**: a NAT model predicts the sentence ``y_1 .. y_n`` itself (its length
is the output length, so eos would only be one more token to place). The batch's target ``y_1
.. y_n eos`` is cut by :func:`nat_targets`.

==================  ===========  =============================================================
criterion           length       token loss (summed, nats)
==================  ===========  =============================================================
``ce``              predict      cross entropy position by position at the gold length n
``label_smoothed_ce`` predict    the same with fairseq's label smoothing (``epsilon``)
``axe``             predict      :func:`latalign.axe_loss` at the gold length (T = n), ``delta``
``ctc``             upsample     :func:`latalign.ctc_loss`, T = upsample * S, ``zero_infinity``
``latent``          upsample     :func:`latalign.latent_alignment_loss` (any operator set)
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

import latalign
from latalign.translate.criteria._common import at_least_float32
from latalign.translate.criteria._xent import smoothed_cross_entropy
from latalign.translate.nat.model import NATOutput

__all__ = [
    "NAT_CRITERIA",
    "check_nat_criterion",
    "length_mode",
    "nat_loss",
    "nat_targets",
]

#: criterion -> how the output length is chosen
NAT_CRITERIA: dict[str, str] = {
    "ce": "predict",
    "label_smoothed_ce": "predict",
    "axe": "predict",
    "ctc": "upsample",
    "latent": "upsample",
}

_OPTIONS: dict[str, set[str]] = {
    "ce": set(),
    "label_smoothed_ce": {"epsilon"},
    "axe": {"delta"},
    "ctc": set(),
    "latent": {"operators", "aggregate", "weights", "causal"},
}


def length_mode(criterion: str) -> str:
    """``"predict"`` or ``"upsample"`` for a NAT criterion; ``ValueError`` for the others."""
    check_nat_criterion(criterion, {})
    return NAT_CRITERIA[criterion]


def check_nat_criterion(criterion: str, options: dict[str, Any]) -> None:
    """``ValueError`` (one line) for a criterion or option the NAT model cannot train with."""
    if criterion not in NAT_CRITERIA:
        raise ValueError(
            f"expected a NAT criterion in {{{', '.join(NAT_CRITERIA)}}} with --arch nat, "
            f"found {criterion!r}"
        )
    bad = sorted(set(options) - _OPTIONS[criterion])
    if bad:
        raise ValueError(
            f"expected options of NAT criterion {criterion!r} among "
            f"{sorted(_OPTIONS[criterion]) or 'none'}, found {bad}"
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
    pad_id: int,
    length_loss_weight: float = 0.1,
    **options: Any,
) -> tuple[Tensor, dict[str, float]]:
    """Summed NAT loss (nats, 0-dim) and stats for one batch.

    ``target`` (B, N) ``y_1 .. y_n`` without eos, ``target_lengths`` (B,) n (see
    :func:`nat_targets`); ``output`` from ``model(src_tokens, ..., target_lengths)``. Stats:
    ``loss``, ``ntokens`` (target tokens that are not ``pad_id``: the sum of n, less the
    positions glancing leaves out of a ``ce`` loss), ``nsentences``, ``nll_loss`` (``ce`` family),
    ``length_loss`` (predict mode: the length NLL scaled so that ``length_loss / ntokens``, the
    loop's ``train_length_loss``, is the mean length NLL per sentence).
    """
    check_nat_criterion(criterion, options)
    if length_loss_weight < 0:
        raise ValueError(f"expected length_loss_weight >= 0, found {length_loss_weight}")
    logits = at_least_float32(output.logits)  # (B, T, V)
    out_len = output.output_lengths
    # tokens the loss scores: n, less any glanced positions the ce family leaves out (pad)
    ntokens = int(target.ne(pad_id).sum())
    nsent = int(target.size(0))
    stats: dict[str, float] = {"ntokens": ntokens, "nsentences": nsent}
    if criterion in ("ce", "label_smoothed_ce"):
        t = logits.size(1)
        tgt = target[:, :t]
        if tgt.size(1) < t:
            tgt = F.pad(tgt, (0, t - tgt.size(1)), value=pad_id)
        eps = float(options.get("epsilon", 0.1)) if criterion == "label_smoothed_ce" else 0.0
        loss, nll = smoothed_cross_entropy(
            logits.reshape(-1, logits.size(-1)), tgt.reshape(-1), eps, pad_id
        )
        stats["nll_loss"] = float(nll.detach())
    elif criterion == "axe":
        loss = latalign.axe_loss(
            logits, target, out_len, target_lengths, blank=blank_id,
            delta=float(options.get("delta", 1.0)), reduction="sum", zero_infinity=True,
            from_logits=True,
        )  # fmt: skip
    elif criterion == "ctc":
        loss = latalign.ctc_loss(
            logits, target, out_len, target_lengths, blank=blank_id, reduction="sum",
            zero_infinity=True, from_logits=True,
        )  # fmt: skip
    else:  # latent
        loss = latalign.latent_alignment_loss(
            logits, target, out_len, target_lengths,
            operators=tuple(options.get("operators") or ("align", "clone_target", "delimiter")),
            aggregate=options.get("aggregate") or "sum", weights=options.get("weights"),
            blank=blank_id, reduction="sum", zero_infinity=True, from_logits=True,
        )  # fmt: skip
    if output.length_logits is not None:
        classes = model.length_classes(target_lengths, src_tokens)
        length_nll = F.cross_entropy(output.length_logits, classes, reduction="sum")
        # a sum whose ratio to ntokens (how the loop logs it) is the mean length NLL
        stats["length_loss"] = float(length_nll.detach()) * ntokens / max(nsent, 1)
        loss = loss + length_loss_weight * length_nll * (ntokens / max(nsent, 1))
    stats["loss"] = float(loss.detach())
    return loss, stats
