"""Run metrics: one JSON object per line in ``run_dir/log.jsonl``, optionally TensorBoard."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``log.jsonl`` file, in order."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class RunLog:
    """Appends metric records (dicts with a ``step``) to a JSONL file and TensorBoard.

    TensorBoard is optional (``pip install latalign[tensorboard]``); if it is missing a
    warning is issued and only the JSONL file is written. ``enabled=False`` (non-zero
    ranks) makes every method a no-op.
    """

    def __init__(self, run_dir: str | Path, *, tensorboard: bool = False, enabled: bool = True):
        self.enabled = enabled
        self.path = Path(run_dir) / "log.jsonl"
        self._writer = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                warnings.warn(
                    "tensorboard is not installed; logging to log.jsonl only "
                    "(pip install 'latalign[tensorboard]')",
                    stacklevel=2,
                )
            else:
                self._writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def log(self, record: dict[str, Any]) -> None:
        """Append ``record`` (JSON-serialisable; non-finite floats are written as null)."""
        if not self.enabled:
            return
        clean = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in record.items()
        }
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(clean, sort_keys=False) + "\n")
        if self._writer is not None:
            step = int(record.get("step", 0))
            kind = record.get("kind", "train")
            for k, v in record.items():
                if k in ("step", "kind") or not isinstance(v, (int, float)) or isinstance(v, bool):
                    continue
                self._writer.add_scalar(f"{kind}/{k}", v, step)
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
