"""Measurements behind the paper's claims: pure functions on logits, targets and paths.

Conventions (teacher forcing, see ``docs/ARCHITECTURE.md``): a target row is
``y_1 … y_n eos`` (``L = n + 1`` positions), the decoder input is ``bos y_1 … y_n``, so
prediction ``p_j`` (1-based) has seen ``y_{j-1}`` as its last input. Losses are in nats.

The theorem's map (:func:`predict_objective`) is derived from the one table of moves,
:data:`latalign.align.objective.MOVES` (the paper's Table 1), by walking the alignment grid: an objective is
predicted *degenerate* exactly when some complete path at ``m = n`` contains a move in which
a prediction ``p_j`` scores a target ``y_i`` with ``i < j`` (the prediction has then already
seen its target through teacher forcing).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

import latalign as la
from latalign.align.objective import (
    ALIGN,
    CLONE_PREDICTION,
    DELIMITER,
    MOVE_BY_NAME,
    OPERATORS,
    TARGET,
)

OPTIONAL_OPERATORS = tuple(o for o in OPERATORS if o != ALIGN)
LOG2 = math.log(2.0)


# --------------------------------------------------------------------------- the map's rule


def operator_subsets() -> list[tuple[str, ...]]:
    """The 8 operator sets that contain ``align``, in canonical operator order."""
    out = []
    for k in range(len(OPTIONAL_OPERATORS) + 1):
        for extra in itertools.combinations(OPTIONAL_OPERATORS, k):
            out.append((ALIGN, *extra))
    return out


#: the map's yardstick: cross entropy at m = n, trained as long as the other objectives
MAP_REFERENCE = "align/sum/noncausal"


def objective_key(operators: Sequence[str], aggregate: str, causal: bool) -> str:
    """``"align+clone_prediction+delimiter/max/noncausal"``."""
    return f"{'+'.join(operators)}/{aggregate}/{'causal' if causal else 'noncausal'}"


def parse_objective_key(key: str) -> tuple[tuple[str, ...], str, bool]:
    """Inverse of :func:`objective_key`; ``ValueError`` on a malformed key."""
    parts = key.split("/")
    if len(parts) != 3 or parts[1] not in ("sum", "max") or parts[2] not in ("causal", "noncausal"):
        raise ValueError(
            f"expected a map objective like 'align+delimiter/sum/causal'; found {key!r}"
        )
    ops = tuple(parts[0].split("+"))
    if ops not in operator_subsets():
        raise ValueError(
            f"expected an operator set containing align, in canonical order "
            f"(align, clone_target, clone_prediction, delimiter); found {parts[0]!r}"
        )
    return ops, parts[1], parts[2] == "causal"


def all_map_objectives() -> list[str]:
    """The 32 objective keys: 8 operator sets × {sum, max} × {noncausal, causal}."""
    return [
        objective_key(ops, agg, causal)
        for causal in (False, True)
        for ops in operator_subsets()
        for agg in ("sum", "max")
    ]


def _moves(operators: Iterable[str], causal: bool, n: int, i: int, j: int, m: int | None = None):
    """Moves out of cell ``(i, j)`` on the ``n × m`` grid (``m = n`` unless given):
    ``(op, (i2, j2), scored)`` where ``scored`` is the ``(target i2, prediction f)`` pair the
    move scores, or None (ε). Source cell, emission, frame and causal rule all come from the
    one table :data:`latalign.align.objective.MOVES` (the paper's Table 1)."""
    m = n if m is None else m
    for op in operators:
        mv = MOVE_BY_NAME.get(op)
        if mv is None:
            raise ValueError(f"expected operators among {OPERATORS}; found {op!r}")
        i2, j2 = i + mv.di, j + mv.dj
        if not mv.allowed(i2, j2, n, m, causal):
            continue
        yield op, (i2, j2), ((i2, mv.frame_at(j2)) if mv.emits == TARGET else None)


@functools.cache
def path_exists(operators: tuple[str, ...], n: int, m: int) -> bool:
    """Whether the (non-causal) operator set has a complete path from ``(0, 0)`` to
    ``(n, m)``: ``n`` targets, ``m`` predictions (a latent alignment loss is finite exactly
    then). At ``m > n`` a set needs ``clone_target`` or ``delimiter`` (moves that advance the
    prediction without the target); at ``m < n``, ``clone_prediction``."""
    if n < 0 or m < 0:
        raise ValueError(f"expected lengths >= 0; found n={n}, m={m}")
    reached = {(0, 0)}
    for total in range(n + m):  # every move increases i + j
        for i, j in [c for c in reached if sum(c) == total]:
            reached.update(nxt for _, nxt, _ in _moves(operators, False, n, i, j, m))
    return (n, m) in reached


def feasible_share(operators: Sequence[str], lengths: Iterable[tuple[int, int]]) -> float:
    """Share (in [0, 1]) of ``(n targets, m predictions)`` pairs with a complete path
    (:func:`path_exists`); ``ValueError`` when there are none."""
    pairs = Counter(lengths)
    total = sum(pairs.values())
    if not total:
        raise ValueError("expected at least one (n, m) pair; found none")
    ops = tuple(operators)
    return sum(c for (n, m), c in pairs.items() if path_exists(ops, n, m)) / total


@dataclass(frozen=True)
class ObjectivePrediction:
    """What the theory says about one objective under teacher forcing (``m = n``).

    Attributes:
        degenerate: some complete path lets ``p_j`` score ``y_i`` with ``i < j``.
        lookback_operators: the operators whose moves do so on some complete path.
        only_trivial_path: the trivial path ``align × n`` is the only path, so the objective
            *is* cross entropy at ``m = n`` (sum and max alike).
        num_paths: number of complete paths on the grid used (``n = 5``).
    """

    degenerate: bool
    lookback_operators: tuple[str, ...]
    only_trivial_path: bool
    num_paths: int

    def note(self) -> str:
        """A short human-readable reason."""
        if self.only_trivial_path:
            return "only the trivial path exists at m = n: identical to cross entropy"
        if self.degenerate:
            return "p_j can score y_i with i < j via " + ", ".join(self.lookback_operators)
        return "non-trivial paths exist, but none lets p_j score y_i with i < j"


def predict_objective(operators: Sequence[str], causal: bool, n: int = 5) -> ObjectivePrediction:
    """The paper's prediction for ``operators`` (must contain ``align``) with or without the
    causal restriction, from the grid of ``SPEC.md`` at ``m = n`` (``n ≥ 3`` is enough for
    every pattern; the default 5 leaves room).

    Raises ``ValueError`` for unknown operators or a set without ``align``.
    """
    ops = tuple(operators)
    unknown = [o for o in ops if o not in OPERATORS]
    if unknown or ALIGN not in ops:
        raise ValueError(f"expected an operator set containing 'align'; found {list(ops)}")
    if n < 3:
        raise ValueError(f"expected n >= 3; found {n}")
    cells = [(i, j) for i in range(n + 1) for j in range(n + 1)]
    # paths from the start into each cell (a DAG: every move increases i + j)
    from_start = {c: 0 for c in cells}
    from_start[(0, 0)] = 1
    for i, j in sorted(cells, key=sum):
        if from_start[(i, j)]:
            for _, nxt, _ in _moves(ops, causal, n, i, j):
                from_start[nxt] += from_start[(i, j)]
    to_end = {c: 0 for c in cells}
    to_end[(n, n)] = 1
    for i, j in sorted(cells, key=sum, reverse=True):
        for _, nxt, _ in _moves(ops, causal, n, i, j):
            to_end[(i, j)] += to_end[nxt]
    lookback = set()
    for i, j in cells:
        if not from_start[(i, j)]:
            continue
        for op, nxt, scored in _moves(ops, causal, n, i, j):
            if to_end[nxt] and scored is not None and scored[0] < scored[1]:
                lookback.add(op)
    num_paths = from_start[(n, n)]
    return ObjectivePrediction(
        degenerate=bool(lookback),
        lookback_operators=tuple(o for o in OPERATORS if o in lookback),
        only_trivial_path=num_paths == 1,
        num_paths=num_paths,
    )


def classify_measured(
    loss: float,
    empty_share: float,
    bleu: float,
    *,
    reference_loss: float,
    reference_bleu: float,
    loss_ratio: float = 0.25,
    empty_threshold: float = 0.5,
    bleu_ratio: float = 0.5,
    ce: float | None = None,
    reference_ce: float | None = None,
    ce_ratio: float = 2.0,
    min_reference_bleu: float = 20.0,
) -> str:
    """``"degenerate"`` or ``"healthy"`` from measurements (losses in nats/token, BLEU 0-100).

    Degenerate = near-zero loss (``loss < loss_ratio · reference_loss``, the reference being
    cross entropy trained for as long) **and** a model that does not predict the reference:
    ``empty_share ≥ empty_threshold``, or ``bleu < bleu_ratio · reference_bleu`` (used only
    when the reference translates: ``reference_bleu ≥ min_reference_bleu``; below that BLEU
    decides nothing), or — when ``ce``/``reference_ce`` are given — teacher-forced cross
    entropy of the reference ``ce ≥ ce_ratio · reference_ce`` (a copying model puts its mass
    on ``y_{j−1}``, not ``y_j``; this works after a few updates, when BLEU does not yet).
    """
    near_zero = loss < loss_ratio * reference_loss
    collapsed = empty_share >= empty_threshold
    if reference_bleu >= min_reference_bleu:
        collapsed = collapsed or bleu < bleu_ratio * reference_bleu
    if ce is not None and reference_ce is not None:
        collapsed = collapsed or ce >= ce_ratio * reference_ce
    return "degenerate" if near_zero and collapsed else "healthy"


#: BLEU decides a map row only when the reference (cross entropy) reaches this test BLEU
MIN_REFERENCE_BLEU = 20.0


def classify_map_row(
    loss: float,
    empty_share: float,
    bleu: float,
    *,
    reference_loss: float,
    reference_bleu: float,
    ce: float | None = None,
    reference_ce: float | None = None,
    bleu_ratio: float = 0.5,
    empty_threshold: float = 0.5,
) -> str:
    """A map row's measured class: ``"degenerate"`` by :func:`classify_measured`; else
    ``"healthy"`` when the model translates (``bleu ≥ bleu_ratio · reference_bleu`` and
    ``empty_share < empty_threshold``), else ``"poor"`` (neither the collapse nor a
    translating model: agrees with no prediction). When the reference does not translate
    (``reference_bleu < MIN_REFERENCE_BLEU``) BLEU decides nothing and every row that is not
    degenerate is ``"healthy"`` (the loss rule alone: :func:`map_rule` says so)."""
    if classify_measured(
        loss, empty_share, bleu, reference_loss=reference_loss, reference_bleu=reference_bleu,
        empty_threshold=empty_threshold, bleu_ratio=bleu_ratio, ce=ce, reference_ce=reference_ce,
        min_reference_bleu=MIN_REFERENCE_BLEU,
    ) == "degenerate":  # fmt: skip
        return "degenerate"
    if reference_bleu < MIN_REFERENCE_BLEU:
        return "healthy"
    translates = bleu >= bleu_ratio * reference_bleu and empty_share < empty_threshold
    return "healthy" if translates else "poor"


def map_rule(reference_bleu: float) -> str:
    """The rule of :func:`classify_map_row` in words, for a reference with this BLEU."""
    if reference_bleu < MIN_REFERENCE_BLEU:
        return (
            "degenerate = valid loss < 0.25 × the reference's (cross entropy) and (empty share "
            "≥ 0.5 or teacher-forced valid CE ≥ 2 × the reference's), else healthy; BLEU is "
            f"off: the reference's BLEU {reference_bleu:.1f} < {MIN_REFERENCE_BLEU:g} decides "
            "nothing"
        )
    return (
        "degenerate = valid loss < 0.25 × the reference's (cross entropy) and (empty share ≥ "
        "0.5 or teacher-forced valid CE ≥ 2 × the reference's or BLEU < 0.5 × the "
        "reference's); healthy = not degenerate and BLEU ≥ 0.5 × the reference's with < 50 % "
        "empty (the model translates); poor = neither (agrees with no prediction)"
    )


# --------------------------------------------------------------------------- paths


def degenerate_path(length: int) -> tuple[str, ...]:
    """AXE's constant path over ``length`` targets (eos included): ``delimiter, align ×
    (length − 1), clone_prediction`` (the paper's Figure 3)."""
    if length < 1:
        raise ValueError(f"expected length >= 1; found {length}")
    return (DELIMITER,) + (ALIGN,) * (length - 1) + (CLONE_PREDICTION,)


def trivial_path(length: int) -> tuple[str, ...]:
    """The trivial alignment ``align × length`` (cross entropy's only path)."""
    if length < 0:
        raise ValueError(f"expected length >= 0; found {length}")
    return (ALIGN,) * length


def path_summary(operators: Sequence[str]) -> str:
    """Non-align moves of a path as ``"delimiter×1 + clone_prediction×1"`` (``"trivial"``
    when there are none), in canonical operator order."""
    counts = Counter(o for o in operators if o != ALIGN)
    if not counts:
        return "trivial"
    return " + ".join(f"{o}×{counts[o]}" for o in OPERATORS if counts[o])


def path_shares(paths: Sequence[Sequence[str]], lengths: Sequence[int]) -> dict[str, Any]:
    """Shares (in [0, 1]) of best paths that are the degenerate and the trivial path, and the
    most common summaries of the others (:func:`path_summary`)."""
    if len(paths) != len(lengths):
        raise ValueError(f"expected one length per path; found {len(paths)} and {len(lengths)}")
    if not paths:
        raise ValueError("expected at least one path; found none")
    n = len(paths)
    deg = sum(tuple(p) == degenerate_path(L) for p, L in zip(paths, lengths))
    triv = sum(tuple(p) == trivial_path(L) for p, L in zip(paths, lengths))
    others = Counter(path_summary(p) for p, L in zip(paths, lengths) if tuple(p) != trivial_path(L))
    return {
        "n_sentences": n,
        "degenerate_share": deg / n,
        "trivial_share": triv / n,
        "other_paths": [{"summary": s, "count": c} for s, c in others.most_common(5)],
    }


# --------------------------------------------------------------------------- teacher forcing


def input_copy_probability(
    logits: torch.Tensor, inputs: torch.Tensor, *, pad_id: int, bos_id: int
) -> tuple[float, int]:
    """Sum of ``p_j(input_j)`` over the positions whose decoder input is a token (not bos,
    not pad) and the number of such positions: ``(sum, count)``. Under teacher forcing the
    input at position ``j`` is ``y_{j−1}``, so this is the copy probability of §5.

    logits (B, T, V) unnormalised; inputs (B, T) the decoder input the logits were computed
    from (``bos y_1 … y_n`` then pad under teacher forcing).
    """
    probs = torch.softmax(logits.float(), dim=-1)  # (B, T, V)
    p_input = probs.gather(-1, inputs.unsqueeze(-1)).squeeze(-1)  # (B, T)
    mask = inputs.ne(pad_id) & inputs.ne(bos_id)
    return float(p_input[mask].sum()), int(mask.sum())


def has_equal_neighbours(target: Sequence[int]) -> bool:
    """True when two adjacent tokens are equal (real CTC at ``m = n`` is then infeasible)."""
    return any(a == b for a, b in zip(target, target[1:]))


def ctc_versus_ce(
    logits: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor, blank: int
) -> dict[str, Any]:
    """Per-sentence CTC (``m = n``) and cross-entropy sums (nats) for one batch.

    Returns lists ``ctc``, ``ce`` (nats per sentence) and ``repeats`` (bool: equal
    neighbours); CTC of a sentence with repeats is ``inf``.
    """
    lp = torch.log_softmax(logits.double(), dim=-1)  # (B, T, V)
    ctc = la.ctc_loss(lp, target, lengths, lengths, blank=blank, reduction="none")
    tok = -lp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, T)
    pos = torch.arange(target.size(1))[None, :]
    ce = (tok * (pos < lengths[:, None])).sum(dim=1)
    reps = [has_equal_neighbours(target[b, : int(lengths[b])].tolist()) for b in range(len(target))]
    return {"ctc": ctc.tolist(), "ce": ce.tolist(), "repeats": reps}


def summarize_ctc_versus_ce(ctc: Sequence[float], ce: Sequence[float], repeats: Sequence[bool]):
    """The §3 claim as numbers: ``max_abs_diff`` (nats) over sentences without equal
    neighbours, ``repeat_count``/``repeat_share`` and ``repeat_infinite`` (how many of those
    had CTC = inf)."""
    n = len(ctc)
    if n == 0 or not (len(ce) == len(repeats) == n):
        raise ValueError(f"expected equal non-empty lists; found {n}, {len(ce)}, {len(repeats)}")
    diffs = [abs(a - b) for a, b, r in zip(ctc, ce, repeats) if not r]
    rep = sum(bool(r) for r in repeats)
    return {
        "n_sentences": n,
        "max_abs_diff": max(diffs) if diffs else 0.0,
        "repeat_count": rep,
        "repeat_share": rep / n,
        "repeat_infinite": sum(1 for a, r in zip(ctc, repeats) if r and math.isinf(a)),
    }


def loss_floor_check(
    losses: Sequence[float],
    targets: Sequence[Sequence[int]],
    alphas: Sequence[Sequence[Sequence[int]]],
    paths: Sequence[Sequence[str]],
    *,
    tol: float = 1e-4,
    keep: int = 5,
) -> dict[str, Any]:
    """The floor claim measured on one set of sentences: loss and floor on the same tokens.

    Args:
        losses: AXE loss of each sentence (nats, summed over its targets).
        targets: each sentence's targets ``y_1 … y_n eos`` (``L`` tokens, eos counted).
        alphas: each sentence's best alignment ``α(i)`` (1-based predictions per target).
        paths: each sentence's best path (operator names).
        tol: nats a sentence may lie under ``2·log 2`` before it counts as below (float32).
        keep: how many below-floor sentences to describe individually.

    On the constant path the last prediction scores two different targets (``y_n`` and eos),
    so that sentence costs at least ``−2·log(0.5) = 2·log 2`` nats: a hard bound. Token-weighted
    over the set, ``loss = Σ loss_s / Σ L_s`` and ``floor = N·2·log 2 / Σ L_s``
    (= ``2·log 2 / mean L``). A sentence below ``2·log 2`` must use another best path; for
    each such sentence the record says which path and whether it shares a prediction between
    two equal neighbouring targets (free for a copying model). Returns ``n_sentences``,
    ``n_tokens``, ``loss``, ``floor``, ``ratio``, ``mean_length``, ``below_count``,
    ``below_paths`` (path summaries with counts), ``below_on_equal_neighbours`` and
    ``below_examples``.
    """
    n = len(losses)
    if n == 0 or not (len(targets) == len(alphas) == len(paths) == n):
        raise ValueError(
            f"expected equal non-empty lists; found {n}, {len(targets)}, {len(alphas)}, "
            f"{len(paths)}"
        )
    ntok = sum(len(t) for t in targets)
    loss = sum(losses) / ntok
    floor = n * 2.0 * LOG2 / ntok
    below, on_equal = [], 0
    for k in range(n):
        if not losses[k] < 2.0 * LOG2 - tol:
            continue
        t, a = targets[k], alphas[k]
        shared = [
            i for i in range(len(a) - 1) if set(a[i]) & set(a[i + 1])
        ]  # 0-based i: y_(i+1) and y_(i+2) scored by one prediction
        equal = [i for i in shared if t[i] == t[i + 1]]
        on_equal += bool(equal)
        below.append(
            {
                "index": k,
                "length": len(t),
                "loss": losses[k],
                "path": path_summary(paths[k]),
                "constant_path": tuple(paths[k]) == degenerate_path(len(t)),
                "shared_targets": [i + 1 for i in shared],
                "shared_equal_neighbours": [i + 1 for i in equal],
            }
        )
    counts = Counter(b["path"] for b in below)
    return {
        "n_sentences": n,
        "n_tokens": ntok,
        "loss": loss,
        "floor": floor,
        "ratio": loss / floor,
        "mean_length": ntok / n,
        "below_count": len(below),
        "below_paths": [{"summary": s, "count": c} for s, c in counts.most_common(5)],
        "below_on_equal_neighbours": on_equal,
        "below_constant_path": sum(b["constant_path"] for b in below),
        "below_examples": below[:keep],
    }


#: the paper's epoch in target tokens: IWSLT'14 de-en, ~160k sentences, about 3.9M target
#: tokens (~1,100 updates of 4,096 tokens)
PAPER_EPOCH_TARGET_TOKENS = 3_900_000


def first_crossing(
    history: Sequence[dict[str, Any]],
    key: str,
    threshold: float,
    *,
    updates_per_epoch: int,
    tokens_per_update: float,
) -> dict[str, Any] | None:
    """The first record with ``key < threshold`` as ``{"step", "epoch", "target_tokens",
    "paper_epochs"}`` (None if never): the update, this corpus's epochs
    (``step / updates_per_epoch``), target tokens seen (``step × tokens_per_update``, the
    corpus's mean target tokens per update, eos counted) and the same in the paper's epochs
    (:data:`PAPER_EPOCH_TARGET_TOKENS`)."""
    rec = first_below(history, key, threshold)
    if rec is None:
        return None
    step = int(rec["step"])
    tokens = step * tokens_per_update
    return {
        "step": step,
        "epoch": step / max(updates_per_epoch, 1),
        "target_tokens": tokens,
        "paper_epochs": tokens / PAPER_EPOCH_TARGET_TOKENS,
    }


def first_below(
    history: Sequence[dict[str, Any]], key: str, threshold: float
) -> dict[str, Any] | None:
    """The first record whose ``key`` is below ``threshold`` (None if never)."""
    for rec in history:
        value = rec.get(key)
        if value is not None and value < threshold:
            return rec
    return None


def top_k_table(
    logits: torch.Tensor, k: int, piece: Any, length: int
) -> list[list[tuple[str, float]]]:
    """Figure 3's table for one sentence: for each position ``j < length`` the ``k`` most
    probable pieces and their probabilities. logits (T, V); ``piece(id) -> str``."""
    probs = torch.softmax(logits.float(), dim=-1)[:length]
    values, ids = probs.topk(k, dim=-1)
    return [
        [(piece(int(i)), float(v)) for v, i in zip(vs.tolist(), is_.tolist())]
        for vs, is_ in zip(values, ids)
    ]
