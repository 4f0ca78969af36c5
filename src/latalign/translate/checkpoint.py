"""Checkpoints: atomic writes, RNG capture/restore, and loading a trained model back.

A training checkpoint (``checkpoints/checkpoint_last.pt`` / ``checkpoint_best.pt`` of a
run directory) is a dict with keys:

``model`` (state dict), ``arch`` (its name in :data:`~latalign.translate.arch.ARCHS`; absent
= ``"ar"``), ``model_config`` (dict, the model's ``cfg.to_dict()``),
``optimizer``, ``scheduler``, ``step`` (updates done), ``epoch``, ``sampler`` (data
position), ``rng`` (python / numpy / torch [/ cuda] states), ``best_valid_loss``,
``bad_validations`` (early-stopping counter), ``train_config`` (dict), ``tokenizer``
(fingerprint) and ``format`` (int). Everything is stored as tensors or plain Python values
so :func:`load_checkpoint` can use ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
LAST = "checkpoint_last.pt"
BEST = "checkpoint_best.pt"
TOKENIZER_DIR = "tokenizer"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder + os.replace).

    A reader never sees a half-written file, and a kill mid-write leaves the previous
    checkpoint intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"expected a checkpoint file at {path}, found none")
    return torch.load(path, map_location=map_location, weights_only=True)


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


def resolve_checkpoint(
    run_dir: str | Path | None = None, checkpoint: str | Path | None = None
) -> Path:
    """The checkpoint to load: ``checkpoint`` if given, else the run's best (or last) one."""
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"expected a checkpoint file at {path}, found none")
        return path
    if run_dir is None:
        raise ValueError("expected a run directory or a checkpoint path; found neither")
    last, best = checkpoint_paths(run_dir)
    for path in (best, last):
        if path.is_file():
            return path
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


def load_model(
    run_dir: str | Path | None = None,
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """Load a trained model for inference: ``(model in eval mode, tokenizer, checkpoint dict)``.

    Give a run directory (uses ``checkpoint_best.pt``, else ``checkpoint_last.pt``) or an
    explicit checkpoint path; the tokenizer is read from the run's ``tokenizer/`` folder.
    """
    from latalign.translate.arch import get_arch
    from latalign.translate.tokenizer import Tokenizer

    path = resolve_checkpoint(run_dir, checkpoint)
    state = load_checkpoint(path, map_location="cpu")
    model = get_arch(state.get("arch", "ar")).load(state["model_config"])
    model.load_state_dict(state["model"])
    model.to(device).eval()
    tokenizer = Tokenizer.load(find_tokenizer_dir(path, state))
    fingerprint = state.get("tokenizer")
    if fingerprint and tokenizer.fingerprint != fingerprint:
        raise ValueError(
            f"expected the tokenizer the model was trained with ({fingerprint[:12]}); "
            f"found {tokenizer.fingerprint[:12]} in {find_tokenizer_dir(path, state)}"
        )
    return model, tokenizer, state
