"""Devices and precision: the one reading of a device name, the one bfloat16 default, the
device a model lives on. Training (:mod:`latalign.translate.distributed`) and decoding
(:class:`latalign.translate.decode.SearchOptions`) both use these.
"""

from __future__ import annotations

from typing import Any

import torch

from latalign.translate.quantize import check_int8_supported

__all__ = ["default_bf16", "model_device", "resolve_device"]


def resolve_device(
    name: str | torch.device = "auto", *, local_rank: int = 0, int8: bool = False
) -> torch.device:
    """The device ``name`` means on this machine: ``auto`` (CUDA when available, else the CPU;
    always the CPU for ``int8``), ``cpu``, ``cuda`` (the GPU of ``local_rank``, the process's
    index under ``torchrun``) or ``cuda:N``.

    ``ValueError`` for another name, a CUDA device this machine does not have, or int8 on
    anything but the CPU (or without fbgemm kernels).
    """
    text = str(name)
    if text == "auto":
        cuda = torch.cuda.is_available() and not int8
        device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    elif text == "cuda":
        device = torch.device(f"cuda:{local_rank}")
    else:
        try:
            device = torch.device(text) if text else None
        except RuntimeError:
            device = None
        if device is None or device.type not in ("cpu", "cuda"):
            raise ValueError(f"expected device auto, cpu, cuda or cuda:N; found {text!r}")
    if int8:
        check_int8_supported(device)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise ValueError(
                f"expected a CUDA device for --device {text}; found {count} "
                "(torch.cuda.is_available() is "
                f"{torch.cuda.is_available()}; use --device cpu or auto)"
            )
    return device


def default_bf16(device: torch.device) -> bool:
    """Whether bfloat16 autocast is on when nobody says: on a CUDA device that supports it,
    off on the CPU (without bf16 units it is slower there; ``benchmarks/bench_train.py`` and
    ``benchmarks/bench_decode.py`` measure it)."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def model_device(model: Any, fallback: torch.device | str = "cpu") -> torch.device:
    """The device of ``model``'s parameters (buffers if it has none), else ``fallback``."""
    for get in ("parameters", "buffers"):
        tensors = getattr(model, get, None)
        if callable(tensors):
            for t in tensors():
                return t.device
    return torch.device(fallback)
