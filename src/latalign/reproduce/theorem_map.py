"""The theorem as a map (beyond the paper): every operator set containing ``align`` ×
{sum, max} × {causal, not}, classified against cross entropy (:func:`classify_map`).

The 20 objectives with only the trivial path at ``m = n`` are cross entropy by construction:
they *are* the ``ce`` experiment, so they are not trained again (:func:`ce_rows`: each row
carries ``ce``'s run, its test decoding and BLEU, and the objective's own loss of that run's
model beside its cross entropy on the same validation sentences, which checks the identity).
The 12 informative ones each train as long as ``ce`` (the preset's ``ce`` updates;
``--updates map=N`` overrides) as one cell in ``{out}/map/{objective}/`` and decode the test
sentences as ``ce`` is decoded (the preset's beam and test sentences), so every row's BLEU is
comparable with the reference's."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

import latalign as la
import latalign.reproduce.analysis as an
from latalign.reproduce.cells import Cell, CellRun, run_cell, subset
from latalign.reproduce.context import Context, run_jobs, train_config
from latalign.reproduce.experiments import run_criterion_experiment
from latalign.reproduce.records import ExperimentResult, MapResult, MapRow
from latalign.reproduce.store import check_reusable, write_result
from latalign.reproduce.trained import last_checkpoint, load_trained
from latalign.reproduce.validation import validation_logits

logger = logging.getLogger("latalign.reproduce")

#: the experiment whose run the objectives with only the trivial path are
CE_EXPERIMENT = "ce"


def map_dir(ctx: Context, key: str) -> Path:
    """The directory of one map objective (``align+delimiter/sum/causal`` ->
    ``map/align-delimiter__sum__causal``)."""
    return ctx.out / "map" / key.replace("/", "__").replace("+", "-")


def map_updates(ctx: Context) -> int:
    """Updates of each informative objective: ``ce``'s, unless ``--updates map=N``."""
    u = ctx.preset.updates
    return u.get("map", u[CE_EXPERIMENT])


def is_ce(key: str) -> bool:
    """Whether objective ``key`` has only the trivial path at ``m = n`` (it is CE)."""
    ops, _, causal = an.parse_objective_key(key)
    return an.predict_objective(ops, causal).only_trivial_path


def _row(key: str, **measured) -> MapRow:
    """A map row with the prediction of ``key`` filled in."""
    ops, aggregate, causal = an.parse_objective_key(key)
    pred = an.predict_objective(ops, causal)
    return MapRow(
        key=key, operators=list(ops), aggregate=aggregate, causal=causal,
        predicted="degenerate" if pred.degenerate else "healthy",
        prediction_note=pred.note(), only_trivial_path=pred.only_trivial_path, **measured,
    )  # fmt: skip


def run_map_objective(ctx: Context, key: str) -> MapRow:
    """Train one informative objective as long as ``ce``; decode the test sentences as
    ``ce`` is decoded (the preset's beam and test sentences)."""
    ops, aggregate, causal = an.parse_objective_key(key)
    directory = map_dir(ctx, key)
    options = {"operators": ops, "aggregate": aggregate, "causal": causal}
    n = map_updates(ctx)
    cfg = train_config(ctx, directory / "train", "latent", options, n)

    def record(c: CellRun) -> MapRow:
        return _row(
            key, updates=c.updates, final_valid_loss=c.final("valid_loss"),
            final_valid_ce=c.final("valid_ce"), final_train_loss=c.final_train_loss,
            test=c.test, seconds=sum(c.seconds().values()),
        )  # fmt: skip

    cell = Cell(f"map:{key}", directory, _spec(ctx, key), cfg, directory / "train",
                ctx.preset.beam, ctx.preset.test_sentences, log=False)  # fmt: skip
    return run_cell(ctx, cell, record, MapRow.from_json)


def _spec(ctx: Context, key: str) -> dict:
    return ctx.spec(f"map:{key}") | {"updates": map_updates(ctx)}


def _ce_spec(ctx: Context, key: str, ce: ExperimentResult) -> dict:
    """What a row taken from the ``ce`` run depends on: that run (its updates, final loss and
    seconds tell one ``ce`` run from another)."""
    return ctx.spec(f"map:{key}") | {
        "ce": {"updates": ce.updates, "final_valid_loss": ce.final_valid_loss,
               "seconds": ce.seconds},
    }  # fmt: skip


def ce_rows(ctx: Context, ce: ExperimentResult, keys: Sequence[str]) -> dict[str, MapRow]:
    """The rows of the objectives ``keys`` (each with only the trivial path at ``m = n``)
    from the ``ce`` experiment's run, without training: its updates, training loss and test
    decoding, and — teacher-forced on all validation sentences, dropout off — each
    objective's own loss of the final ``ce`` model beside that model's cross entropy on the
    same tokens (nats per target token, eos included), the identity the ``map_is_ce`` claim
    checks. Each row is written to ``{out}/map/{objective}/result.json`` (no ``train/``)
    and reused while the ``ce`` run is the same (recomputed for another ``ce`` run);
    ``seconds``: the evaluation, shared out."""
    bad = [k for k in keys if not is_ce(k)]
    if bad:
        raise ValueError(f"expected objectives with only the trivial path; found {bad}")
    rows: dict[str, MapRow] = {}
    for k in keys:
        try:
            saved = None if ctx.force else check_reusable(map_dir(ctx, k), _ce_spec(ctx, k, ce))
        except ValueError:  # rows of another ce run: derived, so recomputed rather than refused
            saved = None
        if saved is not None:
            rows[k] = MapRow.from_json(saved)
    todo = [k for k in keys if k not in rows]
    for k, row in (_ce_losses(ctx, ce, todo) if todo else {}).items():
        map_dir(ctx, k).mkdir(parents=True, exist_ok=True)
        write_result(map_dir(ctx, k), _ce_spec(ctx, k, ce), row)
        rows[k] = row
    return {k: rows[k] for k in keys}


@torch.no_grad()
def _ce_losses(ctx: Context, ce: ExperimentResult, keys: Sequence[str]) -> dict[str, MapRow]:
    """:func:`ce_rows`' measurement: one teacher-forced pass of the ``ce`` model over the
    validation sentences, every objective of ``keys`` on the same logits."""
    t0 = time.monotonic()
    run = load_trained(last_checkpoint(ctx.out / CE_EXPERIMENT / "train"))
    blank = ctx.data.tokenizer.blank_id
    parsed = {k: an.parse_objective_key(k) for k in keys}
    sums = dict.fromkeys(keys, 0.0)
    ce_sum, tokens = 0.0, 0
    for batch, _, logits in validation_logits(run, ctx, subset(len(ctx.data.valid), 0)):
        target, lengths = batch.target, batch.target_lengths
        lp = torch.log_softmax(logits, dim=-1)
        nll = -lp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        keep = torch.arange(target.size(1))[None, :] < lengths[:, None]
        ce_sum += float((nll * keep).sum())
        tokens += int(lengths.sum())
        for k, (ops, aggregate, causal) in parsed.items():
            sums[k] += float(la.latent_alignment_loss(
                lp, target, lengths, lengths, operators=ops, aggregate=aggregate,
                causal=causal, blank=blank, reduction="sum",
            ))  # fmt: skip
    share = (time.monotonic() - t0) / max(len(keys), 1)
    return {
        k: _row(
            k,
            updates=ce.updates,
            final_valid_loss=sums[k] / tokens,
            final_valid_ce=ce_sum / tokens,
            final_train_loss=ce.final_train_loss,
            test=ce.test,
            seconds=share,
            reused=CE_EXPERIMENT,
        )  # fmt: skip
        for k in keys
    }


def run_map(ctx: Context) -> MapResult:
    """The objectives ``ctx.map_objectives`` (all 32 when empty; in canonical order, the
    reference always first): those that are CE by construction from the ``ce`` experiment
    (its finished run, or trained now when there is none; ``--force`` redoes it only when
    ``ce`` is among the experiments, which then run before the map), the informative ones
    trained side by side in ``ctx.map_workers`` processes; and their classification."""
    keys = [k for k in an.all_map_objectives() if not ctx.map_objectives or k in ctx.map_objectives]
    if an.MAP_REFERENCE not in keys:
        keys = [an.MAP_REFERENCE, *keys]
    t0 = time.monotonic()

    def done(key: str, row: MapRow) -> None:
        logger.info(
            "map %d/%d %s%s: valid %.3f nats/token (CE %.3f), BLEU %.1f, empty %.0f%%",
            keys.index(key) + 1, len(keys), key, " (= ce)" if row.reused else "",
            row.final_valid_loss, row.final_valid_ce or float("nan"), row.bleu,
            100 * row.empty_share,
        )  # fmt: skip

    # reused when finished, also under --force: a forced ce ran first in this invocation
    ce = run_criterion_experiment(CE_EXPERIMENT, replace(ctx, force=False))
    rows = ce_rows(ctx, ce, [k for k in keys if is_ce(k)])
    for key, row in rows.items():
        done(key, row)
    informative = [k for k in keys if k not in rows]
    if not ctx.force:  # finished objectives are reused here, without starting workers
        for key in informative:
            saved = check_reusable(map_dir(ctx, key), _spec(ctx, key))
            if saved is not None:
                rows[key] = MapRow.from_json(saved)
                done(key, rows[key])
    todo = {k: (k,) for k in informative if k not in rows}
    rows |= run_jobs(ctx, run_map_objective, todo, on_done=done)
    result = classify_map([rows[k] for k in keys])
    return replace(result, seconds=time.monotonic() - t0, updates=map_updates(ctx),
                   reference_updates=ce.updates)  # fmt: skip


def classify_map(rows: list[MapRow]) -> MapResult:
    """Classify each map row against the reference row (:data:`analysis.MAP_REFERENCE`,
    cross entropy: the ``ce`` run) with :func:`analysis.classify_map_row`: ``measured``
    (degenerate, healthy or poor), ``agrees``, ``informative``; and summarise.

    A row is *informative* unless its objective has only the trivial path at ``m = n``
    (then it is cross entropy by construction and agrees trivially) — the reference is one of
    those. BLEU decides (the collapse clause, and *healthy* = translates) only when the
    reference's BLEU is at least :data:`analysis.MIN_REFERENCE_BLEU`; below that the rule is
    the loss rule alone, and says so.
    """
    ref = next(r for r in rows if r.key == an.MAP_REFERENCE)
    out = []
    for r in rows:
        measured = an.classify_map_row(
            r.final_valid_loss, r.empty_share, r.bleu,
            reference_loss=ref.final_valid_loss, reference_bleu=ref.bleu,
            ce=r.final_valid_ce, reference_ce=ref.final_valid_ce,
        )  # fmt: skip
        out.append(replace(r, measured=measured, agrees=measured == r.predicted,
                           informative=not r.only_trivial_path))  # fmt: skip
    bleu_used = ref.bleu >= an.MIN_REFERENCE_BLEU
    trained = {r.updates for r in out if r.reused is None}
    info = [r for r in out if r.informative]
    return MapResult(
        rows=out,
        reference=an.MAP_REFERENCE,
        rule=an.map_rule(ref.bleu)
        + ("" if trained <= {ref.updates} else
           f"; the reference trained {ref.updates} updates, the other objectives "
           f"{', '.join(map(str, sorted(trained)))}"),
        bleu_clause=bleu_used,
        agreement=sum(bool(r.agrees) for r in out) / len(out),
        informative=len(info),
        informative_agree=sum(bool(r.agrees) for r in info),
    )  # fmt: skip
