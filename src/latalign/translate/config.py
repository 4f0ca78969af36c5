"""Model configuration for the translation transformer.

`ModelConfig` holds the architecture only (no optimiser or data settings). Presets:

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # fairseq transformer_iwslt_de_en (+ --dropout 0.3 --share-decoder-input-output-embed)
    "paper": dict(
        encoder_layers=6,
        decoder_layers=6,
        d_model=512,
        ffn_dim=1024,
        heads=4,
        dropout=0.3,
        attention_dropout=0.0,
        activation_dropout=0.0,
        share_all_embeddings=False,
        share_decoder_input_output_embed=True,
    ),
    "small": dict(
        encoder_layers=3,
        decoder_layers=3,
        d_model=256,
        ffn_dim=1024,
        heads=4,
        dropout=0.3,
        attention_dropout=0.0,
        activation_dropout=0.0,
        share_all_embeddings=True,
        share_decoder_input_output_embed=True,
    ),
    "tiny": dict(
        encoder_layers=2,
        decoder_layers=2,
        d_model=64,
        ffn_dim=256,
        heads=4,
        dropout=0.1,
        attention_dropout=0.0,
        activation_dropout=0.0,
        share_all_embeddings=True,
        share_decoder_input_output_embed=True,
    ),
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
