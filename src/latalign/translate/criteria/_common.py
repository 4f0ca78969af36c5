"""What the criteria share: the float32 upcast, input checks, per-position targets.

The value checks (lengths against the logits, one prediction per target) follow the loss
library's validation switch (:func:`latalign.align.set_validation`): on, they cost one host
synchronisation per call (read together); off (the training step turns it off), none.
"""

from __future__ import annotations

import torch
from torch import Tensor

from latalign.align import validation_enabled

#: target id of positions that score nothing (past a sentence's length)
IGNORE = -100


def at_least_float32(logits: Tensor) -> Tensor:
    """``logits`` in float32 when it is half/bfloat16 (autocast output); float64 stays.

    Summed losses over thousands of tokens need float32 precision.
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        return logits.float()
    return logits


def check_lengths(
    logits: Tensor,
    targets: Tensor,
    input_lengths: Tensor,
    target_lengths: Tensor,
    *,
    one_per_target: bool = False,
) -> None:
    """``ValueError`` unless logits (B, T, V), targets (B, N) and lengths (B,) fit together
    and no sentence has more predictions than ``T`` (and, with ``one_per_target``, none has
    fewer predictions than targets). The shapes are always checked; the values only while
    validation is on (one host synchronisation for both)."""
    if logits.dim() != 3 or targets.dim() != 2 or logits.size(0) != targets.size(0):
        raise ValueError(
            f"expected logits (B, T, V) and targets (B, N); found {tuple(logits.shape)} and "
            f"{tuple(targets.shape)}"
        )
    b = logits.size(0)
    if input_lengths.shape != (b,) or target_lengths.shape != (b,):
        raise ValueError(
            f"expected input and target lengths of shape ({b},); found "
            f"{tuple(input_lengths.shape)} and {tuple(target_lengths.shape)}"
        )
    if not b or not validation_enabled():
        return
    flags = [input_lengths.max() > logits.size(1)]
    if one_per_target:
        flags.append((input_lengths < target_lengths).any())
    too_long, *too_few = torch.stack(flags).tolist()  # the one synchronisation
    if too_long:
        raise ValueError(
            f"expected at most T = {logits.size(1)} predictions per sentence; found "
            f"{int(input_lengths.max())}"
        )
    if any(too_few):
        raise ValueError("expected one prediction per target (input_lengths >= target_lengths)")


def position_targets(logits: Tensor, targets: Tensor, target_lengths: Tensor) -> Tensor:
    """(B, T) targets position by position for logits (B, T, V): ``targets[b, j]`` for ``j <
    target_lengths[b]``, :data:`IGNORE` elsewhere (also where ``targets`` is narrower)."""
    b, t = logits.shape[:2]
    out = targets[:, :t]
    if out.size(1) < t:
        out = torch.cat([out, out.new_full((b, t - out.size(1)), IGNORE)], dim=1)
    keep = torch.arange(t, device=out.device)[None, :] < target_lengths[:, None]
    return out.masked_fill(~keep, IGNORE)
