"""Greedy and beam-search decoding for the translation transformer.

The decoders only need a model that follows the incremental protocol of
:class:`latalign.translate.model.Transformer` (see :class:`IncrementalModel`), so a tiny fake
model with a fixed next-token table can be plugged into the tests.

Conventions (fairseq-like):

- Output length (tokens, without bos/eos) is at least ``min_len`` (default 1) and at most
  ``max_len = min(int(max_len_a * src_len + max_len_b), max_positions - 2)`` per sentence, where
  ``src_len`` counts the source's non-pad tokens. Defaults ``max_len_a=1.2``, ``max_len_b=10``
  (fairseq uses a=0, b=200; our sentences are short and a length-proportional cap keeps a
  degenerate model from looping for 200 steps). At ``max_len`` eos is forced.
- Beam scores are sums of log-probabilities (nats); a finished hypothesis is ranked by
  ``score / (len + 1) ** lenpen`` where ``len + 1`` counts the eos (fairseq's length penalty).
- A sentence stops once ``beam`` hypotheses have ended (eos among the top ``beam``
  candidates of a step), as in fairseq.
- ``autocast_bf16`` defaults to False here; :class:`SearchOptions` turns it on by default on a
  CUDA device with bf16 (:func:`~latalign.translate.device.default_bf16`). On a CPU without
  bf16 instructions bf16 autocast is slower than fp32 and changes a few beam outputs
  (``benchmarks/bench_decode.py`` measures both).
- Devices: every tensor the decoders make lives on the model's device (its parameters'
  device; a parameterless model: the device of ``src_tokens``), sources are moved there, and
  bf16 autocast runs on that device's type. Only finished token ids come back to the CPU.
- Sources longer than the model's ``max_positions`` (tokens + eos) are cut to fit by
  :func:`translate_sentences`, which warns with :class:`SourceTruncatedWarning` (it carries the
  indices); the other sentences are unaffected.
- :class:`SearchOptions` holds every decoding default (beam 5, length penalty 1, max length
  1.2 · S + 10, batch 64, …) and generates the ``latalign translate|evaluate|distill``
  flags; the decoders' keyword defaults are read from it. A *batch decoder*
  (:data:`BatchDecoder`) is ``decode(model, src_tokens (B, S), src_lengths (B,)) -> token id
  lists``; :func:`search_decoder` makes the stack's (beam search, greedy for beam 1), and
  :func:`translate_sentences` turns strings into batches for one.
- pad and bos are never generated. The blank token (ε) is generated like any other token;
  remove it with :func:`strip_blank` or the tokenizer's ``decode``.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import torch
from torch import Tensor
from tqdm import tqdm

from latalign.translate.device import default_bf16, model_device, resolve_device

__all__ = [
    "BatchDecoder",
    "Hypothesis",
    "IncrementalModel",
    "OptionError",
    "SearchOptions",
    "SourceTruncatedWarning",
    "beam_search",
    "beam_search_hypotheses",
    "encode_sources",
    "greedy_decode",
    "max_lengths",
    "search_decoder",
    "strip_blank",
    "translate_sentences",
]

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2

#: ``decode(model, src_tokens (B, S), src_lengths (B,)) -> B token id lists`` (no bos/eos)
BatchDecoder = Callable[[Any, Tensor, Tensor], list[list[int]]]


class OptionError(ValueError):
    """A bad decoding option, named so that the CLI can say its flag: ``str()`` names the
    field (``beam``), :meth:`for_flag` the flag (``--beam``)."""

    def __init__(self, name: str, message: str) -> None:
        self.name, self.message = name, message
        super().__init__(message.replace("{name}", name))

    def for_flag(self) -> str:
        return self.message.replace("{name}", "--" + self.name.replace("_", "-"))


def _option(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class SearchOptions:
    """How to decode a run: the decoding defaults of the stack, validated on construction
    (:class:`OptionError`, a ``ValueError``). ``latalign translate|evaluate|distill``
    generate their decoding flags from these fields (``--max-len-a`` for ``max_len_a``).

    Output length per sentence (tokens, without eos) is at most ``int(max_len_a * source
    tokens + max_len_b)`` and at least 1. ``greedy`` sets ``beam`` to 1. ``length_beam`` and
    the beam options apply to the runs whose decoding has them (the run refuses an option it
    cannot honour: :meth:`latalign.translate.run.TrainedRun.batch_decoder`). ``bf16`` None:
    :func:`~latalign.translate.device.default_bf16` of the device. ``device`` and ``int8``:
    where the run's model decodes (:func:`~latalign.translate.device.resolve_device`).
    """

    beam: int = _option(5, "beam size")
    greedy: bool = _option(False, "greedy decoding (same as --beam 1)")
    lenpen: float = _option(1.0, "length penalty exponent of beam search")
    max_len_a: float = _option(1.2, "max output length = a * source length + b")
    max_len_b: int = _option(10, "see --max-len-a")
    batch_size: int = _option(64, "sentences decoded together")
    length_beam: int | None = _option(
        None,
        "NAT runs with a length predictor (criterion ce or axe): decode the K most likely "
        "lengths in one batch and keep the best by mean log-probability (default: the run's "
        "own); refused for other runs",
    )
    bf16: bool | None = _option(
        None,
        "bfloat16 autocast on the decoding device (default: on for a CUDA device with bf16 "
        "support, off on the CPU, where it is slower; see docs/decoding.md)",
    )
    int8: bool = _option(
        False,
        "int8 matrix products on the CPU (per-channel weights, fbgemm): faster beam search, "
        "outputs close to but not equal to fp32's; see docs/decoding.md",
    )
    device: str = _option(
        "auto",
        "auto (CUDA when available, else the CPU; the CPU for --int8), cpu, cuda or cuda:N",
    )

    def __post_init__(self) -> None:
        for name in ("beam", "batch_size", "length_beam"):
            value = getattr(self, name)
            if name == "length_beam" and value is None:
                continue
            if not _is_int(value) or value < 1:
                raise OptionError(name, f"expected {{name}} >= 1; found {value!r}")
        if not _is_int(self.max_len_b):
            raise OptionError(
                "max_len_b", f"expected an integer {{name}}; found {self.max_len_b!r}"
            )
        for name in ("lenpen", "max_len_a"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise OptionError(name, f"expected a finite number for {{name}}; found {value!r}")
        if self.max_len_a < 0:
            raise OptionError("max_len_a", f"expected {{name}} >= 0; found {self.max_len_a!r}")
        if self.greedy:  # after the checks: --greedy with --beam 0 is still refused
            object.__setattr__(self, "beam", 1)

    def placement(self) -> tuple[torch.device, bool]:
        """``(device, bf16)``: the device to decode on and whether bf16 autocast is on there.
        ``ValueError`` for a device this machine lacks, int8 off the CPU, bf16 on a GPU
        without it."""
        device = resolve_device(self.device, int8=self.int8)
        bf16 = default_bf16(device) if self.bf16 is None else bool(self.bf16)
        if bf16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise OptionError(
                "bf16", f"expected a CUDA device with bfloat16 for {{name}}; found {device}"
            )
        return device, bf16


_R = TypeVar("_R")  # what a search returns per sentence
_D = SearchOptions()  # the defaults the decoders' keyword arguments read


class IncrementalModel(Protocol):
    """What the decoders need of a model (implemented by ``Transformer``)."""

    def encode(self, src_tokens: Tensor, src_lengths: Tensor) -> Any: ...

    def init_cache(self, encoder_out: Any) -> Any: ...

    def decode_step(
        self, prefix: Tensor, encoder_out: Any, cache: Any | None
    ) -> tuple[Tensor, Any | None]: ...

    def reorder_encoder_out(self, encoder_out: Any, new_order: Tensor) -> Any: ...

    def reorder_cache(
        self, cache: Any, new_order: Tensor, *, self_attn_only: bool = False
    ) -> Any: ...


@dataclass(frozen=True)
class Hypothesis:
    """A finished hypothesis: ``tokens`` without bos/eos, ``score`` = sum of log-probs (nats)
    including the eos, ``normalized`` = score / (len(tokens) + 1) ** lenpen."""

    tokens: list[int]
    score: float
    normalized: float


def strip_blank(ids: Sequence[int], blank_id: int) -> list[int]:
    """Remove every ``blank_id`` (ε) from a list of token ids."""
    return [i for i in ids if i != blank_id]


def ctc_collapse(ids: Sequence[int], blank_id: int, eos_id: int | None = None) -> list[int]:
    """CTC's rule on a stream of argmax ids: merge runs of equal ids, drop ``blank_id`` (ε);
    with ``eos_id``, stop at the first eos that survives: ``a a ε a b b -> a a b``."""
    out: list[int] = []
    prev = None
    for i in ids:
        if i != prev and i != blank_id:
            if i == eos_id:
                break
            out.append(int(i))
        prev = i
    return out


def max_lengths(
    src_tokens: Tensor,
    *,
    pad_id: int = PAD_ID,
    max_len_a: float = _D.max_len_a,
    max_len_b: int = _D.max_len_b,
    max_positions: int | None = None,
) -> Tensor:
    """(B,) longest allowed output per sentence: ``int(a * src_len + b)``, at least 1.

    ``max_positions`` (the model's) caps it so that bos + tokens + eos fits.
    """
    src_len = src_tokens.ne(pad_id).sum(dim=1).to(torch.float64)
    lengths = torch.floor(max_len_a * src_len + max_len_b).long().clamp(min=1)
    if max_positions is not None:
        lengths = lengths.clamp(max=max(max_positions - 2, 1))
    return lengths


def _model_max_positions(model: Any) -> int | None:
    cfg = getattr(model, "cfg", None)
    return getattr(cfg, "max_positions", None)


@contextlib.contextmanager
def decoding_context(
    model: Any, autocast_bf16: bool = False, device: torch.device | None = None
) -> Iterator[None]:
    """Eval mode, inference mode and (``autocast_bf16``) bf16 autocast on ``device``'s type
    (default: the model's device). A model in training mode is put in eval mode for the
    block and back after; one in eval mode is left alone (switching every module's flag
    costs as much as a small model's pass)."""
    device = model_device(model) if device is None else device
    was_training = getattr(model, "training", False)
    if was_training and hasattr(model, "eval"):
        model.eval()
    try:
        with torch.inference_mode():
            if autocast_bf16:
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    yield
            else:
                yield
    finally:
        if was_training and hasattr(model, "train"):
            model.train()


def _check_inputs(
    model: Any, src_tokens: Tensor, src_lengths: Tensor | None, min_len: int, pad_id: int
) -> tuple[Tensor, Tensor, torch.device]:
    """Checked ``(src_tokens, src_lengths, device)``, both tensors on the model's device."""
    if src_tokens.dim() != 2:
        raise ValueError(f"expected src_tokens of shape (B, S), found {tuple(src_tokens.shape)}")
    if min_len < 0:
        raise ValueError(f"expected min_len >= 0, found {min_len}")
    if src_lengths is None:
        src_lengths = src_tokens.ne(pad_id).sum(dim=1)
    if src_lengths.shape != (src_tokens.size(0),):
        raise ValueError(
            f"expected src_lengths of shape ({src_tokens.size(0)},), found {tuple(src_lengths.shape)}"
        )
    device = model_device(model, src_tokens.device)
    return src_tokens.to(device), src_lengths.to(device), device


def _mask_special(
    lprobs: Tensor, step: int, min_len: int, pad_id: int, bos_id: int, eos_id: int
) -> None:
    """In place: never pad/bos; no eos before ``min_len`` tokens (``fill_`` of the columns:
    no scalar tensor is made and copied)."""
    lprobs[:, pad_id].fill_(-math.inf)
    lprobs[:, bos_id].fill_(-math.inf)
    if step < min_len:
        lprobs[:, eos_id].fill_(-math.inf)


def _search(
    model: Any, src_tokens: Tensor, src_lengths: Tensor | None, run: Callable[..., list[_R]], *,
    min_len: int, pad_id: int, max_len_a: float, max_len_b: int, use_cache: bool,
    autocast_bf16: bool,
) -> list[_R]:  # fmt: skip
    """The frame of every search: the inputs checked and moved to the model's device, then,
    in the decoding context (:func:`decoding_context`), ``run(device, limits (B,), encoder
    output, cache or None)``, the search itself; ``[]`` for an empty batch."""
    src_tokens, src_lengths, device = _check_inputs(model, src_tokens, src_lengths, min_len, pad_id)
    if src_tokens.size(0) == 0:
        return []
    with decoding_context(model, autocast_bf16, device):
        limits = max_lengths(
            src_tokens, pad_id=pad_id, max_len_a=max_len_a, max_len_b=max_len_b,
            max_positions=_model_max_positions(model),
        )  # fmt: skip
        enc = model.encode(src_tokens, src_lengths)
        return run(device, limits, enc, model.init_cache(enc) if use_cache else None)


def _compact(done: Tensor, n_keep: int) -> tuple[Tensor, Tensor]:
    """``(rows done, rows kept)`` of a (N,) bool mask, each in order, as index tensors on its
    device, given ``n_keep`` (the host's count of False): a stable sort, no host
    synchronisation (``nonzero`` would make one)."""
    order = torch.argsort(done.to(torch.int8), stable=True)
    return order[n_keep:], order[:n_keep]


def _read_rows(
    records: list[tuple[Tensor, Tensor]], pad_id: int
) -> list[tuple[list[int], list[int]]]:
    """``(head, token ids)`` of every row of ``records`` (pairs ``head (k, h) int64, tokens
    (k, w)``, each of one width ``w``), in order, read with one host synchronisation for all
    of them."""
    if not records:
        return []
    width = max(t.size(1) for _, t in records)
    packed = torch.cat(
        [torch.cat([h, t, t.new_full((t.size(0), width - t.size(1)), pad_id)], 1)
         for h, t in records]
    ).tolist()  # fmt: skip
    h = records[0][0].size(1)
    widths = [t.size(1) for _, t in records for _ in range(t.size(0))]
    return [(row[:h], row[h : h + w]) for row, w in zip(packed, widths)]


def greedy_decode(
    model: IncrementalModel, src_tokens: Tensor, src_lengths: Tensor | None = None, *,
    max_len_a: float = _D.max_len_a, max_len_b: int = _D.max_len_b, min_len: int = 1,
    use_cache: bool = True, autocast_bf16: bool = False, pad_id: int = PAD_ID,
    bos_id: int = BOS_ID, eos_id: int = EOS_ID,
) -> list[list[int]]:  # fmt: skip
    """Greedy decoding of a batch: src_tokens (B, S) -> B token-id lists (no bos/eos).

    Runs in eval mode under ``torch.inference_mode()`` (and bf16 autocast if asked). Finished
    sentences are dropped from the batch, so the cost follows the remaining sentences. One
    host synchronisation per step (which rows ended), and one for all the outputs at the end.
    """

    def run(device: torch.device, limits: Tensor, enc: Any, cache: Any) -> list[list[int]]:
        bsz = limits.size(0)
        active = torch.arange(bsz, device=device)  # sentence id of each row
        limits_active = limits.clone()
        tokens = torch.full((bsz, 1), bos_id, dtype=torch.long, device=device)
        ended: list[tuple[Tensor, Tensor]] = []  # (sentence ids, tokens) of finished rows
        step = 0
        while active.numel() > 0:
            logits, cache = model.decode_step(tokens, enc, cache)  # (N, V)
            lprobs = logits.float()
            _mask_special(lprobs, step, min_len, pad_id, bos_id, eos_id)
            next_tok = lprobs.argmax(dim=-1)  # (N,)
            at_limit = limits_active.le(step)
            next_tok = torch.where(at_limit, torch.full_like(next_tok, eos_id), next_tok)
            done = next_tok.eq(eos_id)
            tokens = torch.cat([tokens, next_tok[:, None]], dim=1)  # (N, t+1)
            n_keep = done.tolist().count(False)  # the step's one synchronisation
            if n_keep < active.numel():
                rows, keep = _compact(done, n_keep)
                ended.append((active[rows, None], tokens[rows, 1:-1]))
                if n_keep == 0:
                    break
                active, limits_active, tokens = active[keep], limits_active[keep], tokens[keep]
                enc = model.reorder_encoder_out(enc, keep)
                if cache is not None:
                    cache = model.reorder_cache(cache, keep)
            step += 1
        results: list[list[int]] = [[] for _ in range(bsz)]
        for (sent,), ids in _read_rows(ended, pad_id):
            results[sent] = ids
        return results

    return _search(
        model, src_tokens, src_lengths, run, min_len=min_len, pad_id=pad_id, max_len_a=max_len_a,
        max_len_b=max_len_b, use_cache=use_cache, autocast_bf16=autocast_bf16,
    )  # fmt: skip


def beam_search_hypotheses(
    model: IncrementalModel, src_tokens: Tensor, src_lengths: Tensor | None = None, *,
    beam: int = _D.beam, lenpen: float = _D.lenpen, max_len_a: float = _D.max_len_a,
    max_len_b: int = _D.max_len_b, min_len: int = 1, use_cache: bool = True,
    autocast_bf16: bool = False, pad_id: int = PAD_ID, bos_id: int = BOS_ID, eos_id: int = EOS_ID,
) -> list[list[Hypothesis]]:  # fmt: skip
    """Batched beam search: src_tokens (B, S) -> per sentence its finished hypotheses, best first.

    See the module docstring for the length limits, length penalty and stopping rule. One
    host synchronisation per step (the stopping test: which sentences are done); the
    finished hypotheses stay on the device until the end (two more for all of them).
    """
    if beam < 1:
        raise ValueError(f"expected beam >= 1, found {beam}")

    def run(device: torch.device, limits: Tensor, enc: Any, cache: Any) -> list[list[Hypothesis]]:
        bsz = limits.size(0)
        # with a cache, a model that supports it keeps one encoder row per sentence (the
        # beams of a sentence share the cross-attention keys/values)
        grouped = cache is not None and getattr(model, "grouped_cross_attention", False)
        # rows are (sentence, beam) pairs, sentence-major: row = b * width + j. The first step
        # runs one row per sentence (all beams would be identical), then `width` = beam.
        width = 1
        active = torch.arange(bsz, device=device)  # sentence ids of the active sentences (Ba,)
        limits_active = limits.clone()  # (Ba,)
        tokens = torch.full((bsz, 1), bos_id, dtype=torch.long, device=device)  # (N, t)
        scores = torch.zeros(bsz, 1, device=device)  # (Ba, width) sums of log-probs
        n_ended = torch.zeros(bsz, dtype=torch.long, device=device)  # hypotheses per sentence
        ended: list[tuple[int, Tensor, Tensor, Tensor, Tensor]] = []  # per step, on the device
        step = 0
        while True:
            n_active = active.numel()
            logits, cache = model.decode_step(tokens, enc, cache)  # (N, V)
            lprobs = torch.log_softmax(logits.float(), dim=-1)  # (N, V)
            vocab = lprobs.size(1)
            _mask_special(lprobs, step, min_len, pad_id, bos_id, eos_id)
            # force eos at the length limit (masks, not a branch on their values)
            at_limit = limits_active.le(step)[:, None].expand(n_active, width).reshape(-1, 1)
            eos_col = lprobs[:, eos_id].clone()
            lprobs.masked_fill_(at_limit, -math.inf)
            lprobs[:, eos_id] = eos_col
            cand = lprobs.add_(scores.view(-1, 1)).view(n_active, width * vocab)  # (Ba, width*V)
            k = min(2 * beam, width * vocab)
            cand_scores, cand_idx = cand.topk(k, dim=1)  # (Ba, k)
            cand_beam = torch.div(cand_idx, vocab, rounding_mode="floor")  # (Ba, k)
            cand_tok = cand_idx % vocab  # (Ba, k)
            is_eos = cand_tok.eq(eos_id)  # (Ba, k)

            # finalise eos candidates among the top `beam` (fairseq's rule), in row-major
            # order, while their sentence has fewer than `beam` hypotheses
            fin = is_eos[:, :beam] & torch.isfinite(cand_scores[:, :beam])  # (Ba, <=beam)
            before = n_ended[active]  # (Ba,)
            taken = fin & (before[:, None] + fin.cumsum(dim=1)).le(beam)
            n_done = before + taken.sum(dim=1)  # (Ba,) hypotheses ended per sentence
            n_ended[active] = n_done
            fin_src = torch.arange(n_active, device=device)[:, None] * width + cand_beam[:, :beam]
            ended.append(
                (step, active, taken, cand_scores[:, : taken.size(1)], tokens[fin_src.view(-1), 1:])
            )

            # continue with the best `beam` non-eos candidates
            cont = cand_scores.masked_fill(is_eos, -math.inf)  # (Ba, k)
            if cont.size(1) < beam:  # tiny vocabularies: pad with impossible candidates
                fill = cont.new_full((n_active, beam - cont.size(1)), -math.inf)
                cont = torch.cat([cont, fill], dim=1)
                cand_beam = torch.cat([cand_beam, torch.zeros_like(fill, dtype=torch.long)], 1)
                cand_tok = torch.cat([cand_tok, torch.full_like(fill, pad_id, dtype=torch.long)], 1)
            sel_scores, sel_pos = cont.topk(beam, dim=1)  # (Ba, beam)
            sel_beam = cand_beam.gather(1, sel_pos)  # (Ba, beam)
            sel_tok = cand_tok.gather(1, sel_pos)  # (Ba, beam)

            sent_done = (
                n_done.ge(beam) | limits_active.le(step) | ~torch.isfinite(sel_scores).any(dim=1)
            )  # (Ba,)
            n_keep = sent_done.tolist().count(False)  # the stopping test: the one sync
            step += 1
            if n_keep == 0:
                break
            base = torch.arange(n_active, device=device)[:, None] * width  # (Ba, 1)
            src_rows = (base + sel_beam).view(-1)  # (Ba*beam,) rows of the same sentence
            regroup = width != beam
            keep = None
            if n_keep < n_active:
                _, keep = _compact(sent_done, n_keep)  # (Ba',)
                src_rows = src_rows.view(n_active, beam)[keep].view(-1)
                active, limits_active = active[keep], limits_active[keep]
                sel_scores, sel_tok = sel_scores[keep], sel_tok[keep]
                regroup = True
            if regroup and grouped:
                # one encoder / cross-attention row per sentence, shared by its beams
                if keep is None:  # width 1 -> beam: the sentences are unchanged
                    cache = model.reorder_cache(cache, src_rows, self_attn_only=True)
                else:
                    enc = model.reorder_encoder_out(enc, keep)
                    cache = model.reorder_cache(cache, src_rows, cross_order=keep)
            elif regroup:  # the rows of a sentence changed: move encoder rows too
                enc = model.reorder_encoder_out(enc, src_rows)
                if cache is not None:
                    cache = model.reorder_cache(cache, src_rows)
            elif cache is not None:
                # beams only move within their sentence: encoder rows stay valid
                cache = model.reorder_cache(cache, src_rows, self_attn_only=True)
            tokens = torch.cat([tokens[src_rows], sel_tok.reshape(-1, 1)], dim=1)  # (N, t+1)
            scores = sel_scores
            width = beam
        return _hypotheses(ended, bsz, lenpen, pad_id)

    return _search(
        model, src_tokens, src_lengths, run, min_len=min_len, pad_id=pad_id, max_len_a=max_len_a,
        max_len_b=max_len_b, use_cache=use_cache, autocast_bf16=autocast_bf16,
    )  # fmt: skip


def _hypotheses(
    ended: list[tuple[int, Tensor, Tensor, Tensor, Tensor]], bsz: int, lenpen: float,
    pad_id: int,
) -> list[list[Hypothesis]]:  # fmt: skip
    """The finished hypotheses of every sentence, best first, from the per-step records of
    :func:`beam_search_hypotheses` ``(step, sentence ids (Ba,), taken (Ba, c) bool, scores
    (Ba, c), tokens (Ba*c, step))``, read with two host synchronisations for all of them."""
    heads = [
        (torch.stack([sent[:, None].expand(taken.shape), taken.long()], dim=2).view(-1, 2), toks)
        for _, sent, taken, _, toks in ended
    ]  # fmt: skip
    rows = _read_rows(heads, pad_id)
    score_list = torch.cat([sc.reshape(-1) for _, _, _, sc, _ in ended]).tolist()
    steps = [step for step, _, taken, _, _ in ended for _ in range(taken.numel())]
    finished: list[list[Hypothesis]] = [[] for _ in range(bsz)]
    for ((sent, taken), ids), score, step in zip(rows, score_list, steps):
        if taken:
            finished[sent].append(Hypothesis(ids, score, score / float(step + 1) ** lenpen))
    for hyps in finished:
        hyps.sort(key=lambda h: h.normalized, reverse=True)
    return finished


def beam_search(
    model: IncrementalModel, src_tokens: Tensor, src_lengths: Tensor | None = None, **options: Any
) -> list[list[int]]:
    """Beam search: src_tokens (B, S) -> best token ids per sentence (no bos/eos), in input
    order. Keyword options (beam, lenpen, max lengths, ...) as :func:`beam_search_hypotheses`."""
    hyps = beam_search_hypotheses(model, src_tokens, src_lengths, **options)
    return [h[0].tokens if h else [] for h in hyps]


def search_decoder(
    options: SearchOptions, tokenizer: Any, *, use_cache: bool = True
) -> BatchDecoder:
    """The stack's search as a :data:`BatchDecoder`: beam search with ``options`` (greedy for
    beam 1), the tokenizer's special ids, bf16 autocast when ``options.bf16`` is true (None
    counts as off here: :meth:`SearchOptions.placement` resolves it)."""
    kwargs: dict[str, Any] = dict(
        max_len_a=options.max_len_a, max_len_b=options.max_len_b, use_cache=use_cache,
        autocast_bf16=bool(options.bf16), pad_id=tokenizer.pad_id, bos_id=tokenizer.bos_id,
        eos_id=tokenizer.eos_id,
    )  # fmt: skip
    if options.beam == 1:
        return lambda model, src, lengths: greedy_decode(model, src, lengths, **kwargs)
    kwargs.update(beam=options.beam, lenpen=options.lenpen)
    return lambda model, src, lengths: beam_search(model, src, lengths, **kwargs)


def _collate_sources(
    ids: list[list[int]], pad_id: int, device: torch.device | str
) -> tuple[Tensor, Tensor]:
    """Right-pad token id lists into (B, S) plus lengths (B,)."""
    lengths = torch.tensor([len(x) for x in ids], dtype=torch.long)
    out = torch.full((len(ids), int(lengths.max())), pad_id, dtype=torch.long)
    for i, x in enumerate(ids):
        out[i, : len(x)] = torch.tensor(x, dtype=torch.long)
    return out.to(device), lengths.to(device)


class SourceTruncatedWarning(UserWarning):
    """Some sources were longer than the model's positions and were cut to fit.

    ``indices``: 0-based positions of those sentences in the input; ``max_positions``: the
    model's limit (tokens + eos).
    """

    def __init__(self, indices: Sequence[int], max_positions: int) -> None:
        self.indices = list(indices)
        self.max_positions = max_positions
        super().__init__(
            f"{len(self.indices)} source(s) longer than the model's {max_positions} positions "
            f"(tokens + eos) truncated to fit: indices {self.indices[:10]}"
        )


def encode_sources(
    tokenizer: Any,
    sentences: Sequence[str],
    *,
    append_eos: bool = True,
    max_positions: int | None = None,
) -> tuple[list[list[int]], list[int]]:
    """Token ids of each source (eos appended when ``append_eos`` and not already there) and
    the indices of the sources cut to ``max_positions`` ids (the last one kept an eos).

    ``max_positions`` None: no limit.
    """
    eos_id = tokenizer.eos_id
    encoded: list[list[int]] = []
    truncated: list[int] = []
    for i, s in enumerate(sentences):
        ids = list(tokenizer.encode(s))
        if append_eos and (not ids or ids[-1] != eos_id):
            ids.append(eos_id)
        if max_positions is not None and len(ids) > max_positions:
            ids = ids[: max_positions - 1] + [ids[-1]]  # keep the final eos (or last token)
            truncated.append(i)
        encoded.append(ids)
    return encoded, truncated


def translate_sentences(
    model: IncrementalModel,
    tokenizer: Any,
    sentences: Sequence[str],
    *,
    beam: int = _D.beam,
    batch_size: int = _D.batch_size,
    lenpen: float = _D.lenpen,
    max_len_a: float = _D.max_len_a,
    max_len_b: int = _D.max_len_b,
    use_cache: bool = True,
    autocast_bf16: bool = False,
    append_eos: bool = True,
    remove_blank: bool = True,
    progress: Callable[[int], None] | bool | None = None,
    device: torch.device | str | None = None,
    decode_batch: BatchDecoder | None = None,
) -> list[str]:
    """Translate raw strings with a model; returns detokenised strings in input order.

    ``tokenizer`` provides ``encode(str) -> list[int]``, ``decode(list[int]) -> str`` and the
    ids ``pad_id``, ``bos_id``, ``eos_id``, ``blank_id``. Sources get eos appended
    (``append_eos``, as in training batches) unless the tokenizer already put it there; a source
    longer than the model's ``cfg.max_positions`` is truncated to fit (eos kept) and reported
    with one :class:`SourceTruncatedWarning` naming every such index. Sentences are sorted by
    length, decoded in batches of ``batch_size`` and restored to input order; blanks (ε) are
    stripped before ``decode`` when ``remove_blank``.

    ``decode_batch``: the :data:`BatchDecoder` (how a trained run decodes:
    :meth:`latalign.translate.run.TrainedRun.translate` passes its own); default: the stack's
    search with ``beam``, ``lenpen``, ``max_len_a``/``max_len_b``, ``use_cache`` and
    ``autocast_bf16`` (:func:`search_decoder`; greedy when ``beam == 1``).
    ``progress``: a callable given the number of sentences just finished, or True for tqdm.
    ``device``: where the sources are built (default and normally: the model's device; the
    decoders move them there in any case).
    """
    if batch_size < 1:
        raise ValueError(f"expected batch_size >= 1, found {batch_size}")
    if beam < 1:
        raise ValueError(f"expected beam >= 1, found {beam}")
    if decode_batch is None:
        options = SearchOptions(beam=beam, lenpen=lenpen, max_len_a=max_len_a, max_len_b=max_len_b,
                                bf16=autocast_bf16)  # fmt: skip
        decode_batch = search_decoder(options, tokenizer, use_cache=use_cache)
    pad_id = tokenizer.pad_id
    blank_id = getattr(tokenizer, "blank_id", None)
    device = model_device(model) if device is None else torch.device(device)
    limit = _model_max_positions(model)
    encoded, truncated = encode_sources(
        tokenizer, sentences, append_eos=append_eos, max_positions=limit
    )
    if truncated and limit is not None:
        warnings.warn(SourceTruncatedWarning(truncated, limit), stacklevel=2)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    outputs: list[str] = [""] * len(encoded)
    bar = tqdm(total=len(encoded), unit="sent") if progress is True else None
    callback = bar.update if bar is not None else (progress or None)
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            src, lengths = _collate_sources([encoded[i] for i in idx], pad_id, device)
            for i, h in zip(idx, decode_batch(model, src, lengths)):
                if remove_blank and blank_id is not None:
                    h = strip_blank(h, blank_id)
                outputs[i] = tokenizer.decode(h)
            if callback is not None:
                callback(len(idx))
    finally:
        if bar is not None:
            bar.close()
    return outputs
