from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from latalign.translate import tokenizer as tokmod
from latalign.translate.batching import TokenBatchSampler, collate
from latalign.translate.data import (
    DataConfig,
    ParallelCorpus,
    binarize,
    detect_splits,
    prepare_data,
    read_lines,
    read_parallel,
    resolve_file,
)
from latalign.translate.synthetic import write_synthetic
from latalign.translate.tokenizer import load_or_train_tokenizer, train_tokenizer

LINES = ["Ein Hund läuft.", "", "Zwei Männer  spielen.", "Ende"]


def _write(path: Path, lines: list[str], gz: bool = False) -> Path:
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def test_plain_and_gz_read_the_same(tmp_path) -> None:
    plain = _write(tmp_path / "a.de", LINES)
    packed = _write(tmp_path / "b.de", LINES, gz=True)
    assert read_lines(plain) == read_lines(packed) == LINES


def test_resolve_file_prefers_plain_then_gz(tmp_path) -> None:
    _write(tmp_path / "train.de", LINES, gz=True)
    assert resolve_file(tmp_path, "train", "de").name == "train.de.gz"
    _write(tmp_path / "train.de", LINES)
    assert resolve_file(tmp_path, "train", "de").name == "train.de"
    with pytest.raises(FileNotFoundError, match=r"train\.en or .*train\.en\.gz"):
        resolve_file(tmp_path, "train", "en")


def test_line_count_mismatch_names_files_and_counts(tmp_path) -> None:
    _write(tmp_path / "train.de", LINES)
    _write(tmp_path / "train.en", LINES[:3], gz=True)
    with pytest.raises(ValueError) as err:
        read_parallel(tmp_path, "train", "de", "en")
    msg = str(err.value)
    assert "4 lines in" in msg and "train.de" in msg
    assert "3 lines in" in msg and "train.en.gz" in msg


def test_empty_corpus_is_an_error(tmp_path) -> None:
    _write(tmp_path / "train.de", [])
    _write(tmp_path / "train.en", [])
    with pytest.raises(ValueError, match="non-empty corpus, found 0 lines in .*train.de"):
        read_parallel(tmp_path, "train", "de", "en")


def test_read_parallel_limit(tmp_path) -> None:
    _write(tmp_path / "x.de", LINES)
    _write(tmp_path / "x.en", [s.upper() for s in LINES])
    c = read_parallel(tmp_path, "x", "de", "en", limit=2)
    assert c.src == LINES[:2] and c.tgt == [LINES[0].upper(), ""] and len(c) == 2


def test_multi30k_files_and_split_detection(multi30k_dir) -> None:
    splits = detect_splits(multi30k_dir, "de", "en")
    assert (splits.train, splits.valid, splits.test) == ("train", "val", "test_2016_flickr")
    assert any("'val'" in n for n in splits.notes) and any(
        "test_2016_flickr" in n for n in splits.notes
    )
    valid = read_parallel(multi30k_dir, splits.valid, "de", "en")
    assert len(valid) == 1014
    assert valid.src_path.name == "val.de.gz"
    # an explicit, non-default prefix is taken as given
    with pytest.raises(FileNotFoundError, match="dev2010"):
        detect_splits(multi30k_dir, "de", "en", valid_prefix="dev2010")
    with pytest.raises(FileNotFoundError, match="data directory"):
        detect_splits(multi30k_dir / "nope", "de", "en")


def test_iwslt_style_names_are_used_as_is(tmp_path) -> None:
    for split in ("train", "valid", "test", "val"):
        _write(tmp_path / f"{split}.de", LINES)
        _write(tmp_path / f"{split}.en", LINES)
    s = detect_splits(tmp_path, "de", "en")
    assert (s.train, s.valid, s.test, s.notes) == ("train", "valid", "test", ())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"vocab_size": 10}, "vocab_size >= 16"),
        ({"max_positions": 1}, "max_positions >= 2"),
        ({"synthetic_size": 0}, "synthetic_size >= 1"),
        ({"train_limit": 0}, "train_limit"),
        ({"src": ""}, "src"),
        ({"data": "x", "src": "en", "tgt": "en"}, "different src and tgt"),
    ],
)
def test_config_validation(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        DataConfig(**kwargs)


def test_binarize_cache(tmp_path, monkeypatch) -> None:
    corpus = ParallelCorpus(["a b c d", "b c"] * 10, ["x y", "y z w"] * 10, "de", "en", "train")
    tok = train_tokenizer(corpus.src + corpus.tgt, 30)
    first = binarize(corpus, tok, tmp_path)
    assert len(list(tmp_path.glob("bin-*.pt"))) == 1
    monkeypatch.setattr(type(tok), "encode_batch", lambda *a: pytest.fail("encoded again"))
    second = binarize(corpus, tok, tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(first.src, second.src))
    assert all(torch.equal(a, b) for a, b in zip(first.tgt, second.tgt))
    assert second.src[0].dtype == torch.int64
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.fixture
def no_training(monkeypatch):
    """Make any tokenizer training fail: proves that a cache was used."""

    def fail(*args, **kwargs):
        raise AssertionError("tokenizer trained again")

    monkeypatch.setattr(tokmod, "train_tokenizer", fail)


def test_prepare_synthetic_and_cache(tmp_path, monkeypatch) -> None:
    cfg = DataConfig(vocab_size=400, synthetic_size=600, synthetic_eval_size=50, synthetic_seed=1)
    data = prepare_data(cfg, tmp_path)
    tok = data.tokenizer
    assert (len(data.train), len(data.valid), len(data.test)) == (600, 50, 50)
    assert (data.src_lang, data.tgt_lang) == ("syn", "en")
    assert tok.blank_id == 4 and tok.vocab_size <= 400
    for ds in (data.train, data.test):
        for i in range(0, len(ds), 7):
            assert ds.src[i].dtype == torch.int64
            assert tok.decode(ds.tgt[i]) == ds.raw_tgt[i]
            assert tok.decode(ds.src[i]) == ds.raw_src[i]
    s = data.summary
    assert s["sizes"] == {"train": 600, "valid": 50, "test": 50}
    assert s["vocab_size"] == tok.vocab_size and "vocab=" in data.describe()

    # second run: neither the tokenizer nor the ids are computed again
    def fail(*args, **kwargs):
        raise AssertionError("recomputed")

    monkeypatch.setattr(tokmod, "train_tokenizer", fail)
    monkeypatch.setattr(tokmod.Tokenizer, "encode_batch", fail)
    again = prepare_data(cfg, tmp_path)
    assert again.tokenizer.fingerprint == tok.fingerprint
    assert all(torch.equal(a, b) for a, b in zip(again.train.tgt, data.train.tgt))


def test_prepare_multi30k_trains_on_train_only(tmp_path, multi30k_dir, monkeypatch) -> None:
    cfg = DataConfig(data=str(multi30k_dir), train_limit=400, vocab_size=300, max_positions=20)
    data = prepare_data(cfg, tmp_path)
    assert data.summary["prefixes"] == {
        "train": "train",
        "valid": "val",
        "test": "test_2016_flickr",
    }
    assert (len(data.valid), len(data.test)) == (1014, 1000)
    # the tokenizer is the one trained on the 400 training pairs (both sides): a cache hit
    monkeypatch.setattr(tokmod, "train_tokenizer", lambda *a, **k: pytest.fail("not train-only"))
    train = read_parallel(multi30k_dir, "train", "de", "en", limit=400)
    again = load_or_train_tokenizer(train, 300, tmp_path / "tokenizers")
    assert again.fingerprint == data.tokenizer.fingerprint
    # max_positions: long training pairs dropped, long eval sequences truncated, text kept
    s = data.summary
    assert s["train_filtered"] > 0 and len(data.train) == 400 - s["train_filtered"]
    assert max(data.train.src_sizes.max(), data.train.tgt_sizes.max()) <= 20
    assert s["eval_truncated"] > 0
    assert max(len(t) for t in data.valid.src) <= 19
    assert len(data.valid.raw_tgt) == 1014 and max(map(len, data.valid.raw_tgt)) > 60


def test_prepare_reports_bad_files_before_training(tmp_path, no_training) -> None:
    d = tmp_path / "corpus"
    write_synthetic(d, 20, 5, 5, seed=0)
    _write(d / "valid.en", ["only one line"])
    with pytest.raises(ValueError, match=r"5 lines in .*valid\.syn and 1 lines in .*valid\.en"):
        prepare_data(DataConfig(data=str(d), src="syn", tgt="en", vocab_size=50), tmp_path)
    (d / "test.syn").unlink()
    with pytest.raises(FileNotFoundError, match="test split"):
        prepare_data(DataConfig(data=str(d), src="syn", tgt="en", vocab_size=50), tmp_path)


def test_prepared_data_feeds_the_sampler_and_collate(tmp_path) -> None:
    cfg = DataConfig(vocab_size=300, synthetic_size=300, synthetic_eval_size=20)
    data = prepare_data(cfg, tmp_path)
    ds, tok = data.train, data.tokenizer
    sampler = TokenBatchSampler(ds.src_sizes, ds.tgt_sizes, max_tokens=256, seed=0)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(ds)))
    batch = collate([ds[i] for i in batches[0]], tok.pad_id, tok.bos_id, tok.eos_id)
    assert batch.src_tokens.numel() <= 256 and batch.target.numel() <= 256
    i = int(batch.ids[0])
    row = batch.target[0, : batch.target_lengths[0]]
    assert tok.decode(row) == ds.raw_tgt[i]
    assert np.array_equal(ds.tgt_sizes, [len(t) + 1 for t in ds.tgt])


def test_read_lines_names_file_and_line_of_bytes_that_are_not_utf8(tmp_path) -> None:
    data = b"gut\nnoch gut\ncaf\xe9\n"
    for gz in (False, True):
        path = tmp_path / ("bad.de.gz" if gz else "bad.de")
        path.write_bytes(gzip.compress(data) if gz else data)
        with pytest.raises(ValueError, match=r"expected UTF-8 text in .*bad\.de.* on line 3"):
            read_lines(path)
