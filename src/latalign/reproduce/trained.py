"""The reproduction's one door to a trained run: load it (:func:`load_trained`), decode with
it as it was trained (:func:`translate`), feed it gold inputs as it sees them
(:func:`validation_inputs`), and distil a corpus with it (:func:`distill_training_set`).

Every experiment, cell and group of ``latalign reproduce`` loads and decodes runs through
these functions (and picks checkpoints with :func:`last_checkpoint` / :func:`best_checkpoint`)
and nothing else of the translation stack's inference code, so how a
run decodes is decided here, once: a NAT run in one pass (its length beam or the CTC
collapse), a doubled-CTC run with the doubled greedy decoder (``beam`` does not apply), a
delayed-teacher-forcing run through its delayed inputs, every other run with the stack's
beam search (``beam`` 1 = greedy). Models are loaded on the CPU in eval mode.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from latalign.translate.checkpoint import checkpoint_paths, load_model, resolve_checkpoint
from latalign.translate.decode import translate_sentences
from latalign.translate.distill import distill
from latalign.translate.doubled import double_inputs, doubled_greedy_decode
from latalign.translate.nat import nat_translate_sentences
from latalign.translate.regimes import decoding_model, evaluation_inputs, regime_config
from latalign.translate.tokenizer import Tokenizer


@dataclass(frozen=True)
class Trained:
    """A trained run as loaded from one checkpoint.

    Attributes:
        model: the model, eval mode, on the CPU.
        tokenizer: the run's tokenizer (its fingerprint checked against the checkpoint's).
        train_config: the ``TrainConfig`` it was trained with, as a dict.
        arch: ``ar``, ``nat``, ``ar_aux_ctc``, …
        step: updates done when the checkpoint was written.
        checkpoint: the checkpoint file.
    """

    model: torch.nn.Module
    tokenizer: Tokenizer
    train_config: dict[str, Any]
    arch: str
    step: int
    checkpoint: Path


def last_checkpoint(run_dir: str | Path) -> Path:
    """The run's ``checkpoint_last.pt`` (the state at the end of training)."""
    return checkpoint_paths(run_dir)[0]


def best_checkpoint(run_dir: str | Path) -> Path:
    """The checkpoint ``latalign evaluate`` uses: the run's best, else its last."""
    return resolve_checkpoint(run_dir=run_dir)


def load_trained(checkpoint: str | Path) -> Trained:
    """The run saved in ``checkpoint`` (its tokenizer from the run directory)."""
    model, tokenizer, state = load_model(checkpoint=checkpoint)
    return Trained(
        model=model,
        tokenizer=tokenizer,
        train_config=dict(state.get("train_config") or {}),
        arch=str(state.get("arch", "ar")),
        step=int(state.get("step", 0)),
        checkpoint=Path(checkpoint),
    )


def translate(run: Trained, lines: Sequence[str], *, beam: int, batch_size: int) -> list[str]:
    """One detokenised hypothesis (ε removed) per source line, decoded as ``run`` was trained
    (see the module docstring), in batches of ``batch_size`` sentences."""
    if run.arch == "nat":
        return nat_translate_sentences(run.model, run.tokenizer, list(lines), batch_size=batch_size)
    if run.train_config.get("regime") == "doubled":
        decode = partial(doubled_greedy_decode, blank_id=run.tokenizer.blank_id)
        return translate_sentences(
            run.model, run.tokenizer, list(lines), batch_size=batch_size, decode_batch=decode
        )
    model = decoding_model(run.model, run.train_config)
    return translate_sentences(model, run.tokenizer, list(lines), beam=beam, batch_size=batch_size)


def validation_inputs(run: Trained, prev_output_tokens: torch.Tensor) -> torch.Tensor:
    """The (B, T) decoder input that gold ``prev_output_tokens`` (``bos y_1 … y_n``, B × T)
    become for ``run`` at inference time: ``bos bos y_1 y_1 …`` (B × 2T) for doubled CTC,
    the delayed input for delayed teacher forcing, the tokens themselves for every other
    regime."""
    if run.train_config.get("regime") == "doubled":
        return double_inputs(prev_output_tokens)
    regime = regime_config(types.SimpleNamespace(**run.train_config))
    return evaluation_inputs(regime, prev_output_tokens)


def distill_training_set(
    teacher: Path,
    data_dir: Path,
    out: Path,
    *,
    src: str,
    tgt: str,
    beam: int,
    batch_size: int,
    limit: int | None,
    progress: bool,
) -> None:
    """Write ``teacher``'s beam translations of the first ``limit`` (None: all) training
    pairs of ``data_dir`` as the data directory ``out`` (reused when finished)."""
    distill(None, data_dir, out, checkpoint=teacher, src=src, tgt=tgt, beam=beam,
            batch_size=batch_size, limit=limit, progress=progress)  # fmt: skip
