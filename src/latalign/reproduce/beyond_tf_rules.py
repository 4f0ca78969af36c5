"""The closing question's science, as data and pure functions: the regimes it runs
(:data:`REGIME_RUNS`), what the paper's argument predicts for each regime × criterion
(:data:`PREDICTIONS`, written down before any run), the measured outcome rule (:data:`RULE`:
:func:`scratch_collapsed`, :func:`measured`), the classification of the rows
(:func:`classify`) and the answer paragraph computed from them (:func:`answer`).

A row (:class:`RegimeRow`) is one run: ``phase`` ``scratch`` (trained from scratch: does the
exploit appear?) or ``finetune`` (from the CE model: does it help?), a regime and a
criterion, and its measurements (BLEU 0-100, shares in [0, 1], losses in nats per token).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import latalign.reproduce.analysis as an
from latalign.reproduce.records import Record

CRITERIA = ("ce", "axe", "causal_axe")
CRITERION_LABEL = {"ce": "CE", "axe": "AXE", "causal_axe": "causal AXE"}
TEACHER_FORCING = "teacher_forcing"
SCRATCH_PHASE, FINETUNE_PHASE = "scratch", "finetune"
#: criteria trained from scratch (the exploit question; CE from scratch would not translate yet
#: at these budgets, and its row would say nothing)
SCRATCH_CRITERIA = ("axe", "causal_axe")
COLLAPSE_EMPTY = 0.5  # empty share at or above which a run has collapsed
COLLAPSE_BLEU_RATIO = 0.5  # BLEU below this fraction of its regime's CE: collapsed
TIE_MARGIN = (1.0, 0.05)  # |ΔBLEU| ≤ max(1 BLEU, 5 % of CE's BLEU): a tie


# --------------------------------------------------------------------------- regimes


@dataclass(frozen=True)
class RegimeRun:
    """One regime of the experiment: its key (the row's ``regime``), a label, the kind
    (the key of :data:`PREDICTIONS`) and the ``TrainConfig`` fields that select it
    (``schedule_updates`` is filled in from the updates)."""

    key: str
    label: str
    kind: str
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


#: every regime the group knows; a preset runs those of :data:`PRESET_REGIMES`
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
        *(RegimeRun(f"corruption_{p}", f"input corruption p = {p}", "corruption",
                    {"regime": "corruption", "regime_p": p}) for p in (0.1, 0.3, 0.5)),
        RegimeRun("delayed_2", "delayed teacher forcing k = 2", "delayed",
                  {"regime": "delayed", "delay": 2}),
        RegimeRun("ctc_control", "positive control: + CTC on encoder ×3 (weight 1)",
                  "ctc_control", {"arch": "ar_aux_ctc", "aux_ctc_weight": 1.0, "upsample": 3}),
    )
}  # fmt: skip

#: the regimes of the quick preset (one corruption level; multi30k and paper run all three)
QUICK_REGIMES = ("teacher_forcing", "scheduled_sampling", "free_running", "corruption_0.3",
                 "delayed_2", "ctc_control")  # fmt: skip
#: regimes per preset; presets not listed run all
PRESET_REGIMES: dict[str, tuple[str, ...]] = {"quick": QUICK_REGIMES, "ci": QUICK_REGIMES}


def regimes_of(preset: str) -> tuple[str, ...]:
    """The regimes the group runs in ``preset``."""
    return PRESET_REGIMES.get(preset, tuple(REGIME_RUNS))


def jobs_of(preset: str) -> list[tuple[str, str, str]]:
    """``(phase, regime, criterion)`` of every run in ``preset``: from scratch, AXE and
    causal AXE under every regime but teacher forcing (those rows are the reproduction's own
    ``axe``/``causal_axe`` runs); fine-tuned, all three criteria under every regime."""
    keys = regimes_of(preset)
    scratch = [
        (SCRATCH_PHASE, k, c) for k in keys if k != TEACHER_FORCING for c in SCRATCH_CRITERIA
    ]
    return scratch + [(FINETUNE_PHASE, k, c) for k in keys for c in CRITERIA]


def shifted_copy_path(length: int, shift: int) -> tuple[str, ...]:
    """The copy path of a decoder fed ``y_(j−shift)``: ``delimiter × shift, align × (length −
    shift), clone_prediction × shift`` (``shift = 1``: the paper's degenerate path)."""
    if length < 1 or shift < 1:
        raise ValueError(f"expected length >= 1 and shift >= 1; found {length}, {shift}")
    s = min(shift, length)
    return (an.DELIMITER,) * s + (an.ALIGN,) * (length - s) + (an.CLONE_PREDICTION,) * s


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

#: written before any run: regime kind -> (cross entropy, AXE); causal AXE has no lookback
#: under every regime
_BY_KIND: dict[str, tuple[Prediction, Prediction]] = {
    TEACHER_FORCING: (Prediction(False, _CE), Prediction(
        True, "the paper: p_j is fed y_(j−1) and AXE lets it score y_(j−1) (delimiter first)"
    )),
    "scheduled_sampling": (Prediction(False, _CE), Prediction(
        True,
        "the gold y_(j−1) still reaches p_j with probability 1 − q ≥ 0.5, and copying it is "
        "free there; sampled positions only add an honest next-token term, so the degenerate "
        "path keeps winning",
    )),
    "free_running": (Prediction(False, _CE + " (free running may still train slowly)"), Prediction(
        False,
        "no gold token ever enters the decoder (its inputs are its own predictions, a function "
        "of the source): there is nothing to copy, AXE is then the objective it was built for "
        "(as in non-autoregressive models)",
    )),
    "corruption": (Prediction(False, _CE), Prediction(
        True,
        "an unmasked input (probability 1 − p) is the gold y_(j−1): copying it stays free, "
        "masked positions become honest predictions; the exploit pays on most positions",
    )),
    "delayed": (Prediction(
        False, _CE + " (but p_j must predict k tokens ahead: expect lower BLEU than TF)"
    ), Prediction(
        True,
        "p_j is fed y_(j−k); AXE reaches it with k delimiters and k clone_predictions (the last "
        "prediction scores k + 1 targets: a floor of (k+1)·log(k+1) nats per sentence), still "
        "far cheaper than honest k-ahead prediction — a copy path shifted by k",
    )),
    "ctc_control": (Prediction(
        False,
        "positive control: the CTC alignment lives on the encoder's upsampled states, which "
        "never see the target; the decoder is plain cross entropy",
    ), Prediction(
        True, "the decoder is still teacher-forced AXE: the auxiliary CTC does not remove the "
        "copy path",
    )),
}  # fmt: skip
#: (regime kind, criterion) -> Prediction
PREDICTIONS: dict[tuple[str, str], Prediction] = {
    (kind, c): p
    for kind, (ce, axe) in _BY_KIND.items()
    for c, p in (("ce", ce), ("axe", axe), ("causal_axe", Prediction(False, _NO_LOOKBACK)))
}


def predict(kind: str, criterion: str) -> Prediction:
    """The prediction for a regime kind (``teacher_forcing``, ``scheduled_sampling``,
    ``free_running``, ``corruption``, ``delayed``, ``ctc_control``) and criterion."""
    try:
        return PREDICTIONS[(kind, criterion)]
    except KeyError:
        raise ValueError(
            f"expected a regime kind and criterion of the experiment; found {(kind, criterion)}"
        ) from None


# --------------------------------------------------------------------------- rows


@dataclass
class RegimeRow(Record):
    """One run of the closing question and its measurements: beam-decoded test scores,
    the shares of validation sentences whose best AXE path is the paper's degenerate path,
    the copy path shifted by the regime's delay and the trivial path, the mean
    ``p_j(input_j)``; ``reused`` names the reproduction's own experiment a row comes from.
    :func:`classify` fills in ``predicted``, ``why``, ``measured`` and ``holds``."""

    phase: str
    regime: str
    label: str
    kind: str
    criterion: str
    updates: int
    init: str | None
    bleu: float
    chrf: float
    empty_share: float
    n_test: int
    beam: int
    degenerate_share: float
    copy_path_share: float
    trivial_share: float
    copy_probability: float
    n_valid: int
    valid_ce: float | None
    valid_loss: float | None
    final_train_loss: float | None
    examples: list[list[str]] | None = None
    seconds: dict[str, float] | None = None
    cpu_seconds: float | None = None
    reused: str | None = None
    predicted: str | None = None
    why: str | None = None
    measured: str | None = None
    holds: bool | None = None


# --------------------------------------------------------------------------- outcome rule

RULE = (
    "from scratch, a run collapses when ≥ 50% of its beam outputs are empty or ≥ 50% of its "
    "validation sentences take the copy path (the paper's degenerate path; shifted by k for "
    "delayed k); fine-tuned, it collapses when ≥ 50% empty or BLEU < ½ × the CE run of the "
    "same regime (CE rows: < 1 BLEU), beats CE when its BLEU exceeds that CE's by more than "
    "max(1, 5% of it), ties within that margin, and is below otherwise"
)


def collapsed(empty_share: float, bleu: float, reference_bleu: float | None) -> bool:
    """The fine-tuned collapse rule. ``reference_bleu`` None: a cross-entropy row,
    collapsed when empty ≥ 50 % or BLEU < 1."""
    if empty_share >= COLLAPSE_EMPTY:
        return True
    if reference_bleu is None:
        return bleu < 1.0
    return bleu < COLLAPSE_BLEU_RATIO * reference_bleu


def measured(row: RegimeRow, reference: RegimeRow | None) -> str:
    """``"collapses"``, ``"beats CE"``, ``"ties CE"`` or ``"below CE"`` for a latent row
    against its regime's CE row (``reference``); ``"collapses"`` / ``"translates"`` for a CE
    row (``reference`` None)."""
    if reference is None:
        return "collapses" if collapsed(row.empty_share, row.bleu, None) else "translates"
    ref = reference.bleu
    if collapsed(row.empty_share, row.bleu, ref):
        return "collapses"
    margin = tie_margin(ref)
    if row.bleu > ref + margin:
        return "beats CE"
    if row.bleu >= ref - margin:
        return "ties CE"
    return "below CE"


def tie_margin(reference_bleu: float) -> float:
    """BLEU within which a run ties its CE row: ``max(1, 5 % of it)``."""
    return max(TIE_MARGIN[0], TIE_MARGIN[1] * reference_bleu)


def scratch_collapsed(row: RegimeRow) -> bool:
    """The from-scratch collapse rule: ≥ 50 % empty outputs or ≥ 50 % copy paths."""
    copy = max(row.degenerate_share, row.copy_path_share)
    return row.empty_share >= COLLAPSE_EMPTY or copy >= 0.5


def classify(rows: list[RegimeRow]) -> list[RegimeRow]:
    """The rows with ``predicted`` (``"collapse"``/``"no collapse"``), ``why``, ``measured``
    and ``holds``. Scratch rows: :func:`scratch_collapsed`. Fine-tuned rows:
    :func:`measured` against the fine-tuned CE row of the same regime."""
    ce = {r.regime: r for r in rows if r.criterion == "ce" and r.phase == FINETUNE_PHASE}
    out = []
    for r in rows:
        p = predict(r.kind, r.criterion)
        r = replace(r, predicted="collapse" if p.collapse else "no collapse", why=p.why)
        if r.phase == SCRATCH_PHASE:
            m = "collapses" if scratch_collapsed(r) else "no collapse"
        else:
            ref = None if r.criterion == "ce" else ce.get(r.regime)
            m = "no CE row" if r.criterion != "ce" and ref is None else measured(r, ref)
        holds = None if m == "no CE row" else (m == "collapses") == p.collapse
        out.append(replace(r, measured=m, holds=holds))
    return out


def _names(rows: list[RegimeRow]) -> str:
    return ", ".join(f"{CRITERION_LABEL[r.criterion]} × {r.regime}" for r in rows) or "none"


def _vs(r: RegimeRow, ref: RegimeRow) -> str:
    return f"{CRITERION_LABEL[r.criterion]} × {r.regime} {r.bleu:.1f} vs {ref.bleu:.1f}"


def answer(rows: list[RegimeRow]) -> str:
    """The closing paragraph, computed from the classified rows."""
    scratch = [r for r in rows if r.phase == SCRATCH_PHASE]
    tuned = [r for r in rows if r.phase == FINETUNE_PHASE]
    parts = []
    if scratch:
        coll = [r for r in scratch if r.measured == "collapses"]
        free = [r for r in scratch if r.measured != "collapses"]
        held = sum(bool(r.holds) for r in scratch)
        parts.append(
            f"From scratch (the paper's protocol), the exploit appeared in {_names(coll)}; "
            f"not in {_names(free)} — the argument's prediction held in {held} of "
            f"{len(scratch)} runs."
        )
    ce = {r.regime: r for r in tuned if r.criterion == "ce"}
    latent = [r for r in tuned if r.criterion != "ce" and r.holds is not None]
    if not latent:
        return " ".join(parts) or "No latent-alignment run: nothing to answer."
    tf = ce.get(TEACHER_FORCING)
    beats = [r for r in latent if r.measured == "beats CE"]
    over_tf = [r for r in latent if tf is not None and r.bleu > tf.bleu + tie_margin(tf.bleu)]
    best = max(latent, key=lambda r: r.bleu)
    if over_tf and tf is not None:
        verdict = (
            "Yes, in this run: " + "; ".join(_vs(r, tf) for r in over_tf) + " BLEU beat "
            "teacher-forced cross entropy fine-tuned from the same start for as long."
        )
    elif beats:
        tf_bleu = f"{tf.bleu:.1f}" if tf is not None else "n/a"
        verdict = (
            "Not against teacher forcing: a latent objective beat cross entropy only under a "
            "regime that weakens cross entropy itself (" + "; ".join(
                _vs(r, ce[r.regime]) for r in beats) + " BLEU, same regime), and none beat "
            f"teacher-forced CE ({tf_bleu} BLEU) by more than the tie margin (best "
            f"latent run: {_vs(best, ce[best.regime])})."
        )  # fmt: skip
    else:
        verdict = (
            "None of them: no regime made AXE or causal AXE beat cross entropy trained under "
            f"the same regime from the same start by more than the tie margin (best latent "
            f"run: {_vs(best, ce[best.regime])} BLEU)."
        )
    parts.insert(0, verdict)
    coll = [r for r in latent if r.measured == "collapses"]
    parts.append(f"Fine-tuned from the CE model, runs that collapsed: {_names(coll)}.")
    if "ctc_control" in ce and tf is not None:
        c = ce["ctc_control"]
        parts.append(
            f"Positive control (CE + CTC on upsampled encoder states): {c.bleu:.1f} BLEU "
            f"against teacher-forced CE's {tf.bleu:.1f}, same start and updates."
        )
    judged = [r for r in tuned if r.holds is not None]
    held = sum(bool(r.holds) for r in judged)
    parts.append(f"Fine-tuned, the collapse predictions held in {held} of {len(judged)} runs.")
    return " ".join(parts)
