"""A real process group with one rank (``LATALIGN_FORCE_DDP=1``): gloo on the CPU, the model
wrapped in DDP, the all-reduces run; the run equals the plain one (issue 16, item 6)."""

from __future__ import annotations

import pytest
import torch
from torch.nn.parallel import DistributedDataParallel

import latalign.translate.train as train_module
from latalign.translate.distributed import (
    FORCE_DDP_ENV,
    force_ddp_requested,
    init_distributed,
    loss_scale,
    shutdown_distributed,
)
from latalign.translate.train import train

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed"),
]


def test_forced_group_with_one_rank(monkeypatch, capsys):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", FORCE_DDP_ENV):
        monkeypatch.delenv(name, raising=False)
    plain = init_distributed("cpu")
    assert not plain.distributed and not torch.distributed.is_initialized()
    dist = init_distributed("cpu", force=True)
    try:
        assert dist.distributed and dist.world_size == 1 and dist.owns_group
        assert torch.distributed.get_backend() == "gloo"
        assert "distributed: backend=gloo world_size=1" in capsys.readouterr().err
        scale, total = loss_scale(torch.tensor(7), dist)  # through the all-reduce
        assert isinstance(scale, torch.Tensor) and float(total) == 7.0 and float(scale) == 1 / 7
    finally:
        shutdown_distributed(dist)
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize("value, expected", [("1", True), ("0", False), ("", False)])
def test_the_environment_variable(monkeypatch, value, expected):
    monkeypatch.setenv(FORCE_DDP_ENV, value)
    assert force_ddp_requested() is expected


def test_a_bad_environment_value_is_a_value_error(monkeypatch):
    monkeypatch.setenv(FORCE_DDP_ENV, "maybe")
    with pytest.raises(ValueError, match=FORCE_DDP_ENV):
        force_ddp_requested()


def test_forced_ddp_trains_as_the_plain_run(tmp_path, tiny_config, monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    wrapped = []
    wrap = train_module.wrap_ddp

    def spy(model, dist):
        out = wrap(model, dist)
        wrapped.append(isinstance(out, DistributedDataParallel))
        return out

    monkeypatch.setattr(train_module, "wrap_ddp", spy)
    results = {}
    for forced in ("0", "1"):
        monkeypatch.setenv(FORCE_DDP_ENV, forced)
        cfg = tiny_config(
            tmp_path / f"forced{forced}", criterion="axe", max_updates=4, log_every=2,
            validate_every=4, clip_norm=1.0,
        )  # fmt: skip
        results[forced] = train(cfg, progress=False)
        assert not torch.distributed.is_initialized()  # the in-process group was ended
    assert wrapped == [False, True]
    plain, ddp = results["0"], results["1"]
    assert ddp.step == plain.step == 4
    for a, b in zip(plain.history, ddp.history):
        assert a["kind"] == b["kind"] and a["step"] == b["step"]
        for key in ("train_loss", "valid_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-7)
    for p, q in zip(plain.model.parameters(), ddp.model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
