"""``--arch dag``: DA-Transformer (Huang et al., ICML 2022) on the stack's NAT decoder.

The decoder of :class:`~latalign.translate.nat.model.NATransformer` (its encoder, copied
source input, layers and output projection; nothing copied) runs at ``L = upsample x source
length`` **vertices**. Each vertex has a token distribution (the output projection) and a
**transition head** gives each vertex a distribution over the later ones: scaled dot
products ``(W_q h_u) . (W_k h_v) / sqrt(C)`` between the last layer's vertex states, masked to
``u < v < L_b``, log-softmax per row (:func:`dag_transitions`). No length predictor.

- **Targets** are DA-T's: ``bos y_1 .. y_n eos`` (n + 2 tokens). A path always visits the
  first and the last vertex (docs/SPEC.md), which then emit bos and eos, so every sentence
  with ``n + 2 <= L_b`` has a path (a one-token target has one too).
- **Loss**: criterion ``dag`` (:func:`dag_criterion`), :func:`latalign.dag_loss` from the
  logits with ``reduction="mean"`` (each sentence's loss over its n + 2 tokens, then the
  batch mean) and ``zero_infinity=True``: a target longer than its graph (``n + 2 > L_b``)
  contributes 0 and no gradient instead of DA-T's "graph size is too small" crash. The
  criterion returns that mean times the batch's target tokens, so that the loop's division
  by ``ntokens`` gives exactly the library's mean.
- **Glancing** (``--glat-ratio``, :mod:`.glancing`): the aligner :func:`align_dag` places the
  reference on the vertices of its best path under the current model
  (:func:`latalign.dag_best_vertices`); the glanced vertices are fed the reference token
  embeddings.
- **Decoding** (:func:`dag_decode`): from vertex 0, step to the next vertex until the last;
  ``lookahead`` (default) steps to ``argmax_v transition(u, v) + max_y log p(y | v)``,
  ``greedy`` (``SearchOptions(greedy=True)``, ``--greedy``) to ``argmax_v transition(u, v)``;
  every visited vertex emits its argmax token, consecutive equal tokens are merged (as DA-T's
  greedy and lookahead decoders do) and bos, eos, pad and ε are dropped. One batched walk of
  at most ``L - 1`` steps (a gather per step), no per-row Python.

See docs/dag.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

import latalign
from latalign.translate.config import ModelConfig, TrainConfig
from latalign.translate.criteria import criterion_loss
from latalign.translate.decode import BatchDecoder, OptionError, SearchOptions, decoding_context
from latalign.translate.nat.decode import _ragged
from latalign.translate.nat.glancing import (
    GLANCING_OPTIONS,
    Aligner,
    FirstPass,
    GlancingSchedule,
    check_glancing,
    glancing_forward,
    register_aligner,
)
from latalign.translate.nat.model import DECODER_INPUTS, NATConfig, NATOutput, NATransformer
from latalign.translate.registry import Arch, Criterion, register_arch, register_criterion
from latalign.translate.tokenizer import DEFAULT_IDS, SpecialIds

__all__ = [
    "DAG",
    "DAGConfig",
    "DAGLoss",
    "DAGOutput",
    "DAGTransformer",
    "STRATEGIES",
    "align_dag",
    "check_dag",
    "dag_criterion",
    "dag_decode",
    "dag_decoder",
    "dag_next_vertices",
    "dag_targets",
    "dag_transitions",
    "dag_walk",
]

#: decoding strategies of :func:`dag_decode`
STRATEGIES = ("lookahead", "greedy")


@dataclass
class DAGConfig(NATConfig):
    """A :class:`NATConfig` whose ``upsample x source length`` positions are DAG vertices
    (``length`` is always ``"upsample"``). ``upsample`` default 4: see docs/dag.md for the
    measurement (DA-T uses 8)."""

    length: str = "upsample"
    upsample: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.length != "upsample":
            raise ValueError(f"expected length 'upsample' for a DAG, found {self.length!r}")


@dataclass
class DAGOutput(NATOutput):
    """:class:`NATOutput` (``logits`` (B, L, V), ``output_lengths`` (B,) vertices per graph,
    ``length_logits`` None) plus ``transitions`` (B, L, L) float32 edge log-probabilities
    (:func:`dag_transitions`)."""

    transitions: Tensor


def dag_transitions(scores: Tensor, lengths: Tensor) -> Tensor:
    """(B, L, L) edge scores and (B,) vertices per graph -> (B, L, L) log-probabilities:
    row ``u`` is a log-softmax over ``u < v < lengths[b]``; every other entry is ``-inf``
    (a row without a later vertex, the last vertex's and the padding's, is all ``-inf``).
    Masked entries take no part in the softmax and get a zero gradient."""
    _, length, _ = scores.shape
    idx = torch.arange(length, device=scores.device)
    later = idx[None, :] > idx[:, None]  # (L, L)
    valid = later[None] & (idx[None, None, :] < lengths[:, None, None])  # (B, L, L)
    empty = ~valid.any(dim=-1, keepdim=True)  # (B, L, 1)
    # an all-masked row would be NaN in log_softmax and its backward: softmax zeros instead
    masked = scores.masked_fill(~valid, -math.inf).masked_fill(empty, 0.0)
    return masked.log_softmax(dim=-1).masked_fill(~valid, -math.inf)


class DAGTransformer(NATransformer):
    """The NAT decoder at DAG vertices plus the transition head (``link_query``,
    ``link_key``: C -> C projections of the last layer's states)."""

    def __init__(self, cfg: DAGConfig) -> None:
        if not isinstance(cfg, DAGConfig):
            raise ValueError(f"expected a DAGConfig, found {type(cfg).__name__}")
        super().__init__(cfg)
        d = cfg.d_model
        self.link_query = nn.Linear(d, d)
        self.link_key = nn.Linear(d, d)

    def transitions(self, states: Tensor, lengths: Tensor) -> Tensor:
        """Last-layer vertex states (B, L, C) -> (B, L, L) float32 transition log-probs."""
        if self.decoder_norm is not None:
            states = self.decoder_norm(states)
        q, k = self.link_query(states), self.link_key(states)
        scores = torch.bmm(q, k.transpose(1, 2)).float() / math.sqrt(q.size(-1))
        return dag_transitions(scores, lengths)

    def forward(  # type: ignore[override]
        self, src_tokens: Tensor, src_lengths: Tensor | None = None,
        target_lengths: Tensor | None = None, glanced: Tensor | None = None, **ignored: Any,
    ) -> DAGOutput:  # fmt: skip
        """src_tokens (B, S) -> :class:`DAGOutput` at ``upsample x S`` vertices.
        ``target_lengths`` is ignored (the graph's size comes from the source; the argument
        keeps the NAT call ``model(src, src_len, n, glanced)``); ``glanced`` (B, L): reference
        tokens fed at some vertices (:meth:`NATransformer.decoder_input`); the NAT call's
        keywords (``output_width``) are ignored too (the width is read off the source's
        shape)."""
        enc = self.encode(src_tokens, src_lengths)
        lengths = self.upsampled_lengths(src_tokens)
        width = self.batch_width(src_tokens, src_tokens)  # from the shapes: no host sync
        states = self.decode_states(enc, src_tokens, lengths, glanced, output_width=width)
        return DAGOutput(self._project(states), lengths, None, self.transitions(states, lengths))


# --------------------------------------------------------------------------- loss


def dag_criterion(
    logits: Tensor,
    targets: Tensor,
    input_lengths: Tensor,
    target_lengths: Tensor,
    transitions: Tensor | None = None,
    *,
    blank: int = 4,
) -> tuple[Tensor, None]:
    """Criterion ``dag``: :func:`latalign.dag_loss` (from logits, ``reduction="mean"``,
    ``zero_infinity=True``) times ``target_lengths.sum()`` (the loop divides by it again).

    ``logits`` (B, L, V) per vertex, ``transitions`` (B, L, L) (a DAG decoder's, required),
    ``input_lengths`` (B,) vertices per graph, ``targets`` (B, N) with ``target_lengths``.
    ``blank`` is unused (a DAG has no ε)."""
    if transitions is None:
        raise ValueError(
            "expected the transitions of a DAG decoder (--arch dag) for criterion 'dag', found none"
        )
    mean = latalign.dag_loss(
        logits, transitions.float(), targets, input_lengths, target_lengths,
        reduction="mean", zero_infinity=True, from_logits=True,
    )  # fmt: skip
    return mean * target_lengths.sum(), None


DAG_CRITERION = register_criterion(
    Criterion(
        "dag",
        dag_criterion,
        help="DA-Transformer's DAG loss (latalign.dag_loss; --arch dag only)",
        archs=frozenset({"dag"}),
    )
)


def dag_targets(
    target: Tensor, target_lengths: Tensor, *, bos_id: int, pad_id: int
) -> tuple[Tensor, Tensor]:
    """A batch's ``y_1 .. y_n eos`` (B, T) and lengths n + 1 -> DA-T's ``bos y_1 .. y_n eos``
    (B, T + 1) padded with ``pad_id``, and lengths n + 2."""
    bos = target.new_full((target.size(0), 1), bos_id)
    out = torch.cat([bos, target], dim=1)
    keep = torch.arange(out.size(1), device=out.device)[None, :] < (target_lengths + 1)[:, None]
    return out.masked_fill(~keep, pad_id), target_lengths + 1


def align_dag(p: FirstPass) -> Tensor:
    """Glancing's aligner of criterion ``dag``: the reference token at each vertex of its
    best path (:func:`latalign.dag_best_vertices` under the first pass's transitions),
    ``pad_id`` at the other vertices and in every vertex of a row without a path. (B, L)
    int64."""
    if not hasattr(p.output, "transitions"):
        raise ValueError("expected the DAG model output (with transitions), found none")
    vertices, _ = latalign.dag_best_vertices(
        p.logits, p.output.transitions, p.target, p.output_lengths, p.target_lengths,
        from_logits=True,
    )  # (B, N): -1 beyond n and without a path  # fmt: skip
    b, length = p.logits.shape[:2]
    out = p.target.new_full((b, length + 1), p.pad_id)  # the last column takes the -1s
    out.scatter_(1, vertices.masked_fill(vertices < 0, length), p.target[:, : vertices.size(1)])
    return out[:, :length]


register_aligner("dag", Aligner(align_dag))


class DAGLoss:
    """The LossFn of ``--arch dag``: DA-T targets (:func:`dag_targets`), the training pass
    (glancing or not: :func:`~latalign.translate.nat.glancing.glancing_forward`), then
    criterion ``dag``. ``ntokens`` counts the n + 2 tokens of every target."""

    def __init__(self, cfg: TrainConfig, tokenizer: Any) -> None:
        self.bos_id = tokenizer.bos_id
        self.pad_id = tokenizer.pad_id
        self.blank_id = tokenizer.blank_id
        self.glancing = GlancingSchedule.from_config(cfg)

    def __call__(
        self, model: nn.Module, batch: Any, *, update: int | None
    ) -> tuple[Tensor, dict[str, float]]:
        target, lengths = dag_targets(
            batch.target, batch.target_lengths, bos_id=self.bos_id, pad_id=self.pad_id
        )
        output, target, extra = glancing_forward(
            model, batch, target, lengths, schedule=self.glancing, update=update,
            criterion="dag", blank_id=self.blank_id, pad_id=self.pad_id,
        )  # fmt: skip
        loss, stats = criterion_loss(
            DAG_CRITERION, output.logits, target, output.output_lengths, lengths,
            blank=self.blank_id, transitions=output.transitions,
        )  # fmt: skip
        return loss, {**stats, **extra}


# --------------------------------------------------------------------------- decoding


def dag_next_vertices(
    transitions: Tensor, token_scores: Tensor, *, strategy: str = "lookahead"
) -> Tensor:
    """(B, L) the vertex each vertex steps to: ``argmax_v transitions[b, u, v]`` (greedy) or
    ``argmax_v transitions[b, u, v] + token_scores[b, v]`` (lookahead; ``token_scores`` (B, L)
    each vertex's best token log-prob). Ties go to the smallest v. Rows without a later vertex
    give an arbitrary vertex (never followed: :func:`dag_walk` stops at the last vertex)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"expected a DAG decoding strategy in {STRATEGIES}, found {strategy!r}")
    scores = transitions.float()
    if strategy == "lookahead":
        scores = scores + token_scores.float()[:, None, :]
    return scores.argmax(dim=-1)


def dag_walk(next_vertex: Tensor, lengths: Tensor) -> Tensor:
    """The path from vertex 0 to vertex ``lengths[b] - 1`` following ``next_vertex`` (B, L)
    -> (B, L) int64: the k-th visited vertex in column k, -1 after the last. At most
    ``max(lengths) - 1`` batched steps (``next_vertex`` must point to later vertices on the
    way, as the argmax over masked transitions does)."""
    b = next_vertex.size(0)
    steps = int(lengths.max()) if b else 0
    path = next_vertex.new_full((b, max(steps, 1)), -1)
    cur = next_vertex.new_zeros(b)
    last = lengths - 1
    path[:, 0] = 0
    done = cur >= last
    for k in range(1, steps):
        if k % 16 == 0 and bool(done.all()):  # a host sync every 16 steps, not each
            break
        cur = torch.where(done, cur, next_vertex.gather(1, cur[:, None]).squeeze(1))
        path[:, k] = torch.where(done, -1, cur)
        done = done | (cur >= last)
    return path


def dag_decode(
    model: DAGTransformer,
    src_tokens: Tensor,
    *,
    strategy: str = "lookahead",
    ids: SpecialIds = DEFAULT_IDS,
) -> list[list[int]]:
    """src_tokens (B, S) -> B token-id lists (the emitted tokens of each path, consecutive
    repeats merged, bos/eos/pad/ε dropped), in eval mode under ``torch.inference_mode()``
    (a model in training mode is put back after)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"expected a DAG decoding strategy in {STRATEGIES}, found {strategy!r}")
    with decoding_context(model):
        out = model(src_tokens)
        logits = out.logits.float()
        best, tokens = logits.max(dim=-1)  # (B, L)
        token_scores = best - torch.logsumexp(logits, dim=-1)
        nxt = dag_next_vertices(out.transitions, token_scores, strategy=strategy)
        path = dag_walk(nxt, out.output_lengths)  # (B, K)
        on_path = path.ge(0)
        emitted = tokens.gather(1, path.clamp(min=0))  # (B, K)
        keep = on_path.clone()
        keep[:, 1:] &= emitted[:, 1:].ne(emitted[:, :-1])
        for special in (ids.pad, ids.bos, ids.eos, ids.blank):
            keep &= emitted.ne(special)
        return _ragged(emitted, keep)


def dag_decoder(cfg: TrainConfig, tokenizer: Any, options: SearchOptions) -> BatchDecoder:
    """How a DAG run decodes: lookahead, or greedy with ``options.greedy``; ``length_beam``
    is refused (no length to search); beam options do not apply."""
    if options.length_beam is not None:
        raise OptionError(
            "length_beam",
            "expected a NAT run with a length predictor for {name}; found a DAG run (its "
            f"graph has {cfg.option('upsample')} x the source length vertices)",
        )
    strategy = "greedy" if options.greedy else "lookahead"
    ids = SpecialIds.of(tokenizer)
    return lambda model, src, _lengths: dag_decode(model, src, strategy=strategy, ids=ids)


# --------------------------------------------------------------------------- the arch


def check_dag(cfg: TrainConfig) -> None:
    """``ValueError`` (one line, before any work) for a config ``--arch dag`` cannot train."""
    u = cfg.upsample
    if u is not None and (not isinstance(u, int) or isinstance(u, bool) or u < 1):
        raise ValueError(f"expected upsample >= 1 (vertices per source token), found {u!r}")
    if cfg.nat_input is not None and cfg.nat_input not in DECODER_INPUTS:
        raise ValueError(f"expected nat_input copy or mask, found {cfg.nat_input!r}")
    check_glancing(cfg)


def dag_config_of(cfg: TrainConfig, vocab_size: int) -> DAGConfig:
    """The model config of a DAG run: the preset with ``cfg.model`` overrides, plus the
    run's ``upsample`` and ``nat_input``."""
    base = ModelConfig.preset(cfg.preset, vocab_size, **cfg.model)
    return DAGConfig.from_model_config(
        base, decoder_input=cfg.option("nat_input"), upsample=cfg.option("upsample")
    )


DAG = register_arch(
    Arch(
        name="dag", model=DAGTransformer, config=DAGConfig, config_of=dag_config_of,
        make_loss=DAGLoss, decoder=dag_decoder,
        options={"upsample": DAGConfig.upsample, "nat_input": DAGConfig.decoder_input}
        | dict.fromkeys(GLANCING_OPTIONS),
        criteria=frozenset({"dag"}),
        autoregressive=False,
        regimes=frozenset({"teacher_forcing"}),
        check=check_dag,
        help="DA-Transformer: the NAT decoder at upsample x S DAG vertices (docs/dag.md)",
    )
)  # fmt: skip
