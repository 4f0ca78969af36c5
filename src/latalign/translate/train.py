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
(:mod:`latalign.translate.arch`) builds the model and its per-step loss
(:class:`latalign.translate.loss.LossFn`: decoder-input regime + criterion for ``"ar"``).

Losses are normalised like fairseq: the loss is a sum over target tokens (nats), and the
gradient is the sum over ranks divided by the total number of target tokens of the update
(DistributedDataParallel under ``torchrun``; see distributed.py). Logged losses are nats per
target token.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import sys
import time
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latalign.io import atomic_write
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
from latalign.translate.config import read_config_file
from latalign.translate.criteria import CRITERIA, check_options, get_criterion
from latalign.translate.data import DataConfig
from latalign.translate.distributed import (
    DistInfo,
    all_reduce_sum,
    any_rank,
    barrier,
    init_distributed,
    loss_scale,
    wrap_ddp,
)
from latalign.translate.optim import InverseSqrtSchedule, build_optimizer
from latalign.translate.runlog import RunLog

if typing.TYPE_CHECKING:  # pragma: no cover
    from latalign.translate.loss import LossFn

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

# Criterion options exposed as TrainConfig fields (None = the criterion's default).
OPTION_FIELDS = ("delta", "operators", "aggregate", "causal", "epsilon")
# Arch and regime options (None = the plugin's default). An arch/regime lists the ones it reads
# in its ``options``; setting one the run's arch and regime do not read is a config error.
PLUGIN_OPTION_FIELDS = (
    "upsample",
    "length_loss_weight",
    "length_beam",
    "nat_input",
    "glat_ratio",
    "glat_ratio_end",
    "glat_updates",
    "aux_ctc_weight",
    "schedule",
    "schedule_updates",
    "regime_p",
    "temperature",
    "delay",
)


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a ``help`` text (used by the CLI)."""
    if isinstance(default, (list, dict, tuple)) or callable(default):
        factory = default if callable(default) else (lambda d=default: type(d)(d))
        return field(default_factory=factory, metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class TrainConfig:
    """Everything a training run needs; validated on construction (``ValueError``).

    Load with :meth:`from_file` (TOML or YAML; a ``[data]`` table for :class:`DataConfig`,
    a ``[model]`` table for preset overrides) and :meth:`from_dict`; :meth:`to_dict`
    round-trips through JSON.
    """

    run_dir: str = _f("runs/default", "run directory (config, tokenizer, checkpoints, log)")
    data: DataConfig = _f(DataConfig, "data settings (see DataConfig)")
    preset: str = _f("small", "model preset: paper, small or tiny")
    model: dict[str, Any] = _f({}, "ModelConfig field overrides of the preset")
    arch: str = _f("ar", "architecture: ar (autoregressive transformer) or a registered one")
    regime: str = _f(
        "teacher_forcing", "decoder-input regime of the ar arch: teacher_forcing, doubled, …"
    )
    criterion: str = _f("ce", f"training criterion: {', '.join(CRITERIA)}")
    delta: float | None = _f(None, "AXE clone_prediction weight (axe, causal_axe; default 1.0)")
    operators: tuple[str, ...] | None = _f(
        None, "latent: operators, comma separated (default align,clone_target,delimiter)"
    )
    aggregate: str | None = _f(None, "latent: sum (forward-backward) or max (Viterbi)")
    causal: bool | None = _f(None, "latent: causal restriction (p_j scores y_i only if i >= j)")
    epsilon: float | None = _f(None, "label_smoothed_ce: smoothing (default 0.1)")
    # -- arch / regime options (PLUGIN_OPTION_FIELDS; None = the plugin's default) --
    upsample: int | None = _f(None, "nat+ctc: decoder positions per source token (default 2)")
    length_loss_weight: float | None = _f(None, "nat: weight of the length loss (default 0.1)")
    length_beam: int | None = _f(None, "nat: lengths decoded at inference (default 3)")
    nat_input: str | None = _f(None, "nat: decoder input, copy (source embeddings) or mask")
    glat_ratio: float | None = _f(
        None, "nat: glancing training, reference shown at ratio x distance positions (in [0, 1])"
    )
    glat_ratio_end: float | None = _f(None, "nat: glancing ratio at the schedule's end (linear)")
    glat_updates: int | None = _f(None, "nat: updates of the glancing schedule (max_updates)")
    aux_ctc_weight: float | None = _f(None, "aux CTC on upsampled encoder states: its weight")
    schedule: str | None = _f(None, "scheduled sampling: linear or inverse_sigmoid")
    schedule_updates: int | None = _f(None, "scheduled sampling: updates of the schedule")
    regime_p: float | None = _f(None, "regime probability (corruption p, sampling p) in [0, 1]")
    temperature: float | None = _f(None, "free running: sampling temperature (0 = greedy)")
    delay: int | None = _f(None, "delayed teacher forcing: position j is fed y_(j-k), k >= 2")
    lr: float = _f(5e-4, "peak learning rate")
    betas: tuple[float, float] = _f((0.9, 0.98), "Adam betas, comma separated")
    weight_decay: float = _f(1e-4, "decoupled weight decay")
    warmup_updates: int = _f(4000, "linear warm-up updates of the inverse-sqrt schedule")
    warmup_init_lr: float = _f(1e-7, "learning rate at update 0")
    max_tokens: int = _f(4096, "target+source token budget of a batch (per process)")
    clip_norm: float = _f(0.0, "clip the gradient norm to this (0 = off)")
    max_updates: int = _f(0, "stop after this many updates (0 = no limit)")
    max_epochs: int = _f(0, "stop after this many epochs (0 = no limit)")
    max_minutes: float = _f(
        0.0, "wall-clock training budget in minutes, resumes included (0 = none)"
    )
    validate_every: int = _f(1000, "validate (and checkpoint) every N updates, and at epoch ends")
    patience: int = _f(0, "stop after N validations without improvement (0 = off)")
    bf16: bool | None = _f(
        None,
        "bfloat16 autocast for forward/backward; default (None) auto: on for CUDA devices that "
        "support bf16, off on the CPU (on the 2-core dev CPU it was ~37x slower than fp32, "
        "benchmarks/bench_train.py)",
    )
    seed: int = _f(1, "random seed (model init, dropout, batch order)")
    log_every: int = _f(100, "log training metrics every N updates")
    keep_checkpoints: int = _f(3, "numbered checkpoints kept besides last and best (>= 1)")
    tensorboard: bool = _f(False, "also write TensorBoard events (needs tensorboard)")
    num_workers: int = _f(
        0, "data loading worker processes (only 0: collate in the training process)"
    )
    device: str = _f("auto", "auto, cpu, cuda or cuda:N")
    cache_dir: str | None = _f(None, "cache for tokenizers/tensors (default ~/.cache/latalign)")
    init_from: str | None = _f(
        None,
        "fine-tune: initialise the model with this checkpoint's weights (same tokenizer; fresh "
        "optimizer, schedule and data order; parameters it lacks keep their initialisation)",
    )

    def __post_init__(self) -> None:
        if isinstance(self.data, dict):
            self.data = _data_config_from_dict(self.data)
        if not isinstance(self.data, DataConfig):
            raise ValueError(f"expected data to be a DataConfig, found {type(self.data).__name__}")
        if isinstance(self.operators, str):
            self.operators = tuple(o.strip() for o in self.operators.split(",") if o.strip())
        elif self.operators is not None:
            self.operators = tuple(self.operators)
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        self.model = dict(self.model)
        from latalign.translate.config import PRESETS, ModelConfig

        if self.preset not in PRESETS:
            raise ValueError(
                f"expected a preset in {{{', '.join(PRESETS)}}}; found {self.preset!r}"
            )
        try:  # catch bad model overrides now, before data preparation (vocab size unknown yet)
            ModelConfig.preset(self.preset, 1024, **dict(self.model))
        except TypeError as e:
            raise ValueError(f"expected ModelConfig fields in model overrides; found {e}") from None
        get_criterion(self.criterion)  # ValueError listing the known names
        check_options(self.criterion, self.criterion_options())
        if self.criterion == "latent":  # the library's own validation of an objective
            from latalign.align.objective import Objective
            from latalign.translate.criteria import criterion_options

            defaults = criterion_options("latent")
            opts = {**defaults, **self.criterion_options()}
            Objective.make(opts["operators"], opts["aggregate"], opts["weights"], opts["causal"])
        from latalign.translate.loss import check_combination

        check_combination(self)  # arch x regime x criterion x their options
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"expected two betas in [0, 1); found {self.betas}")
        for name in ("lr", "warmup_init_lr", "weight_decay", "clip_norm", "max_minutes"):
            if getattr(self, name) < 0:
                raise ValueError(f"expected {name} >= 0; found {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"expected lr > 0; found {self.lr}")
        for name in ("warmup_updates", "max_updates", "max_epochs", "patience", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"expected {name} >= 0; found {getattr(self, name)}")
        if self.num_workers != 0:
            raise ValueError(
                "expected num_workers 0 (batches are collated in the training process so the "
                f"sampler position stays exact for resuming); found {self.num_workers}"
            )
        for name in ("max_tokens", "validate_every", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"expected {name} >= 1; found {getattr(self, name)}")
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"expected device auto, cpu, cuda or cuda:N; found {self.device!r}")
        if self.init_from is not None and not Path(self.init_from).is_file():
            raise ValueError(
                f"expected a checkpoint to initialise from at {self.init_from}; found none"
            )

    def criterion_options(self) -> dict[str, Any]:
        """The criterion options that were set (the others take the criterion's defaults)."""
        return {k: getattr(self, k) for k in OPTION_FIELDS if getattr(self, k) is not None}

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (``TrainConfig.from_dict(cfg.to_dict()) == cfg``)."""
        out = dataclasses.asdict(self)
        return json.loads(json.dumps(out))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"expected TrainConfig fields; found unknown keys {unknown}")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Read a ``.toml``/``.json``/``.yaml`` file, then apply ``overrides`` (flat fields;
        DataConfig field names go into ``data``)."""
        data = read_config_file(path)
        return cls.from_dict(merge_overrides(data, overrides))


def data_field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(DataConfig)]


def merge_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` (a TrainConfig mapping) with flat ``overrides`` applied; keys naming a
    DataConfig field go into ``base["data"]``, ``model`` overrides are merged key by key."""
    out = dict(base)
    data = dict(out.get("data") or {})
    if isinstance(out.get("data"), DataConfig):
        data = dataclasses.asdict(out["data"])
    data_fields = set(data_field_names())
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for key, value in overrides.items():
        if key == "model":
            out["model"] = {**dict(out.get("model") or {}), **dict(value)}
        elif key in train_fields and key != "data":
            out[key] = value
        elif key in data_fields:
            data[key] = value
        else:
            raise ValueError(f"expected a TrainConfig or DataConfig field; found {key!r}")
    out["data"] = data
    return out


def _data_config_from_dict(data: dict[str, Any]) -> DataConfig:
    known = set(data_field_names())
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"expected DataConfig fields {sorted(known)}; found unknown keys {unknown}"
        )
    return DataConfig(**data)


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
    config lacks take their defaults), :class:`CheckpointError` when every checkpoint is
    damaged.
    """
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
    """``cfg.bf16``, or when it is None (auto): True on a CUDA device that supports bf16."""
    if cfg.bf16 is not None:
        return bool(cfg.bf16)
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def _batches(sampler: Any, dataset: Any, device: torch.device) -> Iterator[Any]:
    """Collated batches for the sampler's current epoch, from its current position."""
    from latalign.translate.batching import collate

    for indices in sampler:
        yield collate([dataset[i] for i in indices]).to(device, non_blocking=True)


def _autocast(enabled: bool, device: torch.device):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


class Meter:
    """Sums of loss stats over an interval (log records) or a validation pass."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.t0 = time.monotonic()

    def add(self, stats: dict[str, float]) -> None:
        for k, v in stats.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)

    def reduced(self, dist: DistInfo | None) -> dict[str, float]:
        """The sums over ranks (every rank must have the same keys)."""
        keys = sorted(self.sums)
        if dist is None:
            return dict(self.sums)
        return dict(zip(keys, all_reduce_sum([self.sums[k] for k in keys], dist)))


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
) -> dict[str, float]:
    """One update: ``loss_fn(model, batch, update=update)`` under autocast (bf16 if asked),
    backward of the loss scaled so that the gradient is the sum over ranks divided by the
    update's target tokens over ranks (fairseq; ``model`` is the DDP wrapper when distributed,
    which averages over ranks), optional clipping, optimizer step. The caller sets the lr.
    Returns the loss's stats."""
    dist = dist or DistInfo(0, 1, 0, batch.target.device)
    model.train()
    with _autocast(bf16, batch.target.device):
        loss_sum, stats = loss_fn(model, batch, update=update)
    scale, _ = loss_scale(stats["ntokens"], dist)
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
    from latalign.translate.arch import get_arch
    from latalign.translate.batching import TokenBatchSampler

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
                "format": FORMAT_VERSION, "arch": cfg.arch, "model": model.state_dict(),
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
    from latalign.translate.data import prepare_data

    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    try:
        data = prepare_data(cfg.data, cache_dir) if dist.is_main else None
        barrier(dist)
        return data if dist.is_main else prepare_data(cfg.data, cache_dir)
    except (ValueError, FileNotFoundError) as e:
        raise ValueError(f"data: {e}") from e


def _stop_reason(cfg: TrainConfig, run: RunState, clock: float, dist: DistInfo) -> str:
    """Why training stops now ("" = it goes on); every rank gets the same answer (the wall
    clock differs between processes)."""
    reason = ""
    if cfg.max_updates and run.step >= cfg.max_updates:
        reason = "max_updates"
    elif cfg.max_minutes and run.elapsed(clock) >= cfg.max_minutes * 60:
        reason = "max_minutes"
    elif cfg.patience and run.bad_validations >= cfg.patience:
        reason = "patience"
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
    from tqdm import tqdm

    return tqdm(
        total=cfg.max_updates or None, initial=initial, unit="upd", desc="train", dynamic_ncols=True
    )


def type_hints() -> dict[str, Any]:
    """Resolved annotations of :class:`TrainConfig` (for the CLI)."""
    return typing.get_type_hints(TrainConfig)
