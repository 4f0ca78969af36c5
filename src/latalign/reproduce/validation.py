"""Teacher-forced measurements of a trained run on the validation sentences: the paper's
analysis (:func:`analyse`: copying, CTC vs CE, best AXE paths, the loss floor, Figure 3's
data) and the batches every such measurement reads (:func:`validation_logits`).

The run sees the gold inputs as it would at inference time
(:func:`latalign.reproduce.trained.validation_inputs`: doubled for doubled CTC, delayed for
delayed teacher forcing). Losses in nats, probabilities in [0, 1].
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

import latalign as la
import latalign.reproduce.analysis as an
from latalign.reproduce.cells import subset
from latalign.reproduce.context import Context
from latalign.reproduce.records import Analysis
from latalign.reproduce.trained import Trained, validation_inputs
from latalign.translate.batching import Batch, collate

BATCH = 32  # validation sentences per forward pass


@torch.no_grad()
def validation_logits(
    run: Trained, ctx: Context, ids: list[int]
) -> Iterator[tuple[Batch, torch.Tensor, torch.Tensor]]:
    """``(batch, inputs (B, T'), float logits (B, T', V))`` for the validation sentences
    ``ids`` in batches of :data:`BATCH`, the inputs as the run sees gold tokens."""
    run.model.eval()
    valid = ctx.data.valid
    for start in range(0, len(ids), BATCH):
        batch = collate([valid[i] for i in ids[start : start + BATCH]])
        inputs = validation_inputs(run, batch)
        logits = run.model(batch.src_tokens, batch.src_lengths, inputs).float()
        yield batch, inputs, logits


def best_paths(logits: torch.Tensor, batch: Batch, blank: int, causal: bool) -> list[la.Alignment]:
    """The best AXE alignment of each sentence at ``m = n`` (``causal`` as trained)."""
    L = batch.target_lengths
    return la.best_alignment(
        logits, batch.target, L, L, blank=blank, causal=causal, from_logits=True
    )


@torch.no_grad()
def analyse(run: Trained, ctx: Context, *, causal: bool, figures: bool = True) -> Analysis:
    """The paper's analysis of the first ``preset.analysis_sentences`` validation sentences:
    mean ``p_j(input_j)``, and unless the run is doubled CTC: CTC vs CE per sentence, AXE
    best paths and AXE losses (``causal`` as given) with the loss-floor check on the same
    sentences, and (``figures``) the data of Figure 3 and of the heat map."""
    tok = ctx.data.tokenizer
    doubled = run.train_config.get("regime") == "doubled"
    idx = subset(len(ctx.data.valid), ctx.preset.analysis_sentences)
    copy_sum = copy_n = 0.0
    ctc_l, ce_l, reps, paths, lengths, axe_l, targets, alphas = [], [], [], [], [], [], [], []
    for batch, inputs, logits in validation_logits(run, ctx, idx):
        L = batch.target_lengths
        s, c = an.input_copy_probability(logits, inputs, pad_id=tok.pad_id, bos_id=tok.bos_id)
        copy_sum, copy_n = copy_sum + s, copy_n + c
        lengths += L.tolist()
        if doubled:
            continue
        cc = an.ctc_versus_ce(logits, batch.target, L, tok.blank_id)
        ctc_l += cc["ctc"]
        ce_l += cc["ce"]
        reps += cc["repeats"]
        best = best_paths(logits, batch, tok.blank_id, causal)
        paths += [b.operators for b in best]
        alphas += [b.alpha for b in best]
        axe_l += la.axe_loss(
            logits, batch.target, L, L, blank=tok.blank_id, causal=causal,
            reduction="none", zero_infinity=True, from_logits=True,
        ).tolist()  # fmt: skip
        targets += [batch.target[b, : int(L[b])].tolist() for b in range(len(L))]
    out = Analysis(
        n_sentences=len(idx),
        n_valid=len(ctx.data.valid),
        mean_target_length=sum(lengths) / max(len(lengths), 1),
        copy_probability=copy_sum / max(copy_n, 1.0),
        copy_positions=int(copy_n),
    )
    if doubled:
        return out
    out.ctc_vs_ce = an.summarize_ctc_versus_ce(ctc_l, ce_l, reps)
    out.paths = an.path_shares(paths, lengths) | {"causal": causal}
    out.floor = an.loss_floor_check(axe_l, targets, alphas, paths)
    want = ctx.preset.figure_sentences if figures else 0
    out.figures = figure_data(run, ctx, figure_sentences(ctx, idx, want), causal) if want else []
    return out


def figure_sentences(ctx: Context, idx: list[int], k: int) -> list[int]:
    """``k`` short validation sentences for Figure 3 (the shortest with >= 6 target tokens,
    else the shortest), in corpus order."""
    sizes = [(int(ctx.data.valid.tgt_sizes[i]), i) for i in idx]
    pool = [x for x in sizes if x[0] >= 6] or sizes
    return sorted(i for _, i in sorted(pool)[:k])


def figure_data(run: Trained, ctx: Context, ids: list[int], causal: bool) -> list[dict[str, Any]]:
    """Figure 3 and the heat map for the validation sentences ``ids``: targets (pieces), the
    top-4 of each prediction, the best path (``alpha``, ``operators``), ``p_target[i][j] =
    p_{j+1}(y_{i+1})`` and ``p_blank``."""
    tok = ctx.data.tokenizer
    out: list[dict[str, Any]] = []
    for batch, _, logits in validation_logits(run, ctx, ids):
        best = best_paths(logits, batch, tok.blank_id, causal)
        for b in range(len(best)):
            n = int(batch.target_lengths[b])
            probs = torch.softmax(logits[b], dim=-1)[:n]  # (L, V)
            tgt = batch.target[b, :n].tolist()
            i = ids[len(out)]
            out.append({
                "target": [tok.id_to_piece(t) for t in tgt],
                "top4": an.top_k_table(logits[b], 4, tok.id_to_piece, n),
                "alpha": [list(a) for a in best[b].alpha],
                "operators": list(best[b].operators),
                "p_target": probs[:, tgt].T.tolist(),
                "p_blank": probs[:, tok.blank_id].tolist(),
                "index": i,
                "source": ctx.data.valid.raw_src[i],
            })  # fmt: skip
    return out
