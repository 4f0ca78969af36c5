"""The paper's closing question, run: can training without plain teacher forcing make latent
alignment objectives work in autoregressive models? (experiment group ``beyond_tf``)

The paper's argument (§5): under teacher forcing ``p_j`` has seen ``y_{j−1}``; any objective
that lets ``p_j`` score a target it has already been fed can be gamed by copying the input.
Each regime of :mod:`latalign.translate.regimes` changes what is fed. Two questions, two
protocols, every run beam-5 decoded and measured (BLEU, chrF, empty share, the share of
validation sentences whose best AXE path is the degenerate ``delimiter, align…,
clone_prediction``, the mean ``p_j(input_j)`` (copying), the validation cross entropy):

1. *Does the exploit appear?* (``scratch``, the paper's protocol) AXE and causal AXE trained
   from scratch under each regime for the group's ``scratch`` updates (AXE collapses within
   ~60-190 updates from scratch in ``quick``). The teacher-forcing rows are the
   reproduction's own ``axe``/``causal_axe`` runs.
2. *Does it help?* (``finetune``) Every run starts from the reproduction's cross-entropy
   model (experiment ``ce``, ``TrainConfig.init_from``) and trains for the group's
   ``finetune`` updates (fresh optimizer and warm-up) under one regime with cross entropy
   (the control), AXE or causal AXE — teacher forcing included, so every comparison has the
   same start and budget. From scratch, cross entropy does not translate yet at a budget
   that fits ``quick`` (150 updates gave 0.2-1.7 BLEU), so "helps" can only be asked here.

The predictions (:data:`PREDICTIONS`) were written down before any run, as data; the report
sets them beside the measurements (like the map). The outcome rule is :data:`RULE`
(:func:`scratch_collapsed`, :func:`measured`); the answer paragraph is computed from the
numbers (:func:`answer`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import latalign as la
from latalign.reproduce import analysis as an
from latalign.reproduce import experiments as ex
from latalign.reproduce.groups import ExperimentGroup, GroupRun
from latalign.translate.batching import collate
from latalign.translate.checkpoint import checkpoint_paths
from latalign.translate.decode import SearchOptions
from latalign.translate.run import load_run
from latalign.translate.train import train

logger = logging.getLogger("latalign.reproduce")

GROUP_NAME = "beyond_tf"
CRITERIA = ("ce", "axe", "causal_axe")
CRITERION_LABEL = {"ce": "CE", "axe": "AXE", "causal_axe": "causal AXE"}
TEACHER_FORCING = "teacher_forcing"
SCRATCH = "tf_scratch"  # the reproduction's own ce/axe/causal_axe runs, trained from scratch
FIGURE = "beyond_tf.png"
COLLAPSE_EMPTY = 0.5  # empty share at or above which a run has collapsed
COLLAPSE_BLEU_RATIO = 0.5  # BLEU below this fraction of its regime's CE: collapsed
TIE_MARGIN = (1.0, 0.05)  # |ΔBLEU| ≤ max(1 BLEU, 5 % of CE's BLEU): a tie


# --------------------------------------------------------------------------- regimes


@dataclass(frozen=True)
class RegimeRun:
    """One regime of the experiment: its key (the ``updates`` key), a label, the
    ``TrainConfig`` fields that select it (``schedule_updates`` is filled in from the
    updates)."""

    key: str
    label: str
    kind: str  # the key of PREDICTIONS
    options: dict[str, Any] = field(default_factory=dict)

    def train_options(self, updates: int) -> dict[str, Any]:
        opts = dict(self.options)
        if opts.get("regime") == "scheduled_sampling":
            opts["schedule_updates"] = max(1, updates // 2)
        return opts

    @property
    def copy_shift(self) -> int:
        """How far back the fed gold token lies (k for delayed, 1 otherwise): the copy path
        is ``delimiter × k, align…, clone_prediction × k``."""
        return int(self.options.get("delay", 1))


#: every regime the group knows; a preset runs those that have updates
REGIME_RUNS: dict[str, RegimeRun] = {
    r.key: r
    for r in (
        RegimeRun(TEACHER_FORCING, "teacher forcing (the paper's setting)", TEACHER_FORCING, {}),
        RegimeRun(
            "scheduled_sampling",
            "scheduled sampling (linear, q: 0 → 0.5 over the first half)",
            "scheduled_sampling",
            {"regime": "scheduled_sampling", "schedule": "linear", "regime_p": 0.5},
        ),
        RegimeRun("free_running", "free running (greedy)", "free_running",
                  {"regime": "free_running", "temperature": 0.0}),
        RegimeRun("corruption_0.1", "input corruption p = 0.1", "corruption",
                  {"regime": "corruption", "regime_p": 0.1}),
        RegimeRun("corruption_0.3", "input corruption p = 0.3", "corruption",
                  {"regime": "corruption", "regime_p": 0.3}),
        RegimeRun("corruption_0.5", "input corruption p = 0.5", "corruption",
                  {"regime": "corruption", "regime_p": 0.5}),
        RegimeRun("delayed_2", "delayed teacher forcing k = 2", "delayed",
                  {"regime": "delayed", "delay": 2}),
        RegimeRun("ctc_control", "positive control: + CTC on encoder ×3 (weight 1)",
                  "ctc_control", {"arch": "ar_aux_ctc", "aux_ctc_weight": 1.0, "upsample": 3}),
    )
}  # fmt: skip


#: the regimes of the quick preset (one corruption level; multi30k and paper run all three)
QUICK_REGIMES = ("teacher_forcing", "scheduled_sampling", "free_running", "corruption_0.3",
                 "delayed_2", "ctc_control")  # fmt: skip


# --------------------------------------------------------------------------- predictions


@dataclass(frozen=True)
class Prediction:
    """What the paper's argument predicts for one regime × criterion: ``collapse`` (True/
    False) and why."""

    collapse: bool
    why: str


_NO_LOOKBACK = (
    "causal AXE has no path on which p_j scores y_i with i < j, and every regime feeds p_j at "
    "most y_1 … y_(j−1): nothing to copy, so it trains like cross entropy"
)
_CE = "cross entropy has only the trivial path: the regime changes the inputs, not the game"

#: written before any run: (regime kind, criterion) -> Prediction
PREDICTIONS: dict[tuple[str, str], Prediction] = {
    (TEACHER_FORCING, "ce"): Prediction(False, _CE),
    (TEACHER_FORCING, "axe"): Prediction(
        True, "the paper: p_j is fed y_(j−1) and AXE lets it score y_(j−1) (delimiter first)"
    ),
    (TEACHER_FORCING, "causal_axe"): Prediction(False, _NO_LOOKBACK),
    ("scheduled_sampling", "ce"): Prediction(False, _CE),
    ("scheduled_sampling", "axe"): Prediction(
        True,
        "the gold y_(j−1) still reaches p_j with probability 1 − q ≥ 0.5, and copying it is "
        "free there; sampled positions only add an honest next-token term, so the degenerate "
        "path keeps winning",
    ),
    ("scheduled_sampling", "causal_axe"): Prediction(False, _NO_LOOKBACK),
    ("free_running", "ce"): Prediction(False, _CE + " (free running may still train slowly)"),
    ("free_running", "axe"): Prediction(
        False,
        "no gold token ever enters the decoder (its inputs are its own predictions, a function "
        "of the source): there is nothing to copy, AXE is then the objective it was built for "
        "(as in non-autoregressive models)",
    ),
    ("free_running", "causal_axe"): Prediction(False, _NO_LOOKBACK),
    ("corruption", "ce"): Prediction(False, _CE),
    ("corruption", "axe"): Prediction(
        True,
        "an unmasked input (probability 1 − p) is the gold y_(j−1): copying it stays free, "
        "masked positions become honest predictions; the exploit pays on most positions",
    ),
    ("corruption", "causal_axe"): Prediction(False, _NO_LOOKBACK),
    ("delayed", "ce"): Prediction(
        False, _CE + " (but p_j must predict k tokens ahead: expect lower BLEU than TF)"
    ),
    ("delayed", "axe"): Prediction(
        True,
        "p_j is fed y_(j−k); AXE reaches it with k delimiters and k clone_predictions (the last "
        "prediction scores k + 1 targets: a floor of (k+1)·log(k+1) nats per sentence), still "
        "far cheaper than honest k-ahead prediction — a copy path shifted by k",
    ),
    ("delayed", "causal_axe"): Prediction(False, _NO_LOOKBACK),
    ("ctc_control", "ce"): Prediction(
        False,
        "positive control: the CTC alignment lives on the encoder's upsampled states, which "
        "never see the target; the decoder is plain cross entropy",
    ),
    ("ctc_control", "axe"): Prediction(
        True, "the decoder is still teacher-forced AXE: the auxiliary CTC does not remove the "
        "copy path",
    ),
    ("ctc_control", "causal_axe"): Prediction(False, _NO_LOOKBACK),
}  # fmt: skip


def predict(kind: str, criterion: str) -> Prediction:
    """The prediction for a regime kind (``teacher_forcing``, ``scheduled_sampling``,
    ``free_running``, ``corruption``, ``delayed``, ``ctc_control``) and criterion."""
    try:
        return PREDICTIONS[(kind, criterion)]
    except KeyError:
        raise ValueError(
            f"expected a regime kind and criterion of the experiment; found {(kind, criterion)}"
        ) from None


# --------------------------------------------------------------------------- outcome rule


def collapsed(empty_share: float, bleu: float, reference_bleu: float | None) -> bool:
    """The measured collapse rule (see the module docstring). ``reference_bleu`` None: a
    cross-entropy row, collapsed when empty ≥ 50 % or BLEU < 1."""
    if empty_share >= COLLAPSE_EMPTY:
        return True
    if reference_bleu is None:
        return bleu < 1.0
    return bleu < COLLAPSE_BLEU_RATIO * reference_bleu


def measured(row: dict[str, Any], reference: dict[str, Any] | None) -> str:
    """``"collapses"``, ``"beats CE"``, ``"ties CE"`` or ``"below CE"`` for a latent row
    against its regime's CE row (``reference``); ``"collapses"`` / ``"translates"`` for a CE
    row (``reference`` None)."""
    if reference is None:
        return "collapses" if collapsed(row["empty_share"], row["bleu"], None) else "translates"
    ref = reference["bleu"]
    if collapsed(row["empty_share"], row["bleu"], ref):
        return "collapses"
    margin = max(TIE_MARGIN[0], TIE_MARGIN[1] * ref)
    if row["bleu"] > ref + margin:
        return "beats CE"
    if row["bleu"] >= ref - margin:
        return "ties CE"
    return "below CE"


# --------------------------------------------------------------------------- one cell


def shifted_copy_path(length: int, shift: int) -> tuple[str, ...]:
    """The copy path of a decoder fed ``y_(j−shift)``: ``delimiter × shift, align × (length −
    shift), clone_prediction × shift`` (``shift = 1``: the paper's degenerate path)."""
    if length < 1 or shift < 1:
        raise ValueError(f"expected length >= 1 and shift >= 1; found {length}, {shift}")
    s = min(shift, length)
    return (an.DELIMITER,) * s + (an.ALIGN,) * (length - s) + (an.CLONE_PREDICTION,) * s


@torch.no_grad()
def analyse(
    model: torch.nn.Module,
    ctx: ex.Context,
    regime_inputs: Any,
    *,
    causal: bool,
    copy_shift: int,
) -> dict[str, Any]:
    """On the first ``preset.analysis_sentences`` validation sentences, with the input the
    regime feeds at inference time (gold tokens): mean ``p_j(input_j)`` over positions whose
    input is a token (not bos/pad), and the best-AXE-path shares (``causal`` as trained):
    the paper's degenerate path, the trivial path, and the copy path shifted by
    ``copy_shift``."""
    data, tok = ctx.data, ctx.data.tokenizer
    model.eval()
    n = len(data.valid)
    limit = ctx.preset.analysis_sentences
    idx = list(range(n if limit <= 0 else min(n, limit)))
    p_sum, p_n, paths, lengths = 0.0, 0, [], []
    for start in range(0, len(idx), 32):
        batch = collate([data.valid[i] for i in idx[start : start + 32]])
        inputs = regime_inputs(batch)
        logits = model(batch.src_tokens, batch.src_lengths, inputs).float()
        probs = torch.softmax(logits, dim=-1)
        p_in = probs.gather(-1, inputs.unsqueeze(-1)).squeeze(-1)
        mask = inputs.ne(tok.pad_id) & inputs.ne(tok.bos_id)
        p_sum += float(p_in[mask].sum())
        p_n += int(mask.sum())
        L = batch.target_lengths
        best = la.best_alignment(
            logits, batch.target, L, L, blank=tok.blank_id, causal=causal, from_logits=True
        )
        paths += [b.operators for b in best]
        lengths += L.tolist()
    shares = an.path_shares(paths, lengths)
    shift = sum(tuple(p) == shifted_copy_path(L, copy_shift) for p, L in zip(paths, lengths))
    return {
        "n_sentences": len(idx),
        "copy_probability": p_sum / max(p_n, 1),
        "copy_positions": p_n,
        "degenerate_share": shares["degenerate_share"],
        "trivial_share": shares["trivial_share"],
        "copy_path_share": shift / len(paths),
        "other_paths": shares["other_paths"],
    }


SCRATCH_PHASE, FINETUNE_PHASE = "scratch", "finetune"
#: criteria trained from scratch (the exploit question; CE from scratch would not translate yet
#: at these budgets, and its row would say nothing)
SCRATCH_CRITERIA = ("axe", "causal_axe")
#: regimes per preset (quick: one corruption level); presets not listed run all
PRESET_REGIMES: dict[str, tuple[str, ...]] = {"quick": QUICK_REGIMES, "ci": QUICK_REGIMES}


def cell_dir(directory: Path, phase: str, key: str, criterion: str) -> Path:
    return directory / f"{phase}__{key}__{criterion}"


def run_cell(
    phase: str,
    key: str,
    criterion: str,
    updates: int,
    ctx: ex.Context,
    directory: Path,
    init: dict[str, Any] | None,
) -> dict[str, Any]:
    """Train one regime × criterion for ``updates`` updates — from scratch, or (``init``)
    from the reproduction's cross-entropy checkpoint ``init["checkpoint"]`` — then
    beam-decode the test sentences and analyse validation. Reuses a finished cell (same
    spec). Returns the table row; ``cpu_seconds`` is this process's CPU time for the cell."""
    run = REGIME_RUNS[key]
    d = cell_dir(directory, phase, key, criterion)
    spec = ctx.spec(f"{GROUP_NAME}:{phase}:{key}:{criterion}") | {
        "updates": updates, "init": None if init is None else init["spec"],
    }  # fmt: skip
    saved = ex.check_reusable(d, spec)
    if saved is not None:
        return saved
    t0, c0 = time.monotonic(), time.process_time()
    options = run.train_options(updates)
    if init is not None:
        options["init_from"] = init["checkpoint"]
    cfg = ex.train_config(ctx, d / "train", criterion, options, updates)
    res = train(cfg, progress=False)
    train_s = time.monotonic() - t0
    trained = load_run(checkpoint_paths(d / "train")[0])
    model = trained.model
    search = SearchOptions(beam=ctx.preset.beam, batch_size=50, bf16=False)
    t1 = time.monotonic()
    test = ex.evaluate_test(
        model, ctx, ctx.preset.test_sentences, ctx.preset.beam, d,
        translate=lambda m, tok, src: trained.translate(src, search),
    )  # fmt: skip
    analysis = analyse(
        model, ctx, trained.validation_inputs, causal=criterion == "causal_axe",
        copy_shift=run.copy_shift,
    )  # fmt: skip
    row = {
        "phase": phase,
        "regime": key,
        "label": run.label,
        "kind": run.kind,
        "criterion": criterion,
        "updates": res.step,
        "init": None if init is None else "ce",
        "bleu": test["bleu"],
        "chrf": test["chrf"],
        "empty_share": test["empty_share"],
        "n_test": test["n_sentences"],
        "beam": test["beam"],
        "degenerate_share": analysis["degenerate_share"],
        "copy_path_share": analysis["copy_path_share"],
        "trivial_share": analysis["trivial_share"],
        "copy_probability": analysis["copy_probability"],
        "n_valid": analysis["n_sentences"],
        "valid_ce": res.final.get("valid_ce"),
        "valid_loss": res.final.get("valid_loss"),
        "final_train_loss": next(
            (r["train_loss"] for r in reversed(res.history) if r.get("kind") == "train"), None
        ),
        "examples": test["examples"][:2],
        "seconds": {"train": train_s, "eval": time.monotonic() - t1},
        "cpu_seconds": time.process_time() - c0,
    }
    ex.write_result(d, spec, row)
    return row


def _teacher_forcing_row(results: dict[str, Any], criterion: str) -> dict[str, Any] | None:
    """The reproduction's own from-scratch teacher-forcing experiment as a scratch row (None
    if it did not run)."""
    e = results.get("experiments", {}).get(criterion)
    if e is None:
        return None
    t, a = e["test"], e["analysis"]
    return {
        "phase": SCRATCH_PHASE,
        "regime": TEACHER_FORCING,
        "label": "teacher forcing (the reproduction's own run, its own schedule)",
        "kind": TEACHER_FORCING,
        "criterion": criterion,
        "updates": e["updates"],
        "init": None,
        "bleu": t["bleu"],
        "chrf": t["chrf"],
        "empty_share": t["empty_share"],
        "n_test": t["n_sentences"],
        "beam": t["beam"],
        "degenerate_share": a["paths"]["degenerate_share"],
        "copy_path_share": a["paths"]["degenerate_share"],
        "trivial_share": a["paths"]["trivial_share"],
        "copy_probability": a["copy_probability"],
        "n_valid": a["n_sentences"],
        "valid_ce": e.get("final_valid_ce"),
        "valid_loss": e.get("final_valid_loss"),
        "final_train_loss": e.get("final_train_loss"),
        "reused": criterion,
    }


# --------------------------------------------------------------------------- the group


def regimes_of(preset: str) -> tuple[str, ...]:
    """The regimes the group runs in ``preset``."""
    return PRESET_REGIMES.get(preset, tuple(REGIME_RUNS))


def jobs_of(preset: str) -> list[tuple[str, str, str]]:
    """``(phase, regime, criterion)`` of every cell in ``preset``: from scratch, AXE and
    causal AXE under every regime but teacher forcing (those rows are the reproduction's own
    ``axe``/``causal_axe`` runs); fine-tuned, all three criteria under every regime."""
    keys = regimes_of(preset)
    scratch = [
        (SCRATCH_PHASE, k, c) for k in keys if k != TEACHER_FORCING for c in SCRATCH_CRITERIA
    ]
    return scratch + [(FINETUNE_PHASE, k, c) for k in keys for c in CRITERIA]


def run(g: GroupRun) -> dict[str, Any]:
    """Every cell of :func:`jobs_of` in ``ctx.map_workers`` processes (results do not
    depend on it), then the classification and the answer."""
    ctx = g.ctx
    jobs = jobs_of(ctx.preset.name)
    ce = g.results["experiments"]["ce"]
    init = {
        "checkpoint": str(checkpoint_paths(ctx.out / "ce" / "train")[0]),
        "spec": {"experiment": "ce", "updates": ce["updates"]},
    }
    t0 = time.monotonic()
    args = {
        j: (*j, g.updates[j[0]], g.directory, init if j[0] == FINETUNE_PHASE else None)
        for j in jobs
    }
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    workers = min(ctx.map_workers, len(jobs))
    if workers > 1:
        with ex.spawn_pool(ctx, workers) as (pool, light):
            futures = {}
            for j in jobs:
                phase, k, c, n, d, i = args[j]
                futures[j] = pool.submit(run_cell, phase, k, c, n, light, d, i)
            for j, fut in futures.items():
                rows[j] = fut.result()
                _log(rows[j], len(rows), len(jobs))
    else:
        for j in jobs:
            phase, k, c, n, d, i = args[j]
            rows[j] = run_cell(phase, k, c, n, ctx, d, i)
            _log(rows[j], len(rows), len(jobs))
    scratch = [r for c in SCRATCH_CRITERIA if (r := _teacher_forcing_row(g.results, c)) is not None]
    table_rows = scratch + [rows[j] for j in jobs]
    classify(table_rows)
    return {
        "rows": table_rows,
        "regimes": list(regimes_of(ctx.preset.name)),
        "init": {"experiment": "ce", "updates": ce["updates"], "bleu": ce["test"]["bleu"]},
        "rule": RULE,
        "answer": answer(table_rows),
        "wall_seconds": time.monotonic() - t0,
        "cpu_seconds": sum(r.get("cpu_seconds", 0.0) for r in rows.values()),
        "workers": workers,
    }


def _log(row: dict[str, Any], done: int, total: int) -> None:
    logger.info(
        "beyond_tf %d/%d %s %s × %s: BLEU %.1f, empty %.0f%%, degenerate path %.0f%%",
        done, total, row["phase"], row["regime"], row["criterion"], row["bleu"],
        100 * row["empty_share"], 100 * row["degenerate_share"],
    )  # fmt: skip


RULE = (
    "from scratch, a run collapses when ≥ 50% of its beam outputs are empty or ≥ 50% of its "
    "validation sentences take the copy path (the paper's degenerate path; shifted by k for "
    "delayed k); fine-tuned, it collapses when ≥ 50% empty or BLEU < ½ × the CE run of the "
    "same regime (CE rows: < 1 BLEU), beats CE when its BLEU exceeds that CE's by more than "
    "max(1, 5% of it), ties within that margin, and is below otherwise"
)


def scratch_collapsed(row: dict[str, Any]) -> bool:
    """The from-scratch collapse rule: ≥ 50 % empty outputs or ≥ 50 % copy paths."""
    copy = max(row["degenerate_share"], row.get("copy_path_share", 0.0))
    return row["empty_share"] >= COLLAPSE_EMPTY or copy >= 0.5


def classify(rows: list[dict[str, Any]]) -> None:
    """In place: each row gets ``predicted`` (``"collapse"``/``"no collapse"``), ``why``,
    ``measured`` and ``holds``. Scratch rows: :func:`scratch_collapsed`. Fine-tuned rows:
    :func:`measured` against the fine-tuned CE row of the same regime."""
    ce = {r["regime"]: r for r in rows if r["criterion"] == "ce" and r["phase"] == FINETUNE_PHASE}
    for r in rows:
        p = predict(r["kind"], r["criterion"])
        r["predicted"] = "collapse" if p.collapse else "no collapse"
        r["why"] = p.why
        if r["phase"] == SCRATCH_PHASE:
            r["measured"] = "collapses" if scratch_collapsed(r) else "no collapse"
            r["holds"] = (r["measured"] == "collapses") == p.collapse
            continue
        ref = None if r["criterion"] == "ce" else ce.get(r["regime"])
        if r["criterion"] != "ce" and ref is None:
            r["measured"], r["holds"] = "no CE row", None
            continue
        r["measured"] = measured(r, ref)
        r["holds"] = (r["measured"] == "collapses") == p.collapse


def _names(rows: list[dict[str, Any]]) -> str:
    return ", ".join(f"{CRITERION_LABEL[r['criterion']]} × {r['regime']}" for r in rows) or "none"


def answer(rows: list[dict[str, Any]]) -> str:
    """The closing paragraph, computed from the classified rows."""
    scratch = [r for r in rows if r["phase"] == SCRATCH_PHASE]
    tuned = [r for r in rows if r["phase"] == FINETUNE_PHASE]
    parts = []
    if scratch:
        coll = [r for r in scratch if r["measured"] == "collapses"]
        free = [r for r in scratch if r["measured"] != "collapses"]
        held = sum(bool(r["holds"]) for r in scratch)
        parts.append(
            f"From scratch (the paper's protocol), the exploit appeared in {_names(coll)}; "
            f"not in {_names(free)} — the argument's prediction held in {held} of "
            f"{len(scratch)} runs."
        )
    ce = {r["regime"]: r for r in tuned if r["criterion"] == "ce"}
    latent = [r for r in tuned if r["criterion"] != "ce" and r.get("holds") is not None]
    if not latent:
        return " ".join(parts) or "No latent-alignment run: nothing to answer."

    def vs(r: dict[str, Any], ref: dict[str, Any]) -> str:
        return f"{CRITERION_LABEL[r['criterion']]} × {r['regime']} {r['bleu']:.1f} vs {ref['bleu']:.1f}"

    tf = ce.get(TEACHER_FORCING)
    beats = [r for r in latent if r["measured"] == "beats CE"]
    margin = None if tf is None else max(TIE_MARGIN[0], TIE_MARGIN[1] * tf["bleu"])
    over_tf = [r for r in latent if tf is not None and r["bleu"] > tf["bleu"] + margin]
    best = max(latent, key=lambda r: r["bleu"])
    coll = [r for r in latent if r["measured"] == "collapses"]
    if over_tf:
        verdict = (
            "Yes, in this run: " + "; ".join(vs(r, tf) for r in over_tf) + " BLEU beat "
            "teacher-forced cross entropy fine-tuned from the same start for as long."
        )
    elif beats:
        verdict = (
            "Not against teacher forcing: a latent objective beat cross entropy only under a "
            "regime that weakens cross entropy itself (" + "; ".join(
                vs(r, ce[r["regime"]]) for r in beats) + " BLEU, same regime), and none beat "
            f"teacher-forced CE ({tf['bleu']:.1f} BLEU) by more than the tie margin (best "
            f"latent run: {vs(best, ce[best['regime']])})."
        )  # fmt: skip
    else:
        verdict = (
            "None of them: no regime made AXE or causal AXE beat cross entropy trained under "
            f"the same regime from the same start by more than the tie margin (best latent "
            f"run: {vs(best, ce[best['regime']])} BLEU)."
        )
    parts.insert(0, verdict)
    parts.append(f"Fine-tuned from the CE model, runs that collapsed: {_names(coll)}.")
    if "ctc_control" in ce and tf is not None:
        c = ce["ctc_control"]
        parts.append(
            f"Positive control (CE + CTC on upsampled encoder states): {c['bleu']:.1f} BLEU "
            f"against teacher-forced CE's {tf['bleu']:.1f}, same start and updates."
        )
    held = sum(bool(r["holds"]) for r in tuned if r.get("holds") is not None)
    judged = sum(r.get("holds") is not None for r in tuned)
    parts.append(f"Fine-tuned, the collapse predictions held in {held} of {judged} runs.")
    return " ".join(parts)


# --------------------------------------------------------------------------- claims, report


def claims(results: dict[str, Any], result: dict[str, Any]) -> list[dict[str, Any]]:
    """One behaviour row per regime (did the collapse predictions hold, from scratch and
    fine-tuned), and the answer as a finding."""
    from latalign.reproduce.report import claim_row

    rows = result["rows"]
    out = []
    for key in result["regimes"]:
        mine = [r for r in rows if r["regime"] == key and r.get("holds") is not None]
        if not mine:
            continue
        text = "; ".join(
            f"{r['phase']} {CRITERION_LABEL[r['criterion']]}: {r['measured']} (BLEU "
            f"{r['bleu']:.1f}, {100 * r['empty_share']:.0f}% empty, copy path "
            f"{100 * max(r['degenerate_share'], r['copy_path_share']):.0f}%)"
            for r in mine
        )
        first = mine[0]
        out.append(
            claim_row(
                f"beyond_tf_{key}",
                f"{first['label']}: the argument predicts "
                + ", ".join(
                    sorted({f"{CRITERION_LABEL[r['criterion']]} {r['predicted']}" for r in mine})
                ),
                "§6 (closing question, run here)",
                "behaviour",
                "measured collapse = predicted (rule in the closing-question section)",
                text,
                f"{first['n_test']} test sentences, beam {first['beam']}; "
                f"{first['n_valid']} validation sentences for paths",
                {
                    f"{r['phase']}/{r['criterion']}": {
                        "bleu": r["bleu"],
                        "measured": r["measured"],
                        "empty_share": r["empty_share"],
                    }
                    for r in mine
                },
                all(bool(r["holds"]) for r in mine),
            )  # fmt: skip
        )
    out.append(
        claim_row(
            "beyond_tf_answer",
            "the closing question: does any regime make latent alignments work in an AR model?",
            "§6 (run here)",
            "finding",
            "—",
            result["answer"],
            "every run of the closing-question section",
            {},
            None,
        )  # fmt: skip
    )
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.0f}%"


def _num(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of a closing-question table."""
    headers = ["regime", "criterion", "updates", "predicted", "measured", "holds", "BLEU",
               "chrF", "empty", "degenerate path", "p_j(input_j)", "valid CE"]  # fmt: skip
    cells = []
    for r in rows:
        deg = _pct(r["degenerate_share"])
        if r["regime"].startswith("delayed") and r["copy_path_share"] != r["degenerate_share"]:
            deg += f" (shift-k {_pct(r['copy_path_share'])})"
        cells.append([
            r["regime"], CRITERION_LABEL[r["criterion"]], str(r["updates"]),
            r.get("predicted", "?"), r.get("measured", "?"),
            {True: "✓", False: "✗", None: "—"}[r.get("holds")],
            _num(r["bleu"], 1), _num(r["chrf"], 1), _pct(r["empty_share"]), deg,
            _num(r["copy_probability"], 3), _num(r["valid_ce"], 3),
        ])  # fmt: skip
    return headers, cells


def figure(rows: list[dict[str, Any]], path: Path) -> None:
    """BLEU and empty share per regime × criterion (grouped bars; fine-tuned runs, and the
    from-scratch runs hatched), matplotlib Agg."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 7.5))
    for row_i, phase in enumerate((FINETUNE_PHASE, SCRATCH_PHASE)):
        sub = [r for r in rows if r["phase"] == phase]
        regimes = list(dict.fromkeys(r["regime"] for r in sub))
        by = {(r["regime"], r["criterion"]): r for r in sub}
        width = 0.8 / len(CRITERIA)
        for ax, key, title in (
            (axes[row_i][0], "bleu", "BLEU (beam 5)"),
            (axes[row_i][1], "empty_share", "empty outputs (share)"),
        ):
            for i, c in enumerate(CRITERIA):
                xs = [j + (i - 1) * width for j, reg in enumerate(regimes) if (reg, c) in by]
                ys = [by[(reg, c)][key] for reg in regimes if (reg, c) in by]
                if xs:
                    ax.bar(xs, ys, width, label=CRITERION_LABEL[c], color=f"C{i}")
            ax.set_xticks(range(len(regimes)))
            ax.set_xticklabels(regimes, rotation=20, ha="right", fontsize=8)
            what = "fine-tuned from CE" if phase == FINETUNE_PHASE else "from scratch"
            ax.set_title(f"{title}, {what}", fontsize=10)
            if key == "empty_share":
                ax.set_ylim(0, 1.05)
            else:  # headroom for the legend
                ax.set_ylim(0, 1.25 * max([1.0, *(r["bleu"] for r in sub)]))
        axes[row_i][0].legend(fontsize=8, loc="upper center", ncol=3, framealpha=0.9)
    fig.suptitle("The closing question: regime × criterion")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(results: dict[str, Any], result: dict[str, Any], out: Path) -> list[tuple]:
    """The section "The closing question": predictions beside measurements (from scratch and
    fine-tuned), the figure and the computed answer."""
    rows = result["rows"]
    figure(rows, out / FIGURE)
    why = [[k, CRITERION_LABEL[c], "collapse" if p.collapse else "no collapse", p.why]
           for (k, c), p in PREDICTIONS.items()
           if any(r["kind"] == k for r in rows)]  # fmt: skip
    init = result["init"]
    blocks: list[tuple] = [
        ("h", 3, "The closing question"),
        (
            "p",
            "The paper ends: “perhaps a future alternative [to teacher forcing] could reopen "
            "the discussion on applying latent alignment objectives to autoregressive "
            "models.” Each regime below changes what the decoder is fed. Predictions were "
            "written down before the runs (`latalign.reproduce.beyond_tf.PREDICTIONS`, "
            "table below). Rule: " + result["rule"] + ".",
        ),  # fmt: skip
        ("h", 3, "Does the exploit appear? (from scratch)"),
        (
            "p",
            "AXE and causal AXE trained from scratch under each regime (teacher-forcing rows: "
            "the reproduction's own axe/causal_axe runs).",
        ),  # fmt: skip
        ("table", *table([r for r in rows if r["phase"] == SCRATCH_PHASE])),
        ("h", 3, "Does it help? (fine-tuned from the CE model)"),
        (
            "p",
            f"Every run starts from the reproduction's cross-entropy model ({init['updates']} "
            f"updates, {init['bleu']:.1f} BLEU) and trains for the same number of updates "
            "(fresh optimizer and warm-up) under one regime and criterion.",
        ),  # fmt: skip
        ("table", *table([r for r in rows if r["phase"] == FINETUNE_PHASE])),
        (
            "p",
            "degenerate path: share of validation sentences whose best AXE path (causal for "
            "causal AXE) is `delimiter, align…, clone_prediction` (for delayed k also the "
            "path shifted by k); p_j(input_j): mean probability of the token the decoder is "
            "fed (copying); valid CE: nats/token with the inference-time input (delayed "
            "inputs for delayed k).",
        ),  # fmt: skip
        ("img", FIGURE, "BLEU and empty share per regime × criterion"),
        ("h", 3, "What the argument predicted"),
        ("table", ["regime", "criterion", "predicted", "why"], why),
        ("h", 3, "The answer"),
        ("p", result["answer"]),
        (
            "p",
            f"Cost: {result.get('cpu_seconds', 0.0):.0f} s of CPU summed over the "
            f"{len([r for r in rows if 'reused' not in r])} runs (each measured when it was "
            f"trained); {result.get('wall_seconds', 0.0):.0f} s wall in this invocation "
            f"({result.get('workers', 1)} process(es); runs finished earlier are reused).",
        ),  # fmt: skip
    ]
    return blocks


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
)
