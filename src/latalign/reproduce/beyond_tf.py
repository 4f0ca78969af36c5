"""The paper's closing question, run: can training without plain teacher forcing make latent
alignment objectives work in autoregressive models? (experiment group ``beyond_tf``)

The paper's argument (§5): under teacher forcing ``p_j`` has seen ``y_{j−1}``; any objective
that lets ``p_j`` score a target it has already been fed can be gamed by copying the input.
Each regime of :mod:`latalign.translate.regimes` changes what is fed. Two questions, two
protocols, every run beam-5 decoded and measured (BLEU, chrF, empty share, the share of
validation sentences whose best AXE path is the degenerate ``delimiter, align…,
clone_prediction``, the mean ``p_j(input_j)`` (copying), the validation cross entropy):

1. *Does the exploit appear?* (``scratch``, the paper's protocol) AXE and causal AXE trained
   from scratch under each regime for the group's ``scratch`` updates. The teacher-forcing
   rows are the reproduction's own ``axe``/``causal_axe`` runs.
2. *Does it help?* (``finetune``) Every run starts from the reproduction's cross-entropy
   model (experiment ``ce``, ``TrainConfig.init_from``) and trains for the group's
   ``finetune`` updates (fresh optimizer and warm-up) under one regime with cross entropy
   (the control), AXE or causal AXE — teacher forcing included, so every comparison has the
   same start and budget. From scratch, cross entropy does not translate yet at a budget
   that fits ``quick``, so "helps" can only be asked here.

Regimes, predictions (written down before any run), the outcome rule and the answer are in
:mod:`.beyond_tf_rules`; claims and the report section in :mod:`.beyond_tf_report`. Each
run is one :class:`~latalign.reproduce.cells.Cell` in ``{out}/beyond_tf/{phase}__{regime}__
{criterion}/``, trained side by side in ``ctx.map_workers`` processes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import latalign.reproduce.analysis as an
from latalign.reproduce.beyond_tf_report import claims, report
from latalign.reproduce.beyond_tf_rules import (
    FINETUNE_PHASE,
    REGIME_RUNS,
    RULE,
    SCRATCH_CRITERIA,
    SCRATCH_PHASE,
    TEACHER_FORCING,
    RegimeRow,
    answer,
    classify,
    jobs_of,
    regimes_of,
    shifted_copy_path,
)
from latalign.reproduce.cells import Cell, CellRun, run_cell, subset
from latalign.reproduce.context import Context, job_workers, run_jobs, train_config
from latalign.reproduce.groups import ExperimentGroup, GroupRun
from latalign.reproduce.records import Record, Results
from latalign.reproduce.trained import Trained, last_checkpoint
from latalign.reproduce.validation import best_paths, validation_logits

logger = logging.getLogger("latalign.reproduce")

GROUP_NAME = "beyond_tf"


@dataclass
class BeyondTfResult(Record):
    """The group's result: every row (the reused teacher-forcing scratch rows first), the
    regimes run, the CE model the fine-tuned runs start from (``experiment``, ``updates``,
    ``bleu``), the rule and the computed answer; ``cpu_seconds`` summed over the runs when
    they were trained, ``wall_seconds`` of this invocation."""

    rows: list[RegimeRow]
    regimes: list[str]
    init: dict[str, Any]
    rule: str
    answer: str
    wall_seconds: float
    cpu_seconds: float
    workers: int
    seconds: float | None = None


@torch.no_grad()
def analyse(run: Trained, ctx: Context, *, causal: bool, copy_shift: int) -> dict[str, Any]:
    """On the first ``preset.analysis_sentences`` validation sentences, with the input the
    regime feeds at inference time (gold tokens): mean ``p_j(input_j)`` over positions whose
    input is a token (not bos/pad), and the best-AXE-path shares (``causal`` as trained):
    the paper's degenerate path, the trivial path, and the copy path shifted by
    ``copy_shift``."""
    tok = ctx.data.tokenizer
    idx = subset(len(ctx.data.valid), ctx.preset.analysis_sentences)
    p_sum, p_n, paths, lengths = 0.0, 0, [], []
    for batch, inputs, logits in validation_logits(run, ctx, idx):
        s, c = an.input_copy_probability(logits, inputs, pad_id=tok.pad_id, bos_id=tok.bos_id)
        p_sum, p_n = p_sum + s, p_n + c
        paths += [b.operators for b in best_paths(logits, batch, tok.blank_id, causal)]
        lengths += batch.target_lengths.tolist()
    shares = an.path_shares(paths, lengths)
    shift = sum(tuple(p) == shifted_copy_path(L, copy_shift) for p, L in zip(paths, lengths))
    return {
        "n_sentences": len(idx),
        "copy_probability": p_sum / max(p_n, 1),
        "degenerate_share": shares["degenerate_share"],
        "trivial_share": shares["trivial_share"],
        "copy_path_share": shift / len(paths),
    }


def cell_dir(directory: Path, phase: str, key: str, criterion: str) -> Path:
    return directory / f"{phase}__{key}__{criterion}"


def run_regime_cell(
    ctx: Context,
    phase: str,
    key: str,
    criterion: str,
    updates: int,
    directory: Path,
    init: dict[str, Any] | None,
) -> RegimeRow:
    """Train one regime × criterion for ``updates`` updates — from scratch, or (``init``)
    from the reproduction's cross-entropy checkpoint ``init["checkpoint"]`` — then
    beam-decode the test sentences and analyse validation (module level: worker processes
    run it). ``cpu_seconds`` is the process's CPU time for the run."""
    regime = REGIME_RUNS[key]
    d = cell_dir(directory, phase, key, criterion)
    spec = ctx.spec(f"{GROUP_NAME}:{phase}:{key}:{criterion}") | {
        "updates": updates, "init": None if init is None else init["spec"],
    }  # fmt: skip
    options = regime.train_options(updates)
    if init is not None:
        options["init_from"] = init["checkpoint"]
    cfg = train_config(ctx, d / "train", criterion, options, updates)

    def record(c: CellRun) -> RegimeRow:
        a = analyse(c.run, ctx, causal=criterion == "causal_axe", copy_shift=regime.copy_shift)
        return RegimeRow(
            phase=phase, regime=key, label=regime.label, kind=regime.kind, criterion=criterion,
            updates=c.updates, init=None if init is None else "ce", bleu=c.test.bleu,
            chrf=c.test.chrf, empty_share=c.test.empty_share, n_test=c.test.n_sentences,
            beam=c.test.beam, degenerate_share=a["degenerate_share"],
            copy_path_share=a["copy_path_share"], trivial_share=a["trivial_share"],
            copy_probability=a["copy_probability"], n_valid=a["n_sentences"],
            valid_ce=c.final("valid_ce"), valid_loss=c.final("valid_loss"),
            final_train_loss=c.final_train_loss, examples=c.test.examples[:2],
            seconds=c.seconds(), cpu_seconds=c.cpu_seconds(),
        )  # fmt: skip

    cell = Cell(f"{GROUP_NAME}:{phase}:{key}:{criterion}", d, spec, cfg, d / "train",
                ctx.preset.beam, ctx.preset.test_sentences, log=False)  # fmt: skip
    return run_cell(ctx, cell, record, RegimeRow.from_json)


def teacher_forcing_row(results: Results, criterion: str) -> RegimeRow | None:
    """The reproduction's own from-scratch teacher-forcing experiment as a scratch row (None
    if it did not run)."""
    e = results.paper().get(criterion)
    if e is None or e.analysis is None or e.analysis.paths is None:
        return None
    t, a = e.test, e.analysis
    return RegimeRow(
        phase=SCRATCH_PHASE, regime=TEACHER_FORCING,
        label="teacher forcing (the reproduction's own run, its own schedule)",
        kind=TEACHER_FORCING, criterion=criterion, updates=e.updates, init=None, bleu=t.bleu,
        chrf=t.chrf, empty_share=t.empty_share, n_test=t.n_sentences, beam=t.beam,
        degenerate_share=a.paths["degenerate_share"],
        copy_path_share=a.paths["degenerate_share"], trivial_share=a.paths["trivial_share"],
        copy_probability=a.copy_probability, n_valid=a.n_sentences, valid_ce=e.final_valid_ce,
        valid_loss=e.final_valid_loss, final_train_loss=e.final_train_loss, reused=criterion,
    )  # fmt: skip


def run(g: GroupRun) -> BeyondTfResult:
    """Every run of :func:`jobs_of` in ``ctx.map_workers`` processes (results do not depend
    on it), then the classification and the answer."""
    ctx = g.ctx
    jobs = jobs_of(ctx.preset.name)
    ce = g.results.paper()["ce"]
    init = {
        "checkpoint": str(last_checkpoint(ctx.out / "ce" / "train")),
        "spec": {"experiment": "ce", "updates": ce.updates},
    }
    t0 = time.monotonic()
    args = {
        j: (*j, g.updates[j[0]], g.directory, init if j[0] == FINETUNE_PHASE else None)
        for j in jobs
    }

    def done(j: tuple[str, str, str], row: RegimeRow) -> None:
        logger.info(
            "beyond_tf %d/%d %s %s × %s: BLEU %.1f, empty %.0f%%, degenerate path %.0f%%",
            jobs.index(j) + 1, len(jobs), row.phase, row.regime, row.criterion, row.bleu,
            100 * row.empty_share, 100 * row.degenerate_share,
        )  # fmt: skip

    rows = run_jobs(ctx, run_regime_cell, args, on_done=done)
    scratch = [r for c in SCRATCH_CRITERIA if (r := teacher_forcing_row(g.results, c)) is not None]
    table_rows = classify(scratch + [rows[j] for j in jobs])
    return BeyondTfResult(
        rows=table_rows,
        regimes=list(regimes_of(ctx.preset.name)),
        init={"experiment": "ce", "updates": ce.updates, "bleu": ce.test.bleu},
        rule=RULE,
        answer=answer(table_rows),
        wall_seconds=time.monotonic() - t0,
        cpu_seconds=sum(r.cpu_seconds or 0.0 for r in rows.values()),
        workers=job_workers(ctx, len(jobs)),
    )


GROUP = ExperimentGroup(
    name=GROUP_NAME,
    description="The closing question: can training without plain teacher forcing make "
    "latent alignments work?",
    run=run,
    claims=claims,
    report=report,
    updates={
        "quick": {SCRATCH_PHASE: 100, FINETUNE_PHASE: 100},
        "multi30k": {SCRATCH_PHASE: 100, FINETUNE_PHASE: 100},
        "paper": {SCRATCH_PHASE: 10000, FINETUNE_PHASE: 10000},
        "ci": {SCRATCH_PHASE: 2, FINETUNE_PHASE: 2},
    },
    requires=("ce", "axe", "causal_axe"),
    default_presets=("quick", "multi30k", "paper"),
    record=BeyondTfResult.from_json,
)
