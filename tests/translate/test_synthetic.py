from __future__ import annotations

import re

import pytest

from latalign.translate.data import read_parallel
from latalign.translate.synthetic import (
    MAX_WORDS,
    MIN_WORDS,
    SOURCE_LEXICON,
    generate_synthetic,
    write_synthetic,
)


@pytest.fixture(scope="module")
def corpus():
    return generate_synthetic(train_size=2000, valid_size=200, test_size=200, seed=0)


def test_sizes_and_determinism(corpus) -> None:
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (2000, 200, 200)
    again = generate_synthetic(train_size=2000, valid_size=200, test_size=200, seed=0)
    assert again.train.src == corpus.train.src and again.train.tgt == corpus.train.tgt
    assert again.test.tgt == corpus.test.tgt


def test_different_seeds_differ(corpus) -> None:
    other = generate_synthetic(train_size=2000, valid_size=200, test_size=200, seed=1)
    assert other.train.src != corpus.train.src
    assert len(set(other.train.src) & set(corpus.train.src)) < 100


def test_splits_are_disjoint(corpus) -> None:
    train, valid, test = (set(c.src) for c in (corpus.train, corpus.valid, corpus.test))
    assert not (train & valid) and not (train & test) and not (valid & test)
    assert len(train) == 2000  # no duplicates inside train either


def test_sentence_shape(corpus) -> None:
    vocabulary = set(SOURCE_LEXICON.values())
    for s, t in zip(corpus.train.src, corpus.train.tgt):
        assert s.endswith(" .") and t.endswith(".") and t[0].isupper()
        src_words = s[:-2].split()
        tgt_words = t[:-1].split()
        assert MIN_WORDS <= len(src_words) <= MAX_WORDS
        assert MIN_WORDS <= len(tgt_words) <= MAX_WORDS
        assert set(src_words) <= vocabulary


def _has(words: str, sentence: str) -> bool:
    return re.search(rf"\b(?:{words})\b", sentence.lower()) is not None


def test_translation_is_faithful(corpus) -> None:
    """Concepts appear on both sides or on neither; grammar particles map to English."""
    src_words = [set(s.split()) for s in corpus.train.src]
    tgts = corpus.train.tgt
    checks = {
        "dog": "dogs?",
        "owl": "owls?",
        "river": "rivers?",
        "carry": "carry|carries|carried",
        "big": "big|large",
        "near": "near|close to|next to",
    }
    for concept, english in checks.items():
        word = SOURCE_LEXICON[concept]
        for sw, t in zip(src_words, tgts):
            assert (word in sw) == _has(english, t), (concept, t)
    neg = SOURCE_LEXICON["NEG"]
    for sw, t in zip(src_words, tgts):
        assert (neg in sw) == _has("not", t)


def test_reordering(corpus) -> None:
    """Source: verb-final, determiner last in its phrase; English: verb before the object,
    determiner first."""
    lex = SOURCE_LEXICON
    carry = lex["carry"]
    particles = {lex["PAST"], lex["NEG"], "."}
    dets = {
        lex[d] for d in ("the", "a", "this", "that", "my", "your", "his", "her", "our", "their")
    }
    n = 0
    for s, t in zip(corpus.train.src, corpus.train.tgt):
        sw, tw = s.split(), t.lower().rstrip(".").split()
        assert sw[0] not in dets
        if carry not in sw:
            continue
        n += 1
        assert set(sw[sw.index(carry) + 1 :]) <= particles  # verb-final
        verb_at = next(i for i, w in enumerate(tw) if w in ("carry", "carries", "carried"))
        assert len(tw) - verb_at >= 3  # at least "det noun" follows the English verb
        assert tw[verb_at + 1] in {"the", "a", "an", "some", "this", "that", "these", "those",
                                   "my", "your", "his", "her", "our", "their"}  # fmt: skip
    assert n > 30


def test_paraphrases_vary(corpus) -> None:
    """The same concept is rendered several ways: the target is multimodal."""
    text = " ".join(corpus.train.tgt).lower()
    for options in (("big", "large"), ("shop", "store"), ("near", "close to", "next to")):
        assert all(_has(o, text) for o in options), options


def test_write_and_read_back(tmp_path) -> None:
    write_synthetic(tmp_path / "plain", 50, 10, 10, seed=2)
    write_synthetic(tmp_path / "gz", 50, 10, 10, seed=2, compress=True)
    assert (tmp_path / "gz" / "train.syn.gz").is_file()
    a = read_parallel(tmp_path / "plain", "train", "syn", "en")
    b = read_parallel(tmp_path / "gz", "train", "syn", "en")
    ref = generate_synthetic(50, 10, 10, seed=2).train
    assert a.src == b.src == ref.src and a.tgt == b.tgt == ref.tgt


def test_bad_sizes() -> None:
    with pytest.raises(ValueError, match="train_size >= 1"):
        generate_synthetic(train_size=0)
