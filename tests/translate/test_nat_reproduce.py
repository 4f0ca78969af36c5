"""The ``nat`` experiment group of ``latalign reproduce`` at the ``ci`` preset: every row,
column, claim and the report section come out of one run."""

from __future__ import annotations

import json
import math
from pathlib import Path

from latalign.reproduce import ReproduceOptions, run_reproduction
from latalign.reproduce.nat import FIGURE, ROWS, repeated_share


def test_repeated_share() -> None:
    assert repeated_share(["a a b", "c"]) == 1 / 4
    assert repeated_share(["", ""]) == 0.0


def test_nat_group_ci(tmp_path: Path) -> None:
    opts = ReproduceOptions(out=tmp_path / "run", preset="ci", experiments=["nat"],
                            progress=False, cache_dir=tmp_path / "cache")  # fmt: skip
    res = run_reproduction(opts)
    nat = res["groups"]["nat"]
    assert sorted(nat["rows"]) == sorted(ROWS)
    for row in nat["rows"].values():
        for key in ("bleu", "chrf", "empty_share", "repeated_share", "length_ratio",
                    "sentences_per_s", "batch1_sentences_per_s"):  # fmt: skip
            assert math.isfinite(row[key]) and row[key] >= 0
    assert all(nat["rows"][r]["updates"] == 6 for r in ROWS if r != "ar")
    kd = tmp_path / "run" / "nat" / "distilled"
    assert json.loads((kd / "distill.json").read_text())["lines"] == 40
    assert len((kd / "train.en").read_text().splitlines()) == 40
    data = tmp_path / "run" / "nat" / "data"
    assert (kd / "train.syn").read_text().splitlines() == (
        (data / "train.syn").read_text().splitlines()[:40]
    )  # --limit: the first 40 pairs of the 300, both sides
    ids = {c["id"] for c in res["claims"]}
    assert {"nat_ctc_over_ce", "nat_axe_over_ce", "nat_distilled_ctc_near_ar",
            "nat_distillation_helps_ctc", "nat_decoding_speed", "nat_decoding_latency"} <= ids  # fmt: skip
    assert nat["recipes"]["nat_ctc_raw"] == "ctc, nat_input=mask, upsample=2, 6 updates"
    assert nat["cpu_seconds"]["total"] > 0
    md = (tmp_path / "run" / "report.md").read_text()
    assert "Where latent alignments help" in md and "NAT-CTC (distilled)" in md
    assert (tmp_path / "run" / FIGURE).is_file() and f"]({FIGURE})" in md
