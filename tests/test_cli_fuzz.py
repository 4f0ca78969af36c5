"""Bad input to every part of the ``latalign`` command line: flags, data files, run
directories and standard input.

Each case runs the CLI in-process (``latalign.cli.main(argv)``) and asserts what a user is
promised: exit status 2 (or 0 where the input is valid), one ``latalign …: error: …`` line on
stderr, never a traceback, and every file already in the run directory unchanged (hashed
before and after). A couple of cases go through a real subprocess and real standard input.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latalign.cli import main

MAX_POSITIONS = 32  # the test model's positions: over-long lines are cheap to make
TINY = [
    "--preset", "tiny", "--synthetic-size", "120", "--synthetic-eval-size", "8",
    "--vocab-size", "120", "--max-tokens", "300", "--warmup-updates", "2",
    "--validate-every", "1000", "--log-every", "1000", "--no-progress", "--device", "cpu",
    "--max-positions", str(MAX_POSITIONS), "--model", f"max_positions={MAX_POSITIONS}",
]  # fmt: skip
FAST = ["--greedy", "--max-len-a", "0", "--max-len-b", "2"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, Path]:
    """A trained run plus damaged copies and bad data/input files, by name."""
    root = tmp_path_factory.mktemp("fuzz")
    run = root / "run"
    cache = root / "cache"
    argv = ["train", *TINY, "--max-updates", "2", "--run-dir", str(run), "--cache-dir", str(cache)]
    assert main(argv) == 0
    best = (run / "checkpoints" / "checkpoint_best.pt").read_bytes()
    paths = {"root": root, "run": run, "cache": cache}

    def put(name: str, data: bytes) -> Path:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths[name] = path
        return path

    put("truncated/checkpoints/checkpoint_best.pt", best[: len(best) // 2])
    put("junk/checkpoints/checkpoint_best.pt", b"not a checkpoint\n")
    buf = io.BytesIO()
    torch.save({"step": 3}, buf)
    put("foreign/checkpoints/checkpoint_best.pt", buf.getvalue())
    (root / "empty_run").mkdir()
    paths["empty_run"] = root / "empty_run"
    put("a_file", b"hello\n")
    put("empty.txt", b"")
    put("two.txt", b"ein Hund\nzwei Katzen\n")
    put("three.txt", b"a\nb\nc\n")
    put("binary.bin", bytes(range(256)) * 4)
    put("latin1.txt", "caf\xe9\nna\xefve\n".encode("latin-1"))
    # data directories for train
    for name, files in {
        "data_unequal": {"train.de": b"a\nb\n", "train.en": b"a\n"},
        "data_empty": {"train.de": b"", "train.en": b""},
        "data_binary": {"train.de": bytes(range(256)), "train.en": bytes(range(256))},
    }.items():
        for split in ("train", "valid", "test"):
            for lang in ("de", "en"):
                put(f"{name}/{split}.{lang}", files.get(f"train.{lang}", b"x\n"))
        paths[name] = root / name
    (root / "data_none").mkdir()
    paths["data_none"] = root / "data_none"
    put("bad.toml", b"lr = [unclosed\n")
    put("binary.toml", bytes(range(256)))
    return paths


def fill(argv: list[str], env: dict[str, Path]) -> list[str]:
    return [a.format(**{k.replace("/", "_").replace(".", "_"): v for k, v in env.items()})
            for a in argv]  # fmt: skip


def tree_hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run_cli(argv, env, capsys, monkeypatch, stdin: bytes = b"") -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    before = tree_hashes(env["run"])
    capsys.readouterr()
    status = main(fill(argv, env))
    out, err = capsys.readouterr()
    assert tree_hashes(env["run"]) == before, "the run directory changed"
    assert "Traceback" not in err
    return status, out, err


def assert_one_error_line(err: str, command: str, message: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("latalign") and "error:" in lines[0], err
    assert command in lines[0] and message in lines[0], err


RUN = ["--run-dir", "{run}"]
BAD = [
    # ---- decoding flags
    (["translate", *RUN, "--beam", "0"], "--beam >= 1"),
    (["translate", *RUN, "--beam", "-3"], "--beam >= 1"),
    (["translate", *RUN, "--beam", "nan"], "--beam"),
    (["translate", *RUN, "--beam", "2.5"], "--beam"),
    (["translate", *RUN, "--lenpen", "nan"], "finite"),
    (["translate", *RUN, "--lenpen=-inf"], "finite"),
    (["translate", *RUN, "--max-len-a=-1"], "--max-len-a >= 0"),
    (["translate", *RUN, "--max-len-a", "inf"], "finite"),
    (["translate", *RUN, "--max-len-b", "x"], "--max-len-b"),
    (["translate", *RUN, "--batch-size", "0"], "--batch-size >= 1"),
    (["translate", *RUN, "--batch-size", "-1"], "--batch-size >= 1"),
    (["translate", *RUN, "--device", "tpu"], "expected device auto, cpu, cuda"),
    (["translate", *RUN, "--device", ""], "expected device auto, cpu, cuda"),
    (["translate", *RUN, "--device", "cuda:99"], "CUDA device"),
    (["translate", *RUN, "--bogus"], "unrecognized"),
    (["translate"], "required"),
    (["translate", *RUN, "--checkpoint", "{a_file}"], "not allowed"),
    (["translate", *RUN, "--input", "{root}/missing.txt"], "input file"),
    (["translate", *RUN, "--input", "{root}"], "input file"),
    (["translate", *RUN, "--output", "{root}/no/such/out.txt"], "--output"),
    (["translate", *RUN, "--output", "{root}"], "--output"),
    (["evaluate", *RUN, "--beam", "0"], "--beam >= 1"),
    (["evaluate", *RUN, "--device", "gpu"], "expected device"),
    # ---- evaluate's files and split
    (["evaluate", *RUN, "--split", "dev"], "invalid choice"),
    (["evaluate", *RUN, "--limit", "0"], "--limit >= 1"),
    (["evaluate", *RUN, "--limit", "-2"], "--limit >= 1"),
    (["evaluate", *RUN, "--limit", "many"], "--limit"),
    (["evaluate", *RUN, "--source", "{two_txt}"], "both --source and --reference"),
    (["evaluate", *RUN, "--reference", "{two_txt}"], "both --source and --reference"),
    (["evaluate", *RUN, "--source", "{root}/no.txt", "--reference", "{two_txt}"], "no.txt"),
    (["evaluate", *RUN, "--source", "{two_txt}", "--reference", "{three_txt}"], "as many"),
    (["evaluate", *RUN, "--source", "{empty_txt}", "--reference", "{empty_txt}"], "at least one"),
    (["evaluate", *RUN, "--source", "{two_txt}", "--reference", "{binary_bin}"], "UTF-8"),
    (["evaluate", *RUN, "--source", "{latin1_txt}", "--reference", "{latin1_txt}"], "UTF-8"),
    # ---- run directories and checkpoints
    (["translate", "--run-dir", "{root}/missing_run"], "run directory"),
    (["translate", "--run-dir", "{empty_run}"], "found neither"),
    (["translate", "--run-dir", "{a_file}"], "found a file"),
    (["evaluate", "--run-dir", "{a_file}"], "found a file"),
    (["translate", "--checkpoint", "{root}"], "found a directory"),
    (["translate", "--checkpoint", "{root}/missing.pt"], "checkpoint"),
    (["translate", "--run-dir", "{root}/truncated"], "checkpoint_best.pt"),
    (["evaluate", "--run-dir", "{root}/truncated"], "checkpoint_best.pt"),
    (["translate", "--checkpoint", "{truncated_checkpoints_checkpoint_best_pt}"], "damaged"),
    (["translate", "--run-dir", "{root}/junk"], "damaged"),
    (["translate", "--run-dir", "{root}/foreign"], "damaged"),
    (["translate", "--checkpoint", "{a_file}"], "damaged"),
    # ---- train: flags, config files and data directories (all refused before any work,
    # here against the trained run's own directory, whose files must stay as they are)
    (["train", *RUN, "--lr", "nan"], "finite"),
    (["train", *RUN, "--lr", "x"], "--lr"),
    (["train", *RUN, "--betas", "0.9,nan"], "finite"),
    (["train", *RUN, "--betas", "a,b"], "--betas"),
    (["train", *RUN, "--criterion", "nope"], "expected a criterion"),
    (["train", *RUN, "--criterion", "latent", "--operators", "delimiter,clone_target"], "'align'"),
    (["train", *RUN, "--preset", "huge"], "expected a preset"),
    (["train", *RUN, "--model", "junk"], "KEY=VALUE"),
    (["train", *RUN, "--config", "{root}/missing.toml"], "config file"),
    (["train", *RUN, "--data", "{root}/missing_data"], "data directory"),
    (["train", *RUN, "--data", "{a_file}"], "data directory"),
    (["train", *RUN, "--synthetic-size", "0"], "synthetic_size"),
    (["train", *RUN, "--vocab-size", "3"], "vocab_size"),
    (["train", *RUN, "--train-limit", "0"], "train_limit"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_exit_2(argv, message, env, capsys, monkeypatch):
    # stdin that would warn (bad bytes, an over-long line): the refusal is still the only line
    stdin = b"ein Hund\n\xff\n" + b"a " * (4 * MAX_POSITIONS) + b"\n"
    status, out, err = run_cli(argv, env, capsys, monkeypatch, stdin=stdin)
    assert status == 2, (status, err)
    assert_one_error_line(err, argv[0], message)
    assert out == ""


# train cases whose refusal comes from the trainer (config readers, data checks, the run
# directory check): exit 2, no traceback, the run untouched; the wording is the trainer's
TRAIN_BAD = [
    ["train", *RUN, "--config", "{bad_toml}"],
    ["train", *RUN, "--config", "{binary_toml}"],
    ["train", *RUN, "--max-updates", "-5"],
    ["train", *RUN, "--operators", "align,,bogus", "--criterion", "latent"],
    ["train", *RUN, "--model", "max_positions=-1"],
    ["train", *RUN, "--device", "tpu"],
    ["train", *RUN, "--data", "{data_none}", "--cache-dir", "{cache}"],
    ["train", *RUN, "--data", "{data_unequal}", "--cache-dir", "{cache}"],
    ["train", *RUN, "--data", "{data_empty}", "--cache-dir", "{cache}"],
    ["train", *RUN, "--data", "{data_binary}", "--cache-dir", "{cache}"],
    ["train", *TINY, *RUN, "--max-updates", "4", "--lr", "0.1", "--cache-dir", "{cache}"],
]


@pytest.mark.parametrize("argv", TRAIN_BAD, ids=[" ".join(a) for a in TRAIN_BAD])
def test_bad_train_input_exit_2(argv, env, capsys, monkeypatch):
    status, out, err = run_cli(argv, env, capsys, monkeypatch)
    assert status == 2, (status, err)
    error_lines = [line for line in err.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and error_lines[0].startswith("latalign train: error:"), err


def n_lines(data: bytes) -> int:
    """Lines as a line-oriented tool counts them: a last line without newline counts."""
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def _translate(env, capsys, monkeypatch, stdin: bytes, *extra: str) -> tuple[list[str], str]:
    status, out, err = run_cli(["translate", *RUN, *FAST, *extra], env, capsys, monkeypatch, stdin)
    assert status == 0, err
    return out.split("\n")[:-1] if out else [], err


def test_stdin_edge_cases_translate_line_by_line(env, capsys, monkeypatch):
    out, err = _translate(env, capsys, monkeypatch, b"")
    assert out == [] and err == ""
    out, err = _translate(env, capsys, monkeypatch, b"\n\n\n")
    assert len(out) == 3 and err == ""
    # \r\n line ends, a NUL byte, U+2028 (a line separator to str.splitlines) and no final
    # newline: still one output line per input line
    out, err = _translate(env, capsys, monkeypatch, "a\r\nb\x00c\nd\u2028e\nlast".encode())
    assert len(out) == 4 and err == ""


def test_binary_stdin_and_long_lines_warn_and_keep_lines_aligned(env, capsys, monkeypatch):
    good = ["ein Hund", "zwei Katzen"]
    alone, _ = _translate(env, capsys, monkeypatch, "\n".join(good).encode() + b"\n")
    long_line = " ".join(["a"] * (4 * MAX_POSITIONS))
    data = b"ein Hund\n\xff\xfeA\xc3\n" + long_line.encode() + b"\nzwei Katzen\n\x80\n"
    out, err = _translate(env, capsys, monkeypatch, data)
    assert len(out) == 5
    assert [out[0], out[3]] == alone  # the other lines are translated as if alone
    lines = err.strip().splitlines()
    assert len(lines) == 2, err
    assert "warning" in lines[0] and "lines 2, 5" in lines[0] and "U+FFFD" in lines[0]
    assert "warning" in lines[1] and "line 3:" in lines[1] and f"{MAX_POSITIONS}" in lines[1]
    replaced, _ = _translate(env, capsys, monkeypatch, "\ufffd\ufffdA\ufffd\n".encode())
    assert out[1] == replaced[0]  # the replacement characters are what got translated
    # a file given with --input behaves the same
    status, _, file_err = run_cli(
        ["translate", *RUN, *FAST, "--input", "{binary_bin}", "--output", "{root}/o.txt"],
        env, capsys, monkeypatch,
    )  # fmt: skip
    assert status == 0 and "U+FFFD" in file_err
    written = (env["root"] / "o.txt").read_text(encoding="utf-8")
    assert written.count("\n") == n_lines(env["binary.bin"].read_bytes())


def test_evaluate_truncates_a_long_source_with_one_warning(env, capsys, monkeypatch):
    long_line = " ".join(["a"] * (4 * MAX_POSITIONS))
    src = env["root"] / "long.src"
    src.write_text(f"ein Hund\n{long_line}\n", encoding="utf-8")
    argv = ["evaluate", *RUN, *FAST, "--source", str(src), "--reference", "{two_txt}", "--json"]
    status, out, err = run_cli(argv, env, capsys, monkeypatch)
    assert status == 0 and '"sentences": 2' in out, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("latalign evaluate: warning: line 2:"), err


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=200))
def test_any_stdin_bytes_give_one_line_per_line(data, env, capsys, monkeypatch):
    out, err = _translate(env, capsys, monkeypatch, data)
    assert len(out) == n_lines(data)
    for line in err.splitlines():
        assert line.startswith("latalign translate: warning:"), err


def test_valid_flags_are_accepted(env, capsys, monkeypatch):
    """The table's neighbours that are valid: exit 0."""
    for extra in (["--device", "cpu"], ["--device", "auto"], ["--lenpen", "0"],
                  ["--max-len-a", "0"], ["--batch-size", "1"], ["--no-bf16"]):  # fmt: skip
        out, _ = _translate(env, capsys, monkeypatch, b"ein Hund\n", *extra)
        assert len(out) == 1
    status, out, err = run_cli(
        ["evaluate", *RUN, *FAST, "--source", "{two_txt}", "--reference", "{two_txt}", "--json"],
        env, capsys, monkeypatch,
    )  # fmt: skip
    assert status == 0 and '"sentences": 2' in out, err


def test_real_stdin_through_a_subprocess(env):
    """The original failure: non-UTF-8 bytes on a real standard input (sentencepiece died with
    a pybind11 cast error), and a bad flag; no traceback, the exit statuses promised."""
    cmd = [sys.executable, "-m", "latalign.cli", "translate", "--run-dir", str(env["run"]), *FAST]
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    before = tree_hashes(env["run"])
    proc = subprocess.run(
        cmd, input=b"ein Hund\n\xff\xfe\n", capture_output=True, timeout=120, env=environ
    )
    err = proc.stderr.decode()
    assert proc.returncode == 0 and "Traceback" not in err and "line 2" in err, err
    assert len(proc.stdout.decode().splitlines()) == 2
    proc = subprocess.run([*cmd, "--beam", "0"], capture_output=True, timeout=120, env=environ)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert tree_hashes(env["run"]) == before
