"""The closing-question group (reproduce/beyond_tf.py): predictions, outcome rule, answer,
and one run of the group on the ci preset."""

from __future__ import annotations

import json

import pytest

from latalign.reproduce import beyond_tf as bt
from latalign.reproduce.analysis import degenerate_path, predict_objective


def test_predictions_cover_every_regime_and_criterion():
    kinds = {r.kind for r in bt.REGIME_RUNS.values()} | {bt.TEACHER_FORCING}
    for kind in kinds:
        for c in bt.CRITERIA:
            assert isinstance(bt.predict(kind, c).collapse, bool)
    with pytest.raises(ValueError, match="expected a regime kind"):
        bt.predict("beam_training", "axe")


def test_predictions_agree_with_the_maps_rule_for_teacher_forcing():
    # the map derives collapse from the operator grid; the hand-written table must agree
    axe = predict_objective(("align", "clone_prediction", "delimiter"), causal=False)
    causal = predict_objective(("align", "clone_prediction", "delimiter"), causal=True)
    assert bt.predict("teacher_forcing", "axe").collapse == axe.degenerate
    assert bt.predict("teacher_forcing", "causal_axe").collapse == causal.degenerate
    assert bt.predict("teacher_forcing", "ce").collapse is False
    # causal AXE never collapses; AXE collapses exactly where gold inputs reach the decoder
    for kind in {r.kind for r in bt.REGIME_RUNS.values()}:
        assert bt.predict(kind, "causal_axe").collapse is False
        assert bt.predict(kind, "axe").collapse == (kind != "free_running")


def test_shifted_copy_path():
    assert bt.shifted_copy_path(5, 1) == degenerate_path(5)
    assert bt.shifted_copy_path(5, 2) == (
        "delimiter", "delimiter", "align", "align", "align", "clone_prediction",
        "clone_prediction",
    )  # fmt: skip
    with pytest.raises(ValueError):
        bt.shifted_copy_path(3, 0)


def _row(regime, criterion, bleu, empty, kind=None):
    return {"regime": regime, "kind": kind or regime, "criterion": criterion, "bleu": bleu,
            "empty_share": empty, "updates": 10}  # fmt: skip


def test_outcome_rule():
    ce = _row("corruption", "ce", 40.0, 0.0)
    assert bt.measured(ce, None) == "translates"
    assert bt.measured(_row("x", "ce", 0.5, 0.0), None) == "collapses"
    assert bt.measured(_row("x", "ce", 30.0, 0.6), None) == "collapses"
    assert bt.measured(_row("corruption", "axe", 19.9, 0.0), ce) == "collapses"  # < half
    assert bt.measured(_row("corruption", "axe", 39.0, 0.5), ce) == "collapses"  # empty
    assert bt.measured(_row("corruption", "axe", 42.0, 0.0), ce) == "ties CE"  # within 2
    assert bt.measured(_row("corruption", "axe", 42.1, 0.0), ce) == "beats CE"
    assert bt.measured(_row("corruption", "axe", 37.9, 0.0), ce) == "below CE"


def test_classify_and_answer_are_computed_from_the_numbers():
    rows = [
        _row("teacher_forcing", "ce", 50.0, 0.0),
        _row("teacher_forcing", "axe", 0.0, 1.0),
        _row("teacher_forcing", "causal_axe", 49.5, 0.0),
        _row("free_running", "ce", 20.0, 0.0),
        _row("free_running", "axe", 30.0, 0.0),
        _row("free_running", "causal_axe", 5.0, 0.0),
    ]
    bt.classify(rows)
    got = {(r["regime"], r["criterion"]): (r["measured"], r["holds"]) for r in rows}
    assert got[("teacher_forcing", "axe")] == ("collapses", True)
    assert got[("teacher_forcing", "causal_axe")] == ("ties CE", True)
    assert got[("free_running", "axe")] == ("beats CE", True)
    assert got[("free_running", "causal_axe")] == ("collapses", False)
    text = bt.answer(rows)
    assert text.startswith("Yes, in this run: AXE under free_running (30.0 vs CE 20.0 BLEU")
    assert "predicted 5 of 6 rows" in text
    rows[4]["bleu"] = 20.5
    bt.classify(rows)
    assert bt.answer(rows).startswith("None of them")


def test_group_runs_on_the_ci_preset(tmp_path):
    from latalign.reproduce import ReproduceOptions, run_reproduction

    only = {"beyond_tf.free_running": 2, "beyond_tf.delayed_2": 2}
    opts = ReproduceOptions(out=tmp_path / "run", preset="ci", experiments=["beyond_tf"],
                            progress=False, cache_dir=tmp_path / "cache", updates=only,
                            map_workers=1)  # fmt: skip
    res = run_reproduction(opts)
    g = res["groups"]["beyond_tf"]
    assert [r["regime"] for r in g["rows"][:3]] == ["tf_scratch"] * 3
    assert g["regimes"] == list(bt.QUICK_REGIMES)
    assert len(g["rows"]) == 3 + 3 * len(g["regimes"])
    for r in g["rows"]:
        assert 0.0 <= r["empty_share"] <= 1.0 and 0.0 <= r["copy_probability"] <= 1.0
        assert r["predicted"] in ("collapse", "no collapse") and r["measured"]
    delayed = [r for r in g["rows"] if r["regime"] == "delayed_2"]
    assert all(r["updates"] == 2 for r in delayed)
    assert all(r["init"] == "ce" for r in g["rows"][3:])
    cell = json.loads((tmp_path / "run" / "beyond_tf" / "delayed_2__axe" / "train" / "config.json")
                      .read_text())  # fmt: skip
    assert cell["init_from"].endswith("checkpoint_last.pt") and cell["delay"] == 2
    ids = [c["id"] for c in res["claims"]]
    assert "beyond_tf_answer" in ids and "beyond_tf_free_running" in ids
    md = (tmp_path / "run" / "report.md").read_text()
    assert "### The closing question" in md and bt.FIGURE in md
    assert (tmp_path / "run" / bt.FIGURE).is_file()
    saved = json.loads((tmp_path / "run" / "beyond_tf" / "result.json").read_text())
    assert saved["result"]["answer"] == g["answer"]
