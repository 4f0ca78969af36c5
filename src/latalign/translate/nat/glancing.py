"""Glancing training for every NAT criterion (GLAT, Qian et al., ACL 2021; for CTC through
the best alignment, as the Fully-NAT recipe of Gu & Kong, 2021, does).

One training step with glancing ratio λ:

1. A first decoder pass **without gradient** (the model in training mode, as in GLAT: the
   same dropout a training pass sees) gives the argmax prediction ``ŷ`` at every output
   position.
2. An *aligner* (:data:`ALIGNERS`, one entry per criterion) places the reference on the
   decoder's positions: ``a`` (B, T), a token id at each output position. For the criteria
   that decode at the gold length (``ce``, ``label_smoothed_ce``, ``axe``) it is the reference
   itself; for ``ctc`` the Viterbi path of CTC under the current model (targets and ε), for
   ``latent`` the criterion's own best path (:func:`latalign.best_alignment` with its
   operators and weights).
3. The distance ``d`` is the Hamming distance between ``ŷ`` and ``a`` over the output
   positions; ``floor(λ · d)`` positions are drawn uniformly at random (torch's global RNG:
   deterministic under the run's seed and checkpointed, so resume stays exact) among the
   row's output positions (GLAT draws among all positions, not only the wrong ones).
4. The training pass feeds the target-token embedding of ``a`` at the drawn positions instead
   of the decoder's normal input (copied source embeddings or the mask vector); positions
   keep their positional encoding. The ``ce`` family leaves the glanced positions out of its
   loss and its token count (GLAT's loss is over the words it did not show); the alignment
   criteria (``axe``, ``ctc``, ``latent``) score the whole reference, as Fully-NAT does for
   CTC (a latent alignment cannot leave positions out).

λ follows a linear schedule (:class:`GlancingSchedule`, e.g. 0.5 -> 0.3 over the run);
λ = 0 skips steps 1-3, so a run with ratio 0 is plain NAT training bit for bit. Validation
never glances. A new criterion (e.g. a DAG's best path) adds one :class:`Aligner` entry with
:func:`register_aligner`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

import latalign
from latalign.align.objective import MOVE_BY_NAME, TARGET

if TYPE_CHECKING:  # pragma: no cover
    from latalign.translate.train import TrainConfig

__all__ = [
    "ALIGNERS",
    "GLANCING_OPTIONS",
    "Aligner",
    "FirstPass",
    "Glance",
    "GlancingSchedule",
    "NOT_GLANCED",
    "align_ctc",
    "align_latent",
    "align_reference",
    "check_glancing",
    "choose_positions",
    "ctc_viterbi",
    "glance",
    "glancing_forward",
    "hamming",
    "register_aligner",
]

#: the value of a decoder position that is fed its normal input (not a reference token)
NOT_GLANCED = -1
#: TrainConfig fields of glancing (options of ``--arch nat``)
GLANCING_OPTIONS = frozenset({"glat_ratio", "glat_ratio_end", "glat_updates"})


@dataclass(frozen=True)
class FirstPass:
    """What an aligner sees of one batch: the first pass's ``logits`` (B, T, V) float and its
    whole model ``output`` (a DAG's transitions, :mod:`latalign.translate.nat.dag`; None when
    an aligner is called on logits alone), the reference ``target`` (B, N) with
    ``target_lengths`` (B,), the decoder's ``output_lengths`` (B,), the special ids and the
    criterion's ``options`` (a ``latent`` run's operators and weights)."""

    logits: Tensor
    target: Tensor
    output_lengths: Tensor
    target_lengths: Tensor
    blank_id: int
    pad_id: int
    options: Mapping[str, Any] = field(default_factory=dict)
    output: Any = None


#: ``align(FirstPass) -> (B, T) int64``: the reference token at each output position,
#: ``pad_id`` past a row's output length and in every position of a row the reference cannot
#: be aligned to
AlignFn = Callable[[FirstPass], Tensor]


@dataclass(frozen=True)
class Aligner:
    """How glancing places the reference on the decoder positions of one criterion.

    ``align``: see :data:`AlignFn`. ``skip_glanced``: the criterion's loss leaves the glanced
    positions out (position-wise losses: GLAT); False for alignment losses, which score the
    whole reference.
    """

    align: AlignFn
    skip_glanced: bool = False


# --------------------------------------------------------------------------- aligners


def align_reference(p: FirstPass) -> Tensor:
    """The reference at its own positions: ``target`` (B, N) -> (B, T) with T =
    ``logits.size(1)`` (the gold length in predict mode), ``pad_id`` past ``target_lengths``."""
    b, t = p.logits.shape[:2]
    out = p.target.new_full((b, t), p.pad_id)
    k = min(t, p.target.size(1))
    out[:, :k] = p.target[:, :k]
    keep = torch.arange(t, device=p.target.device)[None, :] < p.target_lengths[:, None]
    return out.masked_fill(~keep, p.pad_id)


def ctc_viterbi(
    scores: Tensor, targets: Tensor, input_lengths: Tensor, target_lengths: Tensor, blank: int
) -> tuple[Tensor, Tensor]:
    """The best CTC path of each row: ``scores`` (B, T, V) (log-probs or logits: every frame
    emits once, so the per-frame normaliser does not move the argmax), ``targets`` (B, N)
    -> (labels (B, T) int64: the path's symbol at each frame, ``blank`` past the input length;
    score (B,) float64, the path's summed scores, ``-inf`` where no path exists: too few
    frames for the targets and the ε between their repeats).

    Real CTC (ε required between repeated labels): the Viterbi recursion over the 2n + 1
    extended labels ``ε y_1 ε … y_n ε``, vectorised over the batch, a loop over frames.
    Ties go to the lower predecessor jump (stay, then advance by one, then skip an ε).
    """
    b, t_max, _ = scores.shape
    n = targets.size(1)
    s = 2 * n + 1
    dev = scores.device
    ext = torch.full((b, s), blank, dtype=torch.long, device=dev)  # ε y_1 ε y_2 … ε
    ext[:, 1::2] = targets
    skip = torch.zeros((b, s), dtype=torch.bool, device=dev)  # s-2 -> s allowed
    skip[:, 2:] = ext[:, 2:].ne(blank) & ext[:, 2:].ne(ext[:, :-2])
    live = torch.arange(s, device=dev)[None, :] < (2 * target_lengths + 1)[:, None]  # (B, S)
    em = scores.double().gather(2, ext[:, None, :].expand(b, t_max, s))  # (B, T, S)
    neg = torch.full((), -math.inf, dtype=torch.float64, device=dev)  # no host->device copy
    delta = torch.full((b, s), -math.inf, dtype=torch.float64, device=dev)
    delta[:, :2] = em[:, 0, :2]
    delta = torch.where(live, delta, neg)
    back = torch.zeros((b, t_max, s), dtype=torch.long, device=dev)
    pad1 = torch.full((b, 1), -math.inf, dtype=torch.float64, device=dev)
    pad2 = torch.full((b, 2), -math.inf, dtype=torch.float64, device=dev)
    for t in range(1, t_max):
        step1 = torch.cat([pad1, delta[:, :-1]], dim=1)
        step2 = torch.where(skip, torch.cat([pad2, delta[:, :-2]], dim=1), neg)
        best, arg = torch.stack([delta, step1, step2], dim=-1).max(dim=-1)  # (B, S)
        new = torch.where(live, best + em[:, t], neg)
        active = (t < input_lengths)[:, None]
        delta = torch.where(active, new, delta)
        back[:, t] = arg
    last = (2 * target_lengths).clamp(max=s - 1)  # the final ε ...
    prev = (2 * target_lengths - 1).clamp(min=0)  # ... or the last label
    end_blank = delta.gather(1, last[:, None]).squeeze(1)
    end_label = torch.where(
        target_lengths > 0, delta.gather(1, prev[:, None]).squeeze(1), neg.expand(b)
    )
    state = torch.where(end_label > end_blank, prev, last)
    score = torch.maximum(end_blank, end_label)
    labels = torch.full((b, t_max), blank, dtype=torch.long, device=dev)
    for t in range(t_max - 1, -1, -1):
        active = t < input_lengths
        labels[:, t] = torch.where(active, ext.gather(1, state[:, None]).squeeze(1), blank)
        jump = back[:, t].gather(1, state[:, None]).squeeze(1)
        state = torch.where(active & (t > 0), state - jump, state)
    return labels, score


def align_ctc(p: FirstPass) -> Tensor:
    """The CTC Viterbi path of the reference under the model (:func:`ctc_viterbi`) at the
    upsampled positions; ``pad_id`` past the output length and in rows without a path."""
    labels, score = ctc_viterbi(p.logits, p.target, p.output_lengths, p.target_lengths, p.blank_id)
    positions = torch.arange(labels.size(1), device=labels.device)[None, :]
    keep = (positions < p.output_lengths[:, None]) & torch.isfinite(score)[:, None]
    return labels.masked_fill(~keep, p.pad_id)


def path_tokens(operators: tuple[str, ...], target: list[int], blank: int) -> list[int]:
    """The symbol each prediction position scores on a best path (``m`` positions): ``y_i`` for
    ``align``/``clone_target``, ε for ``delimiter``; ``clone_prediction`` scores with a
    position already placed, so it places none."""
    out: list[int] = []
    i = 0
    for op in operators:
        move = MOVE_BY_NAME[op]
        i += move.di
        if move.dj:
            out.append(target[i - 1] if move.emits == TARGET else blank)
    return out


def align_latent(p: FirstPass) -> Tensor:
    """The best path of the run's ``latent`` objective (its operators and weights, max
    aggregate: :func:`latalign.best_alignment`) as the symbol at each output position."""
    operators = tuple(p.options.get("operators") or ("align", "clone_target", "delimiter"))
    paths = latalign.best_alignment(
        p.logits.float(), p.target, p.output_lengths, p.target_lengths, operators=operators,
        weights=p.options.get("weights"), blank=p.blank_id, from_logits=True,
    )  # fmt: skip
    b, t = p.logits.shape[:2]
    out = torch.full((b, t), p.pad_id, dtype=torch.long)
    tgt = p.target.tolist()
    for row, (path, n) in enumerate(zip(paths, p.target_lengths.tolist())):
        if path.feasible:
            tokens = path_tokens(path.operators, tgt[row][:n], p.blank_id)
            out[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
    return out.to(p.logits.device)


#: criterion -> its aligner; :func:`register_aligner` adds one (e.g. a DAG's best path)
ALIGNERS: dict[str, Aligner] = {
    "ce": Aligner(align_reference, skip_glanced=True),
    "label_smoothed_ce": Aligner(align_reference, skip_glanced=True),
    "axe": Aligner(align_reference),
    "ctc": Aligner(align_ctc),
    "latent": Aligner(align_latent),
}


def register_aligner(criterion: str, aligner: Aligner) -> Aligner:
    """Glancing for ``criterion`` (``ValueError`` if it has an aligner already); returns it."""
    if criterion in ALIGNERS and ALIGNERS[criterion] is not aligner:
        raise ValueError(f"expected a criterion without an aligner, found {criterion!r} has one")
    ALIGNERS[criterion] = aligner
    return aligner


# --------------------------------------------------------------------------- positions


def hamming(prediction: Tensor, aligned: Tensor, pad_id: int) -> Tensor:
    """(B, T) argmax tokens and (B, T) aligned reference -> (B,) int64: positions where they
    differ, over the positions the reference occupies (``aligned != pad_id``)."""
    return (prediction.ne(aligned) & aligned.ne(pad_id)).sum(dim=1)


def choose_positions(distance: Tensor, ratio: float, candidates: Tensor) -> Tensor:
    """``floor(ratio · distance)`` positions per row drawn uniformly among ``candidates``
    (B, T) bool, with torch's global RNG -> (B, T) bool."""
    k = torch.floor(distance.double() * float(ratio)).long()  # (B,)
    k = torch.minimum(k, candidates.sum(dim=1))
    noise = torch.rand(candidates.shape, device=candidates.device)  # in [0, 1)
    noise = noise.masked_fill(~candidates, 2.0)  # non-candidates rank last
    rank = noise.argsort(dim=1).argsort(dim=1)
    return rank < k[:, None]


@dataclass
class Glance:
    """What the training pass is fed: ``tokens`` (B, T) int64, the reference token at each
    glanced position and :data:`NOT_GLANCED` elsewhere; ``distance`` (B,) the Hamming
    distance of the first pass; ``glanced`` (B,) positions glanced per row."""

    tokens: Tensor
    distance: Tensor
    glanced: Tensor

    @property
    def mask(self) -> Tensor:
        """(B, T) bool: the glanced positions."""
        return self.tokens.ne(NOT_GLANCED)

    def loss_target(self, target: Tensor, pad_id: int) -> Tensor:
        """``target`` (B, N) with the glanced positions set to ``pad_id`` (left out of a
        position-wise loss; predict mode, where output position j carries target j)."""
        k = min(target.size(1), self.tokens.size(1))
        out = target.clone()
        out[:, :k] = out[:, :k].masked_fill(self.mask[:, :k], pad_id)
        return out


def glance(
    model: torch.nn.Module,
    src_tokens: Tensor,
    src_lengths: Tensor,
    target: Tensor,
    target_lengths: Tensor,
    *,
    criterion: str,
    ratio: float,
    blank_id: int,
    pad_id: int,
    options: Mapping[str, Any] | None = None,
    output_width: int | None = None,
) -> Glance:
    """Steps 1-3 of the module docstring for one batch: ``model`` the NAT model (unwrapped;
    the pass runs under ``torch.no_grad()`` in the mode the model is in), ``target`` (B, N)
    ``y_1 .. y_n`` without eos and ``target_lengths`` (B,) n (:func:`nat_targets`);
    ``output_width``: the batch's output width when the caller knows it (the model's
    ``batch_width``: no host synchronisation), None reads it."""
    if criterion not in ALIGNERS:
        raise ValueError(
            f"expected a criterion with an aligner in {sorted(ALIGNERS)}, found {criterion!r}"
        )
    with torch.no_grad():
        out = model(src_tokens, src_lengths, target_lengths, output_width=output_width)
        logits = out.logits.float()  # (B, T, V)
        first = FirstPass(
            logits, target, out.output_lengths, target_lengths, blank_id, pad_id,
            dict(options or {}), out,
        )  # fmt: skip
        aligned = ALIGNERS[criterion].align(first)
        candidates = aligned.ne(pad_id)
        distance = hamming(logits.argmax(dim=-1), aligned, pad_id)
        chosen = choose_positions(distance, ratio, candidates)
        tokens = aligned.masked_fill(~chosen, NOT_GLANCED)
    return Glance(tokens=tokens, distance=distance, glanced=chosen.sum(dim=1))


def glancing_forward(
    model: torch.nn.Module,
    batch: Any,
    target: Tensor,
    target_lengths: Tensor,
    *,
    schedule: GlancingSchedule | None,
    update: int | None,
    criterion: str,
    blank_id: int,
    pad_id: int,
    options: Mapping[str, Any] | None = None,
) -> tuple[Any, Tensor, dict[str, Any]]:
    """The training pass of one batch, glancing or not: ``(output, loss target, stats)``.

    ``model`` is what the loop trains (the DDP wrapper under ``torchrun``: the one pass with
    gradient goes through its forward). With no schedule, in validation (``update`` None) or
    at ratio 0 it is ``model(src, src_len, n)`` and ``target`` itself (plain NAT, no random
    draw); else :func:`glance`, then ``model(src, src_len, n, glanced tokens)``, the target
    with the glanced positions as ``pad_id`` for the ``ce`` family, and the stats
    ``glanced`` and ``glance_distance`` (summed positions; logged per target token).
    """
    ratio = schedule.ratio(update) if schedule is not None and update is not None else 0.0
    net = getattr(model, "module", model)  # the first pass needs no DDP synchronisation
    width = net.batch_width(batch.src_tokens, target)  # from the shapes: no host sync
    src, src_len = batch.src_tokens, batch.src_lengths
    if ratio <= 0:
        return model(src, src_len, target_lengths, output_width=width), target, {}
    g = glance(
        net, src, src_len, target, target_lengths, criterion=criterion, ratio=ratio,
        blank_id=blank_id, pad_id=pad_id, options=options, output_width=width,
    )  # fmt: skip
    output = model(src, src_len, target_lengths, g.tokens, output_width=width)
    if ALIGNERS[criterion].skip_glanced:
        target = g.loss_target(target, pad_id)
    stats = {"glanced": g.glanced.sum(), "glance_distance": g.distance.sum()}  # on the device
    return output, target, stats


# --------------------------------------------------------------------------- schedule, config


@dataclass(frozen=True)
class GlancingSchedule:
    """λ from ``start`` at update 0 linearly to ``end`` at update ``updates`` (constant
    after; ``updates`` 0 or ``end == start``: constant)."""

    start: float
    end: float
    updates: int = 0

    def ratio(self, update: int) -> float:
        if self.updates <= 0 or self.end == self.start:
            return self.start
        frac = min(max(update, 0) / self.updates, 1.0)
        return self.start + (self.end - self.start) * frac

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> GlancingSchedule | None:
        """The run's schedule, or None without ``glat_ratio`` (see :func:`check_glancing`)."""
        if cfg.glat_ratio is None:
            return None
        start = float(cfg.glat_ratio)
        end = start if cfg.glat_ratio_end is None else float(cfg.glat_ratio_end)
        updates = cfg.glat_updates if cfg.glat_updates is not None else cfg.max_updates
        return cls(start, end, int(updates))


def check_glancing(cfg: TrainConfig) -> None:
    """``ValueError`` (one line) for glancing options a run cannot use."""
    for name in ("glat_ratio", "glat_ratio_end"):
        value = getattr(cfg, name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1
        ):
            raise ValueError(f"expected --{name.replace('_', '-')} in [0, 1], found {value!r}")
    if cfg.glat_ratio is None:
        extra = [n for n in ("glat_ratio_end", "glat_updates") if getattr(cfg, n) is not None]
        if extra:
            raise ValueError(
                f"expected --glat-ratio with --{extra[0].replace('_', '-')}, found none"
            )
        return
    if cfg.criterion not in ALIGNERS:
        raise ValueError(
            f"expected a criterion with glancing among {sorted(ALIGNERS)}, found {cfg.criterion!r}"
        )
    u = cfg.glat_updates
    if u is not None and (isinstance(u, bool) or not isinstance(u, int) or u < 1):
        raise ValueError(f"expected --glat-updates >= 1, found {u!r}")
    end = cfg.glat_ratio_end
    if end is not None and end != cfg.glat_ratio and u is None and not cfg.max_updates:
        raise ValueError(
            "expected --glat-updates or --max-updates for a glancing schedule "
            f"({cfg.glat_ratio} -> {end}), found neither"
        )
