"""Fused (label-smoothed) cross entropy over logits: one autograd node, no (N, V) log-probs.

``F.cross_entropy`` and the ``log_softmax`` + ``gather`` + ``sum`` of fairseq's label smoothing
each write and read several (N, V) tensors in the forward and the backward pass (log-probs,
a zero-filled scatter target, the smoothing gradient, their sum). Here the forward pass keeps
only the row log-sum-exp and the backward pass writes the gradient once::

    d loss / d x = g_loss * (softmax(x) - (1 - eps - eps_i) * onehot(t) - eps_i)
    d nll  / d x = g_nll  * (softmax(x) - onehot(t))

with ``eps_i = eps / (V - 1)`` (fairseq's formula; ``eps = 0`` is plain cross entropy). The
values equal :func:`~latalign.translate.criteria.label_smoothed_ce.label_smoothed_nll_loss`
of ``log_softmax`` (tested against it and with ``gradcheck``). ``python
benchmarks/bench_train.py --criteria ce_unfused,ce,lsce_unfused,label_smoothed_ce`` measures
the training step with each against its unfused baseline. The step is bound by matrix
products, so this gains little speed; what it saves is the (N, V) temporaries.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["smoothed_cross_entropy"]


class _SmoothedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, logits: Tensor, target: Tensor, epsilon: float, ignore_index: int
    ) -> tuple[Tensor, Tensor]:
        vocab = logits.size(1)
        eps_i = epsilon / (vocab - 1) if vocab > 1 else 0.0
        keep = target.ne(ignore_index)  # (N,)
        safe = target.masked_fill(~keep, 0)  # ignore_index may lie outside [0, V)
        lse = torch.logsumexp(logits, dim=1)  # (N,)
        picked = logits.gather(1, safe[:, None]).squeeze(1)  # (N,)
        zero = logits.new_zeros(())
        nll_rows = torch.where(keep, lse - picked, zero)
        loss_rows = (1.0 - epsilon - eps_i) * nll_rows
        if epsilon:
            smooth_rows = torch.where(keep, vocab * lse - logits.sum(dim=1), zero)
            loss_rows = loss_rows + eps_i * smooth_rows
        ctx.save_for_backward(logits, safe, keep, lse)
        ctx.coefficients = (1.0 - epsilon - eps_i, eps_i)
        return loss_rows.sum(), nll_rows.sum()

    @staticmethod
    @once_differentiable
    def backward(  # type: ignore[override]
        ctx: Any, g_loss: Tensor | None, g_nll: Tensor | None
    ) -> tuple[Tensor | None, None, None, None]:
        logits, target, keep, lse = ctx.saved_tensors
        on_target, eps_i = ctx.coefficients
        zero = logits.new_zeros(())
        g_loss = zero if g_loss is None else g_loss
        g_nll = zero if g_nll is None else g_nll
        mask = keep.to(logits.dtype)  # (N,)
        grad = torch.sub(logits, lse[:, None]).exp_()  # softmax (N, V)
        grad.mul_(((g_loss + g_nll) * mask)[:, None])
        if eps_i:
            grad.sub_((g_loss * eps_i * mask)[:, None])
        grad.scatter_add_(1, target[:, None], (-(g_loss * on_target + g_nll) * mask)[:, None])
        return grad, None, None, None


def smoothed_cross_entropy(
    logits: Tensor, target: Tensor, epsilon: float = 0.0, ignore_index: int = -100
) -> tuple[Tensor, Tensor]:
    """Summed label-smoothed cross entropy and summed NLL (nats) of logits (N, V), target (N,).

    Rows whose target is ``ignore_index`` contribute 0 to both. ``epsilon = 0`` gives plain
    cross entropy (both outputs equal). Differentiable in ``logits`` (once).
    """
    if logits.dim() != 2 or target.shape != logits.shape[:1]:
        raise ValueError(
            f"expected logits (N, V) and target (N,); found {tuple(logits.shape)} and "
            f"{tuple(target.shape)}"
        )
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"expected 0 <= epsilon < 1; found {epsilon}")
    loss, nll = _SmoothedCrossEntropy.apply(logits, target, float(epsilon), int(ignore_index))
    return loss, nll
