"""``latalign distill``: an autoregressive run's translations of a training set as a new data
directory, by :func:`latalign.translate.distill.distill`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from latalign.cli import options as o
from latalign.translate.distill import distill

HELP = "write an autoregressive run's translations of a training set as a new data directory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    o.add_run_source(parser, "autoregressive ")
    parser.add_argument(
        "--data", type=Path, required=True, help="data directory whose training split to distill"
    )
    parser.add_argument(
        "--out", type=Path, required=True,
        help="new data directory (must not exist, be empty, or hold an interrupted distillation "
        "of the same run and data, which is then resumed)",
    )  # fmt: skip
    parser.add_argument("--src", default=None, help="source language suffix (default: the run's)")
    parser.add_argument("--tgt", default=None, help="target language suffix (default: the run's)")
    chunk, limit = "sentences per resumable chunk", "distill only the first N training pairs"
    parser.add_argument("--chunk-size", type=int, default=1000, help=f"{chunk} (default: 1000)")
    parser.add_argument("--limit", type=int, default=None, help=f"{limit} (default: all)")
    o.add_search_options(parser)


def run(args: argparse.Namespace) -> int:
    """One line per problem and exit 2 on bad input (before decoding); a JSON summary."""
    options = o.search_options(args)
    source = o.run_source(args)
    try:
        result = distill(
            source, args.data, args.out, options=options, src=args.src, tgt=args.tgt,
            chunk_size=args.chunk_size, limit=args.limit, progress=sys.stderr.isatty(),
        )  # fmt: skip
    except (ValueError, FileNotFoundError) as e:
        raise o.UsageError(o.usage_message(e)) from None
    summary = {"out": str(result.out), "lines": result.lines,
               "chunks_reused": result.chunks_reused, "reused": result.reused}  # fmt: skip
    print(json.dumps(summary))
    return 0
