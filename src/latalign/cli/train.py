"""``latalign train``: the flags of :class:`~latalign.translate.config.TrainConfig` and
:class:`~latalign.translate.config.DataConfig` (one per field), then
:func:`latalign.translate.train.train`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from latalign.cli.options import UsageError, add_dataclass_options, parse_model_override
from latalign.translate.config import (
    OPTION_FIELDS,
    PLUGIN_OPTION_FIELDS,
    DataConfig,
    TrainConfig,
    merge_overrides,
    read_config_file,
)
from latalign.translate.registry import ARCHS, CRITERIA, REGIMES
from latalign.translate.train import SetupError, train

HELP = "train a translation model (any arch, regime and criterion); torchrun-aware"

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


def _registry_texts() -> tuple[dict[str, str], dict[str, str]]:
    """Help texts naming the registered archs, regimes and criteria, and the defaults of their
    options (per arch, regime or criterion that reads each), both read from the registry."""
    names = {"arch": ARCHS, "regime": REGIMES, "criterion": CRITERIA}
    helps = {}
    for field, table in names.items():
        help_text = TrainConfig.__dataclass_fields__[field].metadata["help"]
        helps[field] = f"{help_text}: {', '.join(table)}"
    defaults = {}
    for name in PLUGIN_OPTION_FIELDS:
        readers = [
            f"{e.name} {e.options[name]}"
            for e in (*ARCHS.values(), *REGIMES.values())
            if name in e.options
        ]
        defaults[name] = ", ".join(readers) or "None"
    for name in OPTION_FIELDS:
        readers = [f"{c.name} {c.options[name]}" for c in CRITERIA.values() if name in c.options]
        defaults[name] = ", ".join(readers) or "None"
    return helps, defaults


def add_arguments(parser: argparse.ArgumentParser) -> None:
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
        "--model", dest="model", action="append", type=parse_model_override,
        default=argparse.SUPPRESS, metavar="KEY=VALUE",
        help="override a ModelConfig field of the preset, e.g. --model dropout=0.1 (repeatable)",
    )  # fmt: skip
    helps, defaults = _registry_texts()
    group = parser.add_argument_group("training")
    add_dataclass_options(
        group, TrainConfig, helps=helps, defaults=defaults, skip=("data", "model")
    )
    add_dataclass_options(parser.add_argument_group("data"), DataConfig, helps=DATA_HELP)


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A validated :class:`TrainConfig` from ``--config`` plus the command-line overrides."""
    ns = vars(args).copy()
    config_path = ns.pop("config", None)
    for key in ("resume", "progress", "command"):
        ns.pop(key, None)
    if "model" in ns:
        ns["model"] = dict(ns["model"])
    base = read_config_file(config_path) if config_path is not None else {}
    return TrainConfig.from_dict(merge_overrides(base, ns))


def run(args: argparse.Namespace) -> int:
    try:
        cfg = train_config_from_args(args)
        if cfg.data.data is not None and not Path(cfg.data.data).is_dir():
            raise UsageError(f"expected a data directory at {cfg.data.data}; found none")
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from None
    # Denormal floats made small-model training several times slower on a CPU (measured in
    # `latalign reproduce`); flushing them changes no result that matters at fp32.
    torch.set_flush_denormal(True)
    try:
        result = train(cfg, progress=args.progress, resume=args.resume)
    except SetupError as e:
        raise UsageError(str(e)) from None
    final = {k: v for k, v in result.final.items() if k.startswith("valid_")}
    summary = {
        "run_dir": str(result.run_dir), "step": result.step, "epoch": result.epoch,
        "stop_reason": result.stop_reason, "best_valid_loss": result.best_valid_loss, **final,
    }  # fmt: skip
    print(json.dumps(summary))
    return 0
