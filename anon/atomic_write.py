"""Writing a file so that a reader, or a rerun after ``kill -9``, finds the old file or the whole new one,
never half of it: the bytes go to a temporary file beside it, named for this process (two ranks never share
one), which then replaces the file in one ``os.replace``. A failed write (a full disk) leaves no temporary."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def write_atomically(path: str | Path, write: Callable[[Path], object], fsync: bool = False) -> None:
    """``write(tmp)`` fills ``<path>.<pid>.tmp``, which then replaces ``path`` (its folder is made if missing).

    ``fsync``: the temporary file's bytes reach the disk before the rename (files a crash must not lose).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomically(path: str | Path, text: str, fsync: bool = False) -> None:
    """:func:`write_atomically` for UTF-8 text."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    write_atomically(path, write, fsync)


__all__ = ["write_atomically", "write_text_atomically"]
