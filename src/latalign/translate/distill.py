"""Sequence-level knowledge distillation (Kim & Rush 2016): an autoregressive model's beam
translations of the training set as a new data directory.

``distill(run_dir, data, out)`` reads the training split of ``data`` (the file naming of
:mod:`latalign.translate.data`), translates its source side with the AR run's best checkpoint
(beam 5 by default, :func:`latalign.translate.decode.translate_sentences`) and writes ``out``:

- ``{train}.{tgt}[.gz]``: the translations, line *i* translating line *i* of the source;
- ``{train}.{src}[.gz]`` and every valid/test file: byte copies of the input files (same
  names, same compression);
- ``distill.json``: what was distilled with what (run, checkpoint, beam, line count).

Resumable: the source is cut into chunks of ``chunk_size`` lines; each finished chunk is
written atomically as ``out/.distill/chunk-NNNNN.txt`` and counted in
``out/.distill/progress.json``, so a killed run continues at the first missing chunk (the
spec in ``progress.json`` must match, or the directory is refused). The final files are
assembled only when every chunk exists, and the work folder is then removed.

An ``out`` that exists and holds anything else (other files, another distillation) is refused
with a ``ValueError`` before any work; nothing in it is overwritten.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latalign.io import atomic_write

__all__ = ["DistillResult", "add_arguments", "distill", "main"]

WORK_DIR = ".distill"
PROGRESS_FILE = "progress.json"
DONE_FILE = "distill.json"


@dataclass
class DistillResult:
    """``out`` directory, ``lines`` translated, ``chunks_reused`` (from an interrupted run),
    ``reused`` (the whole distillation existed already)."""

    out: Path
    lines: int
    chunks_reused: int
    reused: bool


def _languages(state: dict[str, Any], src: str | None, tgt: str | None) -> tuple[str, str]:
    """Language suffixes: given ones, else the AR run's (``syn``/``en`` for a synthetic run)."""
    data = state.get("train_config", {}).get("data", {}) or {}
    if data.get("data") is None:
        default = ("syn", "en")
    else:
        default = (data.get("src", "de"), data.get("tgt", "en"))
    return src or default[0], tgt or default[1]


def _spec(
    checkpoint: Path,
    data_dir: Path,
    files: dict[str, dict[str, str]],
    beam: int,
    chunk: int,
    n: int,
) -> dict[str, Any]:
    digest = hashlib.sha256()
    with checkpoint.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {
        "checkpoint": str(checkpoint.resolve()),
        "checkpoint_sha256": digest.hexdigest(),
        "data": str(data_dir.resolve()),
        "files": files,
        "beam": beam,
        "chunk_size": chunk,
        "lines": n,
    }


def _check_out(out: Path, spec: dict[str, Any]) -> str:
    """``"new"``, ``"resume"`` or ``"done"`` for ``out``; ``ValueError`` if it holds other data."""
    if not out.exists():
        return "new"
    if not out.is_dir():
        raise ValueError(f"expected an output directory at {out}, found a file")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return "new"
    progress = out / WORK_DIR / PROGRESS_FILE
    done = out / DONE_FILE
    if done.is_file():
        saved = json.loads(done.read_text()).get("spec")
        if saved == spec:
            return "done"
        raise ValueError(
            f"expected an empty or matching output directory, found another distillation in {out}"
        )
    if progress.is_file() and entries == [WORK_DIR]:
        saved = json.loads(progress.read_text()).get("spec")
        if saved == spec:
            return "resume"
        raise ValueError(
            f"expected the interrupted distillation in {out} to match this one (run, data, beam, "
            "chunk size), found a different one; use another --out"
        )
    raise ValueError(
        f"expected an empty output directory, found {len(entries)} entries in {out} "
        f"({', '.join(entries[:3])}{', …' if len(entries) > 3 else ''}); nothing was written"
    )


def distill(
    run_dir: str | Path | None,
    data: str | Path,
    out: str | Path,
    *,
    checkpoint: str | Path | None = None,
    src: str | None = None,
    tgt: str | None = None,
    beam: int = 5,
    batch_size: int = 64,
    chunk_size: int = 1000,
    limit: int | None = None,
    device: str = "auto",
    progress: bool | Callable[[int], None] = False,
) -> DistillResult:
    """Write the AR run's beam translations of ``data``'s training split as data dir ``out``.

    ``limit``: distill only the first ``limit`` training pairs (the output's training files
    then hold those lines). See the module docstring. Raises ``ValueError``/``FileNotFoundError`` (before any
    decoding) for a missing run or data file, a NAT run, or an ``out`` holding other data.
    """
    from latalign.translate.checkpoint import load_checkpoint, resolve_checkpoint
    from latalign.translate.data import detect_splits, find_file, read_lines

    if beam < 1:
        raise ValueError(f"expected beam >= 1, found {beam}")
    if chunk_size < 1:
        raise ValueError(f"expected chunk_size >= 1, found {chunk_size}")
    if batch_size < 1:
        raise ValueError(f"expected batch_size >= 1, found {batch_size}")
    if limit is not None and limit < 1:
        raise ValueError(f"expected limit >= 1 or None, found {limit}")
    from latalign.translate.inference import resolve_device

    dev = resolve_device(device)  # a bad or missing device is refused before any work
    ckpt = resolve_checkpoint(run_dir, checkpoint)
    state = load_checkpoint(ckpt)
    arch = state.get("arch") or (state.get("train_config") or {}).get("arch") or "ar"
    if arch != "ar":
        raise ValueError(
            f"expected an autoregressive (arch 'ar') run to distill from, found {arch!r}"
        )
    data_dir = Path(data)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"expected a data directory at {data_dir}, found none")
    src, tgt = _languages(state, src, tgt)
    prefixes = detect_splits(data_dir, src, tgt)
    files = {
        split: {lang: find_file(data_dir, prefix, lang).name for lang in (src, tgt)}  # type: ignore[union-attr]
        for split, prefix in (
            ("train", prefixes.train), ("valid", prefixes.valid), ("test", prefixes.test)
        )
    }  # fmt: skip
    sources = read_lines(data_dir / files["train"][src])
    n_ref = len(read_lines(data_dir / files["train"][tgt]))
    if n_ref != len(sources):
        raise ValueError(
            f"expected parallel training files, found {len(sources)} source and {n_ref} target "
            f"lines in {data_dir}"
        )
    total = len(sources)
    sources = sources[:limit]
    out = Path(out)
    spec = _spec(ckpt, data_dir, files, beam, chunk_size, len(sources))
    status = _check_out(out, spec)
    if status == "done":
        return DistillResult(out, len(sources), 0, True)

    from latalign.translate.checkpoint import load_model
    from latalign.translate.decode import translate_sentences

    work = out / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    n_chunks = (len(sources) + chunk_size - 1) // chunk_size
    chunk_path = [work / f"chunk-{i:05d}.txt" for i in range(n_chunks)]
    have = [p.is_file() for p in chunk_path]

    def write_progress() -> None:
        record = {"spec": spec, "chunks": n_chunks, "done": sum(have)}
        atomic_write(work / PROGRESS_FILE, (json.dumps(record, indent=2) + "\n").encode())

    write_progress()
    reused = sum(have)
    model, tokenizer, _ = load_model(None, ckpt, device=dev)
    bar = None
    callback: Callable[[int], None] | None = progress if callable(progress) else None
    if progress is True:
        from tqdm import tqdm

        done_lines = sum(
            min(chunk_size, len(sources) - i * chunk_size) for i in range(n_chunks) if have[i]
        )
        bar = tqdm(total=len(sources), initial=done_lines, unit="sent", desc="distill")
        callback = bar.update
    try:
        for i in range(n_chunks):
            if have[i]:
                continue
            lines = sources[i * chunk_size : (i + 1) * chunk_size]
            hyps = translate_sentences(
                model, tokenizer, lines, beam=beam, batch_size=batch_size, progress=callback,
                device=dev,
            )  # fmt: skip
            text = "".join(" ".join(h.split()) + "\n" for h in hyps)
            atomic_write(chunk_path[i], text.encode("utf-8"))
            have[i] = True
            write_progress()
    finally:
        if bar is not None:
            bar.close()

    # every chunk exists: assemble the data directory, the marker file last
    text = b"".join(p.read_bytes() for p in chunk_path)
    target_name = files["train"][tgt]
    if target_name.endswith(".gz"):
        text = gzip.compress(text, mtime=0)
    atomic_write(out / target_name, text)
    for split, names in files.items():
        for lang, name in names.items():
            if split == "train" and lang == tgt:
                continue
            if split == "train" and len(sources) < total:  # the first `limit` lines only
                data = "".join(line + "\n" for line in sources).encode("utf-8")
                data = gzip.compress(data, mtime=0) if name.endswith(".gz") else data
            else:
                data = (data_dir / name).read_bytes()
            atomic_write(out / name, data)
    record = {"spec": spec, "source_lang": src, "target_lang": tgt, "lines": len(sources)}
    atomic_write(out / DONE_FILE, (json.dumps(record, indent=2) + "\n").encode())
    shutil.rmtree(work)
    return DistillResult(out, len(sources), reused, False)


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``latalign distill``."""
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--run-dir", type=Path, help="the autoregressive run (checkpoint_best.pt)")
    src.add_argument("--checkpoint", type=Path, help="a checkpoint file of an AR run")
    parser.add_argument(
        "--data", type=Path, required=True, help="data directory whose training split to distill"
    )
    parser.add_argument(
        "--out", type=Path, required=True,
        help="new data directory (must not exist, be empty, or hold an interrupted distillation "
        "of the same run and data, which is then resumed)",
    )  # fmt: skip
    parser.add_argument("--src", default=None, help="source language suffix (default: the run's)")
    parser.add_argument("--tgt", default=None, help="target language suffix (default: the run's)")
    parser.add_argument("--beam", type=int, default=5, help="beam size (default: 5)")
    parser.add_argument(
        "--batch-size", type=int, default=64, help="sentences decoded together (default: 64)"
    )
    parser.add_argument(
        "--chunk-size", type=int, default=1000,
        help="sentences per resumable chunk (default: 1000)",
    )  # fmt: skip
    parser.add_argument(
        "--limit", type=int, default=None,
        help="distill only the first N training pairs (default: all)",
    )  # fmt: skip
    parser.add_argument(
        "--device", default="auto",
        help="auto (CUDA when available, else the CPU), cpu, cuda or cuda:N (default: auto)",
    )  # fmt: skip


def main(args: argparse.Namespace) -> int:
    """``latalign distill``: one line per problem and exit 2 on bad input (before decoding)."""
    from latalign.cli import UsageError

    try:
        result = distill(
            args.run_dir, args.data, args.out, checkpoint=args.checkpoint, src=args.src,
            tgt=args.tgt, beam=args.beam, batch_size=args.batch_size,
            chunk_size=args.chunk_size, limit=args.limit, device=args.device,
            progress=sys.stderr.isatty(),
        )  # fmt: skip
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    print(
        json.dumps(
            {
                "out": str(result.out),
                "lines": result.lines,
                "chunks_reused": result.chunks_reused,
                "reused": result.reused,
            }
        )
    )
    return 0
