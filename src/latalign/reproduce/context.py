"""The shared state of one reproduction (:class:`Context`), the training configurations it
builds, and the worker processes that train runs side by side."""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import torch

from latalign.align.backends import set_numba_threads
from latalign.reproduce.presets import Preset
from latalign.reproduce.store import preset_settings
from latalign.translate.config import TrainConfig
from latalign.translate.data import DataConfig, PreparedData, prepare_data
from latalign.translate.train import default_cache_dir

K = TypeVar("K")
R = TypeVar("R")


@dataclass
class Context:
    """Shared state of one reproduction.

    Attributes:
        out: the run directory (one subdirectory per experiment).
        preset: the sizes, after ``--scale``, ``--updates`` and ``--device``.
        seed: model and batch-order seed.
        data_dir: the ``--data`` directory (absolute), or None for the synthetic corpus.
        force: redo finished work.
        progress: progress lines (and training progress bars in this process).
        cache_dir: tokenizer/binarized-data cache.
        map_workers: processes training runs side by side (:func:`run_jobs`).
        threads: torch/numba threads of each worker process (None: torch's default).
        baseline: a finished run of the CE recipe to evaluate (``--baseline``).
        map_objectives: the map objectives to run (keys; empty: all).
    """

    out: Path
    preset: Preset
    seed: int
    data_dir: str | None
    force: bool
    progress: bool
    cache_dir: Path
    map_workers: int = 1
    threads: int | None = None
    baseline: Path | None = None
    map_objectives: tuple[str, ...] = ()
    _data: PreparedData | None = field(default=None, repr=False)

    def data_config(self) -> DataConfig:
        return DataConfig(data=self.data_dir, **self.preset.data)

    @property
    def data(self) -> PreparedData:
        """The prepared corpus (tokenizer, train/valid/test), prepared on first use."""
        if self._data is None:
            self._data = prepare_data(self.data_config(), self.cache_dir)
        return self._data

    def spec(self, experiment: str) -> dict[str, Any]:
        """What a finished result depends on (compared on reuse)."""
        return {
            "experiment": experiment,
            "preset": preset_settings(self.preset.to_dict()),
            "seed": self.seed,
            "data": self.data_dir,
        }


def default_cache(cache_dir: str | Path | None) -> Path:
    """``cache_dir``, or the stack's default cache."""
    return Path(cache_dir) if cache_dir else default_cache_dir()


def train_config(
    ctx: Context,
    run_dir: Path,
    criterion: str,
    options: dict[str, Any],
    updates: int,
    model: dict[str, Any] | None = None,
) -> TrainConfig:
    """A ``TrainConfig`` with the preset's data, model (``model`` overrides on top),
    optimiser, batch size, logging and device: ``updates`` updates of ``criterion`` with the
    other TrainConfig fields in ``options``."""
    p = ctx.preset
    return TrainConfig(
        run_dir=str(run_dir),
        data=ctx.data_config(),
        preset=p.model_preset,
        model={**p.model, **(model or {})},
        criterion=criterion,
        **options,
        lr=p.lr,
        warmup_updates=p.warmup_updates,
        max_tokens=p.max_tokens,
        max_updates=updates,
        validate_every=p.validate_every,
        log_every=p.log_every,
        seed=ctx.seed,
        device=p.train_device,
        cache_dir=str(ctx.cache_dir),
    )


# --------------------------------------------------------------------------- workers


def _worker_init(threads: int) -> None:
    """A worker process: ``threads`` torch and numba threads, denormals flushed (as the
    parent sets for its own training)."""
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    logging.basicConfig(level=logging.WARNING)
    set_numba_threads(threads)


@contextmanager
def spawn_pool(ctx: Context, workers: int) -> Iterator[tuple[ProcessPoolExecutor, Context]]:
    """``workers`` spawned processes, each set up by :func:`_worker_init`, and a copy of
    ``ctx`` to send them (no progress bars): the tokenizer and data are prepared here once
    (the workers then hit the cache) and the copy carries none of it."""
    ctx.data  # noqa: B018 - prepare the tokenizer and data once; workers hit the cache
    light = replace(ctx, _data=None, progress=False)
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_init,
        initargs=(ctx.threads or 1,),
    ) as pool:
        yield pool, light


def job_workers(ctx: Context, jobs: int) -> int:
    """How many processes :func:`run_jobs` uses for ``jobs`` jobs."""
    return min(ctx.map_workers, jobs)


def run_jobs(
    ctx: Context,
    fn: Callable[..., R],
    jobs: Mapping[K, tuple[Any, ...]],
    on_done: Callable[[K, R], None] | None = None,
) -> dict[K, R]:
    """``{key: fn(ctx, *args)}`` for every job, in :func:`job_workers` processes (results do
    not depend on it; ``fn`` must be a module-level function), collected in job order;
    ``on_done(key, result)`` after each."""
    out: dict[K, R] = {}
    workers = job_workers(ctx, len(jobs))
    if workers > 1:
        with spawn_pool(ctx, workers) as (pool, light):
            futures = {k: pool.submit(fn, light, *args) for k, args in jobs.items()}
            for k, fut in futures.items():
                out[k] = fut.result()
                if on_done is not None:
                    on_done(k, out[k])
        return out
    for k, args in jobs.items():
        out[k] = fn(ctx, *args)
        if on_done is not None:
            on_done(k, out[k])
    return out
