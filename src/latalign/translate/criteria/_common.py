"""Helpers shared by the criteria: the stats dict every criterion returns."""

from __future__ import annotations

from typing import Any, Protocol

import torch


class TargetBatch(Protocol):
    """What a criterion reads from a batch (see :class:`latalign.translate.batching.Batch`)."""

    target: torch.Tensor  # (B, T) int64, ``y_1 … y_n eos`` padded with pad_id
    target_lengths: torch.Tensor  # (B,) int64, m = n + 1


def make_stats(
    loss_sum: torch.Tensor, batch: Any, nll_loss_sum: torch.Tensor | None = None
) -> dict[str, float]:
    """Detached sums for logging: ``loss`` (nats), ``nll_loss`` (nats, when given),
    ``ntokens`` (target tokens incl. eos) and ``nsentences``."""
    stats = {
        "loss": float(loss_sum.detach()),
        "ntokens": int(batch.target_lengths.sum()),
        "nsentences": int(batch.target.size(0)),
    }
    if nll_loss_sum is not None:
        stats["nll_loss"] = float(nll_loss_sum.detach())
    return stats


def check_logits(logits: torch.Tensor, batch: Any) -> None:
    """Raise ``ValueError`` unless logits is (B, T, V) matching ``batch.target`` (B, T)."""
    if logits.dim() != 3:
        raise ValueError(f"expected logits of shape (B, T, V); found {tuple(logits.shape)}")
    if tuple(logits.shape[:2]) != tuple(batch.target.shape):
        raise ValueError(
            f"expected logits (B, T, V) with (B, T) == target shape {tuple(batch.target.shape)}; "
            f"found {tuple(logits.shape)}"
        )


def at_least_float32(logits: torch.Tensor) -> torch.Tensor:
    """``logits`` in float32 when it is half/bfloat16 (autocast output); float64 stays.

    Summed losses over thousands of tokens need float32 precision.
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        return logits.float()
    return logits
