"""Training on CUDA (skipped without a GPU): one step on CUDA equals the same step on the CPU
within float tolerance, and bf16 autocast (the CUDA default) trains with finite, falling loss."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from latalign.translate.batching import collate
from latalign.translate.config import ModelConfig
from latalign.translate.data import DataConfig
from latalign.translate.loss import teacher_forced_loss
from latalign.translate.model import Transformer
from latalign.translate.train import TrainConfig, train, train_step, use_bf16

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _batch(vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for i in range(6):
        n, m = 4 + i, 3 + (i % 4)
        src = torch.randint(5, vocab, (n,), generator=g)
        tgt = torch.randint(5, vocab, (m,), generator=g)
        pairs.append((i, src, tgt))
    return collate(pairs)


@pytest.mark.parametrize("criterion", ["ce", "axe"])
def test_one_step_cpu_equals_cuda(criterion):
    torch.manual_seed(0)
    cpu_model = Transformer(ModelConfig.preset("tiny", 40, dropout=0.0))
    gpu_model = copy.deepcopy(cpu_model).cuda()
    batch = _batch(40)
    loss_fn = teacher_forced_loss(criterion)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # compare fp32 with fp32
    try:
        # SGD(lr=1): the parameter change is minus the gradient (Adam would hide its scale)
        s_cpu = train_step(cpu_model, torch.optim.SGD(cpu_model.parameters(), lr=1.0), batch,
                           loss_fn)  # fmt: skip
        s_gpu = train_step(gpu_model, torch.optim.SGD(gpu_model.parameters(), lr=1.0),
                           batch.to("cuda"), loss_fn)  # fmt: skip
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    assert float(s_gpu["loss"]) == pytest.approx(float(s_cpu["loss"]), rel=1e-4)  # device stats
    assert int(s_gpu["ntokens"]) == int(s_cpu["ntokens"])
    cpu_state, gpu_state = cpu_model.state_dict(), gpu_model.state_dict()
    for k, v in cpu_state.items():
        assert gpu_state[k].device.type == "cuda"
        torch.testing.assert_close(gpu_state[k].cpu(), v, rtol=1e-4, atol=1e-5, msg=k)


def test_bf16_training_on_cuda_has_finite_falling_loss(tmp_path):
    cfg = TrainConfig(
        run_dir=str(tmp_path / "run"), preset="tiny", criterion="ce", device="cuda",
        data=DataConfig(synthetic_size=400, synthetic_eval_size=32, vocab_size=120),
        max_tokens=600, lr=2e-3, warmup_updates=10, max_updates=60, log_every=10,
        validate_every=60, cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    assert cfg.bf16 is None and use_bf16(cfg, torch.device("cuda")) == (
        torch.cuda.is_bf16_supported()
    )
    result = train(cfg, progress=False)
    losses = [r["train_loss"] for r in result.history if r["kind"] == "train"]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] - 0.5
    assert math.isfinite(result.final["valid_loss"]) and math.isfinite(result.final["valid_ce"])
    assert next(result.model.parameters()).device.type == "cuda"
