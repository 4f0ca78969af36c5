"""``latalign evaluate``: translate a split of the run's data (or ``--source``) and print its
scores, by :func:`latalign.translate.run.evaluate`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from latalign.cli import options as o
from latalign.translate.run import evaluate, load_run

HELP = "translate a split or file and print BLEU (sacrebleu signature), chrF, empty share"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    o.add_run_source(parser)
    parser.add_argument(
        "--split", default="test", choices=("valid", "test", "train"),
        help="split of the run's data to translate and score (default: test)",
    )  # fmt: skip
    parser.add_argument(
        "--source", type=Path, default=None, help="score this source file instead of a split"
    )
    parser.add_argument(
        "--reference", type=Path, default=None, help="references for --source, one a line"
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="only the first N sentences (default: all)"
    )
    parser.add_argument("--json", action="store_true", help="print the scores as one JSON object")
    o.add_search_options(parser)


def run(args: argparse.Namespace) -> int:
    """Print the scores; a source longer than the model's positions is truncated with one
    warning line naming the line numbers."""
    options = o.search_options(args)
    source = o.run_source(args)
    if args.limit is not None and args.limit < 1:
        raise o.UsageError(f"expected --limit >= 1; found {args.limit}")
    for path in (args.source, args.reference):
        if path is not None and not path.is_file():
            raise o.UsageError(f"expected a file at {path}; found none")
    with o.catch_truncation() as caught:
        try:
            trained = load_run(source, device=options.placement()[0])
            scores = evaluate(
                trained, split=args.split, source_file=args.source,
                reference_file=args.reference, limit=args.limit, options=options,
                progress=sys.stderr.isatty(),
            )  # fmt: skip
        except (ValueError, FileNotFoundError) as e:
            raise o.UsageError(o.usage_message(e)) from None
    o.report_warnings("evaluate", caught)
    if args.json:
        print(json.dumps(scores))
    else:
        signature = scores.get("bleu_signature", scores.get("signature", ""))
        print(f"BLEU = {scores['bleu']:.2f}  ({signature})")
        for key in ("chrf", "empty_share", "length_ratio"):
            if key in scores:
                print(f"{key} = {scores[key]:.4f}")
        print(f"sentences = {scores['sentences']}  split = {scores['split']}")
    return 0
