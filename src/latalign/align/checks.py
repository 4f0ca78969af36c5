"""Input checks shared by every loss: clear errors, at most one host synchronisation (SPEC.md).

Shape or value problems raise ``ValueError``, dtype problems ``TypeError``, each with an
"expected … found …" message. Nothing is silently clamped while validation is on.

Two stages, so that a loss call on a GPU waits for the device at most once:

1. :func:`check_inputs` checks what the host knows (types, shapes, options) and lengths
   that live on the host, and queues the value checks of device tensors (lengths in range,
   target ids in ``[0, C)`` and not the blank) as device ops, without reading them back.
2. :func:`validate_values` adds the NaN check of the gathered emissions and reads the
   verdict with **one** synchronisation; only when something is wrong does it look again
   (more reads) to name the first problem, in the order lengths, ids, blank, NaN.

Validation off (``validate=False`` on a loss, or :func:`set_validation` for every call, as
``validate_args`` / ``Distribution.set_default_validate_args`` in ``torch.distributions``)
skips both value stages: no synchronisation at all. The inputs are then trusted; lengths
are clamped into range and out-of-range ids replaced by the blank so that no kernel reads
out of bounds, but a wrong input gives a wrong loss, silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INDEX_DTYPES = (torch.int32, torch.int64)
REDUCTIONS = ("none", "sum", "mean")

LengthsLike = torch.Tensor | Sequence[int]

_VALIDATION = [True]


def set_validation(enabled: bool) -> bool:
    """Switch the value checks of every loss on (the default) or off; returns the previous
    setting. A loss's own ``validate=`` argument overrides it for that call.

    Off, a loss call from logits makes no host synchronisation at all (on, exactly one).
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"expected enabled to be a bool, found {type(enabled).__name__}")
    before = _VALIDATION[0]
    _VALIDATION[0] = enabled
    return before


def validation_enabled() -> bool:
    """Whether the losses check input values by default (see :func:`set_validation`)."""
    return _VALIDATION[0]


@dataclass(frozen=True)
class CheckedInputs:
    """Inputs in the layout every backend takes, on the device of ``log_probs``."""

    log_probs: torch.Tensor  # (N, T, C), any strides
    idx: torch.Tensor  # (N, S+1) int64: the blank, then the targets (padding -> the blank)
    input_lengths: torch.Tensor  # (N,) int64, contiguous
    target_lengths: torch.Tensor  # (N,) int64, contiguous
    raw_targets: torch.Tensor  # (N, S) int64 as given (for messages)
    blank: int
    problems: torch.Tensor | None  # flat bool, True where a queued check fails; None: off

    @property
    def targets(self) -> torch.Tensor:
        """``(N, S)`` int64 targets, padding replaced by the blank (a view of ``idx``)."""
        return self.idx[:, 1:]


def _expect_tensor(name: str, x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected {name} to be a torch.Tensor, found {type(x).__name__}")
    return x


def expect_dims(name: str, t: torch.Tensor, dims: int, shape: str) -> None:
    """``t`` has ``dims`` dimensions, else the message names the expected ``shape``."""
    if t.dim() != dims:
        raise ValueError(f"expected {name} of shape {shape}, found shape {tuple(t.shape)}")


def float_tensor(name: str, x: object, shape: str) -> torch.Tensor:
    """``x`` checked as a 3-dim tensor of a floating dtype (``shape`` for the message)."""
    t = _expect_tensor(name, x)
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"expected {name} of a floating dtype {[str(d) for d in FLOAT_DTYPES]}, found {t.dtype}"
        )
    expect_dims(name, t, 3, shape)
    return t


def index_tensor(name: str, x: object) -> torch.Tensor:
    """``x`` checked as a tensor of ids (int64 or int32)."""
    t = _expect_tensor(name, x)
    if t.dtype not in INDEX_DTYPES:
        raise TypeError(f"expected {name} of dtype int64 or int32, found {t.dtype}")
    return t


def check_reduction(reduction: str | None) -> None:
    """``None`` (no reduction asked for) or one of :data:`REDUCTIONS`."""
    if reduction is not None and reduction not in REDUCTIONS:
        raise ValueError(f"expected reduction in {REDUCTIONS}, found {reduction!r}")


def _as_lengths(name: str, value: LengthsLike, batch: int) -> torch.Tensor:
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
    expect_dims(name, t, 1, f"(N,) = ({batch},)")
    if t.shape[0] != batch:
        raise ValueError(
            f"expected {name} of length N = {batch} (the batch size of log_probs), found {t.shape[0]}"
        )
    return t


def _lengths(name: str, value: LengthsLike, batch: int, device: torch.device) -> torch.Tensor:
    """``value`` checked as (N,) integer lengths, as a contiguous int64 tensor on ``device``."""
    return _as_lengths(name, value, batch).to(device=device, dtype=torch.int64).contiguous()


def raise_if_out_of_range(name: str, t: torch.Tensor, lo: int, hi: int, bound: str) -> None:
    """The message of a length outside ``[lo, hi]`` (reads ``t``: a sync on a device)."""
    bad = (t < lo) | (t > hi)
    if t.numel() and bool(bad.any()):
        k = int(torch.nonzero(bad)[0, 0])
        raise ValueError(
            f"expected {lo} <= {name} <= {bound} = {hi}, found {name}[{k}] = {int(t[k])}"
        )


def check_inputs(
    log_probs: torch.Tensor,
    targets: torch.Tensor,
    input_lengths: LengthsLike,
    target_lengths: LengthsLike,
    *,
    blank: int,
    reduction: str | None = "mean",
    validate: bool | None = None,
) -> CheckedInputs:
    """Validate batch-first loss inputs (SPEC.md "Shapes and conventions"): what the host
    knows now, the values of device tensors queued for :func:`validate_values`.

    ``validate``: ``None`` follows :func:`set_validation`.
    """
    float_tensor("log_probs", log_probs, "(N, T, C) (batch first)")
    nb, tmax, ncls = log_probs.shape
    index_tensor("targets", targets)
    expect_dims("targets", targets, 2, "(N, S) (padded)")
    if targets.shape[0] != nb:
        raise ValueError(
            f"expected targets with batch size N = {nb} (as log_probs), found {targets.shape[0]}"
        )
    check_reduction(reduction)
    if not isinstance(blank, int) or isinstance(blank, bool):
        raise TypeError(f"expected blank to be an int, found {type(blank).__name__}")
    if not 0 <= blank < ncls:
        raise ValueError(f"expected 0 <= blank < C = {ncls}, found blank = {blank}")
    validate = validation_enabled() if validate is None else bool(validate)
    dev = log_probs.device
    smax = targets.shape[1]
    raw_in = _as_lengths("input_lengths", input_lengths, nb)
    raw_tg = _as_lengths("target_lengths", target_lengths, nb)
    queued = []
    if nb and tmax == 0:  # no frame at all: every input length is out of range
        raise_if_out_of_range("input_lengths", raw_in, 1, tmax, "T")
    lengths = []
    for name, raw, lo, hi, bound in (
        ("input_lengths", raw_in, 1, tmax, "T"),
        ("target_lengths", raw_tg, 0, smax, "S"),
    ):
        on_host = raw.device.type == "cpu" and dev.type != "cpu"
        if validate and on_host:  # as torch's CTC accepts: checked here, on the host, for free
            raise_if_out_of_range(name, raw, lo, hi, bound)
        t = raw.to(device=dev, dtype=torch.int64, non_blocking=on_host).contiguous()
        if validate and not on_host:
            queued.append(t.clamp(lo, hi) != t)
        elif not validate:
            t = t.clamp(lo, hi)  # trusted input: at least no kernel reads out of bounds
        lengths.append(t)
    in_len, tg_len = lengths
    host_targets = targets.device.type == "cpu" and dev.type != "cpu"
    tg = targets.to(device=dev, dtype=torch.int64, non_blocking=host_targets)
    used = torch.arange(smax, device=dev).view(1, smax) < tg_len.view(nb, 1)  # (N, S)
    keep = used & (tg.clamp(0, ncls - 1) == tg)
    idx = torch.nn.functional.pad(torch.where(keep, tg, blank), (1, 0), value=blank)
    problems = None
    if validate:
        queued.append(keep != used)  # a used id outside [0, C)
        queued.append(keep & (tg == blank))
        problems = torch.cat([q.view(-1) for q in queued])
    return CheckedInputs(log_probs, idx, in_len, tg_len, tg, blank, problems)


def validate_values(checked: CheckedInputs, em: torch.Tensor, what: str) -> None:
    """The queued value checks plus NaN in the emissions of used frames ``t < m``: one
    host synchronisation (none when validation is off); raises the first problem."""
    if checked.problems is None:
        return
    nb, tmax, _ = em.shape
    valid = torch.arange(tmax, device=em.device).view(1, tmax) < checked.input_lengths.view(nb, 1)
    nan = torch.isnan(em).any(dim=2) & valid  # (N, T)
    if bool(torch.cat([checked.problems, nan.view(-1)]).any()):  # the one synchronisation
        _raise_first_problem(checked, nan, what)


def _raise_first_problem(checked: CheckedInputs, nan: torch.Tensor, what: str) -> None:
    _, tmax, ncls = checked.log_probs.shape
    tg, blank = checked.raw_targets, checked.blank
    raise_if_out_of_range("input_lengths", checked.input_lengths, 1, tmax, "T")
    raise_if_out_of_range("target_lengths", checked.target_lengths, 0, tg.shape[1], "S")
    smax = tg.shape[1]
    used = torch.arange(smax, device=tg.device).view(1, -1) < checked.target_lengths.view(-1, 1)
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
    if bool(nan.any()):
        b, t = (int(v) for v in torch.nonzero(nan)[0])
        raise ValueError(f"expected {what} without NaN, found NaN at batch {b}, position {t}")
    raise AssertionError("a queued input check failed but none is found again")  # unreachable
