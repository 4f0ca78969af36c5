"""Shared fixtures of the translation-stack tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from latalign.translate.data import DataConfig
from latalign.translate.train import TrainConfig

# The shared folder (read-only data, paper) is a sibling of the repository root.
SHARED = Path(__file__).resolve().parents[2].parent / "shared"


@pytest.fixture(scope="session")
def multi30k_dir() -> Path:
    """Multi30k de-en (``train``/``val``/``test_2016_flickr`` ``.{de,en}.gz``); always present."""
    path = SHARED / "data" / "multi30k"
    assert (path / "train.de.gz").is_file(), f"expected Multi30k at {path}"
    return path


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine: intra-op threads only add contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tokenizer/binarized-data cache shared by a module's runs."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def tiny_config(cache: Path) -> Callable[..., TrainConfig]:
    """``tiny_config(run_dir, **overrides)``: a TrainConfig of the tiny model on 120 synthetic
    pairs that trains in a second (no validation or logging unless overridden)."""

    def make(run_dir: Path, **overrides: Any) -> TrainConfig:
        fields: dict[str, Any] = dict(
            run_dir=str(run_dir),
            data=DataConfig(synthetic_size=120, synthetic_eval_size=16, vocab_size=120),
            preset="tiny",
            criterion="ce",
            max_tokens=300,
            warmup_updates=4,
            validate_every=1000,
            log_every=1000,
            cache_dir=str(cache),
        )
        fields.update(overrides)
        return TrainConfig(**fields)

    return make
