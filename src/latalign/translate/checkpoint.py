"""Checkpoints: atomic writes, the last few kept, resuming from the newest intact one, RNG
capture/restore, and finding the checkpoint and tokenizer of a run. Files only: building a
model from a checkpoint is :func:`latalign.translate.run.load_run`.

A run directory keeps ``checkpoints/checkpoint_last.pt`` (the newest), ``checkpoint_best.pt``
(lowest validation loss) and ``checkpoint_<update>.pt`` for the newest ``keep`` validations
(:func:`save_training_checkpoint`). A training checkpoint is a dict with keys:

``model`` (state dict), ``model_config`` (dict, the model's ``cfg.to_dict()``),
``optimizer``, ``scheduler``, ``step`` (updates done), ``epoch``, ``sampler`` (data
position), ``rng`` (python / numpy / torch [/ cuda] states), ``best_valid_loss``,
``bad_validations`` (early-stopping counter), ``train_config`` (dict: the run's
:class:`~latalign.translate.config.TrainConfig`, the one record of its arch), ``tokenizer``
(fingerprint) and ``format`` (int). Everything is stored as tensors or plain Python values
so :func:`load_checkpoint` can use ``torch.load(weights_only=True)``.

A damaged file (a copy cut short, a disk that filled up outside our atomic write) raises
:class:`CheckpointError` naming it; :func:`find_resume_checkpoint` then falls back to the
newest intact checkpoint and says so.
"""

from __future__ import annotations

import logging
import pickle
import random
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latalign.io import atomic_write

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
LAST = "checkpoint_last.pt"
BEST = "checkpoint_best.pt"
TOKENIZER_DIR = "tokenizer"
CONFIG_FILE = "config.json"
_NUMBERED = re.compile(r"checkpoint_(\d+)\.pt")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (truncated, not a checkpoint)."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (:func:`latalign.io.atomic_write`).

    A reader never sees a half-written file, and a kill mid-write leaves the previous
    checkpoint intact.
    """
    return atomic_write(path, lambda f: torch.save(state, f))


def _damaged(path: Path, reason: str) -> CheckpointError:
    return CheckpointError(
        f"expected a complete checkpoint in {path} ({path.stat().st_size} bytes); found a "
        f"damaged or truncated file ({reason})"
    )


def check_checkpoint_file(path: str | Path) -> Path:
    """Cheap integrity check without loading: a checkpoint is a zip archive whose directory
    sits at its end, so a truncated file fails here. :class:`CheckpointError` naming it."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            z.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise _damaged(path, str(e) or type(e).__name__) from None
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    ``FileNotFoundError`` if there is none; :class:`CheckpointError` (one line naming the file)
    if it is damaged.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"expected a checkpoint file at {path}, found none")
    check_checkpoint_file(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise _damaged(path, reason) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"expected a checkpoint dict in {path}; found {type(state).__name__}")
    return state


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU, and CUDA when available) RNG states, checkpoint-safe."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states captured by :func:`rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        (
            n["kind"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


def checkpoint_paths(run_dir: str | Path) -> tuple[Path, Path]:
    """``(last, best)`` checkpoint paths of a run directory."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    return folder / LAST, folder / BEST


def numbered_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``[(update, checkpoint_<update>.pt path)]`` of a run, newest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    found = []
    if folder.is_dir():
        for p in folder.iterdir():
            m = _NUMBERED.fullmatch(p.name)
            if m:
                found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def save_training_checkpoint(
    state: dict[str, Any], run_dir: str | Path, *, best: bool, keep: int
) -> Path:
    """Save ``state`` (update ``state["step"]``) as ``checkpoint_<step>.pt``, copy it to
    ``checkpoint_last.pt`` (and ``checkpoint_best.pt`` when ``best``), then delete numbered
    checkpoints beyond the newest ``keep`` (``keep >= 1``). Every write is atomic. Returns
    the numbered path."""
    last, best_path = checkpoint_paths(run_dir)
    numbered = last.parent / f"checkpoint_{int(state['step'])}.pt"
    save_checkpoint(state, numbered)
    for target in (last, best_path) if best else (last,):
        with open(numbered, "rb") as src:
            atomic_write(target, lambda f, src=src: shutil.copyfileobj(src, f))
    for _, old in numbered_checkpoints(run_dir)[max(keep, 1) :]:
        old.unlink(missing_ok=True)
    return numbered


def has_checkpoints(run_dir: str | Path) -> bool:
    """Whether the run has a ``checkpoint_last.pt`` or a numbered checkpoint."""
    last, _ = checkpoint_paths(run_dir)
    return last.is_file() or bool(numbered_checkpoints(run_dir))


def find_resume_checkpoint(run_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest intact training checkpoint of ``run_dir`` and its state, or None if it has
    none.

    Order: the newest numbered checkpoint (``checkpoint_last.pt`` is a copy of it, written
    after it, so it is never newer), then ``checkpoint_last.pt`` (runs from before numbered
    checkpoints), then the older numbered ones. Damaged files are skipped; a warning names them
    and the checkpoint used. :class:`CheckpointError` if every checkpoint is damaged."""
    last, _ = checkpoint_paths(run_dir)
    numbered = [p for _, p in numbered_checkpoints(run_dir)]
    candidates = numbered[:1] + ([last] if last.is_file() else []) + numbered[1:]
    damaged: list[str] = []
    for path in candidates:
        try:
            state = load_checkpoint(path)
        except CheckpointError as e:
            damaged.append(str(e))
            continue
        if path != last and last.is_file() and last not in candidates[: candidates.index(path)]:
            try:  # not needed for resuming, but a damaged last checkpoint deserves a word
                check_checkpoint_file(last)
            except CheckpointError as e:
                damaged.append(str(e))
        if damaged:
            logger.warning(
                "resume: %s; resuming from %s (update %s)",
                "; ".join(damaged), path, state.get("step"),
            )  # fmt: skip
        else:
            logger.info("resume: from %s (update %s)", path, state.get("step"))
        return path, state
    if damaged:
        raise CheckpointError(f"expected an intact checkpoint to resume from; {damaged[0]}")
    return None


def restore_training_state(
    state: dict[str, Any], model: torch.nn.Module, optimizer: Any, scheduler: Any, sampler: Any
) -> None:
    """Load model, optimizer, scheduler and sampler states from a training checkpoint, then
    the RNG states (last: building the model consumed random numbers)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    sampler.load_state_dict(state["sampler"])
    set_rng_state(state["rng"])


def resolve_checkpoint(
    run_dir: str | Path | None = None, checkpoint: str | Path | None = None
) -> Path:
    """The checkpoint to load: ``checkpoint`` if given, else the run's best (or last) one.

    ``FileNotFoundError`` if there is none, :class:`CheckpointError` if it is truncated
    (checked without loading it)."""
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"expected a checkpoint file at {path}, found none")
        return check_checkpoint_file(path)
    if run_dir is None:
        raise ValueError("expected a run directory or a checkpoint path; found neither")
    last, best = checkpoint_paths(run_dir)
    for path in (best, last):
        if path.is_file():
            return check_checkpoint_file(path)
    raise FileNotFoundError(f"expected {best} or {last}; found neither (has the run trained?)")


def find_tokenizer_dir(checkpoint_path: Path, state: dict[str, Any]) -> Path:
    """The tokenizer folder of the run a checkpoint belongs to (``<run_dir>/tokenizer``)."""
    candidates = [
        checkpoint_path.parent.parent / TOKENIZER_DIR,
        checkpoint_path.parent / TOKENIZER_DIR,
    ]
    run_dir = state.get("train_config", {}).get("run_dir")
    if run_dir:
        candidates.append(Path(run_dir) / TOKENIZER_DIR)
    for c in candidates:
        if c.is_dir():
            return c
    raise FileNotFoundError(
        f"expected the run's tokenizer folder next to {checkpoint_path}; looked in "
        f"{[str(c) for c in candidates]}"
    )
