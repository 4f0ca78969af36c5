"""``run_reproduction``: check the options, run every selected experiment through its group,
collect the claims, write ``results.json`` and the report."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

import latalign.reproduce.analysis as an
from latalign.align.backends import set_numba_threads
from latalign.io import atomic_write
from latalign.reproduce.baseline import check_baseline_run, check_baseline_tokenizer, recipe_path
from latalign.reproduce.context import Context, default_cache
from latalign.reproduce.groups import ExperimentGroup, GroupRun
from latalign.reproduce.presets import EXPERIMENTS, PRESETS, ReproduceOptions
from latalign.reproduce.records import Results, to_json
from latalign.reproduce.registry import groups, owners
from latalign.reproduce.render import Block
from latalign.reproduce.report import header_blocks, write_report
from latalign.reproduce.store import check_reusable, reuse_or_run
from latalign.translate.data import detect_splits
from latalign.translate.device import resolve_device

logger = logging.getLogger("latalign.reproduce")


def default_experiments(preset: str) -> list[str]:
    """What runs without ``--experiments``: each group's defaults for ``preset``, in order."""
    return [n for g in groups().values() for n in g.default_names(preset)]


def known_experiments() -> list[str]:
    """Every experiment name ``--experiments`` accepts, in run order."""
    return list(owners())


def validate_options(options: ReproduceOptions) -> list[str]:
    """Check everything that can be checked before training; ``ValueError`` otherwise.

    Returns the experiments in run order (what the selected ones require added).
    """
    if options.preset not in PRESETS:
        raise ValueError(f"expected a preset in {{{', '.join(PRESETS)}}}; found {options.preset!r}")
    preset = PRESETS[options.preset]
    if options.device is not None:
        if options.device != "auto" and not (
            options.device == "cpu" or options.device.startswith("cuda")
        ):
            raise ValueError(f"expected device auto, cpu, cuda or cuda:N; found {options.device!r}")
        resolve_device(options.device)  # a CUDA device that is not there: refused now
    owner = owners()
    known = list(owner)
    names = list(options.experiments) if options.experiments else default_experiments(preset.name)
    if options.baseline is not None and "baseline" not in names:
        names.append("baseline")  # --baseline RUN_DIR asks for it
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"expected experiments among {known}; found {unknown or names}")
    for n in list(names):
        names += [r for r in owner[n].required(preset.name) if r not in names]
        owner[n].scaled_updates(preset.name)  # ValueError: no sizes for this preset
    names = [n for n in known if n in names]  # canonical order, no duplicates
    if "baseline" in names:
        if options.baseline is not None:
            check_baseline_run(Path(options.baseline), preset)
        else:
            recipe_path(preset)  # ValueError: no recipe (give --baseline)
    for k in options.map_objectives or ():
        an.parse_objective_key(k)  # ValueError on a malformed key
    for k, v in (options.updates or {}).items():
        group, _, sub = k.partition(".")
        ok = (
            isinstance(v, int)
            and v >= 1
            and ((not sub and k in EXPERIMENTS) or (sub and group in groups()))
        )
        if not ok:
            raise ValueError(
                f"expected updates as experiment=N (or group.key=N) with N >= 1 for experiments "
                f"in {known}; found {k}={v!r}"
            )
        if sub:
            groups()[group].scaled_updates(preset.name, overrides={sub: v})
    if options.map_workers is not None and options.map_workers < 1:
        raise ValueError(f"expected map_workers >= 1; found {options.map_workers}")
    if options.threads is not None and options.threads < 1:
        raise ValueError(f"expected threads >= 1; found {options.threads}")
    if not options.scale > 0:
        raise ValueError(f"expected scale > 0; found {options.scale}")
    if preset.needs_data and options.data is None:
        raise ValueError(f"expected --data DIR for preset {preset.name!r}; found none")
    if not preset.needs_data and options.data is not None:
        raise ValueError(
            f"expected no --data for preset {preset.name!r} (it uses the built-in synthetic "
            f"corpus); found {options.data} — use --preset multi30k or paper"
        )
    if options.data is not None:
        d = Path(options.data)
        if not d.is_dir():
            raise ValueError(f"expected a data directory at {d}; found none")
        src, tgt = preset.data.get("src", "de"), preset.data.get("tgt", "en")
        try:
            detect_splits(d, src, tgt, "train", "valid", "test")
        except (FileNotFoundError, ValueError) as e:
            raise ValueError(f"data: {e}") from None
    return names


def group_updates(options: ReproduceOptions, group: ExperimentGroup) -> dict[str, int]:
    """``group``'s updates for the options' preset, ``--scale`` and ``--updates g.key=N``."""
    prefix = group.name + "."
    overrides = {
        k[len(prefix) :]: v for k, v in (options.updates or {}).items() if k.startswith(prefix)
    }
    return group.scaled_updates(options.preset, options.scale, overrides)


def run_experiment(
    group: ExperimentGroup, name: str, ctx: Context, updates: dict[str, int], results: Results
) -> Any:
    """Run (or reuse) experiment ``name`` of ``group``; unless the group reuses its cells,
    ``{out}/{name}/result.json`` is checked first and written last."""
    directory = ctx.out / name

    def compute() -> Any:
        t0 = time.monotonic()
        result = group.run(GroupRun(ctx, directory, updates, results, name))
        if getattr(result, "seconds", 0) is None:
            result = replace(result, seconds=time.monotonic() - t0)
        elif isinstance(result, dict):
            result.setdefault("seconds", time.monotonic() - t0)
        logger.info("%s: done in %.0f s", name, time.monotonic() - t0)
        return result

    spec = group.result_spec(ctx, name, updates)
    if group.reuses_cells or spec is None:
        return group.run(GroupRun(ctx, directory, updates, results, name))
    load = group.record or (lambda saved: saved)
    return reuse_or_run(directory, spec, force=ctx.force, compute=compute, load=load, name=name)


def context_of(options: ReproduceOptions) -> Context:
    """The :class:`Context` of validated ``options``."""
    preset = PRESETS[options.preset]
    if options.scale != 1.0:
        preset = preset.scaled(options.scale)
    if options.updates:
        preset = preset.with_updates(options.updates)
    if options.device:
        preset = replace(preset, train_device=options.device)
    threads = options.threads or preset.threads  # None: torch's default
    return Context(
        out=Path(options.out),
        preset=preset,
        seed=options.seed,
        data_dir=None if options.data is None else str(Path(options.data).resolve()),
        force=options.force,
        progress=options.progress,
        cache_dir=default_cache(options.cache_dir),
        map_workers=map_workers(options.map_workers, threads),
        threads=threads,
        baseline=None if options.baseline is None else Path(options.baseline),
        map_objectives=tuple(options.map_objectives or ()),
    )


def map_workers(requested: int | None, threads: int | None) -> int:
    """Processes for the map and the groups' runs: ``requested`` when given; else one per
    core (at most 2) when the run trains on one thread (tiny models gain little from a second
    thread, and two single-thread processes use both cores without spin-waiting), else 1."""
    if requested:
        return requested
    return min(2, os.cpu_count() or 1) if threads == 1 else 1


def report_blocks(results: Results, out: Path) -> list[Block]:
    """The report: the header and claims tables, then each group's section, in run order."""
    blocks = header_blocks(results)
    for g, result in _reporting(results):
        if g.report is not None:
            if g.heading:
                blocks.append(("h", 2, f"{g.description} (`{g.name}`)"))
            blocks += g.report(results, result, out)
    return blocks


def _reporting(results: Results) -> list[tuple[ExperimentGroup, Any]]:
    """The groups asked for claims and a report section, each with its result."""
    out = []
    for g in groups().values():
        ran = [n for n in g.names() if n in results.experiments]
        if g.always or ran:
            out.append((g, results.experiments[g.name] if not g.experiments and ran else None))
    return out


def run_reproduction(options: ReproduceOptions) -> dict[str, Any]:
    """Run the selected experiments and write ``report.md``, ``report.html``,
    ``results.json`` and the figures (PNG) into ``options.out``.

    Finished experiments are reused (``force`` redoes them), an interrupted one resumes from
    its last checkpoint. Bad options raise ``ValueError`` before any training. Returns the
    results as written to ``results.json``; ``["claims"]`` is the claims table.
    """
    names = validate_options(options)
    ctx = context_of(options)
    owner = owners()
    updates = {n: group_updates(options, owner[n]) for n in names}
    for name in names:  # refuse a foreign result before training anything
        spec = owner[name].result_spec(ctx, name, updates[name])
        if spec is not None and not ctx.force:
            check_reusable(ctx.out / name, spec)
    if ctx.baseline is not None and "baseline" in names:
        check_baseline_tokenizer(ctx)  # prepares the data; refuses another corpus
    ctx.out.mkdir(parents=True, exist_ok=True)
    old_threads = torch.get_num_threads()
    old_numba = set_numba_threads(ctx.threads)
    if ctx.threads:
        torch.set_num_threads(ctx.threads)
    flush = torch.set_flush_denormal(True)  # denormals slow CPU training (docs/reproduce.md)
    t0 = time.monotonic()
    results = Results()
    ahead: dict[str, Any] = {}  # results computed side by side (ExperimentGroup.ahead)
    try:
        for i, name in enumerate(names, 1):
            g = owner[name]
            if g.ahead is not None and not any(n in ahead or n in results.experiments
                                               for n in g.names()):  # fmt: skip
                t1 = time.monotonic()
                ahead |= g.ahead(ctx, [n for n in names if owner[n] is g])
                if ahead:
                    logger.info("%s: %s side by side in %.0f s", g.name, ", ".join(ahead),
                                time.monotonic() - t1)  # fmt: skip
            logger.info("[%d/%d] %s — %s", i, len(names), name, g.names()[name])
            results.experiments[name] = (
                ahead[name] if name in ahead else run_experiment(g, name, ctx, updates[name],
                                                                 results)
            )  # fmt: skip
    finally:
        if flush:
            torch.set_flush_denormal(False)
        torch.set_num_threads(old_threads)
        set_numba_threads(old_numba)
    results.meta = {
        "command": options.command or "run_reproduction(...)",
        "preset": ctx.preset.to_dict(),
        "seed": options.seed,
        "data": ctx.data_dir,
        "data_summary": _jsonable(ctx.data.summary),
        "experiments": names,
        "wall_seconds": time.monotonic() - t0,
        "units": "losses in nats per target token (eos included); BLEU and chrF 0-100; "
        "shares and probabilities in [0, 1]",
        "torch": torch.__version__,
        "threads": ctx.threads or old_threads,
    }
    results.claims = [
        c for g, result in _reporting(results) if g.claims for c in g.claims(results, result)
    ]
    saved = _jsonable(results.to_json())
    atomic_write(ctx.out / "results.json", json.dumps(saved, indent=1) + "\n")
    write_report(ctx.out, report_blocks(results, ctx.out))
    return saved


def _jsonable(o: Any) -> Any:
    return json.loads(json.dumps(to_json(o), default=str))
