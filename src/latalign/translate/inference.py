"""Translating and scoring with a trained run: the work behind ``latalign translate|evaluate``.

:func:`translate_lines` turns raw source sentences into detokenised translations with the
checkpoint of a run directory; :func:`evaluate_split` translates a split of the run's data (or
a source/reference file pair) and scores it. The CLI only parses arguments and calls these;
they can be imported and used the same way::

    from latalign.translate.inference import evaluate_split, translate_lines
    translate_lines(["ein Hund läuft ."], run_dir="runs/m30k", beam=5)
    evaluate_split(run_dir="runs/m30k", split="test")["bleu"]

Decoding options are checked by :class:`DecodingOptions` (``ValueError`` naming what was
expected and found) before anything is loaded. Devices: ``"auto"`` takes CUDA when available
and the CPU otherwise; int8 decoding runs on the CPU only (:func:`resolve_device`).

Input that is not clean text is handled the way a user of a line-oriented tool expects:

- :func:`split_input_lines`: bytes that are not UTF-8 become U+FFFD (``errors="replace"``) and
  the 1-based numbers of the lines that held them are returned for a warning;
- a source longer than the model's positions is truncated to fit
  (:class:`~latalign.translate.decode.SourceTruncatedWarning`, see
  :func:`~latalign.translate.decode.translate_sentences`); every line still gets exactly one
  translation, so the output stays line-aligned with the input.
"""

from __future__ import annotations

import math
import pickle
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "DecodingOptions",
    "default_bf16",
    "load_translator",
    "resolve_device",
    "split_input_lines",
    "evaluate_split",
    "translate_lines",
]


def resolve_device(name: str | torch.device = "auto", *, int8: bool = False) -> torch.device:
    """The device to decode on: ``auto`` (CUDA when available, else the CPU; always the CPU
    for int8), ``cpu``, ``cuda`` or ``cuda:N``.

    ``ValueError`` for another name, a CUDA device this machine does not have, or int8 on
    anything but the CPU (or without fbgemm kernels).
    """
    text = str(name)
    if text == "auto":
        device = torch.device("cpu" if int8 or not torch.cuda.is_available() else "cuda")
    else:
        try:
            device = torch.device(text)
        except RuntimeError:
            device = None
        if device is None or device.type not in ("cpu", "cuda"):
            raise ValueError(f"expected device auto, cpu, cuda or cuda:N; found {text!r}")
    if int8:
        from latalign.translate.quantize import check_int8_supported

        check_int8_supported(device)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = device.index or 0
        if index >= count:
            raise ValueError(
                f"expected a CUDA device for --device {text}; found {count} "
                "(torch.cuda.is_available() is "
                f"{torch.cuda.is_available()}; use --device cpu or auto)"
            )
    return device


def default_bf16(device: torch.device) -> bool:
    """The command line's ``--bf16`` default: on for a CUDA device that supports bfloat16, off
    on the CPU (on the project's AVX2 CPU bf16 autocast made beam search 3-5x slower)."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


@dataclass(frozen=True)
class DecodingOptions:
    """How to decode; validated on construction (``ValueError``).

    ``beam`` 1 is greedy decoding. Output length per sentence (tokens, without eos) is at most
    ``int(max_len_a * source tokens + max_len_b)`` and at least 1. ``lenpen``: beam search's
    length penalty exponent. ``bf16``: bfloat16 autocast on the decoding device. ``int8``: int8
    matrix products (CPU only, :mod:`latalign.translate.quantize`). ``device``: see
    :func:`resolve_device`. ``length_beam``: NAT runs with a length predictor (``ce``,
    ``axe``) decode this many predicted lengths and keep the best (None: the run's own,
    default 3); any other run refuses it (:func:`check_length_beam`).
    """

    beam: int = 5
    lenpen: float = 1.0
    max_len_a: float = 1.2
    max_len_b: int = 10
    batch_size: int = 64
    bf16: bool = False
    int8: bool = False
    device: str = "auto"
    length_beam: int | None = None

    def __post_init__(self) -> None:
        for name in ("beam", "batch_size", "length_beam"):
            value = getattr(self, name)
            if name == "length_beam" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"expected {name} >= 1; found {value!r}")
        if isinstance(self.max_len_b, bool) or not isinstance(self.max_len_b, int):
            raise ValueError(f"expected an integer max_len_b; found {self.max_len_b!r}")
        for name in ("lenpen", "max_len_a"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"expected a finite number for {name}; found {value!r}")
        if self.max_len_a < 0:
            raise ValueError(f"expected max_len_a >= 0; found {self.max_len_a!r}")

    def translate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~latalign.translate.decode.translate_sentences`."""
        d = asdict(self)
        return dict(
            beam=d["beam"], lenpen=d["lenpen"], max_len_a=d["max_len_a"],
            max_len_b=d["max_len_b"], batch_size=d["batch_size"], autocast_bf16=d["bf16"],
        )  # fmt: skip


def split_input_lines(data: bytes) -> tuple[list[str], list[int]]:
    """Lines of UTF-8 ``data`` (split at ``\\n`` only; a trailing ``\\r`` is dropped; no line
    after a final newline) and the 1-based numbers of the lines that were not valid UTF-8
    (their bad bytes became U+FFFD).

    Only ``\\n`` splits, unlike ``str.splitlines`` (which also splits at U+2028, form feeds,
    ...), so line *i* of the output always translates line *i* of the input.
    """
    raw = data.split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    lines: list[str] = []
    bad: list[int] = []
    for number, line in enumerate(raw, start=1):
        if line.endswith(b"\r"):
            line = line[:-1]
        try:
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(line.decode("utf-8", errors="replace"))
            bad.append(number)
    return lines, bad


def read_text_lines(path: str | Path) -> list[str]:
    """Lines of a UTF-8 file, split as :func:`split_input_lines` does; ``ValueError`` naming the
    file and first bad line if it is not UTF-8 (scores must not be computed on altered text)."""
    path = Path(path)
    lines, bad = split_input_lines(path.read_bytes())
    if bad:
        raise ValueError(
            f"expected UTF-8 text in {path}; found undecodable bytes on {len(bad)} line(s), "
            f"first line {bad[0]}"
        )
    return lines


def load_translator(
    run_dir: str | Path | None = None,
    checkpoint: str | Path | None = None,
    *,
    device: str | torch.device = "auto",
    int8: bool = False,
) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """``(model in eval mode on its device, tokenizer, checkpoint dict)`` of a run or checkpoint.

    ``FileNotFoundError`` for a missing run or checkpoint; ``ValueError`` for a bad device, a
    checkpoint that cannot be read (truncated, not a checkpoint) or a tokenizer that does not
    match. ``int8``: the returned model is :func:`~latalign.translate.quantize.quantize_int8`'s
    CPU copy.
    """
    from latalign.translate.checkpoint import load_model, resolve_checkpoint

    dev = resolve_device(device, int8=int8)  # before loading anything
    path = resolve_checkpoint(run_dir, checkpoint)
    try:
        model, tokenizer, state = load_model(None, path, device=dev)
    except (FileNotFoundError, ValueError, torch.OutOfMemoryError):
        raise
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile,
            KeyError, TypeError, AttributeError) as e:  # fmt: skip
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ValueError(
            f"expected a readable checkpoint at {path}; found a damaged or foreign file "
            f"({type(e).__name__}: {first})"
        ) from e
    if int8:
        from latalign.translate.quantize import quantize_int8

        model = quantize_int8(model)
    return model, tokenizer, state


def check_length_beam(model: torch.nn.Module, opts: DecodingOptions) -> None:
    """``ValueError`` when ``opts.length_beam`` is set for a run that has no length beam: an
    autoregressive run, or a NAT run that decodes at upsampled lengths (CTC, latent)."""
    if opts.length_beam is None:
        return
    if getattr(model, "arch", "ar") != "nat":
        raise ValueError(
            "expected a non-autoregressive run (--arch nat) for length_beam; found an "
            "autoregressive run, whose beam search sets the length"
        )
    if model.cfg.length != "predict":
        raise ValueError(
            "expected a NAT run with a length predictor (criterion ce or axe) for length_beam; "
            f"found one that decodes at {model.cfg.upsample} x the source length (criterion "
            "ctc or latent: no length to search)"
        )


def _translate(
    model: torch.nn.Module, tokenizer: Any, lines: Sequence[str], opts: DecodingOptions,
    progress: bool, train_config: dict[str, Any] | None = None,
) -> list[str]:  # fmt: skip
    """Decode as the run was trained: NAT runs in one pass, doubled-CTC runs with the doubled
    greedy decoder (CTC collapse of the doubled stream; beam options do not apply), delayed
    teacher forcing with its delayed inputs, every other run with the stack's beam search."""
    from latalign.translate.decode import translate_sentences
    from latalign.translate.regimes import decoding_model

    if getattr(model, "arch", "ar") == "nat":  # one pass, its own length rule (docs/nat.md)
        from latalign.translate.nat import nat_translate_sentences

        return nat_translate_sentences(
            model, tokenizer, list(lines), batch_size=opts.batch_size, progress=progress,
            length_beam=opts.length_beam,
        )  # fmt: skip
    if (train_config or {}).get("regime") == "doubled":
        from functools import partial

        from latalign.translate.doubled import doubled_greedy_decode

        decode = partial(doubled_greedy_decode, blank_id=tokenizer.blank_id)
        return translate_sentences(
            model, tokenizer, list(lines), progress=progress, batch_size=opts.batch_size,
            decode_batch=decode,
        )  # fmt: skip
    model = decoding_model(model, train_config)
    return translate_sentences(
        model, tokenizer, list(lines), progress=progress, **opts.translate_kwargs()
    )


def translate_lines(
    lines: Sequence[str],
    *,
    run_dir: str | Path | None = None,
    checkpoint: str | Path | None = None,
    beam: int = 5,
    lenpen: float = 1.0,
    max_len_a: float = 1.2,
    max_len_b: int = 10,
    batch_size: int = 64,
    bf16: bool = False,
    int8: bool = False,
    device: str = "auto",
    length_beam: int | None = None,
    progress: bool = False,
) -> list[str]:
    """Translate ``lines`` (raw source sentences) with a trained run; returns one detokenised
    hypothesis (ε removed) per line, in input order.

    Options as :class:`DecodingOptions` (checked before the model is loaded). A line longer
    than the model's positions is truncated to fit, with a
    :class:`~latalign.translate.decode.SourceTruncatedWarning` naming its index. ``int8``:
    decode with :func:`latalign.translate.quantize.quantize_int8` (CPU only).
    """
    opts = DecodingOptions(
        beam, lenpen, max_len_a, max_len_b, batch_size, bf16, int8, device, length_beam
    )
    model, tokenizer, state = load_translator(run_dir, checkpoint, device=device, int8=int8)
    check_length_beam(model, opts)
    return _translate(model, tokenizer, lines, opts, progress, state.get("train_config"))


def evaluate_split(
    *,
    run_dir: str | Path | None = None,
    checkpoint: str | Path | None = None,
    split: str = "test",
    source_file: str | Path | None = None,
    reference_file: str | Path | None = None,
    limit: int | None = None,
    beam: int = 5,
    lenpen: float = 1.0,
    max_len_a: float = 1.2,
    max_len_b: int = 10,
    batch_size: int = 64,
    bf16: bool = False,
    int8: bool = False,
    device: str = "auto",
    length_beam: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Translate a split of the run's data (``valid``, ``test`` or ``train``) or a
    source/reference file pair and score it: ``bleu`` (sacrebleu, with ``bleu_signature``),
    ``chrf``, ``empty_share``, ``length_ratio``, plus ``sentences``, ``split``, ``beam``,
    ``int8``. ``limit``: only the first ``limit`` sentences.

    ``ValueError`` (before decoding) for bad options, a missing or unequal file pair, files
    that are not UTF-8, an unknown split; ``FileNotFoundError`` for a missing run or data.
    """
    from latalign.translate.metrics import evaluate_translations

    opts = DecodingOptions(
        beam, lenpen, max_len_a, max_len_b, batch_size, bf16, int8, device, length_beam
    )
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"expected limit >= 1 or None; found {limit!r}")
    if (source_file is None) != (reference_file is None):
        raise ValueError("expected both --source and --reference, or neither; found one")
    if source_file is None and split not in ("valid", "test", "train"):
        raise ValueError(f"expected split valid, test or train; found {split!r}")
    sources: list[str] = []
    refs: list[str] = []
    if source_file is not None and reference_file is not None:
        sources, refs = read_text_lines(source_file), read_text_lines(reference_file)
        if len(sources) != len(refs):
            raise ValueError(
                f"expected as many references as sources ({len(sources)}); found {len(refs)}"
            )
        if not sources:
            raise ValueError(f"expected at least one sentence in {source_file}; found none")
        name = str(source_file)
    model, tokenizer, state = load_translator(run_dir, checkpoint, device=device, int8=int8)
    check_length_beam(model, opts)
    if source_file is None:
        from latalign.translate.data import load_corpora
        from latalign.translate.train import TrainConfig

        if not isinstance(state.get("train_config"), dict):
            raise ValueError(
                "expected the run's training configuration in the checkpoint (to find its "
                "data); found none: use --source and --reference"
            )
        cfg = TrainConfig.from_dict(state["train_config"])
        splits, _ = load_corpora(cfg.data)
        sources, refs = list(splits[split].src), list(splits[split].tgt)
        name = split
    if limit is not None:
        sources, refs = sources[:limit], refs[:limit]
    hyps = _translate(model, tokenizer, sources, opts, progress, state.get("train_config"))
    scores = dict(evaluate_translations(hyps, refs))
    scores.update({"split": name, "sentences": len(hyps), "beam": beam, "int8": int8})
    if length_beam is not None:
        scores["length_beam"] = length_beam
    return scores
