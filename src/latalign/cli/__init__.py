"""The ``latalign`` console script: ``train``, ``translate``, ``evaluate``, ``distill``,
``reproduce``.

One module per subcommand (:mod:`.train`, :mod:`.translate`, :mod:`.evaluate`,
:mod:`.distill`, :mod:`.reproduce`), each a thin wrapper around a library function that can be
imported: :func:`latalign.translate.train.train`,
:meth:`latalign.translate.run.TrainedRun.translate`, :func:`latalign.translate.run.evaluate`,
:func:`latalign.translate.distill.distill`, :func:`latalign.reproduce.run_reproduction`.
:data:`COMMANDS` lists them; adding a subcommand is adding a module and one entry.

Bad input (unknown criterion or preset, missing data directory or file, a run directory of a
different run, a bad decoding flag) prints one ``latalign <cmd>: error: …`` line and exits
with status 2 before any training or decoding starts.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from latalign import __version__
from latalign.cli import distill, evaluate, reproduce, train, translate
from latalign.cli.options import EXIT_USAGE, Command, Parser, UsageError
from latalign.cli.train import train_config_from_args

__all__ = ["COMMANDS", "Command", "UsageError", "build_parser", "main", "train_config_from_args"]

COMMANDS: dict[str, Command] = {
    name: Command(module.HELP, module.add_arguments, module.run)
    for name, module in (
        ("train", train),
        ("translate", translate),
        ("evaluate", evaluate),
        ("distill", distill),
        ("reproduce", reproduce),
    )
}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="latalign", description="Latent alignment objectives for machine translation."
    )
    parser.add_argument("--version", action="version", version=f"latalign {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        command.add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``latalign`` console script; returns the exit status."""
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
    except SystemExit as e:  # --help, --version (0) or a bad option (2, one line printed)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if unknown:
        prog = f"latalign {args.command}"
        print(
            f"{prog}: error: unrecognized arguments: {' '.join(unknown)} (see {prog} --help)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        return COMMANDS[args.command].run(args)
    except UsageError as e:
        print(f"latalign {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
