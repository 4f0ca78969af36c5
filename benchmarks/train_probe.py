"""Train a few updates from a run's ``config.json`` and print the training loss exactly
(``repr``): a bit-for-bit probe of whether two checkouts train the same model.

Runs against whichever latalign is importable, so two checkouts compare as

    PYTHONPATH=/tmp/before/src OMP_NUM_THREADS=1 python benchmarks/train_probe.py RUN/config.json
    PYTHONPATH=/tmp/after/src OMP_NUM_THREADS=1 python benchmarks/train_probe.py RUN/config.json

(docs/refactor-check.md). Fields the checkout's TrainConfig does not know are dropped, so an
older checkout reads a newer run's config; the run trains into a new temporary directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile

try:  # the config's home moved in the refactor of issue 17
    from latalign.translate.config import TrainConfig
except ImportError:  # pragma: no cover - older checkouts
    from latalign.translate.train import TrainConfig  # type: ignore[no-redef]
from latalign.translate.train import train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", help="a run's config.json")
    p.add_argument("--updates", type=int, default=20)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--cache-dir", help="tokenizer/data cache (default: the config's)")
    args = p.parse_args()
    with open(args.config, encoding="utf-8") as f:
        cfg = json.load(f)
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = {k: v for k, v in cfg.items() if k in names and v is not None}
    cfg.update(run_dir=tempfile.mkdtemp() + "/run", max_updates=args.updates)
    cfg.update(log_every=args.log_every)
    cfg.pop("max_minutes", None)
    if args.cache_dir:
        cfg["cache_dir"] = args.cache_dir
    result = train(TrainConfig(**cfg), progress=False)
    for rec in result.history:
        if rec["kind"] == "train":
            print(rec["step"], repr(rec["train_loss"]))


if __name__ == "__main__":
    main()
