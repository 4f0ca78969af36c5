"""Input checks shared by every loss: clear errors before any work starts (SPEC.md).

Shape or value problems raise ``ValueError``, dtype problems ``TypeError``, each with an
"expected … found …" message. Nothing is silently clamped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INDEX_DTYPES = (torch.int32, torch.int64)
REDUCTIONS = ("none", "sum", "mean")

LengthsLike = torch.Tensor | Sequence[int]


@dataclass(frozen=True)
class CheckedInputs:
    """Validated inputs: lengths as int64 tensors on the device of ``log_probs``."""

    log_probs: torch.Tensor  # (N, T, C)
    targets: torch.Tensor  # (N, S) int64, padding replaced by a safe index
    input_lengths: torch.Tensor  # (N,) int64
    target_lengths: torch.Tensor  # (N,) int64


def _lengths(name: str, value: LengthsLike, batch: int, device: torch.device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"expected {name} of an integer dtype, found {value.dtype}")
        t = value
    else:
        try:
            t = torch.as_tensor(list(value))
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"expected {name} as a tensor or a sequence of ints, found {value!r}"
            ) from exc
        if t.is_floating_point() or t.dtype == torch.bool:
            raise TypeError(f"expected {name} of integers, found {t.dtype}")
    if t.dim() != 1:
        raise ValueError(
            f"expected {name} of shape (N,) = ({batch},), found shape {tuple(t.shape)}"
        )
    if t.shape[0] != batch:
        raise ValueError(
            f"expected {name} of length N = {batch} (the batch size of log_probs), found {t.shape[0]}"
        )
    return t.to(device=device, dtype=torch.int64)


def check_inputs(
    log_probs: torch.Tensor,
    targets: torch.Tensor,
    input_lengths: LengthsLike,
    target_lengths: LengthsLike,
    *,
    blank: int,
    reduction: str | None = "mean",
) -> CheckedInputs:
    """Validate batch-first loss inputs; see SPEC.md "Shapes and conventions"."""
    if not isinstance(log_probs, torch.Tensor):
        raise TypeError(
            f"expected log_probs to be a torch.Tensor, found {type(log_probs).__name__}"
        )
    if log_probs.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"expected log_probs of a floating dtype {[str(d) for d in FLOAT_DTYPES]}, "
            f"found {log_probs.dtype}"
        )
    if log_probs.dim() != 3:
        raise ValueError(
            f"expected log_probs of shape (N, T, C) (batch first), found shape {tuple(log_probs.shape)}"
        )
    nb, tmax, ncls = log_probs.shape
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"expected targets to be a torch.Tensor, found {type(targets).__name__}")
    if targets.dtype not in INDEX_DTYPES:
        raise TypeError(f"expected targets of dtype int64 or int32, found {targets.dtype}")
    if targets.dim() != 2:
        raise ValueError(
            f"expected targets of shape (N, S) (padded), found shape {tuple(targets.shape)}"
        )
    if targets.shape[0] != nb:
        raise ValueError(
            f"expected targets with batch size N = {nb} (as log_probs), found {targets.shape[0]}"
        )
    if reduction is not None and reduction not in REDUCTIONS:
        raise ValueError(f"expected reduction in {REDUCTIONS}, found {reduction!r}")
    if not isinstance(blank, int) or isinstance(blank, bool):
        raise TypeError(f"expected blank to be an int, found {type(blank).__name__}")
    if not 0 <= blank < ncls:
        raise ValueError(f"expected 0 <= blank < C = {ncls}, found blank = {blank}")
    dev = log_probs.device
    in_len = _lengths("input_lengths", input_lengths, nb, dev)
    tg_len = _lengths("target_lengths", target_lengths, nb, dev)
    if nb > 0:
        lo, hi = int(in_len.min()), int(in_len.max())
        if lo < 1 or hi > tmax:
            bad = int(torch.nonzero((in_len < 1) | (in_len > tmax))[0, 0])
            raise ValueError(
                f"expected 1 <= input_lengths <= T = {tmax}, found input_lengths[{bad}] = "
                f"{int(in_len[bad])}"
            )
        smax = targets.shape[1]
        lo, hi = int(tg_len.min()), int(tg_len.max())
        if lo < 0 or hi > smax:
            bad = int(torch.nonzero((tg_len < 0) | (tg_len > smax))[0, 0])
            raise ValueError(
                f"expected 0 <= target_lengths <= S = {smax}, found target_lengths[{bad}] = "
                f"{int(tg_len[bad])}"
            )
    tg = targets.to(device=dev, dtype=torch.int64)
    used = torch.arange(tg.shape[1], device=dev).view(1, -1) < tg_len.view(-1, 1)  # (N, S)
    out_of_range = used & ((tg < 0) | (tg >= ncls))
    if bool(out_of_range.any()):
        b, s = (int(v) for v in torch.nonzero(out_of_range)[0])
        raise ValueError(
            f"expected target ids in [0, C = {ncls}), found targets[{b}, {s}] = {int(tg[b, s])}"
        )
    is_blank = used & (tg == blank)
    if bool(is_blank.any()):
        b, s = (int(v) for v in torch.nonzero(is_blank)[0])
        raise ValueError(
            f"expected targets without the blank index {blank}, found it at targets[{b}, {s}]"
        )
    safe = torch.where(used, tg, torch.full_like(tg, blank))
    return CheckedInputs(log_probs, safe, in_len, tg_len)


def check_finite_emissions(em: torch.Tensor, input_lengths: torch.Tensor, what: str) -> None:
    """Raise if a NaN reaches the dynamic program inside the used positions ``t < m``."""
    nb, tmax, _ = em.shape
    valid = torch.arange(tmax, device=em.device).view(1, tmax) < input_lengths.view(nb, 1)
    bad = torch.isnan(em).any(dim=2) & valid
    if bool(bad.any()):
        b, t = (int(v) for v in torch.nonzero(bad)[0])
        raise ValueError(f"expected {what} without NaN, found NaN at batch {b}, position {t}")
