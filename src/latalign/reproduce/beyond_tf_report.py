"""The closing question's claims (one per regime, and the answer as a finding) and its
report section: predictions beside measurements, from scratch and fine-tuned, a figure and
the computed answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latalign.reproduce.beyond_tf_rules import (
    CRITERIA,
    CRITERION_LABEL,
    FINETUNE_PHASE,
    PREDICTIONS,
    SCRATCH_PHASE,
    RegimeRow,
)
from latalign.reproduce.figures import pyplot
from latalign.reproduce.records import MARK, Claim, ClaimSpec, Results
from latalign.reproduce.render import Block, pct

FIGURE = "beyond_tf.png"
ANSWER = ClaimSpec(
    "beyond_tf_answer",
    "the closing question: does any regime make latent alignments work in an AR model?",
    "§6 (run here)", "finding", "—",
)  # fmt: skip


def claims(results: Results, result: Any) -> list[Claim]:
    """One behaviour row per regime (did the collapse predictions hold, from scratch and
    fine-tuned), and the answer as a finding."""
    out = []
    for key in result.regimes:
        mine: list[RegimeRow] = [r for r in result.rows if r.regime == key and r.holds is not None]
        if not mine:
            continue
        text = "; ".join(
            f"{r.phase} {CRITERION_LABEL[r.criterion]}: {r.measured} (BLEU {r.bleu:.1f}, "
            f"{100 * r.empty_share:.0f}% empty, copy path "
            f"{100 * max(r.degenerate_share, r.copy_path_share):.0f}%)"
            for r in mine
        )
        first = mine[0]
        predicted = sorted({f"{CRITERION_LABEL[r.criterion]} {r.predicted}" for r in mine})
        spec = ClaimSpec(
            f"beyond_tf_{key}", f"{first.label}: the argument predicts " + ", ".join(predicted),
            "§6 (closing question, run here)", "behaviour",
            "measured collapse = predicted (rule in the closing-question section)",
        )  # fmt: skip
        values = {
            f"{r.phase}/{r.criterion}": {"bleu": r.bleu, "measured": r.measured,
                                         "empty_share": r.empty_share}
            for r in mine
        }  # fmt: skip
        sample = (f"{first.n_test} test sentences, beam {first.beam}; {first.n_valid} "
                  "validation sentences for paths")  # fmt: skip
        out.append(spec.measured(text, sample, values, all(bool(r.holds) for r in mine)))
    out.append(ANSWER.measured(result.answer, "every run of the closing-question section", {},
                               None))  # fmt: skip
    return out


def _fixed(x: float | None, digits: int) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def table(rows: list[RegimeRow]) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of a closing-question table."""
    headers = ["regime", "criterion", "updates", "predicted", "measured", "holds", "BLEU",
               "chrF", "empty", "degenerate path", "p_j(input_j)", "valid CE"]  # fmt: skip
    cells = []
    for r in rows:
        deg = pct(r.degenerate_share, 0)
        if r.regime.startswith("delayed") and r.copy_path_share != r.degenerate_share:
            deg += f" (shift-k {pct(r.copy_path_share, 0)})"
        cells.append([
            r.regime, CRITERION_LABEL[r.criterion], str(r.updates), r.predicted or "?",
            r.measured or "?", MARK[r.holds], _fixed(r.bleu, 1), _fixed(r.chrf, 1),
            pct(r.empty_share, 0), deg, _fixed(r.copy_probability, 3), _fixed(r.valid_ce, 3),
        ])  # fmt: skip
    return headers, cells


def figure(rows: list[RegimeRow], path: Path) -> None:
    """BLEU and empty share per regime × criterion (grouped bars; fine-tuned runs above,
    from-scratch runs below)."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(13, 7.5))
    for row_i, phase in enumerate((FINETUNE_PHASE, SCRATCH_PHASE)):
        sub = [r for r in rows if r.phase == phase]
        regimes = list(dict.fromkeys(r.regime for r in sub))
        by = {(r.regime, r.criterion): r for r in sub}
        width = 0.8 / len(CRITERIA)
        for ax, key, title in (
            (axes[row_i][0], "bleu", "BLEU (beam 5)"),
            (axes[row_i][1], "empty_share", "empty outputs (share)"),
        ):
            for i, c in enumerate(CRITERIA):
                xs = [j + (i - 1) * width for j, reg in enumerate(regimes) if (reg, c) in by]
                ys = [getattr(by[(reg, c)], key) for reg in regimes if (reg, c) in by]
                if xs:
                    ax.bar(xs, ys, width, label=CRITERION_LABEL[c], color=f"C{i}")
            ax.set_xticks(range(len(regimes)))
            ax.set_xticklabels(regimes, rotation=20, ha="right", fontsize=8)
            what = "fine-tuned from CE" if phase == FINETUNE_PHASE else "from scratch"
            ax.set_title(f"{title}, {what}", fontsize=10)
            if key == "empty_share":
                ax.set_ylim(0, 1.05)
            else:  # headroom for the legend
                ax.set_ylim(0, 1.25 * max([1.0, *(r.bleu for r in sub)]))
        axes[row_i][0].legend(fontsize=8, loc="upper center", ncol=3, framealpha=0.9)
    fig.suptitle("The closing question: regime × criterion")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(results: Results, result: Any, out: Path) -> list[Block]:
    """The section "The closing question": predictions beside measurements (from scratch and
    fine-tuned), the figure and the computed answer."""
    rows: list[RegimeRow] = result.rows
    figure(rows, out / FIGURE)
    why = [[k, CRITERION_LABEL[c], "collapse" if p.collapse else "no collapse", p.why]
           for (k, c), p in PREDICTIONS.items()
           if any(r.kind == k for r in rows)]  # fmt: skip
    init = result.init
    return [
        ("h", 3, "The closing question"),
        ("p", "The paper ends: “perhaps a future alternative [to teacher forcing] could reopen "
         "the discussion on applying latent alignment objectives to autoregressive "
         "models.” Each regime below changes what the decoder is fed. Predictions were "
         "written down before the runs (`latalign.reproduce.beyond_tf_rules.PREDICTIONS`, "
         "table below). Rule: " + result.rule + "."),
        ("h", 3, "Does the exploit appear? (from scratch)"),
        ("p", "AXE and causal AXE trained from scratch under each regime (teacher-forcing rows: "
         "the reproduction's own axe/causal_axe runs)."),
        ("table", *table([r for r in rows if r.phase == SCRATCH_PHASE])),
        ("h", 3, "Does it help? (fine-tuned from the CE model)"),
        ("p", f"Every run starts from the reproduction's cross-entropy model ({init['updates']} "
         f"updates, {init['bleu']:.1f} BLEU) and trains for the same number of updates "
         "(fresh optimizer and warm-up) under one regime and criterion."),
        ("table", *table([r for r in rows if r.phase == FINETUNE_PHASE])),
        ("p", "degenerate path: share of validation sentences whose best AXE path (causal for "
         "causal AXE) is `delimiter, align…, clone_prediction` (for delayed k also the "
         "path shifted by k); p_j(input_j): mean probability of the token the decoder is "
         "fed (copying); valid CE: nats/token with the inference-time input (delayed "
         "inputs for delayed k)."),
        ("img", FIGURE, "BLEU and empty share per regime × criterion"),
        ("h", 3, "What the argument predicted"),
        ("table", ["regime", "criterion", "predicted", "why"], why),
        ("h", 3, "The answer"),
        ("p", result.answer),
        ("p", f"Cost: {result.cpu_seconds:.0f} s of CPU summed over the "
         f"{len([r for r in rows if r.reused is None])} runs (each measured when it was "
         f"trained); {result.wall_seconds:.0f} s wall in this invocation "
         f"({result.workers} process(es); runs finished earlier are reused)."),
    ]  # fmt: skip
