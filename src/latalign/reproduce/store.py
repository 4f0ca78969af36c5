"""Finished work on disk: ``result.json`` marks a run of the reproduction finished.

A directory of one experiment (or of one cell: a map objective, a closing-question run)
holds ``result.json``, written last and atomically: ``{"spec": …, "result": …}``. The spec
says what the result depends on (experiment, preset settings, seed, data, …); a rerun with
the same spec reuses the result, one with another spec is refused unless ``--force``
(:func:`prepare_dir` then deletes the directory first).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from latalign.io import atomic_write
from latalign.reproduce.records import to_json

logger = logging.getLogger("latalign.reproduce")

RESULT_FILE = "result.json"
R = TypeVar("R")


def preset_settings(preset: dict[str, Any]) -> dict[str, Any]:
    """A preset's fields without its description: documentation, not a setting, so editing it
    must not invalidate finished runs (results saved before this rule still carry it)."""
    return {k: v for k, v in preset.items() if k != "description"}


def check_reusable(directory: Path, spec: dict[str, Any]) -> dict[str, Any] | None:
    """The saved result (JSON) if ``directory`` holds a finished run with this ``spec``;
    None if unfinished; ``ValueError`` if finished with another spec."""
    path = directory / RESULT_FILE
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    # compare as JSON (tuples in the preset come back as lists)
    theirs = saved.get("spec")
    if isinstance(theirs, dict) and isinstance(theirs.get("preset"), dict):
        theirs = theirs | {"preset": preset_settings(theirs["preset"])}
    if theirs != json.loads(json.dumps(spec, default=_json_default)):
        raise ValueError(
            f"expected {directory} to hold this experiment with the same preset, seed and data; "
            "found a different one (use --force to redo it, or another --out)"
        )
    return saved["result"]


def write_result(directory: Path, spec: dict[str, Any], result: Any) -> None:
    """Write ``result.json`` (``result``: a record or JSON-able data) atomically."""
    text = json.dumps({"spec": spec, "result": to_json(result)}, indent=1, default=_json_default)
    atomic_write(directory / RESULT_FILE, text)


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def prepare_dir(directory: Path, force: bool) -> None:
    """``force``: delete ``directory`` (its run is redone)."""
    if force and directory.exists():
        shutil.rmtree(directory)


def reuse_or_run(
    directory: Path,
    spec: dict[str, Any],
    *,
    force: bool,
    compute: Callable[[], R],
    load: Callable[[dict[str, Any]], R],
    name: str | None = None,
) -> R:
    """The one reuse rule: ``force`` deletes ``directory``; a finished run with ``spec`` is
    loaded (``load(saved JSON)``, logged when ``name`` is given); otherwise ``compute()``
    runs in the (created) directory and its result is written last."""
    prepare_dir(directory, force)
    saved = check_reusable(directory, spec)
    if saved is not None:
        if name is not None:
            logger.info("%s: finished earlier, reusing %s", name, directory / RESULT_FILE)
        return load(saved)
    directory.mkdir(parents=True, exist_ok=True)
    result = compute()
    write_result(directory, spec, result)
    return result
