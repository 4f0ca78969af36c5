"""Decoder-input regimes: what the autoregressive decoder is fed during training.

Teacher forcing feeds position ``j`` the gold token ``y_{j−1}`` (``prev_output_tokens =
bos y_1 … y_n``). The paper (§5) shows why that breaks latent alignment objectives: a
prediction ``p_j`` that may score a target ``y_i`` with ``i < j`` can copy it from its input.
The regimes below change the input and leave the targets, the criterion and the model alone,
so each is usable with any criterion (``ce``, ``axe``, ``causal_axe``, …):

``teacher_forcing``
    the plain input (the identity transform).
``scheduled_sampling``
    the two-pass form used for transformers (Mihaylova & Martins, 2019): a first pass
    without gradient under teacher forcing (eval mode, so no dropout) gives the model's greedy
    predictions ``ŷ_j = argmax p_j``; the second pass feeds position ``j + 1`` the prediction
    ``ŷ_j`` with probability ``q(step)`` and the gold ``y_j`` otherwise (independently per
    position). ``q`` follows a schedule (:func:`sampling_probability`): ``constant``,
    ``linear`` or ``inverse_sigmoid`` (Bengio et al., 2015), rising from 0 to ``sample_prob``
    over ``ramp_updates`` updates.
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
    word dropout: every non-bos input position is replaced by ``mask_id`` (the tokenizer's
    ``unk``) with probability ``corrupt_prob``.
``delayed``
    delayed teacher forcing: position ``j`` is fed ``y_{j−k}`` (``bos`` when ``j − k < 1``);
    ``k = 1`` is plain teacher forcing. Decoding must mirror it:
    :class:`DelayedInputModel` wraps a model so the decoders feed it ``ŷ_{j−k}``.
``ctc_control``
    the positive control (Yan et al., 2023): teacher forcing for the decoder (any criterion)
    plus ``ctc_weight ×`` CTC on the encoder states upsampled ``ctc_upsample`` times
    (:class:`UpsampledCTCHead`); decoded with the AR decoder as usual. The alignment is then
    not tied to the decoder's teacher-forced positions.

As training options of the one ``train()`` (registered with the trainer's seam when this module
is imported; ``latalign.translate.arch.EXTENSIONS`` imports it)::

    TrainConfig(regime="scheduled_sampling", schedule="linear", schedule_updates=500,
                regime_p=0.5)                      # q rises 0 -> 0.5 over 500 updates
    TrainConfig(regime="free_running", temperature=0.0)
    TrainConfig(regime="corruption", regime_p=0.3)
    TrainConfig(regime="delayed", delay=2)
    TrainConfig(arch="ar_aux_ctc", aux_ctc_weight=1.0, upsample=3)   # the positive control

(CLI: ``--regime … --regime-p …`` etc.; bad values are a ``ValueError`` from ``TrainConfig``,
exit status 2 on the CLI.) Validation feeds :func:`evaluation_inputs`. A model trained with
``delayed`` must be decoded through :func:`decoding_model` (which wraps it in
:class:`DelayedInputModel`).

Shapes: B sentences, T decoder positions, S source positions, C model width, V vocabulary.
Token ids follow ``docs/ARCHITECTURE.md`` (pad 0, bos 1, eos 2, unk 3, ε 4).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import latalign
from latalign.translate.config import ModelConfig
from latalign.translate.model import Transformer

__all__ = [
    "AUX_CTC_ARCH",
    "REGIMES",
    "SCHEDULES",
    "AuxCTCLoss",
    "AuxCTCModelConfig",
    "AuxCTCTransformer",
    "DelayedInputModel",
    "RegimeConfig",
    "RegimeInput",
    "UpsampledCTCHead",
    "corrupt_inputs",
    "ctc_control_loss",
    "decoder_inputs",
    "decoding_model",
    "delayed_inputs",
    "evaluation_inputs",
    "free_running_inputs",
    "mix_inputs",
    "regime_config",
    "sampling_probability",
    "scheduled_sampling_inputs",
    "teacher_forced_predictions",
    "upsampled_ctc_sum",
]

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

REGIMES: dict[str, str] = {
    "teacher_forcing": "position j is fed the gold y_{j-1} (the paper's setting)",
    "scheduled_sampling": "two-pass scheduled sampling: y_{j-1} or the model's greedy "
    "prediction, the latter with a scheduled probability",
    "free_running": "every input is the model's own previous prediction",
    "corruption": "word dropout: each input replaced by unk with probability corrupt_prob",
    "delayed": "delayed teacher forcing: position j is fed y_{j-k}",
    "ctc_control": "teacher forcing + auxiliary CTC on upsampled encoder states (positive control)",
}
SCHEDULES = ("constant", "linear", "inverse_sigmoid")
#: architectures that have a decoder input a regime could change
REGIME_ARCHS = ("ar",)


@dataclass(frozen=True)
class RegimeConfig:
    """A decoder-input regime and its parameters; validated on construction (``ValueError``).

    Only the parameters of the chosen ``name`` are used; the others keep their defaults.

    Attributes:
        name: a key of :data:`REGIMES`.
        schedule: scheduled sampling: ``constant``, ``linear`` or ``inverse_sigmoid``.
        sample_prob: scheduled sampling: the final probability of feeding the model's
            prediction, in [0, 1].
        ramp_updates: scheduled sampling: updates over which the probability rises from 0 to
            ``sample_prob`` (ignored by ``constant``), ≥ 1.
        temperature: free running: 0 = greedy, > 0 = sample from softmax(logits / T).
        corrupt_prob: corruption: probability of masking each non-bos input, in [0, 1].
        mask_id: corruption: the token that replaces a masked input (default unk = 3).
        delay: delayed teacher forcing: ``k ≥ 1`` (1 = teacher forcing).
        ctc_weight: positive control: weight of the auxiliary CTC loss, ≥ 0.
        ctc_upsample: positive control: encoder states are upsampled this many times, ≥ 1.
    """

    name: str = "teacher_forcing"
    schedule: str = "linear"
    sample_prob: float = 0.5
    ramp_updates: int = 1000
    temperature: float = 0.0
    corrupt_prob: float = 0.1
    mask_id: int = UNK_ID
    delay: int = 2
    ctc_weight: float = 1.0
    ctc_upsample: int = 3

    def __post_init__(self) -> None:
        if self.name not in REGIMES:
            raise ValueError(f"expected a regime in {{{', '.join(REGIMES)}}}; found {self.name!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"expected a schedule in {{{', '.join(SCHEDULES)}}}; found {self.schedule!r}"
            )
        for field_name in ("sample_prob", "corrupt_prob"):
            value = getattr(self, field_name)
            _expect(
                _is_number(value) and 0.0 <= float(value) <= 1.0, f"{field_name} in [0, 1]", value
            )
        r, m, d, u = self.ramp_updates, self.mask_id, self.delay, self.ctc_upsample
        t, w = self.temperature, self.ctc_weight
        _expect(_is_int(r) and r >= 1, "ramp_updates >= 1", r)
        _expect(_is_number(t) and math.isfinite(t) and t >= 0, "temperature >= 0 (0 = greedy)", t)
        _expect(_is_int(m) and m >= 0, "mask_id >= 0", m)
        _expect(_is_int(d) and d >= 1, "delay k >= 1 (1 = teacher forcing)", d)
        _expect(_is_number(w) and math.isfinite(w) and w >= 0, "ctc_weight >= 0", w)
        _expect(_is_int(u) and u >= 1, "ctc_upsample >= 1", u)

    def check_arch(self, arch: str) -> None:
        """``ValueError`` when architecture ``arch`` cannot use this regime (a
        non-autoregressive model has no previous-token input to change)."""
        if self.name != "teacher_forcing" and arch not in REGIME_ARCHS:
            raise ValueError(
                f"expected --arch ar for the {self.name} regime (it changes the decoder's "
                f"previous-token inputs); found --arch {arch}"
            )

    @property
    def needs_head(self) -> bool:
        """True when training needs :class:`UpsampledCTCHead` (the positive control)."""
        return self.name == "ctc_control"

    def summary(self) -> str:
        """A short label, e.g. ``"corruption p=0.3"``."""
        n = self.name
        if n == "scheduled_sampling":
            return f"scheduled sampling ({self.schedule}, q→{self.sample_prob:g})"
        if n == "free_running":
            return "free running" + (f" (T={self.temperature:g})" if self.temperature else "")
        if n == "corruption":
            return f"corruption p={self.corrupt_prob:g}"
        if n == "delayed":
            return f"delayed k={self.delay}"
        if n == "ctc_control":
            return f"+CTC on encoder ×{self.ctc_upsample} (w={self.ctc_weight:g})"
        return "teacher forcing"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    prev_output_tokens: Tensor,
    p: float,
    *,
    mask_id: int = UNK_ID,
    pad_id: int = PAD_ID,
    generator: torch.Generator | None = None,
) -> Tensor:
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


# --------------------------------------------------------------------------- dispatch


def decoder_inputs(
    regime: RegimeConfig,
    model: nn.Module,
    batch: Any,
    step: int,
    *,
    pad_id: int = PAD_ID,
    bos_id: int = BOS_ID,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The (B, T) decoder input of a training batch under ``regime`` at update ``step``
    (0-based). Teacher forcing and the positive control return ``prev_output_tokens``
    itself (no copy)."""
    name = regime.name
    prev = batch.prev_output_tokens
    if name in ("teacher_forcing", "ctc_control"):
        return prev
    if name == "scheduled_sampling":
        q = sampling_probability(regime.schedule, step, regime.sample_prob, regime.ramp_updates)
        return scheduled_sampling_inputs(
            model, batch, q, pad_id=pad_id, bos_id=bos_id, generator=generator
        )
    if name == "free_running":
        return free_running_inputs(
            model, batch, temperature=regime.temperature, pad_id=pad_id, bos_id=bos_id,
            generator=generator,
        )  # fmt: skip
    if name == "corruption":
        return corrupt_inputs(
            prev, regime.corrupt_prob, mask_id=regime.mask_id, pad_id=pad_id, generator=generator
        )
    if name == "delayed":
        return delayed_inputs(prev, regime.delay, bos_id=bos_id, pad_id=pad_id)
    raise ValueError(f"expected a regime in {{{', '.join(REGIMES)}}}; found {name!r}")


def evaluation_inputs(
    regime: RegimeConfig, prev_output_tokens: Tensor, *, bos_id: int = BOS_ID, pad_id: int = PAD_ID
) -> Tensor:
    """The decoder input that mirrors inference with gold tokens (validation, analysis):
    the delayed input for ``delayed``, plain teacher forcing for every other regime (their
    inference feeds the previous token)."""
    if regime.name == "delayed":
        return delayed_inputs(prev_output_tokens, regime.delay, bos_id=bos_id, pad_id=pad_id)
    return prev_output_tokens


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


# --------------------------------------------------------------------------- positive control


class UpsampledCTCHead(nn.Module):
    """CTC head on upsampled encoder states (Yan et al., 2023, the "CTC alignments improve
    autoregressive translation" setting).

    Each encoder state (C,) becomes ``upsample`` states by one linear map C -> upsample·C,
    then ReLU, LayerNorm and a linear layer over the vocabulary:
    (B, S, C) -> logits (B, S·upsample, V); lengths ``upsample · S_b`` (source padding
    removed). Used only for the auxiliary loss; the decoder is untouched.
    """

    def __init__(self, d_model: int, vocab_size: int, upsample: int = 3) -> None:
        super().__init__()
        if not _is_int(upsample) or upsample < 1:
            raise ValueError(f"expected upsample >= 1; found {upsample!r}")
        self.upsample = upsample
        self.expand = nn.Linear(d_model, upsample * d_model)
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab_size)
        nn.init.xavier_uniform_(self.expand.weight)
        nn.init.zeros_(self.expand.bias)
        nn.init.normal_(self.out.weight, mean=0.0, std=d_model**-0.5)
        nn.init.zeros_(self.out.bias)

    def forward(self, states: Tensor, padding_mask: Tensor) -> tuple[Tensor, Tensor]:
        """states (B, S, C), padding_mask (B, S) True at padding -> (logits (B, S·u, V),
        lengths (B,)). Padding must be on the right (as :func:`collate` pads)."""
        b, s, c = states.shape
        up = self.expand(states).view(b, s * self.upsample, c)  # state i -> rows i·u … i·u+u−1
        logits = self.out(self.norm(F.relu(up)))
        lengths = (~padding_mask).sum(dim=1) * self.upsample
        return logits, lengths


@dataclass
class AuxCTCModelConfig(ModelConfig):
    """:class:`ModelConfig` plus the upsampling of the auxiliary CTC head."""

    aux_upsample: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if not _is_int(self.aux_upsample) or self.aux_upsample < 1:
            raise ValueError(f"expected upsample >= 1; found {self.aux_upsample!r}")


class AuxCTCTransformer(Transformer):
    """The positive control's model: a :class:`Transformer` (so the AR decoders,
    ``load_model`` and the analysis use it unchanged) with an :class:`UpsampledCTCHead` on
    the encoder. ``forward(..., aux=True)`` also returns the head's ``(logits (B, S·u, V),
    lengths (B,))`` from the same encoder pass (one call: what DDP needs)."""

    def __init__(self, cfg: AuxCTCModelConfig) -> None:
        super().__init__(cfg)
        self.aux_head = UpsampledCTCHead(cfg.d_model, cfg.vocab_size, cfg.aux_upsample)

    def forward(  # type: ignore[override]
        self,
        src_tokens: Tensor,
        src_lengths: Tensor | None,
        prev_output_tokens: Tensor,
        *,
        aux: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        """logits (B, T, V); with ``aux`` also the CTC head's logits and lengths."""
        enc = self.encode(src_tokens, src_lengths)
        logits = self.decode(prev_output_tokens, enc)
        if not aux:
            return logits
        aux_logits, aux_lengths = self.aux_head(enc.out, enc.padding_mask)
        return logits, aux_logits, aux_lengths


def upsampled_ctc_sum(aux_logits: Tensor, aux_lengths: Tensor, batch: Any, blank_id: int) -> Tensor:
    """Summed CTC (nats; ``latalign.ctc_loss`` with ``from_logits`` and ``zero_infinity``:
    sentences too long for the upsampled source contribute 0) of the head's logits
    (B, S·u, V) against ``batch.target`` (B, T) with ``batch.target_lengths``."""
    return latalign.ctc_loss(
        aux_logits.float(),
        batch.target,
        aux_lengths,
        batch.target_lengths,
        blank=blank_id,
        reduction="sum",
        zero_infinity=True,
        from_logits=True,
    )


def ctc_control_loss(
    model: nn.Module,
    batch: Any,
    criterion: Any,
    options: dict[str, Any],
    *,
    weight: float,
    blank_id: int,
    pad_id: int = PAD_ID,
    prev_output_tokens: Tensor | None = None,
) -> tuple[Tensor, dict[str, float], Tensor]:
    """The positive control's loss: ``criterion`` on the decoder (teacher forcing unless
    ``prev_output_tokens`` is given) plus ``weight ×`` :func:`upsampled_ctc_sum`, from one
    call of ``model(..., aux=True)`` (an :class:`AuxCTCTransformer`, possibly DDP-wrapped).

    Returns ``(loss_sum, stats, decoder_logits)``: ``stats`` are the criterion's with
    ``loss`` the total and ``aux_ctc`` the unweighted CTC sum (nats).
    """
    prev = batch.prev_output_tokens if prev_output_tokens is None else prev_output_tokens
    logits, aux_logits, aux_lengths = model(batch.src_tokens, batch.src_lengths, prev, aux=True)
    dec_loss, stats = criterion(logits, batch, blank_id, pad_id, **options)
    ctc = upsampled_ctc_sum(aux_logits, aux_lengths, batch, blank_id)
    total = dec_loss + weight * ctc
    stats = dict(stats)
    stats["aux_ctc"] = float(ctc.detach())
    stats["loss"] = float(total.detach())
    return total, stats, logits


# --------------------------------------------------------------------------- the trainer seam


def regime_config(cfg: Any) -> RegimeConfig:
    """The :class:`RegimeConfig` of a ``TrainConfig`` (its ``regime``/``arch`` and option
    fields; None = the defaults here). ``ValueError`` on bad values."""
    name = cfg.regime if cfg.regime in REGIMES else "teacher_forcing"  # e.g. "doubled"
    kw: dict[str, Any] = {"name": name}
    fields = {
        "schedule": "schedule",
        "schedule_updates": "ramp_updates",
        "temperature": "temperature",
        "delay": "delay",
        "aux_ctc_weight": "ctc_weight",
        "upsample": "ctc_upsample",
    }
    for src, dst in fields.items():
        value = getattr(cfg, src, None)
        if value is not None:
            kw[dst] = value
    p = getattr(cfg, "regime_p", None)
    if p is not None:
        kw["corrupt_prob" if cfg.regime == "corruption" else "sample_prob"] = p
    try:
        return RegimeConfig(**kw)
    except ValueError as e:  # name the TrainConfig field (the CLI flag), not ours
        message = str(e)
        for ours, theirs in _FIELD_NAMES.items():
            message = message.replace(f"expected {ours} ", f"expected {theirs} ")
        raise ValueError(message) from None


#: RegimeConfig field -> the TrainConfig field (CLI flag) that sets it
_FIELD_NAMES = {
    "sample_prob": "regime_p",
    "corrupt_prob": "regime_p",
    "ramp_updates": "schedule_updates",
    "ctc_weight": "aux_ctc_weight",
    "ctc_upsample": "upsample",
}


class RegimeInput:
    """A registered regime's :class:`~latalign.translate.loss.DecoderInput`: training
    batches get :func:`decoder_inputs` at the update; validation (``update=None``) gets
    :func:`evaluation_inputs` (what inference feeds, with gold tokens)."""

    def __init__(self, regime: RegimeConfig, tokenizer: Any) -> None:
        self.regime = regime
        self.pad_id = getattr(tokenizer, "pad_id", PAD_ID)
        self.bos_id = getattr(tokenizer, "bos_id", BOS_ID)

    def __call__(self, model: nn.Module, batch: Any, *, update: int | None) -> Tensor:
        from latalign.translate.loss import unwrap

        if update is None:
            return evaluation_inputs(
                self.regime, batch.prev_output_tokens, bos_id=self.bos_id, pad_id=self.pad_id
            )
        return decoder_inputs(
            self.regime, unwrap(model), batch, update, pad_id=self.pad_id, bos_id=self.bos_id
        )


class AuxCTCLoss:
    """The ``ar_aux_ctc`` arch's LossFn: the run's regime makes the decoder input, then
    :func:`ctc_control_loss`; validation adds ``ce`` (plain cross entropy, nats)."""

    def __init__(self, cfg: Any, tokenizer: Any) -> None:
        from latalign.translate.criteria import get_criterion
        from latalign.translate.loss import get_regime

        self.decoder_input = get_regime(cfg.regime).make(cfg, tokenizer)
        self.criterion = get_criterion(cfg.criterion)
        self.options = cfg.criterion_options()
        self.weight = regime_config(cfg).ctc_weight
        self.blank_id, self.pad_id = tokenizer.blank_id, tokenizer.pad_id

    def __call__(
        self, model: nn.Module, batch: Any, *, update: int | None
    ) -> tuple[Tensor, dict[str, float]]:
        from latalign.translate.criteria import cross_entropy_sum

        prev = self.decoder_input(model, batch, update=update)
        loss, stats, logits = ctc_control_loss(
            model, batch, self.criterion, self.options, weight=self.weight,
            blank_id=self.blank_id, pad_id=self.pad_id, prev_output_tokens=prev,
        )  # fmt: skip
        if update is None:
            stats["ce"] = float(cross_entropy_sum(logits, batch.target, self.pad_id))
        return loss, stats


AUX_CTC_ARCH = "ar_aux_ctc"


def _check(cfg: Any) -> None:
    regime_config(cfg)


def decoding_model(model: nn.Module, train_config: dict[str, Any] | None) -> nn.Module:
    """The model as the decoders must see it: wrapped in :class:`DelayedInputModel` when
    ``train_config`` (a checkpoint's ``train_config`` / the run's ``config.json``) trained it
    with delayed teacher forcing; ``model`` itself otherwise."""
    tc = train_config or {}
    if tc.get("regime") == "delayed":
        delay = tc.get("delay") or RegimeConfig().delay
        if delay > 1:
            return DelayedInputModel(model, int(delay))
    return model


def _register() -> None:
    from latalign.translate.arch import Arch, register_arch
    from latalign.translate.loss import Regime, register_regime

    def maker(cfg: Any, tokenizer: Any) -> RegimeInput:
        return RegimeInput(regime_config(cfg), tokenizer)

    options = {
        "scheduled_sampling": {"schedule", "schedule_updates", "regime_p"},
        "free_running": {"temperature"},
        "corruption": {"regime_p"},
        "delayed": {"delay"},
    }
    for name, opts in options.items():
        register_regime(
            Regime(name, maker, options=frozenset(opts), check=_check, help=REGIMES[name])
        )

    def build(cfg: Any, vocab_size: int) -> AuxCTCTransformer:
        up = cfg.upsample if cfg.upsample is not None else RegimeConfig().ctc_upsample
        return AuxCTCTransformer(
            AuxCTCModelConfig.preset(cfg.preset, vocab_size, aux_upsample=up, **cfg.model)
        )

    register_arch(
        Arch(
            name=AUX_CTC_ARCH,
            build=build,
            load=lambda model_config: AuxCTCTransformer(AuxCTCModelConfig(**model_config)),
            make_loss=AuxCTCLoss,
            options=frozenset({"aux_ctc_weight", "upsample"}),
            regimes=frozenset(["teacher_forcing", *options]),
            check=_check,
            help="positive control: ar transformer + auxiliary CTC on upsampled encoder states",
        )
    )


_register()
