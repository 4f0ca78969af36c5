"""Data-parallel training under torchrun (DistributedDataParallel, gloo on the CPU): two
processes end with identical parameters, equal (within float rounding) to one process trained
on the same global batches, and only rank 0 writes the run directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from latalign.translate.batching import TokenBatchSampler, collate
from latalign.translate.checkpoint import load_checkpoint
from latalign.translate.data import DataConfig, prepare_data
from latalign.translate.optim import InverseSqrtSchedule, build_optimizer, inverse_sqrt_lr
from latalign.translate.registry import get_arch
from latalign.translate.train import TrainConfig, seed_everything, train_step

# Run by torchrun in each process: train, then save this rank's final parameters (the test
# reads them; the library has no test hook).
WORKER = """
import json, sys
from pathlib import Path
import torch
from latalign.translate.registry import get_arch
from latalign.translate.batching import collate
from latalign.translate.data import prepare_data
from latalign.translate.distributed import init_distributed, wrap_ddp
from latalign.translate.train import TrainConfig, train, train_step
cfg = TrainConfig.from_dict(json.loads(sys.argv[1]))
res = train(cfg, progress=False)
rank = torch.distributed.get_rank()
state = {k: v.detach().cpu() for k, v in res.model.state_dict().items()}
torch.save(state, f"{sys.argv[2]}/params_rank{rank}.pt")
# one more update with SGD(lr=1): the parameter change is minus the synchronised gradient
data = prepare_data(cfg.data, Path(cfg.cache_dir))
shard = [data.train[i] for i in json.loads(sys.argv[3])[rank]]
model = res.model
loss_fn = get_arch("ar").make_loss(cfg, data.tokenizer)
dist = init_distributed("cpu")
train_step(wrap_ddp(model, dist), torch.optim.SGD(model.parameters(), lr=1.0), collate(shard),
           loss_fn, dist=dist)
state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
torch.save(state, f"{sys.argv[2]}/sgd_rank{rank}.pt")
"""


SGD_SHARDS = [[0, 1, 2, 3, 4], [5, 6, 7]]  # training pairs of the extra SGD step, per rank


def single_process_reference(cfg: TrainConfig, updates: int) -> dict[str, torch.Tensor]:
    """One process, same init, each update on the union of the two ranks' batches."""
    data = prepare_data(cfg.data, Path(cfg.cache_dir))
    seed_everything(cfg.seed)
    arch = get_arch(cfg.arch)
    model = arch.build(cfg, data.tokenizer.vocab_size)
    loss_fn = arch.make_loss(cfg, data.tokenizer)
    optimizer = build_optimizer(model, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    scheduler = InverseSqrtSchedule(optimizer, cfg.lr, cfg.warmup_updates, cfg.warmup_init_lr)
    shards = []
    for rank in (0, 1):
        s = TokenBatchSampler(
            data.train.src_sizes, data.train.tgt_sizes, max_tokens=cfg.max_tokens,
            seed=cfg.seed, rank=rank, world_size=2,
        )  # fmt: skip
        shards.append(s.batches(0) + s.batches(1))
    for step in range(updates):
        indices = shards[0][step] + shards[1][step]
        batch = collate([data.train[i] for i in indices])
        train_step(model, optimizer, batch, loss_fn, update=step)
        scheduler.step_update(step + 1)
    return {k: v.detach() for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_two_process_training_equals_one_process_on_the_global_batch(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    dump = tmp_path / "params"
    dump.mkdir()
    run = tmp_path / "run"
    cfg = TrainConfig(
        run_dir=str(run), preset="tiny", criterion="axe", model={"dropout": 0.0},
        data=DataConfig(synthetic_size=120, synthetic_eval_size=16, vocab_size=120),
        max_tokens=300, warmup_updates=2, max_updates=4, validate_every=2, log_every=2,
        cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        "--master_port=0", "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0",
        str(worker), json.dumps(cfg.to_dict()), str(dump), json.dumps(SGD_SHARDS),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    p0 = torch.load(dump / "params_rank0.pt", weights_only=True)
    p1 = torch.load(dump / "params_rank1.pt", weights_only=True)
    assert p0.keys() == p1.keys()
    for k in p0:
        assert torch.equal(p0[k], p1[k]), k
    # rank 0 saved exactly these parameters, with the sharded sampler's state
    ckpt = load_checkpoint(run / "checkpoints" / "checkpoint_last.pt")
    assert ckpt["step"] == 4
    assert ckpt["sampler"]["world_size"] == 2
    for k in p0:
        assert torch.equal(ckpt["model"][k], p0[k]), k
    # one log line per event (rank 0 only): 2 train + 2 valid records
    lines = (run / "log.jsonl").read_text().splitlines()
    assert len(lines) == 4, lines
    assert not any(p.name.startswith("params") for p in Path(run).iterdir())
    # fairseq normalisation over ranks: the same parameters as one process on both shards.
    # Exception: attention *key* biases have zero gradient in exact arithmetic (a softmax is
    # unchanged by adding the same q.b_k to every score), so their gradients are rounding noise
    # that Adam scales up to +-lr steps; those entries only have to stay within Adam's bound.
    ref = single_process_reference(cfg, updates=4)
    lr_sum = sum(
        inverse_sqrt_lr(t, cfg.lr, cfg.warmup_updates, cfg.warmup_init_lr) for t in range(4)
    )
    for k in p0:
        noise = torch.zeros_like(p0[k], dtype=torch.bool)
        if k.endswith("self_attn.qkv.bias"):
            d = p0[k].numel() // 3
            noise[d : 2 * d] = True  # (q, k, v) biases
        elif k.endswith("cross_attn.kv.bias"):
            noise[: p0[k].numel() // 2] = True  # (k, v) biases
        diff = (p0[k] - ref[k]).abs()
        assert bool(torch.all(diff[~noise] <= 1e-6)), (k, float(diff.max()))
        assert bool(torch.all(diff[noise] <= 2 * lr_sum)), (k, float(diff.max()))
    init = single_process_reference(cfg, updates=0)
    assert max(float((p0[k] - init[k]).abs().max()) for k in p0) > 1e-3
    # Adam hides a wrong gradient *scale*; SGD(lr=1) shows the gradient itself: two ranks with
    # 5 and 3 sentences = one process with the 8 (sum of losses / total target tokens)
    s0 = torch.load(dump / "sgd_rank0.pt", weights_only=True)
    s1 = torch.load(dump / "sgd_rank1.pt", weights_only=True)
    data = prepare_data(cfg.data, Path(cfg.cache_dir))
    arch = get_arch("ar")
    model = arch.build(cfg, data.tokenizer.vocab_size)
    model.load_state_dict(p0)
    batch = collate([data.train[i] for i in SGD_SHARDS[0] + SGD_SHARDS[1]])
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    train_step(model, optimizer, batch, arch.make_loss(cfg, data.tokenizer))
    changed = 0.0
    for k, v in model.state_dict().items():
        assert torch.equal(s0[k], s1[k]), k
        assert torch.allclose(s0[k], v, rtol=0, atol=1e-6), (k, float((s0[k] - v).abs().max()))
        changed = max(changed, float((v - p0[k]).abs().max()))
    assert changed > 1e-3  # the gradient is far above the tolerance (a factor 2 would show)
