"""What the subcommands share: the one-line usage error, flags generated from dataclass fields,
the run a command reads, and the warnings of decoding.

Each subcommand module has ``add_arguments(parser)`` and ``run(args) -> exit status``; the
work is a library function that raises ``ValueError`` (or ``FileNotFoundError``), which the
command turns into one ``latalign <cmd>: error: …`` line and exit status 2
(:class:`UsageError`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import sys
import types
import typing
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latalign.translate.checkpoint import resolve_checkpoint
from latalign.translate.decode import OptionError, SearchOptions, SourceTruncatedWarning

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad user input: reported as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one ``latalign <cmd>: error: …`` line (no usage block)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


@dataclass(frozen=True)
class Command:
    """A subcommand: help text, ``add_arguments(parser)``, ``run(args) -> exit status``."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# --------------------------------------------------------------------------- dataclass flags


def _strip_optional(hint: Any) -> tuple[Any, bool]:
    """``(inner type, True)`` for ``X | None``, else ``(hint, False)``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


def _converter(hint: Any, optional: bool) -> Callable[[str], Any]:
    origin = typing.get_origin(hint)
    if origin is tuple:
        args = typing.get_args(hint)
        item = args[0] if args else str

        def conv(text: str) -> Any:
            return tuple(item(x.strip()) for x in text.split(",") if x.strip())
    else:
        conv = hint

    def wrapped(text: str) -> Any:
        if optional and text.lower() in ("none", "null", ""):
            return None
        name = getattr(hint, "__name__", str(hint))
        try:
            value = conv(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {name}; found {text!r}") from None
        items = value if isinstance(value, tuple) else (value,)
        if any(isinstance(x, float) and not math.isfinite(x) for x in items):
            raise argparse.ArgumentTypeError(f"expected finite numbers; found {text!r}")
        return value

    wrapped.__name__ = getattr(hint, "__name__", "value")
    return wrapped


def add_dataclass_options(
    parser: argparse.ArgumentParser | Any,
    cls: type,
    *,
    helps: dict[str, str] | None = None,
    defaults: dict[str, str] | None = None,
    skip: Sequence[str] = (),
) -> None:
    """One flag per field of dataclass ``cls`` (``--max-len-a`` for ``max_len_a``): help from
    ``helps`` (else the field's ``metadata["help"]``), ``(default: …)`` from the field (or
    ``defaults``) unless the help says it; bools as ``--x/--no-x``; ``X | None`` accepts
    ``none``. Unset flags are absent from the namespace (``argparse.SUPPRESS``), so the
    dataclass's own defaults apply."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        help_text = (
            (helps or {}).get(f.name) or f.metadata.get("help") or f"{cls.__name__}.{f.name}"
        )
        default: Any = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        default = (defaults or {}).get(f.name, default)
        if "default" not in help_text:
            help_text = f"{help_text} (default: {default})"
        hint, optional = _strip_optional(hints[f.name])
        if hint is bool:
            parser.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS, help=help_text,
            )  # fmt: skip
        else:
            parser.add_argument(
                flag, dest=f.name, type=_converter(hint, optional), default=argparse.SUPPRESS,
                metavar=f.name.upper(), help=help_text,
            )  # fmt: skip


def dataclass_values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` given on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}


def parse_model_override(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` (the value read as JSON when it parses) -> ``(key, value)``."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE; found {text!r}")
    key, value = text.split("=", 1)
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = {"True": True, "False": False}.get(value, value)
    return key.strip(), parsed


# --------------------------------------------------------------------------- decoding commands


def add_run_source(parser: argparse.ArgumentParser, what: str = "") -> None:
    """``--run-dir`` or ``--checkpoint`` (one of them, required)."""
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--run-dir", type=Path, help=f"{what}run directory (uses checkpoint_best.pt)")
    src.add_argument("--checkpoint", type=Path, help=f"a checkpoint file of a {what}run")


def run_source(args: argparse.Namespace) -> Path:
    """The run directory or checkpoint given, checked without loading it."""
    if args.run_dir is not None and not args.run_dir.is_dir():
        found = "a file" if args.run_dir.exists() else "nothing"
        raise UsageError(
            f"expected a run directory (with checkpoints/) at {args.run_dir}; found {found}"
        )
    if args.checkpoint is not None and args.checkpoint.is_dir():
        raise UsageError(f"expected a checkpoint file at {args.checkpoint}; found a directory")
    try:
        resolve_checkpoint(args.run_dir, args.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    return args.run_dir if args.run_dir is not None else args.checkpoint


def add_search_options(parser: argparse.ArgumentParser) -> None:
    """The decoding flags: one per field of :class:`SearchOptions`."""
    add_dataclass_options(parser.add_argument_group("decoding"), SearchOptions)


def search_options(args: argparse.Namespace) -> SearchOptions:
    """The checked :class:`SearchOptions` of the command line, its device resolved (a usage
    error if bad, before any input is read)."""
    try:
        options = SearchOptions(**dataclass_values(args, SearchOptions))
        options.placement()
    except ValueError as e:
        raise UsageError(usage_message(e)) from None
    return options


def usage_message(error: Exception) -> str:
    """The one line of a library error, naming flags where it names a decoding option."""
    return error.for_flag() if isinstance(error, OptionError) else str(error)


def plural_lines(numbers: Sequence[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:20])
    more = f" and {len(numbers) - 20} more" if len(numbers) > 20 else ""
    return f"line{'s' if len(numbers) > 1 else ''} {shown}{more}"


def warn(command: str, message: str) -> None:
    print(f"latalign {command}: warning: {message}", file=sys.stderr)


def report_warnings(command: str, caught: list[Any]) -> None:
    """One ``warning:`` line per truncation warning caught while decoding (1-based line
    numbers); any other warning is passed on."""
    for w in caught:
        if isinstance(w.message, SourceTruncatedWarning):
            numbers = [i + 1 for i in w.message.indices]
            warn(
                command,
                f"{plural_lines(numbers)}: longer than the model's {w.message.max_positions} "
                "source positions; truncated to fit",
            )
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


@contextlib.contextmanager
def catch_truncation() -> Iterator[list[Any]]:
    """Record the warnings of the block, every truncation included (for
    :func:`report_warnings` after the work, so that a refusal stays the only line)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SourceTruncatedWarning)
        yield caught
