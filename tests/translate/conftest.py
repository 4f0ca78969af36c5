"""Shared fixtures of the translation-stack tests."""

from __future__ import annotations

from pathlib import Path

import pytest

# The shared folder (read-only data, paper) is a sibling of the repository root.
SHARED = Path(__file__).resolve().parents[2].parent / "shared"


@pytest.fixture(scope="session")
def multi30k_dir() -> Path:
    """Multi30k de-en (``train``/``val``/``test_2016_flickr`` ``.{de,en}.gz``); always present."""
    path = SHARED / "data" / "multi30k"
    assert (path / "train.de.gz").is_file(), f"expected Multi30k at {path}"
    return path
