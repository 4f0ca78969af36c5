"""A tiny ``latalign reproduce`` end to end (preset ``ci``): files, numbers, consistency,
reuse, ``--force``, resume and refusals. It checks the pipeline, not the paper's conclusions
(the models are far too small for those)."""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from html import escape as html_escape
from pathlib import Path

import pytest

import latalign.reproduce.cli as rcli
from latalign.reproduce import EXPERIMENTS, ReproduceOptions, run_reproduction, validate_options
from latalign.reproduce.figures import FIGURES
from latalign.reproduce.records import MARK, Claim, ExperimentResult, MapResult, Results
from latalign.reproduce.report import claims_by_section, experiment_seconds

MAP_SLICE = [
    "align+clone_prediction+delimiter/max/noncausal",
    "align+clone_prediction+delimiter/max/causal",
    "align+clone_target+delimiter/sum/noncausal",  # CE by construction: the ce run
]


def _options(out: Path, cache: Path, **kw) -> ReproduceOptions:
    base = dict(
        out=out, preset="ci", map_objectives=MAP_SLICE, progress=False, cache_dir=cache,
        command="latalign reproduce --preset ci (test)",
    )  # fmt: skip
    return ReproduceOptions(**(base | kw))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce") / "run"
    cache = tmp_path_factory.mktemp("cache")
    t0 = time.monotonic()
    results = run_reproduction(_options(out, cache))
    return out, cache, results, time.monotonic() - t0


def _numbers(obj):
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        yield float(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)


def test_files_exist(run):
    out, _, results, _ = run
    for name in ("report.md", "report.html", "results.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    for png in FIGURES.values():
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", png
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(FIGURES)  # self-contained
    assert "<img" in html and 'src="' in html and 'src="fig' not in html
    assert results["meta"]["experiments"] == [n for n in EXPERIMENTS if n != "baseline"]
    for name in results["meta"]["experiments"]:
        if name != "map":
            assert (out / name / "result.json").is_file()


def test_every_claim_measured(run):
    _, _, results, _ = run
    claims = results["claims"]
    # 13 built-in rows: the epoch claim has two verdicts (this corpus's epoch, the paper's)
    # and the map two rows (informative objectives; those that are CE by construction)
    assert len(claims) == 13
    assert {c["kind"] for c in claims} == {"behaviour", "construction", "finding"}
    for c in claims:
        assert not c["measured"].startswith("not run"), c
        assert re.search(r"\d", c["measured"]), c
        assert c["values"] and list(_numbers(c["values"])), c
        assert c["passed"] in (True, False, None)
    by_id = {c["id"]: c for c in claims}
    assert by_id["tying"]["passed"] is None  # a finding
    # the exact identity holds at any size
    assert by_id["ctc_is_ce"]["passed"] is True


def test_numbers_consistent(run):
    out, _, results, _ = run
    saved = json.loads((out / "results.json").read_text())
    assert saved["claims"] == json.loads(json.dumps(results["claims"]))
    e = saved["experiments"]
    for name, r in e.items():
        t = r["test"]
        assert 0 <= t["empty_share"] <= 1 and 0 <= t["bleu"] <= 100 and 0 <= t["chrf"] <= 100
        a = r["analysis"]
        assert 0 <= a["copy_probability"] <= 1
        assert a["mean_target_length"] > 1
        assert math.isfinite(r["final_valid_loss"]) and r["final_valid_loss"] >= 0
        assert r["updates"] == saved["meta"]["preset"]["updates"][name]
        if "paths" in a:
            p = a["paths"]
            assert 0 <= p["degenerate_share"] <= 1 and 0 <= p["trivial_share"] <= 1
            assert p["degenerate_share"] + p["trivial_share"] <= 1
            others = sum(o["count"] for o in p["other_paths"])
            assert others <= p["n_sentences"] * (1 - p["trivial_share"]) + 1e-9
        if "ctc_vs_ce" in a:
            c = a["ctc_vs_ce"]
            assert 0 <= c["repeat_share"] <= 1 and c["repeat_infinite"] == c["repeat_count"]
    assert e["axe"]["tied_output"] is True and e["axe_untied"]["tied_output"] is False
    rows = saved["map"]["rows"]
    keys = [r["key"] for r in rows]
    assert keys[0] == "align/sum/noncausal" and set(MAP_SLICE) <= set(keys)
    for r in rows:
        assert r["measured"] in ("degenerate", "healthy")
        assert r["agrees"] == (r["measured"] == r["predicted"])
    pred = {r["key"]: r["predicted"] for r in rows}
    assert pred[MAP_SLICE[0]] == "degenerate" and pred[MAP_SLICE[1]] == "healthy"
    # the objectives that are CE by construction are the ce run, not trained again: ce's
    # updates and test decoding, their own loss on its model equal to its CE; the
    # informative ones train as long as ce and decode as it does
    ce = e["ce"]
    for r in rows:
        run_dir = out / "map" / r["key"].replace("/", "__").replace("+", "-") / "train"
        if r["only_trivial_path"]:
            assert r["reused"] == "ce" and not run_dir.exists()
            assert r["test"] == ce["test"] and r["updates"] == ce["updates"]
            assert r["final_valid_loss"] == pytest.approx(r["final_valid_ce"], abs=1e-5)
            assert r["final_valid_ce"] == pytest.approx(ce["final_valid_ce"], rel=1e-4)
        else:
            assert "reused" not in r and (run_dir / "checkpoints" / "checkpoint_last.pt").is_file()
            assert r["updates"] == ce["updates"] and r["test"]["beam"] == ce["test"]["beam"]
            assert r["test"]["n_sentences"] == ce["test"]["n_sentences"]
    assert sum(r["reused"] == "ce" for r in rows if "reused" in r) == 2
    assert saved["map"]["agreement"] == pytest.approx(sum(r["agrees"] for r in rows) / len(rows))


def test_report_matches_results(run):
    out, _, results, _ = run
    md = (out / "report.md").read_text()
    assert "nats" in md and "latalign reproduce --preset ci" in md
    parts = claims_by_section([Claim.from_json(c) for c in results["claims"]])
    assert sum(len(rows) for _, rows in parts) == len(results["claims"])
    for head, claims in parts:  # two tables: behaviour (and findings), construction
        section = md.split("## " + head, 1)[1].split("\n## ", 1)[0]
        rows = [ln for ln in section.splitlines() if ln.startswith("| ") and "---" not in ln]
        rows = rows[1:]  # header
        assert len(rows) == len(claims)
        for line, c in zip(rows, claims):
            cells = [x.strip() for x in line.strip("|").split(" | ")]
            assert cells[0] == MARK[c.passed]
            assert cells[1] == c.claim
            assert cells[3] == c.measured.replace("|", "\\|")
            assert cells[4] == c.sample.replace("|", "\\|")
    html = (out / "report.html").read_text()
    for c in results["claims"]:
        assert html_escape(c["claim"]) in html and html_escape(c["measured"]) in html


def test_rerun_reuses(run):
    out, cache, results, first = run
    mtimes = {p: p.stat().st_mtime for p in out.rglob("checkpoint_last.pt")}
    t0 = time.monotonic()
    again = run_reproduction(_options(out, cache))
    took = time.monotonic() - t0
    assert took < max(0.5 * first, 30)
    assert {p: p.stat().st_mtime for p in out.rglob("checkpoint_last.pt")} == mtimes
    assert again["claims"] == results["claims"]
    # the rerun's wall time is its own; the experiments' time is the one they took when run
    assert 0 <= again["meta"]["wall_seconds"] <= took  # the report is written after it
    saved = json.loads((out / "results.json").read_text())
    typed = Results(experiments={k: ExperimentResult.from_json(v)
                                 for k, v in saved["experiments"].items()}
                    | {"map": MapResult.from_json(saved["map"])})  # fmt: skip
    first_s, again_s = _seconds(results), _seconds(again)
    assert again_s == pytest.approx(first_s) and first_s > again["meta"]["wall_seconds"]
    assert experiment_seconds(typed) == pytest.approx(again_s)
    assert f"{again_s / 60:.1f} min" in (out / "report.md").read_text()


def _seconds(results: dict) -> float:
    """Training + evaluation seconds in a results.json, summed by hand."""
    total = sum(sum(r["seconds"].values()) for r in results["experiments"].values())
    return total + sum(r["seconds"] for r in results["map"]["rows"])


def test_resume_after_interruption(run):
    out, cache, results, _ = run
    (out / "ctc" / "result.json").unlink()  # as if killed after training, before the result
    again = run_reproduction(_options(out, cache, experiments=["ctc"]))
    assert again["experiments"]["ctc"]["updates"] == results["experiments"]["ctc"]["updates"]
    assert (out / "ctc" / "result.json").is_file()


def test_force_retrains(run):
    out, cache, _, _ = run
    ckpt = out / "ce" / "train" / "checkpoints" / "checkpoint_last.pt"
    before = ckpt.stat().st_mtime_ns
    run_reproduction(_options(out, cache, experiments=["ce"], force=True))
    assert ckpt.stat().st_mtime_ns != before


def test_foreign_result_refused(run):
    out, cache, _, _ = run
    with pytest.raises(ValueError, match="--force"):
        run_reproduction(_options(out, cache, experiments=["ce"], seed=7))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"experiments": ["ce", "nope"]}, "expected experiments among"),
        ({"preset": "multi30k"}, "expected --data DIR"),
        ({"preset": "multi30k", "data": "/nonexistent/dir"}, "expected a data directory"),
        ({"data": "/tmp"}, "expected no --data"),
        ({"preset": "huge"}, "expected a preset"),
        ({"map_objectives": ["delimiter/sum/causal"]}, "expected"),
    ],
)
def test_bad_input_refused_before_training(tmp_path, kw, match):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=match):
        run_reproduction(_options(out, tmp_path / "cache", **kw))
    assert not out.exists()


def test_cli_exit_status(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    rcli.add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "x"), "--experiments", "ce,bogus"])
    assert rcli.main(args) == 2
    assert "expected experiments among" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    opts = rcli.options_from_args(parser.parse_args(["--preset", "ci", "--scale", "0.5"]))
    assert rcli.command_line(opts).startswith("latalign reproduce --preset ci")


def test_registered_as_subcommand():
    from latalign.cli import COMMANDS, build_parser

    assert "reproduce" in COMMANDS
    args = build_parser().parse_args(["reproduce", "--preset", "ci", "--experiments", "ce"])
    assert (args.preset, args.experiments) == ("ci", "ce")


def test_scale_and_updates_overrides(tmp_path):
    from latalign.reproduce import PRESETS

    p = PRESETS["quick"].scaled(0.5).with_updates({"axe": 7})
    assert p.updates["ce"] == round(PRESETS["quick"].updates["ce"] / 2) and p.updates["axe"] == 7
    assert p.warmup_updates == round(PRESETS["quick"].warmup_updates / 2)
    parser = argparse.ArgumentParser()
    rcli.add_arguments(parser)
    opts = rcli.options_from_args(parser.parse_args(["--updates", "axe=5,map=3"]))
    assert opts.updates == {"axe": 5, "map": 3}
    assert "--updates axe=5,map=3" in rcli.command_line(opts)
    args = parser.parse_args(["--updates", "axe=x", "--out", str(tmp_path / "y")])
    assert rcli.main(args) == 2
    with pytest.raises(ValueError, match="expected updates"):
        run_reproduction(_options(tmp_path / "z", tmp_path / "c", updates={"nope": 3}))
    assert not (tmp_path / "z").exists()


def test_data_alone_selects_multi30k_and_its_default_experiments(tmp_path):
    from latalign.reproduce import PRESETS

    parser = argparse.ArgumentParser()
    rcli.add_arguments(parser)
    assert rcli.options_from_args(parser.parse_args([])).preset == "quick"
    data = tmp_path / "data"
    data.mkdir()
    opts = rcli.options_from_args(parser.parse_args(["--data", str(data)]))
    assert opts.preset == "multi30k"
    explicit = rcli.options_from_args(parser.parse_args(["--data", str(data), "--preset", "paper"]))
    assert explicit.preset == "paper"
    # multi30k leaves the 32-objective map out unless asked; quick runs everything
    assert "map" not in PRESETS["multi30k"].default_experiments
    from latalign.reproduce.run import default_experiments

    quick = validate_options(ReproduceOptions(preset="quick"))
    builtin = [n for n in EXPERIMENTS if n != "baseline"]  # quick has no CE recipe to train
    assert quick == default_experiments("quick") and quick[: len(builtin)] == builtin
    with pytest.raises(ValueError, match="train"):  # empty data dir: refused, names the split
        validate_options(opts)
    for split in ("train", "valid", "test"):
        for lang in ("de", "en"):
            (data / f"{split}.{lang}").write_text("ein satz\n" if lang == "de" else "a sentence\n")
    names = validate_options(opts)
    assert [n for n in names if n in EXPERIMENTS] == [n for n in EXPERIMENTS if n != "map"]
    assert "baseline" in names  # the stack's CE recipe (configs/multi30k_small_40min.toml)
    assert names == default_experiments("multi30k")
    asked = rcli.options_from_args(parser.parse_args(["--data", str(data), "--experiments", "map"]))
    assert validate_options(asked) == ["map"]


def test_map_workers_do_not_change_results(run, tmp_path):
    """The fixture's map and the paper's trained experiments (``ahead``) ran in 2 worker
    processes (ci preset: 1 thread, 2+ cores); one process gives the same numbers."""
    from latalign.reproduce import PRESETS
    from latalign.reproduce.run import map_workers

    out, cache, results, _ = run
    import os

    assert map_workers(None, PRESETS["ci"].threads) == min(2, os.cpu_count() or 1)
    serial = run_reproduction(
        _options(tmp_path / "serial", cache, experiments=["map", "ce", "axe"], map_workers=1)
    )

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert strip(serial["map"]["rows"]) == strip(results["map"]["rows"])
    for name in ("ce", "axe"):
        assert strip([serial["experiments"][name]]) == strip([results["experiments"][name]]), name
    hyps = [(d / "axe" / "hyps.test.txt").read_text() for d in (out, tmp_path / "serial")]
    assert hyps[0] == hyps[1]
    with pytest.raises(ValueError, match="map_workers"):
        run_reproduction(_options(tmp_path / "bad", cache, map_workers=0))


def test_floor_measured_on_the_validation_loss_sentences(run):
    """The floor claim's AXE loss is the criterion's validation loss when every validation
    sentence is analysed (ci: 16 of 16): same sentences, same tokens (eos counted)."""
    _, _, results, _ = run
    a = results["experiments"]["axe"]
    fl = a["analysis"]["floor"]
    assert fl["n_sentences"] == a["analysis"]["n_valid"]
    assert fl["loss"] == pytest.approx(a["final_valid_loss"], rel=1e-4)
    assert fl["floor"] == pytest.approx(2 * math.log(2) / fl["mean_length"])


def test_baseline_reuses_a_finished_run(run, tmp_path):
    """--baseline RUN_DIR evaluates a finished CE run: the fixture's own ce run gives the
    ce experiment's translations when its best checkpoint is its last one."""
    import torch

    from latalign.translate.checkpoint import checkpoint_paths

    out, cache, results, _ = run
    ce_run = out / "ce" / "train"
    res = run_reproduction(
        _options(tmp_path / "b", cache, experiments=["baseline"], baseline=ce_run)
    )
    b = res["experiments"]["baseline"]
    assert b["source"] == f"finished run {ce_run}" and b["criterion"] == "ce"
    assert b["test"]["n_sentences"] == results["experiments"]["ce"]["test"]["n_sentences"]
    last, best = checkpoint_paths(ce_run)
    step = lambda p: torch.load(p, map_location="cpu", weights_only=False)["step"]  # noqa: E731
    if not best.is_file() or step(best) == step(last):
        assert (tmp_path / "b" / "baseline" / "hyps.test.txt").read_text() == (
            out / "ce" / "hyps.test.txt"
        ).read_text()
        assert b["test"]["bleu"] == results["experiments"]["ce"]["test"]["bleu"]
    row = next(c for c in res["claims"] if c["id"] == "ce_translates")
    assert row["values"]["judged"] == ["baseline"]


def test_baseline_refused_before_work(run, tmp_path):
    import shutil

    out, cache, _, _ = run
    bad_vocab = tmp_path / "other_vocab"
    shutil.copytree(out / "ce" / "train", bad_vocab)
    cfg = json.loads((bad_vocab / "config.json").read_text())
    cfg["data"]["vocab_size"] = 999
    (bad_vocab / "config.json").write_text(json.dumps(cfg))
    no_ckpt = tmp_path / "no_ckpt"
    shutil.copytree(out / "ce" / "train", no_ckpt)
    shutil.rmtree(no_ckpt / "checkpoints")
    cases = [
        (tmp_path / "missing", "expected --baseline to be a run directory"),
        (tmp_path, "expected a training run's config.json"),
        (no_ckpt, "expected a checkpoint"),
        (out / "axe" / "train", "expected a cross-entropy run"),
        (bad_vocab, "vocab_size"),
    ]
    for path, match in cases:
        with pytest.raises(ValueError, match=match):
            run_reproduction(_options(tmp_path / "r", cache, baseline=path))
        assert not (tmp_path / "r").exists()
    # a run on another corpus (another tokenizer, same settings): refused after data
    # preparation, before any training, nothing written
    from latalign.translate.tokenizer import train_tokenizer

    other = tmp_path / "other_corpus"
    shutil.copytree(out / "ce" / "train", other)
    shutil.rmtree(other / "tokenizer")
    texts = [f"zebra {i} quokka {i * 7} wombat" for i in range(300)]
    train_tokenizer(texts, 200, num_threads=1).save(other / "tokenizer")
    with pytest.raises(ValueError, match="expected the baseline run to be trained on this data"):
        run_reproduction(_options(tmp_path / "r", cache, baseline=other))
    assert not (tmp_path / "r").exists()
    # without --baseline, a preset without a recipe cannot train one
    with pytest.raises(ValueError, match="expected --baseline RUN_DIR"):
        run_reproduction(_options(tmp_path / "r", cache, experiments=["baseline"]))
    parser = argparse.ArgumentParser()
    rcli.add_arguments(parser)
    args = parser.parse_args(["--preset", "ci", "--out", str(tmp_path / "c"), "--baseline",
                              str(tmp_path / "missing")])  # fmt: skip
    assert rcli.main(args) == 2 and not (tmp_path / "c").exists()
