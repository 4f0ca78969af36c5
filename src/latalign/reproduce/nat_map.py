"""Experiment group ``nat_map``: the algebra's map, non-autoregressive side (issue 19) —
every operator set of the paper's Table 1 that contains ``align`` × {sum, max}, as the
training objective of a NAT model at the upsampled length ``T = upsample × S`` (no
causality: a NAT decoder sees every position), beside NAT cross entropy at the predicted
length (the ``nat`` group's NAT-CE). It is the other face of the autoregressive map, where
the same sets are cross entropy by construction or degenerate under teacher forcing.

Every row is a NAT student trained the way the ``nat`` group trains its raw students
(:func:`student_config`: arch ``nat``, the preset's optimiser and batch size, the ``nat``
group's training pairs and recipe; the latent objectives with criterion ``latent``), one
cell each in ``{out}/nat_map/{objective}/``, side by side in ``ctx.map_workers`` processes,
then decoded in one pass on the preset's test sentences as the ``nat`` group decodes:
argmax at every position and the CTC collapse (repeats merged, ε dropped) for the latent
objectives, the length beam for NAT-CE.

A set whose moves cannot advance the prediction without the target (no ``clone_target``, no
``delimiter``: ``align``, ``align+clone_prediction``) has no path at ``T > n``
(:func:`latalign.reproduce.analysis.path_exists`); with ``upsample ≥ 2`` that is nearly
every training pair, whose loss the criterion then zeroes (``zero_infinity``), so such a set
gets no gradient: its rows are *not trained* when fewer than :data:`MIN_FEASIBLE` of the
training pairs have a path (infeasible by construction; the row says the share measured).

Schedule: ``updates["student"]`` per row. In ``multi30k`` and ``paper`` it is the ``nat``
group's students' (:data:`latalign.reproduce.nat.GROUP`); in ``quick`` it is smaller
(:data:`QUICK_UPDATES`, half of the ``nat`` group's 1,200): 13 students of 1,200 updates
would add about 6 minutes to a preset that must stay within 12 (docs/reproduce.md), and at
600 updates NAT-CTC already translates (14.5 BLEU, 1,200 updates: 36.5). ``--updates
nat_map.student=N`` sets another.

On request in every preset (``--experiments ...,nat_map``): in ``quick`` its 13 students
took 12.5 minutes of wall time on the shared 2-core machine of 2026-12-02 (the ``map`` took
6.2 beside it), more than the preset's whole 12-minute budget allows beside the ``nat``
group.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import latalign.reproduce.analysis as an
import latalign.reproduce.figures as figs
import latalign.reproduce.nat as nat
from latalign.align.objective import CLONE_TARGET, DELIMITER
from latalign.reproduce.cells import Cell, CellRun, run_cell
from latalign.reproduce.context import Context, job_workers, run_jobs, train_config
from latalign.reproduce.groups import ExperimentGroup, GroupRun
from latalign.reproduce.records import Claim, ClaimSpec, Record, Results, TestScores
from latalign.reproduce.render import Block, num, pct
from latalign.reproduce.store import check_reusable
from latalign.translate.config import TrainConfig
from latalign.translate.nat.plugin import nat_config_of

logger = logging.getLogger("latalign.reproduce")

#: the reference row: NAT cross entropy at the predicted length (the nat group's NAT-CE)
REFERENCE = "ce"
#: every operator set with align × {sum, max}, non-causal (16), in the AR map's order
OBJECTIVES = tuple(
    an.objective_key(ops, agg, False) for ops in an.operator_subsets() for agg in ("sum", "max")
)
#: an objective is trained when at least this share of the training pairs has a path
MIN_FEASIBLE = 0.01
#: the paper's two NAT objectives at the upsampled length (the premise the map checks)
CTC_KEY = an.objective_key(("align", "clone_target", "delimiter"), "sum", False)
AXE_KEY = an.objective_key(("align", "clone_prediction", "delimiter"), "max", False)
#: updates of each student in ``quick`` (the nat group's students: 1,200; see above)
QUICK_UPDATES = 600
FIGURE = "nat_map.png"
#: BLEU over NAT-CE that the finding counts as "helps"
HELPS_MARGIN = 1.0


@dataclass
class NatMapRow(Record):
    """One row: an objective (``key`` as the AR map's, ``…/noncausal``) or the reference
    ``ce``; ``feasible_share`` of the training pairs with a path at ``T = upsample × S``
    (1.0 for the reference); ``trained`` False when it is below :data:`MIN_FEASIBLE` (then
    ``test`` and the losses are None); ``decoding`` how it decodes; ``ar_predicted`` and
    ``ar_only_trivial_path`` what the AR map predicts for the same objective at ``m = n``
    (None for the reference). Losses in nats per target token (NAT: no eos), each the row's
    own objective; ``seconds`` its training and evaluation."""

    key: str
    operators: list[str]
    aggregate: str | None
    feasible_share: float
    trained: bool
    updates: int
    decoding: str
    seconds: float = 0.0
    test: TestScores | None = None
    final_valid_loss: float | None = None
    final_train_loss: float | None = None
    ar_predicted: str | None = None
    ar_only_trivial_path: bool | None = None

    @property
    def bleu(self) -> float | None:
        return None if self.test is None else self.test.bleu


@dataclass
class NatMapResult(Record):
    """The NAT map: the reference row first, then the 16 objectives; ``upsample``,
    ``updates`` per student, the training pairs (``train_pairs``: the nat group's limit,
    None = all; ``n_train_pairs`` counted), ``seconds`` = its rows' (training + evaluation,
    also of reused ones), ``wall_seconds`` of this invocation."""

    rows: list[NatMapRow]
    reference: str
    upsample: int
    updates: int
    train_pairs: int | None
    n_train_pairs: int
    min_feasible: float
    workers: int
    seconds: float
    wall_seconds: float

    def row(self, key: str) -> NatMapRow:
        return next(r for r in self.rows if r.key == key)


# --------------------------------------------------------------------------- running


def recipe(key: str, preset: str) -> dict[str, Any]:
    """TrainConfig options of a row in ``preset``, the nat group's student recipe
    (:data:`latalign.reproduce.nat.STUDENTS`): the reference trains as NAT-CE, every latent
    objective at the upsampled length as NAT-CTC (decoder input, ``upsample``), so both
    groups train alike."""
    student = "nat_ce" if key == REFERENCE else "nat_ctc"
    return next(s for s in nat.STUDENTS if s.name == student).options_for(preset)


def student_config(
    ctx: Context, key: str, run_dir: Path, updates: int, pairs: int | None
) -> TrainConfig:
    """The TrainConfig of one row, as the nat group builds its raw students'."""
    data = dataclasses.replace(ctx.data_config(), train_limit=pairs)
    if key == REFERENCE:
        criterion, options = "ce", {}
    else:
        ops, aggregate, _ = an.parse_objective_key(key)
        criterion, options = "latent", {"operators": ops, "aggregate": aggregate}
    cfg = train_config(ctx, run_dir, criterion, options, updates)
    return dataclasses.replace(cfg, arch="nat", data=data, **recipe(key, ctx.preset.name))


def row_dir(out: Path, key: str) -> Path:
    """``{out}/nat_map/align-delimiter__sum`` (the reference: ``{out}/nat_map/ce``)."""
    name = key.removesuffix("/noncausal").replace("/", "__").replace("+", "-")
    return out / "nat_map" / name


def _spec(ctx: Context, key: str, updates: int, pairs: int | None) -> dict[str, Any]:
    return ctx.spec(f"nat_map:{key}") | {
        "updates": updates, "train_pairs": pairs, "recipe": recipe(key, ctx.preset.name),
    }  # fmt: skip


def decoding_of(key: str, length_beam: int) -> str:
    """How a row decodes (one decoder pass)."""
    if key == REFERENCE:
        return f"predicted length, length beam {length_beam}"
    return "T = upsample × S, argmax, CTC collapse (repeats merged, ε dropped)"


def _base_row(key: str, share: float, updates: int, decoding: str) -> NatMapRow:
    if key == REFERENCE:
        return NatMapRow(key=key, operators=[], aggregate=None, feasible_share=share,
                         trained=True, updates=updates, decoding=decoding)  # fmt: skip
    ops, aggregate, _ = an.parse_objective_key(key)
    pred = an.predict_objective(ops, False)
    return NatMapRow(
        key=key, operators=list(ops), aggregate=aggregate, feasible_share=share,
        trained=share >= MIN_FEASIBLE, updates=updates, decoding=decoding,
        ar_predicted="degenerate" if pred.degenerate else "healthy",
        ar_only_trivial_path=pred.only_trivial_path,
    )  # fmt: skip


def train_row(ctx: Context, base: NatMapRow, pairs: int | None) -> NatMapRow:
    """Train (or reuse) one row's student and decode the test sentences (module level:
    worker processes run it)."""
    directory = row_dir(ctx.out, base.key)
    cfg = student_config(ctx, base.key, directory / "train", base.updates, pairs)

    def record(c: CellRun) -> NatMapRow:
        return dataclasses.replace(
            base, updates=c.updates, test=c.test, final_valid_loss=c.final("valid_loss"),
            final_train_loss=c.final_train_loss, seconds=sum(c.seconds().values()),
        )  # fmt: skip

    cell = Cell(f"nat_map:{base.key}", directory, _spec(ctx, base.key, base.updates, pairs),
                cfg, directory / "train", 1, ctx.preset.test_sentences, log=False)  # fmt: skip
    return run_cell(ctx, cell, record, NatMapRow.from_json)


def length_pairs(ctx: Context, pairs: int | None, upsample: int, max_positions: int):
    """``(n targets, T predictions)`` of the training pairs a student sees: ``n`` without
    eos (NAT targets), ``T = upsample × S`` (S with eos, as the model counts the source),
    at most ``max_positions``."""
    train = ctx.data.train
    count = len(train.src_sizes) if pairs is None else min(pairs, len(train.src_sizes))
    for s, t in zip(train.src_sizes[:count].tolist(), train.tgt_sizes[:count].tolist()):
        yield t - 1, min(upsample * s, max_positions)


def feasible_shares(lengths: Iterable[tuple[int, int]]) -> dict[str, float]:
    """Per objective key, the share of ``lengths`` with a path (sum and max alike)."""
    pairs = list(lengths)
    return {key: an.feasible_share(an.parse_objective_key(key)[0], pairs) for key in OBJECTIVES}


def run(g: GroupRun) -> NatMapResult:
    """The reference and the 16 objectives: feasibility from the training pairs' lengths,
    the feasible rows trained side by side (finished ones reused), the others recorded as
    not trained."""
    ctx = g.ctx
    t0 = time.monotonic()
    pairs = nat.DISTILL_PAIRS.get(ctx.preset.name)
    n = g.updates["student"]
    probe = student_config(ctx, CTC_KEY, g.directory / "probe", n, pairs)
    model_cfg = nat_config_of(probe, ctx.data.tokenizer.vocab_size)
    upsample = int(probe.option("upsample"))
    lengths = list(length_pairs(ctx, pairs, upsample, model_cfg.max_positions))
    shares = feasible_shares(lengths)
    beam = int(student_config(ctx, REFERENCE, g.directory, n, pairs).option("length_beam"))
    bases = [_base_row(REFERENCE, 1.0, n, decoding_of(REFERENCE, beam))] + [
        _base_row(k, shares[k], n, decoding_of(k, beam)) for k in OBJECTIVES
    ]
    rows: dict[str, NatMapRow] = {b.key: b for b in bases if not b.trained}
    todo = {}
    for b in bases:
        if not b.trained:
            continue
        spec = _spec(ctx, b.key, n, pairs)
        saved = None if ctx.force else check_reusable(row_dir(ctx.out, b.key), spec)
        if saved is not None:
            rows[b.key] = NatMapRow.from_json(saved)
        else:
            todo[b.key] = (b, pairs)

    def done(key: str, row: NatMapRow) -> None:
        logger.info("nat_map %s: BLEU %.1f, empty %.0f%% (%d updates)", key, row.bleu,
                    100 * row.test.empty_share, row.updates)  # fmt: skip

    if todo:
        logger.info("nat_map: training %d NAT students of %d updates (%d reused, %d "
                    "infeasible)", len(todo), n, len(bases) - len(todo) - sum(
                        not b.trained for b in bases), sum(not b.trained for b in bases))  # fmt: skip
    rows |= run_jobs(ctx, train_row, todo, on_done=done)
    ordered = [rows[b.key] for b in bases]
    return NatMapResult(
        rows=ordered, reference=REFERENCE, upsample=upsample, updates=n, train_pairs=pairs,
        n_train_pairs=len(lengths), min_feasible=MIN_FEASIBLE,
        workers=job_workers(ctx, sum(b.trained for b in bases)), seconds=sum(r.seconds for r in ordered),
        wall_seconds=time.monotonic() - t0,
    )  # fmt: skip


# --------------------------------------------------------------------------- claims


def _inflates(ops: Iterable[str]) -> bool:
    """Whether a set can advance the prediction without the target (``T > n`` reachable)."""
    return bool({CLONE_TARGET, DELIMITER} & set(ops))


OTHER_FACE = ClaimSpec(
    "nat_map_other_face",
    "the objectives teacher forcing degenerates train non-autoregressive models", "nat_map",
    "behaviour", "every objective the AR map predicts degenerate (m = n, non-causal) reaches "
    "NAT test BLEU ≥ NAT-CE's, trained as long, on the same test sentences",
)  # fmt: skip
PREMISE = ClaimSpec(
    "nat_map_premise", "NAT: CTC's and AXE's operator sets beat cross entropy", "nat_map",
    "behaviour", f"BLEU({CTC_KEY}) − BLEU(NAT-CE) ≥ 3 and BLEU({AXE_KEY}) − BLEU(NAT-CE) ≥ 3, "
    "at T = upsample × S, trained as long, the same test sentences",
)  # fmt: skip
INFEASIBLE = ClaimSpec(
    "nat_map_infeasible",
    "sets that cannot advance the prediction alone (no clone_target, no delimiter) have no "
    "path at the upsampled length", "nat_map", "construction",
    f"feasible share < {MIN_FEASIBLE:g} of the training pairs for them and ≥ "
    f"{1 - MIN_FEASIBLE:g} for the other sets",
)  # fmt: skip
HELPS = ClaimSpec(
    "nat_map_helps", "which latent alignments help a NAT model (finding)", "nat_map", "finding",
    f"a finding: the objectives ≥ NAT-CE + {HELPS_MARGIN:g} BLEU, and sum against max",
)  # fmt: skip


def _tested(result: NatMapResult) -> str:
    """``"200 of 200 test sentences"``: what every trained row decoded."""
    t = result.row(REFERENCE).test
    return "the test sentences" if t is None else f"{t.n_sentences} of {t.n_test} test sentences"


def _sample(result: NatMapResult) -> str:
    return (f"{_tested(result)}, one decoder pass; {result.updates} updates per student; "
            f"upsample {result.upsample}")  # fmt: skip


def claims(results: Results, result: NatMapResult) -> list[Claim]:
    """The other face, the premise, feasibility (by construction) and the finding."""
    ref = result.row(REFERENCE)
    ref_bleu = ref.bleu if ref.bleu is not None else float("nan")
    sample = _sample(result)
    objectives = [r for r in result.rows if r.key != REFERENCE]
    degenerate = [r for r in objectives if r.ar_predicted == "degenerate"]
    below = [r.key for r in degenerate if r.bleu is None or not r.bleu >= ref_bleu]
    face = OTHER_FACE.measured(
        f"{len(degenerate) - len(below)}/{len(degenerate)} at or above NAT-CE's "
        f"{num(ref_bleu, 2)} BLEU: "
        + ", ".join(f"{r.key.removesuffix('/noncausal')} {num(r.bleu, 2)}" for r in degenerate),
        sample, {"reference_bleu": ref_bleu, "bleu": {r.key: r.bleu for r in degenerate},
                 "below": below},
        (not below) if degenerate else None,
    )  # fmt: skip
    ctc, axe = result.row(CTC_KEY), result.row(AXE_KEY)
    gaps = {k: (r.bleu - ref_bleu if r.bleu is not None else None)
            for k, r in ((CTC_KEY, ctc), (AXE_KEY, axe))}  # fmt: skip
    premise = PREMISE.measured(
        f"CTC {num(ctc.bleu, 2)} ({num(gaps[CTC_KEY], 2)}), AXE {num(axe.bleu, 2)} "
        f"({num(gaps[AXE_KEY], 2)}) against NAT-CE {num(ref_bleu, 2)}",
        sample, {"gaps": gaps, "reference_bleu": ref_bleu},
        all(g is not None and g >= 3 for g in gaps.values()),
    )  # fmt: skip
    cannot = [r for r in objectives if not _inflates(r.operators)]
    can = [r for r in objectives if _inflates(r.operators)]
    ok = all(r.feasible_share < MIN_FEASIBLE for r in cannot) and all(
        r.feasible_share >= 1 - MIN_FEASIBLE for r in can
    )
    infeasible = INFEASIBLE.measured(
        "feasible share "
        + ", ".join(f"{r.key.removesuffix('/noncausal')} {pct(r.feasible_share)}"
                    for r in cannot) + f"; the other sets ≥ {pct(min(r.feasible_share for r in can))}"
        + f" (not trained: {sum(not r.trained for r in objectives)})",
        f"all {result.n_train_pairs} training pairs the students see, T = {result.upsample} × S",
        {r.key: r.feasible_share for r in objectives}, ok,
    )  # fmt: skip
    helped = [r for r in objectives if r.bleu is not None and r.bleu >= ref_bleu + HELPS_MARGIN]
    pairs = [(result.row(an.objective_key(o, "sum", False)),
              result.row(an.objective_key(o, "max", False))) for o in an.operator_subsets()]  # fmt: skip
    both = [(s.bleu, m.bleu) for s, m in pairs if s.bleu is not None and m.bleu is not None]
    sum_minus_max = sum(s - m for s, m in both) / len(both) if both else None
    helps = HELPS.measured(
        f"{len(helped)}/{len(objectives)} objectives ≥ NAT-CE + {HELPS_MARGIN:g} BLEU"
        + (": " + ", ".join(r.key.removesuffix("/noncausal") for r in helped) if helped else "")
        + f"; sum − max: {num(sum_minus_max, 2)} BLEU on average over {len(both)} sets",
        sample + " (one seed)",
        {"helps": [r.key for r in helped], "sum_minus_max": sum_minus_max}, None,
    )  # fmt: skip
    return [face, premise, infeasible, helps]


# --------------------------------------------------------------------------- report


def report(results: Results, result: NatMapResult, out: Path) -> list[Block]:
    """The table beside the AR map's verdicts, and the figure."""
    ar = {r.key: r for r in results.map.rows} if results.map is not None else {}
    ref = result.row(REFERENCE)
    ref_bleu = ref.bleu if ref.bleu is not None else float("nan")

    def ar_cell(r: NatMapRow) -> str:
        if r.key == REFERENCE:
            return "—"
        a = ar.get(r.key)
        pred = "= CE (the ce run)" if r.ar_only_trivial_path else f"predicted {r.ar_predicted}"
        return pred if a is None else f"{pred}; measured {a.measured}, BLEU {num(a.bleu, 1)}"

    rows = [
        [("NAT-CE (" + r.decoding + ")") if r.key == REFERENCE else r.key.removesuffix("/noncausal"),
         ar_cell(r), pct(r.feasible_share), str(r.updates) if r.trained else "not trained",
         num(r.final_valid_loss), num(r.bleu, 2), num(r.test.chrf, 1) if r.test else "—",
         pct(r.test.empty_share) if r.test else "—",
         num(r.test.length_ratio, 2) if r.test and r.test.length_ratio is not None else "—",
         "—" if r.key == REFERENCE or r.bleu is None else f"{r.bleu - ref_bleu:+.2f}"]
        for r in result.rows
    ]  # fmt: skip
    blocks: list[Block] = [
        ("p", "The other face of the theorem's map: each operator set of Table 1 with align, "
         f"summed or maximised, as the objective of a non-autoregressive model at T = "
         f"{result.upsample} × the source length (no teacher forcing, no causality), beside "
         f"NAT cross entropy at the predicted length; every student trained {result.updates} "
         f"updates on {result.train_pairs or 'all'} training pairs as the nat group trains "
         "its raw students, decoded in one pass (argmax and the CTC collapse; NAT-CE: the "
         f"length beam) on {_tested(result)}. Sets without clone_target and delimiter have "
         f"no path when T > n; with fewer than {pct(result.min_feasible)} of the training "
         "pairs feasible they get no gradient (zero_infinity) and are not trained. The AR "
         "column is the autoregressive map's verdict for the same objective at m = n."),
        ("table", ["objective", "AR map (teacher forcing)", "feasible", "updates",
                   "valid loss", "BLEU", "chrF", "empty", "length ratio", "Δ BLEU vs NAT-CE"],
         rows),
        ("p", "Valid loss is each row's own objective (nats per target token, no eos), not "
         "comparable across rows; one seed, so differences of a BLEU point or two are "
         "within noise."),
    ]  # fmt: skip
    plt = figs.pyplot()
    fig = figs.draw_nat_map(plt, result, results.map)
    fig.tight_layout()
    fig.savefig(out / FIGURE, dpi=110)
    plt.close(fig)
    blocks.append(("img", FIGURE, "left: the autoregressive map (teacher forcing, non-causal); "
                   "right: the same objectives training a NAT model (test BLEU)"))  # fmt: skip
    return blocks


GROUP = ExperimentGroup(
    name="nat_map",
    description="the algebra's map, NAT side: every operator set with align × {sum, max} as a "
    "non-autoregressive objective at the upsampled length",
    run=run,
    claims=claims,
    report=report,
    updates={
        p: ({"student": QUICK_UPDATES} if p == "quick" else dict(u))
        for p, u in nat.GROUP.updates.items()
    },
    default_presets=(),  # on request (--experiments ...,nat_map): see the module docstring
    reuses_cells=True,
    record=NatMapResult.from_json,
)
