"""``report.md`` and ``report.html``: the header, the claims tables, then each experiment
group's section (the paper's first: test-set table, figures, doubled CTC, the map, notes,
examples), rendered by :mod:`.render` from the typed results."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from latalign.io import atomic_write
from latalign.reproduce.figures import make_figures
from latalign.reproduce.presets import EXPERIMENTS
from latalign.reproduce.records import Claim, Results
from latalign.reproduce.render import Block, num, pct, render_html, render_markdown

#: the claims table's two parts: (heading, kinds shown)
CLAIM_SECTIONS = (
    ("Claims about training behaviour (each can come out ✗)", ("behaviour", "finding")),
    ("Properties of the objectives (true by construction; the run verifies them)",
     ("construction",)),
)  # fmt: skip


#: the figures after the test-set table: (figure id, section heading or None, caption)
FIGURE_SECTIONS = (
    ("fig2", "Figure 2: loss curves", "training and validation loss (nats/token) against "
     "updates, AXE next to cross entropy; grey vertical lines are epoch ends"),
    ("fig3", "Figure 3: the chosen alignment", "AXE model, validation sentences: targets, α(i) "
     "(1-based prediction positions scoring y_i), and the top-4 predictions of each p_j (red: "
     "the top prediction of a position used by the path)"),
    ("heatmap", None, "p_j(y_i) with the best path (red squares)"),
    ("tying", "Finding: tying the output layer makes the collapse nearly free",
     "AXE training loss with tied and separate output layers"),
)  # fmt: skip


def claims_by_section(claims: Sequence[Claim]) -> list[tuple[str, list[Claim]]]:
    """The claims split into :data:`CLAIM_SECTIONS` (in order; rows keep their order)."""
    return [(head, [c for c in claims if c.kind in kinds]) for head, kinds in CLAIM_SECTIONS]


def format_claims_table(claims: Sequence[Claim]) -> str:
    """The claims table as plain text for the terminal, in its two parts."""
    lines = []
    for head, rows in claims_by_section(claims):
        if not rows:
            continue
        lines.append(f"== {head}")
        for c in rows:
            lines.append(f"{c.mark} {c.claim} [{c.section}]")
            lines.append("    " + c.measured)
            lines.append("    sample: " + c.sample)
    return "\n".join(lines)


def experiment_seconds(results: Results) -> float:
    """Seconds the experiments of ``results`` took when they ran (training + evaluation),
    whether this invocation ran them or reused them."""
    total = 0.0
    for r in results.experiments.values():
        if r is results.map:
            total += sum(row.seconds for row in r.rows)
            continue
        sec = r.get("seconds", 0.0) if isinstance(r, dict) else getattr(r, "seconds", 0.0)
        total += sum(sec.values()) if isinstance(sec, dict) else float(sec or 0.0)
    return total


def header_blocks(results: Results) -> list[Block]:
    """Title, preset, command, units and the claims tables."""
    meta = results.meta
    b: list[Block] = [
        ("h", 1, "Can latent alignments improve autoregressive MT? — reproduction report"),
        ("p", f"Preset **{meta['preset']['name']}** ({meta['preset']['description']}); "
         f"seed {meta['seed']}; data: {meta['data'] or 'built-in synthetic corpus'}; "
         f"wall time of this invocation {meta['wall_seconds'] / 60:.1f} min; the "
         f"experiments' own time (training + evaluation, also of reused ones) "
         f"{experiment_seconds(results) / 60:.1f} min (torch threads: {meta['threads']})."),
        ("p", "Command:"),
        ("code", meta["command"]),
        ("p", f"Units: {meta['units']}."),
    ]  # fmt: skip
    for head, rows in claims_by_section(results.claims):
        b.append(("h", 2, head))
        b.append(("table", ["", "claim", "paper", "measured", "sample", "✓ means"],
                  [[c.mark, c.claim, c.section, c.measured, c.sample, c.criterion]
                   for c in rows]))  # fmt: skip
    b.append(("p", "✓ = the measurement supports the claim by the stated criterion, "
              "✗ = it does not, — = not run, undecided (the run was too short to tell) or a "
              "finding without a criterion. Behaviour claims measure trained models and can "
              "fail; properties hold for any model and are checked as a test of the code."))  # fmt: skip
    return b


def paper_blocks(results: Results, out: Path) -> list[Block]:
    """The paper's section: the test-set table, the figures (written into ``out``), doubled
    CTC, the map, notes on the numbers and examples."""
    figures = make_figures(out, results)
    e = results.paper()
    b: list[Block] = []
    if e:
        b.append(("h", 2, "Translation quality and empty outputs (test set)"))
        rows = [
            [n, str(r.updates), num(r.final_train_loss), num(r.final_valid_loss),
             num(r.final_valid_ce), num(r.test.bleu, 2), num(r.test.chrf, 1),
             pct(r.test.empty_share), str(r.test.beam)]
            for n in EXPERIMENTS if (r := e.get(n)) is not None
        ]  # fmt: skip
        b.append(("table", ["experiment", "updates", "train loss", "valid loss",
                            "valid CE", "BLEU", "chrF", "empty", "beam"], rows))  # fmt: skip
        b.append(("p", "Losses are each run's own objective in nats per target token; "
                  "valid CE is the same model's plain cross entropy of the reference under "
                  "teacher forcing (a degenerate model has a tiny loss and a huge CE)."))  # fmt: skip
        if "bleu" in figures:
            b.append(("img", figures["bleu"], "BLEU and empty-output share per experiment"))
    for key, heading, caption in FIGURE_SECTIONS:
        if key in figures:
            b += ([("h", 2, heading)] if heading else []) + [("img", figures[key], caption)]
    d = e.get("doubled_ctc")
    if d is not None:
        cp = d.analysis.copy_probability if d.analysis is not None else None
        b.append(("h", 2, "Beyond the paper: CTC with doubled predictions"))
        b.append(("p", "Decoder input `bos bos y1 y1 … yn yn` (2(n+1) positions), real CTC "
                  "against `y1 … yn eos`; inference feeds each pair's last non-blank prediction "
                  "twice (ε if none) and collapses with the CTC rule. "
                  f"Valid loss {num(d.final_valid_loss)} nats/token after {d.updates} "
                  f"updates; greedy BLEU {num(d.test.bleu, 2)}, empty "
                  f"{pct(d.test.empty_share)}; mean p_t(input_t) = {num(cp)}."))  # fmt: skip
    m = results.map
    if m is not None:
        b.append(("h", 2, "Beyond the paper: the theorem as a map"))
        b.append(("p", "Prediction rule (derived by walking the m = n grid with the moves of "
                  "align.objective.MOVES, the paper's Table 1): an "
                  "objective is degenerate iff some complete path contains a move where p_j "
                  "scores y_i with i < j. Measured rule: " + m.rule + "."))  # fmt: skip
        rows = [
            [r.key, "yes" if r.informative else "= CE", r.reused or "own", str(r.updates),
             r.predicted, r.measured, "✓" if r.agrees else "✗", num(r.final_valid_loss),
             num(r.final_valid_ce), num(r.bleu, 1), pct(r.empty_share), r.prediction_note]
            for r in m.rows
        ]  # fmt: skip
        b.append(("table", ["objective", "informative", "run", "updates", "predicted",
                            "measured", "agree", "valid loss", "valid CE", "BLEU", "empty",
                            "note"], rows))  # fmt: skip
        b.append(("p", "Informative objectives have more than the trivial path at m = n; the "
                  "others are cross entropy by construction (their agreement is no evidence): "
                  "they are the ce run, not trained again (run = ce; their valid loss is the "
                  "objective's own loss of the ce model, beside its CE on the same tokens). "
                  "Every row's BLEU is the same test decoding as ce's: "
                  f"{m.rows[0].test.sample()}."))  # fmt: skip
        if "map" in figures:
            b.append(("img", figures["map"], "left: the paper's prediction; right: measured"))
    notes = notes_on_numbers(results)
    if notes:
        b.append(("h", 2, "Notes on these numbers"))
        b += [("p", "- " + note) for note in notes]
    b.append(("h", 2, "Examples (test set)"))
    for n in EXPERIMENTS:
        if n in e and e[n].test.examples:
            src, ref, hyp = e[n].test.examples[0]
            b.append(("p", f"**{n}** — source: {src} / reference: {ref} / output: "
                      f"{hyp or '(empty)'}"))  # fmt: skip
    return b


def notes_on_numbers(results: Results) -> list[str]:
    """Caveats computed from the results (each says what a number does and does not show)."""
    e = results.paper()
    out = []
    ctc_a = e["ctc"].analysis if "ctc" in e else None
    if ctc_a is not None and ctc_a.ctc_vs_ce is not None and "ce" in e:
        c = ctc_a.ctc_vs_ce
        out.append(
            f"CTC at m = n is infinite for the {pct(c['repeat_share'])} of sentences with equal "
            "neighbours; training uses zero_infinity, so those sentences give no gradient and the "
            f"CTC model's cross entropy ({num(e['ctc'].final_valid_ce)} nats/token) is "
            f"above the CE model's ({num(e['ce'].final_valid_ce)}); its own loss averages "
            "over all target tokens, infeasible sentences counting 0."
        )
    if "axe" in e:
        out.append(
            "Logged training losses are averages over each logging interval with dropout on; "
            "validation losses are without dropout, hence lower."
        )
    m = results.map
    ref = next((r for r in m.rows if r.key == m.reference), None) if m is not None else None
    if ref is not None and ref.bleu < 20:
        out.append(
            f"Each map objective is trained for {ref.updates} updates only: the "
            f"cross-entropy reference reaches greedy BLEU {num(ref.bleu, 1)}, so BLEU "
            "decides nothing at this length and the rule leaves it out; the classification "
            "rests on the near-zero loss, empty outputs and the teacher-forced cross "
            f"entropy of the reference translations (reference: "
            f"{num(ref.final_valid_ce)} nats/token)."
        )
    if "axe_untied" in e:
        u = e["axe_untied"]
        tied = e["axe"].updates if "axe" in e else None
        length = (
            f"as long as the tied one ({u.updates} updates)"
            if tied == u.updates
            else f"{u.updates} updates long"
            + (f" (the tied one: {tied})" if tied is not None else "")
        )
        out.append(
            f"The untied AXE run is {length}; that it still translates says the collapse is "
            "slower without tying, not that it never comes."
        )
    return out


def write_report(out: Path, blocks: list[Block]) -> None:
    """``report.md`` and the self-contained ``report.html`` (figures already in ``out``)."""
    atomic_write(out / "report.md", render_markdown(blocks))
    atomic_write(out / "report.html", render_html(blocks, out))
