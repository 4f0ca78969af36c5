"""Decoder-input regimes: what the autoregressive decoder is fed during training.

Teacher forcing feeds position ``j`` the gold token ``y_{j−1}`` (``prev_output_tokens =
bos y_1 … y_n``). The paper (§5) shows why that breaks latent alignment objectives: a
prediction ``p_j`` that may score a target ``y_i`` with ``i < j`` can copy it from its input.
The regimes below change the input and leave the targets, the criterion and the model alone,
so each is usable with any criterion (``ce``, ``axe``, ``causal_axe``, …):

``teacher_forcing``
    the plain input (the identity transform).
``doubled``
    every input token twice (``2T`` positions, layout ``"doubled"``; criterion
    ``doubled_ctc``, decoded by :func:`~latalign.translate.doubled.doubled_greedy_decode`).
``scheduled_sampling``
    the two-pass form used for transformers (Mihaylova & Martins, 2019): a first pass
    without gradient under teacher forcing (eval mode, so no dropout) gives the model's greedy
    predictions ``ŷ_j = argmax p_j``; the second pass feeds position ``j + 1`` the prediction
    ``ŷ_j`` with probability ``q(step)`` and the gold ``y_j`` otherwise (independently per
    position). ``q`` follows a ``schedule`` (:func:`sampling_probability`): ``constant``,
    ``linear`` or ``inverse_sigmoid`` (Bengio et al., 2015), rising from 0 to ``regime_p``
    over ``schedule_updates`` updates.
``free_running``
    every input is the model's own previous prediction (greedy, or sampled at a
    ``temperature``). Done in two passes: an incremental decode without gradient
    (:meth:`Transformer.decode_step` with its key/value cache, eval mode; ``T`` cheap steps of
    one position each) generates ``ŷ_1 … ŷ_{T−1}``; then one ordinary teacher-forced-shape
    pass with gradient reads ``bos ŷ_1 … ŷ_{T−1}``. The second pass computes exactly the
    logits the generation saw (up to dropout), so the loss is the free-running loss, at the
    cost of one extra no-grad incremental decode per batch. Gradients do not flow through
    the argmax/sampling (as in the scheduled-sampling literature).
``corruption``
    word dropout: every non-bos input position is replaced by ``unk`` with probability
    ``regime_p``.
``delayed``
    delayed teacher forcing: position ``j`` is fed ``y_{j−k}`` (``bos`` when ``j − k < 1``),
    ``k = delay``; ``k = 1`` is plain teacher forcing. Decoding mirrors it:
    :class:`DelayedInputModel` wraps the model so the decoders feed it ``ŷ_{j−k}``.

The positive control (teacher forcing plus CTC on upsampled encoder states) is an arch, not a
regime: ``ar_aux_ctc`` (:mod:`latalign.translate.aux_ctc`), trainable under teacher forcing and
the four regimes that change the input (not ``doubled``).

Each regime is an entry of :data:`latalign.translate.registry.REGIMES` that reads its options
from TrainConfig's own fields (``regime_p``, ``schedule``, ``schedule_updates``,
``temperature``, ``delay``; None = the default declared below)::

    TrainConfig(regime="scheduled_sampling", schedule="linear", schedule_updates=500,
                regime_p=0.5)                      # q rises 0 -> 0.5 over 500 updates
    TrainConfig(regime="free_running", temperature=0.0)
    TrainConfig(regime="corruption", regime_p=0.3)
    TrainConfig(regime="delayed", delay=2)

(CLI: ``--regime … --regime-p …`` etc.; bad values are a ``ValueError`` from ``TrainConfig``,
exit status 2 on the CLI.) Validation feeds what inference feeds with gold tokens: the
delayed input for ``delayed``, the doubled one for ``doubled``, plain teacher forcing for the
others.

Shapes: B sentences, T decoder positions, S source positions, C model width, V vocabulary.
Token ids follow ``docs/ARCHITECTURE.md`` (pad 0, bos 1, eos 2, unk 3, ε 4).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from latalign.translate.decode import BatchDecoder, SearchOptions, search_decoder
from latalign.translate.distributed import unwrap
from latalign.translate.doubled import double_inputs, doubled_greedy_decode
from latalign.translate.registry import Regime, register_regime

__all__ = [
    "SCHEDULES",
    "DelayedInputModel",
    "corrupt_inputs",
    "delayed_inputs",
    "doubled",
    "free_running_inputs",
    "mix_inputs",
    "sampling_probability",
    "scheduled_sampling_inputs",
    "teacher_forced_predictions",
    "teacher_forcing",
]

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
SCHEDULES = ("constant", "linear", "inverse_sigmoid")


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _expect(ok: bool, expected: str, found: Any) -> None:
    """``ValueError("expected <expected>; found <found!r>")`` unless ``ok``."""
    if not ok:
        raise ValueError(f"expected {expected}; found {found!r}")


# --------------------------------------------------------------------------- schedules


def _inverse_sigmoid_k(ramp_updates: int) -> float:
    """Bengio et al.'s ``k`` whose curve ``k / (k + exp(t / k))`` falls to half its height
    near the middle of the ramp: ``k · ln k = ramp / 2`` (``k ≥ e``), by bisection."""
    target = ramp_updates / 2.0
    lo, hi = math.e, max(math.e, target) + 1.0
    if lo * math.log(lo) >= target:
        return lo
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if mid * math.log(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def sampling_probability(schedule: str, step: int, sample_prob: float, ramp_updates: int) -> float:
    """The probability ``q ∈ [0, sample_prob]`` of feeding the model's prediction at update
    ``step`` (0-based). ``constant``: ``sample_prob``. ``linear``: ``sample_prob · min(1,
    step / ramp_updates)``. ``inverse_sigmoid``: Bengio et al.'s teacher-forcing probability
    ``ε(t) = k / (k + exp(t / k))`` turned into ``q = sample_prob · (ε(0) − ε(t)) / (ε(0) −
    ε(ramp))`` (so it starts at 0 and reaches ``sample_prob`` at ``ramp_updates``, constant
    after), with ``k`` from :func:`_inverse_sigmoid_k`. Monotone non-decreasing in ``step``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"expected a schedule in {{{', '.join(SCHEDULES)}}}; found {schedule!r}")
    if not 0.0 <= sample_prob <= 1.0:
        raise ValueError(f"expected sample_prob in [0, 1]; found {sample_prob}")
    if ramp_updates < 1:
        raise ValueError(f"expected ramp_updates >= 1; found {ramp_updates}")
    if step < 0:
        raise ValueError(f"expected step >= 0; found {step}")
    if schedule == "constant":
        return float(sample_prob)
    if step >= ramp_updates:
        return float(sample_prob)
    if schedule == "linear":
        return float(sample_prob) * step / ramp_updates
    k = _inverse_sigmoid_k(ramp_updates)

    def eps(t: float) -> float:
        return k / (k + math.exp(min(t / k, 700.0)))

    return float(sample_prob) * (eps(0) - eps(step)) / (eps(0) - eps(ramp_updates))


# --------------------------------------------------------------------------- pure transforms


def _real_positions(prev: Tensor, pad_id: int) -> Tensor:
    """(B, T) bool: positions that hold a real input (not padding)."""
    return prev.ne(pad_id)


def delayed_inputs(
    prev_output_tokens: Tensor, delay: int, *, bos_id: int = BOS_ID, pad_id: int = PAD_ID
) -> Tensor:
    """Delayed teacher forcing: (B, T) ``bos y_1 … y_n`` (+pad) -> (B, T) whose position ``j``
    (1-based) holds ``y_{j−k}`` (``bos`` for ``j ≤ k``); padding stays padding. ``k = 1``
    returns the input unchanged."""
    if not _is_int(delay) or delay < 1:
        raise ValueError(f"expected delay k >= 1 (1 = teacher forcing); found {delay!r}")
    if delay == 1:
        return prev_output_tokens.clone()
    b, t = prev_output_tokens.shape
    shift = delay - 1
    out = torch.full_like(prev_output_tokens, bos_id)
    if shift < t:
        out[:, shift:] = prev_output_tokens[:, : t - shift]
    return out.masked_fill(~_real_positions(prev_output_tokens, pad_id), pad_id)


def corrupt_inputs(
    prev_output_tokens: Tensor, p: float, *, mask_id: int = UNK_ID, pad_id: int = PAD_ID,
    generator: torch.Generator | None = None,
) -> Tensor:  # fmt: skip
    """Word dropout: each input at positions ``j ≥ 2`` (never ``bos``, never padding) becomes
    ``mask_id`` with probability ``p`` (independently). (B, T) -> (B, T)."""
    if not _is_number(p) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"expected corruption probability in [0, 1]; found {p!r}")
    prev = prev_output_tokens
    if p == 0.0:
        return prev.clone()
    eligible = _real_positions(prev, pad_id)
    eligible[:, 0] = False
    draw = torch.rand(prev.shape, generator=generator, device=prev.device) < p
    return prev.masked_fill(draw & eligible, mask_id)


def mix_inputs(
    prev_output_tokens: Tensor,
    predictions: Tensor,
    q: float,
    *,
    pad_id: int = PAD_ID,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Scheduled sampling's second-pass input: position ``j + 1`` gets ``predictions[:, j−1]``
    (the model's ``ŷ_j``, 1-based ``j``) with probability ``q``, else the gold ``y_j``; ``bos``
    and padding are kept. ``predictions`` (B, T) is ``argmax p_1 … argmax p_T``."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"expected a sampling probability in [0, 1]; found {q}")
    if predictions.shape != prev_output_tokens.shape:
        raise ValueError(
            f"expected predictions of shape {tuple(prev_output_tokens.shape)}; "
            f"found {tuple(predictions.shape)}"
        )
    prev = prev_output_tokens
    shifted = torch.cat([prev[:, :1], predictions[:, :-1]], dim=1)  # ŷ_{j-1} at position j
    eligible = _real_positions(prev, pad_id)
    eligible[:, 0] = False
    if q == 0.0:
        return prev.clone()
    if q == 1.0:
        take = eligible
    else:
        take = (torch.rand(prev.shape, generator=generator, device=prev.device) < q) & eligible
    return torch.where(take, shifted, prev)


def _greedy(logits: Tensor, pad_id: int, bos_id: int) -> Tensor:
    """argmax over the vocabulary with pad and bos excluded (as the decoders do)."""
    lp = logits.float().clone()
    lp[..., pad_id] = -math.inf
    lp[..., bos_id] = -math.inf
    return lp.argmax(dim=-1)


def _sample(
    logits: Tensor, temperature: float, pad_id: int, bos_id: int, generator: torch.Generator | None
) -> Tensor:
    """(N, V) -> (N,): greedy for temperature 0, else a draw from softmax(logits / T)."""
    if temperature == 0:
        return _greedy(logits, pad_id, bos_id)
    lp = logits.float() / temperature
    lp[..., pad_id] = -math.inf
    lp[..., bos_id] = -math.inf
    return torch.multinomial(torch.softmax(lp, dim=-1), 1, generator=generator).squeeze(-1)


class _EvalMode:
    """Eval mode inside the block, the previous mode after it."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.was = model, model.training

    def __enter__(self) -> None:
        self.model.eval()

    def __exit__(self, *exc: Any) -> None:
        self.model.train(self.was)


@torch.no_grad()
def teacher_forced_predictions(
    model: nn.Module, batch: Any, *, pad_id: int = PAD_ID, bos_id: int = BOS_ID
) -> Tensor:
    """Scheduled sampling's first pass: (B, T) greedy predictions ``argmax p_j`` of the model
    under teacher forcing, without gradient, in eval mode (no dropout)."""
    with _EvalMode(model):
        logits = model(batch.src_tokens, batch.src_lengths, batch.prev_output_tokens)
    return _greedy(logits, pad_id, bos_id)


def scheduled_sampling_inputs(
    model: nn.Module,
    batch: Any,
    q: float,
    *,
    pad_id: int = PAD_ID,
    bos_id: int = BOS_ID,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Two-pass scheduled sampling: the second pass's (B, T) decoder input
    (:func:`teacher_forced_predictions`, then :func:`mix_inputs` with probability ``q``).
    ``q = 0`` skips the first pass and returns the teacher-forcing input."""
    if q == 0.0:
        return batch.prev_output_tokens.clone()
    pred = teacher_forced_predictions(model, batch, pad_id=pad_id, bos_id=bos_id)
    return mix_inputs(batch.prev_output_tokens, pred, q, pad_id=pad_id, generator=generator)


@torch.no_grad()
def free_running_inputs(
    model: nn.Module,
    batch: Any,
    *,
    temperature: float = 0.0,
    pad_id: int = PAD_ID,
    bos_id: int = BOS_ID,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(B, T) decoder input ``bos ŷ_1 … ŷ_{T−1}`` where ``ŷ_j`` is the model's own
    prediction at position ``j`` given ``bos ŷ_1 … ŷ_{j−1}`` (greedy, or sampled at
    ``temperature``), generated incrementally with the key/value cache, without gradient, in
    eval mode; padding as in ``batch.prev_output_tokens``. Generation does not stop at eos:
    every sentence gets exactly its target length of inputs (an eos the model emits early is
    fed on like any token)."""
    prev = batch.prev_output_tokens
    b, t = prev.shape
    tokens = torch.full((b, 1), bos_id, dtype=prev.dtype, device=prev.device)
    with _EvalMode(model):
        enc = model.encode(batch.src_tokens, batch.src_lengths)
        cache = model.init_cache(enc)
        for _ in range(t - 1):
            logits, cache = model.decode_step(tokens, enc, cache)  # (B, V)
            nxt = _sample(logits, temperature, pad_id, bos_id, generator)
            tokens = torch.cat([tokens, nxt[:, None].to(prev.dtype)], dim=1)
    return tokens.masked_fill(~_real_positions(prev, pad_id), pad_id)


# --------------------------------------------------------------------------- delayed decoding


class DelayedInputModel(nn.Module):
    """A model trained with delayed teacher forcing, seen through the decoders' protocol.

    The decoders hand :meth:`decode_step` the prefix ``bos ŷ_1 … ŷ_{t−1}``; the wrapped model
    is fed ``x_j = ŷ_{j−k}`` instead (``bos`` for ``j ≤ k``), exactly its training input, so
    greedy and beam search work unchanged. ``forward`` applies :func:`delayed_inputs` to a
    teacher-forcing input. Everything else is delegated.
    """

    def __init__(self, model: nn.Module, delay: int, bos_id: int = BOS_ID) -> None:
        super().__init__()
        if not _is_int(delay) or delay < 1:
            raise ValueError(f"expected delay k >= 1; found {delay!r}")
        self.inner = model
        self.delay = delay
        self.bos_id = bos_id
        self.cfg = getattr(model, "cfg", None)
        self.grouped_cross_attention = getattr(model, "grouped_cross_attention", False)

    def forward(self, src_tokens: Tensor, src_lengths: Tensor | None, prev: Tensor) -> Tensor:
        pad = getattr(self.inner, "pad_id", PAD_ID)
        return self.inner(
            src_tokens,
            src_lengths,
            delayed_inputs(prev, self.delay, bos_id=self.bos_id, pad_id=pad),
        )

    def encode(self, src_tokens: Tensor, src_lengths: Tensor | None = None) -> Any:
        return self.inner.encode(src_tokens, src_lengths)

    def init_cache(self, encoder_out: Any) -> Any:
        return self.inner.init_cache(encoder_out)

    def decode_step(self, prefix: Tensor, encoder_out: Any, cache: Any | None = None):
        """prefix (N, t) ``bos ŷ_1 … ŷ_{t−1}`` -> the wrapped model's logits (N, V) for the
        input ``x_1 … x_t`` with ``x_j = ŷ_{j−k}``."""
        shift = self.delay - 1
        if shift:
            n, t = prefix.shape
            pad = torch.full((n, shift), self.bos_id, dtype=prefix.dtype, device=prefix.device)
            prefix = torch.cat([pad, prefix], dim=1)[:, :t]
        return self.inner.decode_step(prefix, encoder_out, cache)

    def reorder_encoder_out(self, encoder_out: Any, new_order: Tensor) -> Any:
        return self.inner.reorder_encoder_out(encoder_out, new_order)

    def reorder_cache(self, cache: Any, new_order: Tensor, **kwargs: Any) -> Any:
        return self.inner.reorder_cache(cache, new_order, **kwargs)


# --------------------------------------------------------------------------- the registry


def teacher_forcing(model: nn.Module, batch: Any, *, update: int | None) -> Tensor:
    """``bos y_1 … y_n`` (+pad): the batch's ``prev_output_tokens``."""
    return batch.prev_output_tokens


def doubled(model: nn.Module, batch: Any, *, update: int | None) -> Tensor:
    """Every decoder input token twice (layout ``"doubled"``; see :mod:`.doubled`)."""
    return double_inputs(batch.prev_output_tokens)


class _Sampled:
    """A regime that transforms the input in training and feeds teacher forcing in
    validation: ``transform(model, batch, update)`` (model unwrapped, ids bound)."""

    def __init__(self, transform: Any) -> None:
        self.transform = transform

    def __call__(self, model: nn.Module, batch: Any, *, update: int | None) -> Tensor:
        if update is None:
            return batch.prev_output_tokens
        return self.transform(unwrap(model), batch, update)


def _ids(tokenizer: Any) -> dict[str, int]:
    return {"pad_id": tokenizer.pad_id, "bos_id": tokenizer.bos_id}


def _scheduled_sampling(cfg: Any, tokenizer: Any) -> _Sampled:
    schedule, ramp, p = (
        cfg.option("schedule"),
        cfg.option("schedule_updates"),
        cfg.option("regime_p"),
    )
    ids = _ids(tokenizer)

    def transform(model: nn.Module, batch: Any, update: int) -> Tensor:
        q = sampling_probability(schedule, update, p, ramp)
        return scheduled_sampling_inputs(model, batch, q, **ids)

    return _Sampled(transform)


def _free_running(cfg: Any, tokenizer: Any) -> _Sampled:
    temperature, ids = cfg.option("temperature"), _ids(tokenizer)
    return _Sampled(lambda model, batch, update: free_running_inputs(
        model, batch, temperature=temperature, **ids))  # fmt: skip


def _corruption(cfg: Any, tokenizer: Any) -> _Sampled:
    p, pad_id = cfg.option("regime_p"), tokenizer.pad_id
    return _Sampled(lambda model, batch, update: corrupt_inputs(
        batch.prev_output_tokens, p, mask_id=UNK_ID, pad_id=pad_id))  # fmt: skip


def _delayed(cfg: Any, tokenizer: Any) -> Any:
    k, ids = cfg.option("delay"), _ids(tokenizer)
    return lambda model, batch, *, update: delayed_inputs(batch.prev_output_tokens, k, **ids)


def _check_p(cfg: Any) -> None:
    p = cfg.option("regime_p")
    _expect(_is_number(p) and 0.0 <= float(p) <= 1.0, "regime_p in [0, 1]", p)


def _check_scheduled_sampling(cfg: Any) -> None:
    schedule, ramp = cfg.option("schedule"), cfg.option("schedule_updates")
    _expect(schedule in SCHEDULES, f"a schedule in {{{', '.join(SCHEDULES)}}}", schedule)
    _expect(_is_int(ramp) and ramp >= 1, "schedule_updates >= 1", ramp)
    _check_p(cfg)


def _check_free_running(cfg: Any) -> None:
    t = cfg.option("temperature")
    _expect(_is_number(t) and math.isfinite(t) and t >= 0, "temperature >= 0 (0 = greedy)", t)


def _check_delayed(cfg: Any) -> None:
    k = cfg.option("delay")
    _expect(_is_int(k) and k >= 1, "delay k >= 1 (1 = teacher forcing)", k)


def _delayed_decoder(cfg: Any, tokenizer: Any, options: SearchOptions) -> BatchDecoder:
    """Beam search (or greedy) through :class:`DelayedInputModel`: the input it trained on."""
    search, k = search_decoder(options, tokenizer), cfg.option("delay")
    if k == 1:
        return search
    return lambda model, src, lengths: search(
        DelayedInputModel(model, k, bos_id=tokenizer.bos_id), src, lengths
    )


def _doubled_decoder(cfg: Any, tokenizer: Any, options: SearchOptions) -> BatchDecoder:
    """The doubled greedy decoder (beam options do not apply)."""
    return partial(
        doubled_greedy_decode, blank_id=tokenizer.blank_id, pad_id=tokenizer.pad_id,
        bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id, max_len_a=options.max_len_a,
        max_len_b=options.max_len_b, autocast_bf16=bool(options.bf16),
    )  # fmt: skip


for _regime in (
    Regime("teacher_forcing", lambda cfg, tok: teacher_forcing,
           help="decoder input bos y_1 … y_n (the paper's setting, the default)"),
    Regime("doubled", lambda cfg, tok: doubled, layout="doubled", decoder=_doubled_decoder,
           help="every decoder input token fed twice (2T positions; criterion doubled_ctc)"),
    Regime("scheduled_sampling", _scheduled_sampling,
           options={"schedule": "linear", "schedule_updates": 1000, "regime_p": 0.5},
           check=_check_scheduled_sampling,
           help="two-pass scheduled sampling: y_{j-1} or the model's greedy prediction, the "
           "latter with a scheduled probability"),
    Regime("free_running", _free_running, options={"temperature": 0.0},
           check=_check_free_running,
           help="every input is the model's own previous prediction"),
    Regime("corruption", _corruption, options={"regime_p": 0.1}, check=_check_p,
           help="word dropout: each input replaced by unk with probability regime_p"),
    Regime("delayed", _delayed, options={"delay": 2}, check=_check_delayed,
           decoder=_delayed_decoder,
           help="delayed teacher forcing: position j is fed y_{j-k}"),
):  # fmt: skip
    register_regime(_regime)
