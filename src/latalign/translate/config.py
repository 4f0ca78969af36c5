"""The configurations of the translation stack: what a run trains and how.

- :class:`ModelConfig`: the transformer's architecture (no optimiser or data settings);
- :class:`DataConfig`: what to translate (a data directory or the synthetic corpus);
- :class:`TrainConfig`: a whole training run (arch, regime, criterion and their options,
  optimiser, budgets, devices), validated once on construction: every field, and the
  combination arch x regime x criterion x options against
  :mod:`latalign.translate.registry`;
- :func:`read_config_file`: the one reader of TOML/JSON/YAML config files.

ModelConfig presets:

- ``paper``: fairseq's ``transformer_iwslt_de_en`` as used in the paper (6+6 post-norm layers,
  d=512, FFN 1024, 4 heads, dropout 0.3, decoder input/output embeddings tied, separate
  encoder embedding).
- ``small``: a CPU-sized model (3+3 layers, d=256, FFN 1024, 4 heads, dropout 0.3, all
  embeddings shared: encoder input = decoder input = output projection).
- ``tiny``: for tests and quick runs (2+2 layers, d=64, FFN 256, 4 heads, dropout 0.1).

Output tying matters for the paper's collapse analysis: set
``share_decoder_input_output_embed=False`` (or pass ``tie_output=False`` to :meth:`preset`) to
give the model its own output projection. ``share_all_embeddings`` only ties the encoder
input embedding to the decoder input embedding; the two flags are independent.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latalign.align.objective import Objective
from latalign.translate.registry import get_arch, get_criterion, get_regime

#: The presets as a table: these fields per preset, every preset with attention and activation
#: dropout 0 and the decoder input/output embeddings tied. ``paper``: fairseq's
#: transformer_iwslt_de_en (+ --dropout 0.3 --share-decoder-input-output-embed).
_PRESET_FIELDS = ("encoder_layers", "decoder_layers", "d_model", "ffn_dim", "heads", "dropout",
                  "share_all_embeddings")  # fmt: skip
PRESETS: dict[str, dict[str, Any]] = {
    name: dict(
        zip(_PRESET_FIELDS, row),
        attention_dropout=0.0,
        activation_dropout=0.0,
        share_decoder_input_output_embed=True,
    )  # fmt: skip
    for name, row in {
        "paper": (6, 6, 512, 1024, 4, 0.3, False),
        "small": (3, 3, 256, 1024, 4, 0.3, True),
        "tiny": (2, 2, 64, 256, 4, 0.1, True),
    }.items()
}


@dataclass
class ModelConfig:
    """Architecture of the encoder-decoder transformer.

    Defaults are the ``paper`` preset except ``vocab_size`` (required).
    """

    vocab_size: int
    encoder_layers: int = 6
    decoder_layers: int = 6
    d_model: int = 512  # model (embedding) dimension
    ffn_dim: int = 1024  # hidden size of the position-wise feed-forward block
    heads: int = 4
    dropout: float = 0.3  # after embeddings, attention outputs and FFN outputs
    attention_dropout: float = 0.0  # on attention weights
    activation_dropout: float = 0.0  # after the FFN ReLU
    share_all_embeddings: bool = False  # encoder input embedding == decoder input embedding
    share_decoder_input_output_embed: bool = True  # output projection == decoder input embedding
    max_positions: int = 1024  # longest source / target sequence (tokens, incl. bos/eos)
    pad_id: int = 0
    normalize_before: bool = False  # False: post-norm (fairseq transformer_iwslt_de_en)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "encoder_layers", "decoder_layers", "d_model", "ffn_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"expected {name} to be a positive int, found {value!r}")
        if not isinstance(self.heads, int) or self.heads < 1:
            raise ValueError(f"expected heads to be a positive int, found {self.heads!r}")
        if self.d_model % self.heads != 0:
            raise ValueError(
                f"expected d_model divisible by heads, found d_model={self.d_model}, "
                f"heads={self.heads}"
            )
        if self.d_model % 2 != 0:
            raise ValueError(f"expected an even d_model (sinusoids), found {self.d_model}")
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 <= float(value) < 1.0:
                raise ValueError(f"expected {name} in [0, 1), found {value!r}")
        if not isinstance(self.max_positions, int) or self.max_positions < 2:
            raise ValueError(f"expected max_positions >= 2, found {self.max_positions!r}")
        if not isinstance(self.pad_id, int) or not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(
                f"expected pad_id in [0, vocab_size={self.vocab_size}), found {self.pad_id!r}"
            )

    @classmethod
    def preset(cls, name: str, vocab_size: int, **overrides: Any) -> ModelConfig:
        """Build a preset (``paper``, ``small``, ``tiny``) with optional field overrides.

        ``tie_output=False`` is accepted as a readable alias for
        ``share_decoder_input_output_embed=False``.
        """
        if name not in PRESETS:
            raise ValueError(f"expected a preset in {sorted(PRESETS)}, found {name!r}")
        if "tie_output" in overrides:
            overrides["share_decoder_input_output_embed"] = bool(overrides.pop("tie_output"))
        fields = {**PRESETS[name], **overrides}
        return cls(vocab_size=vocab_size, **fields)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a dict; a ``preset`` key selects a preset the other keys override."""
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)} | {"preset", "tie_output"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"expected ModelConfig fields, found unknown keys {unknown}")
        if "vocab_size" not in data:
            raise ValueError("expected a 'vocab_size' key, found none")
        preset = data.pop("preset", None)
        vocab_size = data.pop("vocab_size")
        if preset is not None:
            return cls.preset(preset, vocab_size, **data)
        if "tie_output" in data:
            data["share_decoder_input_output_embed"] = bool(data.pop("tie_output"))
        return cls(vocab_size=vocab_size, **data)

    @classmethod
    def from_file(cls, path: str | Path) -> ModelConfig:
        """Read a config file (:func:`read_config_file`): the fields at top level or under a
        ``[model]`` table."""
        data = read_config_file(path)
        if "model" in data and isinstance(data["model"], dict):
            data = data["model"]
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """All fields as a plain dict (``ModelConfig(**cfg.to_dict())`` round-trips)."""
        return dataclasses.asdict(self)

    @property
    def tie_output(self) -> bool:
        """Whether the output projection is the decoder input embedding."""
        return self.share_decoder_input_output_embed


CONFIG_SUFFIXES = (".toml", ".json", ".yaml", ".yml")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a TOML, JSON or YAML (needs pyyaml) config file — the one reader of
    config files (``TrainConfig.from_file``, ``ModelConfig.from_file``, ``latalign train
    --config``). ``ValueError`` (one line naming the file) on a missing file, another suffix,
    a syntax error, or a top level that is not a mapping."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in CONFIG_SUFFIXES:
        raise ValueError(f"expected a .toml, .json, .yaml or .yml config; found {path.name!r}")
    if not path.is_file():
        raise ValueError(
            f"expected a .toml, .json, .yaml or .yml config file at {path}; found none"
        )
    try:
        if suffix == ".toml":
            with path.open("rb") as f:
                data = tomllib.load(f)
        elif suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
        else:
            if importlib.util.find_spec("yaml") is None:
                raise ValueError(
                    f"expected pyyaml to be installed to read {path}, found it missing "
                    "(pip install pyyaml, or use a .toml file)"
                )
            import yaml

            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(
            f"expected a valid {suffix[1:]} file at {path}; found an error: {e}"
        ) from None
    except Exception as e:  # yaml.YAMLError without importing yaml up front
        if type(e).__module__.startswith("yaml"):
            raise ValueError(f"expected a valid YAML file at {path}; found an error: {e}") from None
        raise
    if not isinstance(data, dict):
        raise ValueError(f"expected a mapping in {path}; found {type(data).__name__}")
    return data


@dataclass
class DataConfig:
    """What to translate. Validated on construction (``ValueError`` on bad values)."""

    data: str | None = None  # data directory; None -> the built-in synthetic corpus
    src: str = "de"  # source language suffix of the files (ignored for synthetic: "syn")
    tgt: str = "en"  # target language suffix (ignored for synthetic: "en")
    train_prefix: str = "train"
    valid_prefix: str = "valid"  # default absent -> val/dev/validation (see detect_splits)
    test_prefix: str = "test"  # default absent -> test_2016_flickr/tst
    vocab_size: int = 8000  # joint BPE pieces (upper bound), 5 special ids included
    max_positions: int = 256  # max collated length (tokens + eos); longer train pairs dropped
    synthetic_size: int = 20000  # train pairs of the synthetic corpus
    synthetic_eval_size: int = 500  # valid and test pairs (each) of the synthetic corpus
    synthetic_seed: int = 0
    train_limit: int | None = None  # use only the first K training pairs

    def __post_init__(self) -> None:
        for name in ("src", "tgt", "train_prefix", "valid_prefix", "test_prefix"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or "/" in value:
                raise ValueError(f"expected {name} to be a non-empty name, found {value!r}")
        if self.data is not None and self.src == self.tgt:
            raise ValueError(f"expected different src and tgt languages, found {self.src!r} twice")
        if not isinstance(self.vocab_size, int) or self.vocab_size < 16:
            raise ValueError(f"expected vocab_size >= 16, found {self.vocab_size!r}")
        if not isinstance(self.max_positions, int) or self.max_positions < 2:
            raise ValueError(f"expected max_positions >= 2, found {self.max_positions!r}")
        for name in ("synthetic_size", "synthetic_eval_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"expected {name} >= 1, found {value!r}")
        if self.train_limit is not None and (
            not isinstance(self.train_limit, int) or self.train_limit < 1
        ):
            raise ValueError(f"expected train_limit None or >= 1, found {self.train_limit!r}")


# --------------------------------------------------------------------------- TrainConfig

#: Criterion options exposed as TrainConfig fields (None = the criterion's default).
OPTION_FIELDS = ("delta", "operators", "aggregate", "causal", "epsilon")
#: Arch and regime options (None = the default of the arch or regime that reads it: its
#: ``options`` in :mod:`latalign.translate.registry`). Setting one the run's arch and regime
#: do not read is a config error.
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
    """A dataclass field with a ``help`` text (the CLI's flags are generated from them)."""
    if isinstance(default, (list, dict, tuple)) or callable(default):
        factory = default if callable(default) else (lambda d=default: type(d)(d))
        return field(default_factory=factory, metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class TrainConfig:
    """Everything a training run needs; validated on construction (``ValueError``).

    Load with :meth:`from_file` (TOML or YAML; a ``[data]`` table for :class:`DataConfig`,
    a ``[model]`` table for preset overrides) and :meth:`from_dict`; :meth:`to_dict`
    round-trips through JSON. ``arch``, ``regime`` and ``criterion`` name entries of
    :mod:`latalign.translate.registry`; their options are the fields of
    :data:`OPTION_FIELDS` and :data:`PLUGIN_OPTION_FIELDS` (None: the default of whoever
    reads it, :meth:`option`).
    """

    run_dir: str = _f("runs/default", "run directory (config, tokenizer, checkpoints, log)")
    data: DataConfig = _f(DataConfig, "data settings (see DataConfig)")
    preset: str = _f("small", "model preset: paper, small or tiny")
    model: dict[str, Any] = _f({}, "ModelConfig field overrides of the preset")
    arch: str = _f("ar", "architecture")
    regime: str = _f("teacher_forcing", "decoder-input regime of an autoregressive arch")
    criterion: str = _f("ce", "training criterion")
    delta: float | None = _f(None, "AXE clone_prediction weight (axe, causal_axe)")
    operators: tuple[str, ...] | None = _f(None, "latent: operators, comma separated")
    aggregate: str | None = _f(None, "latent: sum (forward-backward) or max (Viterbi)")
    causal: bool | None = _f(None, "latent: causal restriction (p_j scores y_i only if i >= j)")
    epsilon: float | None = _f(None, "label_smoothed_ce: smoothing")
    # -- arch / regime options (PLUGIN_OPTION_FIELDS; None = the plugin's default) --
    upsample: int | None = _f(None, "decoder positions per source token (nat ctc/latent) or "
                              "encoder state copies of the auxiliary CTC (ar_aux_ctc)")  # fmt: skip
    length_loss_weight: float | None = _f(None, "nat: weight of the length loss")
    length_beam: int | None = _f(None, "nat: lengths decoded at inference")
    nat_input: str | None = _f(None, "nat: decoder input, copy (source embeddings) or mask")
    glat_ratio: float | None = _f(
        None, "nat: glancing training, reference shown at ratio x distance positions (in [0, 1])"
    )
    glat_ratio_end: float | None = _f(None, "nat: glancing ratio at the schedule's end (linear)")
    glat_updates: int | None = _f(None, "nat: updates of the glancing schedule (max_updates)")
    aux_ctc_weight: float | None = _f(None, "ar_aux_ctc: weight of the CTC on encoder states")
    schedule: str | None = _f(None, "scheduled sampling: constant, linear or inverse_sigmoid")
    schedule_updates: int | None = _f(None, "scheduled sampling: updates of the schedule")
    regime_p: float | None = _f(None, "regime probability (corruption p, sampling p) in [0, 1]")
    temperature: float | None = _f(None, "free running: sampling temperature (0 = greedy)")
    delay: int | None = _f(None, "delayed teacher forcing: position j is fed y_(j-k)")
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
        "support bf16, off on the CPU (slower there; benchmarks/bench_train.py measures it)",
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
        if self.preset not in PRESETS:
            raise ValueError(
                f"expected a preset in {{{', '.join(PRESETS)}}}; found {self.preset!r}"
            )
        try:  # catch bad model overrides now, before data preparation (vocab size unknown yet)
            ModelConfig.preset(self.preset, 1024, **dict(self.model))
        except TypeError as e:
            raise ValueError(f"expected ModelConfig fields in model overrides; found {e}") from None
        check_combination(self)
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

    def criterion_options(self) -> dict[str, Any]:
        """The criterion options that were set (the others take the criterion's defaults)."""
        return {k: getattr(self, k) for k in OPTION_FIELDS if getattr(self, k) is not None}

    def option(self, name: str) -> Any:
        """The value of arch/regime option ``name`` (a field of :data:`PLUGIN_OPTION_FIELDS`):
        the field when set, else the default of the run's arch or regime that reads it
        (``ValueError`` if neither does)."""
        value = getattr(self, name)
        if value is not None:
            return value
        for entry in (get_arch(self.arch), get_regime(self.regime)):
            if name in entry.options:
                return entry.options[name]
        raise ValueError(
            f"expected an option of arch {self.arch!r} or regime {self.regime!r}; found {name!r}"
        )

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


def check_combination(cfg: TrainConfig) -> None:
    """One validation of arch x regime x criterion x options; ``ValueError`` naming the
    offending value. Called by ``TrainConfig.__post_init__``."""
    criterion = get_criterion(cfg.criterion)  # ValueError listing the known names
    options = cfg.criterion_options()
    unknown = sorted(set(options) - set(criterion.options))
    if unknown:
        raise ValueError(
            f"expected options of criterion {criterion.name!r} among "
            f"{sorted(criterion.options) or 'none'}; found {unknown}"
        )
    if criterion.name == "latent":  # the library's own validation of an objective
        opts = {**criterion.options, **options}
        Objective.make(opts["operators"], opts["aggregate"], opts["weights"], opts["causal"])
    arch = get_arch(cfg.arch)
    regime = get_regime(cfg.regime)
    if arch.criteria is not None and cfg.criterion not in arch.criteria:
        raise ValueError(
            f"expected a criterion of arch {arch.name!r} among {sorted(arch.criteria)}; "
            f"found {cfg.criterion!r}"
        )
    if criterion.archs is not None and cfg.arch not in criterion.archs:
        raise ValueError(
            f"expected an arch among {sorted(criterion.archs)} for criterion "
            f"{criterion.name!r}; found {cfg.arch!r}"
        )
    if arch.regimes is not None and cfg.regime not in arch.regimes:
        raise ValueError(
            f"expected a regime of arch {arch.name!r} among {sorted(arch.regimes)}; "
            f"found {cfg.regime!r}"
        )
    if criterion.layout != regime.layout:
        raise ValueError(
            f"expected criterion {cfg.criterion!r} with a regime of layout "
            f"{criterion.layout!r}; found regime {cfg.regime!r} ({regime.layout!r})"
        )
    used = set(arch.options) | set(regime.options)
    unused = sorted(
        name for name in PLUGIN_OPTION_FIELDS if name not in used and getattr(cfg, name) is not None
    )
    if unused:
        raise ValueError(
            f"expected options of arch {arch.name!r} and regime {regime.name!r} among "
            f"{sorted(used) or 'none'}; found {unused}"
        )
    if arch.check is not None:
        arch.check(cfg)
    if regime.check is not None:
        regime.check(cfg)


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
