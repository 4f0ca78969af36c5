"""Sequence-level knowledge distillation (Kim & Rush 2016): an autoregressive model's beam
translations of the training set as a new data directory.

``distill(run, data, out)`` reads the training split of ``data`` (the file naming of
:mod:`latalign.translate.data`), translates its source side with an autoregressive run (a run
directory's best checkpoint, a checkpoint file, or a loaded
:class:`~latalign.translate.run.TrainedRun`) exactly as ``latalign translate`` does
(:meth:`TrainedRun.translate <latalign.translate.run.TrainedRun.translate>` with the
:class:`~latalign.translate.decode.SearchOptions`, beam 5 by default) and writes ``out``:

- ``{train}.{tgt}[.gz]``: the translations, line *i* translating line *i* of the source;
- ``{train}.{src}[.gz]`` and every valid/test file: byte copies of the input files (same
  names, same compression);
- ``distill.json``: what was distilled with what (checkpoint, beam and any other search
  option that is not the default, line count).

Resumable: the source is cut into chunks of ``chunk_size`` lines; each finished chunk is
written atomically as ``out/.distill/chunk-NNNNN.txt`` and counted in
``out/.distill/progress.json``, so a killed run continues at the first missing chunk (the
spec in ``progress.json`` must match, or the directory is refused). The final files are
assembled only when every chunk exists, and the work folder is then removed.

An ``out`` that exists and holds anything else (other files, another distillation) is refused
with a ``ValueError`` before any work; nothing in it is overwritten.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from latalign.io import atomic_write
from latalign.translate.data import detect_splits, find_file, read_lines
from latalign.translate.decode import SearchOptions
from latalign.translate.run import TrainedRun, load_run

__all__ = ["DistillResult", "distill"]

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


def _languages(run: TrainedRun, src: str | None, tgt: str | None) -> tuple[str, str]:
    """Language suffixes: given ones, else the run's (``syn``/``en`` for a synthetic run)."""
    data = run.config.data
    default = ("syn", "en") if data.data is None else (data.src, data.tgt)
    return src or default[0], tgt or default[1]


def _spec(
    checkpoint: Path,
    data_dir: Path,
    files: dict[str, dict[str, str]],
    options: SearchOptions,
    chunk: int,
    n: int,
) -> dict[str, Any]:
    """What a distillation depends on (an interrupted one resumes only into the same): the
    checkpoint's bytes, the data files, the search options that change outputs (``beam``
    always, the others when not the default), the chunking."""
    digest = hashlib.sha256()
    with checkpoint.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    default = SearchOptions()
    search = {
        name: getattr(options, name)
        for name in ("lenpen", "max_len_a", "max_len_b", "bf16", "int8")
        if getattr(options, name) != getattr(default, name)
    }
    return {
        "checkpoint": str(checkpoint.resolve()),
        "checkpoint_sha256": digest.hexdigest(),
        "data": str(data_dir.resolve()),
        "files": files,
        "beam": options.beam,
        **({"search": search} if search else {}),
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
    run: str | Path | TrainedRun,
    data: str | Path,
    out: str | Path,
    *,
    options: SearchOptions | None = None,
    src: str | None = None,
    tgt: str | None = None,
    chunk_size: int = 1000,
    limit: int | None = None,
    progress: bool | Callable[[int], None] = False,
) -> DistillResult:
    """Write the translations of ``data``'s training split by the autoregressive ``run`` (a
    run directory, a checkpoint, or a :class:`TrainedRun`, loaded once) as data dir ``out``.

    ``options``: how to decode (:class:`SearchOptions`; the defaults of ``latalign
    translate``). ``limit``: distill only the first ``limit`` training pairs (the output's
    training files then hold those lines). See the module docstring. Raises
    ``ValueError``/``FileNotFoundError`` (before any decoding) for a missing run or data file,
    a run that is not autoregressive (NAT), or an ``out`` holding other data.
    """
    options = options or SearchOptions()
    if chunk_size < 1:
        raise ValueError(f"expected chunk_size >= 1, found {chunk_size}")
    if limit is not None and limit < 1:
        raise ValueError(f"expected limit >= 1 or None, found {limit}")
    device, _ = options.placement()  # a bad or missing device is refused before any work
    if not isinstance(run, TrainedRun):
        run = load_run(run, device=device)
    if not run.arch.autoregressive or run.checkpoint is None:
        raise ValueError(
            f"expected an autoregressive run from a checkpoint to distill from (arch ar, "
            f"ar_aux_ctc); found arch {run.config.arch!r}"
        )
    run.batch_decoder(options)  # an option this run refuses, before any work
    data_dir = Path(data)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"expected a data directory at {data_dir}, found none")
    src, tgt = _languages(run, src, tgt)
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
    spec = _spec(run.checkpoint, data_dir, files, options, chunk_size, len(sources))
    status = _check_out(out, spec)
    if status == "done":
        return DistillResult(out, len(sources), 0, True)

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
    bar = None
    callback: Callable[[int], None] | None = progress if callable(progress) else None
    if progress is True:
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
            hyps = run.translate(lines, options, progress=callback)
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
