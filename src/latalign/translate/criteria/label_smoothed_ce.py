"""Label-smoothed cross entropy with fairseq's formula."""

from __future__ import annotations

import torch
from torch import Tensor

from latalign.translate.criteria.ce import BLANK, label_smoothed_sums


def label_smoothed_nll_loss(
    lprobs: Tensor, target: Tensor, epsilon: float, ignore_index: int
) -> tuple[Tensor, Tensor]:
    """fairseq's label smoothing, summed over tokens (the reference formula; the criterion
    computes the same values with the fused :func:`smoothed_cross_entropy`).

    lprobs (N, V) log-probabilities; target (N,). With ``eps_i = epsilon / (V - 1)``:
    ``loss = (1 - epsilon - eps_i) * nll + eps_i * sum_v(-lprobs_v)``. Positions with
    ``target == ignore_index`` contribute 0. Returns ``(loss_sum, nll_loss_sum)`` in nats.
    """
    target = target.unsqueeze(-1)  # (N, 1)
    nll_loss = -lprobs.gather(dim=-1, index=target)  # (N, 1)
    smooth_loss = -lprobs.sum(dim=-1, keepdim=True)  # (N, 1)
    pad_mask = target.eq(ignore_index)
    nll_loss = nll_loss.masked_fill(pad_mask, 0.0).sum()
    smooth_loss = smooth_loss.masked_fill(pad_mask, 0.0).sum()
    eps_i = epsilon / (lprobs.size(-1) - 1)
    loss = (1.0 - epsilon - eps_i) * nll_loss + eps_i * smooth_loss
    return loss, nll_loss


def label_smoothed_ce(
    logits: Tensor, targets: Tensor, input_lengths: Tensor, target_lengths: Tensor, *,
    epsilon: float = 0.1, blank: int = BLANK,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Criterion ``label_smoothed_ce`` (default ``epsilon`` = 0.1, fairseq's IWSLT recipe):
    ``(loss, NLL)`` summed over target positions, positions as :func:`~.ce.ce`."""
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"expected 0 <= epsilon < 1; found {epsilon}")
    return label_smoothed_sums(logits, targets, input_lengths, target_lengths, epsilon)
