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

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from latalign.translate.batching import Batch
from latalign.translate.checkpoint import checkpoint_paths, resolve_checkpoint
from latalign.translate.decode import SearchOptions
from latalign.translate.distill import distill
from latalign.translate.run import TrainedRun, load_run
from latalign.translate.tokenizer import Tokenizer


@dataclass(frozen=True)
class Trained:
    """A trained run as loaded from one checkpoint (the stack's
    :class:`~latalign.translate.run.TrainedRun`, with its config as a dict for the records).

    Attributes:
        run: the stack's trained run (it alone decides how the run decodes).
        model: the model, eval mode, on the CPU.
        tokenizer: the run's tokenizer (its fingerprint checked against the checkpoint's).
        train_config: the ``TrainConfig`` it was trained with, as a dict.
        arch: ``ar``, ``nat``, ``ar_aux_ctc``, …
        step: updates done when the checkpoint was written.
        checkpoint: the checkpoint file.
    """

    run: TrainedRun
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
    run = load_run(checkpoint)
    return Trained(
        run=run,
        model=run.model,
        tokenizer=run.tokenizer,
        train_config=run.config.to_dict(),
        arch=run.config.arch,
        step=run.step,
        checkpoint=Path(checkpoint),
    )


def _search(beam: int, batch_size: int) -> SearchOptions:
    # the reproduction decodes on the CPU in float32, whatever the machine
    return SearchOptions(beam=beam, batch_size=batch_size, bf16=False)


def translate(run: Trained, lines: Sequence[str], *, beam: int, batch_size: int) -> list[str]:
    """One detokenised hypothesis (ε removed) per source line, decoded as ``run`` was trained
    (:meth:`TrainedRun.translate`), in batches of ``batch_size`` sentences."""
    return run.run.translate(list(lines), _search(beam, batch_size))


def validation_inputs(run: Trained, batch: Batch) -> torch.Tensor:
    """The decoder input that ``batch``'s gold ``prev_output_tokens`` become for ``run``:
    doubled for doubled CTC, delayed for delayed teacher forcing, the tokens themselves for
    every other regime (:meth:`TrainedRun.validation_inputs`)."""
    return run.run.validation_inputs(batch)


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
    distill(teacher, data_dir, out, options=_search(beam, batch_size), src=src, tgt=tgt,
            limit=limit, progress=progress)  # fmt: skip
