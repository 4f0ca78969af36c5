"""Parallel corpora, BPE, binarization and the trainer's entry point :func:`prepare_data`.

A data directory holds one sentence a line, plain or gzip, named ``{dir}/{prefix}.{lang}`` or
``{dir}/{prefix}.{lang}.gz`` (line *i* of the source file translates line *i* of the target
file); reading them is :mod:`latalign.translate.corpus` (``read_parallel``,
``ParallelCorpus``, re-exported here).  IWSLT'14 as fairseq's ``prepare-iwslt14.sh`` writes it
has ``train``/``valid``/``test``; Multi30k has ``train``/``val``/``test_2016_flickr``: :func:`detect_splits` finds those when the
default prefixes are absent and logs which it picked.

``prepare_data`` validates every file first (missing files, different line counts, empty
corpora raise before any training), trains a joint BPE tokenizer on the *training* split only,
and encodes all splits; both steps are cached under ``cache_dir`` keyed by their inputs.

Stored token sequences carry neither bos nor eos: :func:`latalign.translate.batching.collate`
adds them.  ``max_positions`` bounds the collated length (tokens + eos): longer training pairs
are dropped, longer valid/test sequences are truncated (their raw text, used as the BLEU
reference, is kept whole); both counts are in :attr:`PreparedData.summary`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latalign.io import atomic_write
from latalign.translate.batching import Example
from latalign.translate.config import DataConfig
from latalign.translate.corpus import (
    ParallelCorpus,
    find_file,
    read_lines,
    read_parallel,
    resolve_file,
)
from latalign.translate.synthetic import generate_synthetic
from latalign.translate.tokenizer import Tokenizer, load_or_train_tokenizer

__all__ = [
    "DataConfig",
    "ParallelCorpus",
    "PreparedData",
    "SplitPrefixes",
    "TokenizedDataset",
    "binarize",
    "detect_splits",
    "find_file",
    "load_corpora",
    "prepare_data",
    "read_lines",
    "read_parallel",
    "resolve_file",
]

logger = logging.getLogger(__name__)

DEFAULT_PREFIXES = {"train": "train", "valid": "valid", "test": "test"}
# Alternatives tried, in order, when a *default* prefix has no files.
PREFIX_ALTERNATIVES = {
    "train": ("train",),
    "valid": ("valid", "val", "dev", "validation"),
    "test": ("test", "test_2016_flickr", "tst"),
}


@dataclass(frozen=True)
class SplitPrefixes:
    """The file prefixes used for each split, and a note per auto-detected one."""

    train: str
    valid: str
    test: str
    notes: tuple[str, ...] = ()


def detect_splits(
    directory: str | os.PathLike,
    src: str,
    tgt: str,
    train_prefix: str = "train",
    valid_prefix: str = "valid",
    test_prefix: str = "test",
) -> SplitPrefixes:
    """Pick the file prefix of each split; a default that has no files falls back to a common
    alternative (valid -> val, dev, validation; test -> test_2016_flickr, tst), logged.

    A non-default prefix is used as given. Raises ``FileNotFoundError`` when neither the
    prefix nor any alternative has both the ``src`` and the ``tgt`` file.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"expected a data directory, found nothing at {directory}")
    chosen: dict[str, str] = {}
    notes: list[str] = []
    for split, prefix in (("train", train_prefix), ("valid", valid_prefix), ("test", test_prefix)):
        candidates = PREFIX_ALTERNATIVES[split] if prefix == DEFAULT_PREFIXES[split] else (prefix,)
        for cand in candidates:
            if find_file(directory, cand, src) and find_file(directory, cand, tgt):
                chosen[split] = cand
                break
        else:
            tried = ", ".join(f"{c}.{{{src},{tgt}}}[.gz]" for c in candidates)
            raise FileNotFoundError(
                f"expected files for the {split} split in {directory}, found none of: {tried}"
            )
        if chosen[split] != prefix:
            note = (
                f"{split} split: no {prefix}.{src}/{prefix}.{tgt}, using prefix {chosen[split]!r}"
            )
            logger.info(note)
            notes.append(note)
    return SplitPrefixes(chosen["train"], chosen["valid"], chosen["test"], tuple(notes))


# ---------------------------------------------------------------------------------------------
# token ids
# ---------------------------------------------------------------------------------------------
@dataclass
class TokenizedDataset:
    """Token ids of one split, without bos/eos (added by ``collate``).

    ``src[i]``, ``tgt[i]``: int64 tensors (L,); ``raw_src[i]``, ``raw_tgt[i]``: the text (the
    reference for BLEU). ``src_sizes``/``tgt_sizes``: collated lengths (tokens + eos) as int64
    numpy arrays, what :class:`~latalign.translate.batching.TokenBatchSampler` takes.
    """

    src: list[torch.Tensor]
    tgt: list[torch.Tensor]
    raw_src: list[str]
    raw_tgt: list[str]
    name: str = ""

    def __post_init__(self) -> None:
        n = {len(self.src), len(self.tgt), len(self.raw_src), len(self.raw_tgt)}
        if len(n) != 1:
            raise ValueError(
                "expected src, tgt, raw_src, raw_tgt of equal length, found "
                f"{len(self.src)}, {len(self.tgt)}, {len(self.raw_src)}, {len(self.raw_tgt)}"
            )

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, i: int) -> Example:
        return Example(int(i), self.src[i], self.tgt[i])

    @property
    def src_sizes(self) -> np.ndarray:
        return np.fromiter((len(t) + 1 for t in self.src), dtype=np.int64, count=len(self.src))

    @property
    def tgt_sizes(self) -> np.ndarray:
        return np.fromiter((len(t) + 1 for t in self.tgt), dtype=np.int64, count=len(self.tgt))

    def subset(self, indices: list[int] | np.ndarray) -> TokenizedDataset:
        idx = [int(i) for i in indices]
        return TokenizedDataset(
            [self.src[i] for i in idx],
            [self.tgt[i] for i in idx],
            [self.raw_src[i] for i in idx],
            [self.raw_tgt[i] for i in idx],
            self.name,
        )

    def num_tokens(self) -> tuple[int, int]:
        """(source, target) token counts, eos excluded."""
        return sum(len(t) for t in self.src), sum(len(t) for t in self.tgt)


def _pack(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat int32 ids and int64 offsets (N+1,) of a list of id lists."""
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter((i for s in seqs for i in s), dtype=np.int32, count=int(offsets[-1]))
    return torch.from_numpy(flat), torch.from_numpy(offsets)


def _unpack(flat: torch.Tensor, offsets: torch.Tensor) -> list[torch.Tensor]:
    lengths = (offsets[1:] - offsets[:-1]).tolist()
    return list(torch.split(flat.long(), lengths))


def binarize(
    corpus: ParallelCorpus, tokenizer: Tokenizer, cache_dir: str | os.PathLike | None = None
) -> TokenizedDataset:
    """Encode both sides of ``corpus`` with ``tokenizer``.

    With ``cache_dir``, the ids are stored in ``{cache_dir}/bin-{key}.pt`` (flat int32 ids plus
    offsets, written atomically) where ``key`` hashes the tokenizer model and the corpus text;
    a later call with the same tokenizer and text loads them instead of encoding again.
    """
    path = None
    if cache_dir is not None:
        key = hashlib.sha256(f"{tokenizer.fingerprint}:{corpus.fingerprint()}".encode())
        path = Path(cache_dir) / f"bin-{key.hexdigest()[:24]}.pt"
        if path.is_file():
            logger.info("binarize %s: reusing %s", corpus.name or "corpus", path)
            blob = torch.load(path, weights_only=True)
            return TokenizedDataset(
                _unpack(blob["src_flat"], blob["src_offsets"]),
                _unpack(blob["tgt_flat"], blob["tgt_offsets"]),
                list(corpus.src),
                list(corpus.tgt),
                corpus.name,
            )
    logger.info("binarize %s: encoding %d pairs", corpus.name or "corpus", len(corpus))
    src_flat, src_off = _pack(tokenizer.encode_batch(corpus.src))
    tgt_flat, tgt_off = _pack(tokenizer.encode_batch(corpus.tgt))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = {
            "src_flat": src_flat,
            "src_offsets": src_off,
            "tgt_flat": tgt_flat,
            "tgt_offsets": tgt_off,
        }
        atomic_write(path, lambda f: torch.save(blob, f))
    return TokenizedDataset(
        _unpack(src_flat, src_off), _unpack(tgt_flat, tgt_off), list(corpus.src),
        list(corpus.tgt), corpus.name,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# the trainer's entry point
# ---------------------------------------------------------------------------------------------
@dataclass
class PreparedData:
    """Everything the trainer needs: the tokenizer and the three encoded splits."""

    tokenizer: Tokenizer
    train: TokenizedDataset
    valid: TokenizedDataset
    test: TokenizedDataset
    src_lang: str
    tgt_lang: str
    summary: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for logs: sizes, vocabulary, filtering."""
        s = self.summary
        parts = [
            f"data={s.get('source')}",
            f"{self.src_lang}->{self.tgt_lang}",
            f"train={len(self.train)} valid={len(self.valid)} test={len(self.test)}",
            f"vocab={self.tokenizer.vocab_size}",
        ]
        if s.get("train_filtered"):
            parts.append(f"train_filtered={s['train_filtered']}")
        if s.get("eval_truncated"):
            parts.append(f"eval_truncated={s['eval_truncated']}")
        parts.extend(s.get("notes", []))
        return " ".join(parts)


def _filter_long(ds: TokenizedDataset, max_positions: int) -> tuple[TokenizedDataset, int]:
    keep = np.flatnonzero(np.maximum(ds.src_sizes, ds.tgt_sizes) <= max_positions)
    dropped = len(ds) - len(keep)
    return (ds.subset(keep) if dropped else ds), dropped


def _truncate_long(ds: TokenizedDataset, max_positions: int) -> int:
    limit = max_positions - 1  # room for eos (source) / bos and eos (target)
    count = 0
    for i in range(len(ds)):
        if len(ds.src[i]) > limit or len(ds.tgt[i]) > limit:
            ds.src[i] = ds.src[i][:limit]
            ds.tgt[i] = ds.tgt[i][:limit]
            count += 1
    return count


def load_corpora(cfg: DataConfig) -> tuple[dict[str, ParallelCorpus], dict[str, Any]]:
    """Read (or generate) the three splits of ``cfg`` and check them; no tokenization."""
    if cfg.data is None:
        syn = generate_synthetic(
            cfg.synthetic_size, cfg.synthetic_eval_size, cfg.synthetic_eval_size, cfg.synthetic_seed
        )
        splits = syn.splits()
        info: dict[str, Any] = {"source": f"synthetic(seed={cfg.synthetic_seed})", "notes": []}
    else:
        prefixes = detect_splits(
            cfg.data, cfg.src, cfg.tgt, cfg.train_prefix, cfg.valid_prefix, cfg.test_prefix
        )
        splits = {
            "train": read_parallel(cfg.data, prefixes.train, cfg.src, cfg.tgt),
            "valid": read_parallel(cfg.data, prefixes.valid, cfg.src, cfg.tgt),
            "test": read_parallel(cfg.data, prefixes.test, cfg.src, cfg.tgt),
        }
        info = {
            "source": str(cfg.data),
            "prefixes": {"train": prefixes.train, "valid": prefixes.valid, "test": prefixes.test},
            "notes": list(prefixes.notes),
        }
    if cfg.train_limit is not None:
        splits["train"] = splits["train"].head(cfg.train_limit)
    return splits, info


def prepare_data(cfg: DataConfig, cache_dir: str | os.PathLike) -> PreparedData:
    """Read/generate the corpus, train (or reuse) the joint BPE on train, encode all splits.

    Caches: ``{cache_dir}/tokenizers/spm-*/`` and ``{cache_dir}/binarized/bin-*.pt``. Raises
    ``FileNotFoundError``/``ValueError`` on missing, mismatched or empty files before any
    expensive work.
    """
    cache_dir = Path(cache_dir)
    splits, info = load_corpora(cfg)
    train_text = splits["train"]
    tokenizer = load_or_train_tokenizer(train_text, cfg.vocab_size, cache_dir / "tokenizers")
    encoded = {
        name: binarize(corpus, tokenizer, cache_dir / "binarized")
        for name, corpus in splits.items()
    }
    train, filtered = _filter_long(encoded["train"], cfg.max_positions)
    if filtered:
        logger.warning(
            "train: dropped %d of %d pairs longer than max_positions=%d",
            filtered,
            len(encoded["train"]),
            cfg.max_positions,
        )
    truncated = {n: _truncate_long(encoded[n], cfg.max_positions) for n in ("valid", "test")}
    if any(truncated.values()):
        logger.warning("truncated to max_positions=%d: %s", cfg.max_positions, truncated)
    src_lang, tgt_lang = splits["train"].src_lang, splits["train"].tgt_lang
    summary = {
        **info,
        "sizes": {
            "train": len(train),
            "valid": len(encoded["valid"]),
            "test": len(encoded["test"]),
        },
        "vocab_size": tokenizer.vocab_size,
        "vocab_size_requested": cfg.vocab_size,
        "tokenizer": tokenizer.fingerprint[:12],
        "train_tokens": dict(zip(("src", "tgt"), train.num_tokens())),
        "train_filtered": filtered,
        "eval_truncated": sum(truncated.values()),
    }
    prepared = PreparedData(
        tokenizer, train, encoded["valid"], encoded["test"], src_lang, tgt_lang, summary
    )
    logger.info("data: %s", prepared.describe())
    return prepared
