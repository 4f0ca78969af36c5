"""Raw parallel text: reading sentence-aligned files into a :class:`ParallelCorpus`.

The lowest layer of the data pipeline: it knows files and lines, not tokenizers or splits.
:mod:`latalign.translate.synthetic` builds on it (it returns ``ParallelCorpus`` objects) and
:mod:`latalign.translate.data` builds on both, so neither of those two imports the other's
importer (there used to be a ``data`` <-> ``synthetic`` import cycle).

Files hold one sentence a line, UTF-8, plain or gzip (``.gz``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ParallelCorpus", "find_file", "read_lines", "read_parallel", "resolve_file"]

logger = logging.getLogger(__name__)


def read_lines(path: str | os.PathLike) -> list[str]:
    """Lines of a UTF-8 text file (``.gz`` is decompressed), without their line ends.

    ``ValueError`` naming the file and line when it is not UTF-8 (a corpus is not silently
    altered: fix or re-encode the file).
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(
            f"expected UTF-8 text in {path}; found undecodable bytes ({e.reason}) on line {line}"
        ) from None
    # newline="": lines end at \n, \r\n or \r, as reading the file in text mode does
    return [line.rstrip("\r\n") for line in io.StringIO(text, newline="")]


def find_file(directory: str | os.PathLike, prefix: str, lang: str) -> Path | None:
    """``{directory}/{prefix}.{lang}`` if it exists, else the ``.gz`` one, else ``None``."""
    plain = Path(directory) / f"{prefix}.{lang}"
    if plain.is_file():
        return plain
    packed = plain.with_name(plain.name + ".gz")
    return packed if packed.is_file() else None


def resolve_file(directory: str | os.PathLike, prefix: str, lang: str) -> Path:
    """Like :func:`find_file` but raises ``FileNotFoundError`` naming both names tried."""
    found = find_file(directory, prefix, lang)
    if found is None:
        plain = Path(directory) / f"{prefix}.{lang}"
        raise FileNotFoundError(f"expected {plain} or {plain}.gz, found neither")
    return found


@dataclass
class ParallelCorpus:
    """Sentence-aligned text: ``src[i]`` translates to ``tgt[i]``."""

    src: list[str]
    tgt: list[str]
    src_lang: str = "src"
    tgt_lang: str = "tgt"
    name: str = ""
    src_path: Path | None = None
    tgt_path: Path | None = None

    def __post_init__(self) -> None:
        if len(self.src) != len(self.tgt):
            raise ValueError(
                f"expected as many target as source sentences in corpus {self.name!r}, "
                f"found {len(self.src)} source and {len(self.tgt)} target"
            )

    def __len__(self) -> int:
        return len(self.src)

    def head(self, k: int) -> ParallelCorpus:
        """The first ``k`` pairs."""
        return ParallelCorpus(
            self.src[:k], self.tgt[:k], self.src_lang, self.tgt_lang, self.name,
            self.src_path, self.tgt_path,
        )  # fmt: skip

    def fingerprint(self) -> str:
        """sha256 (hex) of the text of both sides (not of file names or dates)."""
        h = hashlib.sha256()
        for side in (self.src, self.tgt):
            h.update(f"{len(side)}\n".encode())
            for line in side:
                h.update(line.encode("utf-8"))
                h.update(b"\n")
        return h.hexdigest()


def read_parallel(
    directory: str | os.PathLike,
    prefix: str,
    src: str,
    tgt: str,
    *,
    limit: int | None = None,
) -> ParallelCorpus:
    """Read ``{directory}/{prefix}.{src,tgt}[.gz]`` into a :class:`ParallelCorpus`.

    Raises ``FileNotFoundError`` if a file is missing and ``ValueError`` if the two files have
    different line counts (both files and counts named) or no lines. ``limit`` keeps only the
    first ``limit`` pairs (after the checks on the whole files).
    """
    src_path = resolve_file(directory, prefix, src)
    tgt_path = resolve_file(directory, prefix, tgt)
    src_lines = read_lines(src_path)
    tgt_lines = read_lines(tgt_path)
    if len(src_lines) != len(tgt_lines):
        raise ValueError(
            "expected parallel files with the same number of lines, found "
            f"{len(src_lines)} lines in {src_path} and {len(tgt_lines)} lines in {tgt_path}"
        )
    if not src_lines:
        raise ValueError(f"expected a non-empty corpus, found 0 lines in {src_path} and {tgt_path}")
    empty = sum(1 for s, t in zip(src_lines, tgt_lines) if not s.strip() or not t.strip())
    if empty:
        logger.warning("%s: %d pairs with an empty side (kept)", src_path.name, empty)
    corpus = ParallelCorpus(src_lines, tgt_lines, src, tgt, prefix, src_path, tgt_path)
    return corpus.head(limit) if limit is not None else corpus
