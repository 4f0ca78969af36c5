"""Joint BPE tokenizer (sentencepiece) with the fixed special ids of the translation stack.

One subword model is trained on the source *and* target training text together, as in the
paper's fairseq setup (joint BPE).  The special ids are fixed for every model:

======  ====  ==============================================================
piece   id    role
======  ====  ==============================================================
<pad>   0     padding (``PAD_ID``)
<s>     1     beginning of sentence, first decoder input (``BOS_ID``)
</s>    2     end of sentence, last target token (``EOS_ID``)
<unk>   3     unknown character (``UNK_ID``)
<blank> 4     the empty token ε of the latent alignment criteria (``BLANK_ID``)
======  ====  ==============================================================

ε is a sentencepiece *control* symbol: it is in the vocabulary (the model may predict it), but
encoding never produces it, not even from a literal "<blank>" in the text (unlike a
user-defined symbol), and :meth:`Tokenizer.decode` drops it ("we remove the ε tokens after
decoding", Sec. 4 of the paper).

Vocabulary size: ``vocab_size`` is an *upper bound*.  Training uses sentencepiece's
``hard_vocab_limit=False``, so a corpus too small for the requested size yields a smaller
vocabulary instead of an error (a warning is logged); the actual size is
:attr:`Tokenizer.vocab_size`.

Caching: :func:`load_or_train_tokenizer` hashes the training text and the settings and reuses a
model trained earlier with the same inputs (``{cache_dir}/spm-{hash}/``).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sentencepiece as spm

from latalign.io import atomic_write

logger = logging.getLogger(__name__)

PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
UNK_ID = 3
BLANK_ID = 4
BLANK_PIECE = "<blank>"
SPECIAL_IDS = (PAD_ID, BOS_ID, EOS_ID, UNK_ID, BLANK_ID)


@dataclass(frozen=True)
class SpecialIds:
    """The ids a decoder never emits as words: pad, bos, eos and ε (``blank``); the defaults
    are latalign's own (:class:`Tokenizer`), :meth:`of` reads another tokenizer's."""

    pad: int = PAD_ID
    bos: int = BOS_ID
    eos: int = EOS_ID
    blank: int = BLANK_ID

    @classmethod
    def of(cls, tokenizer: Any) -> SpecialIds:
        """The ids of anything with ``pad_id``, ``bos_id``, ``eos_id`` and ``blank_id``."""
        return cls(tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.blank_id)


#: latalign's own special ids (the decoders' default)
DEFAULT_IDS = SpecialIds()


MODEL_FILE = "spm.model"
META_FILE = "tokenizer.json"
# Smallest vocabulary that holds the 5 special pieces and a handful of characters.
MIN_VOCAB_SIZE = 16


class Tokenizer:
    """A sentencepiece BPE model plus the fixed special ids (pad=0, bos=1, eos=2, unk=3, ε=4).

    Build one with :func:`train_tokenizer`, :func:`load_or_train_tokenizer` or
    :meth:`Tokenizer.load`.
    """

    pad_id = PAD_ID
    bos_id = BOS_ID
    eos_id = EOS_ID
    unk_id = UNK_ID
    blank_id = BLANK_ID

    def __init__(self, model_proto: bytes) -> None:
        self._proto = model_proto
        self._sp = spm.SentencePieceProcessor()
        self._sp.LoadFromSerializedProto(model_proto)
        found = (
            self._sp.pad_id(),
            self._sp.bos_id(),
            self._sp.eos_id(),
            self._sp.unk_id(),
            self._sp.piece_to_id(BLANK_PIECE),
        )
        if found != SPECIAL_IDS:
            raise ValueError(
                f"expected special ids (pad, bos, eos, unk, blank) = {SPECIAL_IDS}, found {found}"
            )
        self._drop = frozenset(i for i in SPECIAL_IDS if i != UNK_ID)

    @property
    def vocab_size(self) -> int:
        """Number of pieces, special ids included (the model's output dimension)."""
        return self._sp.get_piece_size()

    @property
    def fingerprint(self) -> str:
        """sha256 (hex) of the serialized model: identifies the tokenizer in caches."""
        return hashlib.sha256(self._proto).hexdigest()

    def encode(self, text: str) -> list[int]:
        """Subword ids of ``text``, without bos/eos. Characters never seen in training map to
        ``unk_id`` (which :meth:`decode` renders as " ⁇ ")."""
        return self._sp.encode(text, out_type=int)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """:meth:`encode` for many sentences at once (faster)."""
        return self._sp.encode(list(texts), out_type=int)

    def decode(self, ids: Iterable[int]) -> str:
        """Detokenized text of ``ids``; pad, bos, eos and blank (ε) are dropped, BPE undone.

        Accepts a list of ints or a 1-D tensor/array. Ids outside the vocabulary raise
        ``ValueError``.
        """
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        kept = [int(i) for i in ids if int(i) not in self._drop]
        bad = [i for i in kept if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"expected ids in [0, {self.vocab_size}), found {bad[:5]}")
        return self._sp.decode(kept)

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(int(i))

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``spm.model`` and ``tokenizer.json`` into ``directory`` (created); return it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(directory / MODEL_FILE, self._proto)
        meta = {
            "vocab_size": self.vocab_size,
            "special_ids": dict(zip(_SPECIAL_NAMES, SPECIAL_IDS)),
        }
        atomic_write(directory / META_FILE, json.dumps(meta, indent=1).encode())
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Tokenizer:
        """Load a tokenizer written by :meth:`save` (reads ``{directory}/spm.model``)."""
        path = Path(directory) / MODEL_FILE
        if not path.is_file():
            raise FileNotFoundError(f"expected a sentencepiece model at {path}, found none")
        return cls(path.read_bytes())

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, fingerprint={self.fingerprint[:12]})"


_SPECIAL_NAMES = ("pad", "bos", "eos", "unk", "blank")


def _check_vocab_size(vocab_size: int) -> None:
    if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"expected vocab_size >= {MIN_VOCAB_SIZE}, found {vocab_size!r}")


def _clean_texts(texts: Iterable[str]) -> list[str]:
    # sentencepiece reads one sentence a line: inner newlines would split a sentence.
    return [t.replace("\n", " ").replace("\r", " ") for t in texts]


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    *,
    character_coverage: float = 1.0,
    num_threads: int = 2,
) -> Tokenizer:
    """Train a BPE sentencepiece model on ``texts`` (one sentence each) and return it.

    ``vocab_size`` (special ids included) is an upper bound: with a corpus too small for it,
    sentencepiece stops early (``hard_vocab_limit=False``) and a warning is logged.
    ``character_coverage=1.0`` keeps every character of the training text (no ``<unk>`` on it).
    Sentencepiece's own logging is silenced.
    """
    _check_vocab_size(vocab_size)
    texts = [t for t in _clean_texts(texts) if t.strip()]
    if not texts:
        raise ValueError("expected non-empty training text for the tokenizer, found none")
    # Train from an iterator into memory: no file names end up in the model (whose bytes are
    # the fingerprint), so the same text and settings always give the same model bytes.
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, model_type="bpe",
        vocab_size=vocab_size, hard_vocab_limit=False, character_coverage=character_coverage,
        pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID, unk_id=UNK_ID,
        pad_piece="<pad>", bos_piece="<s>", eos_piece="</s>", unk_piece="<unk>",
        control_symbols=[BLANK_PIECE], num_threads=num_threads, minloglevel=2,
    )  # fmt: skip
    tok = Tokenizer(model.getvalue())
    if tok.vocab_size < vocab_size:
        logger.warning(
            "tokenizer: corpus too small for vocab_size=%d; trained %d pieces instead",
            vocab_size,
            tok.vocab_size,
        )
    return tok


def _texts_of(texts_or_corpus: Any) -> list[str]:
    """Lines of a list of strings, or source + target lines of a corpus with ``.src``/``.tgt``."""
    if isinstance(texts_or_corpus, str):
        raise ValueError("expected a sequence of sentences or a corpus, found a single str")
    if hasattr(texts_or_corpus, "src") and hasattr(texts_or_corpus, "tgt"):
        return list(texts_or_corpus.src) + list(texts_or_corpus.tgt)
    return list(texts_or_corpus)


def tokenizer_cache_key(texts: Sequence[str], settings: dict[str, Any]) -> str:
    """sha256 (hex) of the training text and the training settings."""
    h = hashlib.sha256()
    h.update(json.dumps(settings, sort_keys=True).encode())
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def load_or_train_tokenizer(
    texts_or_corpus: Any,
    vocab_size: int,
    cache_dir: str | os.PathLike,
    *,
    character_coverage: float = 1.0,
) -> Tokenizer:
    """Return the tokenizer for this text and these settings, training it only once.

    ``texts_or_corpus``: a sequence of sentences, or a parallel corpus (anything with ``.src``
    and ``.tgt`` lists; both sides are used: joint BPE). The model lives in
    ``{cache_dir}/spm-{key[:16]}/`` where ``key`` hashes the text and settings; a second call
    with the same inputs loads it instead of training. Written atomically (a temporary folder
    renamed into place), so an interrupted run leaves no half-written cache.
    """
    _check_vocab_size(vocab_size)
    texts = _clean_texts(_texts_of(texts_or_corpus))
    settings = {
        "model_type": "bpe",
        "vocab_size": vocab_size,
        "character_coverage": character_coverage,
        "special": list(SPECIAL_IDS),
        "version": 1,
    }
    key = tokenizer_cache_key(texts, settings)
    cache_dir = Path(cache_dir)
    target = cache_dir / f"spm-{key[:16]}"
    if (target / MODEL_FILE).is_file():
        logger.info("tokenizer: reusing %s", target)
        return Tokenizer.load(target)
    logger.info("tokenizer: training BPE (vocab_size<=%d) on %d sentences", vocab_size, len(texts))
    tok = train_tokenizer(texts, vocab_size, character_coverage=character_coverage)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{target.name}."))
    try:
        tok.save(tmp)
        (tmp / "settings.json").write_text(json.dumps({**settings, "key": key}, indent=1))
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / MODEL_FILE).is_file():  # not a concurrent writer's result
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return tok
