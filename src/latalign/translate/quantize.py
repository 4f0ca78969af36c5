"""int8 decoding on the CPU: a copy of a trained model whose linear layers multiply in int8.

:func:`quantize_int8` returns a copy of a :class:`~latalign.translate.model.Transformer` in which
every ``nn.Linear`` (attention projections, feed-forward layers and the output projection) is
replaced by :class:`Int8Linear`:

- weights quantized once, symmetrically, **per output channel** (scale = max |w| / 127 of the
  row), which keeps the error of the large output projection small;
- activations quantized on the fly, per tensor, by fbgemm's dynamic linear kernel
  (``torch.ops.quantized.linear_dynamic``), accumulating in int32 and returning float.

Embeddings, layer norms, attention scores, softmax and the beam bookkeeping stay fp32. The
original model is not touched (its tied embedding keeps training in fp32).

``python benchmarks/bench_decode.py --run-dir R`` measures speed and agreement against fp32
in one run (``docs/decoding.md`` has a measurement). Two properties a user must know:

- outputs are close to, not equal to, the fp32 model's (a few percent of sentences differ;
  BLEU moves by a few hundredths to tenths);
- the activation scale is taken over the whole batch, so a sentence's translation can depend on
  which other sentences share its batch (fp32 decoding does not have this property).

For decoding only: :class:`Int8Linear` has no gradient. CPU only: fbgemm has no GPU kernels.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import Tensor, nn

__all__ = ["Int8Linear", "check_int8_supported", "int8_available", "quantize_int8"]


def int8_available() -> bool:
    """True when this torch build has the fbgemm/x86 dynamic-quantization kernels."""
    engines = getattr(torch.backends.quantized, "supported_engines", [])
    has_ops = hasattr(torch.ops.quantized, "linear_dynamic")
    return has_ops and any(e in engines for e in ("x86", "fbgemm"))


def _quantize_rows(weight: Tensor) -> Tensor:
    """(out, in) float -> per-row symmetric qint8 tensor."""
    scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    zero = torch.zeros(weight.size(0), dtype=torch.long)
    with warnings.catch_warnings():
        # quantized tensors are deprecated upstream (pytorch#184982); torch 2.13, which the
        # project pins, still ships them and fbgemm's int8 kernels need them
        warnings.simplefilter("ignore", UserWarning)
        return torch.quantize_per_channel(weight, scale.double(), zero, 0, torch.qint8)


class Int8Linear(nn.Module):
    """``y = x W^T + b`` with W stored as per-channel int8 and x quantized per call (fbgemm).

    Built from an ``nn.Linear`` with :meth:`from_linear`; inference only.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        if weight.dim() != 2:
            raise ValueError(f"expected a 2-D weight, found shape {tuple(weight.shape)}")
        w = weight.detach().to(device="cpu", dtype=torch.float32).contiguous()
        b = None if bias is None else bias.detach().to(device="cpu", dtype=torch.float32)
        self.in_features, self.out_features = w.size(1), w.size(0)
        self._packed = torch.ops.quantized.linear_prepack(_quantize_rows(w), b)
        # fbgemm's AVX2 path multiplies u8 x s8 pairs into int16 before accumulating: a reduced
        # (7-bit) activation range avoids saturating those sums, as torch's own dynamic
        # quantization does on x86
        self._reduce_range = torch.backends.quantized.engine in ("x86", "fbgemm")

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        return cls(linear.weight, linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        """x (..., in_features) float -> (..., out_features) float32."""
        if x.requires_grad and torch.is_grad_enabled():
            raise RuntimeError("Int8Linear is for decoding only: it has no gradient")
        lead = x.shape[:-1]
        y = torch.ops.quantized.linear_dynamic(
            x.reshape(-1, self.in_features).float().contiguous(), self._packed, self._reduce_range
        )
        return y.view(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def check_int8_supported(device: str | torch.device = "cpu") -> None:
    """ValueError unless int8 decoding can run on ``device`` with this torch build (fbgemm/x86
    kernels present, a CPU device)."""
    if not int8_available():
        raise ValueError(
            "int8 decoding (--int8) needs torch's fbgemm/x86 quantized kernels; this build has "
            f"none (quantized engines: {torch.backends.quantized.supported_engines})"
        )
    if torch.device(device).type != "cpu":
        raise ValueError(
            "int8 decoding (--int8) runs on the CPU only (fbgemm has no GPU kernels): expected "
            f"a model on the CPU; found {device}"
        )


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (in eval mode) with every ``nn.Linear`` replaced by :class:`Int8Linear`.

    Raises ValueError if the model is not on the CPU or this torch build lacks the int8 kernels
    (:func:`check_int8_supported`).
    """
    for device in {p.device for p in model.parameters()} or {torch.device("cpu")}:
        check_int8_supported(device)
    copied = copy.deepcopy(model).eval()
    linears = [(name, m) for name, m in copied.named_modules() if isinstance(m, nn.Linear)]
    for name, linear in linears:
        parent_name, _, child = name.rpartition(".")
        parent = copied.get_submodule(parent_name) if parent_name else copied
        setattr(parent, child, Int8Linear.from_linear(linear))
    return copied
