"""Data-parallel training under torchrun: two CPU processes (gloo) end with identical
parameters, and only rank 0 writes the run directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from latalign.translate.checkpoint import load_checkpoint


@pytest.mark.slow
def test_two_process_training_keeps_ranks_identical(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    dump = tmp_path / "params"
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LATALIGN_DUMP_PARAMS": str(dump)}
    torchrun = [sys.executable, "-m", "torch.distributed.run"]
    cmd = [
        *torchrun, "--nproc_per_node=2", "--master_port=0", "--rdzv-backend=c10d",
        "--rdzv-endpoint=localhost:0", "-m", "latalign.cli", "train", "--no-progress",
        "--run-dir", str(run), "--preset", "tiny", "--criterion", "axe",
        "--synthetic-size", "120", "--synthetic-eval-size", "16", "--vocab-size", "120",
        "--max-tokens", "300", "--warmup-updates", "2", "--max-updates", "4",
        "--validate-every", "2", "--log-every", "2", "--cache-dir", str(tmp_path / "cache"),
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
