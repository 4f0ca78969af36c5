"""The ``latalign`` console script: help texts, one-line usage errors (exit 2), and a tiny
train -> translate -> evaluate round trip."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from latalign.cli import COMMANDS, build_parser, main, train_config_from_args

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


TINY = [
    "--preset", "tiny", "--synthetic-size", "120", "--synthetic-eval-size", "16",
    "--vocab-size", "120", "--max-tokens", "300", "--warmup-updates", "2",
    "--validate-every", "1000", "--log-every", "1000", "--no-progress",
]  # fmt: skip


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_every_option_has_help():
    subs = subparsers(build_parser())
    assert set(subs) == set(COMMANDS) >= {"train", "translate", "evaluate"}
    for name, sub in subs.items():
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings} has no help text"


def test_train_options_override_config_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('criterion = "axe"\nlr = 0.001\n[data]\nsynthetic_size = 99\n')
    args = build_parser().parse_args(
        ["train", "--config", str(path), "--lr", "0.002", "--operators", "align,delimiter",
         "--criterion", "latent", "--causal", "--betas", "0.8,0.9", "--model", "dropout=0.0",
         "--train-limit", "none", "--run-dir", str(tmp_path / "r")]
    )  # fmt: skip
    cfg = train_config_from_args(args)
    assert (cfg.criterion, cfg.lr, cfg.causal, cfg.betas) == ("latent", 0.002, True, (0.8, 0.9))
    assert cfg.operators == ("align", "delimiter")
    assert cfg.model == {"dropout": 0.0}
    assert cfg.data.synthetic_size == 99 and cfg.data.train_limit is None


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--criterion", "nope"], "expected a criterion"),
        (["train", "--preset", "huge"], "expected a preset"),
        (["train", "--data", "/no/such/dir"], "data directory"),
        (["train", "--config", "/no/such.toml"], "config file"),
        (["translate", "--run-dir", "/no/such/run"], "checkpoint"),
        (["evaluate", "--checkpoint", "/no/such.pt"], "checkpoint"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys, tmp_path):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert err.startswith(f"latalign {argv[0]}: error:")


def test_console_script_exit_status_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "latalign.cli", "train", "--criterion", "nope",
         "--run-dir", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "expected a criterion" in proc.stderr
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    run = root / "run"
    argv = ["train", *TINY, "--max-updates", "3", "--run-dir", str(run),
            "--cache-dir", str(root / "cache")]  # fmt: skip
    assert main(argv) == 0
    return run


def test_train_prints_summary_and_refuses_other_run(trained_run, capsys):
    assert (trained_run / "checkpoints" / "checkpoint_last.pt").is_file()
    argv = ["train", *TINY, "--max-updates", "4", "--lr", "0.1", "--run-dir", str(trained_run),
            "--cache-dir", str(trained_run.parent / "cache")]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


def test_translate_stdin_and_file(trained_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("a b c\nd e\n"))
    assert main(["translate", "--run-dir", str(trained_run), "--greedy", "--max-len-b", "3"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 2
    src = tmp_path / "in.txt"
    src.write_text("x y\n")
    dest = tmp_path / "out.txt"
    ckpt = trained_run / "checkpoints" / "checkpoint_last.pt"
    assert main(["translate", "--checkpoint", str(ckpt), "--input", str(src),
                 "--output", str(dest), "--beam", "2", "--max-len-b", "3"]) == 0  # fmt: skip
    assert len(dest.read_text().splitlines()) == 1


def test_evaluate_json(trained_run, capsys):
    capsys.readouterr()
    assert main(["evaluate", "--run-dir", str(trained_run), "--split", "valid", "--limit", "4",
                 "--greedy", "--max-len-b", "3", "--json"]) == 0  # fmt: skip
    scores = json.loads(capsys.readouterr().out)
    assert scores["sentences"] == 4 and scores["split"] == "valid"
    for key in ("bleu", "bleu_signature", "chrf", "empty_share", "length_ratio"):
        assert key in scores
    assert 0.0 <= scores["empty_share"] <= 1.0
    assert scores["int8"] is False


def test_evaluate_and_translate_int8(trained_run, capsys):
    from latalign.translate.quantize import int8_available

    if not int8_available():
        pytest.skip("no fbgemm int8 kernels in this torch build")
    capsys.readouterr()
    assert main(["evaluate", "--run-dir", str(trained_run), "--split", "valid", "--limit", "4",
                 "--beam", "2", "--max-len-b", "3", "--json", "--int8"]) == 0  # fmt: skip
    scores = json.loads(capsys.readouterr().out)
    assert scores["int8"] is True and scores["sentences"] == 4
    argv = ["translate", "--run-dir", str(trained_run), "--int8", "--device", "cuda"]
    assert main(argv) == 2
    assert "--int8" in capsys.readouterr().err


def test_int8_without_kernels_is_a_usage_error(trained_run, capsys, monkeypatch):
    import latalign.translate.quantize as quantize

    monkeypatch.setattr(quantize, "int8_available", lambda: False)
    capsys.readouterr()
    assert main(["translate", "--run-dir", str(trained_run), "--int8"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "quantized kernels" in err


def test_help_runs_as_module():
    proc = subprocess.run(
        [sys.executable, "-m", "latalign.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "evaluate" in proc.stdout
