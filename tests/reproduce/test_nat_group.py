"""The ``nat`` group without training: its row table, the students' TrainConfigs (quick and
the Multi30k recipes), the claims on made-up results (✓ and ✗), the BLEU-speed figure and
the report section."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import latalign.reproduce.nat as nat
from latalign.reproduce.context import Context
from latalign.reproduce.nat import (
    FIGURE,
    ROWS,
    STUDENTS,
    NatResult,
    NatRow,
    Student,
    claims,
    figure,
    group_spec,
    recipe_file,
    report,
    speedups,
    student_config,
    student_of,
)
from latalign.reproduce.presets import PRESETS
from latalign.reproduce.records import Results
from latalign.translate.config import TrainConfig
from latalign.translate.data import DataConfig

TEACHER_RECIPE = "configs/multi30k_small_40min.toml"


def _ctx(preset: str, tmp_path: Path, data: str | None = None) -> Context:
    return Context(out=tmp_path, preset=PRESETS[preset], seed=3, data_dir=data, force=False,
                   progress=False, cache_dir=tmp_path / "cache")  # fmt: skip


def _row(bleu: float, b1: float | None = 10.0, sps: float = 100.0) -> NatRow:
    return NatRow(bleu=bleu, chrf=50.0, empty_share=0.0, repeated_share=0.01, length_ratio=1.0,
                  sentences_per_s=sps, decode_seconds=1.0, batch1_sentences_per_s=b1,
                  batch1_sentences=100)  # fmt: skip


def _result(**bleu: float) -> NatResult:
    """A made-up result: every row of :data:`ROWS` at 20 BLEU unless given; AR 10 sent/s at
    batch 1, every student 120 (12×)."""
    rows = {k: _row(bleu.get(k, 20.0), b1=10.0 if k == "ar" else 120.0) for k in ROWS}
    return NatResult(rows=rows, train_pairs=None, n_test=200, n_decoded=200, updates=1200,
                     teacher="ce", workers=2, threads=1, seconds={"total": 10.0},
                     cpu_seconds={"total": 18.0},
                     recipes={k: "ce, nat_input=mask, 1200 updates" for k in ROWS[1:]})  # fmt: skip


# --------------------------------------------------------------------------- the row table


def test_rows_come_from_the_student_table() -> None:
    assert ROWS[0] == "ar"
    expected = {f"{s.name}_{v}" for s in STUDENTS for v in s.variants}
    assert set(ROWS[1:]) == expected and len(ROWS) == 1 + len(expected)
    assert ROWS[1:4] == ("nat_ce_raw", "nat_axe_raw", "nat_ctc_raw")  # raw rows first
    for s in STUDENTS:
        for row in s.rows():
            assert student_of(row) is s
    with pytest.raises(ValueError, match="expected a student row"):
        student_of("nat_nothing_raw")


def test_new_student_is_one_line(tmp_path: Path) -> None:
    s = Student("nat_latent", "NAT-LATENT", "latent", options={"upsample": 3, "aggregate": "max"},
                variants=("distilled",))  # fmt: skip
    assert s.rows() == ("nat_latent_distilled",)
    ctx = _ctx("quick", tmp_path)
    cfg = student_config(ctx, s, ctx.data_config(), tmp_path / "x", 9)
    assert (cfg.arch, cfg.criterion, cfg.upsample, cfg.aggregate) == ("nat", "latent", 3, "max")
    with pytest.raises(ValueError, match="expected options of criterion 'ce'"):  # validated
        student_config(ctx, dataclasses.replace(s, criterion="ce"), ctx.data_config(),
                       tmp_path / "y", 9)  # fmt: skip


@pytest.mark.parametrize("preset", ["quick", "ci"])
def test_student_configs_without_recipe(preset: str, tmp_path: Path) -> None:
    ctx = _ctx(preset, tmp_path)
    data = dataclasses.replace(ctx.data_config(), train_limit=40)
    for s in STUDENTS:
        cfg = student_config(ctx, s, data, tmp_path / s.name, 77)
        assert (cfg.arch, cfg.criterion, cfg.max_updates, cfg.seed) == (s.arch, s.criterion, 77, 3)
        assert cfg.data.train_limit == 40 and cfg.run_dir == str(tmp_path / s.name)
        assert cfg.lr == PRESETS[preset].lr and cfg.max_tokens == PRESETS[preset].max_tokens
        for key, value in s.options.items():
            assert getattr(cfg, key) == value, (s.name, key)
        assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_axe_recipe_is_the_fixed_one() -> None:
    by = {s.name: s for s in STUDENTS}
    assert by["nat_axe"].options["nat_input"] == "mask" and by["nat_axe"].options["delta"] == 1.0
    assert by["nat_ctc"].options["upsample"] >= 2


# --------------------------------------------------------------------------- recipes


def test_multi30k_recipes_match_the_table_and_the_teacher_budget(tmp_path: Path) -> None:
    ctx = _ctx("multi30k", tmp_path, data="/data/m30k")
    teacher = TrainConfig.from_file(recipe_file(TEACHER_RECIPE))
    recipes = nat.RECIPES["multi30k"]
    assert set(recipes) == {s.name for s in STUDENTS}
    for s in STUDENTS:
        data = DataConfig(data=str(tmp_path / "kd"), src="de", tgt="en", vocab_size=8000)
        cfg = student_config(ctx, s, data, tmp_path / s.name, 5)
        assert (cfg.arch, cfg.criterion) == (s.arch, s.criterion)
        for key, value in s.options_for("multi30k").items():  # the file says what the table says
            assert getattr(cfg, key) == value, (recipes[s.name], key)
        # equal budgets: the teacher's minutes, optimiser, batch size and model preset
        assert cfg.max_minutes == teacher.max_minutes == 40.0 and cfg.max_updates == 0
        for key in ("lr", "warmup_updates", "max_tokens", "preset", "model"):
            assert getattr(cfg, key) == getattr(teacher, key), key
        assert cfg.data.data == str(tmp_path / "kd") and cfg.seed == 3
        assert (cfg.data.src, cfg.data.tgt, cfg.data.vocab_size) == ("de", "en", 8000)


@pytest.mark.parametrize("name", ["nat_ctc", "nat_ctc_glat"])
def test_distilled_ctc_recipe_is_the_raw_one_on_distilled_data(name: str) -> None:
    raw = TrainConfig.from_file(recipe_file(f"configs/multi30k_{name}_40min.toml")).to_dict()
    kd = TrainConfig.from_file(recipe_file(f"configs/multi30k_{name}_kd_40min.toml")).to_dict()
    assert raw["data"].pop("data") == "../shared/data/multi30k"
    assert kd["data"].pop("data") == "runs/m30k-kd"
    assert raw == kd


def test_recipe_of_another_criterion_is_refused(tmp_path: Path, monkeypatch) -> None:
    ctx = _ctx("multi30k", tmp_path, data="/data/m30k")
    wrong = {**nat.RECIPES["multi30k"], "nat_ce": "configs/multi30k_nat_axe_40min.toml"}
    monkeypatch.setitem(nat.RECIPES, "multi30k", wrong)
    with pytest.raises(
        ValueError, match="expected recipe .* criterion 'ce'; found 'nat' with 'axe'"
    ):
        student_config(ctx, STUDENTS[0], ctx.data_config(), tmp_path / "x", 5)
    monkeypatch.setitem(nat.RECIPES, "multi30k", {"nat_ce": "configs/no_such_recipe.toml"})
    with pytest.raises(ValueError, match="expected the NAT student recipe"):
        student_config(ctx, STUDENTS[0], ctx.data_config(), tmp_path / "x", 5)


def test_spec_follows_the_table_and_the_recipes(tmp_path: Path, monkeypatch) -> None:
    ctx = _ctx("quick", tmp_path)
    before = group_spec(ctx, "nat", {"student": 1200})
    assert before["students"][1]["options"] == dict(STUDENTS[1].options)
    changed = (STUDENTS[0], dataclasses.replace(STUDENTS[1], options={"delta": 1.0}), *STUDENTS[2:])
    monkeypatch.setattr(nat, "STUDENTS", changed)
    assert group_spec(ctx, "nat", {"student": 1200}) != before
    m30k = group_spec(_ctx("multi30k", tmp_path, data="/d"), "nat", {"student": 600})
    assert "max_minutes = 40.0" in m30k["recipes"]["nat_ctc"]
    # Multi30k's CTC recipe decodes from the copy (chosen on its validation split)
    assert m30k["students"][2]["options"]["nat_input"] == "copy"
    assert before["students"][2]["options"]["nat_input"] == "mask"


# --------------------------------------------------------------------------- claims


def _verdicts(result: NatResult) -> dict[str, bool | None]:
    return {c.id: c.passed for c in claims(Results(), result)}


def test_claims_pass_on_a_good_result() -> None:
    good = _result(nat_ce_raw=20.0, nat_axe_raw=23.5, nat_ctc_raw=30.0, nat_ctc_distilled=31.5,
                   ar=34.0)  # fmt: skip
    v = _verdicts(good)
    assert v["nat_ctc_over_ce"] and v["nat_axe_over_ce"] and v["nat_distillation_helps_ctc"]
    assert v["nat_distilled_ctc_near_ar"] and v["nat_decoding_latency"]  # 12× at batch 1
    assert v["nat_decoding_speed"] is False  # 100 vs 100 sentences/s in batches: 1×


def test_claims_can_fail() -> None:
    bad = _result(nat_ce_raw=20.0, nat_axe_raw=22.9, nat_ctc_raw=24.9, nat_ctc_distilled=25.8,
                  ar=30.0)  # fmt: skip
    bad.rows["nat_ctc_raw"] = dataclasses.replace(bad.rows["nat_ctc_raw"],
                                                  batch1_sentences_per_s=99.0)  # fmt: skip
    v = _verdicts(bad)
    assert v == {"nat_ctc_over_ce": False, "nat_axe_over_ce": False,
                 "nat_distilled_ctc_near_ar": False, "nat_distillation_helps_ctc": False,
                 "nat_decoding_speed": False, "nat_decoding_latency": False}  # fmt: skip
    text = {c.id: c.measured for c in claims(Results(), bad)}
    assert (
        text["nat_axe_over_ce"].startswith("+2.90 BLEU") and text["nat_decoding_latency"] == "9.9×"
    )


# --------------------------------------------------------------------------- figure, report


def test_speedups_and_figure(tmp_path: Path) -> None:
    r = _result(ar=40.0)
    x = speedups(r)
    assert x["ar"] == 1.0 and x["nat_ctc_raw"] == pytest.approx(12.0)
    path = tmp_path / FIGURE
    assert figure(r, path) and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    old = dataclasses.replace(r, rows={k: dataclasses.replace(v, batch1_sentences_per_s=None)
                                       for k, v in r.rows.items()})  # fmt: skip
    assert speedups(old) == {} and not figure(old, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_report_section(tmp_path: Path) -> None:
    blocks = report(Results(), _result(), tmp_path)
    imgs = [b for b in blocks if b[0] == "img"]
    assert imgs == [("img", FIGURE, "BLEU against the speed-up over AR beam 5 at batch 1")]
    assert (tmp_path / FIGURE).is_file()
    tables = [b for b in blocks if b[0] == "table"]
    models = [row[0] for row in tables[0][2]]
    assert models[0].startswith("AR, beam 5") and "NAT-CTC (distilled)" in models
    assert [row[-1] for row in tables[0][2]][:2] == ["1.0×", "12.0×"]
    field = tables[1][2]
    assert any("Fully-NAT" in row[0] and "26.51" in row[4] for row in field)
    text = " ".join(b[1] for b in blocks if b[0] == "p")
    assert "18 s CPU" in text and "nat_input=mask" in text
