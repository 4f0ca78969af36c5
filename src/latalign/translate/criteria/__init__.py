"""Training criteria: a pure loss function per file, wired together by an explicit registry.

A criterion is called as ``criterion(logits, batch, blank_id, pad_id, **options)`` with
logits (B, T, V) from teacher forcing and returns ``(loss_sum, stats)``: ``loss_sum`` is
a 0-dim tensor, the sum over sentences/tokens in nats (the trainer divides by ntokens,
like fairseq); ``stats`` holds detached sums ``loss``, ``ntokens``, ``nsentences`` and
``nll_loss`` where meaningful.

Adding a criterion: write one file with the function, add one line to :data:`CRITERIA`
(and one to :data:`LAYOUTS` if its logits are not position-aligned with the target).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from latalign.translate.criteria.axe import axe
from latalign.translate.criteria.causal_axe import causal_axe
from latalign.translate.criteria.ce import ce, cross_entropy_sum
from latalign.translate.criteria.ctc import ctc
from latalign.translate.criteria.doubled_ctc import doubled_ctc
from latalign.translate.criteria.label_smoothed_ce import label_smoothed_ce, label_smoothed_nll_loss
from latalign.translate.criteria.latent import latent

Criterion = Callable[..., tuple[torch.Tensor, dict[str, float]]]

CRITERIA: dict[str, Criterion] = {
    "ce": ce,
    "label_smoothed_ce": label_smoothed_ce,
    "ctc": ctc,
    "axe": axe,
    "causal_axe": causal_axe,
    "latent": latent,
    "doubled_ctc": doubled_ctc,
}

#: The decoder-input layout a criterion needs (default ``"shifted"``: logits (B, T, V) aligned
#: with the target); it runs only under a regime of that layout (latalign.translate.loss).
LAYOUTS: dict[str, str] = {"doubled_ctc": "doubled"}


def layout_of(name: str) -> str:
    """The decoder-input layout criterion ``name`` expects (see :data:`LAYOUTS`)."""
    get_criterion(name)
    return LAYOUTS.get(name, "shifted")


def get_criterion(name: str) -> Criterion:
    """The criterion function registered under ``name``; ``ValueError`` listing known names."""
    try:
        return CRITERIA[name]
    except KeyError:
        raise ValueError(
            f"expected a criterion in {{{', '.join(CRITERIA)}}}; found {name!r}"
        ) from None


def criterion_options(name: str) -> dict[str, Any]:
    """Keyword options of criterion ``name`` with their defaults, e.g. ``{"delta": 1.0}``."""
    sig = inspect.signature(get_criterion(name))
    return {p.name: p.default for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY}


def check_options(name: str, options: dict[str, Any]) -> None:
    """``ValueError`` if ``options`` has a key criterion ``name`` does not accept."""
    known = criterion_options(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"expected options of criterion {name!r} among {sorted(known) or 'none'}; "
            f"found {unknown}"
        )


def compute_loss(
    name: str,
    logits: torch.Tensor,
    batch: Any,
    blank_id: int,
    pad_id: int,
    **options: Any,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Look up criterion ``name`` and call it: ``(loss_sum in nats, stats)``."""
    return get_criterion(name)(logits, batch, blank_id, pad_id, **options)


__all__ = [
    "CRITERIA",
    "Criterion",
    "axe",
    "causal_axe",
    "ce",
    "check_options",
    "compute_loss",
    "criterion_options",
    "cross_entropy_sum",
    "ctc",
    "doubled_ctc",
    "get_criterion",
    "label_smoothed_ce",
    "label_smoothed_nll_loss",
    "latent",
    "layout_of",
    "LAYOUTS",
]
