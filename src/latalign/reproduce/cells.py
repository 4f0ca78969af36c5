"""The one cell runner: reuse → train → load → decode → record → write, for every trained
run of the reproduction (the paper's experiments, each map objective, each closing-question
run).

A :class:`Cell` says where the run lives, what its result depends on (the spec), how to
train it (a ``TrainConfig``, or None to evaluate a finished run as it is) and how to decode
it; :func:`run_cell` does the rest and hands a :class:`CellRun` (the loaded run, its
training log, the scored test decoding) to the experiment's ``record`` function, whose
typed record is written to ``result.json`` last. An interrupted run resumes from its last
checkpoint (the stack's ``train()``); a finished one is reused (:mod:`.store`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import latalign.reproduce.analysis as an
from latalign.io import atomic_write
from latalign.reproduce.context import Context
from latalign.reproduce.records import TestScores
from latalign.reproduce.store import reuse_or_run
from latalign.reproduce.trained import (
    Trained,
    best_checkpoint,
    last_checkpoint,
    load_trained,
    translate,
)
from latalign.translate.batching import TokenBatchSampler
from latalign.translate.config import TrainConfig
from latalign.translate.metrics import evaluate_translations
from latalign.translate.runlog import read_log
from latalign.translate.train import TrainResult, train

logger = logging.getLogger("latalign.reproduce")

R = TypeVar("R")
#: sentences per decoding batch of the test set
TEST_BATCH = 50


def subset(n: int, limit: int) -> list[int]:
    """The first ``limit`` of ``n`` indices (``limit <= 0``: all)."""
    return list(range(n if limit <= 0 else min(n, limit)))


# --------------------------------------------------------------------------- the log


def full_history(run_dir: Path) -> list[dict[str, Any]]:
    """Every record of the run's ``log.jsonl`` (resumptions included), one per (kind, step)."""
    path = run_dir / "log.jsonl"
    if not path.is_file():
        return []
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    for rec in read_log(path):
        seen[(rec.get("kind", ""), int(rec.get("step", 0)))] = rec
    return sorted(seen.values(), key=lambda r: (r["step"], r.get("kind") != "train"))


def updates_per_epoch(ctx: Context) -> int:
    """Updates in one epoch of the training set (the preset's tokens per batch)."""
    d = ctx.data
    return len(
        TokenBatchSampler(
            d.train.src_sizes, d.train.tgt_sizes, max_tokens=ctx.preset.max_tokens, seed=ctx.seed
        )
    )


def curves(history: list[dict[str, Any]], ctx: Context) -> dict[str, Any]:
    """Loss curves and the first crossings of 0.1 nats/token, in updates, this corpus's
    epochs, target tokens seen and the paper's epochs (:func:`analysis.first_crossing`):
    the curve fields of :class:`~latalign.reproduce.records.ExperimentResult`."""
    per_epoch = updates_per_epoch(ctx)
    epoch_tokens = int(ctx.data.train.tgt_sizes.sum())  # eos counted
    train_r = [r for r in history if r.get("kind") == "train"]
    valid_r = [r for r in history if r.get("kind") == "valid"]
    per_update = epoch_tokens / max(per_epoch, 1)
    kw = {"updates_per_epoch": per_epoch, "tokens_per_update": per_update}
    return {
        "train_curve": [[r["step"], r["train_loss"]] for r in train_r],
        "valid_curve": [[r["step"], r["valid_loss"], r.get("valid_ce")] for r in valid_r],
        "updates_per_epoch": per_epoch,
        "epoch_target_tokens": epoch_tokens,
        "target_tokens_per_update": per_update,
        "first_train_below": an.first_crossing(train_r, "train_loss", 0.1, **kw),
        "first_valid_below": an.first_crossing(valid_r, "valid_loss", 0.1, **kw),
    }


# --------------------------------------------------------------------------- decoding


def evaluate_test(run: Trained, ctx: Context, limit: int, beam: int, directory: Path) -> TestScores:
    """Decode the first ``limit`` test sentences (0 = all) as ``run`` was trained and score
    them (BLEU, chrF, empty share after removing ε); writes ``hyps.test.txt``."""
    test = ctx.data.test
    idx = subset(len(test), limit)
    src = [test.raw_src[i] for i in idx]
    refs = [test.raw_tgt[i] for i in idx]
    hyps = translate(run, src, beam=beam, batch_size=TEST_BATCH)
    atomic_write(directory / "hyps.test.txt", "".join(h + "\n" for h in hyps))
    s = evaluate_translations(hyps, refs)
    return TestScores(
        bleu=s["bleu"], chrf=s["chrf"], empty_share=s["empty_share"],
        n_sentences=s["n_sentences"], beam=beam, length_ratio=s["length_ratio"],
        bleu_signature=s["bleu_signature"], n_test=len(test),
        examples=[list(x) for x in zip(src, refs, hyps)][:3],
    )  # fmt: skip


# --------------------------------------------------------------------------- the runner


@dataclass(frozen=True)
class Cell:
    """One run of the reproduction.

    Attributes:
        name: for the progress log.
        directory: the cell's folder (``train/`` unless ``run_dir`` is elsewhere,
            ``hyps.test.txt``, ``result.json``).
        spec: what its result depends on (:mod:`.store`).
        config: how to train it; None: evaluate ``run_dir`` as it is.
        run_dir: the stack's run directory (checkpoints, ``log.jsonl``).
        beam: test decoding beam (1 = greedy; a doubled-CTC run decodes greedily anyway).
        test_sentences: how many test sentences to decode (0 = all).
        best: decode the best checkpoint (else the last), as ``latalign evaluate`` does.
        log: progress lines and the training progress bar (off for the many small cells).
    """

    name: str
    directory: Path
    spec: dict[str, Any]
    config: TrainConfig | None
    run_dir: Path
    beam: int
    test_sentences: int
    best: bool = False
    log: bool = True


@dataclass(frozen=True)
class CellRun:
    """What :func:`run_cell` hands the record function: the loaded run, the training
    result (None when the cell only evaluates), the full training log and the test scores."""

    cell: Cell
    run: Trained
    trained: TrainResult | None
    history: list[dict[str, Any]]
    test: TestScores
    train_seconds: float
    eval_start: float  # time.monotonic() before decoding
    cpu_start: float  # time.process_time() before training

    @property
    def updates(self) -> int:
        return self.trained.step if self.trained is not None else self.run.step

    def final(self, key: str) -> float | None:
        """``key`` (``valid_loss``, ``valid_ce``) of the run's last validation."""
        if self.trained is not None:
            return self.trained.final.get(key)
        valid = [r for r in self.history if r.get("kind") == "valid"]
        return valid[-1].get(key) if valid else None

    @property
    def final_train_loss(self) -> float | None:
        """The last logged training loss (mean over its interval, dropout on)."""
        train_r = [r for r in self.history if r.get("kind") == "train"]
        return train_r[-1]["train_loss"] if train_r else None

    def seconds(self) -> dict[str, float]:
        """``train`` and ``eval`` (decoding and analysis, until now) seconds."""
        return {"train": self.train_seconds, "eval": time.monotonic() - self.eval_start}

    def cpu_seconds(self) -> float:
        """This process's CPU seconds for the cell until now."""
        return time.process_time() - self.cpu_start


def run_cell(
    ctx: Context,
    cell: Cell,
    record: Callable[[CellRun], R],
    load: Callable[[dict[str, Any]], R],
) -> R:
    """Reuse the cell's finished result (``load(saved JSON)``), or train (resuming an
    interrupted run), load the checkpoint, decode the test sentences and write
    ``record(CellRun)``."""

    def compute() -> R:
        t0, c0 = time.monotonic(), time.process_time()
        trained = None
        if cell.config is not None:
            if cell.log:
                logger.info("%s: training %d updates (%s)", cell.name, cell.config.max_updates,
                            cell.run_dir)  # fmt: skip
            trained = train(cell.config, progress=ctx.progress and cell.log)
        elif cell.log:
            logger.info("%s: evaluating the finished run %s", cell.name, cell.run_dir)
        train_s = time.monotonic() - t0
        ckpt = best_checkpoint(cell.run_dir) if cell.best else last_checkpoint(cell.run_dir)
        run = load_trained(ckpt)
        t1 = time.monotonic()
        if cell.log:
            how = "greedy" if cell.beam == 1 else f"beam-{cell.beam}"
            logger.info("%s: %s decoding of the test set", cell.name, how)
        test = evaluate_test(run, ctx, cell.test_sentences, cell.beam, cell.directory)
        out = CellRun(cell, run, trained, full_history(cell.run_dir), test, train_s, t1, c0)
        result = record(out)
        if cell.log:
            logger.info(
                "%s: done in %.0f s (valid loss %.3f nats/token, BLEU %.1f, empty %.0f%%)",
                cell.name, time.monotonic() - t0, out.final("valid_loss") or float("nan"),
                test.bleu, 100 * test.empty_share,
            )  # fmt: skip
        return result

    return reuse_or_run(cell.directory, cell.spec, force=ctx.force, compute=compute, load=load,
                        name=cell.name if cell.log else None)  # fmt: skip
