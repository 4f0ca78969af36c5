"""The theorem as a map (beyond the paper): every operator set containing ``align`` ×
{sum, max} × {causal, not}, each trained briefly as one cell in ``{out}/map/{objective}/``,
greedy-decoded, and classified against the cross-entropy objective ``align/sum/noncausal``
trained as long (:func:`classify_map`)."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import latalign.reproduce.analysis as an
from latalign.reproduce.cells import Cell, CellRun, run_cell
from latalign.reproduce.context import Context, run_jobs, train_config
from latalign.reproduce.records import MapResult, MapRow
from latalign.reproduce.store import check_reusable

logger = logging.getLogger("latalign.reproduce")


def map_dir(ctx: Context, key: str) -> Path:
    """The directory of one map objective (``align+delimiter/sum/causal`` ->
    ``map/align-delimiter__sum__causal``)."""
    return ctx.out / "map" / key.replace("/", "__").replace("+", "-")


def run_map_objective(ctx: Context, key: str) -> MapRow:
    """Train one objective of the map briefly; greedy-decode the preset's map test sentences."""
    ops, aggregate, causal = an.parse_objective_key(key)
    directory = map_dir(ctx, key)
    options = {"operators": ops, "aggregate": aggregate, "causal": causal}
    cfg = train_config(ctx, directory / "train", "latent", options, ctx.preset.updates["map"])
    pred = an.predict_objective(ops, causal)

    def record(c: CellRun) -> MapRow:
        return MapRow(
            key=key, operators=list(ops), aggregate=aggregate, causal=causal,
            updates=c.updates, final_valid_loss=c.final("valid_loss"),
            final_valid_ce=c.final("valid_ce"), final_train_loss=c.final_train_loss,
            bleu=c.test.bleu, chrf=c.test.chrf, empty_share=c.test.empty_share,
            n_test_sentences=c.test.n_sentences, n_test=c.test.n_test,
            predicted="degenerate" if pred.degenerate else "healthy",
            prediction_note=pred.note(), only_trivial_path=pred.only_trivial_path,
            seconds=sum(c.seconds().values()),
        )  # fmt: skip

    cell = Cell(f"map:{key}", directory, ctx.spec(f"map:{key}"), cfg, directory / "train", 1,
                ctx.preset.map_eval_sentences, log=False)  # fmt: skip
    return run_cell(ctx, cell, record, MapRow.from_json)


def run_map(ctx: Context) -> MapResult:
    """The objectives ``ctx.map_objectives`` (all 32 when empty; in canonical order, the
    reference always first), side by side in ``ctx.map_workers`` processes, and their
    classification."""
    keys = [k for k in an.all_map_objectives() if not ctx.map_objectives or k in ctx.map_objectives]
    if an.MAP_REFERENCE not in keys:
        keys = [an.MAP_REFERENCE, *keys]
    t0 = time.monotonic()

    def done(key: str, row: MapRow) -> None:
        logger.info(
            "map %d/%d %s: valid %.3f nats/token, greedy BLEU %.1f, empty %.0f%%",
            keys.index(key) + 1, len(keys), key, row.final_valid_loss, row.bleu,
            100 * row.empty_share,
        )  # fmt: skip

    rows: dict[str, MapRow] = {}
    if not ctx.force:  # finished objectives are reused here, without starting workers
        for key in keys:
            saved = check_reusable(map_dir(ctx, key), ctx.spec(f"map:{key}"))
            if saved is not None:
                rows[key] = MapRow.from_json(saved)
                done(key, rows[key])
    todo = {k: (k,) for k in keys if k not in rows}
    rows |= run_jobs(ctx, run_map_objective, todo, on_done=done)
    return replace(classify_map([rows[k] for k in keys]), seconds=time.monotonic() - t0)


def classify_map(rows: list[MapRow]) -> MapResult:
    """Classify each map row against the reference row (:data:`analysis.MAP_REFERENCE`,
    cross entropy trained as long): ``measured``, ``agrees``, ``informative``; and summarise.

    A row is *informative* unless its objective has only the trivial path at ``m = n``
    (then it is cross entropy by construction and agrees trivially) — the reference is one of
    those. The BLEU clause of the rule is used only when the reference's greedy BLEU is at
    least 20; the teacher-forced cross-entropy clause works at any length.
    """
    ref = next(r for r in rows if r.key == an.MAP_REFERENCE)
    out = []
    for r in rows:
        measured = an.classify_measured(
            r.final_valid_loss, r.empty_share, r.bleu,
            reference_loss=ref.final_valid_loss, reference_bleu=ref.bleu,
            ce=r.final_valid_ce, reference_ce=ref.final_valid_ce,
        )  # fmt: skip
        out.append(replace(r, measured=measured, agrees=measured == r.predicted,
                           informative=not r.only_trivial_path))  # fmt: skip
    bleu_used = ref.bleu >= 20.0
    info = [r for r in out if r.informative]
    return MapResult(
        rows=out,
        reference=an.MAP_REFERENCE,
        rule="degenerate = valid loss < 0.25 × the reference's (cross entropy trained as long) "
        "and (empty share ≥ 0.5 or teacher-forced valid CE ≥ 2 × the reference's"
        + (" or greedy BLEU < 0.5 × the reference's" if bleu_used else "")
        + ")"
        + ("" if bleu_used else f"; the BLEU clause is off: the reference's greedy BLEU "
           f"{ref.bleu:.1f} < 20 decides nothing"),
        bleu_clause=bleu_used,
        agreement=sum(bool(r.agrees) for r in out) / len(out),
        informative=len(info),
        informative_agree=sum(bool(r.agrees) for r in info),
    )  # fmt: skip
