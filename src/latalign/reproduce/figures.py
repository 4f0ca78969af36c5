"""The paper's figures as PNGs (matplotlib, Agg): Figure 2 (loss curves), Figure 3 (the
chosen alignment), the alignment heat map, the tying finding, the theorem's map and BLEU
with the empty share per experiment. :func:`make_figures` draws those the results allow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import latalign.reproduce.analysis as an
from latalign.align.objective import MOVE_BY_NAME
from latalign.reproduce.presets import EXPERIMENTS
from latalign.reproduce.records import ExperimentResult, MapResult, Results

FIGURES = {
    "fig2": "fig2_loss_curves.png",
    "fig3": "fig3_alignment.png",
    "heatmap": "alignment_heatmap.png",
    "tying": "tying_collapse.png",
    "map": "theorem_map.png",
    "bleu": "bleu_empty.png",
}


def pyplot() -> Any:
    """``matplotlib.pyplot`` with the Agg backend (matplotlib is imported only to draw)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def make_figures(out: Path, results: Results) -> dict[str, str]:
    """Write the PNGs that the results allow into ``out``; returns ``{figure id: file}``."""
    plt = pyplot()
    e = results.paper()
    axe_figs = e["axe"].analysis.figures if "axe" in e and e["axe"].analysis else None
    heat = [
        (n, e[n].analysis.figures[0])
        for n in ("axe", "causal_axe")
        if n in e and e[n].analysis is not None and e[n].analysis.figures
    ]
    m = results.map
    draw = {
        "fig2": (lambda: _loss_curves(plt, e)) if any(n in e for n in ("axe", "ce")) else None,
        "fig3": (lambda: _fig3(plt, axe_figs)) if axe_figs else None,
        "heatmap": (lambda: _heatmap(plt, heat)) if heat else None,
        "tying": (lambda: _tying(plt, e)) if any(n in e for n in ("axe", "axe_untied")) else None,
        "map": (lambda: _draw_map(plt, m)) if m is not None else None,
        "bleu": (lambda: _bleu(plt, e)) if any(n in e for n in EXPERIMENTS) else None,
    }
    made: dict[str, str] = {}
    for key, fn in draw.items():
        if fn is None:
            continue
        fig = fn()
        fig.tight_layout()
        fig.savefig(out / FIGURES[key], dpi=110)
        plt.close(fig)
        made[key] = FIGURES[key]
    return made


def _loss_curves(plt: Any, e: dict[str, ExperimentResult]) -> Any:
    """Figure 2: training and validation loss, AXE next to CE, epoch ends in grey."""
    panels = [n for n in ("axe", "ce") if n in e]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    for ax, n in zip(axes[0], panels):
        r = e[n]
        if r.train_curve:
            s, v = zip(*r.train_curve)
            ax.plot(s, v, label="train")
        if r.valid_curve:
            s, v = zip(*[(x[0], x[1]) for x in r.valid_curve])
            ax.plot(s, v, "o-", label="validation")
        ax.axhline(0.1, color="grey", ls=":", lw=1, label="0.1 nats/token")
        per = r.updates_per_epoch or 0
        for k in range(1, int(r.updates // max(per, 1)) + 1):
            ax.axvline(k * per, color="k", alpha=0.15, lw=1)
        ax.set_yscale("log")
        ax.set_title(f"{n.upper()} (epoch = {per} updates, grey lines)")
        ax.set_xlabel("updates")
        ax.set_ylabel("loss (nats / target token)")
        ax.legend(fontsize=8)
    return fig


def _fig3(plt: Any, figs: list[dict[str, Any]]) -> Any:
    """Figure 3: top-4 predictions per position and the chosen alignment, one row a sentence."""
    width = 1.25 * max(len(f["target"]) for f in figs) + 1.5
    fig, axes = plt.subplots(len(figs), 1, figsize=(width, 2.3 * len(figs)), squeeze=False)
    for ax, f in zip(axes[:, 0], figs):
        _draw_fig3(ax, f)
    return fig


def _heatmap(plt: Any, heat: list[tuple[str, dict[str, Any]]]) -> Any:
    """``p_j(y_i)`` with the best path, AXE and causal AXE."""
    fig, axes = plt.subplots(1, len(heat), figsize=(5 * len(heat), 4.4), squeeze=False)
    for ax, (n, f) in zip(axes[0], heat):
        im = ax.imshow(f["p_target"], vmin=0, vmax=1, cmap="viridis", origin="upper")
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
    return fig


def _tying(plt: Any, e: dict[str, ExperimentResult]) -> Any:
    """AXE training loss, tied vs untied output layer."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for n in ("axe", "axe_untied"):
        if n in e and e[n].train_curve:
            s, v = zip(*e[n].train_curve)
            ax.plot(s, v, label="tied output layer" if n == "axe" else "separate output layer")
    ax.axhline(0.1, color="grey", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("updates")
    ax.set_ylabel("AXE train loss (nats / target token)")
    ax.set_title("how fast AXE collapses")
    ax.legend()
    return fig


def _bleu(plt: Any, e: dict[str, ExperimentResult]) -> Any:
    """Test BLEU and the share of empty outputs per experiment."""
    names = [n for n in EXPERIMENTS if n in e]
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 3.6))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], [e[n].test.bleu for n in names], 0.4, label="BLEU")
    ax.bar([i + 0.2 for i in x], [100 * e[n].test.empty_share for n in names], 0.4,
           label="empty outputs (%)")  # fmt: skip
    ax.set_xticks(list(x), names, rotation=20, fontsize=8)
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.set_title("test set: BLEU and share of empty outputs (ε removed)")
    return fig


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
    title = f"source: {f.get('source', '')}\npath: " + " ".join(abbrev(o) for o in f["operators"])
    ax.set_title(title, fontsize=8, loc="left")


def abbrev(op: str) -> str:
    """``clone_prediction`` -> ``CP``: the initials of an operator of the table of moves."""
    if op not in MOVE_BY_NAME:
        raise ValueError(f"expected an operator among {tuple(MOVE_BY_NAME)}; found {op!r}")
    return "".join(word[0].upper() for word in op.split("_"))


#: cell colours of the map figures, by class
CLASS_COLORS = {"degenerate": "#e06666", "healthy": "#93c47d", "poor": "#ffd966", None: "#eeeeee"}


def _map_cell_text(r: Any) -> str:
    """A measured map cell: valid loss and test BLEU (``= ce``: the ce run), ✗ when it
    disagrees with the prediction."""
    if r is None:
        return "not run"
    head = "= ce" if r.reused else f"{r.final_valid_loss:.2f} nats"
    return f"{head}\nBLEU {r.bleu:.1f}" + ("" if r.agrees else "\n✗")


def _draw_map(plt: Any, m: MapResult) -> Any:
    """The paper's prediction (left) beside the measured classes (right)."""
    rows = {r.key: r for r in m.rows}
    subsets = an.operator_subsets()
    cols = [("sum", False), ("max", False), ("sum", True), ("max", True)]
    col_names = ["sum", "max", "sum causal", "max causal"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    for ax, which in zip(axes, ("predicted", "measured")):
        for yi, ops in enumerate(subsets):
            for xi, (agg, causal) in enumerate(cols):
                if which == "predicted":
                    p = an.predict_objective(ops, causal)
                    cls = "degenerate" if p.degenerate else "healthy"
                    txt = "= CE" if p.only_trivial_path else ""
                else:
                    r = rows.get(an.objective_key(ops, agg, causal))
                    cls, txt = (r.measured if r else None), _map_cell_text(r)
                ax.add_patch(plt.Rectangle((xi, yi), 1, 1, color=CLASS_COLORS[cls], ec="white"))
                ax.text(xi + 0.5, yi + 0.5, txt, ha="center", va="center", fontsize=7)
        ax.set_xlim(0, 4)
        ax.set_ylim(len(subsets), 0)
        ax.set_xticks([x + 0.5 for x in range(4)], col_names, fontsize=8)
        ax.set_yticks(
            [y + 0.5 for y in range(len(subsets))],
            ["+".join(abbrev(o) for o in ops) for ops in subsets],
            fontsize=8,
        )
        ax.set_title(
            "paper's prediction (red = degenerate)"
            if which == "predicted"
            else "measured: valid loss, test BLEU (yellow = poor; = ce: the ce run)",
            fontsize=10,
        )
    return fig


def draw_nat_map(plt: Any, nat_map: Any, ar_map: MapResult | None) -> Any:
    """The two faces of the map, non-causal objectives (rows: operator sets, columns: sum,
    max): left, the autoregressive map under teacher forcing (measured class and BLEU when
    it ran, else the prediction); right, the same objectives training a NAT model at the
    upsampled length (test BLEU, colour scaled to the best row; grey: not trained), with
    NAT-CE's BLEU in the title. ``nat_map``: a :class:`latalign.reproduce.nat_map.
    NatMapResult`."""
    subsets = an.operator_subsets()
    nat_rows = {r.key: r for r in nat_map.rows}
    ar_rows = {r.key: r for r in ar_map.rows} if ar_map is not None else {}
    ref = nat_rows[nat_map.reference]
    best = max([r.bleu for r in nat_map.rows if r.bleu is not None] + [1.0])
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.2))
    for ax, side in zip(axes, ("ar", "nat")):
        for yi, ops in enumerate(subsets):
            for xi, agg in enumerate(("sum", "max")):
                key = an.objective_key(ops, agg, False)
                if side == "ar":
                    r = ar_rows.get(key)
                    if r is None:
                        p = an.predict_objective(ops, False)
                        cls = "degenerate" if p.degenerate else "healthy"
                        txt = "= CE (predicted)" if p.only_trivial_path else f"{cls} (predicted)"
                    else:
                        cls, txt = r.measured, _map_cell_text(r)
                    color, ink = CLASS_COLORS[cls], "black"
                else:
                    r = nat_rows[key]
                    if r.bleu is None:
                        color, ink = CLASS_COLORS[None], "black"
                        txt = f"not trained\nfeasible {100 * r.feasible_share:.1f}%"
                    else:
                        color = cmap(r.bleu / best)
                        ink = "white" if r.bleu / best < 0.6 else "black"
                        txt = f"BLEU {r.bleu:.1f}\n{r.bleu - (ref.bleu or 0.0):+.1f} vs CE"
                ax.add_patch(plt.Rectangle((xi, yi), 1, 1, color=color, ec="white"))
                ax.text(xi + 0.5, yi + 0.5, txt, ha="center", va="center", fontsize=7, color=ink)
        ax.set_xlim(0, 2)
        ax.set_ylim(len(subsets), 0)
        ax.set_xticks([0.5, 1.5], ["sum", "max"], fontsize=8)
        ax.set_yticks([y + 0.5 for y in range(len(subsets))],
                      ["+".join(abbrev(o) for o in ops) for ops in subsets], fontsize=8)  # fmt: skip
    axes[0].set_title("AR, teacher forcing, m = n\n(red degenerate, green healthy, yellow poor)",
                      fontsize=9)  # fmt: skip
    axes[1].set_title(
        f"NAT, T = {nat_map.upsample} × S, {nat_map.updates} updates\n"
        f"test BLEU (NAT-CE at the predicted length: {ref.bleu or 0.0:.1f})",
        fontsize=9,
    )
    return fig
