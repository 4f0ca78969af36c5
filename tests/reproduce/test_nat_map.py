"""The ``nat_map`` group: a tiny run end to end (preset ``ci``: which rows train, the table
and the figure, reuse) and its claims on hand-built results, failing ones included."""

from __future__ import annotations

import dataclasses
import json

import pytest

import latalign.reproduce.analysis as an
import latalign.reproduce.nat_map as nm
from latalign.align.objective import CLONE_TARGET, DELIMITER
from latalign.reproduce import ReproduceOptions, run_reproduction
from latalign.reproduce.records import Results, TestScores


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("nat_map") / "run"
    cache = tmp_path_factory.mktemp("cache")
    opts = ReproduceOptions(out=out, preset="ci", experiments=["nat_map"], progress=False,
                            cache_dir=cache, command="latalign reproduce (test)")  # fmt: skip
    return out, opts, run_reproduction(opts)


def test_rows_train_where_a_path_exists(run):
    out, _, results = run
    saved = nm.NatMapResult.from_json(results["groups"]["nat_map"])
    keys = [r.key for r in saved.rows]
    assert keys == [nm.REFERENCE, *nm.OBJECTIVES] and len(nm.OBJECTIVES) == 16
    assert saved.upsample == 2 and saved.n_train_pairs == 40  # the nat group's ci pairs
    for r in saved.rows:
        inflates = r.key == nm.REFERENCE or bool({CLONE_TARGET, DELIMITER} & set(r.operators))
        assert r.trained == inflates, r.key
        has_run = (nm.row_dir(out, r.key) / "train" / "checkpoints").is_dir()
        assert has_run == r.trained, r.key
        if r.trained:
            assert r.updates == 6 and r.test is not None and r.test.n_sentences == 16
            assert 0 <= r.test.bleu <= 100 and r.final_valid_loss is not None
        else:  # align, align+clone_prediction: no path at T = 2S > n for any ci pair
            assert r.test is None and r.feasible_share == 0.0
    assert saved.seconds == pytest.approx(sum(r.seconds for r in saved.rows))


def test_table_figure_and_claims_written(run):
    out, _, results = run
    md = (out / "report.md").read_text()
    section = md.split("NAT side", 1)[1]
    assert "| objective | AR map (teacher forcing) | feasible |" in section
    for key in nm.OBJECTIVES:
        assert f"| {key.removesuffix('/noncausal')} |" in section
    assert (out / nm.FIGURE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert nm.FIGURE in md and "data:image/png;base64," in (out / "report.html").read_text()
    claims = {c["id"]: c for c in results["claims"]}
    kinds = {cid: claims[cid]["kind"] for cid in claims if cid.startswith("nat_map")}
    assert kinds == {"nat_map_other_face": "behaviour", "nat_map_premise": "behaviour",
                     "nat_map_infeasible": "construction", "nat_map_helps": "finding"}  # fmt: skip
    assert claims["nat_map_infeasible"]["passed"] is True
    assert claims["nat_map_helps"]["passed"] is None


def test_rerun_reuses(run):
    out, opts, results = run
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("checkpoint_last.pt")}
    again = run_reproduction(opts)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("checkpoint_last.pt")} == mtimes
    strip = lambda g: json.dumps(  # noqa: E731 - the wall time of the invocation differs
        {k: v for k, v in g["nat_map"].items() if k != "wall_seconds"}, sort_keys=True
    )
    assert strip(again["groups"]) == strip(results["groups"])


# --------------------------------------------------------------------------- claims


def _row(key, bleu, share=1.0):
    if key == nm.REFERENCE:
        base = nm._base_row(key, 1.0, 600, "length beam")
    else:
        base = nm._base_row(key, share, 600, "collapse")
    if not base.trained:
        return base
    test = TestScores(bleu=bleu, chrf=40.0, empty_share=0.0, n_sentences=200, beam=1, n_test=200)
    return dataclasses.replace(base, test=test, final_valid_loss=1.0, seconds=1.0)


def _result(ref=10.0, bleu=None, shares=None):
    """NAT-CE at ``ref``; every objective at ref + 5 unless ``bleu`` says otherwise; the
    feasible shares as a corpus with T = 2S > n everywhere gives them."""
    bleu, shares = bleu or {}, shares or {}
    rows = [_row(nm.REFERENCE, ref)]
    for key in nm.OBJECTIVES:
        ops = an.parse_objective_key(key)[0]
        share = shares.get(key, 1.0 if {CLONE_TARGET, DELIMITER} & set(ops) else 0.0)
        rows.append(_row(key, bleu.get(key, ref + 5.0), share))
    return nm.NatMapResult(rows=rows, reference=nm.REFERENCE, upsample=2, updates=600,
                           train_pairs=None, n_train_pairs=10000, min_feasible=nm.MIN_FEASIBLE,
                           workers=2, seconds=17.0, wall_seconds=9.0)  # fmt: skip


def _claims(result):
    return {c.id: c for c in nm.claims(Results(), result)}


def test_claims_pass_on_the_expected_picture():
    c = _claims(_result())
    assert [c[k].passed for k in ("nat_map_other_face", "nat_map_premise",
                                  "nat_map_infeasible", "nat_map_helps")] == [True, True, True,
                                                                             None]  # fmt: skip
    assert c["nat_map_other_face"].measured.startswith("6/6 at or above NAT-CE's 10.00 BLEU")
    assert "12/16 objectives ≥ NAT-CE + 1 BLEU" in c["nat_map_helps"].measured
    assert c["nat_map_other_face"].sample.startswith("200 of 200 test sentences")


def test_claims_fail_on_made_up_failing_results():
    # an objective teacher forcing degenerates that does not train a NAT model: ✗, named
    bad = "align+clone_target+clone_prediction/max/noncausal"
    c = _claims(_result(bleu={bad: 9.0}))
    assert c["nat_map_other_face"].passed is False
    assert "5/6" in c["nat_map_other_face"].measured and c["nat_map_other_face"].values[
        "below"] == [bad]  # fmt: skip
    # AXE's set only +2 over NAT-CE: the premise ✗
    c = _claims(_result(bleu={nm.AXE_KEY: 12.0}))
    assert c["nat_map_premise"].passed is False and c["nat_map_other_face"].passed is True
    assert c["nat_map_premise"].values["gaps"][nm.AXE_KEY] == pytest.approx(2.0)
    # a corpus where align alone had paths for half the pairs: the construction row ✗
    c = _claims(_result(shares={"align/sum/noncausal": 0.5}))
    assert c["nat_map_infeasible"].passed is False
    # and one where a set with delimiter lacked them
    c = _claims(_result(shares={"align+delimiter/max/noncausal": 0.9}))
    assert c["nat_map_infeasible"].passed is False
