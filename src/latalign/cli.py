"""The ``latalign`` console script: ``train``, ``translate``, ``evaluate``.

Each subcommand is a :class:`Command` in :data:`COMMANDS` (help text, an ``add_arguments``
function and a ``run`` function taking the parsed namespace and returning an exit code);
adding a subcommand is adding one entry. The work itself is done by plain typed functions
that can be imported: :func:`latalign.translate.train.train`,
:func:`latalign.translate.inference.translate_lines`,
:func:`latalign.translate.inference.evaluate_split`.

Bad input (unknown criterion or preset, missing data directory or file, a run directory of a
different run) prints one ``latalign <cmd>: error: …`` line and exits with status 2 before any
training or decoding starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad user input: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one ``latalign <cmd>: error: …`` line (no usage block)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# --------------------------------------------------------------------------- train

DATA_HELP = {
    "data": "data directory with {prefix}.{lang}[.gz] files (default: the synthetic corpus)",
    "src": "source language suffix (e.g. de)",
    "tgt": "target language suffix (e.g. en)",
    "train_prefix": "file prefix of the training split",
    "valid_prefix": "file prefix of the validation split (val/dev/validation are detected)",
    "test_prefix": "file prefix of the test split (test_2016_flickr/tst are detected)",
    "vocab_size": "joint BPE vocabulary size (upper bound, special ids included)",
    "max_positions": "drop training pairs longer than this many tokens (incl. eos)",
    "synthetic_size": "training pairs of the synthetic corpus",
    "synthetic_eval_size": "validation and test pairs of the synthetic corpus",
    "synthetic_seed": "seed of the synthetic corpus",
    "train_limit": "use only the first K training pairs",
}


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


def _add_dataclass_options(
    parser: argparse.ArgumentParser | Any,
    cls: type,
    helps: dict[str, str],
    skip: set[str],
) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help") or helps.get(f.name) or f"{cls.__name__}.{f.name}"
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
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


def _parse_model_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE; found {text!r}")
    key, value = text.split("=", 1)
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = {"True": True, "False": False}.get(value, value)
    return key.strip(), parsed


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    from latalign.translate.data import DataConfig
    from latalign.translate.train import TrainConfig

    parser.add_argument(
        "--config", type=Path, default=None,
        help="TOML/JSON/YAML file with TrainConfig fields ([data] and [model] tables); "
        "command-line options override it",
    )  # fmt: skip
    parser.add_argument(
        "--resume", action=argparse.BooleanOptionalAction, default=None,
        help="--resume: require checkpoint_last.pt and continue it; --no-resume: refuse a run "
        "directory that has checkpoints (default: resume automatically when one exists)",
    )  # fmt: skip
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True,
        help="tqdm progress bar (only shown on a terminal)",
    )  # fmt: skip
    parser.add_argument(
        "--model", dest="model", action="append", type=_parse_model_override,
        default=argparse.SUPPRESS, metavar="KEY=VALUE",
        help="override a ModelConfig field of the preset, e.g. --model dropout=0.1 (repeatable)",
    )  # fmt: skip
    group = parser.add_argument_group("training")
    _add_dataclass_options(group, TrainConfig, {}, skip={"data", "model"})
    group = parser.add_argument_group("data")
    _add_dataclass_options(group, DataConfig, DATA_HELP, skip=set())


def train_config_from_args(args: argparse.Namespace) -> Any:
    """A validated :class:`TrainConfig` from ``--config`` plus the command-line overrides."""
    from latalign.translate.train import TrainConfig, merge_overrides, read_config_file

    ns = vars(args).copy()
    config_path = ns.pop("config", None)
    for key in ("resume", "progress", "command", "func"):
        ns.pop(key, None)
    if "model" in ns:
        ns["model"] = dict(ns["model"])
    base = read_config_file(config_path) if config_path is not None else {}
    return TrainConfig.from_dict(merge_overrides(base, ns))


def run_train(args: argparse.Namespace) -> int:
    from latalign.translate.train import SetupError, train

    try:
        cfg = train_config_from_args(args)
        if cfg.data.data is not None and not Path(cfg.data.data).is_dir():
            raise UsageError(f"expected a data directory at {cfg.data.data}; found none")
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from None
    import torch

    # Denormal floats made small-model training ~10x slower on this CPU (measured in
    # `latalign reproduce`); flushing them changes no result that matters at fp32.
    torch.set_flush_denormal(True)
    try:
        result = train(cfg, progress=args.progress, resume=args.resume)
    except SetupError as e:
        raise UsageError(str(e)) from None
    final = {k: v for k, v in result.final.items() if k.startswith("valid_")}
    print(
        json.dumps(
            {
                "run_dir": str(result.run_dir),
                "step": result.step,
                "epoch": result.epoch,
                "stop_reason": result.stop_reason,
                "best_valid_loss": result.best_valid_loss,
                **final,
            }
        )
    )
    return 0


# --------------------------------------------------------------------------- translate


def _add_model_source(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--run-dir", type=Path, help="run directory (uses checkpoint_best.pt)")
    src.add_argument("--checkpoint", type=Path, help="a checkpoint file inside a run directory")


def _add_decoding_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--beam", type=int, default=5, help="beam size (default: 5)")
    parser.add_argument("--greedy", action="store_true", help="greedy decoding (same as --beam 1)")
    parser.add_argument(
        "--lenpen", type=float, default=1.0, help="length penalty of beam search (default: 1.0)"
    )
    parser.add_argument(
        "--max-len-a", type=float, default=1.2,
        help="max output length = a * source length + b (default a: 1.2)",
    )  # fmt: skip
    parser.add_argument("--max-len-b", type=int, default=10, help="see --max-len-a (default b: 10)")
    parser.add_argument(
        "--batch-size", type=int, default=64, help="sentences decoded together (default: 64)"
    )
    parser.add_argument(
        "--bf16", action=argparse.BooleanOptionalAction, default=None,
        help="bfloat16 autocast on the decoding device (default: on for a CUDA device with "
        "bf16 support, off on the CPU, where it was slower; see docs/decoding.md)",
    )  # fmt: skip
    parser.add_argument(
        "--int8", action="store_true",
        help="int8 matrix products on the CPU (per-channel weights, fbgemm): faster beam search, "
        "outputs close to but not equal to fp32's; see docs/decoding.md (default: off)",
    )  # fmt: skip
    parser.add_argument(
        "--device", default="auto",
        help="auto (CUDA when available, else the CPU; the CPU for --int8), cpu, cuda or cuda:N "
        "(default: auto)",
    )  # fmt: skip
    parser.add_argument(
        "--length-beam", type=int, default=None, metavar="K",
        help="NAT runs with a length predictor (criterion ce or axe): decode the K most likely "
        "lengths in one batch and keep the best by mean log-probability (default: the run's "
        "own, 3); refused for other runs",
    )  # fmt: skip


def add_translate_arguments(parser: argparse.ArgumentParser) -> None:
    _add_model_source(parser)
    parser.add_argument(
        "--input", type=Path, default=None,
        help="source sentences, one a line (default: stdin); bytes that are not UTF-8 are "
        "replaced (U+FFFD) and a line longer than the model's positions is truncated, each with "
        "one warning naming the line numbers; one output line per input line",
    )  # fmt: skip
    parser.add_argument(
        "--output", type=Path, default=None, help="write translations here (default: stdout)"
    )
    _add_decoding_options(parser)


def _decoding_options(args: argparse.Namespace) -> Any:
    """The checked :class:`DecodingOptions` of the command line (usage error if bad)."""
    import torch

    from latalign.translate.inference import DecodingOptions, default_bf16, resolve_device

    if args.beam < 1:  # also with --greedy: a contradictory command line is refused
        raise UsageError(f"expected --beam >= 1; found {args.beam}")
    try:
        device = resolve_device(args.device, int8=args.int8)  # refused before input is read
        opts = DecodingOptions(
            beam=1 if args.greedy else args.beam, lenpen=args.lenpen, max_len_a=args.max_len_a,
            max_len_b=args.max_len_b, batch_size=args.batch_size,
            bf16=default_bf16(device) if args.bf16 is None else args.bf16,
            int8=args.int8, device=args.device, length_beam=args.length_beam,
        )  # fmt: skip
        if opts.bf16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"expected a CUDA device with bfloat16 for --bf16; found {device}")
    except ValueError as e:
        raise UsageError(_flag_names(str(e))) from None
    return opts


def _flag_names(message: str) -> str:
    """Library field names -> the flags a user typed (``max_len_a`` -> ``--max-len-a``)."""
    for field in ("length_beam", "beam", "batch_size", "lenpen", "max_len_a", "max_len_b", "limit"):
        message = message.replace(f" {field} ", f" --{field.replace('_', '-')} ")
        message = message.replace(f" {field};", f" --{field.replace('_', '-')};")
    return message


def _check_model_source(args: argparse.Namespace) -> None:
    from latalign.translate.checkpoint import resolve_checkpoint

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


def _check_output(path: Path | None) -> None:
    if path is None:
        return
    if path.is_dir():
        raise UsageError(f"expected a file name for --output; found a directory at {path}")
    if not path.parent.is_dir():
        raise UsageError(f"expected an existing folder for --output; found none at {path.parent}")


def _plural_lines(numbers: Sequence[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:20])
    more = f" and {len(numbers) - 20} more" if len(numbers) > 20 else ""
    return f"line{'s' if len(numbers) > 1 else ''} {shown}{more}"


def run_translate(args: argparse.Namespace) -> int:
    """Read sources (``--input`` or stdin), translate, write one line per input line.

    Undecodable bytes are replaced (U+FFFD) and a line longer than the model's positions is
    truncated to fit; each case prints one ``latalign translate: warning: …`` line on stderr
    naming the line numbers, and every other line is translated normally.
    """
    import warnings

    from latalign.translate.decode import SourceTruncatedWarning
    from latalign.translate.inference import split_input_lines, translate_lines

    opts = _decoding_options(args)
    _check_model_source(args)
    _check_output(args.output)
    if args.input is not None:
        if not args.input.is_file():
            raise UsageError(f"expected an input file at {args.input}; found none")
        data = args.input.read_bytes()
    else:
        data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read()
        if isinstance(data, str):  # a text stream without bytes underneath (tests, embedding)
            data = data.encode("utf-8", errors="surrogateescape")
    lines, bad = split_input_lines(data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SourceTruncatedWarning)
        try:
            hyps = translate_lines(
                lines, run_dir=args.run_dir, checkpoint=args.checkpoint,
                progress=sys.stderr.isatty(), **dataclasses.asdict(opts),
            )  # fmt: skip
        except (ValueError, FileNotFoundError) as e:
            raise UsageError(_flag_names(str(e))) from None
    # warnings after the work, so that a refusal stays the only line on stderr
    if bad:
        _warn("translate", f"{_plural_lines(bad)}: not UTF-8; undecodable bytes replaced by U+FFFD")
    _report_warnings("translate", caught)
    text = "".join(h + "\n" for h in hyps)
    if args.output is not None:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _report_warnings(command: str, caught: list[Any]) -> None:
    """One ``warning:`` line per truncation warning caught while decoding (1-based line
    numbers); any other warning is passed on."""
    import warnings

    from latalign.translate.decode import SourceTruncatedWarning

    for w in caught:
        if isinstance(w.message, SourceTruncatedWarning):
            numbers = [i + 1 for i in w.message.indices]
            _warn(
                command,
                f"{_plural_lines(numbers)}: longer than the model's {w.message.max_positions} "
                "source positions; truncated to fit",
            )
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _warn(command: str, message: str) -> None:
    print(f"latalign {command}: warning: {message}", file=sys.stderr)


# --------------------------------------------------------------------------- evaluate


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    _add_model_source(parser)
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
    _add_decoding_options(parser)


def run_evaluate(args: argparse.Namespace) -> int:
    """Translate a split (or ``--source``) and print its scores; a source longer than the
    model's positions is truncated with one warning line naming the line numbers."""
    import warnings

    from latalign.translate.decode import SourceTruncatedWarning
    from latalign.translate.inference import evaluate_split

    opts = _decoding_options(args)
    _check_model_source(args)
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"expected --limit >= 1; found {args.limit}")
    for path in (args.source, args.reference):
        if path is not None and not path.is_file():
            raise UsageError(f"expected a file at {path}; found none")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SourceTruncatedWarning)
        try:
            scores = evaluate_split(
                run_dir=args.run_dir, checkpoint=args.checkpoint, split=args.split,
                source_file=args.source, reference_file=args.reference, limit=args.limit,
                progress=sys.stderr.isatty(), **dataclasses.asdict(opts),
            )  # fmt: skip
        except (ValueError, FileNotFoundError) as e:
            raise UsageError(_flag_names(str(e))) from None
    _report_warnings("evaluate", caught)
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


# --------------------------------------------------------------------------- main

COMMANDS: dict[str, Command] = {
    "train": Command(
        "train a translation model (teacher forcing, any criterion); torchrun-aware",
        add_train_arguments,
        run_train,
    ),
    "translate": Command(
        "translate sentences from stdin or --input with a trained run",
        add_translate_arguments,
        run_translate,
    ),
    "evaluate": Command(
        "translate a split or file and print BLEU (sacrebleu signature), chrF, empty share",
        add_evaluate_arguments,
        run_evaluate,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="latalign", description="Latent alignment objectives for machine translation."
    )
    from latalign import __version__

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


# `latalign reproduce` (src/latalign/reproduce/cli.py; registered here, its parser is light)
from latalign.reproduce import cli as _reproduce_cli  # noqa: E402

COMMANDS["reproduce"] = Command(
    "run the paper's experiments and write a report (docs/reproduce.md)",
    _reproduce_cli.add_arguments,
    _reproduce_cli.main,
)

# `latalign distill` (src/latalign/translate/distill.py: sequence-level distillation)
from latalign.translate import distill as _distill  # noqa: E402

COMMANDS["distill"] = Command(
    "write an AR run's beam translations of a training set as a new data directory",
    _distill.add_arguments,
    _distill.main,
)

if __name__ == "__main__":
    sys.exit(main())
