"""Checkpoints: atomic writes, RNG round trip, exact resume (also after a real kill), refusal
to resume a different run, the last few kept, damaged files named and skipped on resume."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from latalign.io import atomic_write
from latalign.translate.checkpoint import (
    CheckpointError,
    load_checkpoint,
    numbered_checkpoints,
    rng_state,
    save_checkpoint,
    save_training_checkpoint,
    set_rng_state,
)
from latalign.translate.run import load_run
from latalign.translate.train import SetupError, train

pytestmark = pytest.mark.usefixtures("one_thread")


ONE_THREAD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_save_is_atomic_and_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "ckpt" / "c.pt"
    save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    assert load_checkpoint(path)["step"] == 1
    with pytest.raises(Exception):  # noqa: B017 - any pickling error
        save_checkpoint({"step": 2, "bad": lambda: None}, path)
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["c.pt"]  # no temp file left


def test_rng_state_round_trip():
    state = rng_state()
    first = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_rng_state(state)
    again = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    assert first == again
    # survives the checkpoint format (weights_only load)
    path_state = {"rng": state}
    import io

    buf = io.BytesIO()
    torch.save(path_state, buf)
    buf.seek(0)
    set_rng_state(torch.load(buf, weights_only=True)["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == first


def assert_same_params(a: Path, b: Path) -> None:
    sa, sb = load_checkpoint(a), load_checkpoint(b)
    assert sa["step"] == sb["step"]
    assert sa["sampler"] == sb["sampler"]
    assert sa["model"].keys() == sb["model"].keys()
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    ea, eb = sa["optimizer"]["state"], sb["optimizer"]["state"]
    for k in ea:
        assert torch.equal(ea[k]["exp_avg"], eb[k]["exp_avg"])


def test_resume_is_exact(tmp_path, tiny_config):
    # 7 updates straight vs 3 + resume to 7; the epoch (~5 batches) ends in between and
    # dropout is on (tiny preset: 0.1), so data position and RNG state both matter.
    full = train(tiny_config(tmp_path / "full", max_updates=7), progress=False)
    part = train(tiny_config(tmp_path / "part", max_updates=3), progress=False)
    assert part.step == 3 and part.stop_reason == "max_updates"
    resumed = train(tiny_config(tmp_path / "part", max_updates=7), progress=False)
    assert resumed.step == 7 and full.step == 7
    assert_same_params(full.last_checkpoint, resumed.last_checkpoint)
    # a different seed gives different parameters: the comparison above can fail
    other = train(tiny_config(tmp_path / "other", max_updates=7, seed=2), progress=False)
    sa, sb = load_checkpoint(full.last_checkpoint), load_checkpoint(other.last_checkpoint)
    assert not all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"])


def test_refuses_to_resume_a_different_run(tmp_path, tiny_config):
    run = tmp_path / "run"
    train(tiny_config(run, max_updates=1), progress=False)
    last = run / "checkpoints" / "checkpoint_last.pt"
    before = last.read_bytes()
    with pytest.raises(SetupError, match="lr"):
        train(tiny_config(run, max_updates=2, lr=1e-3), progress=False)
    with pytest.raises(SetupError, match="criterion"):
        train(tiny_config(run, max_updates=2, criterion="axe"), progress=False)
    with pytest.raises(SetupError, match="resume disabled"):
        train(tiny_config(run, max_updates=2), progress=False, resume=False)
    assert last.read_bytes() == before
    with pytest.raises(SetupError, match="to resume from"):
        train(tiny_config(tmp_path / "empty", max_updates=1), progress=False, resume=True)


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path, cache, tiny_config):
    """Kill a training process mid-run (SIGKILL), resume it, compare with a straight run."""
    args = [
        sys.executable, "-m", "latalign.cli", "train", "--no-progress",
        "--preset", "tiny", "--synthetic-size", "120", "--synthetic-eval-size", "16",
        "--vocab-size", "120", "--max-tokens", "300", "--warmup-updates", "4",
        "--validate-every", "2", "--log-every", "1000", "--cache-dir", str(cache),
    ]  # fmt: skip
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [*args, "--run-dir", str(killed), "--max-updates", "1000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ONE_THREAD_ENV,
    )
    last = killed / "checkpoints" / "checkpoint_last.pt"
    deadline = time.monotonic() + 120
    try:
        while not last.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert last.exists(), "no checkpoint written before the deadline"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    saved = load_checkpoint(last)["step"]
    target = saved + 3
    subprocess.run([*args, "--run-dir", str(killed), "--max-updates", str(target)], check=True,
                   stdout=subprocess.DEVNULL, env=ONE_THREAD_ENV)  # fmt: skip
    straight = train(
        tiny_config(tmp_path / "straight", max_updates=target, validate_every=2),
        progress=False,
    )
    assert_same_params(straight.last_checkpoint, last)


# ------------------------------------------------------------------ damaged files, rotation


def truncate(path: Path, keep: float = 0.5) -> None:
    """Cut ``path`` short, as a full disk or an interrupted copy would."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_rotation_keeps_the_newest_numbered_checkpoints(tmp_path):
    run = tmp_path / "run"
    for step in range(1, 6):
        save_training_checkpoint(
            {"step": step, "w": torch.full((2,), float(step))}, run, best=step == 2, keep=2
        )
    folder = run / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == [
        "checkpoint_4.pt", "checkpoint_5.pt", "checkpoint_best.pt", "checkpoint_last.pt"
    ]  # fmt: skip
    assert load_checkpoint(folder / "checkpoint_last.pt")["step"] == 5
    assert load_checkpoint(folder / "checkpoint_best.pt")["step"] == 2
    assert [s for s, _ in numbered_checkpoints(run)] == [5, 4]


def test_damaged_checkpoint_is_a_one_line_error_naming_the_file(tmp_path, tiny_config):
    res = train(tiny_config(tmp_path / "run", max_updates=1), progress=False)
    best = res.best_checkpoint
    truncate(best)
    for load in (lambda: load_checkpoint(best), lambda: load_run(tmp_path / "run")):
        with pytest.raises(CheckpointError) as info:
            load()
        msg = str(info.value)
        assert str(best) in msg and "truncated" in msg and "\n" not in msg
    # the CLI: exit status 2, one line, before any decoding
    src = tmp_path / "in.txt"
    src.write_text("a b c\n")
    proc = subprocess.run(
        [sys.executable, "-m", "latalign.cli", "translate", "--run-dir", str(tmp_path / "run"),
         "--input", str(src), "--device", "cpu"],
        capture_output=True, text=True, env=ONE_THREAD_ENV,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "checkpoint_best.pt" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_resume_skips_damaged_checkpoints_and_says_which(tmp_path, tiny_config, caplog):
    """A truncated checkpoint_last.pt: resume from checkpoint_5.pt (the same update) and say
    so; then checkpoint_last.pt and checkpoint_6.pt truncated: resume from checkpoint_5.pt,
    one update back. The run still ends exactly where a straight run ends."""
    straight = train(tiny_config(tmp_path / "straight", max_updates=7), progress=False)
    part = train(tiny_config(tmp_path / "part", max_updates=5, validate_every=1), progress=False)
    folder = tmp_path / "part" / "checkpoints"
    assert sorted(p.name for p in folder.glob("checkpoint_[0-9]*.pt")) == [
        "checkpoint_3.pt", "checkpoint_4.pt", "checkpoint_5.pt"
    ]  # keep_checkpoints = 3 by default  # fmt: skip
    assert part.step == 5
    truncate(folder / "checkpoint_last.pt")
    with caplog.at_level(logging.WARNING, logger="latalign.translate.checkpoint"):
        resumed = train(
            tiny_config(tmp_path / "part", max_updates=6, validate_every=1), progress=False
        )
    assert resumed.resumed_from == folder / "checkpoint_5.pt" and resumed.step == 6
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "checkpoint_last.pt" in warning and "checkpoint_5.pt" in warning
    caplog.clear()
    truncate(folder / "checkpoint_last.pt")
    truncate(folder / "checkpoint_6.pt", keep=0.9)
    with caplog.at_level(logging.WARNING, logger="latalign.translate.checkpoint"):
        resumed = train(
            tiny_config(tmp_path / "part", max_updates=7, validate_every=1), progress=False
        )
    assert resumed.resumed_from == folder / "checkpoint_5.pt"
    warning = " ".join(r.getMessage() for r in caplog.records)
    for name in ("checkpoint_last.pt", "checkpoint_6.pt", "checkpoint_5.pt"):
        assert name in warning
    assert resumed.step == 7
    assert_same_params(straight.last_checkpoint, resumed.last_checkpoint)


def test_resume_refuses_when_every_checkpoint_is_damaged(tmp_path, tiny_config):
    run = tmp_path / "run"
    train(tiny_config(run, max_updates=2, validate_every=1), progress=False)
    for p in (run / "checkpoints").iterdir():
        truncate(p)
    before = {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}
    with pytest.raises(SetupError, match="truncated"):
        train(tiny_config(run, max_updates=3, validate_every=1), progress=False)
    assert {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()} == before


def test_atomic_write_all_or_nothing(tmp_path):
    path = tmp_path / "sub" / "f.txt"
    atomic_write(path, "héllo")
    assert path.read_text(encoding="utf-8") == "héllo"
    atomic_write(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"

    def fail(f):
        f.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fail)
    assert path.read_bytes() == b"\x00\x01"
    assert [p.name for p in path.parent.iterdir()] == ["f.txt"]  # no temporary file left
    mask = os.umask(0o022)
    try:
        atomic_write(path, lambda f: f.write(b"x"))
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644
