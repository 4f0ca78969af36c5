"""Sequence-level distillation: line-aligned output, resume after a kill, refusals."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
import torch

import latalign.translate.decode as decode_mod
from latalign.cli import main as cli_main
from latalign.translate.data import DataConfig
from latalign.translate.decode import SearchOptions
from latalign.translate.distill import WORK_DIR, distill
from latalign.translate.run import TrainedRun, load_run
from latalign.translate.synthetic import write_synthetic
from latalign.translate.train import TrainConfig, train

TINY = dict(encoder_layers=1, decoder_layers=1, d_model=32, ffn_dim=64, heads=2, dropout=0.0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An AR run (a few updates: its translations only need to be deterministic), a NAT run,
    and a synthetic data directory with gzip files (40 training pairs)."""
    import numba

    threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    root = tmp_path_factory.mktemp("distill")
    data = write_synthetic(root / "data", 40, 8, 8, seed=3, compress=True)
    common: dict[str, Any] = dict(
        data=DataConfig(synthetic_size=60, synthetic_eval_size=8, vocab_size=100),
        preset="tiny", model=dict(TINY), max_tokens=400, warmup_updates=2, max_updates=3,
        validate_every=1000, log_every=1000, cache_dir=str(root / "cache"), device="cpu",
    )  # fmt: skip
    train(TrainConfig(run_dir=str(root / "ar"), **common), progress=False)
    train(TrainConfig(run_dir=str(root / "nat"), arch="nat", criterion="ctc", **common),
          progress=False)  # fmt: skip
    yield {"root": root, "data": data, "ar": root / "ar", "nat": root / "nat", "common": common}
    torch.set_num_threads(threads)
    numba.set_num_threads(numba_threads)


BEAM2 = SearchOptions(beam=2, device="cpu")


def _lines(path: Path) -> list[str]:
    return gzip.decompress(path.read_bytes()).decode().splitlines()


def test_distill_writes_a_line_aligned_data_dir(setup: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "kd"
    result = distill(setup["ar"], setup["data"], out, chunk_size=16, options=BEAM2)
    data = setup["data"]
    assert result.lines == 40 and not result.reused
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [p.name for p in data.iterdir()] + ["distill.json"]
    )
    hyps = _lines(out / "train.en.gz")
    assert len(hyps) == len(_lines(data / "train.syn.gz")) == 40
    for name in ("train.syn.gz", "valid.syn.gz", "valid.en.gz", "test.syn.gz", "test.en.gz"):
        assert (out / name).read_bytes() == (data / name).read_bytes()
    # line i is the model's translation of source line i
    run = load_run(setup["ar"])
    model, tok = run.model, run.tokenizer
    src = _lines(data / "train.syn.gz")
    idx = [0, 17, 39]
    direct = decode_mod.translate_sentences(model, tok, [src[i] for i in idx], beam=2)
    assert [hyps[i] for i in idx] == [" ".join(h.split()) for h in direct]
    assert not (out / WORK_DIR).exists()
    # a second call finds the finished distillation and does nothing
    assert distill(setup["ar"], setup["data"], out, chunk_size=16, options=BEAM2).reused


def test_distill_resumes_after_a_kill(
    setup: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = TrainedRun.translate
    calls: list[int] = []

    def dies_on_second_chunk(run: Any, lines: list[str], *a: Any, **kw: Any) -> list[str]:
        calls.append(len(lines))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the kill, in the middle of chunk 2
        return real(run, lines, *a, **kw)

    monkeypatch.setattr(TrainedRun, "translate", dies_on_second_chunk)
    out = tmp_path / "kd"
    with pytest.raises(KeyboardInterrupt):
        distill(setup["ar"], setup["data"], out, chunk_size=16, options=BEAM2)
    assert sorted(p.name for p in out.iterdir()) == [WORK_DIR]  # nothing final yet
    work = sorted(p.name for p in (out / WORK_DIR).iterdir())
    assert work == ["chunk-00000.txt", "progress.json"]
    assert json.loads((out / WORK_DIR / "progress.json").read_text())["done"] == 1

    calls.clear()
    monkeypatch.setattr(TrainedRun, "translate", lambda *a, **k: (calls.append(1), real(*a, **k))[1])  # fmt: skip
    result = distill(setup["ar"], setup["data"], out, chunk_size=16, options=BEAM2)
    assert result.chunks_reused == 1 and len(calls) == 2  # chunks 2 and 3 only
    fresh = distill(setup["ar"], setup["data"], tmp_path / "fresh", chunk_size=16, options=BEAM2)
    assert fresh.chunks_reused == 0
    assert (out / "train.en.gz").read_bytes() == (tmp_path / "fresh" / "train.en.gz").read_bytes()


def test_distill_refusals(setup: dict[str, Path], tmp_path: Path, capsys: Any) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me\n")
    base = ["distill", "--run-dir", str(setup["ar"]), "--data", str(setup["data"])]
    assert cli_main([*base, "--out", str(other)]) == 2
    err = capsys.readouterr().err
    assert "expected an empty output directory" in err and err.count("\n") == 1
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    assert (other / "notes.txt").read_text() == "keep me\n"

    # an AR run directory refuses a NAT training run (the reverse is in test_nat.py)
    ckpts = sorted(p.name for p in (setup["ar"] / "checkpoints").iterdir())
    code = cli_main(["train", "--run-dir", str(setup["ar"]), "--arch", "nat", "--criterion",
                     "ctc", "--preset", "tiny", "--max-updates", "1", "--device", "cpu"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "arch" in err and err.count("\n") == 1
    assert sorted(p.name for p in (setup["ar"] / "checkpoints").iterdir()) == ckpts
    # a NAT run is not a teacher
    code = cli_main(["distill", "--run-dir", str(setup["nat"]), "--data", str(setup["data"]),
                     "--out", str(tmp_path / "n")])  # fmt: skip
    assert code == 2 and "autoregressive" in capsys.readouterr().err
    assert not (tmp_path / "n").exists()
    # a missing data directory, a bad beam
    assert (
        cli_main([*base[:3], "--data", str(tmp_path / "none"), "--out", str(tmp_path / "m")]) == 2
    )
    assert "data directory" in capsys.readouterr().err
    assert cli_main([*base, "--out", str(tmp_path / "b"), "--beam", "0"]) == 2
    assert "beam >= 1" in capsys.readouterr().err
    assert cli_main([*base, "--out", str(tmp_path / "b"), "--chunk-size", "0"]) == 2
    assert "chunk_size >= 1" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    # an interrupted distillation of another setting is not resumed into
    out = tmp_path / "kd"
    assert cli_main([*base, "--out", str(out), "--beam", "2", "--chunk-size", "16"]) == 0
    assert json.loads(capsys.readouterr().out)["lines"] == 40
    assert cli_main([*base, "--out", str(out), "--beam", "3"]) == 2
    assert "another distillation" in capsys.readouterr().err


def test_training_on_the_distilled_data(setup: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "kd"
    distill(setup["ar"], setup["data"], out, chunk_size=64, options=BEAM2)
    cfg = TrainConfig(
        run_dir=str(tmp_path / "student"), arch="nat", criterion="ctc", preset="tiny",
        model=dict(TINY), data=DataConfig(data=str(out), src="syn", tgt="en", vocab_size=100),
        max_tokens=400, warmup_updates=2, max_updates=2, validate_every=1000, log_every=1000,
        cache_dir=str(setup["root"] / "cache"), device="cpu",
    )  # fmt: skip
    result = train(cfg, progress=False)
    assert result.step == 2 and result.final["valid_nsentences"] == 8


#: every regime and arch that decodes autoregressively (the TrainConfig fields that select it)
AUTOREGRESSIVE = {
    "teacher_forcing": {},
    "scheduled_sampling": {"regime": "scheduled_sampling", "regime_p": 0.5, "schedule_updates": 4},
    "free_running": {"regime": "free_running"},
    "corruption": {"regime": "corruption", "regime_p": 0.3},
    "delayed": {"regime": "delayed", "delay": 2},
    "doubled": {"regime": "doubled", "criterion": "doubled_ctc"},
    "ar_aux_ctc": {"arch": "ar_aux_ctc", "upsample": 2},
}


@pytest.mark.parametrize("name", list(AUTOREGRESSIVE))
def test_distill_equals_latalign_translate_for_every_autoregressive_run(
    setup: dict[str, Path], tmp_path: Path, capsys: Any, name: str
) -> None:
    """``latalign distill`` writes what ``latalign translate`` gives for the same run, sources
    and flags (the delayed run was once distilled with plain beam search, and ``ar_aux_ctc``
    refused); for the regimes that decode differently, plain beam search of the raw model
    gives other lines, so the comparison can fail."""
    common = {**setup["common"], "max_updates": 20}
    run_dir = tmp_path / name
    train(TrainConfig(run_dir=str(run_dir), **common, **AUTOREGRESSIVE[name]), progress=False)
    flags = ["--beam", "2", "--device", "cpu"]
    out = tmp_path / "kd"
    assert cli_main(["distill", "--run-dir", str(run_dir), "--data", str(setup["data"]),
                     "--out", str(out), "--limit", "12", *flags]) == 0  # fmt: skip
    capsys.readouterr()
    distilled = _lines(out / "train.en.gz")
    sources = _lines(setup["data"] / "train.syn.gz")[:12]
    src_file = tmp_path / "src.txt"
    src_file.write_text("".join(s + "\n" for s in sources))
    hyps = tmp_path / "hyps.txt"
    assert cli_main(["translate", "--run-dir", str(run_dir), "--input", str(src_file),
                     "--output", str(hyps), *flags]) == 0  # fmt: skip
    translated = [" ".join(h.split()) for h in hyps.read_text().splitlines()]
    assert len(distilled) == 12 and distilled == translated
    if name in ("delayed", "doubled"):
        run = load_run(run_dir)
        plain = decode_mod.translate_sentences(run.model, run.tokenizer, sources, beam=2)
        assert [" ".join(h.split()) for h in plain] != distilled
