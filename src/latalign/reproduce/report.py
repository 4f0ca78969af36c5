"""The claims table, the figures (PNG, matplotlib Agg) and ``report.md`` / ``report.html``.

The report is built once as a list of blocks (heading, paragraph, table, image, code) and
rendered twice, so the Markdown and the HTML say the same thing; the HTML embeds the PNGs as
base64 and is self-contained. Every claim row comes from ``results["claims"]``.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from latalign.align.objective import MOVE_BY_NAME
from latalign.io import atomic_write
from latalign.reproduce import analysis as an
from latalign.reproduce.presets import EXPERIMENTS

FIGURES = {
    "fig2": "fig2_loss_curves.png",
    "fig3": "fig3_alignment.png",
    "heatmap": "alignment_heatmap.png",
    "tying": "tying_collapse.png",
    "map": "theorem_map.png",
    "bleu": "bleu_empty.png",
}
MARK = {True: "✓", False: "✗", None: "—"}


def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        if math.isinf(x):
            return "inf"
        if x != 0 and abs(x) < 10 ** (-digits):
            return f"{x:.1e}"
        return f"{x:.{digits}f}"
    return str(x)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


# --------------------------------------------------------------------------- claims

#: what a claim row's ``kind`` says: ``behaviour`` can come out ✗ (a measurement of trained
#: models), ``construction`` is true by construction (an identity of the objective that the
#: run verifies), ``finding`` has no pass/fail criterion
KINDS = ("behaviour", "construction", "finding")


def claim_row(
    cid: str,
    claim: str,
    section: str,
    kind: str,
    criterion: str,
    measured: str,
    sample: str,
    values: dict[str, Any],
    passed: bool | None,
) -> dict[str, Any]:
    """One row of the claims table (groups build theirs with it too).

    ``kind`` is one of :data:`KINDS`; ``sample`` says what was measured (``"200 test
    sentences (all), beam 5"``); ``values`` holds the numbers behind ``measured``;
    ``passed`` is True/False, or None for a finding or a claim that was not run.
    """
    if kind not in KINDS:
        raise ValueError(f"expected a claim kind in {KINDS}; found {kind!r}")
    return {
        "id": cid, "claim": claim, "section": section, "kind": kind, "criterion": criterion,
        "measured": measured, "sample": sample, "values": values, "passed": passed,
    }  # fmt: skip


def group_claims(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The claim rows of the experiment groups in ``results["groups"]`` (registered ones)."""
    from latalign.reproduce.groups import load_groups

    groups = load_groups()
    rows: list[dict[str, Any]] = []
    for name, result in results.get("groups", {}).items():
        g = groups.get(name)
        if g is not None and g.claims is not None:
            rows += g.claims(results, result)
    return rows


def _test_sample(t: dict[str, Any]) -> str:
    """``"200 test sentences (all), beam 5"`` / ``"200 of 1,000 test sentences, greedy"``."""
    n, total = t["n_sentences"], t.get("n_test")
    dec = "greedy" if t.get("beam", 1) == 1 else f"beam {t['beam']}"
    if total is None:
        return f"{n:,} test sentences, {dec}"
    return (
        f"{n:,} {'test sentences (all)' if n == total else f'of {total:,} test sentences'}, {dec}"
    )


def _valid_sample(a: dict[str, Any], what: str = "") -> str:
    """``"200 validation sentences (all)"`` / ``"200 of 1,014 validation sentences"``."""
    n, total = a["n_sentences"], a.get("n_valid")
    s = "validation sentences (all)" if n == total else f"of {total:,} validation sentences"
    return f"{n:,} {s if total is not None else 'validation sentences'}" + (
        f", {what}" if what else ""
    )


def _near_zero_rows(
    a: dict[str, Any], final_valid_ok: bool, sample: str
) -> list[tuple[str, str, str, dict[str, Any], bool | None]]:
    """The two verdicts of "near zero within one epoch": ``(id, claim, criterion, measured,
    values, passed)`` for this corpus's epoch and for the paper's epoch in target tokens."""
    ft, fv = a["first_train_below_0.1"], a["first_valid_below_0.1"]
    per_update = a.get("target_tokens_per_update")
    run_tokens = a["updates"] * per_update if per_update else None
    run_epochs = a["updates"] / a["updates_per_epoch"]

    def when(r: dict[str, Any] | None) -> str:
        if r is None:
            tok = f", ≈{_tokens(run_tokens)} target tokens" if run_tokens else ""
            return f"never in {a['updates']} updates ({_f(run_epochs, 2)} epochs{tok})"
        tok = (
            f", ≈{_tokens(r['target_tokens'])} target tokens = {_f(r['paper_epochs'], 3)} of the "
            "paper's epochs"
            if "target_tokens" in r
            else ""
        )
        return f"at update {r['step']} (epoch {_f(r['epoch'], 2)}{tok})"

    measured = (
        f"train < 0.1 {when(ft)}; valid < 0.1 {when(fv)}; final train "
        f"{_f(a['final_train_loss'])}, valid {_f(a['final_valid_loss'])} nats/token; "
        f"epoch = {a['updates_per_epoch']} updates"
        + (f" = {_tokens(a['epoch_target_tokens'])} target tokens (tokens seen ≈ updates × "
           "the epoch's mean per update)" if per_update else "")
    )  # fmt: skip
    values = {
        "first_train_below_0.1": ft, "first_valid_below_0.1": fv,
        "final_train_loss": a["final_train_loss"], "final_valid_loss": a["final_valid_loss"],
        "updates_per_epoch": a["updates_per_epoch"],
        "epoch_target_tokens": a.get("epoch_target_tokens"),
        "paper_epoch_target_tokens": an.PAPER_EPOCH_TARGET_TOKENS,
    }  # fmt: skip
    # this corpus's epoch: undecided when the run ended before one epoch without crossing
    if ft is not None:
        here = ft["epoch"] <= 1.0 and final_valid_ok
    else:
        here = False if run_epochs >= 1.0 else None
    # the paper's epoch (3.9M target tokens): undecided when the run saw fewer tokens
    if ft is not None and "target_tokens" in ft:
        paper = ft["target_tokens"] <= an.PAPER_EPOCH_TARGET_TOKENS and final_valid_ok
    elif ft is None and run_tokens is not None and run_tokens >= an.PAPER_EPOCH_TARGET_TOKENS:
        paper = False
    else:
        paper = None
    crit = "train loss < 0.1 nats/token {} and final valid loss < 0.2 nats/token"
    return [
        ("axe_near_zero", "AXE loss near zero within one epoch (this corpus's epoch)",
         crit.format("within this corpus's first epoch (updates)"), measured, values, here),
        ("axe_near_zero_paper_epoch",
         "AXE loss near zero within one epoch (the paper's epoch: 3.9M target tokens)",
         crit.format("within 3.9M target tokens seen (IWSLT'14's epoch, ~1,100 updates of "
                     "4,096 tokens)"), measured, values, paper),
    ]  # fmt: skip


def _tokens(n: float | None) -> str:
    if n is None:
        return "n/a"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def _floor_text(fl: dict[str, Any]) -> str:
    """The loss-floor measurement, and which sentences and paths lie under the floor."""
    text = (
        f"AXE loss {_f(fl['loss'])} vs floor {_f(fl['floor'])} nats/token on the same "
        f"{fl['n_sentences']} sentences ({fl['n_tokens']} target tokens with eos, mean length "
        f"{_f(fl['mean_length'], 2)}; ratio {_f(fl['ratio'], 2)})"
    )
    if fl["below_count"]:
        paths = ", ".join(f"{p['summary']} ({p['count']})" for p in fl["below_paths"])
        text += (
            f"; {fl['below_count']} sentences cost less than 2·log 2, each through a best path "
            f"other than the constant one ({paths}); {fl['below_on_equal_neighbours']} of them "
            "share a prediction between two equal neighbouring targets"
        )
        if fl["below_constant_path"]:
            text += f"; {fl['below_constant_path']} on the constant path (a float tie)"
    else:
        text += "; no sentence costs less than 2·log 2"
    return text


def build_claims(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per claim (:func:`claim_row`): ``id``, ``claim``, ``section``, ``kind``
    (``behaviour``: can come out ✗; ``construction``: an identity the run verifies;
    ``finding``), ``criterion`` (what ✓ means), ``measured`` (text), ``sample`` (which and
    how many sentences), ``values`` (the numbers) and ``passed`` (True/False; None = not run,
    undecided, or a finding). Rows of experiment groups follow the built-in ones."""
    e = results.get("experiments", {})
    preset = results.get("meta", {}).get("preset", {})
    rows: list[dict[str, Any]] = []

    def add(cid, claim, section, kind, criterion, measured, sample, values, passed):
        rows.append(claim_row(cid, claim, section, kind, criterion, measured, sample, values,
                              passed))  # fmt: skip

    def missing(cid, claim, section, kind, criterion, needs):
        add(cid, claim, section, kind, criterion, f"not run (needs {', '.join(needs)})", "—", {},
            None)  # fmt: skip

    claim = "CTC with m = n is cross entropy"
    crit = "max |CTC − CE| < 1e-4 nats/sentence without equal neighbours; CTC = inf with them"
    src = next((n for n in ("ctc", "ce", "label_smoothed_ce") if n in e), None)
    if src is not None:
        c = e[src]["analysis"]["ctc_vs_ce"]
        add("ctc_is_ce", claim, "§3", "construction", crit,
            f"{src} model: max |CTC − CE| = {_f(c['max_abs_diff'], 6)} nats over "
            f"{c['n_sentences'] - c['repeat_count']} sentences; {c['repeat_count']} "
            f"({_pct(c['repeat_share'])}) have equal neighbours, CTC = inf for "
            f"{c['repeat_infinite']}",
            _valid_sample(e[src]["analysis"], f"teacher forcing, the {src} model"), c,
            c["max_abs_diff"] < 1e-4 and c["repeat_infinite"] == c["repeat_count"])  # fmt: skip
    else:
        missing("ctc_is_ce", claim, "§3", "construction", crit, ["ctc or ce"])

    if "axe" in e:
        a = e["axe"]
        n_valid = a["analysis"].get("n_valid")
        sample = "training log (train loss: means over each logging interval, dropout on); " + (
            f"valid loss: all {n_valid} validation sentences" if n_valid else "valid loss"
        )
        for cid, claim, crit, measured, values, passed in _near_zero_rows(
            a, a["final_valid_loss"] < 0.2, sample
        ):
            add(cid, claim, "§4, Fig. 2", "behaviour", crit, measured, sample, values, passed)
    else:
        for cid in ("axe_near_zero", "axe_near_zero_paper_epoch"):
            missing(cid, "AXE loss near zero within one epoch", "§4, Fig. 2", "behaviour",
                    "train loss < 0.1 nats/token within one epoch", ["axe"])  # fmt: skip

    claim = "AXE decodes empty sequences, 0 BLEU"
    crit = "empty share ≥ 0.9 and BLEU < 1 (beam search, ε removed)"
    if "axe" in e:
        t = e["axe"]["test"]
        add("axe_empty", claim, "§4", "behaviour", crit,
            f"{_pct(t['empty_share'])} empty, BLEU {_f(t['bleu'], 2)}", _test_sample(t),
            {"empty_share": t["empty_share"], "bleu": t["bleu"]},
            t["empty_share"] >= 0.9 and t["bleu"] < 1.0)  # fmt: skip
    else:
        missing("axe_empty", claim, "§4", "behaviour", crit, ["axe"])

    claim = "the chosen alignment is constant: delimiter, align…, clone_prediction"
    crit = "share ≥ 0.9 of validation sentences"
    if "axe" in e:
        p = e["axe"]["analysis"]["paths"]
        add("constant_alignment", claim, "§5, Fig. 3", "behaviour", crit,
            f"{_pct(p['degenerate_share'])} of the sentences",
            _valid_sample(e["axe"]["analysis"], "best AXE path under teacher forcing"),
            {"degenerate_share": p["degenerate_share"], "n_sentences": p["n_sentences"]},
            p["degenerate_share"] >= 0.9)  # fmt: skip
    else:
        missing("constant_alignment", claim, "§5, Fig. 3", "behaviour", crit, ["axe"])

    claim = "each prediction copies its input"
    crit = "mean p_j(y_{j−1}) ≥ 0.9 under teacher forcing"
    if "axe" in e:
        cp = e["axe"]["analysis"]["copy_probability"]
        ce_cp = e.get("ce", {}).get("analysis", {}).get("copy_probability")
        add("copies_input", claim, "§5", "behaviour", crit,
            f"mean p_j(y_(j−1)) = {_f(cp)} over {e['axe']['analysis']['copy_positions']} "
            f"positions (cross entropy model: {_f(ce_cp)})",
            _valid_sample(e["axe"]["analysis"], "positions 2…L"),
            {"copy_probability": cp, "ce_copy_probability": ce_cp}, cp >= 0.9)  # fmt: skip
    else:
        missing("copies_input", claim, "§5", "behaviour", crit, ["axe"])

    claim = "the loss floor is about −2·log(0.5)/n"
    crit = (
        "floor ≤ AXE loss ≤ 2 × floor, both token-weighted on the same sentences (eos counted); "
        "floor = N·2·log 2 / Σ L, a hard bound for every sentence on the constant path"
    )
    if "axe" in e and "floor" in e["axe"]["analysis"]:
        fl = e["axe"]["analysis"]["floor"]
        add("loss_floor", claim, "§5", "behaviour", crit, _floor_text(fl),
            _valid_sample(e["axe"]["analysis"], "final AXE model, dropout off"),
            {k: fl[k] for k in ("loss", "floor", "ratio", "mean_length", "n_sentences",
                                "n_tokens", "below_count", "below_paths",
                                "below_on_equal_neighbours")},
            fl["floor"] <= fl["loss"] <= 2.0 * fl["floor"])  # fmt: skip
    else:
        missing("loss_floor", claim, "§5", "behaviour", crit, ["axe"])

    claim = "causal AXE picks the trivial alignment in ~98% of sentences"
    crit = "trivial share ≥ 0.9"
    if "causal_axe" in e:
        p = e["causal_axe"]["analysis"]["paths"]
        others = "; ".join(f"{o['summary']} ({o['count']})" for o in p["other_paths"][:3])
        add("causal_trivial", claim, "§5", "behaviour", crit,
            f"{_pct(p['trivial_share'])} trivial; others: {others or 'none'}",
            _valid_sample(e["causal_axe"]["analysis"], "best causal AXE path"),
            {"trivial_share": p["trivial_share"], "other_paths": p["other_paths"]},
            p["trivial_share"] >= 0.9)  # fmt: skip
    else:
        missing("causal_trivial", claim, "§5", "behaviour", crit, ["causal_axe"])

    _ce_translates(e, preset, add, missing)

    claim = "doubled CTC (each target token fed twice) is gamed too"
    crit = "valid loss < 0.25 × CE's and (empty ≥ 0.5 or BLEU < 0.5 × CE's)"
    if "doubled_ctc" in e and "ce" in e:
        d, c = e["doubled_ctc"], e["ce"]
        ok = an.classify_measured(
            d["final_valid_loss"], d["test"]["empty_share"], d["test"]["bleu"],
            reference_loss=c["final_valid_loss"], reference_bleu=c["test"]["bleu"],
        ) == "degenerate"  # fmt: skip
        add("doubled_ctc", claim, "§5 (argued, run here)", "behaviour", crit,
            f"valid {_f(d['final_valid_loss'])} nats/token (CE {_f(c['final_valid_loss'])}); "
            f"greedy BLEU {_f(d['test']['bleu'], 2)} (CE, beam: {_f(c['test']['bleu'], 2)}), "
            f"empty {_pct(d['test']['empty_share'])}; mean p_t(input_t) "
            f"{_f(d['analysis']['copy_probability'])}",
            _test_sample(d["test"]) + "; valid loss on all validation sentences",
            {"valid_loss": d["final_valid_loss"], "bleu": d["test"]["bleu"],
             "empty_share": d["test"]["empty_share"],
             "copy_probability": d["analysis"]["copy_probability"]}, ok)  # fmt: skip
    else:
        missing("doubled_ctc", claim, "§5 (argued, run here)", "behaviour", crit,
                ["doubled_ctc", "ce"])  # fmt: skip

    _map_rows(results, add, missing)

    claim = "the collapse is nearly free when the output layer is tied (finding)"
    crit = "a finding, not a pass/fail claim: updates until train loss < 0.5 and < 0.1"
    if "axe" in e and "axe_untied" in e:
        vals = {}
        parts = []
        for n in ("axe", "axe_untied"):
            tr = [{"step": s, "train_loss": v} for s, v in e[n]["train_curve"]]
            r5 = an.first_below(tr, "train_loss", 0.5)
            r1 = an.first_below(tr, "train_loss", 0.1)
            vals[n] = {
                "below_0.5": r5 and r5["step"], "below_0.1": r1 and r1["step"],
                "final_train_loss": e[n]["final_train_loss"],
                "empty_share": e[n]["test"]["empty_share"], "bleu": e[n]["test"]["bleu"],
            }  # fmt: skip
            label = "tied" if n == "axe" else "untied"

            def below(x: str, v: dict[str, Any] = vals[n]) -> str:
                step = v[f"below_{x}"]
                return f"< {x} from update {step}" if step else f"never < {x}"

            parts.append(
                f"{label} ({e[n]['updates']} updates): train {below('0.5')}, {below('0.1')}; "
                f"BLEU {_f(vals[n]['bleu'], 1)}, empty {_pct(vals[n]['empty_share'])}"
            )
        add("tying", claim, "finding", "finding", crit, "; ".join(parts),
            "training logs; " + _test_sample(e["axe"]["test"]), vals, None)  # fmt: skip
    else:
        missing("tying", claim, "finding", "finding", crit, ["axe", "axe_untied"])
    return rows + group_claims(results)


def _ce_translates(e: dict[str, Any], preset: dict[str, Any], add: Any, missing: Any) -> None:
    """ "Cross entropy translates": against the stack's recipe when the preset has one
    (``baseline``), else against the preset's CE runs; BLEU ≥ the preset's
    ``baseline_min_bleu`` and < 5 % empty."""
    claim = "cross entropy translates"
    need = float(preset.get("baseline_min_bleu", 10.0))
    recipe = preset.get("baseline_recipe")
    judged = ["baseline"] if (recipe or "baseline" in e) else ["ce", "label_smoothed_ce"]
    crit = (
        f"BLEU ≥ {need:g} and empty share < 0.05 for "
        + ("the stack's cross-entropy recipe" + (f" ({recipe})" if recipe else "")
           if judged == ["baseline"] else "CE (and label-smoothed CE if run)")
    )  # fmt: skip
    shown = [n for n in ("baseline", "ce", "label_smoothed_ce") if n in e]
    run = [n for n in judged if n in e]
    if not run:
        missing("ce_translates", claim, "baseline", "behaviour", crit, [judged[0]])
        return

    def part(n: str) -> str:
        t = e[n]["test"]
        extra = f" ({e[n]['updates']} updates{', ' + e[n]['source'] if 'source' in e[n] else ''})"
        return (f"{n}{extra}: BLEU {_f(t['bleu'], 2)}, chrF {_f(t['chrf'], 1)}, empty "
                f"{_pct(t['empty_share'])}")  # fmt: skip

    ok = all(e[n]["test"]["bleu"] >= need and e[n]["test"]["empty_share"] < 0.05 for n in run)
    add("ce_translates", claim, "baseline", "behaviour", crit, "; ".join(part(n) for n in shown),
        _test_sample(e[run[0]]["test"]),
        {n: {k: e[n]["test"][k] for k in ("bleu", "chrf", "empty_share")} for n in shown}
        | {"min_bleu": need, "judged": run}, ok)  # fmt: skip


def _map_rows(results: dict[str, Any], add: Any, missing: Any) -> None:
    """The map's two rows: the informative objectives (those with more than the trivial path,
    k of 12) as a behaviour claim, and the objectives that are cross entropy by construction
    (only the trivial path at m = n; the reference among them) as a construction row."""
    claim = "degenerate exactly when some operator lets p_j score y_i with i < j"
    claim_ce = "objectives with only the trivial path at m = n are cross entropy"
    crit_ce = "max |valid loss − valid CE| < 1e-3 nats/token over them (their loss is CE)"
    if "map" not in results:
        missing(
            "theorem_map",
            claim,
            "§5 (as a map)",
            "behaviour",
            "measured class = predicted class for each informative objective",
            ["map"],
        )
        missing("map_is_ce", claim_ce, "§3 (as a map)", "construction", crit_ce, ["map"])
        return  # fmt: skip
    m = results["map"]
    rows_ = m["rows"]
    if "informative" not in m:  # results written before the split: classify again
        from latalign.reproduce.experiments import classify_map

        m.update(classify_map(rows_))
    info = [r for r in rows_ if r["informative"]]
    triv = [r for r in rows_ if not r["informative"]]
    bad = [r["key"] for r in info if not r["agrees"]]
    ref = next(r for r in rows_ if r["key"] == m["reference"])
    n_eval, n_test = ref.get("n_test_sentences"), ref.get("n_test")
    decoded = (
        "the preset's map test sentences" if not n_eval
        else f"{n_eval} test sentences" if n_test is None
        else f"all {n_test} test sentences" if n_eval == n_test
        else f"{n_eval} of {n_test} test sentences (the preset's map_eval_sentences)"
    )  # fmt: skip
    sample = (
        f"{ref['updates']} updates per objective; valid loss and teacher-forced valid CE on all "
        f"validation sentences; greedy decoding of {decoded}"
    )
    crit = ("measured class = predicted class for every informative objective (more than the "
            "trivial path at m = n); measured rule: " + m["rule"])  # fmt: skip
    n_deg = sum(r["predicted"] == "degenerate" for r in info)
    add("theorem_map", claim, "§5 (as a map)", "behaviour", crit,
        f"{m['informative_agree']}/{m['informative']} informative objectives agree "
        f"({n_deg} predicted degenerate, {len(info) - n_deg} healthy)"
        + (f"; disagree: {', '.join(bad)}" if bad else ""),
        sample, {"informative": m["informative"], "informative_agree": m["informative_agree"],
                 "disagree": bad, "n_objectives": len(rows_)},
        (not bad) if info else None)  # fmt: skip
    diffs = [
        abs(r["final_valid_loss"] - r["final_valid_ce"])
        for r in triv
        if r.get("final_valid_ce") is not None
    ]
    if triv:
        worst = max(diffs) if diffs else None
        healthy = sum(r["measured"] == "healthy" for r in triv)
        add("map_is_ce", claim_ce, "§3 (as a map)", "construction", crit_ce,
            f"{len(triv)}/{len(rows_)} objectives (the reference {m['reference']} among them): "
            f"max |valid loss − valid CE| = {_f(worst, 6)} nats/token; {healthy}/{len(triv)} "
            "measured healthy (agreement by construction, not evidence for the theorem)",
            sample, {"n": len(triv), "max_abs_diff": worst, "healthy": healthy},
            worst is not None and worst < 1e-3)  # fmt: skip
    else:
        missing("map_is_ce", claim_ce, "§3 (as a map)", "construction", crit_ce,
                ["a map objective with only the trivial path"])  # fmt: skip


def experiment_seconds(results: dict[str, Any]) -> float:
    """Seconds the experiments of ``results`` took when they ran (training + evaluation),
    whether this invocation ran them or reused them."""
    total = 0.0
    for r in results.get("experiments", {}).values():
        sec = r.get("seconds", 0.0)
        total += sum(sec.values()) if isinstance(sec, dict) else float(sec)
    total += sum(float(row["seconds"]) for row in results.get("map", {}).get("rows", []))
    for r in results.get("groups", {}).values():
        sec = r.get("seconds", 0.0)
        total += sum(sec.values()) if isinstance(sec, dict) else float(sec)
    return total


#: the claims table's two parts: (heading, kinds shown)
CLAIM_SECTIONS = (
    ("Claims about training behaviour (each can come out ✗)", ("behaviour", "finding")),
    ("Properties of the objectives (true by construction; the run verifies them)",
     ("construction",)),
)  # fmt: skip


def claims_by_section(claims: Sequence[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The claims split into :data:`CLAIM_SECTIONS` (in order; rows keep their order)."""
    return [(head, [c for c in claims if c.get("kind", "behaviour") in kinds])
            for head, kinds in CLAIM_SECTIONS]  # fmt: skip


def format_claims_table(claims: Sequence[dict[str, Any]], width: int = 110) -> str:
    """The claims table as plain text for the terminal, in its two parts."""
    lines = []
    for head, rows in claims_by_section(claims):
        if not rows:
            continue
        lines.append(f"== {head}")
        for c in rows:
            lines.append(f"{MARK[c['passed']]} {c['claim']} [{c['section']}]")
            lines.append("    " + c["measured"])
            lines.append("    sample: " + c.get("sample", "—"))
    return "\n".join(lines)


# --------------------------------------------------------------------------- figures


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def make_figures(out: Path, results: dict[str, Any]) -> dict[str, str]:
    """Write the PNGs that the results allow; returns ``{figure id: file name}``."""
    plt = _plt()
    e = results.get("experiments", {})
    made: dict[str, str] = {}

    # Figure 2: training and validation loss, AXE next to CE
    panels = [n for n in ("axe", "ce") if n in e]
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
        for ax, n in zip(axes[0], panels):
            r = e[n]
            if r["train_curve"]:
                s, v = zip(*r["train_curve"])
                ax.plot(s, v, label="train")
            if r["valid_curve"]:
                s, v = zip(*[(x[0], x[1]) for x in r["valid_curve"]])
                ax.plot(s, v, "o-", label="validation")
            ax.axhline(0.1, color="grey", ls=":", lw=1, label="0.1 nats/token")
            per = r["updates_per_epoch"]
            for k in range(1, int(r["updates"] // max(per, 1)) + 1):
                ax.axvline(k * per, color="k", alpha=0.15, lw=1)
            ax.set_yscale("log")
            ax.set_title(f"{n.upper()} (epoch = {per} updates, grey lines)")
            ax.set_xlabel("updates")
            ax.set_ylabel("loss (nats / target token)")
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / FIGURES["fig2"], dpi=110)
        plt.close(fig)
        made["fig2"] = FIGURES["fig2"]

    # Figure 3: top-4 predictions per position and the chosen alignment
    figs = e.get("axe", {}).get("analysis", {}).get("figures") or []
    if figs:
        fig, axes = plt.subplots(len(figs), 1, figsize=(1.25 * max(len(f["target"]) for f in figs) + 1.5, 2.3 * len(figs)), squeeze=False)  # fmt: skip
        for ax, f in zip(axes[:, 0], figs):
            _draw_fig3(ax, f)
        fig.tight_layout()
        fig.savefig(out / FIGURES["fig3"], dpi=110)
        plt.close(fig)
        made["fig3"] = FIGURES["fig3"]

    # heat map: p_j(y_i) with the best path, AXE and causal AXE
    hm = [
        (n, e[n]["analysis"]["figures"][0])
        for n in ("axe", "causal_axe")
        if n in e and e[n]["analysis"].get("figures")
    ]
    if hm:
        fig, axes = plt.subplots(1, len(hm), figsize=(5 * len(hm), 4.4), squeeze=False)
        for ax, (n, f) in zip(axes[0], hm):
            mat = f["p_target"]
            im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis", origin="upper")
            for i, js in enumerate(f["alpha"]):
                for j in js:
                    ax.plot(j - 1, i, "rs", ms=9, mfc="none", mew=2)
            L = len(f["target"])
            ax.set_xticks(range(L), [f"p{j + 1}" for j in range(L)], fontsize=7, rotation=90)
            ax.set_yticks(range(L), f["target"], fontsize=7)
            ax.set_xlabel("prediction j")
            ax.set_ylabel("target y_i")
            ax.set_title(f"{n}: p_j(y_i), red = best path α(i)", fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.046)
        fig.tight_layout()
        fig.savefig(out / FIGURES["heatmap"], dpi=110)
        plt.close(fig)
        made["heatmap"] = FIGURES["heatmap"]

    # tying: AXE training loss, tied vs untied output layer
    tied = [n for n in ("axe", "axe_untied") if n in e]
    if tied:
        fig, ax = plt.subplots(figsize=(6, 3.8))
        for n in tied:
            if e[n]["train_curve"]:
                s, v = zip(*e[n]["train_curve"])
                ax.plot(s, v, label="tied output layer" if n == "axe" else "separate output layer")
        ax.axhline(0.1, color="grey", ls=":", lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("updates")
        ax.set_ylabel("AXE train loss (nats / target token)")
        ax.set_title("how fast AXE collapses")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / FIGURES["tying"], dpi=110)
        plt.close(fig)
        made["tying"] = FIGURES["tying"]

    if "map" in results:
        _draw_map(plt, out / FIGURES["map"], results["map"])
        made["map"] = FIGURES["map"]

    names = [n for n in EXPERIMENTS if n in e]
    if names:
        fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 3.6))
        bleu = [e[n]["test"]["bleu"] for n in names]
        empty = [100 * e[n]["test"]["empty_share"] for n in names]
        x = range(len(names))
        ax.bar([i - 0.2 for i in x], bleu, 0.4, label="BLEU")
        ax.bar([i + 0.2 for i in x], empty, 0.4, label="empty outputs (%)")
        ax.set_xticks(list(x), names, rotation=20, fontsize=8)
        ax.set_ylim(0, 100)
        ax.legend(fontsize=8)
        ax.set_title("test set: BLEU and share of empty outputs (ε removed)")
        fig.tight_layout()
        fig.savefig(out / FIGURES["bleu"], dpi=110)
        plt.close(fig)
        made["bleu"] = FIGURES["bleu"]
    return made


def _draw_fig3(ax: Any, f: dict[str, Any]) -> None:
    """The paper's Figure 3 layout: a row of targets, a row of α(i), four rows of top-4."""
    L = len(f["target"])
    ax.set_xlim(-1.6, L)
    ax.set_ylim(-6.5, 0.8)
    ax.axis("off")
    ax.text(-1.5, 0, "target y", fontsize=8, weight="bold", va="center")
    ax.text(-1.5, -1, "α(i)", fontsize=8, weight="bold", va="center")
    ax.text(-1.5, -2.6, "p_j top 4", fontsize=8, weight="bold", va="center")
    used = {j for js in f["alpha"] for j in js}
    for i, piece in enumerate(f["target"]):
        ax.text(i, 0, piece, ha="center", va="center", fontsize=8)
        ax.text(i, -1, ",".join(map(str, f["alpha"][i])), ha="center", va="center", fontsize=8)
    for j, top in enumerate(f["top4"]):
        ax.text(j, -1.6, f"p{j + 1}", ha="center", fontsize=7, color="grey")
        for r, (piece, p) in enumerate(top):
            color = "tab:red" if (j + 1) in used and r == 0 else "black"
            ax.text(j, -2.3 - r, f"{p:.2g} {piece}", ha="center", va="center", fontsize=7,
                    color=color)  # fmt: skip
    title = f"source: {f.get('source', '')}\npath: " + " ".join(_abbrev(o) for o in f["operators"])
    ax.set_title(title, fontsize=8, loc="left")


def _abbrev(op: str) -> str:
    """``clone_prediction`` -> ``CP``: the initials of an operator of the table of moves."""
    if op not in MOVE_BY_NAME:
        raise ValueError(f"expected an operator among {tuple(MOVE_BY_NAME)}; found {op!r}")
    return "".join(word[0].upper() for word in op.split("_"))


def _draw_map(plt: Any, path: Path, m: dict[str, Any]) -> None:
    rows = {r["key"]: r for r in m["rows"]}
    subsets = an.operator_subsets()
    cols = [("sum", False), ("max", False), ("sum", True), ("max", True)]
    col_names = ["sum", "max", "sum causal", "max causal"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    from latalign.reproduce.experiments import objective_key

    for ax, which in zip(axes, ("predicted", "measured")):
        for yi, ops in enumerate(subsets):
            for xi, (agg, causal) in enumerate(cols):
                key = objective_key(ops, agg, causal)
                if which == "predicted":
                    p = an.predict_objective(ops, causal)
                    cls = "degenerate" if p.degenerate else "healthy"
                    txt = "= CE" if p.only_trivial_path else ""
                else:
                    r = rows.get(key)
                    cls = r["measured"] if r else None
                    txt = (
                        f"{r['final_valid_loss']:.2f} nats\nBLEU {r['bleu']:.0f}"
                        + ("" if r["agrees"] else "\n✗")
                        if r
                        else "not run"
                    )
                color = {"degenerate": "#e06666", "healthy": "#93c47d", None: "#eeeeee"}[cls]
                ax.add_patch(plt.Rectangle((xi, yi), 1, 1, color=color, ec="white"))
                ax.text(xi + 0.5, yi + 0.5, txt, ha="center", va="center", fontsize=7)
        ax.set_xlim(0, 4)
        ax.set_ylim(len(subsets), 0)
        ax.set_xticks([x + 0.5 for x in range(4)], col_names, fontsize=8)
        ax.set_yticks(
            [y + 0.5 for y in range(len(subsets))],
            ["+".join(_abbrev(o) for o in ops) for ops in subsets],
            fontsize=8,
        )
        ax.set_title(
            "paper's prediction (red = degenerate)"
            if which == "predicted"
            else "measured (valid loss, greedy BLEU)",
            fontsize=10,
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- the document


def build_blocks(
    results: dict[str, Any], figures: dict[str, str], groups: Sequence[tuple] = ()
) -> list[tuple]:
    """The report as blocks: ``("h", level, text)``, ``("p", text)``, ``("table", headers,
    rows)``, ``("img", file, caption)``, ``("code", text)``; ``groups`` (the experiment
    groups' sections) go after the map."""
    meta = results["meta"]
    e = results.get("experiments", {})
    b: list[tuple] = []
    b.append(("h", 1, "Can latent alignments improve autoregressive MT? — reproduction report"))
    b.append(("p", f"Preset **{meta['preset']['name']}** ({meta['preset']['description']}); "
              f"seed {meta['seed']}; data: {meta['data'] or 'built-in synthetic corpus'}; "
              f"wall time of this invocation {meta['wall_seconds'] / 60:.1f} min; the "
              f"experiments' own time (training + evaluation, also of reused ones) "
              f"{experiment_seconds(results) / 60:.1f} min (torch threads: {meta['threads']})."))  # fmt: skip
    b.append(("p", "Command:"))
    b.append(("code", meta["command"]))
    b.append(("p", f"Units: {meta['units']}."))
    for head, rows in claims_by_section(results["claims"]):
        b.append(("h", 2, head))
        b.append(
            (
                "table",
                ["", "claim", "paper", "measured", "sample", "✓ means"],
                [
                    [MARK[c["passed"]], c["claim"], c["section"], c["measured"],
                     c.get("sample", "—"), c["criterion"]]
                    for c in rows
                ],
            )
        )  # fmt: skip
    b.append(("p", "✓ = the measurement supports the claim by the stated criterion, "
              "✗ = it does not, — = not run, undecided (the run was too short to tell) or a "
              "finding without a criterion. Behaviour claims measure trained models and can "
              "fail; properties hold for any model and are checked as a test of the code."))  # fmt: skip
    if e:
        b.append(("h", 2, "Translation quality and empty outputs (test set)"))
        rows = []
        for n in EXPERIMENTS:
            if n not in e:
                continue
            r = e[n]
            rows.append([
                n, str(r["updates"]), _f(r["final_train_loss"]), _f(r["final_valid_loss"]),
                _f(r.get("final_valid_ce")), _f(r["test"]["bleu"], 2), _f(r["test"]["chrf"], 1),
                _pct(r["test"]["empty_share"]), str(r["test"]["beam"]),
            ])  # fmt: skip
        b.append(("table", ["experiment", "updates", "train loss", "valid loss",
                            "valid CE", "BLEU", "chrF", "empty", "beam"], rows))  # fmt: skip
        b.append(("p", "Losses are each run's own objective in nats per target token; "
                  "valid CE is the same model's plain cross entropy of the reference under "
                  "teacher forcing (a degenerate model has a tiny loss and a huge CE)."))  # fmt: skip
        if "bleu" in figures:
            b.append(("img", figures["bleu"], "BLEU and empty-output share per experiment"))
    if "fig2" in figures:
        b.append(("h", 2, "Figure 2: loss curves"))
        b.append(("img", figures["fig2"], "training and validation loss (nats/token) against "
                  "updates, AXE next to cross entropy; grey vertical lines are epoch ends"))  # fmt: skip
    if "fig3" in figures:
        b.append(("h", 2, "Figure 3: the chosen alignment"))
        b.append(("img", figures["fig3"], "AXE model, validation sentences: targets, α(i) "
                  "(1-based prediction positions scoring y_i), and the top-4 predictions of each "
                  "p_j (red: the top prediction of a position used by the path)"))  # fmt: skip
    if "heatmap" in figures:
        b.append(("img", figures["heatmap"], "p_j(y_i) with the best path (red squares)"))
    if "tying" in figures:
        b.append(("h", 2, "Finding: tying the output layer makes the collapse nearly free"))
        b.append(("img", figures["tying"], "AXE training loss with tied and separate output "
                  "layers"))  # fmt: skip
    if "doubled_ctc" in e:
        d = e["doubled_ctc"]
        b.append(("h", 2, "Beyond the paper: CTC with doubled predictions"))
        b.append(("p", "Decoder input `bos bos y1 y1 … yn yn` (2(n+1) positions), real CTC "
                  "against `y1 … yn eos`; inference feeds each pair's last non-blank prediction "
                  "twice (ε if none) and collapses with the CTC rule. "
                  f"Valid loss {_f(d['final_valid_loss'])} nats/token after {d['updates']} "
                  f"updates; greedy BLEU {_f(d['test']['bleu'], 2)}, empty "
                  f"{_pct(d['test']['empty_share'])}; mean p_t(input_t) = "
                  f"{_f(d['analysis']['copy_probability'])}."))  # fmt: skip
    if "map" in results:
        m = results["map"]
        b.append(("h", 2, "Beyond the paper: the theorem as a map"))
        b.append(("p", "Prediction rule (derived by walking the m = n grid with the moves of "
                  "align.objective.MOVES, the paper's Table 1): an "
                  "objective is degenerate iff some complete path contains a move where p_j "
                  "scores y_i with i < j. Measured rule: " + m["rule"] + "."))  # fmt: skip
        rows = [
            [r["key"], "yes" if r.get("informative", not r["only_trivial_path"]) else "= CE",
             r["predicted"], r["measured"], MARK[r["agrees"]],
             _f(r["final_valid_loss"]), _f(r["final_valid_ce"]), _f(r["bleu"], 1),
             _pct(r["empty_share"]), r["prediction_note"]]
            for r in m["rows"]
        ]  # fmt: skip
        b.append(("table", ["objective", "informative", "predicted", "measured", "agree",
                            "valid loss", "valid CE", "BLEU", "empty", "note"], rows))  # fmt: skip
        b.append(("p", "Informative objectives have more than the trivial path at m = n; the "
                  "others are cross entropy by construction (their agreement is no evidence)."))  # fmt: skip
        if "map" in figures:
            b.append(("img", figures["map"], "left: the paper's prediction; right: measured"))
    b += list(groups)
    notes = _notes(results)
    if notes:
        b.append(("h", 2, "Notes on these numbers"))
        for note in notes:
            b.append(("p", "- " + note))
    b.append(("h", 2, "Examples (test set)"))
    for n in EXPERIMENTS:
        if n in e and e[n]["test"].get("examples"):
            src, ref, hyp = e[n]["test"]["examples"][0]
            b.append(("p", f"**{n}** — source: {src} / reference: {ref} / output: "
                      f"{hyp or '(empty)'}"))  # fmt: skip
    return b


def _notes(results: dict[str, Any]) -> list[str]:
    """Caveats computed from the results (each says what a number does and does not show)."""
    e = results.get("experiments", {})
    out = []
    if "ctc" in e and "ce" in e:
        c = e["ctc"]["analysis"]["ctc_vs_ce"]
        out.append(
            f"CTC at m = n is infinite for the {_pct(c['repeat_share'])} of sentences with equal "
            "neighbours; training uses zero_infinity, so those sentences give no gradient and the "
            f"CTC model's cross entropy ({_f(e['ctc'].get('final_valid_ce'))} nats/token) is "
            f"above the CE model's ({_f(e['ce'].get('final_valid_ce'))}); its own loss averages "
            "over all target tokens, infeasible sentences counting 0."
        )
    if "axe" in e:
        out.append(
            "Logged training losses are averages over each logging interval with dropout on; "
            "validation losses are without dropout, hence lower."
        )
    m = results.get("map")
    if m:
        ref = next((r for r in m["rows"] if r["key"] == m["reference"]), None)
        if ref is not None and ref["bleu"] < 20:
            out.append(
                f"Each map objective is trained for {ref['updates']} updates only: the "
                f"cross-entropy reference reaches greedy BLEU {_f(ref['bleu'], 1)}, so BLEU "
                "decides nothing at this length and the rule leaves it out; the classification "
                "rests on the near-zero loss, empty outputs and the teacher-forced cross "
                f"entropy of the reference translations (reference: "
                f"{_f(ref.get('final_valid_ce'))} nats/token)."
            )
    if "axe_untied" in e:
        u = e["axe_untied"]
        tied = e["axe"]["updates"] if "axe" in e else None
        length = (
            f"as long as the tied one ({u['updates']} updates)"
            if tied == u["updates"]
            else f"{u['updates']} updates long"
            + (f" (the tied one: {tied})" if tied is not None else "")
        )
        out.append(
            f"The untied AXE run is {length}; that it still translates says the collapse is "
            "slower without tying, not that it never comes."
        )
    return out


def render_markdown(blocks: list[tuple]) -> str:
    out = []
    for blk in blocks:
        kind = blk[0]
        if kind == "h":
            out.append("#" * blk[1] + " " + blk[2])
        elif kind == "p":
            out.append(blk[1])
        elif kind == "code":
            out.append("```\n" + blk[1] + "\n```")
        elif kind == "table":
            headers, rows = blk[1], blk[2]
            cell = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
            out.append("| " + " | ".join(cell(h) for h in headers) + " |")
            out[-1] += "\n|" + "---|" * len(headers)
            for r in rows:
                out[-1] += "\n| " + " | ".join(cell(c) for c in r) + " |"
        elif kind == "img":
            out.append(f"![{blk[2]}]({blk[1]})\n\n*{blk[2]}*")
    return "\n\n".join(out) + "\n"


def _inline(text: str) -> str:
    s = html.escape(text)
    parts = s.split("**")
    s = "".join(f"<b>{p}</b>" if k % 2 else p for k, p in enumerate(parts))
    parts = s.split("`")
    return "".join(f"<code>{p}</code>" if k % 2 else p for k, p in enumerate(parts))


def render_html(blocks: list[tuple], out: Path) -> str:
    body = []
    for blk in blocks:
        kind = blk[0]
        if kind == "h":
            body.append(f"<h{blk[1]}>{html.escape(blk[2])}</h{blk[1]}>")
        elif kind == "p":
            body.append(f"<p>{_inline(blk[1])}</p>")
        elif kind == "code":
            body.append(f"<pre>{html.escape(blk[1])}</pre>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(str(h))}</th>" for h in blk[1])
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                for r in blk[2]
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode((out / blk[1]).read_bytes()).decode("ascii")
            body.append(
                f'<figure><img alt="{html.escape(blk[2])}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(blk[2])}</figcaption></figure>"
            )
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse;font-size:0.85em}td,th{border:1px solid #ccc;"
        "padding:3px 6px;vertical-align:top}img{max-width:100%}pre{background:#f4f4f4;"
        "padding:0.5em;white-space:pre-wrap}"
    )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>latalign reproduce</title>'
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def group_sections(out: Path, results: dict[str, Any]) -> list[tuple]:
    """The report sections of the experiment groups (a heading each, then its blocks)."""
    from latalign.reproduce.groups import load_groups

    groups = load_groups()
    blocks: list[tuple] = []
    for name, result in results.get("groups", {}).items():
        g = groups.get(name)
        if g is not None and g.report is not None:
            blocks.append(("h", 2, f"{g.description} (`{name}`)"))
            blocks += g.report(results, result, out)
    return blocks


def write_report(out: Path, results: dict[str, Any]) -> None:
    """Figures, ``report.md`` and the self-contained ``report.html`` into ``out``."""
    figures = make_figures(out, results)
    blocks = build_blocks(results, figures, group_sections(out, results))
    atomic_write(out / "report.md", render_markdown(blocks))
    atomic_write(out / "report.html", render_html(blocks, out))
