"""The closing-question group (reproduce/beyond_tf*.py): predictions, outcome rule, answer,
and one run of the group on the ci preset."""

from __future__ import annotations

import json

import pytest

import latalign.reproduce.beyond_tf_rules as bt
from latalign.reproduce.analysis import degenerate_path, predict_objective
from latalign.reproduce.beyond_tf_report import FIGURE


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


def _row(regime, criterion, bleu, empty, phase="finetune", kind=None, deg=0.0):
    return bt.RegimeRow(phase=phase, regime=regime, label=regime, kind=kind or regime,
                        criterion=criterion, updates=10, init=None, bleu=bleu, chrf=0.0,
                        empty_share=empty, n_test=10, beam=5, degenerate_share=deg,
                        copy_path_share=deg, trivial_share=0.0, copy_probability=0.0,
                        n_valid=10, valid_ce=None, valid_loss=None,
                        final_train_loss=None)  # fmt: skip


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
    assert bt.scratch_collapsed(_row("x", "axe", 0.0, 0.0, deg=0.6))  # copy paths
    assert bt.scratch_collapsed(_row("x", "axe", 0.0, 0.7))  # empty outputs
    assert not bt.scratch_collapsed(_row("x", "axe", 0.0, 0.4, deg=0.4))


def _table():
    return [
        _row("teacher_forcing", "axe", 0.0, 1.0, phase="scratch", deg=1.0),
        _row("free_running", "axe", 0.2, 0.0, phase="scratch"),
        _row("teacher_forcing", "ce", 50.0, 0.0),
        _row("teacher_forcing", "axe", 49.5, 0.0),
        _row("teacher_forcing", "causal_axe", 10.0, 0.0),
        _row("free_running", "ce", 20.0, 0.0),
        _row("free_running", "axe", 30.0, 0.0),
        _row("free_running", "causal_axe", 5.0, 0.0),
    ]


def test_classify_and_answer_are_computed_from_the_numbers():
    rows = bt.classify(_table())
    got = {(r.phase, r.regime, r.criterion): (r.measured, r.holds) for r in rows}
    assert got[("scratch", "teacher_forcing", "axe")] == ("collapses", True)
    assert got[("scratch", "free_running", "axe")] == ("no collapse", True)
    assert got[("finetune", "teacher_forcing", "axe")] == ("ties CE", False)
    assert got[("finetune", "teacher_forcing", "causal_axe")] == ("collapses", False)
    assert got[("finetune", "free_running", "axe")] == ("beats CE", True)
    text = bt.answer(rows)
    # beats CE within free running, but not teacher-forced CE: not a "yes"
    assert text.startswith("Not against teacher forcing")
    assert "AXE × free_running 30.0 vs 20.0" in text
    assert "held in 2 of 2 runs" in text
    rows = _table()
    rows[6].bleu = 60.0  # now above teacher-forced CE (50 + max(1, 2.5))
    assert bt.answer(bt.classify(rows)).startswith(
        "Yes, in this run: AXE × free_running 60.0 vs 50.0"
    )
    rows = _table()
    rows[6].bleu = 20.5
    assert bt.answer(bt.classify(rows)).startswith("None of them")
    # a latent row without its regime's CE row is not judged
    lone = bt.classify([_row("free_running", "axe", 30.0, 0.0)])[0]
    assert (lone.measured, lone.holds) == ("no CE row", None)


def test_group_runs_on_the_ci_preset(tmp_path):
    from latalign.reproduce import ReproduceOptions, run_reproduction

    opts = ReproduceOptions(out=tmp_path / "run", preset="ci", experiments=["beyond_tf"],
                            progress=False, cache_dir=tmp_path / "cache",
                            updates={"beyond_tf.scratch": 3}, map_workers=1)  # fmt: skip
    res = run_reproduction(opts)
    g = res["groups"]["beyond_tf"]  # the JSON of results.json
    assert g["regimes"] == list(bt.QUICK_REGIMES)
    scratch = [r for r in g["rows"] if r["phase"] == "scratch"]
    tuned = [r for r in g["rows"] if r["phase"] == "finetune"]
    assert len(scratch) == 2 + 2 * (len(bt.QUICK_REGIMES) - 1)  # reused TF rows + AXE, causal
    assert len(tuned) == 3 * len(bt.QUICK_REGIMES)
    assert all(r["updates"] == 3 for r in scratch if "reused" not in r)
    assert all(r["updates"] == 2 and r["init"] == "ce" for r in tuned)
    for r in g["rows"]:
        assert 0.0 <= r["empty_share"] <= 1.0 and 0.0 <= r["copy_probability"] <= 1.0
        assert r["predicted"] in ("collapse", "no collapse") and r["measured"]
    cell = json.loads(
        (tmp_path / "run" / "beyond_tf" / "finetune__delayed_2__axe" / "train" / "config.json")
        .read_text()
    )  # fmt: skip
    assert cell["init_from"].endswith("checkpoint_last.pt") and cell["delay"] == 2
    scratch_cfg = json.loads(
        (tmp_path / "run" / "beyond_tf" / "scratch__corruption_0.3__axe" / "train" / "config.json")
        .read_text()
    )  # fmt: skip
    assert scratch_cfg["init_from"] is None and scratch_cfg["regime_p"] == 0.3
    ids = [c["id"] for c in res["claims"]]
    assert "beyond_tf_answer" in ids and "beyond_tf_free_running" in ids
    md = (tmp_path / "run" / "report.md").read_text()
    assert "### The closing question" in md and FIGURE in md
    assert (tmp_path / "run" / FIGURE).is_file()
    saved = json.loads((tmp_path / "run" / "beyond_tf" / "result.json").read_text())
    assert saved["result"]["answer"] == g["answer"]
