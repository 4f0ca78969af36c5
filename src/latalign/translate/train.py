"""Training loop: teacher forcing with any criterion, validation, early stopping, exact resume,
single- or multi-process data-parallel (``torchrun``).

A run lives in one directory::

    run_dir/
      config.json          the TrainConfig (written once; a resume must match it)
      tokenizer/           the joint BPE model (spm.model, tokenizer.json)
      checkpoints/         checkpoint_last.pt, checkpoint_best.pt, checkpoint_<update>.pt
                           (the newest ``keep_checkpoints``; see checkpoint.py)
      log.jsonl            one record per log interval / validation
      tensorboard/         only with ``tensorboard=True``

What is trained is plugged in, not written here: the run's arch
(:mod:`latalign.translate.registry`) builds the model and its per-step loss
(:class:`latalign.translate.loss.LossFn`: decoder-input regime + criterion for ``"ar"``). The
run's configuration is a :class:`~latalign.translate.config.TrainConfig`.

Losses are normalised like fairseq: the loss is a sum over target tokens (nats), and the
gradient is the sum over ranks divided by the total number of target tokens of the update
(DistributedDataParallel under ``torchrun``, or with one rank under ``LATALIGN_FORCE_DDP=1``;
see distributed.py). Logged losses are nats per target token.

Host synchronisations (what a GPU waits for): an update makes none. Its stats stay device
tensors that :class:`Meter` sums on the device; they are read once per log interval (one
synchronisation) and at validation. The batch goes to the GPU from pinned memory; the loss
library's value checks (and the criteria's and models' checks that follow its switch,
:func:`latalign.align.set_validation`) are off inside :func:`train_step`, whose batches come
from :func:`~latalign.translate.batching.collate`. Under DDP with ``max_minutes`` the ranks
agree on the wall clock once per update (one read of an all-reduce).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from latalign.align import set_validation
from latalign.io import atomic_write
from latalign.translate.batching import TokenBatchSampler, collate
from latalign.translate.checkpoint import (
    CONFIG_FILE,
    FORMAT_VERSION,
    TOKENIZER_DIR,
    checkpoint_paths,
    find_resume_checkpoint,
    has_checkpoints,
    load_checkpoint,
    restore_training_state,
    rng_state,
    save_training_checkpoint,
)
from latalign.translate.config import TrainConfig
from latalign.translate.data import prepare_data
from latalign.translate.device import default_bf16
from latalign.translate.distributed import (
    DistInfo,
    any_rank,
    barrier,
    init_distributed,
    loss_scale,
    shutdown_distributed,
    wrap_ddp,
)
from latalign.translate.loss import LossFn
from latalign.translate.optim import InverseSqrtSchedule, build_optimizer
from latalign.translate.registry import get_arch
from latalign.translate.runlog import RunLog

# Fields that may change between a run and its resumption (budgets, logging, hardware).
# Every other field must match the saved config, or the resume is refused.
RESUMABLE_CHANGES = frozenset(
    {
        "max_updates",
        "max_epochs",
        "max_minutes",
        "validate_every",
        "patience",
        "log_every",
        "tensorboard",
        "keep_checkpoints",
        "num_workers",
        "device",
        "cache_dir",
        "run_dir",
    }
)


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Fields (dotted for ``data.*``/``model.*``) whose values differ and matter for resuming."""
    diffs = []
    keys = (set(saved) | set(current)) - RESUMABLE_CHANGES
    for key in sorted(keys):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            for sub in sorted(set(a) | set(b)):
                if a.get(sub) != b.get(sub):
                    diffs.append(f"{key}.{sub}: {a.get(sub)!r} -> {b.get(sub)!r}")
        elif a != b:
            diffs.append(f"{key}: {a!r} -> {b!r}")
    return diffs


# --------------------------------------------------------------------------- training


class SetupError(ValueError):
    """Raised by :func:`train` before any training step: bad run dir, data or resume state."""


@dataclass
class TrainResult:
    """What :func:`train` returns. Losses in nats per target token."""

    run_dir: Path
    best_checkpoint: Path | None
    last_checkpoint: Path
    step: int
    epoch: int
    best_valid_loss: float
    final: dict[str, Any]  # the last validation record (valid_loss, valid_ce, …)
    history: list[dict[str, Any]]  # every record written to log.jsonl by this invocation
    stop_reason: str
    model: torch.nn.Module | None = None  # the trained model (eval mode, on the run's device)
    resumed_from: Path | None = None  # the checkpoint this invocation resumed from


@dataclass
class RunState:
    """The loop's counters (checkpointed): updates done, early stopping, training time."""

    step: int = 0
    best_valid: float = math.inf
    bad_validations: int = 0
    train_seconds: float = 0.0  # training time of earlier invocations (resumes)

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any]) -> RunState:
        return cls(
            step=int(state["step"]),
            best_valid=float(state["best_valid_loss"]),
            bad_validations=int(state.get("bad_validations", 0)),
            train_seconds=float(state.get("train_seconds", 0.0)),
        )

    def elapsed(self, clock: float) -> float:
        """Training seconds, resumes included (``clock``: this invocation's start)."""
        return self.train_seconds + (time.monotonic() - clock)

    def observe(self, valid_loss: float) -> bool:
        """Record a validation loss; True if it is a new best."""
        if valid_loss < self.best_valid:
            self.best_valid, self.bad_validations = valid_loss, 0
            return True
        self.bad_validations += 1
        return False


def default_cache_dir() -> Path:
    return Path(os.environ.get("LATALIGN_CACHE", Path.home() / ".cache" / "latalign"))


def _field_defaults() -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(TrainConfig):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
    return json.loads(json.dumps(out))


def check_run_dir(
    cfg: TrainConfig, resume: bool | None = None
) -> tuple[Path, dict[str, Any]] | None:
    """Decide whether ``cfg.run_dir`` is a fresh run or a resumption; writes nothing.

    Returns ``(checkpoint path, state)`` of the newest intact checkpoint to resume from
    (:func:`~latalign.translate.checkpoint.find_resume_checkpoint`, which warns when it skips
    a damaged one), or None for a fresh start. ``resume=None``: resume automatically when the
    run has checkpoints; ``True``: require one; ``False``: refuse a run dir that has some.
    Raises ``ValueError`` when the saved config differs in fields that matter (fields a saved
    config lacks take their defaults) or ``init_from`` names no file, :class:`CheckpointError`
    when every checkpoint is damaged.
    """
    if cfg.init_from is not None and not Path(cfg.init_from).is_file():
        raise ValueError(f"expected a checkpoint to initialise from at {cfg.init_from}; found none")
    run_dir = Path(cfg.run_dir)
    last, _ = checkpoint_paths(run_dir)
    saved_cfg = None
    if (run_dir / CONFIG_FILE).is_file():
        saved_cfg = json.loads((run_dir / CONFIG_FILE).read_text())
    found = None
    if has_checkpoints(run_dir):
        if resume is False:
            raise ValueError(
                f"expected an empty run directory (resume disabled); found checkpoints in "
                f"{last.parent} — use a new --run-dir or --resume"
            )
        found = find_resume_checkpoint(run_dir)
        saved_cfg = found[1].get("train_config", saved_cfg) if found else saved_cfg
    elif resume:
        raise ValueError(f"expected {last} to resume from; found none")
    if saved_cfg is not None:
        diffs = config_differences({**_field_defaults(), **saved_cfg}, cfg.to_dict())
        if diffs:
            raise ValueError(
                f"expected the config of the run in {run_dir} (refusing to overwrite another "
                f"run); found differences: {'; '.join(diffs)}"
            )
    return found


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def use_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    """``cfg.bf16``, or when it is None (auto): :func:`~latalign.translate.device.default_bf16`."""
    if cfg.bf16 is not None:
        return bool(cfg.bf16)
    return default_bf16(device)


def _batches(sampler: Any, dataset: Any, device: torch.device) -> Iterator[Any]:
    """Collated batches for the sampler's current epoch, from its current position; to a GPU
    from pinned memory (an asynchronous copy: from pageable memory it would wait for the
    device)."""
    pin = device.type == "cuda"
    for indices in sampler:
        batch = collate([dataset[i] for i in indices])
        yield (batch.pin_memory() if pin else batch).to(device, non_blocking=pin)


@contextmanager
def _value_checks(enabled: bool) -> Iterator[None]:
    """The loss library's value checks (:func:`latalign.align.set_validation`) on or off
    inside the block, restored after."""
    before = set_validation(enabled)
    try:
        yield
    finally:
        set_validation(before)


def _autocast(enabled: bool, device: torch.device):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


class Meter:
    """Sums of loss stats over an interval (log records) or a validation pass.

    Numbers are summed on the host, tensors (0-dim) on their device in float64 (the same
    float64 sums as ``float(v)`` on the host, without reading them back);
    :meth:`reduced` reads everything with one synchronisation."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.device_sums: dict[str, Tensor] = {}
        self.t0 = time.monotonic()

    def add(self, stats: dict[str, Any]) -> None:
        for k, v in stats.items():
            if isinstance(v, Tensor):
                v = v.detach().to(torch.float64)
                prev = self.device_sums.get(k)
                self.device_sums[k] = v if prev is None else prev + v
            else:
                self.sums[k] = self.sums.get(k, 0.0) + float(v)

    def reduced(self, dist: DistInfo | None) -> dict[str, float]:
        """The sums over ranks (every rank must have the same keys), read with one host
        synchronisation (none when every stat was a number and nothing is distributed)."""
        keys = sorted(set(self.sums) | set(self.device_sums))
        distributed = dist is not None and dist.distributed
        if not self.device_sums and not distributed:
            return dict(self.sums)
        device = next(iter(self.device_sums.values())).device if self.device_sums else dist.device
        parts = []
        for k in keys:
            if k in self.device_sums:
                v = self.device_sums[k]
                parts.append(v + self.sums[k] if k in self.sums else v)
            else:  # a host number: one small copy per interval
                parts.append(torch.tensor(self.sums[k], dtype=torch.float64, device=device))
        values = torch.stack(parts)
        if distributed:
            torch.distributed.all_reduce(values)
        return dict(zip(keys, values.tolist()))  # the one synchronisation


def per_token(sums: dict[str, float], prefix: str) -> dict[str, float]:
    """``{prefix_key: sum / ntokens}`` for every stat but the counts (``loss`` -> ``prefix_loss``,
    ``nll_loss`` -> ``prefix_nll_loss``, ``ce`` -> ``prefix_ce``, …)."""
    denom = max(sums.get("ntokens", 0.0), 1.0)
    return {
        f"{prefix}_{k}": v / denom
        for k, v in sorted(sums.items(), key=lambda kv: kv[0] != "loss")
        if k not in ("ntokens", "nsentences")
    }


@torch.no_grad()
def validate(
    model: torch.nn.Module,
    batches: list[Any] | Iterator[Any],
    loss_fn: LossFn,
    *,
    bf16: bool,
    dist: DistInfo | None = None,
) -> dict[str, float]:
    """The loss (``loss_fn(model, batch, update=None)``) on ``batches`` in eval mode.

    Returns ``valid_loss`` and ``valid_<key>`` for every other stat (``valid_ce`` when the loss
    gives ``ce``) in nats per target token, ``valid_ntokens``, ``valid_nsentences``; sums are
    reduced over ranks when ``dist`` is distributed. Pass the unwrapped model (no DDP).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    meter = Meter()
    for batch in batches:
        with _autocast(bf16, device):
            _, stats = loss_fn(model, batch, update=None)
        meter.add(stats)
    model.train(was_training)
    sums = meter.reduced(dist)
    return {
        **per_token(sums, "valid"),
        "valid_ntokens": int(sums.get("ntokens", 0)),
        "valid_nsentences": int(sums.get("nsentences", 0)),
    }


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Any,
    loss_fn: LossFn,
    *,
    update: int = 0,
    bf16: bool = False,
    clip_norm: float = 0.0,
    dist: DistInfo | None = None,
    check_values: bool = False,
) -> dict[str, Any]:
    """One update: ``loss_fn(model, batch, update=update)`` under autocast (bf16 if asked),
    backward of the loss scaled so that the gradient is the sum over ranks divided by the
    update's target tokens over ranks (fairseq; ``model`` is the DDP wrapper when distributed,
    which averages over ranks), optional clipping, optimizer step. The caller sets the lr.

    ``check_values``: the loss library's value checks (ids, lengths, NaN; one host
    synchronisation per loss call) inside the step; off by default, so that the step makes
    no host synchronisation (the batches are :func:`collate`'s: valid by construction; a
    diverging run shows a non-finite loss in the next log record).
    Returns the loss's stats (device tensors and numbers, not read back: sum them with a
    :class:`Meter`)."""
    dist = dist or DistInfo(0, 1, 0, batch.target.device)
    model.train()
    with _value_checks(check_values):
        with _autocast(bf16, batch.target.device):
            loss_sum, stats = loss_fn(model, batch, update=update)
        scale, _ = loss_scale(stats["ntokens"], dist)
        if isinstance(scale, Tensor):
            scale = scale.to(loss_sum.dtype)
        optimizer.zero_grad(set_to_none=True)
        (loss_sum * scale).backward()
        if clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        optimizer.step()
    return stats


def init_weights(model: torch.nn.Module, path: str | Path, fingerprint: str) -> None:
    """Load the weights of checkpoint ``path`` into ``model`` (``init_from``): every tensor of
    the checkpoint must fit (same names and shapes); parameters it lacks (e.g. a new auxiliary
    head) keep their initialisation. ``SetupError`` on another tokenizer or a mismatch."""
    init = load_checkpoint(Path(path), map_location="cpu")
    if init.get("tokenizer") not in (None, fingerprint):
        raise SetupError(
            f"expected a checkpoint trained with this run's tokenizer ({fingerprint[:12]}) in "
            f"init_from; found {str(init['tokenizer'])[:12]} in {path}"
        )
    try:
        result = model.load_state_dict(init["model"], strict=False)
    except RuntimeError as e:  # shape mismatch
        raise SetupError(f"expected init_from weights that fit the model; found {e}") from None
    if result.unexpected_keys:
        raise SetupError(
            f"expected init_from weights that fit the model; found extra tensors "
            f"{result.unexpected_keys[:5]} in {path}"
        )


def train(cfg: TrainConfig, progress: bool = True, resume: bool | None = None) -> TrainResult:
    """Train (or resume) the run described by ``cfg``; see the module docstring for the
    run directory layout. ``resume``: None = automatic, True = require a checkpoint,
    False = refuse an existing run. Returns a :class:`TrainResult`."""
    # -- setup: everything that can fail on bad input fails here, before a file is written
    try:
        dist = init_distributed(cfg.device)
        found = check_run_dir(cfg, resume)
        data = _prepare_data(cfg, dist)
    except (ValueError, FileNotFoundError) as e:  # CheckpointError is a ValueError
        raise SetupError(str(e)) from e
    resumed_from, state = found if found is not None else (None, None)
    tokenizer = data.tokenizer
    if state is not None and state.get("tokenizer") not in (None, tokenizer.fingerprint):
        raise SetupError(
            f"expected the tokenizer of the run being resumed ({state['tokenizer'][:12]}); "
            f"found {tokenizer.fingerprint[:12]} (did the data or cache change?)"
        )
    run_dir = Path(cfg.run_dir)
    if dist.is_main:
        atomic_write(run_dir / CONFIG_FILE, json.dumps(cfg.to_dict(), indent=2) + "\n")
        tokenizer.save(run_dir / TOKENIZER_DIR)
    bf16 = use_bf16(cfg, dist.device)
    if dist.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores (TF32)
        torch.backends.cudnn.allow_tf32 = True

    # -- model, loss, optimizer, data order
    seed_everything(cfg.seed)
    arch = get_arch(cfg.arch)
    model = arch.build(cfg, tokenizer.vocab_size).to(dist.device)
    if state is None and cfg.init_from:
        init_weights(model, cfg.init_from, tokenizer.fingerprint)
    loss_fn = arch.make_loss(cfg, tokenizer)
    optimizer = build_optimizer(model, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    scheduler = InverseSqrtSchedule(optimizer, cfg.lr, cfg.warmup_updates, cfg.warmup_init_lr)
    sampler = TokenBatchSampler(
        data.train.src_sizes, data.train.tgt_sizes, max_tokens=cfg.max_tokens, seed=cfg.seed,
        rank=dist.rank, world_size=dist.world_size,
    )  # fmt: skip
    valid_sampler = TokenBatchSampler(
        data.valid.src_sizes, data.valid.tgt_sizes, max_tokens=cfg.max_tokens, shuffle=False,
        rank=dist.rank, world_size=dist.world_size, even=False,
    )  # fmt: skip
    run = RunState()
    if state is not None:
        restore_training_state(state, model, optimizer, scheduler, sampler)
        run = RunState.from_checkpoint(state)
    del state
    ddp_model = wrap_ddp(model, dist)  # broadcasts rank 0's parameters

    # -- the loop
    runlog = RunLog(run_dir, tensorboard=cfg.tensorboard, enabled=dist.is_main)
    history: list[dict[str, Any]] = []
    bar = _progress_bar(cfg, run.step, enabled=progress and dist.is_main)
    valid_batches = list(_batches(valid_sampler, data.valid, dist.device))  # small: collate once
    clock = time.monotonic()  # training time only: data preparation is not budgeted
    meter, final, stop_reason = Meter(), {}, ""
    last_validated = run.step if run.step > 0 else -1

    def checkpoint(reason: str) -> dict[str, Any]:
        """Validate, update early stopping, save the checkpoints, log; the valid record."""
        metrics = validate(model, valid_batches, loss_fn, bf16=bf16, dist=dist)
        improved = run.observe(metrics["valid_loss"])
        record = {
            "kind": "valid", "step": run.step, "epoch": sampler.epoch, **metrics,
            "best_valid_loss": run.best_valid, "lr": scheduler.get_lr(),
            "elapsed": round(run.elapsed(clock), 3), "reason": reason,
        }  # fmt: skip
        if dist.is_main:
            ckpt = {
                "format": FORMAT_VERSION, "model": model.state_dict(),
                "model_config": model.cfg.to_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "step": run.step, "epoch": sampler.epoch,
                "sampler": sampler.state_dict(), "rng": rng_state(),
                "best_valid_loss": run.best_valid, "bad_validations": run.bad_validations,
                "train_seconds": run.elapsed(clock),
                "train_config": cfg.to_dict(), "tokenizer": tokenizer.fingerprint,
            }  # fmt: skip
            save_training_checkpoint(ckpt, run_dir, best=improved, keep=cfg.keep_checkpoints)
        history.append(record)
        runlog.log(record)
        return record

    stop_reason = _stop_reason(cfg, run, clock, dist)
    while not stop_reason:
        if cfg.max_epochs and sampler.epoch >= cfg.max_epochs:
            stop_reason = "max_epochs"
            break
        for batch in _batches(sampler, data.train, dist.device):
            stats = train_step(
                ddp_model, optimizer, batch, loss_fn, update=run.step, bf16=bf16,
                clip_norm=cfg.clip_norm, dist=dist,
            )  # fmt: skip
            run.step += 1
            scheduler.step_update(run.step)
            meter.add(stats)
            if bar is not None:
                bar.update(1)
            if run.step % cfg.log_every == 0:
                record = _train_record(meter, run, sampler.epoch, scheduler.get_lr(), clock, dist)
                history.append(record)
                runlog.log(record)
                if bar is not None:
                    bar.set_postfix(loss=f"{record['train_loss']:.3f}", lr=f"{record['lr']:.2e}")
                meter = Meter()
            if run.step % cfg.validate_every == 0:
                final, last_validated = checkpoint("interval"), run.step
            stop_reason = _stop_reason(cfg, run, clock, dist)
            if stop_reason:
                break
        else:  # the epoch ended
            if last_validated != run.step:
                final, last_validated = checkpoint("epoch_end"), run.step
            stop_reason = _stop_reason(cfg, run, clock, dist)
    if last_validated != run.step or not final:
        final = checkpoint(f"stop:{stop_reason}")
    if bar is not None:
        bar.close()
    runlog.close()
    barrier(dist)
    shutdown_distributed(dist)
    last_path, best_path = checkpoint_paths(run_dir)
    return TrainResult(
        run_dir=run_dir,
        best_checkpoint=best_path if best_path.is_file() else None,
        last_checkpoint=last_path,
        step=run.step,
        epoch=sampler.epoch,
        best_valid_loss=run.best_valid,
        final=final,
        history=history,
        stop_reason=stop_reason,
        model=model.eval(),
        resumed_from=resumed_from,
    )


def _prepare_data(cfg: TrainConfig, dist: DistInfo) -> Any:
    """``prepare_data`` on rank 0 first (it fills the cache), then on the other ranks."""
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    try:
        data = prepare_data(cfg.data, cache_dir) if dist.is_main else None
        barrier(dist)
        return data if dist.is_main else prepare_data(cfg.data, cache_dir)
    except (ValueError, FileNotFoundError) as e:
        raise ValueError(f"data: {e}") from e


def _stop_reason(cfg: TrainConfig, run: RunState, clock: float, dist: DistInfo) -> str:
    """Why training stops now ("" = it goes on); every rank gets the same answer. Updates and
    validations are the same on every rank; only the wall clock differs between processes,
    so the ranks agree (one all-reduce, read back) only when ``max_minutes`` is set."""
    reason = ""
    if cfg.max_updates and run.step >= cfg.max_updates:
        reason = "max_updates"
    elif cfg.max_minutes and run.elapsed(clock) >= cfg.max_minutes * 60:
        reason = "max_minutes"
    elif cfg.patience and run.bad_validations >= cfg.patience:
        reason = "patience"
    if not cfg.max_minutes:
        return reason
    if any_rank(bool(reason), dist):
        return reason or "max_minutes"
    return ""


def _train_record(
    meter: Meter, run: RunState, epoch: int, lr: float, clock: float, dist: DistInfo
) -> dict[str, Any]:
    """The ``train`` log record of an interval: losses per target token (over ranks)."""
    sums = meter.reduced(dist)
    seconds = max(time.monotonic() - meter.t0, 1e-9)
    losses = per_token(sums, "train")
    return {
        "kind": "train",
        "step": run.step,
        "epoch": epoch,
        "train_loss": losses.pop("train_loss", math.nan),
        "lr": lr,
        "tokens_per_s": sums.get("ntokens", 0.0) / seconds,
        "sentences": int(sums.get("nsentences", 0)),
        "elapsed": round(run.elapsed(clock), 3),
        **losses,
    }


def _progress_bar(cfg: TrainConfig, initial: int, enabled: bool):
    if not enabled or not sys.stderr.isatty():
        return None
    return tqdm(
        total=cfg.max_updates or None, initial=initial, unit="upd", desc="train", dynamic_ncols=True
    )
