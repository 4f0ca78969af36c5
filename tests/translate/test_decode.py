"""Tests for greedy and beam-search decoding."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from latalign.translate.config import ModelConfig
from latalign.translate.decode import (
    beam_search,
    beam_search_hypotheses,
    greedy_decode,
    max_lengths,
    strip_blank,
    translate_sentences,
)
from latalign.translate.model import Transformer

PAD, BOS, EOS, UNK, BLANK = 0, 1, 2, 3, 4
A, B, C = 5, 6, 7
VOCAB = 30


# --------------------------------------------------------------------------- a fake model


@dataclass
class FakeCache:
    history: torch.Tensor  # (N, t): the prefix already fed, to check reordering

    @property
    def length(self) -> int:
        return self.history.size(1)


class BigramModel:
    """Next-token distribution depends only on the last token: ``table[last]`` (probabilities).

    With a cache, it checks that the cache holds exactly the prefix fed so far, so a wrong
    ``reorder_cache`` call in the decoder makes the test fail.
    """

    def __init__(self, table: dict[int, dict[int, float]], vocab: int = 8) -> None:
        self.logp = torch.full((vocab, vocab), -math.inf)  # impossible tokens
        for prev, row in table.items():
            for tok, p in row.items():
                self.logp[prev, tok] = math.log(p)
        for prev in set(range(vocab)) - set(table):  # rows never all -inf (as a real model)
            self.logp[prev, EOS] = 0.0
        self.steps = 0

    def encode(self, src_tokens, src_lengths):
        return src_tokens

    def init_cache(self, encoder_out):
        return FakeCache(torch.empty(encoder_out.size(0), 0, dtype=torch.long))

    def decode_step(self, prefix, encoder_out, cache):
        self.steps += 1
        assert prefix.size(0) == encoder_out.size(0)
        if cache is not None:
            assert torch.equal(cache.history, prefix[:, :-1])
            cache = FakeCache(prefix.clone())
        return self.logp[prefix[:, -1]], cache

    def reorder_encoder_out(self, encoder_out, new_order):
        return encoder_out.index_select(0, new_order)

    def reorder_cache(self, cache, new_order, *, self_attn_only=False):
        return FakeCache(cache.history.index_select(0, new_order))


# greedy takes A (0.6) then must stop with p(eos | A) = 0.4: "A" has p = 0.24;
# the better sequence "B" has p = 0.4 * 0.9 = 0.36.
GARDEN_PATH = {
    BOS: {A: 0.6, B: 0.4},
    A: {A: 0.3, B: 0.3, EOS: 0.4},
    B: {EOS: 0.9, A: 0.05, B: 0.05},
}


def src_batch(n: int = 2) -> torch.Tensor:
    return torch.full((n, 3), C, dtype=torch.long)


@pytest.mark.parametrize("use_cache", [True, False])
def test_beam_finds_sequence_greedy_misses(use_cache):
    model = BigramModel(GARDEN_PATH)
    src = src_batch()
    assert greedy_decode(model, src, use_cache=use_cache) == [[A], [A]]
    assert beam_search(model, src, beam=2, use_cache=use_cache) == [[B], [B]]
    hyps = beam_search_hypotheses(model, src, beam=2, lenpen=0.0, use_cache=use_cache)[0]
    assert [h.tokens for h in hyps] == [[B], [A]]
    assert hyps[0].score == pytest.approx(math.log(0.36), abs=1e-5)
    assert hyps[1].score == pytest.approx(math.log(0.24), abs=1e-5)


def test_length_penalty_normalises_by_length_including_eos():
    # raw scores: "A" = log .35 (best), "B BLANK" = log .3, "A C" = log .175; divided by the
    # length including eos (lenpen 1): "A" -0.52, "B BLANK" -0.40 (best), "A C" -0.58
    table = {
        BOS: {A: 0.7, B: 0.3},
        A: {EOS: 0.5, C: 0.5},
        B: {BLANK: 1.0},
        BLANK: {EOS: 1.0},
        C: {EOS: 0.5, C: 0.5},
    }
    model = BigramModel(table)
    src = src_batch(1)
    raw = beam_search_hypotheses(model, src, beam=3, lenpen=0.0)[0]
    normed = beam_search_hypotheses(model, src, beam=3, lenpen=1.0)[0]
    assert raw[0].tokens == [A]
    assert raw[0].score == pytest.approx(math.log(0.35), abs=1e-5)
    assert normed[0].tokens == [B, BLANK]
    assert normed[0].normalized == pytest.approx(math.log(0.3) / 3, abs=1e-5)
    assert beam_search(model, src, beam=3, lenpen=1.0) == [[B, BLANK]]


def test_min_length_and_max_length_are_enforced():
    eager = BigramModel({BOS: {EOS: 0.9, A: 0.1}, A: {EOS: 0.9, A: 0.1}})
    assert greedy_decode(eager, src_batch()) == [[A], [A]]  # eos is banned at the first step
    assert beam_search(eager, src_batch(), beam=3) == [[A], [A]]
    never_eos = {A: 0.5, B: 0.5 - 1e-6, EOS: 1e-6}
    endless = BigramModel({BOS: {A: 0.5, B: 0.5}, A: never_eos, B: never_eos})
    for a, b in [(0.0, 4), (1.0, 2)]:
        limit = int(a * 3 + b)
        assert greedy_decode(endless, src_batch(), max_len_a=a, max_len_b=b) == [[A] * limit] * 2
        out = beam_search(endless, src_batch(), beam=4, max_len_a=a, max_len_b=b)
        assert [len(x) for x in out] == [limit, limit]


def test_max_lengths_per_sentence():
    src = torch.tensor([[5, 6, 7, 2], [5, 2, 0, 0]])
    assert max_lengths(src, max_len_a=1.5, max_len_b=2).tolist() == [8, 5]
    assert max_lengths(src, max_len_a=1.5, max_len_b=2, max_positions=7).tolist() == [5, 5]


def test_invalid_arguments_raise():
    model = BigramModel(GARDEN_PATH)
    with pytest.raises(ValueError, match="expected beam >= 1"):
        beam_search(model, src_batch(), beam=0)
    with pytest.raises(ValueError, match="expected src_tokens of shape"):
        greedy_decode(model, torch.zeros(3, dtype=torch.long))


def test_strip_blank():
    assert strip_blank([BLANK, 7, BLANK, 8, BLANK], BLANK) == [7, 8]
    assert strip_blank([BLANK, BLANK], BLANK) == []


# --------------------------------------------------------------------------- the real model


# short caps keep these tests fast on a loaded 2-core machine; lengths still vary with
# the source length (1 x src_len + 2)
LIM = dict(max_len_a=1.0, max_len_b=2)


@pytest.fixture(scope="module")
def tiny_model() -> Transformer:
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", VOCAB))
    with torch.no_grad():  # a sharper, eos-friendly random model so lengths vary
        model.output_projection.weight.mul_(6.0)
    return model.eval()


@pytest.fixture(scope="module")
def sources() -> list[list[int]]:
    g = torch.Generator().manual_seed(3)
    out = []
    for n in (5, 2, 7, 4, 6, 3):
        out.append(torch.randint(5, VOCAB, (n,), generator=g).tolist() + [EOS])
    return out


def collate(seqs: list[list[int]]) -> torch.Tensor:
    out = torch.full((len(seqs), max(map(len, seqs))), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s)
    return out


def test_beam_one_equals_greedy(tiny_model, sources):
    src = collate(sources)
    assert beam_search(tiny_model, src, beam=1, **LIM) == greedy_decode(tiny_model, src, **LIM)


@pytest.mark.parametrize("beam", [1, 5])
def test_cached_equals_uncached(tiny_model, sources, beam):
    src = collate(sources)
    cached = beam_search_hypotheses(tiny_model, src, beam=beam, use_cache=True, **LIM)
    uncached = beam_search_hypotheses(tiny_model, src, beam=beam, use_cache=False, **LIM)
    assert [[h.tokens for h in hs] for hs in cached] == [[h.tokens for h in hs] for hs in uncached]
    for hc, hu in zip(cached, uncached):
        assert hc[0].score == pytest.approx(hu[0].score, abs=1e-4)
    assert greedy_decode(tiny_model, src, use_cache=False, **LIM) == greedy_decode(
        tiny_model, src, **LIM
    )


@pytest.mark.parametrize("beam", [2, 5])
def test_grouped_cross_attention_equals_per_beam_copies(tiny_model, sources, beam, monkeypatch):
    """One encoder row per sentence shared by its beams == encoder rows copied per beam."""
    src = collate(sources)
    grouped = beam_search_hypotheses(tiny_model, src, beam=beam, **LIM)
    monkeypatch.setattr(tiny_model, "grouped_cross_attention", False)
    copied = beam_search_hypotheses(tiny_model, src, beam=beam, **LIM)
    assert [[h.tokens for h in hs] for hs in grouped] == [[h.tokens for h in hs] for hs in copied]
    for hg, hc in zip(grouped, copied):
        assert [h.score for h in hg] == pytest.approx([h.score for h in hc], abs=1e-5)
    assert len({len(hs[0].tokens) for hs in grouped}) > 1  # sentences leave the batch


def test_reorder_cache_cross_order_rejects_bad_groups(tiny_model, sources):
    src = collate(sources)
    with torch.no_grad():
        cache = tiny_model.init_cache(tiny_model.encode(src))
    with pytest.raises(ValueError, match="multiple of cross_order"):
        tiny_model.reorder_cache(cache, torch.arange(5), cross_order=torch.arange(2))


def test_batch_equals_one_by_one(tiny_model, sources):
    src = collate(sources)
    batched = beam_search(tiny_model, src, beam=4, **LIM)
    alone = [beam_search(tiny_model, collate([s]), beam=4, **LIM)[0] for s in sources]
    assert batched == alone
    lengths = {len(x) for x in batched}
    assert len(lengths) > 1  # sentences finish at different steps: exercises batch shrinking
    assert greedy_decode(tiny_model, src, **LIM) == [
        greedy_decode(tiny_model, collate([s]), **LIM)[0] for s in sources
    ]


def test_beam_score_at_least_greedy_score(tiny_model, sources):
    src = collate(sources)
    greedy = beam_search_hypotheses(tiny_model, src, beam=1, lenpen=0.0, **LIM)
    beam = beam_search_hypotheses(tiny_model, src, beam=5, lenpen=0.0, **LIM)
    for g, b in zip(greedy, beam):
        assert b[0].score >= g[0].score - 1e-4
        assert 1 <= len(b) <= 5
        assert all(EOS not in h.tokens and BOS not in h.tokens and PAD not in h.tokens for h in b)


def test_decoding_restores_training_mode_and_runs_in_bf16(tiny_model, sources):
    src = collate(sources)
    tiny_model.train()
    try:
        out = beam_search(tiny_model, src, beam=3, autocast_bf16=True, **LIM)
        assert tiny_model.training
    finally:
        tiny_model.eval()
    assert len(out) == len(sources) and all(isinstance(t, int) for x in out for t in x)


class CharTokenizer:
    """Maps letters a..y to ids 5..29; ``decode`` joins letters."""

    pad_id, bos_id, eos_id, unk_id, blank_id = PAD, BOS, EOS, UNK, BLANK

    def encode(self, text: str) -> list[int]:
        return [5 + (ord(ch) - ord("a")) % 25 for ch in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(ord("a") + i - 5) if i >= 5 else "?" for i in ids)


def test_translate_sentences_restores_order(tiny_model):
    tok = CharTokenizer()
    sentences = ["abcdefg", "hi", "jklmn", "o", "pqrstuvw", "xy", "abc"]
    seen = []
    out = translate_sentences(
        tiny_model, tok, sentences, beam=3, batch_size=3, progress=seen.append, **LIM
    )
    assert sum(seen) == len(sentences) and len(seen) == 3
    for sentence, translation in zip(sentences, out):
        src = collate([tok.encode(sentence) + [EOS]])
        expected = strip_blank(beam_search(tiny_model, src, beam=3, **LIM)[0], BLANK)
        assert translation == tok.decode(expected)
    greedy = translate_sentences(tiny_model, tok, sentences, beam=1, batch_size=4, **LIM)
    assert len(greedy) == len(sentences)


# --------------------------------------------------------------------------- devices
# There is no GPU in CI, so device handling is checked on a *virtual* accelerator: tensors
# that report a device other than the CPU (torch's "meta" device: a CPU-only build can make
# tensors claim it, unlike "cuda", whose device guard such a build lacks) while their values
# live on the CPU. A dispatch mode sees every aten op and does what CUDA does with such
# tensors: an op that mixes them with a CPU tensor (other than a 0-dim scalar, which CUDA
# accepts) raises, explicit copies (`.to`, `.cpu()`) move between the two, and factories with
# ``device=`` the accelerator make virtual tensors. The model is wrapped so that every tensor
# the decoder hands it must be on the virtual device, and its logits come back on it. The
# decoder code under test cannot tell this device from CUDA: it only ever asks the model
# (``parameters()``) where to put things.

ACCELERATOR = torch.device("meta")


class _OnAccelerator(torch.Tensor):
    """A CPU tensor (``inner``) that reports ``device`` ACCELERATOR."""

    inner: torch.Tensor

    @staticmethod
    def __new__(cls, inner: torch.Tensor) -> _OnAccelerator:
        out = torch.Tensor._make_wrapper_subclass(
            cls, inner.shape, dtype=inner.dtype, device=ACCELERATOR,
            strides=inner.stride(), storage_offset=inner.storage_offset(),
        )  # fmt: skip
        out.inner = inner
        return out

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):  # pragma: no cover
        raise AssertionError("virtual-device tensors are only handled under _VirtualCuda")

    def tolist(self):  # CUDA tensors copy to the host for tolist(); so does this one
        return self.inner.tolist()


class DeviceMixError(RuntimeError):
    pass


_COPIES = {"aten._to_copy.default", "aten.copy_.default", "aten._copy_from.default"}


class _VirtualCuda(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.mixed: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from torch.utils._pytree import tree_flatten, tree_map

        kwargs = dict(kwargs or {})
        flat, _ = tree_flatten((args, kwargs))
        tensors = [t for t in flat if isinstance(t, torch.Tensor)]
        virtual = [t for t in tensors if isinstance(t, _OnAccelerator)]
        plain = [t for t in tensors if not isinstance(t, _OnAccelerator) and t.dim() > 0]
        name = str(func)
        # torch.tensor(data, device=d) copies to d below the dispatcher: on this virtual
        # device that leaves a plain tensor without values (code under test writes
        # torch.tensor(data).to(d), the same copy, visible to the mode)
        assert not any(t.device == ACCELERATOR for t in plain), f"{name}: a plain meta tensor"
        if virtual and plain and name not in _COPIES:
            self.mixed.append(name)
            raise DeviceMixError(f"{name} mixes {ACCELERATOR} and cpu tensors")
        target = kwargs.get("device")
        if target is not None:
            kwargs["device"] = torch.device("cpu")
        on_gpu = torch.device(target) == ACCELERATOR if target is not None else bool(virtual)
        if name == "aten._to_copy.default" and target is None:
            on_gpu = bool(virtual)
        unwrapped = tree_map(lambda t: t.inner if isinstance(t, _OnAccelerator) else t, args)
        out = func(*unwrapped, **kwargs)
        if not on_gpu:
            return out
        return tree_map(lambda t: _OnAccelerator(t) if type(t) is torch.Tensor else t, out)


class ModelOnAccelerator:
    """Runs ``model`` (on the CPU) as if it lived on the virtual accelerator: every tensor
    passed in must be virtual (else AssertionError), logits are returned virtual."""

    def __init__(self, model) -> None:
        self.model = model
        self.cfg = getattr(model, "cfg", None)
        self.grouped_cross_attention = getattr(model, "grouped_cross_attention", False)
        self.calls = 0

    def parameters(self):
        yield _OnAccelerator(torch.zeros(1))

    def eval(self):
        return self

    def _in(self, *tensors):
        for t in tensors:
            if t is not None:
                assert isinstance(t, _OnAccelerator), f"a {t.device} tensor reached the model"
        self.calls += 1
        return [t.inner if t is not None else None for t in tensors]

    def encode(self, src_tokens, src_lengths):
        src_tokens, src_lengths = self._in(src_tokens, src_lengths)
        return self.model.encode(src_tokens, src_lengths)

    def init_cache(self, encoder_out):
        return self.model.init_cache(encoder_out)

    def decode_step(self, prefix, encoder_out, cache):
        (prefix,) = self._in(prefix)
        logits, cache = self.model.decode_step(prefix, encoder_out, cache)
        return _OnAccelerator(logits), cache

    def reorder_encoder_out(self, encoder_out, new_order):
        (new_order,) = self._in(new_order)
        return self.model.reorder_encoder_out(encoder_out, new_order)

    def reorder_cache(self, cache, new_order, **kwargs):
        new_order, cross = self._in(new_order, kwargs.get("cross_order"))
        if cross is not None:
            kwargs["cross_order"] = cross
        return self.model.reorder_cache(cache, new_order, **kwargs)


@pytest.fixture
def virtual_cuda():
    """The dispatch mode above (enter it with ``with``)."""
    return _VirtualCuda()


def test_virtual_device_catches_a_device_mix(virtual_cuda):
    with virtual_cuda:
        on_gpu = torch.arange(4, device=ACCELERATOR)
        assert on_gpu.device == ACCELERATOR and on_gpu.tolist() == [0, 1, 2, 3]
        assert (on_gpu + torch.tensor(1)).tolist() == [1, 2, 3, 4]  # a 0-dim CPU scalar is fine
        assert on_gpu.cpu().device.type == "cpu"
        with pytest.raises(DeviceMixError):
            torch.arange(4)[on_gpu]  # the old greedy bug: CPU tensor, indices from the model
        with pytest.raises(DeviceMixError):
            torch.arange(4).ge(1) | on_gpu.le(2)  # the old beam bug: n_done on the CPU


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("beam", [1, 5])
def test_decoding_keeps_every_tensor_on_the_model_device(
    tiny_model, sources, beam, use_cache, virtual_cuda, monkeypatch
):
    """On a model that lives on another device (virtual CUDA), decoding builds nothing on the
    CPU that meets the model's tensors, hands the model only tensors on its device, autocasts
    on that device type, and gives the same outputs as decoding on the CPU."""
    src = collate(sources)  # on the CPU, as a user would pass them
    expected = beam_search_hypotheses(tiny_model, src, beam=beam, use_cache=use_cache, **LIM)
    wrapped = ModelOnAccelerator(tiny_model)
    autocast_devices = []
    real_autocast = torch.autocast

    def spy(device_type, *args, **kwargs):
        autocast_devices.append(device_type)
        return real_autocast("cpu", *args, **kwargs)

    monkeypatch.setattr(torch, "autocast", spy)
    with virtual_cuda:
        got = beam_search_hypotheses(wrapped, src, beam=beam, use_cache=use_cache, **LIM)
        greedy = greedy_decode(wrapped, src, use_cache=use_cache, **LIM)
        bf16 = beam_search(wrapped, src, beam=beam, autocast_bf16=True, **LIM)
    assert virtual_cuda.mixed == [] and wrapped.calls > 0
    assert autocast_devices == [ACCELERATOR.type]
    assert [[h.tokens for h in hs] for hs in got] == [[h.tokens for h in hs] for hs in expected]
    for g, e in zip(got, expected):
        assert [h.score for h in g] == pytest.approx([h.score for h in e], abs=1e-5)
    assert greedy == greedy_decode(tiny_model, src, use_cache=use_cache, **LIM)
    assert len(bf16) == len(sources)


def test_translate_sentences_on_the_model_device(tiny_model, virtual_cuda):
    tok = CharTokenizer()
    sentences = ["abcdefg", "hi", "jklmn", "o"]
    expected = translate_sentences(tiny_model, tok, sentences, beam=3, batch_size=3, **LIM)
    with virtual_cuda:
        got = translate_sentences(
            ModelOnAccelerator(tiny_model), tok, sentences, beam=3, batch_size=3, **LIM
        )
    assert got == expected and virtual_cuda.mixed == []
