"""CLI adapter: ``add_arguments(parser)`` and ``main(args) -> int`` for ``latalign reproduce``.

Exit status 0 on success, 2 on bad input (refused before any training).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from collections.abc import Sequence
from typing import Any

from latalign.reproduce.presets import PRESETS, ReproduceOptions
from latalign.reproduce.records import Claim
from latalign.reproduce.report import format_claims_table
from latalign.reproduce.run import known_experiments, run_reproduction, validate_options

EXIT_USAGE = 2


PRESET_HELP = (
    "sizes: quick (synthetic corpus, tiny model, ~26 min on 2 CPU cores), multi30k (--data "
    "DIR, small model, ~60 min + 40 min CE recipe + groups nat/beyond_tf, hours on 2 CPU "
    "cores), paper (the paper's model and schedule, for a GPU), ci (default: multi30k with "
    "--data, quick without)"
)
#: the options of ``latalign reproduce`` in --help order: (flag, add_argument keywords)
OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--preset", {"choices": list(PRESETS), "help": PRESET_HELP}),
    ("--data", {"help": "data directory of parallel text (multi30k and paper presets; alone, "
                "it selects multi30k)"}),
    ("--out", {"default": "runs/reproduce", "help": "run directory (default %(default)s)"}),
    ("--experiments", {"help": f"comma-separated subset of: {', '.join(known_experiments())} "
                       "(default: the preset's)"}),
    ("--map-objectives", {"help": "comma-separated subset of the map, e.g. "
                          "'align+clone_prediction+delimiter/max/noncausal' (default: all 32)"}),
    ("--seed", {"type": int, "default": 1, "help": "model and batch-order seed"}),
    ("--force", {"action": "store_true", "help": "redo finished experiments"}),
    ("--scale", {"type": float, "default": 1.0, "help": "multiply every schedule (default 1)"}),
    ("--updates", {"help": "per-experiment updates after --scale, e.g. 'axe=100,ce=300' (map = "
                   "each objective; a group's runs as group.key=N)"}),
    ("--device", {"help": "training device: auto, cpu, cuda or cuda:N (default: the "
                  "preset's)"}),
    ("--threads", {"type": int, "help": "torch threads (default: 1 for quick/ci, torch's "
                   "default otherwise)"}),
    ("--map-workers", {"type": int, "help": "processes training map objectives side by side "
                       "(default: 2 when the preset runs on one thread and the machine has 2+ "
                       "cores, else 1; results do not depend on it)"}),
    ("--baseline", {"metavar": "RUN_DIR", "help": "a finished run of the preset's "
                    "cross-entropy recipe (multi30k: configs/multi30k_small_40min.toml) to "
                    "evaluate as the baseline instead of training it"}),
    ("--cache-dir", {"help": "tokenizer/data cache directory"}),
    ("--quiet", {"action": "store_true", "help": "no progress lines"}),
)  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``latalign reproduce`` (:data:`OPTIONS`)."""
    for flag, keywords in OPTIONS:
        parser.add_argument(flag, **keywords)


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _parse_updates(value: str | None) -> dict[str, int] | None:
    if not value:
        return None
    out: dict[str, int] = {}
    for item in _split(value) or []:
        name, _, n = item.partition("=")
        try:
            out[name.strip()] = int(n)
        except ValueError:
            raise ValueError(f"expected --updates like 'axe=100,ce=300'; found {item!r}") from None
    return out


def default_preset(preset: str | None, data: str | None) -> str:
    """``--preset`` when given, else ``multi30k`` with ``--data`` and ``quick`` without."""
    if preset is not None:
        return preset
    return "quick" if data is None else "multi30k"


def options_from_args(args: argparse.Namespace, command: str = "") -> ReproduceOptions:
    return ReproduceOptions(
        out=args.out, preset=default_preset(args.preset, args.data), data=args.data,
        experiments=_split(args.experiments), map_objectives=_split(args.map_objectives),
        seed=args.seed, force=args.force, scale=args.scale, progress=not args.quiet,
        cache_dir=args.cache_dir, command=command, threads=args.threads,
        updates=_parse_updates(args.updates), map_workers=args.map_workers, device=args.device,
        baseline=args.baseline,
    )  # fmt: skip


def command_line(options: ReproduceOptions) -> str:
    """The ``latalign reproduce`` command that reproduces ``options`` (for the report)."""
    parts = ["latalign", "reproduce", "--preset", options.preset, "--out", str(options.out)]
    if options.data is not None:
        parts += ["--data", str(options.data)]
    if options.experiments:
        parts += ["--experiments", ",".join(options.experiments)]
    if options.map_objectives:
        parts += ["--map-objectives", ",".join(options.map_objectives)]
    parts += ["--seed", str(options.seed)]
    if options.scale != 1.0:
        parts += ["--scale", f"{options.scale:g}"]
    if options.updates:
        parts += ["--updates", ",".join(f"{k}={v}" for k, v in options.updates.items())]
    if options.threads:
        parts += ["--threads", str(options.threads)]
    if options.baseline is not None:
        parts += ["--baseline", str(options.baseline)]
    if options.device:
        parts += ["--device", options.device]
    if options.force:
        parts.append("--force")
    return " ".join(shlex.quote(p) for p in parts)


def main(args: argparse.Namespace) -> int:
    """Run the reproduction; print the claims table and where the report is."""
    try:
        options = options_from_args(args)
        options.command = command_line(options)
        validate_options(options)
    except ValueError as e:
        print(f"latalign reproduce: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if options.progress:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log = logging.getLogger("latalign.reproduce")
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    t0 = time.monotonic()
    try:
        results = run_reproduction(options)
    except ValueError as e:
        print(f"latalign reproduce: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(format_claims_table([Claim.from_json(c) for c in results["claims"]]))
    print(f"\nreport: {options.out}/report.md, {options.out}/report.html "
          f"({(time.monotonic() - t0) / 60:.1f} min)")  # fmt: skip
    return 0


def standalone(argv: Sequence[str] | None = None) -> int:
    """``python -m latalign.reproduce.cli …`` (before the subcommand is registered)."""
    parser = argparse.ArgumentParser(prog="latalign reproduce", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    return main(args)


if __name__ == "__main__":
    sys.exit(standalone())
