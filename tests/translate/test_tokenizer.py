from __future__ import annotations

import logging

import pytest
import torch

from latalign.translate import tokenizer as tokmod
from latalign.translate.data import ParallelCorpus
from latalign.translate.synthetic import generate_synthetic
from latalign.translate.tokenizer import Tokenizer, load_or_train_tokenizer, train_tokenizer

ENGLISH = [
    "The cat sat on the mat.",
    "A dog runs quickly through the park, barking loudly!",
    "Two young men are playing football outside.",
    "She said: \"it's (almost) 5 o'clock\".",
    "Zwei junge Männer spielen draußen Fußball.",
]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    corpus = generate_synthetic(train_size=300, valid_size=1, test_size=1, seed=3).train
    return corpus.src + corpus.tgt + ENGLISH * 3


@pytest.fixture(scope="module")
def tok(texts: list[str]) -> Tokenizer:
    return train_tokenizer(texts, 300)


def test_special_ids_are_fixed(tok: Tokenizer) -> None:
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id, tok.blank_id) == (0, 1, 2, 3, 4)
    assert [tok.id_to_piece(i) for i in range(5)] == ["<pad>", "<s>", "</s>", "<unk>", "<blank>"]
    assert tok.vocab_size == 300


@pytest.mark.parametrize("text", ENGLISH)
def test_decode_inverts_encode(tok: Tokenizer, text: str) -> None:
    ids = tok.encode(text)
    assert ids and all(5 <= i < tok.vocab_size for i in ids)  # no bos/eos/blank/unk
    assert tok.decode(ids) == text


def test_round_trip_on_training_text(tok: Tokenizer, texts: list[str]) -> None:
    for t in texts[:50]:
        assert tok.decode(tok.encode(t)) == t


def test_bpe_merges_frequent_words(tok: Tokenizer) -> None:
    # a BPE model, not characters: a frequent word is fewer pieces than characters
    assert len(tok.encode("The cat sat on the mat.")) < len("The cat sat on the mat.") // 2


def test_decode_drops_specials_and_blank(tok: Tokenizer) -> None:
    text = "Two young men are playing football outside."
    ids = tok.encode(text)
    noisy = [tok.bos_id, tok.blank_id]
    for i in ids:
        noisy += [i, tok.blank_id]
    noisy += [tok.eos_id, tok.pad_id, tok.pad_id]
    assert tok.decode(noisy) == text
    assert tok.decode(torch.tensor(noisy)) == text
    assert tok.decode([tok.blank_id, tok.blank_id]) == ""


def test_blank_is_never_produced_by_encode(tok: Tokenizer) -> None:
    assert tok.blank_id not in tok.encode("a <blank> in the text")


def test_decode_rejects_out_of_vocabulary(tok: Tokenizer) -> None:
    with pytest.raises(ValueError, match="expected ids in"):
        tok.decode([5, tok.vocab_size])


def test_save_and_load(tok: Tokenizer, tmp_path) -> None:
    tok.save(tmp_path / "tok")
    loaded = Tokenizer.load(tmp_path / "tok")
    assert loaded.fingerprint == tok.fingerprint
    assert loaded.vocab_size == tok.vocab_size
    assert loaded.encode(ENGLISH[1]) == tok.encode(ENGLISH[1])
    with pytest.raises(FileNotFoundError, match="spm.model"):
        Tokenizer.load(tmp_path / "nothing")


def test_too_small_corpus_shrinks_vocab_with_warning(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="latalign.translate.tokenizer"):
        small = train_tokenizer(ENGLISH, 5000)
    assert 16 < small.vocab_size < 5000
    assert "corpus too small for vocab_size=5000" in caplog.text
    assert small.decode(small.encode(ENGLISH[0])) == ENGLISH[0]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="vocab_size >= 16"):
        train_tokenizer(ENGLISH, 8)
    with pytest.raises(ValueError, match="non-empty"):
        train_tokenizer(["", "  "], 100)
    with pytest.raises(ValueError, match="single str"):
        load_or_train_tokenizer("some text", 100, "/nonexistent")


def test_training_is_deterministic(texts: list[str], tok: Tokenizer) -> None:
    assert train_tokenizer(texts, 300).fingerprint == tok.fingerprint


def test_cache_reuses_model_without_retraining(tmp_path, monkeypatch, texts) -> None:
    calls = []
    real = tokmod.train_tokenizer

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(tokmod, "train_tokenizer", counting)
    first = load_or_train_tokenizer(texts, 250, tmp_path)
    second = load_or_train_tokenizer(list(texts), 250, tmp_path)
    assert len(calls) == 1
    assert second.fingerprint == first.fingerprint
    # other settings or other text: a new model
    load_or_train_tokenizer(texts, 260, tmp_path)
    load_or_train_tokenizer(texts[:-1], 250, tmp_path)
    assert len(calls) == 3
    # only finished model folders remain: no temporary files left behind
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 3 and all(n.startswith("spm-") for n in names)


def test_corpus_input_is_joint(tmp_path) -> None:
    corpus = ParallelCorpus(
        ["das haus ist klein"] * 20, ["the house is small"] * 20, "de", "en", "train"
    )
    tok = load_or_train_tokenizer(corpus, 40, tmp_path)
    for text in ("das haus", "the house"):
        assert tok.unk_id not in tok.encode(text)
        assert tok.decode(tok.encode(text)) == text
