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


def build_claims(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per claim: ``id``, ``claim``, ``section``, ``measured`` (text), ``values``
    (the numbers), ``criterion`` (what ✓ means) and ``passed`` (True/False, None = not run
    or not a pass/fail finding)."""
    e = results.get("experiments", {})
    rows: list[dict[str, Any]] = []

    def add(cid, claim, section, criterion, measured, values, passed):
        rows.append(
            {"id": cid, "claim": claim, "section": section, "criterion": criterion,
             "measured": measured, "values": values, "passed": passed}
        )  # fmt: skip

    def missing(cid, claim, section, criterion, needs):
        add(cid, claim, section, criterion, f"not run (needs {', '.join(needs)})", {}, None)

    claim = "CTC with m = n is cross entropy"
    crit = "max |CTC − CE| < 1e-4 nats/sentence without equal neighbours; CTC = inf with them"
    src = next((n for n in ("ctc", "ce", "label_smoothed_ce") if n in e), None)
    if src is not None:
        c = e[src]["analysis"]["ctc_vs_ce"]
        add("ctc_is_ce", claim, "§3", crit,
            f"{src} model: max |CTC − CE| = {_f(c['max_abs_diff'], 6)} nats over "
            f"{c['n_sentences'] - c['repeat_count']} sentences; {c['repeat_count']} "
            f"({_pct(c['repeat_share'])}) have equal neighbours, CTC = inf for "
            f"{c['repeat_infinite']}", c,
            c["max_abs_diff"] < 1e-4 and c["repeat_infinite"] == c["repeat_count"])  # fmt: skip
    else:
        missing("ctc_is_ce", claim, "§3", crit, ["ctc or ce"])

    claim = "AXE training and validation loss go near zero within one epoch"
    crit = "train loss < 0.1 nats/token by epoch 1 and final valid loss < 0.2 nats/token"
    if "axe" in e:
        a = e["axe"]
        ft, fv = a["first_train_below_0.1"], a["first_valid_below_0.1"]
        ok = ft is not None and ft["epoch"] <= 1.0 and a["final_valid_loss"] < 0.2
        span = f"never in {a['updates']} updates ({_f(a['updates'] / a['updates_per_epoch'], 2)} epochs)"

        def when(r: dict[str, Any] | None) -> str:
            return f"at update {r['step']} (epoch {_f(r['epoch'], 2)})" if r else span

        add("axe_near_zero", claim, "§4, Fig. 2", crit,
            f"train < 0.1 {when(ft)}; valid < 0.1 {when(fv)}; final train "
            f"{_f(a['final_train_loss'])}, valid {_f(a['final_valid_loss'])} nats/token",
            {"first_train_below_0.1": ft, "first_valid_below_0.1": fv,
             "final_train_loss": a["final_train_loss"], "final_valid_loss": a["final_valid_loss"]},
            ok)  # fmt: skip
    else:
        missing("axe_near_zero", claim, "§4, Fig. 2", crit, ["axe"])

    claim = "AXE decodes empty sequences, 0 BLEU"
    crit = "empty share ≥ 0.9 and BLEU < 1 (beam search, ε removed)"
    if "axe" in e:
        t = e["axe"]["test"]
        add("axe_empty", claim, "§4", crit,
            f"{_pct(t['empty_share'])} empty, BLEU {_f(t['bleu'], 2)} (beam {t['beam']}, "
            f"{t['n_sentences']} test sentences)",
            {"empty_share": t["empty_share"], "bleu": t["bleu"]},
            t["empty_share"] >= 0.9 and t["bleu"] < 1.0)  # fmt: skip
    else:
        missing("axe_empty", claim, "§4", crit, ["axe"])

    claim = "the chosen alignment is constant: delimiter, align…, clone_prediction"
    crit = "share ≥ 0.9 of validation sentences"
    if "axe" in e:
        p = e["axe"]["analysis"]["paths"]
        add("constant_alignment", claim, "§5, Fig. 3", crit,
            f"{_pct(p['degenerate_share'])} of {p['n_sentences']} validation sentences",
            {"degenerate_share": p["degenerate_share"], "n_sentences": p["n_sentences"]},
            p["degenerate_share"] >= 0.9)  # fmt: skip
    else:
        missing("constant_alignment", claim, "§5, Fig. 3", crit, ["axe"])

    claim = "each prediction copies its input"
    crit = "mean p_j(y_{j−1}) ≥ 0.9 under teacher forcing"
    if "axe" in e:
        cp = e["axe"]["analysis"]["copy_probability"]
        ce_cp = e.get("ce", {}).get("analysis", {}).get("copy_probability")
        add("copies_input", claim, "§5", crit,
            f"mean p_j(y_(j−1)) = {_f(cp)} over {e['axe']['analysis']['copy_positions']} "
            f"positions (cross entropy model: {_f(ce_cp)})",
            {"copy_probability": cp, "ce_copy_probability": ce_cp}, cp >= 0.9)  # fmt: skip
    else:
        missing("copies_input", claim, "§5", crit, ["axe"])

    claim = "the loss floor is about −2·log(0.5)/n"
    crit = "floor ≤ measured valid loss ≤ 2 × floor (0.9 × floor allowed for noise)"
    if "axe" in e:
        a = e["axe"]
        n = a["analysis"]["mean_target_length"]
        bound = an.loss_floor(n)
        v = a["final_valid_loss"]
        add("loss_floor", claim, "§5", crit,
            f"valid {_f(v)} vs floor {_f(bound)} nats/token at mean length {_f(n, 2)} "
            f"(ratio {_f(v / bound, 2)})",
            {"valid_loss": v, "floor": bound, "mean_target_length": n, "ratio": v / bound},
            0.9 * bound <= v <= 2.0 * bound)  # fmt: skip
    else:
        missing("loss_floor", claim, "§5", crit, ["axe"])

    claim = "causal AXE picks the trivial alignment in ~98% of sentences"
    crit = "trivial share ≥ 0.9"
    if "causal_axe" in e:
        p = e["causal_axe"]["analysis"]["paths"]
        others = "; ".join(f"{o['summary']} ({o['count']})" for o in p["other_paths"][:3])
        add("causal_trivial", claim, "§5", crit,
            f"{_pct(p['trivial_share'])} trivial of {p['n_sentences']}; others: {others or 'none'}",
            {"trivial_share": p["trivial_share"], "other_paths": p["other_paths"]},
            p["trivial_share"] >= 0.9)  # fmt: skip
    else:
        missing("causal_trivial", claim, "§5", crit, ["causal_axe"])

    claim = "cross entropy translates"
    crit = "BLEU ≥ 10 and empty share < 0.05 for CE (and label-smoothed CE if run)"
    base = [n for n in ("ce", "label_smoothed_ce") if n in e]
    if base:
        parts = [
            f"{n}: BLEU {_f(e[n]['test']['bleu'], 2)}, chrF {_f(e[n]['test']['chrf'], 1)}, "
            f"empty {_pct(e[n]['test']['empty_share'])}"
            for n in base
        ]
        ok = all(e[n]["test"]["bleu"] >= 10 and e[n]["test"]["empty_share"] < 0.05 for n in base)
        add("ce_translates", claim, "baseline", crit, "; ".join(parts),
            {n: {k: e[n]["test"][k] for k in ("bleu", "chrf", "empty_share")} for n in base},
            ok)  # fmt: skip
    else:
        missing("ce_translates", claim, "baseline", crit, ["ce"])

    claim = "doubled CTC (each target token fed twice) is gamed too"
    crit = "valid loss < 0.25 × CE's and (empty ≥ 0.5 or BLEU < 0.5 × CE's)"
    if "doubled_ctc" in e and "ce" in e:
        d, c = e["doubled_ctc"], e["ce"]
        ok = an.classify_measured(
            d["final_valid_loss"], d["test"]["empty_share"], d["test"]["bleu"],
            reference_loss=c["final_valid_loss"], reference_bleu=c["test"]["bleu"],
        ) == "degenerate"  # fmt: skip
        add("doubled_ctc", claim, "§5 (argued, run here)", crit,
            f"valid {_f(d['final_valid_loss'])} nats/token (CE {_f(c['final_valid_loss'])}); "
            f"greedy BLEU {_f(d['test']['bleu'], 2)}, empty {_pct(d['test']['empty_share'])}; "
            f"mean p_t(input_t) {_f(d['analysis']['copy_probability'])}",
            {"valid_loss": d["final_valid_loss"], "bleu": d["test"]["bleu"],
             "empty_share": d["test"]["empty_share"],
             "copy_probability": d["analysis"]["copy_probability"]}, ok)  # fmt: skip
    else:
        missing("doubled_ctc", claim, "§5 (argued, run here)", crit, ["doubled_ctc", "ce"])

    claim = "degenerate exactly when some operator lets p_j score y_i with i < j"
    crit = "measured class = predicted class for every objective run"
    if "map" in results:
        m = results["map"]
        rows_ = m["rows"]
        bad = [r["key"] for r in rows_ if not r["agrees"]]
        add("theorem_map", claim, "§5 (as a map)", crit,
            f"{sum(r['agrees'] for r in rows_)}/{len(rows_)} objectives agree"
            + (f"; disagree: {', '.join(bad)}" if bad else ""),
            {"agreement": m["agreement"], "n_objectives": len(rows_), "disagree": bad},
            not bad)  # fmt: skip
    else:
        missing("theorem_map", claim, "§5 (as a map)", crit, ["map"])

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
        add("tying", claim, "finding", crit, "; ".join(parts), vals, None)
    else:
        missing("tying", claim, "finding", crit, ["axe", "axe_untied"])
    return rows


def experiment_seconds(results: dict[str, Any]) -> float:
    """Seconds the experiments of ``results`` took when they ran (training + evaluation),
    whether this invocation ran them or reused them."""
    total = 0.0
    for r in results.get("experiments", {}).values():
        sec = r.get("seconds", 0.0)
        total += sum(sec.values()) if isinstance(sec, dict) else float(sec)
    total += sum(float(row["seconds"]) for row in results.get("map", {}).get("rows", []))
    return total


def format_claims_table(claims: Sequence[dict[str, Any]], width: int = 110) -> str:
    """The claims table as plain text for the terminal."""
    lines = []
    for c in claims:
        head = f"{MARK[c['passed']]} {c['claim']} [{c['section']}]"
        lines.append(head)
        lines.append("    " + c["measured"])
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
    return {"align": "A", "clone_target": "CT", "clone_prediction": "CP", "delimiter": "D"}[op]


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


def build_blocks(results: dict[str, Any], figures: dict[str, str]) -> list[tuple]:
    """The report as blocks: ``("h", level, text)``, ``("p", text)``, ``("table", headers,
    rows)``, ``("img", file, caption)``, ``("code", text)``."""
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
    b.append(("h", 2, "Claims"))
    b.append(
        (
            "table",
            ["", "claim", "paper", "measured", "✓ means"],
            [
                [MARK[c["passed"]], c["claim"], c["section"], c["measured"], c["criterion"]]
                for c in results["claims"]
            ],
        )
    )
    b.append(("p", "✓ = the measurement supports the claim by the stated criterion, "
              "✗ = it does not, — = not run or a finding without a criterion."))  # fmt: skip
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
        b.append(("p", "Prediction rule (derived by walking the m = n grid of SPEC.md): an "
                  "objective is degenerate iff some complete path contains a move where p_j "
                  "scores y_i with i < j. Measured rule: " + m["rule"] + "."))  # fmt: skip
        rows = [
            [r["key"], r["predicted"], r["measured"], MARK[r["agrees"]],
             _f(r["final_valid_loss"]), _f(r["final_valid_ce"]), _f(r["bleu"], 1),
             _pct(r["empty_share"]), r["prediction_note"]]
            for r in m["rows"]
        ]  # fmt: skip
        b.append(("table", ["objective", "predicted", "measured", "agree", "valid loss",
                            "valid CE", "BLEU", "empty", "note"], rows))  # fmt: skip
        if "map" in figures:
            b.append(("img", figures["map"], "left: the paper's prediction; right: measured"))
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
        if ref is not None and ref["bleu"] < 10:
            out.append(
                f"Each map objective is trained for {ref['updates']} updates only: the "
                f"cross-entropy reference reaches greedy BLEU {_f(ref['bleu'], 1)}, so the BLEU "
                "half of the measured rule carries little information at this length; the "
                "classification rests on the near-zero-loss test and on empty outputs."
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


def write_report(out: Path, results: dict[str, Any]) -> None:
    """Figures, ``report.md`` and the self-contained ``report.html`` into ``out``."""
    figures = make_figures(out, results)
    blocks = build_blocks(results, figures)
    atomic_write(out / "report.md", render_markdown(blocks))
    atomic_write(out / "report.html", render_html(blocks, out))
