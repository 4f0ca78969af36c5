"""Token-budget batches (resumable, shardable) and collation into padded tensors.

:class:`TokenBatchSampler` yields lists of dataset indices; :func:`collate` turns the examples
at those indices into a :class:`Batch`::

    sampler = TokenBatchSampler(ds.src_sizes, ds.tgt_sizes, max_tokens=4096, seed=1)
    for epoch in range(sampler.epoch, max_epoch):
        sampler.set_epoch(epoch)                 # no-op when resuming inside this epoch
        for indices in sampler:
            batch = collate([ds[i] for i in indices], tok.pad_id, tok.bos_id, tok.eos_id)
            ...
            checkpoint["sampler"] = sampler.state_dict()   # (epoch, batches consumed)

Sequences are padded on the right; ``src_lengths``/``target_lengths`` give the real lengths.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np
import torch

logger = logging.getLogger(__name__)


class Example(NamedTuple):
    """One sentence pair: ``id`` (index into the dataset), ``source`` (S,), ``target`` (T,)
    int64 token ids without bos/eos."""

    id: int
    source: torch.Tensor
    target: torch.Tensor


@dataclass
class Batch:
    """A padded batch. B sentences; S = max source length + 1; T = max target length + 1.

    - ``src_tokens`` (B, S) int64: ``x_1 .. x_k eos`` then pad.
    - ``src_lengths`` (B,) int64: k + 1.
    - ``prev_output_tokens`` (B, T) int64: ``bos y_1 .. y_n`` then pad (decoder input).
    - ``target`` (B, T) int64: ``y_1 .. y_n eos`` then pad.
    - ``target_lengths`` (B,) int64: n + 1.
    - ``ntokens``: sum of ``target_lengths``; ``nsentences``: B.
    - ``ids`` (B,) int64: dataset indices, to restore corpus order after decoding.
    """

    src_tokens: torch.Tensor
    src_lengths: torch.Tensor
    prev_output_tokens: torch.Tensor
    target: torch.Tensor
    target_lengths: torch.Tensor
    ntokens: int
    nsentences: int
    ids: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy with every tensor on ``device``."""
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                value = value.to(device, non_blocking=non_blocking)
            moved[f.name] = value
        return Batch(**moved)

    def pin_memory(self) -> Batch:
        """Pinned copy (``DataLoader(pin_memory=True)`` calls this)."""
        return Batch(
            **{
                f.name: (v.pin_memory() if isinstance(v, torch.Tensor) else v)
                for f in fields(self)
                for v in (getattr(self, f.name),)
            }
        )


def collate(
    examples: Sequence[Example | tuple[int, torch.Tensor, torch.Tensor]],
    pad_id: int = 0,
    bos_id: int = 1,
    eos_id: int = 2,
) -> Batch:
    """Pad ``examples`` (``(id, source, target)`` without bos/eos) into a :class:`Batch`.

    Invariant: ``prev_output_tokens[:, 1:] == target[:, :-1]`` wherever ``target`` is not pad,
    and ``prev_output_tokens[:, 0] == bos``.
    """
    if len(examples) == 0:
        raise ValueError("expected at least one example to collate, found 0")
    ids = [int(ex[0]) for ex in examples]
    srcs = [torch.as_tensor(ex[1], dtype=torch.long) for ex in examples]
    tgts = [torch.as_tensor(ex[2], dtype=torch.long) for ex in examples]
    b = len(examples)
    src_lengths = torch.tensor([len(s) + 1 for s in srcs], dtype=torch.long)
    tgt_lengths = torch.tensor([len(t) + 1 for t in tgts], dtype=torch.long)
    src_tokens = torch.full((b, int(src_lengths.max())), pad_id, dtype=torch.long)
    target = torch.full((b, int(tgt_lengths.max())), pad_id, dtype=torch.long)
    prev = torch.full_like(target, pad_id)
    for i, (s, t) in enumerate(zip(srcs, tgts)):
        k, n = len(s), len(t)
        src_tokens[i, :k] = s
        src_tokens[i, k] = eos_id
        target[i, :n] = t
        target[i, n] = eos_id
        prev[i, 0] = bos_id
        prev[i, 1 : n + 1] = t
    return Batch(
        src_tokens=src_tokens,
        src_lengths=src_lengths,
        prev_output_tokens=prev,
        target=target,
        target_lengths=tgt_lengths,
        ntokens=int(tgt_lengths.sum()),
        nsentences=b,
        ids=torch.tensor(ids, dtype=torch.long),
    )


class TokenBatchSampler:
    """Batches of indices under a token budget, shuffled per (seed, epoch), resumable, sharded.

    Args:
        src_sizes, tgt_sizes: (N,) collated lengths (tokens + eos) of each pair, e.g.
            ``TokenizedDataset.src_sizes``.
        max_tokens: budget per batch, counted like fairseq as
            ``len(batch) * max(max src size, max tgt size)`` (padded tokens). Default 4096.
        max_sentences: optional cap on the batch size.
        max_positions: pairs with a size above it are dropped (``num_filtered``; logged).
            Pairs larger than ``max_tokens`` alone are dropped too.
        shuffle: random tie-breaks between equal lengths and random batch order per epoch;
            ``False`` gives length-sorted batches in a fixed order (evaluation).
        seed: with the epoch, fixes the order; the same on every rank.
        rank, world_size: data-parallel shard. Every rank builds the same batch list, drops the
            ``len % world_size`` last ones (only when ``even=True``; different ones each
            epoch because of the shuffle) and takes every ``world_size``-th from ``rank`` on:
            disjoint shards with the same number of batches.
        even: see above; set ``False`` for evaluation to keep every sentence (ranks may then
            differ by one batch).
        epoch: the starting epoch.

    Batches are formed by sorting the pairs by length (longest of source and target, then
    target, then a random key) and cutting the sorted list greedily under the budget, so batches
    hold sentences of similar length ("bucketing") and have little padding.

    Resuming: ``state_dict()`` holds ``epoch`` and ``position`` = batches of this rank already
    yielded in the epoch (a batch counts as consumed once it has been yielded);
    ``load_state_dict`` on a fresh sampler built with the same arguments continues with exactly
    the remaining batches. Iterate the sampler in the training process (or via a
    ``DataLoader`` with ``num_workers=0``): prefetching workers would advance it ahead of the
    training steps. When an epoch is iterated to its end the sampler moves to the next epoch.
    """

    def __init__(
        self,
        src_sizes: Sequence[int] | np.ndarray,
        tgt_sizes: Sequence[int] | np.ndarray,
        max_tokens: int = 4096,
        *,
        max_sentences: int | None = None,
        max_positions: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        even: bool = True,
        epoch: int = 0,
    ) -> None:
        src = np.asarray(src_sizes, dtype=np.int64)
        tgt = np.asarray(tgt_sizes, dtype=np.int64)
        if src.ndim != 1 or src.shape != tgt.shape:
            raise ValueError(
                f"expected src_sizes and tgt_sizes of equal 1-D shape, found {src.shape} and {tgt.shape}"
            )
        if max_tokens < 1:
            raise ValueError(f"expected max_tokens >= 1, found {max_tokens}")
        if max_sentences is not None and max_sentences < 1:
            raise ValueError(f"expected max_sentences None or >= 1, found {max_sentences}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"expected 0 <= rank < world_size, found rank={rank}, world_size={world_size}"
            )
        self.max_tokens = int(max_tokens)
        self.max_sentences = max_sentences
        self.shuffle = shuffle
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.even = even
        self.epoch = int(epoch)
        self.position = 0

        size = np.maximum(src, tgt)
        keep = size <= self.max_tokens
        if max_positions is not None:
            keep &= size <= max_positions
        self.num_filtered = int((~keep).sum())
        if self.num_filtered:
            logger.warning(
                "batching: dropped %d of %d pairs longer than max_positions=%s or max_tokens=%d",
                self.num_filtered,
                len(size),
                max_positions,
                self.max_tokens,
            )
        self._indices = np.flatnonzero(keep)
        self._size = size[self._indices]
        self._tgt = tgt[self._indices]
        if len(self._indices) == 0:
            raise ValueError(
                f"expected at least one pair within the limits, found 0 of {len(size)}"
            )
        # The sorted size sequence, hence the batch count, does not depend on the epoch.
        self._num_batches = len(self._all_batches(self.epoch))

    # -- batch construction ---------------------------------------------------------------
    def _all_batches(self, epoch: int) -> list[np.ndarray]:
        """The batches of every rank for ``epoch`` (before sharding)."""
        rng = np.random.default_rng([self.seed, epoch])
        tie = rng.permutation(len(self._indices)) if self.shuffle else np.arange(len(self._indices))
        order = np.lexsort((tie, self._tgt, self._size))  # last key is the primary one
        sizes = self._size[order]
        cap = self.max_sentences or len(order)
        batches: list[np.ndarray] = []
        start, longest = 0, 0
        for j in range(len(order)):
            longest_with = max(longest, int(sizes[j]))
            count = j - start + 1
            if count > 1 and (count * longest_with > self.max_tokens or count > cap):
                batches.append(self._indices[order[start:j]])
                start, longest_with = j, int(sizes[j])
            longest = longest_with
        batches.append(self._indices[order[start:]])
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """This rank's batches of ``epoch`` (default: the current one), from its start."""
        all_batches = self._all_batches(self.epoch if epoch is None else epoch)
        if self.even:
            all_batches = all_batches[: len(all_batches) - len(all_batches) % self.world_size]
        return [b.tolist() for b in all_batches[self.rank :: self.world_size]]

    # -- iteration ------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Move to ``epoch`` (position 0); a no-op if already there, so resuming keeps the
        position."""
        if epoch != self.epoch:
            self.epoch = int(epoch)
            self.position = 0

    def __iter__(self) -> Iterator[list[int]]:
        mine = self.batches()
        while self.position < len(mine):
            batch = mine[self.position]
            self.position += 1
            yield batch
        self.epoch += 1
        self.position = 0

    def __len__(self) -> int:
        """Batches of this rank in a whole epoch (the same for every epoch and rank)."""
        n = self._num_batches
        if self.even:
            return n // self.world_size
        return len(range(self.rank, n, self.world_size))

    def remaining(self) -> int:
        """Batches of the current epoch not yet yielded."""
        return len(self) - self.position

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "world_size": self.world_size,
            "max_tokens": self.max_tokens,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (from :meth:`state_dict` of a sampler with the same
        arguments). Raises ``ValueError`` if seed, world size or budget differ."""
        for key in ("seed", "world_size", "max_tokens"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(
                    f"expected sampler state with {key}={getattr(self, key)}, found {state[key]}"
                )
        position = int(state["position"])
        if position < 0:
            raise ValueError(f"expected position >= 0, found {position}")
        self.epoch = int(state["epoch"])
        self.position = position
