"""A trained run as one object: :func:`load_run` reads a checkpoint once and returns a
:class:`TrainedRun` (model, tokenizer, training configuration, arch), which alone decides how
the run decodes (:meth:`TrainedRun.translate`): beam search or greedy for an autoregressive
run, through its regime's own decoder when it has one (delayed inputs, the doubled layout),
the length beam or the CTC collapse for a NAT run (:attr:`~latalign.translate.registry.Arch
.decoder`). ``latalign translate``, ``evaluate`` and ``distill`` and the benchmarks decode
through it::

    from latalign.translate.decode import SearchOptions
    from latalign.translate.run import evaluate, load_run
    run = load_run("runs/m30k")                  # its best checkpoint (else the last)
    run.translate(["ein Hund läuft ."], SearchOptions(beam=5))
    evaluate(run, split="test")["bleu"]

Input that is not clean text is handled the way a user of a line-oriented tool expects:

- :func:`split_input_lines`: bytes that are not UTF-8 become U+FFFD (``errors="replace"``) and
  the 1-based numbers of the lines that held them are returned for a warning;
- a source longer than the model's positions is truncated to fit
  (:class:`~latalign.translate.decode.SourceTruncatedWarning`, see
  :func:`~latalign.translate.decode.translate_sentences`); every line still gets exactly one
  translation, so the output stays line-aligned with the input.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from latalign.translate.checkpoint import find_tokenizer_dir, load_checkpoint, resolve_checkpoint
from latalign.translate.config import TrainConfig
from latalign.translate.data import load_corpora
from latalign.translate.decode import BatchDecoder, SearchOptions, translate_sentences
from latalign.translate.device import model_device
from latalign.translate.metrics import evaluate_translations
from latalign.translate.quantize import quantize_int8
from latalign.translate.registry import Arch, get_arch, get_regime
from latalign.translate.tokenizer import Tokenizer

__all__ = ["TrainedRun", "evaluate", "load_run", "read_text_lines", "split_input_lines"]


@dataclass
class TrainedRun:
    """A trained model with what it was trained with.

    ``model``: in eval mode; ``tokenizer``: the run's; ``config``: its
    :class:`~latalign.translate.config.TrainConfig` (the one record of its arch, regime,
    criterion and options); ``checkpoint``: the file it came from (None for a model built in
    memory); ``step``: updates done.
    """

    model: nn.Module
    tokenizer: Any
    config: TrainConfig
    checkpoint: Path | None = None
    step: int = 0
    _int8: nn.Module | None = field(default=None, init=False, repr=False)

    @property
    def arch(self) -> Arch:
        return get_arch(self.config.arch)

    def batch_decoder(self, options: SearchOptions | None = None) -> BatchDecoder:
        """How this run decodes a batch with ``options`` (its arch decides, see the module
        docstring); :class:`~latalign.translate.decode.OptionError` for an option the run
        cannot honour (``length_beam`` of an autoregressive or CTC run)."""
        return self.arch.decoder(self.config, self.tokenizer, options or SearchOptions())

    def decoding_model(self, options: SearchOptions | None = None) -> nn.Module:
        """The model placed as ``options`` say: on its device (the run's model moves there),
        or the int8 copy (:func:`~latalign.translate.quantize.quantize_int8`, made once)."""
        options = options or SearchOptions()
        device, _ = options.placement()
        if options.int8:
            if self._int8 is None:
                self._int8 = quantize_int8(self.model.to(device))
            return self._int8
        if model_device(self.model) != device:
            self.model.to(device)
        return self.model

    def translate(
        self,
        lines: Sequence[str],
        options: SearchOptions | None = None,
        *,
        progress: Callable[[int], None] | bool | None = None,
    ) -> list[str]:
        """Translate raw source sentences as the run was trained to be decoded; one
        detokenised hypothesis (ε removed) per line, in input order. ``progress``: a callable
        given the sentences just finished, or True for tqdm."""
        options = options or SearchOptions()
        _, bf16 = options.placement()
        decode = self.batch_decoder(replace(options, bf16=bf16))
        return translate_sentences(
            self.decoding_model(options), self.tokenizer, list(lines),
            batch_size=options.batch_size, progress=progress, decode_batch=decode,
        )  # fmt: skip

    def validation_inputs(self, batch: Any) -> Tensor:
        """The decoder input the run's regime feeds ``batch`` in validation: what inference
        feeds, with gold tokens (delayed, doubled or plain ``prev_output_tokens``)."""
        regime = get_regime(self.config.regime).make(self.config, self.tokenizer)
        return regime(self.model, batch, update=None)


def load_run(source: str | Path, *, device: str | torch.device = "cpu") -> TrainedRun:
    """The run of a run directory (its ``checkpoint_best.pt``, else ``checkpoint_last.pt``) or
    of a checkpoint file, its model in eval mode on ``device``.

    ``FileNotFoundError`` for a missing run or checkpoint; ``ValueError`` for a checkpoint
    that cannot be read (truncated, not a checkpoint of this stack) or a tokenizer that does
    not match the one the model was trained with.
    """
    source = Path(source)
    path = resolve_checkpoint(run_dir=source) if source.is_dir() else resolve_checkpoint(
        checkpoint=source
    )  # fmt: skip
    state = load_checkpoint(path, map_location="cpu")
    try:
        config = TrainConfig.from_dict(state["train_config"])
        model = get_arch(config.arch).load(state["model_config"])
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError, AttributeError, EOFError, OSError,
            pickle.UnpicklingError, zipfile.BadZipFile) as e:  # fmt: skip
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ValueError(
            f"expected a readable checkpoint at {path}; found a damaged or foreign file "
            f"({type(e).__name__}: {first})"
        ) from e
    folder = find_tokenizer_dir(path, state)
    tokenizer = Tokenizer.load(folder)
    fingerprint = state.get("tokenizer")
    if fingerprint and tokenizer.fingerprint != fingerprint:
        raise ValueError(
            f"expected the tokenizer the model was trained with ({fingerprint[:12]}); "
            f"found {tokenizer.fingerprint[:12]} in {folder}"
        )
    return TrainedRun(model.to(device).eval(), tokenizer, config, path, int(state.get("step", 0)))


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


def read_pair(source_file: str | Path, reference_file: str | Path) -> tuple[list[str], list[str]]:
    """Sources and references of a file pair; ``ValueError`` unless both are UTF-8, equally
    long and not empty."""
    sources, refs = read_text_lines(source_file), read_text_lines(reference_file)
    if len(sources) != len(refs):
        raise ValueError(
            f"expected as many references as sources ({len(sources)}); found {len(refs)}"
        )
    if not sources:
        raise ValueError(f"expected at least one sentence in {source_file}; found none")
    return sources, refs


def evaluate(
    run: TrainedRun,
    *,
    split: str = "test",
    source_file: str | Path | None = None,
    reference_file: str | Path | None = None,
    limit: int | None = None,
    options: SearchOptions | None = None,
    progress: Callable[[int], None] | bool | None = None,
) -> dict[str, Any]:
    """Translate a split of the run's data (``valid``, ``test`` or ``train``) or a
    source/reference file pair and score it: ``bleu`` (sacrebleu, with ``bleu_signature``),
    ``chrf``, ``empty_share``, ``length_ratio``, plus ``sentences``, ``split``, ``beam``,
    ``int8`` (and ``length_beam`` when given). ``limit``: only the first ``limit`` sentences.

    ``ValueError`` (before decoding) for bad options, a missing or unequal file pair, files
    that are not UTF-8, an unknown split; ``FileNotFoundError`` for missing data.
    """
    options = options or SearchOptions()
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"expected limit >= 1 or None; found {limit!r}")
    if (source_file is None) != (reference_file is None):
        raise ValueError("expected both --source and --reference, or neither; found one")
    if source_file is None and split not in ("valid", "test", "train"):
        raise ValueError(f"expected split valid, test or train; found {split!r}")
    run.batch_decoder(options)  # an option the run refuses: before any data is read
    if source_file is not None and reference_file is not None:
        sources, refs = read_pair(source_file, reference_file)
        name = str(source_file)
    else:
        splits, _ = load_corpora(run.config.data)
        sources, refs = list(splits[split].src), list(splits[split].tgt)
        name = split
    if limit is not None:
        sources, refs = sources[:limit], refs[:limit]
    hyps = run.translate(sources, options, progress=progress)
    scores = dict(evaluate_translations(hyps, refs))
    scores.update({"split": name, "sentences": len(hyps), "beam": options.beam,
                   "int8": options.int8})  # fmt: skip
    if options.length_beam is not None:
        scores["length_beam"] = options.length_beam
    return scores
