"""The one atomic file write of the package (checkpoints, caches, run files, reports, results).

A reader never sees a half-written file, and a kill or a full disk mid-write leaves the previous
file intact: the content goes to a temporary file in the same folder, is flushed to disk, and
replaces ``path`` with ``os.replace`` (atomic on POSIX and Windows within one file system).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write"]


def atomic_write(
    path: str | os.PathLike[str],
    content: bytes | str | Callable[[BinaryIO], object],
    *,
    fsync: bool = True,
) -> Path:
    """Write ``content`` to ``path`` atomically; returns ``path`` as a :class:`Path`.

    ``content``: bytes, a str (written as UTF-8), or a callable given the open binary file
    (e.g. ``lambda f: torch.save(obj, f)``). The parent folder is created. The file gets the
    permissions of a normally created file (0666 minus the umask). On any error (the callable
    raising included) the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(content, str):
                f.write(content.encode("utf-8"))
            elif isinstance(content, (bytes, bytearray, memoryview)):
                f.write(content)
            else:
                content(f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
