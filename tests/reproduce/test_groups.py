"""Experiment groups plug into ``run_reproduction``: run, reuse, updates, claims, report."""

from __future__ import annotations

import json

import pytest

from latalign.reproduce import ReproduceOptions, run_reproduction
from latalign.reproduce.groups import ExperimentGroup, GroupRun
from latalign.reproduce.records import Claim
from latalign.reproduce.registry import groups, owners, register, unregister
from latalign.reproduce.run import default_experiments, validate_options
from latalign.reproduce.store import check_reusable, write_result

CALLS: list[dict[str, int]] = []


def _run(g: GroupRun) -> dict:
    CALLS.append(dict(g.updates))
    (g.directory / "note.txt").write_text("written by the group\n")
    return {"updates": g.updates, "train_sentences": len(g.ctx.data.train), "has_ce": "ce" in
            g.results.experiments, "experiment": g.experiment}  # fmt: skip


def _claims(results, result: dict) -> list[Claim]:
    return [Claim("probe", "the probe group ran", "test", "behaviour", "train_sentences > 0",
                  f"{result['train_sentences']} training sentences", "the training set",
                  {"n": result["train_sentences"]}, result["train_sentences"] > 0)]  # fmt: skip


def _report(results: dict, result: dict, out) -> list[tuple]:
    return [("p", f"probe section: {result['updates']['steps']} steps")]


@pytest.fixture
def probe():
    g = register(
        ExperimentGroup(
            name="probe", description="a probe group", run=_run,
            updates={"ci": {"steps": 4, "other": 2}}, claims=_claims, report=_report,
            default_presets=("ci",),
        )
    )  # fmt: skip
    CALLS.clear()
    yield g
    unregister("probe")


def _opts(tmp_path, **kw) -> ReproduceOptions:
    base = dict(out=tmp_path / "run", preset="ci", progress=False, cache_dir=tmp_path / "cache",
                experiments=["probe"])  # fmt: skip
    return ReproduceOptions(**(base | kw))


def test_group_runs_reuses_and_reports(probe, tmp_path):
    assert "probe" in default_experiments("ci") and "probe" not in default_experiments("quick")
    res = run_reproduction(_opts(tmp_path, scale=2.0, updates={"probe.other": 7}))
    assert CALLS == [{"steps": 8, "other": 7}]
    out = res["groups"]["probe"]
    assert out["train_sentences"] > 0 and out["has_ce"] is False and out["seconds"] >= 0
    assert out["experiment"] == "probe"
    saved = json.loads((tmp_path / "run" / "probe" / "result.json").read_text())
    assert saved["result"]["updates"] == {"steps": 8, "other": 7}
    row = next(c for c in res["claims"] if c["id"] == "probe")
    assert row["passed"] is True and row["kind"] == "behaviour"
    md = (tmp_path / "run" / "report.md").read_text()
    assert "## a probe group (`probe`)" in md and "probe section: 8 steps" in md
    # same options: reused, run not called again; other updates: refused without --force
    run_reproduction(_opts(tmp_path, scale=2.0, updates={"probe.other": 7}))
    assert len(CALLS) == 1
    with pytest.raises(ValueError, match="--force"):
        run_reproduction(_opts(tmp_path))
    run_reproduction(_opts(tmp_path, force=True))
    assert CALLS[-1] == {"steps": 4, "other": 2}


def test_group_requires_and_bad_input(probe, tmp_path):
    register(
        ExperimentGroup(name="probe2", description="needs ce", run=_run,
                        updates={"ci": {"steps": 1}}, requires=("ce",))
    )  # fmt: skip
    try:
        assert validate_options(_opts(tmp_path, experiments=["probe2"])) == ["ce", "probe2"]
    finally:
        unregister("probe2")
    register(
        ExperimentGroup(name="probe3", description="needs axe in ci", run=_run,
                        updates={"ci": {"steps": 1}}, requires=("ce",),
                        requires_for={"ci": ("axe",)})
    )  # fmt: skip
    try:  # a per-preset requirement replaces the default one
        assert validate_options(_opts(tmp_path, experiments=["probe3"])) == ["axe", "probe3"]
    finally:
        unregister("probe3")
    for kw, match in [
        ({"updates": {"probe.nope": 3}}, "expected updates keys"),
        ({"updates": {"nope.steps": 3}}, "expected updates as"),
        ({"preset": "quick"}, "expected a preset among"),
    ]:
        with pytest.raises(ValueError, match=match):
            run_reproduction(_opts(tmp_path, **kw))
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="existing"):
        register(ExperimentGroup(name="ce", description="x", run=_run, updates={}))
    with pytest.raises(ValueError, match="existing"):  # a group of experiments that are taken
        register(ExperimentGroup(name="p4", description="x", run=_run, updates={},
                                 experiments={"axe": "x"}))  # fmt: skip
    with pytest.raises(ValueError, match="group name"):
        ExperimentGroup(name="a-b", description="x", run=_run, updates={})


def test_the_paper_is_a_group_like_the_others():
    """Every name --experiments accepts belongs to one group; the paper's are its group's,
    in the preset's run order, and every paper experiment has a run."""
    from latalign.reproduce.paper import RUNS
    from latalign.reproduce.presets import EXPERIMENTS

    assert list(groups())[:4] == ["paper", "nat_map", "nat", "beyond_tf"]
    own = owners()
    assert [n for n, g in own.items() if g.name == "paper"] == list(EXPERIMENTS)
    assert set(RUNS) == set(EXPERIMENTS)
    assert own["nat"].name == "nat" and own["beyond_tf"].name == "beyond_tf"
    quick = default_experiments("quick")
    assert quick == [n for n in EXPERIMENTS if n != "baseline"] + ["nat", "beyond_tf"]
    assert "map" not in default_experiments("multi30k")
    assert "nat_map" not in default_experiments("multi30k")  # on request everywhere
    assert "nat_map" not in default_experiments("quick")
    assert own["nat_map"].name == "nat_map" and "nat_map" not in default_experiments("ci")


def test_nat_teacher_is_the_recipe_where_a_preset_has_one():
    from latalign.reproduce.presets import PRESETS

    nat = groups()["nat"]
    assert nat.required("quick") == ("ce",) and nat.required("ci") == ("ce",)
    assert PRESETS["multi30k"].baseline_recipe is not None
    assert nat.required("multi30k") == ("baseline",)


def test_reuse_ignores_a_saved_description_but_not_a_setting(tmp_path):
    """Results saved while the preset's description was part of the spec stay reusable;
    any real setting that differs is still refused."""
    spec = {"experiment": "ce", "preset": {"name": "p", "lr": 0.1}, "seed": 1, "data": None}
    old = {**spec, "preset": {**spec["preset"], "description": "older words"}}
    write_result(tmp_path, old, {"bleu": 1.0})
    assert check_reusable(tmp_path, spec) == {"bleu": 1.0}
    with pytest.raises(ValueError, match="--force"):
        check_reusable(tmp_path, {**spec, "preset": {"name": "p", "lr": 0.2}})
