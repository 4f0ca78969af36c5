"""The ``baseline`` experiment: the stack's real cross-entropy recipe (the preset's
``baseline_recipe``, trained into ``{out}/baseline/train``) or a finished run of it
(``--baseline RUN_DIR``, checked before any work), beam-decoded from the checkpoint
``latalign evaluate`` uses (best, else last): the yardstick of "cross entropy translates"."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import latalign as la
from latalign.reproduce.cells import Cell, CellRun, run_cell
from latalign.reproduce.context import Context
from latalign.reproduce.presets import Preset
from latalign.reproduce.records import ExperimentResult
from latalign.translate.checkpoint import checkpoint_paths
from latalign.translate.config import TrainConfig
from latalign.translate.tokenizer import Tokenizer

NAME = "baseline"


def recipe_path(preset: Preset) -> Path:
    """The preset's cross-entropy recipe file; ``ValueError`` when the preset has none or the
    file is missing (e.g. an installed package without the repository's ``configs/``)."""
    if preset.baseline_recipe is None:
        raise ValueError(
            f"expected --baseline RUN_DIR for the baseline experiment of preset "
            f"{preset.name!r} (it has no cross-entropy recipe to train); found none"
        )
    path = Path(la.__file__).resolve().parents[2] / preset.baseline_recipe
    if not path.is_file():
        raise ValueError(
            f"expected the cross-entropy recipe at {path}; found none — give --baseline RUN_DIR "
            "(a finished run of it)"
        )
    return path


def check_baseline_run(run_dir: Path, preset: Preset) -> dict[str, Any]:
    """Check, before any work, that ``run_dir`` is a finished cross-entropy run on the
    preset's data: a directory with ``config.json`` (criterion ce or label_smoothed_ce; the
    preset's languages and vocabulary size), a checkpoint and ``tokenizer/``. Returns the saved
    config; ``ValueError`` naming what is missing or different otherwise. (The tokenizer
    fingerprint is compared with the prepared data's by :func:`check_baseline_tokenizer`.)"""
    if not run_dir.is_dir():
        raise ValueError(f"expected --baseline to be a run directory; found no directory {run_dir}")
    cfg_file = run_dir / "config.json"
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, ValueError):
        raise ValueError(
            f"expected a training run's config.json in --baseline {run_dir}; found none or an "
            "unreadable one"
        ) from None
    if not any(p.is_file() for p in checkpoint_paths(run_dir)):
        raise ValueError(f"expected a checkpoint in {run_dir}/checkpoints; found none")
    if not (run_dir / "tokenizer").is_dir():
        raise ValueError(f"expected the run's tokenizer/ in {run_dir}; found none")
    if cfg.get("criterion") not in ("ce", "label_smoothed_ce"):
        raise ValueError(
            f"expected a cross-entropy run (criterion ce or label_smoothed_ce) in --baseline; "
            f"found criterion {cfg.get('criterion')!r}"
        )
    data = cfg.get("data") or {}
    for key in ("src", "tgt", "vocab_size"):
        want = preset.data.get(key)
        if want is not None and data.get(key) != want:
            raise ValueError(
                f"expected the baseline run's data {key} = {want!r} (preset {preset.name!r}); "
                f"found {data.get(key)!r} in {cfg_file}"
            )
    return cfg


def check_baseline_tokenizer(ctx: Context) -> None:
    """``ValueError`` unless the baseline run's tokenizer is the prepared data's (the same
    corpus and BPE settings give the same fingerprint)."""
    if ctx.baseline is None:
        raise ValueError("expected a --baseline RUN_DIR to check; found none")
    theirs = Tokenizer.load(ctx.baseline / "tokenizer").fingerprint
    ours = ctx.data.tokenizer.fingerprint
    if theirs != ours:
        raise ValueError(
            f"expected the baseline run to be trained on this data (tokenizer {ours[:12]}); "
            f"found tokenizer {theirs[:12]} in {ctx.baseline} — another corpus or BPE size"
        )


def baseline_spec(ctx: Context) -> dict[str, Any]:
    """What the baseline result depends on: the usual spec and the reused run (if any)."""
    return ctx.spec(NAME) | {
        "baseline_run": None if ctx.baseline is None else str(ctx.baseline.resolve())
    }


def run_baseline_experiment(ctx: Context) -> ExperimentResult:
    """Evaluate the finished run ``ctx.baseline``, or train the preset's recipe into
    ``{out}/baseline/train``; beam-decode the test set."""
    directory = ctx.out / NAME
    if ctx.baseline is not None:
        run_dir, source, cfg = ctx.baseline, f"finished run {ctx.baseline}", None
    else:
        run_dir = directory / "train"
        source = f"trained here from {ctx.preset.baseline_recipe}"
        cfg = TrainConfig.from_file(
            recipe_path(ctx.preset), run_dir=str(run_dir), data=ctx.data_dir, seed=ctx.seed,
            cache_dir=str(ctx.cache_dir), device=ctx.preset.train_device,
        )  # fmt: skip

    def record(c: CellRun) -> ExperimentResult:
        return ExperimentResult(
            name=NAME, source=source, run_dir=str(run_dir),
            criterion=c.run.train_config.get("criterion"), recipe=ctx.preset.baseline_recipe,
            updates=c.run.step, final_valid_loss=c.final("valid_loss"),
            final_valid_ce=c.final("valid_ce"), final_train_loss=c.final_train_loss,
            test=c.test, seconds=c.seconds(),
        )  # fmt: skip

    cell = Cell(NAME, directory, baseline_spec(ctx), cfg, run_dir, ctx.preset.beam,
                ctx.preset.test_sentences, best=True)  # fmt: skip
    return run_cell(ctx, cell, record, ExperimentResult.from_json)
