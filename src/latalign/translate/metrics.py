"""Corpus-level translation metrics (sacrebleu BLEU and chrF plus output statistics)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sacrebleu
from sacrebleu.metrics import BLEU, CHRF

__all__ = ["evaluate_translations"]


def evaluate_translations(
    hyps: Sequence[str], refs: Sequence[str], *, tokenize: str = "13a", lowercase: bool = False
) -> dict[str, Any]:
    """Score detokenised hypotheses against one reference each.

    Returns a dict with:

    - ``bleu``: corpus BLEU (sacrebleu, ``tokenize`` default ``13a``, cased unless
      ``lowercase``), 0-100; ``bleu_signature``: sacrebleu's signature string;
      ``bleu_precisions``: the four n-gram precisions; ``brevity_penalty``.
    - ``chrf``: corpus chrF (sacrebleu defaults), 0-100; ``chrf_signature``.
    - ``empty_share``: fraction of hypotheses that are empty after stripping whitespace
      (the paper's collapse symptom: an AXE model trained with teacher forcing outputs nothing).
    - ``length_ratio``: sys_len / ref_len in 13a tokens as counted by BLEU;
      ``sys_len``, ``ref_len``; ``n_sentences``.
    """
    if isinstance(hyps, str) or isinstance(refs, str):
        raise ValueError("expected lists of strings, found a single str")
    hyps, refs = list(hyps), list(refs)
    if len(hyps) != len(refs):
        raise ValueError(
            f"expected as many hypotheses as references, found {len(hyps)} hypotheses "
            f"and {len(refs)} references"
        )
    for name, seq in (("hypotheses", hyps), ("references", refs)):
        bad = next((i for i, s in enumerate(seq) if not isinstance(s, str)), None)
        if bad is not None:
            raise ValueError(f"expected {name} to be str, found {type(seq[bad]).__name__} at {bad}")
    n = len(hyps)
    if n == 0:
        raise ValueError("expected at least one sentence, found none")
    bleu_metric = BLEU(tokenize=tokenize, lowercase=lowercase)
    bleu = bleu_metric.corpus_score(hyps, [refs])
    chrf_metric = CHRF()
    chrf = chrf_metric.corpus_score(hyps, [refs])
    return {
        "bleu": float(bleu.score),
        "bleu_signature": str(bleu_metric.get_signature()),
        "bleu_precisions": [float(p) for p in bleu.precisions],
        "brevity_penalty": float(bleu.bp),
        "chrf": float(chrf.score),
        "chrf_signature": str(chrf_metric.get_signature()),
        "empty_share": sum(1 for h in hyps if not h.strip()) / n,
        "length_ratio": float(bleu.sys_len) / bleu.ref_len if bleu.ref_len else 0.0,
        "sys_len": int(bleu.sys_len),
        "ref_len": int(bleu.ref_len),
        "n_sentences": n,
        "sacrebleu_version": sacrebleu.__version__,
    }
