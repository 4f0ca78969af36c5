"""The fused (label-smoothed) cross entropy against log_softmax references and gradcheck."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from latalign.translate.criteria import label_smoothed_nll_loss
from latalign.translate.criteria._xent import smoothed_cross_entropy

PAD = 0


def _data(seed: int, n: int = 9, v: int = 7, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(n, v, generator=g, dtype=dtype)).requires_grad_()
    target = torch.randint(1, v, (n,), generator=g)
    target[::3] = PAD  # padding rows
    return logits, target


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.35])
@pytest.mark.parametrize("seed", [0, 1])
def test_values_and_gradients_equal_the_reference(eps, seed):
    logits, target = _data(seed)
    loss, nll = smoothed_cross_entropy(logits, target, eps, PAD)
    ref_loss, ref_nll = label_smoothed_nll_loss(torch.log_softmax(logits, -1), target, eps, PAD)
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(nll, ref_nll)
    w = torch.tensor(0.7, dtype=logits.dtype)  # gradients of a weighted sum of both outputs
    (grad,) = torch.autograd.grad(loss + w * nll, logits)
    (ref_grad,) = torch.autograd.grad(ref_loss + w * ref_nll, logits)
    torch.testing.assert_close(grad, ref_grad)
    assert grad[::3].abs().max() == 0  # padding rows get no gradient


def test_plain_cross_entropy_equals_torch():
    logits, target = _data(2, n=12, v=11, dtype=torch.float32)
    loss, nll = smoothed_cross_entropy(logits, target, 0.0, PAD)
    ref = F.cross_entropy(logits, target, ignore_index=PAD, reduction="sum")
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(nll, ref)
    (g,) = torch.autograd.grad(loss, logits)
    (rg,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(g, rg)


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_gradcheck(eps):
    logits, target = _data(3, n=5, v=4)
    assert torch.autograd.gradcheck(
        lambda x: smoothed_cross_entropy(x, target, eps, PAD), (logits,)
    )


def test_ignore_index_outside_the_vocabulary_and_bad_shapes():
    logits, target = _data(4)
    target = target.masked_fill(target.eq(PAD), -100)
    loss, _ = smoothed_cross_entropy(logits, target)  # default ignore_index -100
    ref = F.cross_entropy(logits, target, reduction="sum")
    torch.testing.assert_close(loss, ref)
    with pytest.raises(ValueError, match="logits"):
        smoothed_cross_entropy(logits[None], target)
    with pytest.raises(ValueError, match="epsilon"):
        smoothed_cross_entropy(logits, target, 1.0)
