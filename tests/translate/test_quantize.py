"""int8 decoding: Int8Linear against nn.Linear, quantize_int8 against the fp32 model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from latalign.translate.config import ModelConfig
from latalign.translate.decode import _collate_sources, beam_search_hypotheses, greedy_decode
from latalign.translate.model import Transformer
from latalign.translate.quantize import Int8Linear, int8_available, quantize_int8

pytestmark = pytest.mark.skipif(
    not int8_available(), reason="this torch build has no fbgemm int8 kernels"
)

VOCAB, PAD, EOS = 40, 0, 2


@pytest.mark.parametrize("bias", [True, False])
def test_int8_linear_matches_float_linear(bias):
    torch.manual_seed(0)
    lin = nn.Linear(64, 300, bias=bias)
    with torch.no_grad():  # rows of very different scales: per-channel weights keep each one
        lin.weight.mul_(torch.logspace(-2, 1, 300)[:, None])
    q = Int8Linear.from_linear(lin)
    x = torch.randn(3, 7, 64)  # any leading shape
    with torch.no_grad():
        ref = lin(x)
    out = q(x)
    assert out.shape == ref.shape and out.dtype == torch.float32
    rel = (out - ref).norm(dim=(0, 1)) / ref.norm(dim=(0, 1))  # per output channel
    assert float(rel.max()) < 0.05, float(rel.max())
    # not a copy of the float result: int8 rounding is visible
    assert not torch.equal(out, ref)


def test_int8_linear_refuses_gradients():
    q = Int8Linear.from_linear(nn.Linear(4, 3))
    with pytest.raises(RuntimeError, match="no gradient"):
        q(torch.randn(2, 4, requires_grad=True))


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    m = Transformer(ModelConfig.preset("tiny", VOCAB))
    with torch.no_grad():  # confident next-token distributions, as a trained model has
        m.output_projection.weight.mul_(6.0)
    return m.train()


def test_quantize_copies_and_leaves_the_model_alone(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q = quantize_int8(model)
    assert model.training and not q.training
    assert not any(isinstance(m, nn.Linear) for m in q.modules())
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    assert sum(isinstance(m, Int8Linear) for m in q.modules()) == n_linear
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # the tied output projection of the original still shares the embedding
    assert model.output_projection.weight is model.decoder_embed.weight


def _sources() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    rows = [torch.randint(5, VOCAB, (n,), generator=g).tolist() + [EOS] for n in (6, 3, 8, 5)]
    return _collate_sources(rows, PAD, "cpu")[0]


def test_int8_logits_close_to_fp32(model):
    q = quantize_int8(model)
    ref_model = model.eval()
    src = _sources()
    prev = torch.randint(5, VOCAB, (4, 5))
    with torch.inference_mode():
        ref = ref_model(src, None, prev)
        out = q(src, None, prev)
    model.train()
    err = (out - ref).abs().max() / ref.abs().max()
    assert float(err) < 0.05, float(err)
    # same distributions: the fp32 argmax keeps (almost) all its probability under int8
    agree = out.argmax(-1).eq(ref.argmax(-1)).float().mean()
    assert float(agree) >= 0.9


def test_int8_beam_search_decodes_like_fp32(model):
    q = quantize_int8(model)
    src = _sources()
    lim = dict(max_len_a=1.0, max_len_b=2)
    ref = beam_search_hypotheses(model, src, beam=3, **lim)
    out = beam_search_hypotheses(q, src, beam=3, **lim)
    model.train()
    same = sum(r[0].tokens == o[0].tokens for r, o in zip(ref, out))
    assert same >= 3, (ref, out)
    for r, o in zip(ref, out):  # scores of the best hypotheses within int8 error
        assert o[0].score == pytest.approx(r[0].score, abs=0.5)
    # the cache works the same with int8 layers
    assert greedy_decode(q, src, **lim) == greedy_decode(q, src, use_cache=False, **lim)


def test_quantize_refuses_a_model_off_the_cpu(model):
    meta = Transformer(ModelConfig.preset("tiny", VOCAB)).to("meta")
    with pytest.raises(ValueError, match="on the CPU"):
        quantize_int8(meta)
