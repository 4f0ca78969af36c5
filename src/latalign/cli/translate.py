"""``latalign translate``: sources from stdin or ``--input``, one translation a line, by
:meth:`latalign.translate.run.TrainedRun.translate`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from latalign.cli import options as o
from latalign.translate.run import load_run, split_input_lines

HELP = "translate sentences from stdin or --input with a trained run"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    o.add_run_source(parser)
    parser.add_argument(
        "--input", type=Path, default=None,
        help="source sentences, one a line (default: stdin); bytes that are not UTF-8 are "
        "replaced (U+FFFD) and a line longer than the model's positions is truncated, each with "
        "one warning naming the line numbers; one output line per input line",
    )  # fmt: skip
    parser.add_argument(
        "--output", type=Path, default=None, help="write translations here (default: stdout)"
    )
    o.add_search_options(parser)


def _check_output(path: Path | None) -> None:
    if path is None:
        return
    if path.is_dir():
        raise o.UsageError(f"expected a file name for --output; found a directory at {path}")
    if not path.parent.is_dir():
        raise o.UsageError(f"expected an existing folder for --output; found none at {path.parent}")


def _read_input(path: Path | None) -> bytes:
    if path is not None:
        if not path.is_file():
            raise o.UsageError(f"expected an input file at {path}; found none")
        return path.read_bytes()
    data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read()
    if isinstance(data, str):  # a text stream without bytes underneath (tests, embedding)
        data = data.encode("utf-8", errors="surrogateescape")
    return data


def run(args: argparse.Namespace) -> int:
    """Read sources, translate, write one line per input line. Undecodable bytes are replaced
    (U+FFFD) and a line longer than the model's positions is truncated to fit; each case
    prints one ``latalign translate: warning: …`` line on stderr naming the line numbers."""
    options = o.search_options(args)
    source = o.run_source(args)
    _check_output(args.output)
    lines, bad = split_input_lines(_read_input(args.input))
    with o.catch_truncation() as caught:
        try:
            trained = load_run(source, device=options.placement()[0])
            hyps = trained.translate(lines, options, progress=sys.stderr.isatty())
        except (ValueError, FileNotFoundError) as e:
            raise o.UsageError(o.usage_message(e)) from None
    # warnings after the work, so that a refusal stays the only line on stderr
    if bad:
        o.warn(
            "translate", f"{o.plural_lines(bad)}: not UTF-8; undecodable bytes replaced by U+FFFD"
        )
    o.report_warnings("translate", caught)
    text = "".join(h + "\n" for h in hyps)
    if args.output is not None:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0
