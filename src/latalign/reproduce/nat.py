"""Experiment group ``nat``: where latent alignments help — non-autoregressive models trained
with CE, AXE and CTC, on the raw corpus and on the AR model's distillation, beside the AR
beam-5 baseline (issue 10, docs/nat.md).

Rows: ``ar`` (the ``ce`` experiment's model, beam 5: the teacher), ``nat_ce``, ``nat_axe``,
``nat_ctc``, each ``raw`` (trained on the reference translations) and ``distilled`` (trained
on the teacher's beam-5 translations of the same source sentences, :mod:`.distill`). Columns:
BLEU, chrF, empty share, repeated-token share (share of output words equal to the word before
them, NAT's repetition symptom), length ratio, decoding sentences/s (the same test sentences,
the same batch size, one process; AR with beam 5, NAT in one pass with its length beam or CTC
collapse; the fastest of ``TIMING_REPEATS`` decodings) — throughput — and sentences/s at
batch 1 on the first ``LATENCY_SENTENCES`` of them — latency, how the NAT papers report their
speed-ups. On a CPU throughput is compute-bound: AR beam 5 pushes about 5 × (output length)
decoder rows per sentence through the output projection, NAT-CTC 2 × (source length) in one
pass, so its throughput ratio stays near 2-4×; at batch 1 the AR decoder's ~T sequential
steps are small and latency-bound, where one NAT pass gains most.

The teacher is the ``ce`` experiment, or in presets with a cross-entropy recipe
(:data:`TEACHER`: ``multi30k``) the ``baseline`` experiment: the stack's real CE model, which
translates (the ``ce`` experiment is sized for the paper's claims, not for BLEU).

The six students train side by side in ``ctx.map_workers`` processes (as the map and
``beyond_tf`` do); every row is decoded and timed afterwards in this process, one after
another, so the speed ratio compares decodings that had the machine to themselves.

Students train on the first ``DISTILL_PAIRS[preset]`` training pairs (all when None), raw
and distilled alike, so the two differ only in their targets; ``updates["student"]`` updates
each, with the preset's optimiser and batch size.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from latalign.reproduce import experiments as ex
from latalign.reproduce.groups import ExperimentGroup, GroupRun
from latalign.reproduce.report import claim_row

logger = logging.getLogger(__name__)

#: training pairs distilled and used by the students (None = the whole training split)
DISTILL_PAIRS: dict[str, int | None] = {"quick": None, "multi30k": None, "paper": None, "ci": 40}
CRITERIA = ("ce", "axe", "ctc")
ROWS = ("ar", *(f"nat_{c}_{v}" for v in ("raw", "distilled") for c in CRITERIA))
BATCH_SIZE = 50
TIMING_REPEATS = 3  # decoding sentences/s: the fastest of this many decodings of the test set
LATENCY_SENTENCES = 100  # sentences decoded one at a time (batch 1) for the latency column
#: the experiment whose model is the AR row and the distillation teacher (default ``ce``)
TEACHER: dict[str, str] = {"multi30k": "baseline"}


def teacher_of(preset: str) -> str:
    """The experiment that teaches the students in ``preset``."""
    return TEACHER.get(preset, "ce")


def repeated_share(hyps: list[str]) -> float:
    """Share of hypothesis words equal to the word right before them (0 when no words)."""
    words = repeats = 0
    for h in hyps:
        w = h.split()
        words += len(w)
        repeats += sum(1 for a, b in zip(w, w[1:]) if a == b)
    return repeats / words if words else 0.0


def _score(run: Any, src: list[str], refs: list[str]) -> dict:
    from latalign.translate.decode import SearchOptions
    from latalign.translate.metrics import evaluate_translations

    def decode(sentences: list[str], batch_size: int) -> list[str]:
        return run.translate(sentences, SearchOptions(beam=5, batch_size=batch_size, bf16=False))

    seconds = latency = float("inf")
    one_by_one = src[:LATENCY_SENTENCES]
    for _ in range(TIMING_REPEATS):  # the fastest of a few: the machine may be shared
        t0 = time.perf_counter()
        hyps = decode(src, BATCH_SIZE)
        seconds = min(seconds, time.perf_counter() - t0)
        t0 = time.perf_counter()
        decode(one_by_one, 1)
        latency = min(latency, time.perf_counter() - t0)
    scores = evaluate_translations(hyps, refs)
    return {
        "bleu": scores["bleu"],
        "chrf": scores["chrf"],
        "empty_share": scores["empty_share"],
        "repeated_share": repeated_share(hyps),
        "length_ratio": scores["length_ratio"],
        "sentences_per_s": len(src) / max(seconds, 1e-9),
        "decode_seconds": seconds,
        "batch1_sentences_per_s": len(one_by_one) / max(latency, 1e-9),
        "batch1_sentences": len(one_by_one),
        "examples": list(zip(src, refs, hyps))[:2],
    }


def _data_dir(g: GroupRun) -> Path:
    """The corpus as a data directory (distill reads files): ``--data``, or the synthetic
    corpus of the preset written to ``{group}/data``."""
    ctx = g.ctx
    if ctx.data_dir is not None:
        return Path(ctx.data_dir)
    from latalign.translate.synthetic import write_synthetic

    cfg = ctx.data_config()
    path = g.directory / "data"
    if not (path / "test.en").is_file():
        write_synthetic(path, cfg.synthetic_size, cfg.synthetic_eval_size,
                        cfg.synthetic_eval_size, cfg.synthetic_seed)  # fmt: skip
    return path


def train_student(ctx: Any, crit: str, data: Any, run_dir: Path, updates: int) -> float:
    """Train one NAT student (module level: spawned workers run it); its wall seconds."""
    from latalign.translate.train import train

    base = ex.train_config(ctx, run_dir, crit, {}, updates)
    cfg = dataclasses.replace(base, arch="nat", data=data)
    logger.info("nat: training NAT-%s %d updates (%s)", crit, cfg.max_updates, run_dir)
    t0 = time.monotonic()
    train(cfg, progress=ctx.progress)
    return time.monotonic() - t0


def teacher_checkpoint(g: GroupRun) -> Path:
    """The teacher's checkpoint: the baseline run's best (else last), or the ``ce`` run's last."""
    from latalign.translate.checkpoint import checkpoint_paths, resolve_checkpoint

    if teacher_of(g.ctx.preset.name) == "baseline":
        return resolve_checkpoint(run_dir=g.results["experiments"]["baseline"]["run_dir"])
    return checkpoint_paths(g.ctx.out / "ce" / "train")[0]


def run(g: GroupRun) -> dict[str, Any]:
    from latalign.translate.checkpoint import checkpoint_paths
    from latalign.translate.decode import SearchOptions
    from latalign.translate.distill import distill
    from latalign.translate.run import load_run

    ctx, d = g.ctx, g.directory
    t_start = time.monotonic()
    seconds: dict[str, float] = {}
    pairs = DISTILL_PAIRS.get(ctx.preset.name)
    raw_cfg = dataclasses.replace(ctx.data_config(), train_limit=pairs)
    teacher_ckpt = teacher_checkpoint(g)

    t0 = time.monotonic()
    data_dir = _data_dir(g)
    src_lang = raw_cfg.src if ctx.data_dir is not None else "syn"
    tgt_lang = raw_cfg.tgt if ctx.data_dir is not None else "en"
    kd_dir = d / "distilled"
    distill(teacher_ckpt, data_dir, kd_dir, src=src_lang, tgt=tgt_lang,
            options=SearchOptions(beam=5, batch_size=BATCH_SIZE, bf16=False), limit=pairs,
            progress=ctx.progress and sys.stderr.isatty())  # fmt: skip
    seconds["distill"] = time.monotonic() - t0
    kd_cfg = dataclasses.replace(
        raw_cfg, data=str(kd_dir), src=src_lang, tgt=tgt_lang, train_limit=None
    )

    n = g.updates["student"]
    jobs = {
        f"nat_{crit}_{variant}": (crit, data)
        for variant, data in (("raw", raw_cfg), ("distilled", kd_cfg))
        for crit in CRITERIA
    }
    workers = min(ctx.map_workers, len(jobs))
    if workers > 1:
        with ex.spawn_pool(ctx, workers) as (pool, light):
            light = dataclasses.replace(light, progress=False)
            futures = {
                name: pool.submit(train_student, light, crit, data, d / name, n)
                for name, (crit, data) in jobs.items()
            }
            for name, fut in futures.items():
                seconds[f"train_{name}"] = fut.result()
    else:
        for name, (crit, data) in jobs.items():
            seconds[f"train_{name}"] = train_student(ctx, crit, data, d / name, n)

    test = ctx.data.test
    idx = ex._subset(len(test), ctx.preset.test_sentences)
    src = [test.raw_src[i] for i in idx]
    refs = [test.raw_tgt[i] for i in idx]
    rows: dict[str, dict[str, Any]] = {}
    rows["ar"] = _score(load_run(teacher_ckpt), src, refs)
    for name in jobs:
        student = load_run(checkpoint_paths(d / name)[0])
        rows[name] = _score(student, src, refs)
        rows[name]["updates"] = student.step
    seconds["total"] = time.monotonic() - t_start
    return {
        "rows": rows,
        "train_pairs": pairs,
        "n_test": len(test),
        "n_decoded": len(src),
        "updates": n,
        "teacher": teacher_of(ctx.preset.name),
        "workers": workers,
        "threads": torch.get_num_threads(),
        "seconds": seconds,
    }


# --------------------------------------------------------------------------- claims, report

LABELS = {
    "ar": "AR, beam 5 (CE; the teacher)",
    **{f"nat_{c}_{v}": f"NAT-{c.upper()} ({v})" for c in CRITERIA for v in ("raw", "distilled")},
}


TEACHER_LABELS = {"ce": "CE", "baseline": "the CE recipe"}


def _label(row: str, result: dict[str, Any]) -> str:
    if row == "ar":
        teacher = result.get("teacher", "ce")
        return f"AR, beam 5 ({TEACHER_LABELS.get(teacher, teacher)}; the teacher)"
    return LABELS[row]


def claims(results: dict[str, Any], result: dict[str, Any]) -> list[dict[str, Any]]:
    r = result["rows"]
    bleu = {k: v["bleu"] for k, v in r.items()}
    sample = f"{result['n_decoded']} test sentences of {result['n_test']}"
    speed = r["nat_ctc_raw"]["sentences_per_s"] / max(r["ar"]["sentences_per_s"], 1e-9)
    latency = None  # results from before the batch-1 column have none
    if "batch1_sentences_per_s" in r["ar"]:
        latency = r["nat_ctc_raw"]["batch1_sentences_per_s"] / max(
            r["ar"]["batch1_sentences_per_s"], 1e-9
        )
    gap_ctc = bleu["nat_ctc_raw"] - bleu["nat_ce_raw"]
    gap_axe = bleu["nat_axe_raw"] - bleu["nat_ce_raw"]
    gap_kd = bleu["ar"] - bleu["nat_ctc_distilled"]
    return [
        claim_row("nat_ctc_over_ce", "NAT: CTC beats CE on raw data by ≥ 5 BLEU", "nat",
                  "behaviour", "BLEU(NAT-CTC raw) − BLEU(NAT-CE raw) ≥ 5",
                  f"{gap_ctc:+.2f} BLEU ({bleu['nat_ctc_raw']:.2f} vs {bleu['nat_ce_raw']:.2f})",
                  sample, {"gap": gap_ctc}, gap_ctc >= 5),
        claim_row("nat_axe_over_ce", "NAT: AXE beats CE on raw data by ≥ 3 BLEU", "nat",
                  "behaviour", "BLEU(NAT-AXE raw) − BLEU(NAT-CE raw) ≥ 3",
                  f"{gap_axe:+.2f} BLEU ({bleu['nat_axe_raw']:.2f} vs {bleu['nat_ce_raw']:.2f})",
                  sample, {"gap": gap_axe}, gap_axe >= 3),
        claim_row("nat_distilled_ctc_near_ar", "Distilled NAT-CTC within 4 BLEU of its teacher",
                  "nat", "behaviour", "BLEU(AR beam 5) − BLEU(NAT-CTC distilled) ≤ 4",
                  f"{gap_kd:.2f} BLEU ({bleu['ar']:.2f} vs {bleu['nat_ctc_distilled']:.2f})",
                  sample, {"gap": gap_kd}, gap_kd <= 4),
        claim_row("nat_decoding_speed", "NAT decodes ≥ 10× faster than AR beam 5, in batches",
                  "nat",
                  "behaviour", "sentences/s(NAT-CTC) / sentences/s(AR beam 5) ≥ 10",
                  f"{speed:.1f}×", sample + f", batch {BATCH_SIZE}, one process, best of {TIMING_REPEATS}",
                  {"ratio": speed}, speed >= 10),
    ] + ([
        claim_row("nat_decoding_latency", "NAT decodes ≥ 10× faster than AR beam 5, one sentence "
                  "at a time", "nat", "behaviour",
                  "sentences/s at batch 1: NAT-CTC / AR beam 5 ≥ 10",
                  f"{latency:.1f}×", f"the first {r['ar']['batch1_sentences']} of the "
                  f"{result['n_decoded']} test sentences, batch 1, one process, best of {TIMING_REPEATS}",
                  {"ratio": latency}, latency >= 10),
    ] if latency is not None else [])  # fmt: skip


def report(results: dict[str, Any], result: dict[str, Any], out: Path) -> list[tuple]:
    r = result["rows"]
    headers = ["model", "BLEU", "chrF", "empty", "repeated", "length ratio", "sent/s",
               "sent/s, batch 1"]  # fmt: skip
    table = [
        [_label(k, result), f"{v['bleu']:.2f}", f"{v['chrf']:.1f}", f"{100 * v['empty_share']:.1f}%",
         f"{100 * v['repeated_share']:.1f}%", f"{v['length_ratio']:.2f}",
         f"{v['sentences_per_s']:.0f}", f"{v.get('batch1_sentences_per_s', math.nan):.0f}"]
        for k, v in r.items()
    ]  # fmt: skip
    blocks: list[tuple] = [
        ("h", 3, "Where latent alignments help"),
        (
            "p",
            "The same encoder and training loop with a non-autoregressive decoder (one pass, "
            "docs/nat.md). NAT-CE and NAT-AXE decode at predicted lengths (length beam 3), "
            "NAT-CTC at 2× the source length with the CTC collapse. Students: "
            f"{result['updates']} updates on {result['train_pairs'] or 'all'} training pairs, "
            "raw references or the AR model's beam-5 translations (distilled). "
            f"{result['n_decoded']} test sentences.",
        ),
        ("table", headers, table),
    ]
    axe = results.get("experiments", {}).get("axe", {}).get("test")
    ce = results.get("experiments", {}).get("ce", {}).get("test")
    if axe and ce:
        blocks.append(
            (
                "p",
                f"Beside it, the autoregressive collapse under AXE: AR-AXE BLEU "
                f"{axe['bleu']:.2f} (empty {100 * axe['empty_share']:.0f}%) against AR-CE "
                f"{ce['bleu']:.2f}: the alignment losses that hurt the autoregressive model "
                "are the ones a non-autoregressive model trains with.",
            )
        )
    return blocks


GROUP = ExperimentGroup(
    name="nat",
    description="non-autoregressive CE / AXE / CTC, raw and distilled, beside AR beam 5",
    run=run,
    claims=claims,
    report=report,
    updates={
        "quick": {"student": 1200},
        "multi30k": {"student": 600},
        "paper": {"student": 100000},
        "ci": {"student": 6},
    },
    requires=("ce",),
    requires_for={p: (e,) for p, e in TEACHER.items()},
    default_presets=("quick", "multi30k", "paper"),
)
