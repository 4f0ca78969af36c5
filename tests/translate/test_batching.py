from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from latalign.translate.batching import Batch, Example, TokenBatchSampler, collate

PAD, BOS, EOS = 0, 1, 2


def _examples() -> list[Example]:
    return [
        Example(7, torch.tensor([10, 11, 12]), torch.tensor([20, 21])),
        Example(3, torch.tensor([13]), torch.tensor([22, 23, 24, 25])),
        Example(5, torch.tensor([14, 15]), torch.tensor([], dtype=torch.long)),
    ]


def test_collate_layout() -> None:
    b = collate(_examples(), PAD, BOS, EOS)
    assert isinstance(b, Batch)
    assert b.src_tokens.tolist() == [[10, 11, 12, EOS], [13, EOS, PAD, PAD], [14, 15, EOS, PAD]]
    assert b.src_lengths.tolist() == [4, 2, 3]
    assert b.target.tolist() == [
        [20, 21, EOS, PAD, PAD],
        [22, 23, 24, 25, EOS],
        [EOS, PAD, PAD, PAD, PAD],
    ]
    assert b.prev_output_tokens.tolist() == [
        [BOS, 20, 21, PAD, PAD],
        [BOS, 22, 23, 24, 25],
        [BOS, PAD, PAD, PAD, PAD],
    ]
    assert b.target_lengths.tolist() == [3, 5, 1]
    assert b.ntokens == 9 and b.nsentences == 3
    assert b.ids.tolist() == [7, 3, 5]
    for t in (b.src_tokens, b.src_lengths, b.prev_output_tokens, b.target, b.target_lengths, b.ids):
        assert t.dtype == torch.int64


@given(
    st.lists(
        st.tuples(
            st.lists(st.integers(5, 99), max_size=12), st.lists(st.integers(5, 99), max_size=12)
        ),
        min_size=1,
        max_size=8,
    )
)
@settings(max_examples=40, deadline=None)
def test_collate_shift_relation(pairs) -> None:
    exs = [Example(i, torch.tensor(s, dtype=torch.long), torch.tensor(t, dtype=torch.long))
           for i, (s, t) in enumerate(pairs)]  # fmt: skip
    b = collate(exs, PAD, BOS, EOS)
    B, T = b.target.shape
    assert b.prev_output_tokens.shape == (B, T) and B == len(pairs)
    assert T == max(len(t) for _, t in pairs) + 1
    nonpad = b.target != PAD
    assert torch.equal(nonpad.sum(1), b.target_lengths)
    assert (b.prev_output_tokens[:, 0] == BOS).all()
    shifted_ok = b.prev_output_tokens[:, 1:] == b.target[:, :-1]
    assert shifted_ok[nonpad[:, 1:]].all()
    assert (b.target[torch.arange(B), b.target_lengths - 1] == EOS).all()
    assert (b.src_tokens[torch.arange(B), b.src_lengths - 1] == EOS).all()
    assert b.ntokens == int(b.target_lengths.sum())


def test_collate_rejects_empty() -> None:
    with pytest.raises(ValueError, match="at least one example"):
        collate([], PAD, BOS, EOS)


def test_batch_to_moves_every_tensor() -> None:
    b = collate(_examples(), PAD, BOS, EOS)
    m = b.to("meta")
    assert m.src_tokens.is_meta and m.target.is_meta and m.ids.is_meta
    assert m.ntokens == b.ntokens and b.src_tokens.device.type == "cpu"


def _sizes(n: int = 500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(2, 60, n), rng.integers(2, 60, n)


def _cost(batch: list[int], src: np.ndarray, tgt: np.ndarray) -> int:
    return len(batch) * int(max(src[batch].max(), tgt[batch].max()))


def test_sampler_respects_budget_and_covers_everything() -> None:
    src, tgt = _sizes()
    s = TokenBatchSampler(src, tgt, max_tokens=300, seed=1)
    batches = s.batches()
    assert all(_cost(b, src, tgt) <= 300 for b in batches)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(src)))
    assert len(s) == len(batches)
    # bucketing: batches hold similar lengths (the spread inside a batch is small)
    spread = [np.ptp(np.maximum(src, tgt)[b]) for b in batches]
    assert np.mean(spread) <= 2


def test_sampler_max_sentences() -> None:
    src, tgt = _sizes()
    s = TokenBatchSampler(src, tgt, max_tokens=10_000, max_sentences=7)
    assert all(len(b) <= 7 for b in s.batches())


@given(
    st.lists(st.tuples(st.integers(1, 40), st.integers(1, 40)), min_size=1, max_size=60),
    st.integers(40, 200),
    st.integers(0, 3),
)
@settings(max_examples=40, deadline=None)
def test_sampler_budget_property(pairs, max_tokens, seed) -> None:
    src = np.array([p[0] for p in pairs])
    tgt = np.array([p[1] for p in pairs])
    s = TokenBatchSampler(src, tgt, max_tokens=max_tokens, seed=seed)
    batches = s.batches()
    assert all(_cost(b, src, tgt) <= max_tokens for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(len(pairs)))


def test_sampler_deterministic_and_epoch_dependent() -> None:
    src, tgt = _sizes()
    a = TokenBatchSampler(src, tgt, max_tokens=300, seed=1)
    b = TokenBatchSampler(src, tgt, max_tokens=300, seed=1)
    c = TokenBatchSampler(src, tgt, max_tokens=300, seed=2)
    assert a.batches(0) == b.batches(0)
    assert a.batches(0) != a.batches(1)
    assert a.batches(0) != c.batches(0)
    assert len({len(a.batches(e)) for e in range(4)}) == 1


def test_sampler_unshuffled_is_length_sorted() -> None:
    src, tgt = _sizes()
    s = TokenBatchSampler(src, tgt, max_tokens=300, shuffle=False)
    longest = [int(np.maximum(src, tgt)[b].max()) for b in s.batches()]
    assert longest == sorted(longest)
    assert s.batches(0) == s.batches(5)


def test_sampler_filters_long_pairs() -> None:
    src = np.array([5, 50, 6, 7, 400])
    tgt = np.array([5, 5, 70, 7, 5])
    s = TokenBatchSampler(src, tgt, max_tokens=300, max_positions=60)
    assert s.num_filtered == 2  # 70 > 60; 400 > 60 (and > max_tokens)
    assert sorted(i for b in s.batches() for i in b) == [0, 1, 3]
    with pytest.raises(ValueError, match="at least one pair"):
        TokenBatchSampler([100], [100], max_tokens=50)


def test_iteration_advances_epoch() -> None:
    src, tgt = _sizes(100)
    s = TokenBatchSampler(src, tgt, max_tokens=200, seed=4)
    first = list(s)
    assert first == s.batches(0) and s.state_dict()["epoch"] == 1
    assert list(s) == s.batches(1)


@pytest.mark.parametrize("stop", [0, 1, 5, 17])
def test_resume_yields_exactly_the_remaining_batches(stop: int) -> None:
    src, tgt = _sizes(300)
    kw = dict(max_tokens=250, seed=9)
    ref = TokenBatchSampler(src, tgt, **kw)
    ref.set_epoch(3)
    full_epoch = list(ref)
    next_epoch = list(ref)
    assert stop < len(full_epoch)

    run = TokenBatchSampler(src, tgt, **kw)
    run.set_epoch(3)
    it = iter(run)
    consumed = [next(it) for _ in range(stop)]
    state = run.state_dict()  # "killed" here
    assert state["epoch"] == 3 and state["position"] == stop

    resumed = TokenBatchSampler(src, tgt, **kw)
    resumed.load_state_dict(state)
    resumed.set_epoch(3)  # the training loop's call must not reset the position
    assert resumed.remaining() == len(full_epoch) - stop
    rest = list(resumed)
    assert consumed + rest == full_epoch
    assert list(resumed) == next_epoch


def test_resume_at_epoch_end_moves_on() -> None:
    src, tgt = _sizes(100)
    s = TokenBatchSampler(src, tgt, max_tokens=200, seed=4)
    it = iter(s)
    n = 0
    for _ in it:
        n += 1
    assert n == len(s)
    r = TokenBatchSampler(src, tgt, max_tokens=200, seed=4)
    r.load_state_dict(s.state_dict())
    assert list(r) == s.batches(1)


def test_load_state_dict_checks_compatibility() -> None:
    src, tgt = _sizes(100)
    s = TokenBatchSampler(src, tgt, max_tokens=200, seed=4)
    with pytest.raises(ValueError, match="seed=5"):
        TokenBatchSampler(src, tgt, max_tokens=200, seed=5).load_state_dict(s.state_dict())


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_disjoint_and_equal(world_size: int) -> None:
    src, tgt = _sizes(400)
    shards = [
        TokenBatchSampler(src, tgt, max_tokens=300, seed=2, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    for epoch in (0, 1):
        per_rank = [s.batches(epoch) for s in shards]
        assert len({len(b) for b in per_rank}) == 1
        assert all(len(s) == len(per_rank[0]) for s in shards)
        seen = [i for batches in per_rank for b in batches for i in b]
        assert len(seen) == len(set(seen))  # disjoint
        whole = TokenBatchSampler(src, tgt, max_tokens=300, seed=2).batches(epoch)
        assert len(per_rank[0]) == len(whole) // world_size
        assert {tuple(b) for bs in per_rank for b in bs} <= {tuple(b) for b in whole}


def test_uneven_sharding_keeps_everything() -> None:
    src, tgt = _sizes(400)
    shards = [
        TokenBatchSampler(src, tgt, 300, shuffle=False, rank=r, world_size=3, even=False)
        for r in range(3)
    ]
    seen = sorted(i for s in shards for b in s.batches() for i in b)
    assert seen == list(range(400))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="rank"):
        TokenBatchSampler([3], [3], rank=2, world_size=2)
    with pytest.raises(ValueError, match="equal 1-D shape"):
        TokenBatchSampler([3, 4], [3])
    with pytest.raises(ValueError, match="max_tokens"):
        TokenBatchSampler([3], [3], max_tokens=0)
