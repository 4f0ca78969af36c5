"""``run_reproduction``: check the options, run the experiments, write the report."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from latalign.align.backends import set_numba_threads
from latalign.io import atomic_write
from latalign.reproduce import experiments as ex
from latalign.reproduce.groups import ExperimentGroup, GroupRun, load_groups
from latalign.reproduce.presets import EXPERIMENTS, PRESETS, ReproduceOptions

logger = logging.getLogger("latalign.reproduce")


def default_experiments(preset: str) -> list[str]:
    """What runs without ``--experiments``: the preset's built-in experiments, then every
    registered group whose ``default_presets`` include ``preset`` (and that has sizes for it)."""
    p = PRESETS[preset]
    names = list(p.default_experiments or EXPERIMENTS)
    groups = load_groups()
    return names + [
        g for g, grp in groups.items() if preset in grp.default_presets and preset in grp.updates
    ]


def known_experiments() -> list[str]:
    """Built-in experiments (:data:`EXPERIMENTS`) and registered groups, in run order."""
    return list(EXPERIMENTS) + list(load_groups())


def validate_options(options: ReproduceOptions) -> tuple[list[str], list[str]]:
    """Check everything that can be checked before training; ``ValueError`` otherwise.

    Returns ``(experiments, map_objectives)`` in run order (a group's ``requires`` added).
    """
    if options.preset not in PRESETS:
        raise ValueError(f"expected a preset in {{{', '.join(PRESETS)}}}; found {options.preset!r}")
    preset = PRESETS[options.preset]
    if options.device is not None:
        from latalign.translate.device import resolve_device

        if options.device != "auto" and not (
            options.device == "cpu" or options.device.startswith("cuda")
        ):
            raise ValueError(f"expected device auto, cpu, cuda or cuda:N; found {options.device!r}")
        resolve_device(options.device)  # a CUDA device that is not there: refused now
    groups = load_groups()
    known = known_experiments()
    names = list(options.experiments) if options.experiments else default_experiments(preset.name)
    if options.baseline is not None and "baseline" not in names:
        names.append("baseline")  # --baseline RUN_DIR asks for it
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"expected experiments among {known}; found {unknown or names}")
    for n in list(names):
        if n in groups:
            names += [r for r in groups[n].required(preset.name) if r not in names]
            groups[n].scaled_updates(preset.name)  # ValueError: no sizes for this preset
    names = [n for n in known if n in names]  # canonical order, no duplicates
    if "baseline" in names:
        if options.baseline is not None:
            ex.check_baseline_run(Path(options.baseline), preset)
        else:
            ex.recipe_path(preset)  # ValueError: no recipe (give --baseline)
    keys = ex.all_map_objectives()
    if options.map_objectives:
        for k in options.map_objectives:
            ex.parse_objective_key(k)  # ValueError on a malformed key
        keys = [k for k in keys if k in set(options.map_objectives)]
    for k, v in (options.updates or {}).items():
        group, _, sub = k.partition(".")
        ok = (
            isinstance(v, int)
            and v >= 1
            and ((not sub and k in EXPERIMENTS) or (sub and group in groups))
        )
        if not ok:
            raise ValueError(
                f"expected updates as experiment=N (or group.key=N) with N >= 1 for experiments "
                f"in {known}; found {k}={v!r}"
            )
        if sub:
            groups[group].scaled_updates(preset.name, overrides={sub: v})
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
        from latalign.translate.data import detect_splits

        d = Path(options.data)
        if not d.is_dir():
            raise ValueError(f"expected a data directory at {d}; found none")
        src, tgt = preset.data.get("src", "de"), preset.data.get("tgt", "en")
        try:
            detect_splits(d, src, tgt, "train", "valid", "test")
        except (FileNotFoundError, ValueError) as e:
            raise ValueError(f"data: {e}") from None
    return names, keys


def group_updates(options: ReproduceOptions, group: ExperimentGroup) -> dict[str, int]:
    """``group``'s updates for the options' preset, ``--scale`` and ``--updates g.key=N``."""
    prefix = group.name + "."
    overrides = {
        k[len(prefix) :]: v for k, v in (options.updates or {}).items() if k.startswith(prefix)
    }
    return group.scaled_updates(options.preset, options.scale, overrides)


def run_group(
    group: ExperimentGroup, ctx: ex.Context, updates: dict[str, int], results: dict[str, Any]
) -> dict[str, Any]:
    """Run (or reuse) one experiment group; writes ``{out}/{name}/result.json`` last."""
    directory = ctx.out / group.name
    spec = ctx.spec(group.name) | {"updates": updates}
    ex.prepare_dir(directory, ctx.force)
    saved = ex.check_reusable(directory, spec)
    if saved is not None:
        logger.info("%s: finished earlier, reusing %s", group.name, directory / ex.RESULT_FILE)
        return saved
    directory.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    result = group.run(GroupRun(ctx=ctx, directory=directory, updates=updates, results=results))
    if not isinstance(result, dict):
        raise TypeError(f"expected {group.name}.run to return a dict; found {type(result)}")
    result.setdefault("seconds", time.monotonic() - t0)
    ex.write_result(directory, spec, result)
    logger.info("%s: done in %.0f s", group.name, time.monotonic() - t0)
    return result


def _context(options: ReproduceOptions) -> ex.Context:
    preset = PRESETS[options.preset]
    if options.scale != 1.0:
        preset = preset.scaled(options.scale)
    if options.updates:
        preset = preset.with_updates(options.updates)
    if options.device:
        preset = replace(preset, train_device=options.device)
    threads = options.threads or preset.threads  # None: torch's default
    return ex.Context(
        out=Path(options.out),
        preset=preset,
        seed=options.seed,
        data_dir=None if options.data is None else str(Path(options.data).resolve()),
        force=options.force,
        progress=options.progress,
        cache_dir=ex.default_cache(options.cache_dir),
        map_workers=map_workers(options.map_workers, threads),
        threads=threads,
        baseline=None if options.baseline is None else Path(options.baseline),
    )


def map_workers(requested: int | None, threads: int | None) -> int:
    """Processes for the map: ``requested`` when given; else one per core (at most 2) when
    the run trains on one thread (tiny models gain little from a second thread, and two
    single-thread processes use both cores without spin-waiting), else 1."""
    if requested:
        return requested
    return min(2, os.cpu_count() or 1) if threads == 1 else 1


def run_reproduction(options: ReproduceOptions) -> dict[str, Any]:
    """Run the paper's experiments and write ``report.md``, ``report.html``,
    ``results.json`` and the figures (PNG) into ``options.out``.

    Finished experiments are reused (``force`` redoes them), an interrupted one resumes from
    its last checkpoint. Bad options raise ``ValueError`` before any training. Returns the
    results dict (also ``results.json``); ``results["claims"]`` is the claims table.
    """
    from latalign.reproduce.report import build_claims, write_report

    names, keys = validate_options(options)
    ctx = _context(options)
    groups = load_groups()
    updates = {n: group_updates(options, groups[n]) for n in names if n in groups}
    for name in names:  # refuse a foreign result before training anything
        directory = ctx.out / name
        if name not in ("map",) and not ctx.force:
            spec = ctx.spec(name) | ({"updates": updates[name]} if name in groups else {})
            ex.check_reusable(directory, ex.baseline_spec(ctx) if name == "baseline" else spec)
    if ctx.baseline is not None and "baseline" in names:
        ex.check_baseline_tokenizer(ctx)  # prepares the data; refuses another corpus
    ctx.out.mkdir(parents=True, exist_ok=True)
    threads = ctx.threads
    old_threads = torch.get_num_threads()
    old_numba = set_numba_threads(threads)
    if threads:
        torch.set_num_threads(threads)
    flush = torch.set_flush_denormal(True)  # denormals made CE training ~10x slower on CPU
    t0 = time.monotonic()
    results: dict[str, Any] = {"experiments": {}, "groups": {}}
    try:
        for i, name in enumerate(names, 1):
            what = groups[name].description if name in groups else EXPERIMENTS[name]
            logger.info("[%d/%d] %s — %s", i, len(names), name, what)
            if name in groups:
                results["groups"][name] = run_group(groups[name], ctx, updates[name], results)
            elif name == "map":
                results["map"] = ex.run_map(ctx, keys)
            elif name == "baseline":
                results["experiments"][name] = ex.run_baseline_experiment(ctx)
            elif name == "doubled_ctc":
                results["experiments"][name] = ex.run_doubled_experiment(ctx)
            else:
                results["experiments"][name] = ex.run_criterion_experiment(name, ctx)
    finally:
        if flush:
            torch.set_flush_denormal(False)
        torch.set_num_threads(old_threads)
        set_numba_threads(old_numba)
    results["meta"] = {
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
        "threads": threads or old_threads,
    }
    results["claims"] = build_claims(results)
    atomic_write(ctx.out / "results.json", json.dumps(_jsonable(results), indent=1) + "\n")
    write_report(ctx.out, results)
    return results


def _jsonable(o: Any) -> Any:
    return json.loads(json.dumps(o, default=str))
