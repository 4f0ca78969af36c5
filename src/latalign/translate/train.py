"""Training loop: teacher forcing with any criterion, validation, early stopping, exact resume,
single- or multi-process data-parallel (``torchrun``).

A run lives in one directory::

    run_dir/
      config.json          the TrainConfig (written once; a resume must match it)
      tokenizer/           the joint BPE model (spm.model, tokenizer.json)
      checkpoints/         checkpoint_last.pt, checkpoint_best.pt (see checkpoint.py)
      log.jsonl            one record per log interval / validation
      tensorboard/         only with ``tensorboard=True``

Losses are normalised like fairseq: the criterion returns a sum over target tokens
(nats), gradients are summed over ranks and divided by the total number of target tokens of
the update. Logged losses are nats per target token.
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

from latalign.translate.checkpoint import (
    FORMAT_VERSION,
    TOKENIZER_DIR,
    checkpoint_paths,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from latalign.translate.criteria import CRITERIA, check_options, get_criterion
from latalign.translate.data import DataConfig
from latalign.translate.optim import InverseSqrtSchedule, build_optimizer
from latalign.translate.runlog import RunLog

if typing.TYPE_CHECKING:  # pragma: no cover
    from latalign.translate.loss import LossFn

CONFIG_FILE = "config.json"

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
        "num_workers",
        "device",
        "cache_dir",
        "run_dir",
    }
)

# Criterion options exposed as TrainConfig fields (None = the criterion's default).
OPTION_FIELDS = ("delta", "operators", "aggregate", "causal", "epsilon")
CRITERION_OPTION_FIELDS = OPTION_FIELDS
# Arch and regime options (None = the plugin's default). An arch/regime lists the ones it reads
# in its ``options``; setting one the run's arch and regime do not read is a config error.
PLUGIN_OPTION_FIELDS = (
    "upsample",
    "length_loss_weight",
    "length_beam",
    "nat_input",
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
    bf16: bool = _f(
        False,
        "bfloat16 autocast for forward/backward; off by default: on the 2-core dev CPU it was "
        "~37x slower than fp32 (benchmarks/bench_train.py)",
    )
    seed: int = _f(1, "random seed (model init, dropout, batch order)")
    log_every: int = _f(100, "log training metrics every N updates")
    tensorboard: bool = _f(False, "also write TensorBoard events (needs tensorboard)")
    num_workers: int = _f(
        0, "data loading worker processes (only 0: collate in the training process)"
    )
    device: str = _f("auto", "auto, cpu, cuda or cuda:N")
    cache_dir: str | None = _f(None, "cache for tokenizers/tensors (default ~/.cache/latalign)")

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
        from latalign.translate.loss import check_combination

        check_combination(self)  # arch x regime x criterion x their options
        if self.aggregate is not None and self.aggregate not in ("sum", "max"):
            raise ValueError(f"expected aggregate 'sum' or 'max'; found {self.aggregate!r}")
        if self.operators is not None:
            known = {"align", "clone_target", "clone_prediction", "delimiter"}
            bad = [o for o in self.operators if o not in known]
            if bad or not self.operators:
                raise ValueError(
                    f"expected operators among {sorted(known)}; found {list(self.operators)}"
                )
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
        for name in ("max_tokens", "validate_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"expected {name} >= 1; found {getattr(self, name)}")
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"expected device auto, cpu, cuda or cuda:N; found {self.device!r}")

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


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A config mapping from a TOML, JSON or YAML (needs pyyaml) file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"expected a config file at {path}; found none")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        import tomllib

        with path.open("rb") as f:
            data = tomllib.load(f)
    elif suffix == ".json":
        data = json.loads(path.read_text())
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(
                f"expected pyyaml to read {path}; found it missing (use .toml)"
            ) from None
        data = yaml.safe_load(path.read_text()) or {}
    else:
        raise ValueError(f"expected a .toml, .json, .yaml or .yml config; found {path.name!r}")
    if not isinstance(data, dict):
        raise ValueError(f"expected a mapping in {path}; found {type(data).__name__}")
    return data


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


# --------------------------------------------------------------------------- distributed


@dataclass
class DistInfo:
    """Process-group facts: ``rank``/``world_size`` (1 when not distributed), ``device``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Read ``torchrun``'s ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; init the process group
    (NCCL on CUDA, gloo on CPU) when ``WORLD_SIZE > 1``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    elif device == "cuda":
        device = f"cuda:{local_rank}"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    return DistInfo(rank, world_size, local_rank, dev)


def _all_reduce_sum(values: list[float], dist: DistInfo) -> list[float]:
    """Element-wise sum of ``values`` over ranks (float64)."""
    if not dist.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=dist.device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def _sync_and_scale_grads(model: torch.nn.Module, scale_by: float, dist: DistInfo) -> None:
    """Sum gradients over ranks (one flat all-reduce) and multiply by ``1 / scale_by``."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    if dist.distributed:
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset : offset + n].view_as(g))
            offset += n
    for g in grads:
        g.div_(scale_by)


def _broadcast_parameters(model: torch.nn.Module, dist: DistInfo) -> None:
    if dist.distributed:
        for t in list(model.parameters()) + list(model.buffers()):
            torch.distributed.broadcast(t.data, src=0)


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


def default_cache_dir() -> Path:
    return Path(os.environ.get("LATALIGN_CACHE", Path.home() / ".cache" / "latalign"))


def check_run_dir(cfg: TrainConfig, resume: bool | None = None) -> dict[str, Any] | None:
    """Decide whether ``cfg.run_dir`` is a fresh run or a resumption; writes nothing.

    Returns the last checkpoint (dict) to resume from, or None for a fresh start.
    ``resume=None``: resume automatically when ``checkpoint_last.pt`` exists;
    ``True``: require it; ``False``: refuse a run dir that already has checkpoints.
    Raises ``ValueError`` when the saved config differs in fields that matter.
    """
    run_dir = Path(cfg.run_dir)
    last, _ = checkpoint_paths(run_dir)
    saved_cfg = None
    if (run_dir / CONFIG_FILE).is_file():
        saved_cfg = json.loads((run_dir / CONFIG_FILE).read_text())
    state = None
    if last.is_file():
        if resume is False:
            raise ValueError(
                f"expected an empty run directory (resume disabled); found checkpoints in "
                f"{last.parent} — use a new --run-dir or --resume"
            )
        state = load_checkpoint(last)
        saved_cfg = state.get("train_config", saved_cfg)
    elif resume:
        raise ValueError(f"expected {last} to resume from; found none")
    if saved_cfg is not None:
        diffs = config_differences(saved_cfg, cfg.to_dict())
        if diffs:
            raise ValueError(
                f"expected the config of the run in {run_dir} (refusing to overwrite another "
                f"run); found differences: {'; '.join(diffs)}"
            )
    return state


def _batches(sampler: Any, dataset: Any, device: torch.device) -> Iterator[Any]:
    """Collated batches for the sampler's current epoch, from its current position."""
    from latalign.translate.batching import collate

    for indices in sampler:
        yield collate([dataset[i] for i in indices]).to(device)


def _autocast(enabled: bool, device: torch.device):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def _sum_stats(total: dict[str, float], stats: dict[str, float]) -> None:
    for k, v in stats.items():
        total[k] = total.get(k, 0.0) + float(v)


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
    reduced over ranks when ``dist`` is distributed.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total: dict[str, float] = {}
    for batch in batches:
        with _autocast(bf16, device):
            _, stats = loss_fn(model, batch, update=None)
        _sum_stats(total, stats)
    if dist is not None:
        keys = sorted(total)
        total = dict(zip(keys, _all_reduce_sum([total[k] for k in keys], dist)))
    model.train(was_training)
    denom = max(total.get("ntokens", 0.0), 1.0)
    out = {"valid_loss": total.get("loss", 0.0) / denom}
    if "ce" in total:
        out["valid_ce"] = total["ce"] / denom
    for k in sorted(total):
        if k not in ("loss", "ce", "ntokens", "nsentences"):
            out[f"valid_{k}"] = total[k] / denom
    out["valid_ntokens"] = int(total.get("ntokens", 0))
    out["valid_nsentences"] = int(total.get("nsentences", 0))
    return out


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
    backward, gradients summed over ranks and divided by the update's target tokens (fairseq),
    optional clipping, optimizer step. The caller sets the lr. Returns the loss's stats."""
    dist = dist or DistInfo(0, 1, 0, batch.target.device)
    model.train()
    with _autocast(bf16, batch.target.device):
        loss_sum, stats = loss_fn(model, batch, update=update)
    optimizer.zero_grad(set_to_none=True)
    loss_sum.backward()
    ntokens = _all_reduce_sum([float(stats["ntokens"])], dist)[0]
    _sync_and_scale_grads(model, max(ntokens, 1.0), dist)
    if clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    optimizer.step()
    return stats


def _dump_params_for_tests(model: torch.nn.Module, dist: DistInfo) -> None:
    """With ``LATALIGN_DUMP_PARAMS=<dir>``, every rank saves its parameters (tests only)."""
    out = os.environ.get("LATALIGN_DUMP_PARAMS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save(state, Path(out) / f"params_rank{dist.rank}.pt")


def train(cfg: TrainConfig, progress: bool = True, resume: bool | None = None) -> TrainResult:
    """Train (or resume) the run described by ``cfg``; see the module docstring for the
    run directory layout. ``resume``: None = automatic, True = require a checkpoint,
    False = refuse an existing run. Returns a :class:`TrainResult`."""
    from latalign.translate.arch import get_arch
    from latalign.translate.batching import TokenBatchSampler
    from latalign.translate.data import prepare_data

    dist = init_distributed(cfg.device)
    run_dir = Path(cfg.run_dir)
    try:
        state = check_run_dir(cfg, resume)  # raises before anything is written
    except (ValueError, FileNotFoundError) as e:
        raise SetupError(str(e)) from e

    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    try:
        if dist.is_main:
            data = prepare_data(cfg.data, cache_dir)
        if dist.distributed:
            torch.distributed.barrier()
        if not dist.is_main:
            data = prepare_data(cfg.data, cache_dir)  # cache hit: rank 0 built it
    except (ValueError, FileNotFoundError) as e:
        raise SetupError(f"data: {e}") from e
    tokenizer = data.tokenizer
    if state is not None and state.get("tokenizer") not in (None, tokenizer.fingerprint):
        raise SetupError(
            f"expected the tokenizer of the run being resumed ({state['tokenizer'][:12]}); "
            f"found {tokenizer.fingerprint[:12]} (did the data or cache change?)"
        )

    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        tokenizer.save(run_dir / TOKENIZER_DIR)

    arch = get_arch(cfg.arch)
    model = arch.build(cfg, tokenizer.vocab_size).to(dist.device)
    model_cfg = model.cfg
    _broadcast_parameters(model, dist)
    optimizer = build_optimizer(model, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    scheduler = InverseSqrtSchedule(optimizer, cfg.lr, cfg.warmup_updates, cfg.warmup_init_lr)
    sampler = TokenBatchSampler(
        data.train.src_sizes,
        data.train.tgt_sizes,
        max_tokens=cfg.max_tokens,
        seed=cfg.seed,
        rank=dist.rank,
        world_size=dist.world_size,
    )
    valid_sampler = TokenBatchSampler(
        data.valid.src_sizes,
        data.valid.tgt_sizes,
        max_tokens=cfg.max_tokens,
        shuffle=False,
        rank=dist.rank,
        world_size=dist.world_size,
        even=False,
    )
    loss_fn = arch.make_loss(cfg, tokenizer)

    step, best_valid, bad_validations, train_seconds = 0, math.inf, 0, 0.0
    last_path, best_path = checkpoint_paths(run_dir)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.load_state_dict(state["sampler"])
        step = int(state["step"])
        best_valid = float(state["best_valid_loss"])
        bad_validations = int(state.get("bad_validations", 0))
        train_seconds = float(state.get("train_seconds", 0.0))
        set_rng_state(state["rng"])  # last: model building above consumed random numbers
    del state

    start_time = time.monotonic()  # training time only: data preparation is not budgeted
    runlog = RunLog(run_dir, tensorboard=cfg.tensorboard, enabled=dist.is_main)
    history: list[dict[str, Any]] = []

    def log(record: dict[str, Any]) -> None:
        history.append(record)
        runlog.log(record)

    def make_state() -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "model": model.state_dict(),
            "arch": cfg.arch,
            "model_config": model_cfg.to_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "epoch": sampler_epoch(sampler),
            "sampler": sampler.state_dict(),
            "rng": rng_state(),
            "best_valid_loss": best_valid,
            "bad_validations": bad_validations,
            "train_seconds": elapsed(),
            "train_config": cfg.to_dict(),
            "tokenizer": tokenizer.fingerprint,
        }

    def elapsed() -> float:
        return train_seconds + (time.monotonic() - start_time)

    valid_batches = None

    def run_validation(reason: str) -> dict[str, Any]:
        nonlocal best_valid, bad_validations, valid_batches
        if valid_batches is None:  # valid set is small: collate once, reuse
            valid_batches = list(_batches(valid_sampler, data.valid, dist.device))
        metrics = validate(
            model, valid_batches, loss_fn, bf16=cfg.bf16, dist=dist,
        )  # fmt: skip
        improved = metrics["valid_loss"] < best_valid
        if improved:
            best_valid = metrics["valid_loss"]
            bad_validations = 0
        else:
            bad_validations += 1
        record = {
            "kind": "valid",
            "step": step,
            "epoch": sampler_epoch(sampler),
            **metrics,
            "best_valid_loss": best_valid,
            "lr": scheduler.get_lr(),
            "elapsed": round(elapsed(), 3),
            "reason": reason,
        }
        if dist.is_main:
            ckpt = make_state()
            save_checkpoint(ckpt, last_path)
            if improved:
                save_checkpoint(ckpt, best_path)
        log(record)
        return record

    bar = _progress_bar(cfg, step, enabled=progress and dist.is_main)
    model.train()
    stop_reason = ""
    final: dict[str, Any] = {}
    interval = {
        "loss": 0.0,
        "nll_loss": 0.0,
        "ntokens": 0.0,
        "nsentences": 0.0,
        "t0": time.monotonic(),
    }
    last_validated_step = step if step > 0 else -1

    def budget_reason() -> str:
        if cfg.max_updates and step >= cfg.max_updates:
            return "max_updates"
        if cfg.max_minutes and elapsed() >= cfg.max_minutes * 60:
            return "max_minutes"
        if cfg.patience and bad_validations >= cfg.patience:
            return "patience"
        return ""

    def agreed(reason: str) -> str:
        """All ranks stop together (the wall clock differs between processes)."""
        if not dist.distributed:
            return reason
        flag = _all_reduce_sum([1.0 if reason else 0.0], dist)[0]
        return (reason or "max_minutes") if flag > 0 else ""

    stop_reason = agreed(budget_reason())
    while not stop_reason:
        if cfg.max_epochs and sampler_epoch(sampler) >= cfg.max_epochs:
            stop_reason = "max_epochs"
            break
        for batch in _batches(sampler, data.train, dist.device):
            stats = train_step(
                model, optimizer, batch, loss_fn, update=step, bf16=cfg.bf16,
                clip_norm=cfg.clip_norm,
                dist=dist,
            )  # fmt: skip
            step += 1
            scheduler.step_update(step)
            interval["loss"] += stats["loss"]
            interval["nll_loss"] += stats.get("nll_loss", math.nan)
            interval["ntokens"] += stats["ntokens"]
            interval["nsentences"] += stats["nsentences"]
            if bar is not None:
                bar.update(1)
            if step % cfg.log_every == 0:
                log(
                    _train_record(
                        interval, step, sampler_epoch(sampler), scheduler.get_lr(), elapsed(), dist
                    )
                )
                if bar is not None:
                    bar.set_postfix(
                        loss=f"{history[-1]['train_loss']:.3f}", lr=f"{scheduler.get_lr():.2e}"
                    )
                interval = {
                    "loss": 0.0,
                    "nll_loss": 0.0,
                    "ntokens": 0.0,
                    "nsentences": 0.0,
                    "t0": time.monotonic(),
                }
            if step % cfg.validate_every == 0:
                final = run_validation("interval")
                last_validated_step = step
            stop_reason = agreed(budget_reason())
            if stop_reason:
                break
        else:  # epoch finished
            if last_validated_step != step:
                final = run_validation("epoch_end")
                last_validated_step = step
            stop_reason = agreed(budget_reason())
    if last_validated_step != step or not final:
        final = run_validation(f"stop:{stop_reason}")
    if bar is not None:
        bar.close()
    runlog.close()
    _dump_params_for_tests(model, dist)
    if dist.distributed:
        torch.distributed.barrier()
    return TrainResult(
        run_dir=run_dir,
        best_checkpoint=best_path if best_path.is_file() else None,
        last_checkpoint=last_path,
        step=step,
        epoch=sampler_epoch(sampler),
        best_valid_loss=best_valid,
        final=final,
        history=history,
        stop_reason=stop_reason,
    )


def sampler_epoch(sampler: Any) -> int:
    """Completed epochs of the training sampler."""
    return int(sampler.epoch)


def _train_record(
    interval: dict[str, float], step: int, epoch: int, lr: float, elapsed: float, dist: DistInfo
) -> dict[str, Any]:
    loss, nll, ntok, nsent = _all_reduce_sum(
        [interval["loss"], interval["nll_loss"], interval["ntokens"], interval["nsentences"]], dist
    )
    seconds = max(time.monotonic() - interval["t0"], 1e-9)
    record = {
        "kind": "train",
        "step": step,
        "epoch": epoch,
        "train_loss": loss / max(ntok, 1.0),
        "lr": lr,
        "tokens_per_s": ntok / seconds,
        "sentences": int(nsent),
        "elapsed": round(elapsed, 3),
    }
    if math.isfinite(nll):
        record["train_nll_loss"] = nll / max(ntok, 1.0)
    return record


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
