"""The paper's claims, one small function each (:data:`PAPER_CLAIMS`, in table order).

Each function reads the typed :class:`~latalign.reproduce.records.Results` and returns one
:class:`~latalign.reproduce.records.Claim` — ✓/✗/— (``passed``), the criterion, the
measured figure and the sample — or the claim "not run" when the experiments it needs did
not run. The fixed part of each claim (text, section, kind, criterion) is a
:class:`~latalign.reproduce.records.ClaimSpec` beside it; the kind says which claims are
true by construction (``ctc_is_ce``, ``map_is_ce``: identities of the objective the run
verifies), which are findings (``tying``) and which measure behaviour and can come out ✗.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import latalign.reproduce.analysis as an
from latalign.reproduce.records import Claim, ClaimSpec, ExperimentResult, MapResult, Results
from latalign.reproduce.render import num, pct, tokens

CTC_IS_CE = ClaimSpec(
    "ctc_is_ce", "CTC with m = n is cross entropy", "§3", "construction",
    "max |CTC − CE| < 1e-4 nats/sentence without equal neighbours; CTC = inf with them",
)  # fmt: skip


def ctc_is_ce(r: Results) -> Claim:
    e = r.paper()
    src = next((n for n in ("ctc", "ce", "label_smoothed_ce") if n in e), None)
    if src is None or e[src].analysis is None or e[src].analysis.ctc_vs_ce is None:
        return CTC_IS_CE.not_run(["ctc or ce"])
    a = e[src].analysis
    c = a.ctc_vs_ce
    return CTC_IS_CE.measured(
        f"{src} model: max |CTC − CE| = {num(c['max_abs_diff'], 6)} nats over "
        f"{c['n_sentences'] - c['repeat_count']} sentences; {c['repeat_count']} "
        f"({pct(c['repeat_share'])}) have equal neighbours, CTC = inf for "
        f"{c['repeat_infinite']}",
        a.sample(f"teacher forcing, the {src} model"), c,
        c["max_abs_diff"] < 1e-4 and c["repeat_infinite"] == c["repeat_count"],
    )  # fmt: skip


_NEAR_ZERO_CRITERION = "train loss < 0.1 nats/token {} and final valid loss < 0.2 nats/token"
AXE_NEAR_ZERO = ClaimSpec(
    "axe_near_zero", "AXE loss near zero within one epoch (this corpus's epoch)", "§4, Fig. 2",
    "behaviour", _NEAR_ZERO_CRITERION.format("within this corpus's first epoch (updates)"),
)  # fmt: skip
AXE_NEAR_ZERO_PAPER = ClaimSpec(
    "axe_near_zero_paper_epoch",
    "AXE loss near zero within one epoch (the paper's epoch: 3.9M target tokens)", "§4, Fig. 2",
    "behaviour", _NEAR_ZERO_CRITERION.format(
        "within 3.9M target tokens seen (IWSLT'14's epoch, ~1,100 updates of 4,096 tokens)"),
)  # fmt: skip


def _near_zero(a: ExperimentResult) -> tuple[str, str, dict[str, Any]]:
    """The measurement both near-zero verdicts share: ``(measured, sample, values)``."""
    ft, fv = a.first_train_below, a.first_valid_below
    per_update = a.target_tokens_per_update
    run_tokens = a.updates * per_update if per_update else None
    run_epochs = a.updates / a.updates_per_epoch

    def when(x: dict[str, Any] | None) -> str:
        if x is None:
            tok = f", ≈{tokens(run_tokens)} target tokens" if run_tokens else ""
            return f"never in {a.updates} updates ({num(run_epochs, 2)} epochs{tok})"
        tok = (
            f", ≈{tokens(x['target_tokens'])} target tokens = {num(x['paper_epochs'], 3)} of the "
            "paper's epochs"
            if "target_tokens" in x
            else ""
        )
        return f"at update {x['step']} (epoch {num(x['epoch'], 2)}{tok})"

    measured = (
        f"train < 0.1 {when(ft)}; valid < 0.1 {when(fv)}; final train "
        f"{num(a.final_train_loss)}, valid {num(a.final_valid_loss)} nats/token; "
        f"epoch = {a.updates_per_epoch} updates"
        + (f" = {tokens(a.epoch_target_tokens)} target tokens (tokens seen ≈ updates × "
           "the epoch's mean per update)" if per_update else "")
    )  # fmt: skip
    values = {
        "first_train_below_0.1": ft, "first_valid_below_0.1": fv,
        "final_train_loss": a.final_train_loss, "final_valid_loss": a.final_valid_loss,
        "updates_per_epoch": a.updates_per_epoch, "epoch_target_tokens": a.epoch_target_tokens,
        "paper_epoch_target_tokens": an.PAPER_EPOCH_TARGET_TOKENS,
    }  # fmt: skip
    n_valid = a.analysis.n_valid if a.analysis is not None else None
    sample = "training log (train loss: means over each logging interval, dropout on); " + (
        f"valid loss: all {n_valid} validation sentences" if n_valid else "valid loss"
    )
    return measured, sample, values


def axe_near_zero(r: Results) -> Claim:
    """This corpus's epoch; undecided when the run ended before one epoch without crossing."""
    a = r.paper().get("axe")
    if a is None:
        return AXE_NEAR_ZERO.not_run(["axe"])
    ft = a.first_train_below
    if ft is not None:
        passed = ft["epoch"] <= 1.0 and a.final_valid_loss < 0.2
    else:
        passed = False if a.updates / a.updates_per_epoch >= 1.0 else None
    return AXE_NEAR_ZERO.measured(*_near_zero(a), passed)


def axe_near_zero_paper_epoch(r: Results) -> Claim:
    """The paper's epoch (3.9M target tokens); undecided when the run saw fewer tokens."""
    a = r.paper().get("axe")
    if a is None:
        return AXE_NEAR_ZERO_PAPER.not_run(["axe"])
    ft, per_update = a.first_train_below, a.target_tokens_per_update
    run_tokens = a.updates * per_update if per_update else None
    if ft is not None and "target_tokens" in ft:
        passed = ft["target_tokens"] <= an.PAPER_EPOCH_TARGET_TOKENS and a.final_valid_loss < 0.2
    elif ft is None and run_tokens is not None and run_tokens >= an.PAPER_EPOCH_TARGET_TOKENS:
        passed = False
    else:
        passed = None
    return AXE_NEAR_ZERO_PAPER.measured(*_near_zero(a), passed)


AXE_EMPTY = ClaimSpec(
    "axe_empty", "AXE decodes empty sequences, 0 BLEU", "§4", "behaviour",
    "empty share ≥ 0.9 and BLEU < 1 (beam search, ε removed)",
)  # fmt: skip


def axe_empty(r: Results) -> Claim:
    a = r.paper().get("axe")
    if a is None:
        return AXE_EMPTY.not_run(["axe"])
    t = a.test
    return AXE_EMPTY.measured(
        f"{pct(t.empty_share)} empty, BLEU {num(t.bleu, 2)}", t.sample(),
        {"empty_share": t.empty_share, "bleu": t.bleu}, t.empty_share >= 0.9 and t.bleu < 1.0,
    )  # fmt: skip


CONSTANT_ALIGNMENT = ClaimSpec(
    "constant_alignment", "the chosen alignment is constant: delimiter, align…, clone_prediction",
    "§5, Fig. 3", "behaviour", "share ≥ 0.9 of validation sentences",
)  # fmt: skip


def _path_claim(
    spec: ClaimSpec,
    r: Results,
    name: str,
    share: str,
    what: str,
    text: Callable[[dict[str, Any]], str],
    keys: tuple[str, ...],
) -> Claim:
    """A claim on the best paths of experiment ``name``: ✓ when ``paths[share]`` ≥ 0.9;
    ``text(paths)`` says what was measured, ``keys`` of the paths are its values."""
    a = r.paper().get(name)
    if a is None or a.analysis is None or a.analysis.paths is None:
        return spec.not_run([name])
    p = a.analysis.paths
    return spec.measured(text(p), a.analysis.sample(what), {k: p[k] for k in keys},
                         p[share] >= 0.9)  # fmt: skip


def constant_alignment(r: Results) -> Claim:
    return _path_claim(CONSTANT_ALIGNMENT, r, "axe", "degenerate_share",
                       "best AXE path under teacher forcing",
                       lambda p: f"{pct(p['degenerate_share'])} of the sentences",
                       ("degenerate_share", "n_sentences"))  # fmt: skip


COPIES_INPUT = ClaimSpec(
    "copies_input", "each prediction copies its input", "§5", "behaviour",
    "mean p_j(y_{j−1}) ≥ 0.9 under teacher forcing",
)  # fmt: skip


def _copy_probability(r: Results, name: str) -> float | None:
    """Experiment ``name``'s mean ``p_j(input_j)`` (None when it did not run)."""
    x = r.paper().get(name)
    return x.analysis.copy_probability if x is not None and x.analysis is not None else None


def copies_input(r: Results) -> Claim:
    cp, ce_cp = _copy_probability(r, "axe"), _copy_probability(r, "ce")
    a = r.paper().get("axe")
    if cp is None or a is None or a.analysis is None:
        return COPIES_INPUT.not_run(["axe"])
    return COPIES_INPUT.measured(
        f"mean p_j(y_(j−1)) = {num(cp)} over {a.analysis.copy_positions} positions (cross "
        f"entropy model: {num(ce_cp)})",
        a.analysis.sample("positions 2…L"),
        {"copy_probability": cp, "ce_copy_probability": ce_cp}, cp >= 0.9,
    )  # fmt: skip


LOSS_FLOOR = ClaimSpec(
    "loss_floor", "the loss floor is about −2·log(0.5)/n", "§5", "behaviour",
    "floor ≤ AXE loss ≤ 2 × floor, both token-weighted on the same sentences (eos counted); "
    "floor = N·2·log 2 / Σ L, a hard bound for every sentence on the constant path",
)  # fmt: skip


def _floor_text(fl: dict[str, Any]) -> str:
    """The loss-floor measurement, and which sentences and paths lie under the floor."""
    text = (
        f"AXE loss {num(fl['loss'])} vs floor {num(fl['floor'])} nats/token on the same "
        f"{fl['n_sentences']} sentences ({fl['n_tokens']} target tokens with eos, mean length "
        f"{num(fl['mean_length'], 2)}; ratio {num(fl['ratio'], 2)})"
    )
    if not fl["below_count"]:
        return text + "; no sentence costs less than 2·log 2"
    paths = ", ".join(f"{p['summary']} ({p['count']})" for p in fl["below_paths"])
    text += (
        f"; {fl['below_count']} sentences cost less than 2·log 2, each through a best path "
        f"other than the constant one ({paths}); {fl['below_on_equal_neighbours']} of them "
        "share a prediction between two equal neighbouring targets"
    )
    if fl["below_constant_path"]:
        text += f"; {fl['below_constant_path']} on the constant path (a float tie)"
    return text


def loss_floor(r: Results) -> Claim:
    a = r.paper().get("axe")
    if a is None or a.analysis is None or a.analysis.floor is None:
        return LOSS_FLOOR.not_run(["axe"])
    fl = a.analysis.floor
    keep = ("loss", "floor", "ratio", "mean_length", "n_sentences", "n_tokens", "below_count",
            "below_paths", "below_on_equal_neighbours")  # fmt: skip
    return LOSS_FLOOR.measured(
        _floor_text(fl), a.analysis.sample("final AXE model, dropout off"),
        {k: fl[k] for k in keep}, fl["floor"] <= fl["loss"] <= 2.0 * fl["floor"],
    )  # fmt: skip


CAUSAL_TRIVIAL = ClaimSpec(
    "causal_trivial", "causal AXE picks the trivial alignment in ~98% of sentences", "§5",
    "behaviour", "trivial share ≥ 0.9",
)  # fmt: skip


def _trivial_text(p: dict[str, Any]) -> str:
    others = "; ".join(f"{o['summary']} ({o['count']})" for o in p["other_paths"][:3])
    return f"{pct(p['trivial_share'])} trivial; others: {others or 'none'}"


def causal_trivial(r: Results) -> Claim:
    return _path_claim(CAUSAL_TRIVIAL, r, "causal_axe", "trivial_share", "best causal AXE path",
                       _trivial_text, ("trivial_share", "other_paths"))  # fmt: skip


CE_TRANSLATES = ClaimSpec(
    "ce_translates", "cross entropy translates", "baseline", "behaviour",
    "BLEU ≥ the preset's baseline_min_bleu and empty share < 0.05",
)  # fmt: skip


def ce_translates(r: Results) -> Claim:
    """Against the stack's recipe when the preset has one (``baseline``), else against the
    preset's CE runs: BLEU ≥ the preset's ``baseline_min_bleu`` and < 5 % empty."""
    e = r.paper()
    preset = r.meta.get("preset", {})
    need = float(preset.get("baseline_min_bleu", 10.0))
    recipe = preset.get("baseline_recipe")
    judged = ["baseline"] if (recipe or "baseline" in e) else ["ce", "label_smoothed_ce"]
    crit = f"BLEU ≥ {need:g} and empty share < 0.05 for " + (
        "the stack's cross-entropy recipe" + (f" ({recipe})" if recipe else "")
        if judged == ["baseline"]
        else "CE (and label-smoothed CE if run)"
    )
    shown = [n for n in ("baseline", "ce", "label_smoothed_ce") if n in e]
    ran = [n for n in judged if n in e]
    if not ran:
        return CE_TRANSLATES.not_run([judged[0]], criterion=crit)

    def part(n: str) -> str:
        x, t = e[n], e[n].test
        extra = f" ({x.updates} updates{', ' + x.source if x.source is not None else ''})"
        return (f"{n}{extra}: BLEU {num(t.bleu, 2)}, chrF {num(t.chrf, 1)}, empty "
                f"{pct(t.empty_share)}")  # fmt: skip

    values: dict[str, Any] = {
        n: {"bleu": e[n].test.bleu, "chrf": e[n].test.chrf, "empty_share": e[n].test.empty_share}
        for n in shown
    }
    ok = all(e[n].test.bleu >= need and e[n].test.empty_share < 0.05 for n in ran)
    return CE_TRANSLATES.measured(
        "; ".join(part(n) for n in shown), e[ran[0]].test.sample(),
        values | {"min_bleu": need, "judged": ran}, ok, criterion=crit,
    )  # fmt: skip


DOUBLED_CTC = ClaimSpec(
    "doubled_ctc", "doubled CTC (each target token fed twice) is gamed too",
    "§5 (argued, run here)", "behaviour",
    "valid loss < 0.25 × CE's and (empty ≥ 0.5 or BLEU < 0.5 × CE's)",
)  # fmt: skip


def doubled_ctc(r: Results) -> Claim:
    e = r.paper()
    d, c = e.get("doubled_ctc"), e.get("ce")
    if d is None or c is None or d.analysis is None:
        return DOUBLED_CTC.not_run(["doubled_ctc", "ce"])
    ok = an.classify_measured(
        d.final_valid_loss, d.test.empty_share, d.test.bleu,
        reference_loss=c.final_valid_loss, reference_bleu=c.test.bleu,
    ) == "degenerate"  # fmt: skip
    cp = d.analysis.copy_probability
    return DOUBLED_CTC.measured(
        f"valid {num(d.final_valid_loss)} nats/token (CE {num(c.final_valid_loss)}); "
        f"greedy BLEU {num(d.test.bleu, 2)} (CE, beam: {num(c.test.bleu, 2)}), "
        f"empty {pct(d.test.empty_share)}; mean p_t(input_t) {num(cp)}",
        d.test.sample() + "; valid loss on all validation sentences",
        {"valid_loss": d.final_valid_loss, "bleu": d.test.bleu,
         "empty_share": d.test.empty_share, "copy_probability": cp}, ok,
    )  # fmt: skip


THEOREM_MAP = ClaimSpec(
    "theorem_map", "degenerate exactly when some operator lets p_j score y_i with i < j",
    "§5 (as a map)", "behaviour",
    "measured class = predicted class for each informative objective",
)  # fmt: skip
MAP_IS_CE = ClaimSpec(
    "map_is_ce", "objectives with only the trivial path at m = n are cross entropy",
    "§3 (as a map)", "construction",
    "max |objective's loss − CE| < 1e-3 nats/token over them, on the same model and "
    "validation tokens (their loss is CE, so the ce run stands for them)",
)  # fmt: skip


def _map_sample(m: MapResult) -> str:
    """Which runs, validation sentences and test decoding the map's rows are."""
    ref = next(x for x in m.rows if x.key == m.reference)
    trained = sorted({x.updates for x in m.rows if x.reused is None})
    runs = (
        f"{len(m.rows) - sum(x.reused is None for x in m.rows)} objectives = the ce run "
        f"({ref.updates} updates, not trained again)"
        + (f", the others {'/'.join(map(str, trained))} updates each" if trained else "")
    )
    return (
        f"{runs}; valid loss and teacher-forced valid CE on all validation sentences; "
        f"{ref.test.sample()} for every objective"
    )


def theorem_map(r: Results) -> Claim:
    """The informative objectives (more than the trivial path; 12 of the 32)."""
    m = r.map
    if m is None:
        return THEOREM_MAP.not_run(["map"])
    info = [x for x in m.rows if x.informative]
    bad = [f"{x.key} ({x.measured})" for x in info if not x.agrees]
    n_deg = sum(x.predicted == "degenerate" for x in info)
    ref = next(x for x in m.rows if x.key == m.reference)
    healthy = [x.bleu for x in info if x.predicted == "healthy"]
    return THEOREM_MAP.measured(
        f"{m.informative_agree}/{m.informative} informative objectives agree "
        f"({n_deg} predicted degenerate, {len(info) - n_deg} healthy; reference BLEU "
        f"{num(ref.bleu, 1)}"
        + (f", predicted healthy: BLEU {num(min(healthy), 1)}–{num(max(healthy), 1)}"
           if healthy else "") + ")"
        + (f"; disagree: {', '.join(bad)}" if bad else ""),
        _map_sample(m),
        {"informative": m.informative, "informative_agree": m.informative_agree,
         "disagree": bad, "n_objectives": len(m.rows), "reference_bleu": ref.bleu,
         "bleu": {x.key: x.bleu for x in info}},
        (not bad) if info else None,
        criterion="measured class = predicted class for every informative objective (more "
        "than the trivial path at m = n); measured rule: " + m.rule,
    )  # fmt: skip


def map_is_ce(r: Results) -> Claim:
    """The objectives with only the trivial path at m = n (the reference among them)."""
    m = r.map
    if m is None:
        return MAP_IS_CE.not_run(["map"])
    triv = [x for x in m.rows if not x.informative]
    if not triv:
        return MAP_IS_CE.not_run(["a map objective with only the trivial path"])
    diffs = [abs(x.final_valid_loss - x.final_valid_ce) for x in triv
             if x.final_valid_ce is not None]  # fmt: skip
    worst = max(diffs) if diffs else None
    reused = sum(x.reused is not None for x in triv)
    return MAP_IS_CE.measured(
        f"{len(triv)}/{len(m.rows)} objectives (the reference {m.reference} among them), "
        f"{reused} of them the ce run: max |loss − CE| = {num(worst, 6)} nats/token "
        "(agreement by construction, not evidence for the theorem)",
        _map_sample(m), {"n": len(triv), "max_abs_diff": worst, "reused": reused},
        worst is not None and worst < 1e-3,
    )  # fmt: skip


TYING = ClaimSpec(
    "tying", "the collapse is nearly free when the output layer is tied (finding)", "finding",
    "finding", "a finding, not a pass/fail claim: updates until train loss < 0.5 and < 0.1",
)  # fmt: skip


def tying(r: Results) -> Claim:
    e = r.paper()
    if "axe" not in e or "axe_untied" not in e:
        return TYING.not_run(["axe", "axe_untied"])
    vals: dict[str, Any] = {}
    parts = []
    for n, label in (("axe", "tied"), ("axe_untied", "untied")):
        x = e[n]
        tr = [{"step": s, "train_loss": v} for s, v in x.train_curve or []]
        steps = {}
        for t in ("0.5", "0.1"):
            rec = an.first_below(tr, "train_loss", float(t))
            steps[t] = rec and rec["step"]
        vals[n] = {
            "below_0.5": steps["0.5"], "below_0.1": steps["0.1"],
            "final_train_loss": x.final_train_loss, "empty_share": x.test.empty_share,
            "bleu": x.test.bleu,
        }  # fmt: skip
        below = [f"< {t} from update {s}" if s else f"never < {t}" for t, s in steps.items()]
        parts.append(
            f"{label} ({x.updates} updates): train {below[0]}, {below[1]}; "
            f"BLEU {num(x.test.bleu, 1)}, empty {pct(x.test.empty_share)}"
        )
    return TYING.measured("; ".join(parts), "training logs; " + e["axe"].test.sample(), vals, None)


#: the paper's claims in table order (experiment groups add theirs after these)
PAPER_CLAIMS: tuple[Callable[[Results], Claim], ...] = (
    ctc_is_ce,
    axe_near_zero,
    axe_near_zero_paper_epoch,
    axe_empty,
    constant_alignment,
    copies_input,
    loss_floor,
    causal_trivial,
    ce_translates,
    doubled_ctc,
    theorem_map,
    map_is_ce,
    tying,
)


def paper_claims(results: Results) -> list[Claim]:
    """Every claim of :data:`PAPER_CLAIMS`, measured on ``results``."""
    return [claim(results) for claim in PAPER_CLAIMS]
